/*
 * mig-postcopy.h: postcopy in the migration core: what the shared files
 * (outgoing.c, incoming.c, return-path.c, migration.c, options.c, query.c)
 * call, and the state the three postcopy files share.
 *
 *   mig-postcopy.c      the state, capabilities, the user's commands
 *                       (migrate-start-postcopy, migrate-pause,
 *                       migrate-recover, migrate resume=true), query-migrate
 *   mig-postcopy-out.c  the source: ADVISE, the switch (discards, the
 *                       PACKAGED device state), the postcopy phase, the
 *                       preempt sender, pause and resume, return-path
 *                       messages (REQ_PAGES, RECV_BITMAP, RESUME_ACK)
 *   mig-postcopy-in.c   the destination: the postcopy commands, LISTEN and
 *                       RUN, the postcopy phase, the preempt loader, pause
 *                       and recover
 *
 * Status (both sides; QEMU's names and moves):
 *
 *   active --switch--> postcopy-active --------------------> completed
 *                        |        ^
 *            connection  |        | RESUME_ACK (source) / POSTCOPY_RESUME
 *            broke or    v        | (destination)
 *            migrate-  postcopy-paused --reconnected--> postcopy-recover
 *            pause          ^                                  |
 *                           +------ the new connection broke --+
 *
 * Nothing leaves postcopy-paused by itself: only a reconnection (or
 * fy_migration_free) does. The source never restarts its VM once the
 * package with POSTCOPY_RUN may have reached the destination
 * (handed_over): from then on the destination's copy is the live one.
 *
 * Locks: fields marked (L) are under m->lock and m->cond is broadcast when
 * they change. The destination's return path has its own lock (rp_lock):
 * the fault thread (page requests), the incoming thread (PONG,
 * RECV_BITMAP, RESUME_ACK) and in_finish (SHUT, after everything here
 * stopped) write it. Lock order: rp_lock before m->lock.
 */
#ifndef FERRY_MIG_POSTCOPY_H
#define FERRY_MIG_POSTCOPY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/postcopy.h"
#include "migration/migration-int.h"

/* A command hook's "not a postcopy command: handle it as usual". */
#define FY_MIG_PC_NOT_MINE 2

typedef struct FyMigPostcopy {
    /* ---- both sides ---- */
    bool running;              /* (L) this run switched to postcopy */
    FyError *pause_err;        /* (L) why we are paused: error-desc */
    uint64_t pauses;           /* (L) times this run paused */

    /* ---- source ---- */
    bool start_req;            /* (L) migrate-start-postcopy */
    char *resume_uri;          /* (L) migrate resume=true, not yet taken */
    bool handed_over;          /* (L) RUN may have reached the destination */
    bool stale;                /* (L) handed over once: kept across runs until
                                  this VM receives an incoming migration */
    bool preempt;
    FyPostcopyReqQueue *q;
    FyChannel *pre_c;          /* (L) the preempt channel, for kicks */
    FyStream *pre_f;
    pthread_t pre_thread;
    bool pre_started;
    bool pre_stop;             /* (L) */
    FyError *pre_err;          /* (L) why the preempt sender stopped */
    int bitmaps_got;           /* (L) RECV_BITMAP replies this recovery */
    bool resume_acked;         /* (L) */
    uint64_t switch_ms;
    uint64_t xfer_base;        /* bytes of the streams before a pause */

    /* ---- destination ---- */
    FyPostcopyDest *d;         /* (L) advised; kept after the run for stats */
    FyListener *listener;      /* (L) the first listener, for preempt */
    FyListener *recover_l;     /* (L) migrate-recover's, until accepted */
    pthread_mutex_t rp_lock;
    FyStream *rp;              /* (rp_lock) where page requests go */
    FyPostcopyReqEncoder enc;  /* (rp_lock) */
    FyChannel *pin_c;          /* (L) the preempt channel */
    FyStream *pin_f;
    pthread_t pin_thread;
    bool pin_started;
    bool pin_stopping;         /* (L) */
    FyError *pin_err;          /* (L) */
    uint64_t devices_begin_ms;
    bool devices_begun;
    uint64_t run_ms;           /* when POSTCOPY_RUN started the VM */
} FyMigPostcopy;

