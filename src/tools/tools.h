/* tools.h: the ferry program's subcommands; each lives in its own file. */
#ifndef FERRY_TOOLS_H
#define FERRY_TOOLS_H

int cmd_run(int argc, char **argv);      /* run.c: the reference VM */
int cmd_migrate(int argc, char **argv);  /* migrate-cli.c: drive a migration with a progress bar */
int cmd_monitor(int argc, char **argv);  /* monitor-cli.c: HMP client for a QMP/HMP socket */
int cmd_analyze(int argc, char **argv);  /* analyze.c: read, check and compare streams */

#endif
