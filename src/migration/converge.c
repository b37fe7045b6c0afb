/*
 * converge.c: FyConverge, the convergence state of one FyMigration, and the
 * hooks the migration thread calls (see converge.h, include/ferry/
 * converge.h and docs/convergence.md).
 *
 * One outgoing run, as the migration thread sees it:
 *
 *   start        caps and parameters copied; XBZRLE configured for the RAM
 *                section; the dirty-rate measurement borrows the
 *                migration's count from now on (before the dirty log
 *                starts)
 *   each sync    dirty rate (for the downtime model and query-migrate);
 *                each period >= 1 s: the auto-converge / dirty-limit
 *                trigger; stall detection
 *   each window  (100 ms) the switchover threshold and expected-downtime
 *   switchover   stopped -> complete (timed) -> [PONG] -> end: the parts
 *   stop         throttle off, the capability's dirty limits removed, the
 *                borrow returned (after the dirty log is off)
 *
 * Stall: "progress" is RAM left after a sync below 95% of the best seen so
 * far (or nothing left). After x-stall-iterations syncs without progress
 * the migration is "stalled": MIGRATION_STALL is emitted and, with
 * x-stall-action, it escalates; while it stays stalled it escalates (and
 * emits) again every x-stall-iterations syncs, at most once a second.
 * Progress clears the state, and so does a switch to postcopy (which ends
 * in bounded time); a later stall is a new event.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migration/converge.h"

#define PS FY_TARGET_PAGE_SIZE
#define TRIGGER_PERIOD_MS 1000
#define PROGRESS_PCT 95
#define STALL_MIN_INTERVAL_MS 1000
#define BORROW_WAIT_S 1
#define WINDOW_MS 100.0          /* outgoing.c's counter window */
#define PING_MAGIC 0x46590000u  /* "FY" in the high half */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the object ---- */

FyConverge *fy_mig_converge_new(FyMigration *m)
{
    FyConverge *cv = calloc(1, sizeof(*cv));
    if (!cv)
        return NULL;
    cv->m = m;
    pthread_mutex_init(&cv->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cv->cond, &ca);
    pthread_condattr_destroy(&ca);
    fy_downtime_model_init(&cv->model);
    cv->stall_last_action = "none";
    cv->dr = fy_dirtyrate_new(m->ram, m->vm, m->vm_opaque);
    cv->dl = cv->dr ? fy_dirtylimit_new(m->vm, m->vm_opaque, cv->dr) : NULL;
    if (!cv->dl) {
        fy_mig_converge_free(cv);
        return NULL;
    }
    return cv;
}

void fy_mig_converge_free(FyConverge *cv)
{
    if (!cv)
        return;
    fy_dirtylimit_free(cv->dl);
    fy_dirtyrate_free(cv->dr);
    pthread_cond_destroy(&cv->cond);
    pthread_mutex_destroy(&cv->mu);
    free(cv);
}

FyDirtyRate *fy_migration_dirtyrate(FyMigration *m)
{
    return m->cv->dr;
}

/* ---- parameters ---- */

typedef enum { K_RANGE, K_BOOL, K_CACHE, K_MIN, K_ENUM } Kind;

typedef struct ConvParam {
    const char *name;
    Kind kind;
    uint64_t min, max;
    const char *msg;             /* the range error, QEMU's words */
} ConvParam;

static const char *const stall_actions[] = { "none", "throttle", "postcopy",
                                             NULL };

