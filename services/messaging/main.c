#include "messaging.h"

int
main(int argc, char **argv)
{
	return pl_service_main(argc, argv, &messaging_service_def);
}