/* ---- mig-postcopy.c ---- */
/* Capability rules (set-capabilities). */
int fy_mig_pc_check(const bool *caps, FyError **errp);
/* Per run, on the worker: the RAM section's has_postcopy. */
void fy_mig_pc_apply_caps(FyMigration *m);
/* fy_mig_begin_run: forget the previous run (event_lock held, no worker). */
int fy_mig_pc_reset_run(FyMigration *m, FyError **errp);
void fy_mig_pc_free(FyMigration *m);
/* Cancel/free: unblock every wait here (m->lock held). */
void fy_mig_pc_kick_locked(FyMigration *m);
/* query-migrate additions (m->lock held). */
void fy_mig_pc_query_locked(FyMigration *m, struct json_t *o);
/* migrate_cancel during postcopy: refused with why. Returns -1 then. */
int fy_mig_pc_cancel_check(FyMigration *m, FyError **errp);
/* A new (not resumed) outgoing migration of a VM that postcopy already
 * handed over is refused: its RAM here is stale. */
int fy_mig_pc_may_migrate(FyMigration *m, FyError **errp);
bool fy_mig_pc_is_paused(FyMigStatus s);

/* The user's commands. */
int fy_mig_pc_start(FyMigration *m, FyError **errp);
int fy_mig_pc_pause(FyMigration *m, FyError **errp);
int fy_mig_pc_recover(FyMigration *m, const char *uri, FyError **errp);
int fy_mig_pc_resume(FyMigration *m, const char *uri, FyError **errp);

/* ---- mig-postcopy-out.c (the migration thread) ---- */
/* After OPEN_RETURN_PATH, before the setup sections: POSTCOPY_ADVISE. */
int fy_mig_pc_out_setup(FyMigration *m, FyStream *f, FyError **errp);
/* Is it time to switch (migrate-start-postcopy was given)? */
bool fy_mig_pc_out_switch_requested(FyMigration *m);
/* The switch and the postcopy phase, to completion: 0, or -1 with *errp.
 * *c and *f are the channel and stream (replaced on a resume, NULL when
 * closed); *vm_stopped is true while a failure should restart the VM. */
int fy_mig_pc_outgoing(FyMigration *m, FyChannel **c, FyStream **f,
                       bool *vm_stopped, bool *vm_was_running, FyError **errp);
/* Return-path messages of postcopy (the reader thread): 0 handled, -1
 * error, FY_MIG_PC_NOT_MINE. f is the return path (RECV_BITMAP's body
 * follows the message there). */
int fy_mig_pc_rp_message(FyMigration *m, FyStream *f, uint16_t type,
                         const uint8_t *payload, uint16_t len, FyError **errp);

/* ---- mig-postcopy-in.c (the incoming thread) ---- */
/* Commands on the main stream: 0 go on, 1 stop loading (POSTCOPY_RUN ran
 * the VM: fy_mig_pc_incoming() takes over), -1 error, FY_MIG_PC_NOT_MINE.
 * rp is the return path opened so far (or NULL). */
int fy_mig_pc_in_command(FyMigration *m, FyStream *rp, FyStream *f,
                         uint16_t cmd, const uint8_t *payload, uint16_t len,
                         FyError **errp);
/* After the first accept: keep the listener (postcopy-preempt's channel
 * arrives on it later)? Takes it when true. */
bool fy_mig_pc_in_take_listener(FyMigration *m, FyListener *l);
/* The postcopy phase, to completion (0) or until the run is freed (-1).
 * Every break pauses and waits for migrate-recover. */
int fy_mig_pc_incoming(FyMigration *m, FyChannel **c, FyStream **f,
                       FyStream **rp, FyError **errp);
/* Stop the destination's threads and free its state (reset, free). */
void fy_mig_pc_in_release(FyMigration *m);

#endif