static const ConvParam conv_params[] = {
    { "throttle-trigger-threshold", K_RANGE, 1, 100,
      "Parameter 'throttle_trigger_threshold' expects an integer in the "
      "range of 1 to 100" },
    { "cpu-throttle-initial", K_RANGE, 1, 99,
      "Parameter 'cpu_throttle_initial' expects an integer in the range of "
      "1 to 99" },
    { "cpu-throttle-increment", K_RANGE, 1, 99,
      "Parameter 'cpu_throttle_increment' expects an integer in the range "
      "of 1 to 99" },
    { "cpu-throttle-tailslow", K_BOOL, 0, 1, NULL },
    { "max-cpu-throttle", K_RANGE, 1, 99,
      "Parameter 'max_cpu_throttle' expects an integer in the range of 1 to "
      "99" },
    { "xbzrle-cache-size", K_CACHE, 0, 0, NULL },
    { "x-vcpu-dirty-limit-period", K_RANGE, 1, 1000,
      "Parameter 'x-vcpu-dirty-limit-period' expects a value between 1 and "
      "1000" },
    { "vcpu-dirty-limit", K_MIN, 1, INT64_MAX,
      "Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s" },
    { "x-stall-iterations", K_RANGE, 0, 1000000,
      "Parameter 'x-stall-iterations' expects an integer in the range of 0 "
      "to 1000000" },
    { "x-stall-action", K_ENUM, 0, 2, NULL },
};
#define N_CONV (sizeof(conv_params) / sizeof(conv_params[0]))

void fy_mig_converge_params_init(FyMigParams *p)
{
    p->throttle_trigger_threshold = 50;
    p->cpu_throttle_initial = 20;
    p->cpu_throttle_increment = 10;
    p->cpu_throttle_tailslow = 0;
    p->max_cpu_throttle = 99;
    p->xbzrle_cache_size = FY_XBZRLE_DEFAULT_CACHE_SIZE;
    p->x_vcpu_dirty_limit_period = 1000;
    p->vcpu_dirty_limit = 1;
    p->x_stall_iterations = 10;
    p->x_stall_action = FY_STALL_NONE;
}

static const ConvParam *conv_find(const char *name)
{
    for (size_t i = 0; i < N_CONV; i++) {
        if (!strcmp(conv_params[i].name, name))
            return &conv_params[i];
    }
    return NULL;
}

static int parse_enum(const ConvParam *cp, json_t *v, uint64_t *out,
                      FyError **errp)
{
    if (!json_is_string(v)) {
        fy_error_setg(errp, "Parameter '%s' expects a string", cp->name);
        return -1;
    }
    for (uint64_t i = 0; stall_actions[i]; i++) {
        if (!strcmp(stall_actions[i], json_string_value(v))) {
            *out = i;
            return 0;
        }
    }
    fy_error_setg(errp, "Parameter '%s' does not accept value '%s'", cp->name,
                  json_string_value(v));
    return -1;
}

int fy_mig_converge_param_parse(const char *name, json_t *v, uint64_t *out,
                                FyError **errp)
{
    const ConvParam *cp = conv_find(name);
    if (!cp)
        return 1;
    if (cp->kind == K_ENUM)
        return parse_enum(cp, v, out, errp);
    if (cp->kind == K_BOOL) {
        if (!json_is_boolean(v)) {
            fy_error_setg(errp, "Parameter '%s' expects a boolean", name);
            return -1;
        }
        *out = json_is_true(v);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        fy_error_setg(errp, "Parameter '%s' expects %s", name,
                      json_is_integer(v) ? "a non-negative integer"
                                         : "an integer");
        return -1;
    }
    uint64_t n = (uint64_t)json_integer_value(v);
    if (cp->kind == K_CACHE)
        return fy_xbzrle_cache_size_check(n, PS, errp) < 0 ? -1
                                                            : (*out = n, 0);
    if (n < cp->min || n > cp->max) {
        fy_error_setg(errp, "%s", cp->msg);
        return -1;
    }
    *out = n;
    return 0;
}

json_t *fy_mig_converge_param_json(const char *name, uint64_t v)
{
    const ConvParam *cp = conv_find(name);
    if (cp && cp->kind == K_BOOL)
        return json_boolean(v);
    if (cp && cp->kind == K_ENUM)
        return json_string(v <= cp->max ? stall_actions[v] : "none");
    return json_integer((json_int_t)v);
}

int fy_mig_converge_caps_check(const bool *caps, FyError **errp)
{
    if (caps[FY_CAP_DIRTY_LIMIT] && caps[FY_CAP_AUTO_CONVERGE]) {
        fy_error_setg(errp, "dirty-limit conflicts with auto-converge either "
                      "of then available currently");
        return -1;
    }
    return 0;
}

