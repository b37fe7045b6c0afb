/*
 * hmp.h: the human monitor (HMP), QEMU's command names and output shape.
 *
 * HMP is a front end over the QMP commands of a FyMonitor (qmp.h): each
 * command line is parsed (words, "double quoted" strings with backslash
 * escapes), turned into a QMP command and its return value formatted as
 * QEMU prints it, e.g. `info migrate`:
 *
 *   globals:
 *   store-global-state: on
 *   ...
 *   Migration status: active
 *   total time: 1234 ms
 *   expected downtime: 300 ms
 *   setup: 12 ms
 *   transferred ram: 123456 kbytes
 *   ...
 *
 * Commands: help, migrate [-d] [-r] URI, migrate_incoming URI,
 * migrate_cancel, migrate_continue STATE, migrate_set_capability NAME on|off,
 * migrate_set_parameter NAME VALUE, migrate_start_postcopy, migrate_pause,
 * migrate_recover URI, stop, cont (c), quit (q), and info migrate,
 * migrate_capabilities, migrate_parameters, status, version, commands,
 * plus ferry's debug items: info ram_digest, info device_state.
 * Errors print as "Error: <desc>" like QEMU's hmp_handle_error.
 */
#ifndef FERRY_HMP_H
#define FERRY_HMP_H

#include <stdbool.h>

#include "ferry/qmp.h"

/*
 * Run one command line and return what the monitor prints (malloc()ed,
 * possibly ""; never NULL unless out of memory). can_block: the caller may
 * wait, so `migrate` without -d waits for the migration to end (QEMU's
 * synchronous migrate); otherwise it goes on detached and says so, as QEMU
 * does for a monitor that cannot be suspended. *failed (if non-NULL) is
 * set when the command reported an error.
 */
char *fy_hmp_execute(FyMonitor *mon, const char *line, bool can_block,
                     bool *failed);

/* The banner a monitor prints when it starts, with a trailing newline. */
const char *fy_hmp_banner(void);
/* The prompt, "(ferry) ". */
const char *fy_hmp_prompt(void);

#endif
