/* monitor-cli.c: placeholder until its issue lands. */
#include <stdio.h>

#include "tools.h"

int cmd_monitor(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry monitor: not built yet\n");
    return 1;
}
