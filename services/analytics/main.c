#include "analytics.h"

int
main(int argc, char **argv)
{
	return pl_service_main(argc, argv, &analytics_service_def);
}