int fy_mig_converge_params_apply(FyMigration *m, const FyMigParams *next,
                                 FyError **errp)
{
    if (next->xbzrle_cache_size != m->params.xbzrle_cache_size &&
        fy_ram_xbzrle_configure(m->rs, m->caps[FY_CAP_XBZRLE],
                                next->xbzrle_cache_size, errp) < 0)
        return -1;
    if (next->x_vcpu_dirty_limit_period != m->params.x_vcpu_dirty_limit_period)
        fy_dirtylimit_set_period(m->cv->dl, next->x_vcpu_dirty_limit_period);
    return 0;
}

/* ---- the run ---- */

typedef struct RunParams {
    bool auto_converge, dirty_limit, xbzrle, postcopy;
    FyThrottleParams tp;
    uint64_t trigger_pct, vcpu_dirty_limit, limit_ms;
    uint64_t stall_iters, stall_action;
    uint64_t xbzrle_size, period;
} RunParams;

static void run_params(FyMigration *m, RunParams *r)
{
    pthread_mutex_lock(&m->lock);
    const FyMigParams *p = &m->params;
    r->auto_converge = m->caps[FY_CAP_AUTO_CONVERGE];
    r->dirty_limit = m->caps[FY_CAP_DIRTY_LIMIT];
    r->xbzrle = m->caps[FY_CAP_XBZRLE];
    r->postcopy = m->caps[FY_CAP_POSTCOPY_RAM];
    r->tp.initial = (int)p->cpu_throttle_initial;
    r->tp.increment = (int)p->cpu_throttle_increment;
    r->tp.max = (int)p->max_cpu_throttle;
    r->tp.tailslow = p->cpu_throttle_tailslow;
    r->trigger_pct = p->throttle_trigger_threshold;
    r->vcpu_dirty_limit = p->vcpu_dirty_limit;
    r->limit_ms = p->downtime_limit;
    r->stall_iters = p->x_stall_iterations;
    r->stall_action = p->x_stall_action;
    r->xbzrle_size = p->xbzrle_cache_size;
    r->period = p->x_vcpu_dirty_limit_period;
    pthread_mutex_unlock(&m->lock);
}

/* The migration's count for calc-dirty-rate. Syncing from this thread is
 * not safe, so with `sync` it asks the migration thread for one (served at
 * its next iteration, fy_mig_converge_iteration) and waits a little: the
 * count then covers the measurement window to within one iteration. When
 * the migration is past iterating (switchover) or ends, the latest count. */
static int borrow_count(void *opaque, bool sync, uint64_t *pages,
                        FyError **errp)
{
    FyMigration *m = opaque;
    FyConverge *cv = m->cv;
    (void)errp;
    if (sync) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += BORROW_WAIT_S;
        pthread_mutex_lock(&cv->mu);
        uint64_t gen = ++cv->sync_req_gen;
        while (cv->run && cv->sync_done_gen < gen &&
               pthread_cond_timedwait(&cv->cond, &cv->mu, &dl) == 0)
            ;
        pthread_mutex_unlock(&cv->mu);
    }
    *pages = fy_ram_dirty_pages_reported(m->rs);
    return 0;
}

void fy_mig_converge_iteration(FyMigration *m)
{
    FyConverge *cv = m->cv;
    pthread_mutex_lock(&cv->mu);
    uint64_t want = cv->sync_req_gen;
    bool asked = want > cv->sync_done_gen;
    pthread_mutex_unlock(&cv->mu);
    if (!asked)
        return;
    uint64_t must = 0, can = 0;
    fy_mig_converge_pending_exact(m, &must, &can);
    pthread_mutex_lock(&cv->mu);
    cv->sync_done_gen = want;
    pthread_cond_broadcast(&cv->cond);
    pthread_mutex_unlock(&cv->mu);
}

