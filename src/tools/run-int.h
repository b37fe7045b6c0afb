/*
 * run-int.h: `ferry run`, the reference VM program, and what its files
 * share.
 *
 * Files: run.c (options, startup, the main loop, exit), run-ramfile.c
 * (--ram-file), run-vm.c (the VM as
 * the migration and the monitor see it: VM hooks that emit STOP/RESUME and
 * take the switchover snapshot, and the VM's monitor commands),
 * run-hmp.c (HMP on stdio).
 *
 * Run states reported by query-status (QEMU's names):
 *   prelaunch      created with -S, never started
 *   inmigrate      waiting for or loading an incoming migration
 *   running
 *   finish-migrate stopped by an outgoing migration for its switchover
 *   postmigrate    an outgoing migration completed; stopped until `cont`
 *   paused         stopped by `stop` (or after x-ferry-run-until)
 */
#ifndef FERRY_RUN_INT_H
#define FERRY_RUN_INT_H

#include <pthread.h>
#include <stdbool.h>

#include <jansson.h>

#include "ferry/hmp.h"
#include "ferry/machine.h"
#include "ferry/migration.h"
#include "ferry/qmp.h"

typedef struct RunVM {
    FyMachine *machine;
    const FyVMOps *mops;       /* the machine's own hooks */
    void *mopaque;
    FyVMOps ops;               /* ours, wrapping the machine's */
    FySaveState *ss;
    FyMigration *mig;
    FyMonitor *mon;
    bool snapshot_at_switchover;

    pthread_mutex_t emit_lock;  /* keeps mon alive while an event is sent */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool quit;                 /* (lock) quit was requested */
    bool incoming;             /* (lock) this VM is (or was) a destination */
    bool incoming_pending;     /* (lock) --incoming defer: no URI yet */
    bool ever_started;         /* (lock) */
    bool mig_stopped;          /* (lock) stopped by the migration's switchover */
    bool run_until_busy;       /* (lock) */
    bool run_until_joinable;
    pthread_t run_until_thread;
    json_t *snapshot;          /* (lock) taken at the switchover, if asked */
} RunVM;

/* run-vm.c */
int run_vm_init(RunVM *rv, const FyMachineConfig *cfg, const char *machine_type,
                FyError **errp);
void run_vm_destroy(RunVM *rv);
int run_vm_register_commands(RunVM *rv, FyError **errp);
/* Start or stop the VM on behalf of the user (emits RESUME/STOP). */
int run_vm_start(RunVM *rv, FyError **errp);
int run_vm_stop(RunVM *rv, FyError **errp);
void run_vm_request_quit(RunVM *rv);
bool run_vm_quit_requested(RunVM *rv);
/* {"ram": [{"idstr", "length", "digest"}...], "devices": {...},
 *  "vcpu-steps": [...]}; the VM must be stopped. */
json_t *run_vm_snapshot(RunVM *rv, FyError **errp);

/* run-ramfile.c: fill guest RAM (the blocks end to end) from a file, before
 * the VM first runs. */
int run_vm_fill_ram(RunVM *rv, const char *path, FyError **errp);

/* run-hmp.c: HMP on stdin/stdout, on its own thread. */
typedef struct RunHmp RunHmp;
RunHmp *run_hmp_start(FyMonitor *mon, FyError **errp);
void run_hmp_stop(RunHmp *h);

#endif
