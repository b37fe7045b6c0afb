/*
 * qmp.h: the QEMU Machine Protocol: a command monitor and its socket server.
 *
 * FyMonitor is the command registry of one VM. It knows the migration
 * commands (bound to a FyMigration) and whatever the embedding program adds
 * (stop, cont, query-status, quit, the x-ferry-* debug commands), so the
 * control layer never depends on the VM's internals. QMP (a socket server)
 * and HMP (hmp.h, the human monitor) are two front ends over the same
 * commands: HMP formats what the QMP command returns.
 *
 * Protocol, as QEMU speaks it:
 *   server -> {"QMP": {"version": {...}, "capabilities": []}}
 *   client -> {"execute": "qmp_capabilities"}      (negotiation mode ends)
 *   client -> {"execute": NAME, "arguments": {...}, "id": ANY}
 *   server -> {"return": VALUE, "id": ANY} | {"error": {"class": C,
 *             "desc": TEXT}, "id": ANY}
 *   server -> {"event": NAME, "data": {...}, "timestamp": {"seconds": S,
 *             "microseconds": US}}      (only to clients past negotiation)
 * Error classes: CommandNotFound (unknown command, or anything but
 * qmp_capabilities before negotiation) and GenericError (everything else).
 *
 * Threads: commands run on the thread that delivers them (the QMP server's
 * thread, an HMP thread); the migration commands are thread-safe and the
 * embedder's own must be too. Register every command before serving.
 * Events may be emitted from any thread.
 */
#ifndef FERRY_QMP_H
#define FERRY_QMP_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/migration.h"
#include "ferry/savevm.h"

struct json_t;

/* The QEMU version ferry's stream and monitor are compatible with, and
 * what the greeting and query-version report. */
#define FY_QMP_QEMU_MAJOR 7
#define FY_QMP_QEMU_MINOR 2
#define FY_QMP_QEMU_MICRO 0
#define FY_QMP_PACKAGE "ferry 0.1.0"

/* Longest QMP request accepted, and deepest nesting. */
#define FY_QMP_MAX_REQUEST (1u << 20)
#define FY_QMP_MAX_DEPTH 64

typedef struct FyMonitor FyMonitor;

/*
 * A command: args is the "arguments" object (never NULL: {} when absent),
 * already checked against the command's argument spec. Return a new
 * reference (json_object() for "nothing"), or NULL with *errp set.
 */
typedef struct json_t *(*FyQmpCommandFn)(void *opaque, struct json_t *args,
                                         FyError **errp);

/* mig and ss may be NULL (then the migration commands are not there). */
FyMonitor *fy_monitor_new(FyMigration *mig, FySaveState *ss);
/* Detaches from the migration's events. Stop the servers first. */
void fy_monitor_free(FyMonitor *mon);
FyMigration *fy_monitor_migration(FyMonitor *mon);

/*
 * Add (or replace) a command. args_spec lists the arguments as
 * "NAME:TYPE" separated by spaces, TYPE one of s (string), b (bool),
 * i (integer), n (number), o (object), a (array), any (anything), with a
 * trailing '?' for optional ones, e.g. "uri:s detach:b? resume:b?".
 * A NULL spec accepts any object (the command checks for itself).
 * Argument errors use QEMU's words: "Parameter 'uri' is missing",
 * "Parameter 'x' is unexpected", "Invalid parameter type for 'uri',
 * expected: string".
 */
int fy_monitor_register(FyMonitor *mon, const char *name, const char *args_spec,
                        FyQmpCommandFn fn, void *opaque, FyError **errp);
bool fy_monitor_has_command(FyMonitor *mon, const char *name);

typedef enum {
    FY_QMP_OK = 0,
    FY_QMP_GENERIC_ERROR = -1,
    FY_QMP_COMMAND_NOT_FOUND = -2,
} FyQmpResult;

/* Run a command (args may be NULL): the arguments are checked, then the
 * command runs. *ret gets the return value on success. */
FyQmpResult fy_monitor_execute(FyMonitor *mon, const char *name,
                               struct json_t *args, struct json_t **ret,
                               FyError **errp);

/*
 * One QMP request, as it came off the wire (any JSON value; NULL means it
 * did not parse and parse_error says why). *negotiated is the client's
 * state: false until qmp_capabilities succeeds. Returns the response
 * object (new reference), never NULL except when out of memory.
 */
struct json_t *fy_monitor_handle_request(FyMonitor *mon, struct json_t *req,
                                         const char *parse_error,
                                         bool *negotiated);
/* The greeting object (new reference). */
struct json_t *fy_qmp_greeting(void);

/* ---- events ---- */
/* event is the complete message {"event", "data", "timestamp"} (borrowed). */
typedef void (*FyMonitorEventFn)(void *opaque, struct json_t *event);
int fy_monitor_add_event_listener(FyMonitor *mon, FyMonitorEventFn fn,
                                  void *opaque);
void fy_monitor_remove_event_listener(FyMonitor *mon, FyMonitorEventFn fn,
                                      void *opaque);
/* Stamp and deliver an event to every listener; data may be NULL. The
 * migration's events (MIGRATION, MIGRATION_PASS) arrive this way by
 * themselves; the embedder emits STOP, RESUME and SHUTDOWN. */
void fy_monitor_emit_event(FyMonitor *mon, const char *name,
                           struct json_t *data);

/* ---- the server ---- */
typedef struct FyQmpServer FyQmpServer;

/*
 * Listen on "unix:PATH" or "tcp:HOST:PORT" (port 0 picks a free one; QEMU's
 * trailing options such as ",server=on,wait=off" are accepted and ignored)
 * and serve any number of clients from one thread. A stale unix socket file
 * is replaced. Each client gets the greeting, starts in negotiation mode,
 * and receives events once negotiated.
 */
FyQmpServer *fy_qmp_server_new(FyMonitor *mon, const char *address,
                               FyError **errp);
/* The address bound, e.g. "tcp:127.0.0.1:40123" or "unix:/tmp/q.sock". */
const char *fy_qmp_server_address(const FyQmpServer *s);
/* Serve an already connected socket (e.g. one end of a socketpair) as one
 * more client. The server takes the fd. */
int fy_qmp_server_add_client(FyQmpServer *s, int fd, FyError **errp);
/* Flush what is queued for clients (up to timeout_ms), stop the thread,
 * close every client, remove the unix socket file. NULL is a no-op. */
void fy_qmp_server_free(FyQmpServer *s, int timeout_ms);

/* ---- a client (ferry migrate, ferry monitor, tests) ---- */
typedef struct FyQmpClient FyQmpClient;

/* Connect ("unix:PATH", "tcp:HOST:PORT", or a bare path meaning unix),
 * read the greeting and negotiate. timeout_ms bounds every wait. */
FyQmpClient *fy_qmp_client_connect(const char *address, int timeout_ms,
                                   FyError **errp);
void fy_qmp_client_close(FyQmpClient *c);
/* The greeting received (borrowed). */
struct json_t *fy_qmp_client_greeting(FyQmpClient *c);
/* Execute and wait for the answer; events that arrive meanwhile are
 * queued. Returns the "return" value (new reference) or NULL with *errp
 * holding the error's desc (and *err_class its class, if non-NULL). */
struct json_t *fy_qmp_client_execute(FyQmpClient *c, const char *name,
                                     struct json_t *args, char **err_class,
                                     FyError **errp);
/* The next event (new reference), waiting up to timeout_ms (0: only what
 * is queued); NULL on timeout or error. */
struct json_t *fy_qmp_client_next_event(FyQmpClient *c, int timeout_ms,
                                        FyError **errp);

#endif
