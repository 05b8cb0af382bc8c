#include "tenants.h"

int
main(int argc, char **argv)
{
	return pl_service_main(argc, argv, &tenants_service_def);
}
