/* run.c: placeholder until its issue lands. */
#include <stdio.h>

#include "tools.h"

int cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry run: not built yet\n");
    return 1;
}
