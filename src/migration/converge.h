/*
 * converge.h: the migration layer's convergence machinery, internal to
 * src/migration (the public side is include/ferry/converge.h).
 *
 * Files:
 *   converge.c        FyConverge: per-VM state, the per-run hooks the
 *                     migration thread calls, stall detection, the
 *                     parameters' checks, query-migrate's members
 *   throttle.c        auto-converge: the trigger and the throttle steps
 *   downtime.c        the switchover model and the measured downtime
 *   dirtylimit.c      per-vCPU dirty limits (set/cancel/query-vcpu-dirty-
 *                     limit, and the dirty-limit capability's use of them)
 *
 * Threads and locks: the hooks marked (T) run on the migration thread. cv->mu
 * guards what other threads read (query-migrate, QMP). Lock order:
 * m->lock, then cv->mu, then the dirty limit's lock; nothing here takes
 * m->lock while holding cv->mu. Functions marked (L) are called with
 * m->lock held and must not take it.
 */
#ifndef FERRY_MIGRATION_CONVERGE_H
#define FERRY_MIGRATION_CONVERGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "ferry/converge.h"
#include "migration/migration-int.h"

/* x-stall-action */
typedef enum {
    FY_STALL_NONE,
    FY_STALL_THROTTLE,
    FY_STALL_POSTCOPY,
} FyStallAction;

/* ---- throttle.c: auto-converge (QEMU's mig_throttle_guest_down) ---- */
typedef struct FyThrottleParams {
    int initial, increment, max;
    bool tailslow;
} FyThrottleParams;

/* The next throttle percentage, from the current one (0 = off), the bytes
 * dirtied in the last period and the threshold they exceeded. */
int fy_throttle_next(const FyThrottleParams *p, int now, uint64_t dirty,
                     uint64_t threshold);

/* Each period of at least a second (QEMU's migration_trigger_throttle):
 * true when the guest dirtied more than threshold_pct % of what was sent,
 * for the second time (not necessarily in a row). */
typedef struct FyThrottleTrigger {
    int high_count;
} FyThrottleTrigger;
bool fy_throttle_trigger(FyThrottleTrigger *t, uint64_t dirty_bytes,
                         uint64_t xfer_bytes, uint64_t threshold_pct,
                         uint64_t *dirty_threshold);

/* ---- downtime.c ---- */
/* What the downtime estimate is made of (ms and bytes), learnt from the
 * runs of this FyMigration (defaults before the first). */
typedef struct FyDowntimeModel {
    double busy_bw[8];          /* bytes/ms of the last busy windows */
    int busy_next, busy_count;
    double any_bw[8];           /* ... of the last windows, busy or not */
    int any_next, any_count;
    double dirty_bpms;          /* bytes the guest dirties per ms */
    double sync_ms;             /* one dirty sync, measured this run */
    double stop_ms, start_ms, dest_ms;
    double device_bytes;
    double bw_used;             /* of the last estimate */
    uint64_t expected_ms;       /* the last estimate */
    bool unreachable;           /* the fixed costs alone exceed the limit */
} FyDowntimeModel;

/* The measured downtime of the last completed switchover. */
typedef struct FyDowntimeParts {
    bool valid;
    bool rp;                    /* destination parts measured */
    uint64_t t_stop, t_stopped, t_begin, t_ram, t_dev, t_sent, t_pong;
    uint64_t t_end;
    uint32_t ping;
    uint64_t ram_bytes, device_bytes;
    uint64_t expected, limit;
} FyDowntimeParts;

void fy_downtime_model_init(FyDowntimeModel *d);
void fy_downtime_model_new_run(FyDowntimeModel *d);
/* One counter window: bw in bytes/ms; busy: the sender had more to send
 * than it sent (a window in which it ran out measures the guest, not the
 * link). Returns the threshold (bytes of RAM that may be left at the
 * switchover) and sets d->expected_ms for the pending bytes left now.
 * sw_bw: avail-switchover-bandwidth in bytes/ms, 0 = use the measured one. */
uint64_t fy_downtime_window(FyDowntimeModel *d, double bw, bool busy,
                            double sw_bw, uint64_t pending, uint64_t limit_ms);
/* The expected downtime (ms) for pending bytes at bandwidth bw. */
uint64_t fy_downtime_estimate(const FyDowntimeModel *d, double bw,
                              uint64_t pending);
/* Learn from a measured switchover. */
void fy_downtime_learn(FyDowntimeModel *d, const FyDowntimeParts *p);
json_t *fy_downtime_parts_json(const FyDowntimeParts *p);

/* ---- dirtylimit.c ---- */
typedef struct FyDirtyLimit FyDirtyLimit;
FyDirtyLimit *fy_dirtylimit_new(const FyVMOps *vm, void *vm_opaque,
                                FyDirtyRate *dr);
void fy_dirtylimit_free(FyDirtyLimit *dl);
bool fy_dirtylimit_supported(FyDirtyLimit *dl);
/* by_migration: the limit is the dirty-limit capability's, undone by
 * fy_dirtylimit_cancel_migration(). */
int fy_dirtylimit_set(FyDirtyLimit *dl, bool has_cpu, int64_t cpu,
                      uint64_t mbps, bool by_migration, FyError **errp);
