#include "agents.h"

int
main(int argc, char **argv)
{
	return pl_service_main(argc, argv, &agents_service_def);
}