int fy_mig_converge_start(FyMigration *m, FyError **errp)
{
    FyConverge *cv = m->cv;
    RunParams r;
    run_params(m, &r);

    if (r.auto_converge && !m->vm->set_throttle) {
        fy_error_setg(errp, "capability 'auto-converge': this VM cannot be "
                      "throttled (it has no FyVMOps.set_throttle)");
        return -1;
    }
    if (r.dirty_limit && !fy_dirtylimit_supported(cv->dl)) {
        fy_error_setg(errp, "capability 'dirty-limit': this VM has no "
                      "per-vCPU dirty limit (FyVMOps.set_dirty_limit)");
        return -1;
    }
    if (fy_ram_xbzrle_configure(m->rs, r.xbzrle, r.xbzrle_size, errp) < 0)
        return -1;

    pthread_mutex_lock(&cv->mu);
    cv->run = true;
    cv->run_start_ms = fy_mig_now_ms();
    cv->sync_done_gen = cv->sync_req_gen;
    cv->cap_auto_converge = r.auto_converge;
    cv->cap_dirty_limit = r.dirty_limit;
    cv->cap_xbzrle = r.xbzrle;
    cv->throttle_pct = cv->throttle_peak = 0;
    cv->throttle_raises = 0;
    cv->dirty_limit_applied = 0;
    cv->dirty_limit_sets = 0;
    cv->dirty_bps = 0;
    cv->stalled = false;
    cv->stall_iters = cv->stall_events = cv->stall_escalations = 0;
    cv->stall_last_ms = 0;
    cv->stall_last_action = "none";
    fy_downtime_model_new_run(&cv->model);
    memset(&cv->parts, 0, sizeof(cv->parts));
    pthread_mutex_unlock(&cv->mu);

    cv->trig.high_count = 0;
    cv->period_start_ms = fy_mig_now_ms();
    cv->period_xfer0 = cv->period_dirty0 = 0;
    cv->sync_ms = 0;
    cv->sync_dirty0 = 0;
    cv->best_remaining = UINT64_MAX;
    fy_dirtylimit_set_period(cv->dl, r.period);
    if (r.dirty_limit)
        fy_dirtylimit_start_sampling(cv->dl);
    /* Before the RAM section starts the dirty log (dirtyrate.h). */
    fy_dirtyrate_set_borrow(cv->dr, borrow_count, m);
    return 0;
}

void fy_mig_converge_stop(FyMigration *m)
{
    FyConverge *cv = m->cv;
    pthread_mutex_lock(&cv->mu);
    bool was = cv->run;
    int pct = cv->throttle_pct;
    cv->run = false;
    pthread_cond_broadcast(&cv->cond);   /* a waiting borrow returns */
    cv->throttle_pct = 0;
    cv->dirty_limit_applied = 0;
    pthread_mutex_unlock(&cv->mu);
    if (!was)
        return;
    if (pct && m->vm->set_throttle)
        m->vm->set_throttle(m->vm_opaque, 0);
    fy_dirtylimit_cancel_migration(cv->dl);
    fy_dirtyrate_set_borrow(cv->dr, NULL, NULL);
}

/* ---- throttling ---- */

static void set_throttle(FyMigration *m, int pct)
{
    FyConverge *cv = m->cv;
    m->vm->set_throttle(m->vm_opaque, pct);
    pthread_mutex_lock(&cv->mu);
    if (pct > cv->throttle_pct)
        cv->throttle_raises++;
    cv->throttle_pct = pct;
    if (pct > cv->throttle_peak)
        cv->throttle_peak = pct;
    pthread_mutex_unlock(&cv->mu);
}

static int throttle_now(FyConverge *cv)
{
    pthread_mutex_lock(&cv->mu);
    int pct = cv->throttle_pct;
    pthread_mutex_unlock(&cv->mu);
    return pct;
}

/* QEMU's migration_dirty_limit_guest: every vCPU at vcpu-dirty-limit. */
static void dirty_limit_guest(FyMigration *m, uint64_t quota)
{
    FyConverge *cv = m->cv;
    pthread_mutex_lock(&cv->mu);
    bool same = cv->dirty_limit_applied == quota;
    pthread_mutex_unlock(&cv->mu);
    if (same || fy_dirtylimit_set(cv->dl, false, 0, quota, true, NULL) < 0)
        return;
    pthread_mutex_lock(&cv->mu);
    cv->dirty_limit_applied = quota;
    cv->dirty_limit_sets++;
    pthread_mutex_unlock(&cv->mu);
}

