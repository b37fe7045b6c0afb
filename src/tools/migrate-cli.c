/* migrate-cli.c: placeholder until its issue lands. */
#include <stdio.h>

#include "tools.h"

int cmd_migrate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry migrate: not built yet\n");
    return 1;
}
