/*
 * migration.h: live migration of one VM, outgoing and incoming.
 *
 * A FyMigration belongs to one VM (its SaveState registry, RAM list and
 * VMOps) and carries the migration status machine, capabilities,
 * parameters and statistics that QMP and HMP expose with QEMU's names.
 * Outgoing migration runs on its own thread (the migration thread); incoming
 * on its own thread too; the calls here return at once and report progress
 * through fy_migration_query() and events.
 *
 * Status machine (QEMU's names; only these transitions are legal):
 *   none -> setup -> active -> completed
 *   active -> pre-switchover -> device -> completed (pause-before-switchover;
 *             as in QEMU, "device" is only seen with that capability)
 *   active -> postcopy-active -> completed
 *   postcopy-active <-> postcopy-paused <-> postcopy-recover
 *   setup|active|pre-switchover|device|postcopy-* -> failed
 *   setup|active|pre-switchover|device -> cancelling -> cancelled
 *   completed|failed|cancelled -> setup (a new migration)
 */
#ifndef FERRY_MIGRATION_H
#define FERRY_MIGRATION_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/ram.h"
#include "ferry/ramblock.h"
#include "ferry/savevm.h"

struct json_t;

typedef enum {
    MIGRATION_STATUS_NONE,
    MIGRATION_STATUS_SETUP,
    MIGRATION_STATUS_CANCELLING,
    MIGRATION_STATUS_CANCELLED,
    MIGRATION_STATUS_ACTIVE,
    MIGRATION_STATUS_POSTCOPY_ACTIVE,
    MIGRATION_STATUS_POSTCOPY_PAUSED,
    MIGRATION_STATUS_POSTCOPY_RECOVER,
    MIGRATION_STATUS_COMPLETED,
    MIGRATION_STATUS_FAILED,
    MIGRATION_STATUS_COLO,
    MIGRATION_STATUS_PRE_SWITCHOVER,
    MIGRATION_STATUS_DEVICE,
    MIGRATION_STATUS_WAIT_UNPLUG,
    MIGRATION_STATUS__MAX
} FyMigStatus;

const char *fy_mig_status_name(FyMigStatus s);
/* True if from -> to is a legal transition. */
bool fy_mig_status_transition_ok(FyMigStatus from, FyMigStatus to);

typedef struct FyMigration FyMigration;

/* Events: name (e.g. "MIGRATION", "MIGRATION_PASS") and data (borrowed). */
typedef void (*FyEventFn)(void *opaque, const char *name, struct json_t *data);

/* Registers the "ram" section (ram.h) in ss; returns NULL if ss already has
 * one or memory runs out. ss, ram and vm must outlive the migration. */
FyMigration *fy_migration_new(FySaveState *ss, FyRamList *ram,
                              const FyVMOps *vm, void *vm_opaque);
/* Cancels and joins any running migration first. */
void fy_migration_free(FyMigration *m);
void fy_migration_set_event_handler(FyMigration *m, FyEventFn fn, void *opaque);

/* ---- capabilities and parameters (QMP names) ---- */
int fy_migration_set_capability(FyMigration *m, const char *name, bool on,
                                FyError **errp);
int fy_migration_get_capability(FyMigration *m, const char *name, bool *on,
                                FyError **errp);
/* [{"capability": name, "state": bool}, ...] */
struct json_t *fy_migration_query_capabilities(FyMigration *m);
/* Set several at once from a JSON object, all-or-nothing. */
int fy_migration_set_parameters(FyMigration *m, struct json_t *params,
                                FyError **errp);
struct json_t *fy_migration_query_parameters(FyMigration *m);

/* ---- outgoing ---- */
/* The URI is parsed at once (errors return here); connecting and everything
 * after happen on the migration thread and end in status completed, failed
 * (error-desc says why) or cancelled. Events are emitted from that thread.
 * On failure or cancel the VM runs again if it was running before. */
int fy_migrate(FyMigration *m, const char *uri, bool resume, FyError **errp);
/* Works in setup, active, pre-switchover and device; a no-op when nothing
 * runs. Refused once the whole stream has been sent (the destination may
 * already be running the VM). */
int fy_migrate_cancel(FyMigration *m, FyError **errp);
/* Release a pause-before-switchover; state must be the current state name. */
int fy_migrate_continue(FyMigration *m, const char *state, FyError **errp);
/* Postcopy (capability postcopy-ram, docs/postcopy.md): switch at the next
 * iteration; the destination then runs the VM and pulls missing pages.
 * pause breaks the connection on purpose (postcopy-active or -recover);
 * fy_migrate(uri, resume = true) reconnects a postcopy-paused source. */
int fy_migrate_start_postcopy(FyMigration *m, FyError **errp);
int fy_migrate_pause(FyMigration *m, FyError **errp);
/* True (with *errp saying why) once postcopy handed this VM over: the
 * destination has run it since, so starting it here would run a second,
 * older copy of the guest. Stays true until this VM receives an incoming
 * migration. A program's "cont" should refuse then. */
bool fy_migration_vm_stale(FyMigration *m, FyError **errp);

/* ---- incoming ---- */
/* Listens (tcp, unix) or opens (exec, fd, file) at once, then accepts and
 * loads on the incoming thread; status setup, active, then completed (the VM
 * was started, unless autostart is off) or failed. "defer" only records that
 * a later call will give the URI. Refused while the VM runs. */
int fy_migrate_incoming(FyMigration *m, const char *uri, FyError **errp);
/* postcopy-paused destination: listen on uri for the source's resume. */
int fy_migrate_recover(FyMigration *m, const char *uri, FyError **errp);

/* ---- state ---- */
FyMigStatus fy_migration_status(FyMigration *m);
/* query-migrate's return value (QEMU's fields). */
struct json_t *fy_migration_query(FyMigration *m);
/* Block until the migration (either direction) leaves the active states, or
 * timeout_ms passes (< 0: forever). Returns the status then. */
FyMigStatus fy_migration_wait(FyMigration *m, int timeout_ms);
/* Block until the status is `want` (true) or timeout_ms passes (false). */
bool fy_migration_wait_for(FyMigration *m, FyMigStatus want, int timeout_ms);

/* Start the VM after a successful incoming migration (default true, as
 * QEMU without -S). */
void fy_migration_set_autostart(FyMigration *m, bool on);
/* The address an incoming migration listens on, e.g. "tcp:127.0.0.1:40123"
 * for port 0 (malloc()ed; NULL if none). */
char *fy_migration_incoming_address(FyMigration *m);
/* The RAM section of this VM (statistics, options). */
FyRamState *fy_migration_ram_state(FyMigration *m);

#endif