static void trigger_period(FyMigration *m, const RunParams *r,
                           const FyRamStats *st, uint64_t reported,
                           uint64_t now)
{
    FyConverge *cv = m->cv;
    uint64_t elapsed = now - cv->period_start_ms;
    if (elapsed < TRIGGER_PERIOD_MS)
        return;
    uint64_t xfer = st->section_bytes - cv->period_xfer0;
    uint64_t dirty = (reported - cv->period_dirty0) * PS;
    uint64_t dirty_thr;

    pthread_mutex_lock(&cv->mu);
    cv->dirty_bps = dirty * 1000 / elapsed;
    pthread_mutex_unlock(&cv->mu);
    if ((r->auto_converge || r->dirty_limit) &&
        fy_throttle_trigger(&cv->trig, dirty, xfer, r->trigger_pct,
                            &dirty_thr)) {
        if (r->auto_converge)
            set_throttle(m, fy_throttle_next(&r->tp, throttle_now(cv), dirty,
                                             dirty_thr));
        else
            dirty_limit_guest(m, r->vcpu_dirty_limit);
    }
    cv->period_start_ms = now;
    cv->period_xfer0 = st->section_bytes;
    cv->period_dirty0 = reported;
}

/* The rate for the downtime model: from the latest sync interval (short
 * intervals near the switchover see the rate at which new pages become
 * dirty; long ones saturate on the working set and would under-count). */
static void model_dirty_rate(FyConverge *cv, uint64_t reported, uint64_t now)
{
    uint64_t dt = now - cv->sync_ms;
    if (cv->sync_ms && dt >= 5) {
        double bpms = (double)((reported - cv->sync_dirty0) * PS) / (double)dt;
        pthread_mutex_lock(&cv->mu);
        double keep = cv->model.dirty_bpms / 2;
        cv->model.dirty_bpms = bpms > keep ? bpms : keep;
        pthread_mutex_unlock(&cv->mu);
    }
    if (!cv->sync_ms || dt >= 5) {
        cv->sync_ms = now;
        cv->sync_dirty0 = reported;
    }
}

/* ---- stall ---- */

static const char *escalate(FyMigration *m, const RunParams *r)
{
    if (r->stall_action == FY_STALL_POSTCOPY && r->postcopy) {
        FyError *err = NULL;
        if (fy_migrate_start_postcopy(m, &err) == 0)
            return "postcopy";
        fy_error_free(err);   /* go on with the throttle */
    }
    if (!m->vm->set_throttle)
        return "none (the VM cannot be throttled)";
    int now = throttle_now(m->cv);
    if (now >= r->tp.max)
        return "none (throttle at max-cpu-throttle)";
    set_throttle(m, fy_throttle_next(&r->tp, now, 0, 0));
    return "throttle";
}

static void emit_stall(FyMigration *m, uint64_t iters, uint64_t remaining,
                       const char *action)
{
    json_t *data = json_pack("{s:I,s:I,s:s}", "iterations", (json_int_t)iters,
                             "remaining", (json_int_t)remaining, "action",
                             action);
    pthread_mutex_lock(&m->event_lock);
    fy_mig_emit(m, "MIGRATION_STALL", data);
    pthread_mutex_unlock(&m->event_lock);
    json_decref(data);
}