int fy_dirtylimit_cancel(FyDirtyLimit *dl, bool has_cpu, int64_t cpu,
                         FyError **errp);
void fy_dirtylimit_cancel_migration(FyDirtyLimit *dl);
/* The limit every vCPU has, or 0 when they differ or some have none. */
uint64_t fy_dirtylimit_uniform(FyDirtyLimit *dl);
void fy_dirtylimit_set_period(FyDirtyLimit *dl, uint64_t ms);
/* Sample rates even before any limit is set (the capability does, so the
 * vCPUs' natural rates are known when it limits them). */
void fy_dirtylimit_start_sampling(FyDirtyLimit *dl);
json_t *fy_dirtylimit_query(FyDirtyLimit *dl);
/* QEMU's dirty-limit-throttle-time-per-round and dirty-limit-ring-full-time
 * (microseconds), see dirtylimit.c for how ferry derives them. */
uint64_t fy_dirtylimit_throttle_us_per_round(FyDirtyLimit *dl);
uint64_t fy_dirtylimit_ring_full_us(FyDirtyLimit *dl);

/* ---- converge.c: the object ---- */
typedef struct FyConverge {
    FyMigration *m;
    FyDirtyRate *dr;
    FyDirtyLimit *dl;

    pthread_mutex_t mu;
    pthread_cond_t cond;         /* sync_done_gen moved, or run ended */
    /* (mu) the current or last outgoing run */
    bool run;                    /* between start and stop */
    uint64_t run_start_ms;
    uint64_t sync_req_gen;       /* a dirty-rate measurement wants a sync */
    uint64_t sync_done_gen;      /* the requests the migration has served */
    bool cap_auto_converge, cap_dirty_limit, cap_xbzrle;
    int throttle_pct;            /* now */
    int throttle_peak;
    uint64_t throttle_raises;
    uint64_t dirty_limit_applied;   /* MB/s the capability set, 0 = none */
    uint64_t dirty_limit_sets;      /* times the capability set limits */
    uint64_t dirty_bps;          /* the migration's dirty rate, bytes/s */
    bool stalled;
    uint64_t stall_iters;        /* dirty syncs without progress */
    uint64_t stall_events, stall_escalations;
    uint64_t stall_last_ms;      /* the last event or escalation */
    const char *stall_last_action;
    FyDowntimeModel model;
    FyDowntimeParts parts;

    /* the migration thread's */
    FyThrottleTrigger trig;
    uint64_t period_start_ms, period_xfer0, period_dirty0;
    uint64_t sync_ms, sync_dirty0;     /* the previous sync, for the model */
    uint64_t best_remaining;
    uint32_t ping_seq;
} FyConverge;

FyConverge *fy_mig_converge_new(FyMigration *m);
void fy_mig_converge_free(FyConverge *cv);

/* parameters and capabilities (options.c) */
void fy_mig_converge_params_init(FyMigParams *p);
/* Parse one of the parameters this file owns; 1 if name is not ours. */
int fy_mig_converge_param_parse(const char *name, json_t *v, uint64_t *out,
                                FyError **errp);
json_t *fy_mig_converge_param_json(const char *name, uint64_t v);
int fy_mig_converge_caps_check(const bool *caps, FyError **errp);
/* (L) New parameters are about to replace m->params: resize the XBZRLE
 * cache, change the dirty limit period. */
int fy_mig_converge_params_apply(FyMigration *m, const FyMigParams *next,
                                 FyError **errp);

/* the outgoing run (T) */
int fy_mig_converge_start(FyMigration *m, FyError **errp);
void fy_mig_converge_synced(FyMigration *m, uint64_t sync_count);
/* fy_savevm_state_pending_exact(), timed: the dirty sync's cost. */
void fy_mig_converge_pending_exact(FyMigration *m, uint64_t *must,
                                   uint64_t *can);
void fy_mig_converge_sync_cost(FyMigration *m, uint64_t us);
/* Each turn of the iteration loop: serve a dirty-rate measurement's
 * request for an up-to-date count with one more dirty sync. */
void fy_mig_converge_iteration(FyMigration *m);
/* (L) every counter window: returns the switchover threshold and sets
 * m->expected_downtime. bw in bytes/ms. */
uint64_t fy_mig_converge_window(FyMigration *m, double bw, uint64_t pending);
void fy_mig_converge_stopped(FyMigration *m, uint64_t stop_begin_ms);
/* complete_iterable, complete_devices, [PING], finish, each timed. */
int fy_mig_converge_complete_precopy(FyMigration *m, FyStream *f, bool rp_on,
                                     FyError **errp);
/* After commit, with the return path: wait for the PONG of the ping above
 * (the destination has loaded everything), or the end of the return path. */
void fy_mig_converge_wait_pong(FyMigration *m);
void fy_mig_converge_downtime_end(FyMigration *m, uint64_t end_ms);
/* Throttle and the capability's dirty limits off, borrow returned. */
void fy_mig_converge_stop(FyMigration *m);

/* (L) query-migrate's members for an outgoing migration in status s. */
void fy_mig_converge_query(FyMigration *m, json_t *o, FyMigStatus s);

#endif
