#include "billing.h"

int
main(int argc, char **argv)
{
	return pl_service_main(argc, argv, &billing_service_def);
}