static void stall_check(FyMigration *m, const RunParams *r, uint64_t remaining,
                        uint64_t now)
{
    FyConverge *cv = m->cv;
    bool progress = remaining == 0 || cv->best_remaining == UINT64_MAX ||
                    remaining < cv->best_remaining / 100 * PROGRESS_PCT;
    if (remaining < cv->best_remaining)
        cv->best_remaining = remaining;

    pthread_mutex_lock(&cv->mu);
    if (progress) {
        cv->stall_iters = 0;
        cv->stalled = false;
        pthread_mutex_unlock(&cv->mu);
        return;
    }
    uint64_t iters = ++cv->stall_iters;
    bool begins = r->stall_iters && !cv->stalled && iters >= r->stall_iters;
    /* While stalled, escalate again every x-stall-iterations syncs, but at
     * most once a second: near the end syncs come back to back. */
    bool again = r->stall_iters && cv->stalled &&
                 r->stall_action != FY_STALL_NONE &&
                 iters % r->stall_iters == 0 &&
                 now - cv->stall_last_ms >= STALL_MIN_INTERVAL_MS;
    if (begins) {
        cv->stalled = true;
        cv->stall_events++;
    }
    if (begins || again)
        cv->stall_last_ms = now;
    pthread_mutex_unlock(&cv->mu);
    if (!begins && !again)
        return;

    const char *action = r->stall_action == FY_STALL_NONE ? "none"
                                                          : escalate(m, r);
    pthread_mutex_lock(&cv->mu);
    cv->stall_last_action = action;
    if (strcmp(action, "none") && strncmp(action, "none ", 5))
        cv->stall_escalations++;
    if (!strcmp(action, "postcopy")) {
        /* Postcopy ends in a bounded time: no longer a stall. */
        cv->stalled = false;
        cv->stall_iters = 0;
    }
    pthread_mutex_unlock(&cv->mu);
    emit_stall(m, iters, remaining, action);
}

void fy_mig_converge_synced(FyMigration *m, uint64_t sync_count)
{
    FyConverge *cv = m->cv;
    pthread_mutex_lock(&cv->mu);
    bool run = cv->run;
    pthread_mutex_unlock(&cv->mu);
    if (!run)
        return;
    (void)sync_count;

    RunParams r;
    FyRamStats st;
    run_params(m, &r);
    fy_ram_get_stats(m->rs, &st);
    uint64_t reported = fy_ram_dirty_pages_reported(m->rs);
    uint64_t now = fy_mig_now_ms();

    model_dirty_rate(cv, reported, now);
    /* The final sync (the VM is stopped) neither throttles nor stalls. */
    if (m->vm->is_running && !m->vm->is_running(m->vm_opaque))
        return;
    trigger_period(m, &r, &st, reported, now);
    stall_check(m, &r, st.remaining, now);
}

void fy_mig_converge_sync_cost(FyMigration *m, uint64_t us)
{
    FyConverge *cv = m->cv;
    pthread_mutex_lock(&cv->mu);
    double ms = (double)us / 1000.0, keep = cv->model.sync_ms / 2;
    cv->model.sync_ms = ms > keep ? ms : keep;
    pthread_mutex_unlock(&cv->mu);
}

void fy_mig_converge_pending_exact(FyMigration *m, uint64_t *must,
                                   uint64_t *can)
{
    uint64_t t = now_us();
    fy_savevm_state_pending_exact(m->ss, must, can);
    fy_mig_converge_sync_cost(m, now_us() - t);
}

uint64_t fy_mig_converge_window(FyMigration *m, double bw, uint64_t pending)
{
    FyConverge *cv = m->cv;
    double sw = (double)m->params.avail_switchover_bandwidth / 1000.0;
    /* Busy: at least a window's worth was left to send. */
    bool busy = (double)pending >= bw * WINDOW_MS;
    pthread_mutex_lock(&cv->mu);
    uint64_t thr = fy_downtime_window(&cv->model, bw, busy, sw, pending,
                                      m->params.downtime_limit);
    m->expected_downtime = cv->model.expected_ms;
    pthread_mutex_unlock(&cv->mu);
    return thr;
}

/* ---- the switchover ---- */

