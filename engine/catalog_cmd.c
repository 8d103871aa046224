/* catalog_cmd: placeholder. */
#include "engine_cli.h"
int engine_cmd_catalog(int argc, char **argv)
{
    return 1;
}
int engine_cmd_migrate(int argc, char **argv)
{
    return 1;
}
