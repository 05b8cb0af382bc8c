#include "import.h"

int
main(int argc, char **argv)
{
	return import_cli_main(argc, argv);
}