void fy_mig_converge_stopped(FyMigration *m, uint64_t stop_begin_ms)
{
    FyConverge *cv = m->cv;
    uint64_t t = now_us();
    FyRamStats st;
    fy_ram_get_stats(m->rs, &st);
    pthread_mutex_lock(&m->lock);
    uint64_t limit = m->params.downtime_limit;
    double sw = (double)m->params.avail_switchover_bandwidth / 1000.0;
    pthread_mutex_unlock(&m->lock);

    pthread_mutex_lock(&cv->mu);
    FyDowntimeParts *p = &cv->parts;
    memset(p, 0, sizeof(*p));
    p->t_stop = stop_begin_ms * 1000;
    if (p->t_stop > t)
        p->t_stop = t;
    p->t_stopped = t;
    p->limit = limit;
    /* The estimate for what is left now, with the bandwidth last used (or,
     * before the first window, the run's average so far). */
    uint64_t ran = t / 1000 - cv->run_start_ms;
    double bw = cv->model.bw_used > 0 ? cv->model.bw_used
                : sw > 0 ? sw : (double)st.section_bytes / (double)(ran ? ran : 1);
    p->expected = fy_downtime_estimate(&cv->model, bw, st.remaining);
    pthread_mutex_unlock(&cv->mu);
}

int fy_mig_converge_complete_precopy(FyMigration *m, FyStream *f, bool rp_on,
                                     FyError **errp)
{
    FyConverge *cv = m->cv;
    uint64_t t0 = now_us(), off0 = fy_stream_offset(f);
    int r = fy_savevm_state_complete_iterable(m->ss, f, false, errp);
    uint64_t t_ram = now_us(), off_ram = fy_stream_offset(f);
    if (r == 0)
        r = fy_savevm_state_complete_devices(m->ss, f, errp);
    uint64_t t_dev = now_us(), off_dev = fy_stream_offset(f);
    uint32_t ping = PING_MAGIC | (++cv->ping_seq & 0xffff);
    /* After the devices, before EOF: the destination answers once it has
     * loaded everything, which splits its load from its start. */
    if (r == 0 && rp_on)
        fy_savevm_send_ping(f, ping);
    if (r == 0)
        r = fy_savevm_state_finish(m->ss, f, errp);
    uint64_t t_sent = now_us();

    pthread_mutex_lock(&cv->mu);
    FyDowntimeParts *p = &cv->parts;
    if (!p->t_stopped)      /* not through fy_mig_converge_stopped */
        p->t_stop = p->t_stopped = t0;
    p->t_begin = t0;
    p->t_ram = t_ram;
    p->t_dev = t_dev;
    p->t_sent = t_sent;
    p->ram_bytes = off_ram - off0;
    p->device_bytes = off_dev - off_ram;
    p->rp = rp_on;
    p->ping = ping;
    pthread_mutex_unlock(&cv->mu);
    return r;
}

void fy_mig_converge_wait_pong(FyMigration *m)
{
    FyConverge *cv = m->cv;
    pthread_mutex_lock(&cv->mu);
    bool rp = cv->parts.rp;
    uint32_t ping = cv->parts.ping;
    pthread_mutex_unlock(&cv->mu);
    if (!rp)
        return;
    pthread_mutex_lock(&m->lock);
    while (m->rp.last_pong != ping && !m->rp.done && !m->cancel_req)
        pthread_cond_wait(&m->cond, &m->lock);
    bool got = m->rp.last_pong == ping;
    pthread_mutex_unlock(&m->lock);
    uint64_t t = now_us();
    pthread_mutex_lock(&cv->mu);
    cv->parts.t_pong = got ? t : 0;
    pthread_mutex_unlock(&cv->mu);
}

void fy_mig_converge_downtime_end(FyMigration *m, uint64_t end_ms)
{
    FyConverge *cv = m->cv;
    uint64_t t = now_us();
    (void)end_ms;
    pthread_mutex_lock(&cv->mu);
    cv->parts.t_end = t;
    cv->parts.valid = true;
    fy_downtime_learn(&cv->model, &cv->parts);
    pthread_mutex_unlock(&cv->mu);
}

/* ---- query-migrate ---- */

static bool live_status(FyMigStatus s)
{
    return s == MIGRATION_STATUS_ACTIVE || s == MIGRATION_STATUS_PRE_SWITCHOVER ||
           s == MIGRATION_STATUS_DEVICE || s == MIGRATION_STATUS_POSTCOPY_ACTIVE;
}

