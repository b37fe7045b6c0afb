/* analyze.c: placeholder until its issue lands. */
#include <stdio.h>

#include "tools.h"

int cmd_analyze(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry analyze: not built yet\n");
    return 1;
}