static json_t *convergence_json(FyConverge *cv, uint64_t limit)
{
    const FyDowntimeModel *d = &cv->model;
    json_t *o = json_pack(
        "{s:I,s:{s:i,s:i,s:I},s:I,s:I,s:{s:b,s:I,s:I,s:I,s:s},"
        "s:{s:I,s:I,s:b,s:I,s:I,s:f}}",
        "dirty-rate", (json_int_t)cv->dirty_bps,
        "throttle", "percentage", cv->throttle_pct, "peak", cv->throttle_peak,
        "raises", (json_int_t)cv->throttle_raises,
        "dirty-limit", (json_int_t)cv->dirty_limit_applied,
        "dirty-limit-sets", (json_int_t)cv->dirty_limit_sets,
        "stall", "stalled", cv->stalled, "iterations",
        (json_int_t)cv->stall_iters, "events", (json_int_t)cv->stall_events,
        "escalations", (json_int_t)cv->stall_escalations, "last-action",
        cv->stall_last_action,
        "downtime", "limit", (json_int_t)limit, "expected",
        (json_int_t)d->expected_ms, "within-limit",
        d->expected_ms <= limit && !d->unreachable, "bandwidth",
        (json_int_t)(d->bw_used * 1000.0), "device-bytes",
        (json_int_t)d->device_bytes, "fixed-ms",
        d->stop_ms + d->sync_ms + d->dest_ms + d->start_ms);
    if (o && cv->parts.valid)
        json_object_set_new(o, "downtime-parts",
                            fy_downtime_parts_json(&cv->parts));
    return o;
}

void fy_mig_converge_query(FyMigration *m, json_t *o, FyMigStatus s)
{
    FyConverge *cv = m->cv;
    FyXbzrleStats xs;
    if (m->caps[FY_CAP_XBZRLE] && fy_ram_xbzrle_get_stats(m->rs, &xs))
        json_object_set_new(o, "xbzrle-cache", fy_xbzrle_stats_json(&xs));

    pthread_mutex_lock(&cv->mu);
    if (m->caps[FY_CAP_AUTO_CONVERGE] && live_status(s))
        json_object_set_new(o, "cpu-throttle-percentage",
                            json_integer(cv->throttle_pct));
    if (m->caps[FY_CAP_DIRTY_LIMIT] && live_status(s)) {
        json_object_set_new(o, "dirty-limit-throttle-time-per-round",
                            json_integer((json_int_t)
                                fy_dirtylimit_throttle_us_per_round(cv->dl)));
        json_object_set_new(o, "dirty-limit-ring-full-time",
                            json_integer((json_int_t)
                                fy_dirtylimit_ring_full_us(cv->dl)));
    }
    json_object_set_new(o, "x-convergence",
                        convergence_json(cv, m->params.downtime_limit));
    pthread_mutex_unlock(&cv->mu);
}

/* ---- vCPU dirty limits (QMP) ---- */

int fy_migration_set_vcpu_dirty_limit(FyMigration *m, bool has_cpu,
                                      int64_t cpu_index, uint64_t dirty_rate,
                                      FyError **errp)
{
    if (!dirty_rate)
        return fy_migration_cancel_vcpu_dirty_limit(m, has_cpu, cpu_index,
                                                    errp);
    return fy_dirtylimit_set(m->cv->dl, has_cpu, cpu_index, dirty_rate, false,
                             errp);
}

int fy_migration_cancel_vcpu_dirty_limit(FyMigration *m, bool has_cpu,
                                         int64_t cpu_index, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    bool busy = m->caps[FY_CAP_DIRTY_LIMIT] && !m->incoming &&
                fy_mig_status_is_running(m->status);
    pthread_mutex_unlock(&m->lock);
    if (busy) {
        fy_error_setg(errp, "dirty-limit live migration is running, do not "
                      "allow dirty page limit to be canceled");
        return -1;
    }
    return fy_dirtylimit_cancel(m->cv->dl, has_cpu, cpu_index, errp);
}

json_t *fy_migration_query_vcpu_dirty_limit(FyMigration *m)
{
    return fy_dirtylimit_query(m->cv->dl);
}
