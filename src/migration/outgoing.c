/*
 * outgoing.c: fy_migrate() and the migration thread (QEMU's
 * migration_thread), precopy.
 *
 *   connect        fy_channel_open_outgoing(uri), output stream
 *   header         magic, version, configuration
 *   [return path]  MIG_CMD_OPEN_RETURN_PATH + a reader thread
 *   setup          START sections (RAM: block list; dirty log on)
 *                  status setup -> active
 *   iterate        until pending <= threshold, where threshold = bandwidth
 *                  x downtime-limit, bandwidth measured every 100 ms (or
 *                  avail-switchover-bandwidth when set); an estimate first,
 *                  an exact pending (a dirty sync) when the estimate fits;
 *                  each round is bounded by max-bandwidth
 *   switchover     stop the vCPUs (downtime starts), [pre-switchover: wait
 *                  for migrate-continue, then device], no rate limit, END
 *                  sections (final dirty sync, last pages), FULL device
 *                  sections, EOF, VM description; then nothing may be
 *                  cancelled any more (the destination may already run)
 *   [return path]  wait for SHUT: 0 = the destination loaded and started
 *   close          (an exec child's exit status counts), downtime ends
 *   finish         status completed -- or on any failure: stop the return
 *                  path, close, stop dirty tracking, restart the VM if we
 *                  stopped it, record error-desc, status failed (cancelled
 *                  after a cancel)
 *
 * Downtime is measured from vCPU stop to the destination's SHUT(0) when the
 * return path is on (it sends SHUT right after starting its vCPUs), else to
 * the moment the whole stream has been handed to the channel.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "migration/converge.h"
#include "migration/mig-multifd.h"
#include "migration/mig-postcopy.h"
#include "migration/mig-connect.h"
#include "migration/migration-int.h"

#define COUNTER_WINDOW_MS 100 /* QEMU's BUFFER_DELAY */
#define RP_GRACE_MS 5000      /* time the destination gets to say why */

typedef struct Out {
    FyMigration *m;
    FyChannel *c;
    FyStream *f;             /* over c, which it does not own */
    bool rp_on;
    bool setup_done;
    bool vm_stopped;
    bool vm_was_running;
    uint64_t downtime_start;
    uint64_t applied_rate;
    uint64_t threshold;
    uint64_t win_start_ms, win_bytes, win_pages;
} Out;

static int cancelled(FyError **errp)
{
    fy_error_setg(errp, "migration cancelled");
    return -1;
}

static bool cancel_requested(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    bool c = m->cancel_req;
    pthread_mutex_unlock(&m->lock);
    return c;
}

/* ---- connect and setup ---- */

static int out_connect(Out *o, FyError **errp)
{
    FyMigration *m = o->m;
    if (fy_mig_mfd_out_before_main(m, errp) < 0)
        return -1;
    FyChannel *c = fy_mig_connect(m, errp);
    if (!c)
        return -1;
    pthread_mutex_lock(&m->lock);
    m->chan = c;
    bool cancel = m->cancel_req;
    pthread_mutex_unlock(&m->lock);
    o->c = c;
    o->f = fy_stream_new_output(c, false);
    if (!o->f) {
        fy_error_setg(errp, "out of memory for the migration stream");
        return -1;
    }
    if (cancel)
        return cancelled(errp);
    return fy_mig_mfd_out_after_main(m, errp);
}

static int open_return_path(Out *o, FyError **errp)
{
    FyStream *rp = fy_stream_return_path(o->f, errp);
    if (!rp) {
        fy_error_prepend(errp, "capability 'return-path': ");
        return -1;
    }
    fy_savevm_command_send(o->f, MIG_CMD_OPEN_RETURN_PATH, 0, NULL);
    if (fy_stream_check(o->f, errp) < 0)
        return -1;
    if (fy_mig_rp_start(o->m, rp, errp) < 0)
        return -1;
    o->rp_on = true;
    return 0;
}

static int out_setup(Out *o, FyError **errp)
{
    FyMigration *m = o->m;

    pthread_mutex_lock(&m->lock);
    bool rp = m->caps[FY_CAP_RETURN_PATH] || m->caps[FY_CAP_POSTCOPY_RAM];
    o->applied_rate = m->params.max_bandwidth;
    pthread_mutex_unlock(&m->lock);

    fy_mig_apply_caps(m);
    if (fy_mig_converge_start(m, errp) < 0)
        return -1;
    fy_stream_set_rate_limit(o->f, o->applied_rate);
    if (fy_savevm_state_header(m->ss, o->f, errp) < 0)
        return -1;
    if (rp && open_return_path(o, errp) < 0)
        return -1;
    if (fy_mig_pc_out_setup(m, o->f, errp) < 0)
        return -1;
    o->setup_done = true;
    if (fy_savevm_state_setup(m->ss, o->f, errp) < 0)
        return -1;
    fy_stream_flush(o->f);
    if (fy_stream_check(o->f, errp) < 0)
        return -1;

    uint64_t now = fy_mig_now_ms();
    pthread_mutex_lock(&m->lock);
    m->setup_time = now - m->start_ms;
    m->transferred = fy_stream_transferred(o->f);
    pthread_mutex_unlock(&m->lock);
    o->win_start_ms = now;
    o->win_bytes = fy_mig_out_bytes(m, o->f);
    if (!fy_mig_set_status(m, MIGRATION_STATUS_SETUP, MIGRATION_STATUS_ACTIVE))
        return cancelled(errp);
    return 0;
}

/* ---- iteration ---- */

/* A cancel, or the destination giving up early (its SHUT or a closed
 * return path), ends the iterations. */
static int check_abort(Out *o, FyError **errp)
{
    FyMigration *m = o->m;
    int ret = 0;
    pthread_mutex_lock(&m->lock);
    if (m->cancel_req) {
        ret = cancelled(errp);
    } else if (o->rp_on && m->rp.done) {
        if (m->rp.shut_received && m->rp.shut_value != 0)
            fy_error_setg(errp, "the destination failed to load the migration "
                          "stream (return path SHUT %" PRIu32 ")",
                          m->rp.shut_value);
        else if (m->rp.shut_received)
            fy_error_setg(errp, "the destination stopped the migration "
                          "(return path SHUT 0)");
        else
            fy_error_propagate(errp, fy_error_copy(m->rp.err));
        ret = -1;
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

static void apply_rate(Out *o)
{
    pthread_mutex_lock(&o->m->lock);
    uint64_t rate = o->m->params.max_bandwidth;
    pthread_mutex_unlock(&o->m->lock);
    if (rate != o->applied_rate) {
        fy_stream_set_rate_limit(o->f, rate);
        o->applied_rate = rate;
    }
}

static uint64_t pages_sent(FyMigration *m)
{
    FyRamStats st;
    fy_ram_get_stats(m->rs, &st);
    return st.normal + st.duplicate;
}

/* Every 100 ms: bandwidth, the switchover threshold, mbps, pages/s and the
 * expected downtime (QEMU's migration_update_counters). */
static void update_counters(Out *o, uint64_t pending)
{
    FyMigration *m = o->m;
    uint64_t now = fy_mig_now_ms();
    uint64_t elapsed = now - o->win_start_ms;
    if (elapsed < COUNTER_WINDOW_MS)
        return;
    uint64_t bytes = fy_mig_out_bytes(m, o->f);
    uint64_t pages = pages_sent(m);
    double bw = (double)(bytes - o->win_bytes) / (double)elapsed; /* B/ms */

    pthread_mutex_lock(&m->lock);
    /* The threshold and expected-downtime count every cost of the
     * switchover, not only the RAM left (downtime.c). */
    o->threshold = fy_mig_converge_window(m, bw, pending);
    m->mbps = (double)(bytes - o->win_bytes) * 8.0 / (double)elapsed / 1000.0;
    m->pages_per_second = (pages - o->win_pages) * 1000 / elapsed;
    m->transferred = bytes;
    pthread_mutex_unlock(&m->lock);

    o->win_start_ms = now;
    o->win_bytes = bytes;
    o->win_pages = pages;
}

static bool vm_paused(FyMigration *m)
{
    return m->vm->is_running && !m->vm->is_running(m->vm_opaque);
}

static int out_iterate(Out *o, FyError **errp)
{
    FySaveState *ss = o->m->ss;
    for (;;) {
        uint64_t must = 0, can = 0;
        if (check_abort(o, errp) < 0)
            return -1;
        if (fy_mig_pc_out_switch_requested(o->m))
            return 1; /* postcopy takes over */
        apply_rate(o);
        fy_mig_converge_iteration(o->m);
        fy_savevm_state_pending_estimate(ss, &must, &can);
        update_counters(o, must + can);
        /* A paused guest dirties nothing: send it all before the switchover,
         * whose downtime is then the device state alone (issue 5). */
        uint64_t thr = vm_paused(o->m) ? 0 : o->threshold;
        if (must + can <= thr) {
            must = can = 0;
            fy_mig_converge_pending_exact(o->m, &must, &can);
            if (must + can <= thr)
                return 0;
        }
        if (fy_savevm_state_iterate(ss, o->f, errp) < 0)
            return -1;
        fy_stream_flush(o->f);
        if (fy_stream_check(o->f, errp) < 0)
            return -1;
        if (fy_stream_rate_limit_exceeded(o->f))
            fy_stream_rate_limit_wait(o->f);
    }
}

/* ---- switchover ---- */

static int pause_before_switchover(Out *o, FyError **errp)
{
    FyMigration *m = o->m;
    if (!fy_mig_set_status(m, MIGRATION_STATUS_ACTIVE,
                           MIGRATION_STATUS_PRE_SWITCHOVER))
        return cancelled(errp);
    pthread_mutex_lock(&m->lock);
    while (!m->continue_req && !m->cancel_req)
        pthread_cond_wait(&m->cond, &m->lock);
    pthread_mutex_unlock(&m->lock);
    if (!fy_mig_set_status(m, MIGRATION_STATUS_PRE_SWITCHOVER,
                           MIGRATION_STATUS_DEVICE))
        return cancelled(errp);
    return 0;
}

static int stop_vm(Out *o, FyError **errp)
{
    FyMigration *m = o->m;
    o->vm_was_running = m->vm->is_running ? m->vm->is_running(m->vm_opaque)
                                          : true;
    o->downtime_start = fy_mig_now_ms();
    pthread_mutex_lock(&m->lock);
    m->precopy_bytes = fy_mig_out_bytes(m, o->f);
    pthread_mutex_unlock(&m->lock);
    if (m->vm->stop(m->vm_opaque, errp) < 0) {
        fy_error_prepend(errp, "stopping the VM for the switchover: ");
        return -1;
    }
    o->vm_stopped = true;
    return 0;
}

/* The whole stream is out: from here a cancel cannot take it back. */
static int commit(Out *o, FyError **errp)
{
    FyMigration *m = o->m;
    pthread_mutex_lock(&m->lock);
    bool cancel = m->cancel_req;
    if (!cancel)
        m->committed = true;
    pthread_mutex_unlock(&m->lock);
    return cancel ? cancelled(errp) : 0;
}

static int wait_destination(Out *o, FyError **errp)
{
    FyMigration *m = o->m;
    int ret = 0;
    pthread_mutex_lock(&m->lock);
    while (!m->rp.done)
        pthread_cond_wait(&m->cond, &m->lock);
    if (!m->rp.shut_received) {
        fy_error_propagate(errp, fy_error_copy(m->rp.err));
        ret = -1;
    } else if (m->rp.shut_value != 0) {
        fy_error_setg(errp, "the destination failed to load the migration "
                      "stream (return path SHUT %" PRIu32 ")",
                      m->rp.shut_value);
        ret = -1;
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

static void detach_channel(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    m->chan = NULL;
    pthread_mutex_unlock(&m->lock);
}

static FyError *join_errors(FyError *first, const char *sep, FyError *second)
{
    if (!second)
        return first;
    if (!first)
        return second;
    fy_error_prepend(&second, "%s%s", fy_error_msg(first), sep);
    fy_error_free(first);
    return second;
}

/* Flush and close. The stream's error (a failed flush) and the channel's
 * own (an exec child's exit status) come back separately: after a failure
 * the first only repeats what is known, the second may be the reason. */
static void close_stream(Out *o, FyError **stream_err, FyError **chan_err)
{
    detach_channel(o->m);
    fy_stream_close(o->f, stream_err);
    fy_channel_close(o->c, chan_err);
    o->f = NULL;
    o->c = NULL;
}

static int out_complete(Out *o, FyError **errp)
{
    FyMigration *m = o->m;

    pthread_mutex_lock(&m->lock);
    bool pause = m->caps[FY_CAP_PAUSE_BEFORE_SWITCHOVER];
    pthread_mutex_unlock(&m->lock);

    if (stop_vm(o, errp) < 0)
        return -1;
    fy_mig_converge_stopped(m, o->downtime_start);
    if (pause && pause_before_switchover(o, errp) < 0)
        return -1;
    fy_stream_set_rate_limit(o->f, 0);
    if (fy_mig_converge_complete_precopy(m, o->f, o->rp_on, errp) < 0)
        return -1;
    if (commit(o, errp) < 0)
        return -1;
    uint64_t bytes = fy_mig_out_bytes(m, o->f);
    if (o->rp_on) {
        fy_mig_converge_wait_pong(m);
        if (wait_destination(o, errp) < 0)
            return -1;
        fy_mig_rp_join(m);
    }
    FyError *serr = NULL, *cerr = NULL;
    close_stream(o, &serr, &cerr);
    if (serr || cerr) {
        FyError *e = join_errors(serr, "; ", cerr);
        fy_error_prepend(&e, "closing the migration channel: ");
        fy_error_propagate(errp, e);
        return -1;
    }

    uint64_t now = fy_mig_now_ms();
    fy_mig_converge_downtime_end(m, now);
    pthread_mutex_lock(&m->lock);
    m->downtime = now - o->downtime_start;
    m->total_time = now - m->start_ms;
    m->transferred = bytes;
    m->downtime_bytes = bytes - m->precopy_bytes;
    uint64_t transfer_time = m->total_time - m->setup_time;
    if (transfer_time)
        m->mbps = (double)bytes * 8.0 / (double)transfer_time / 1000.0;
    m->expected_downtime = 0;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* ---- finish ---- */

/* After a channel error, the destination usually knows why: give its
 * return path a moment to report, and prefer its verdict. */
static FyError *root_cause(Out *o, FyError *err)
{
    FyMigration *m = o->m;
    if (!o->rp_on || !o->f || !fy_stream_error(o->f))
        return err;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += RP_GRACE_MS / 1000;
    pthread_mutex_lock(&m->lock);
    while (!m->rp.done && !m->cancel_req &&
           pthread_cond_timedwait(&m->cond, &m->lock, &dl) == 0)
        ;
    if (m->rp.shut_received && m->rp.shut_value != 0) {
        FyError *dst = NULL;
        fy_error_setg(&dst, "the destination failed to load the migration "
                      "stream (return path SHUT %" PRIu32 "); here: %s",
                      m->rp.shut_value, fy_error_msg(err));
        fy_error_free(err);
        err = dst;
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

static void stop_return_path(Out *o)
{
    FyMigration *m = o->m;
    if (!m->rp.started)
        return;
    pthread_mutex_lock(&m->lock);
    if (!m->rp.done && m->chan)
        fy_channel_shutdown(m->chan, FY_SHUTDOWN_BOTH, NULL);
    pthread_mutex_unlock(&m->lock);
    fy_mig_rp_join(m);
}

static FyError *restart_vm(Out *o, FyError *err)
{
    FyMigration *m = o->m;
    FyError *serr = NULL;
    if (!o->vm_stopped || !o->vm_was_running)
        return err;
    if (m->vm->start(m->vm_opaque, &serr) < 0) {
        if (!serr)
            fy_error_setg(&serr, "the VM reported a failure");
        fy_error_prepend(&serr, "restarting the VM: ");
        return join_errors(err, "; ", serr);
    }
    fy_error_free(serr);
    return err;
}

static void out_finish(Out *o, int r, FyError *err)
{
    FyMigration *m = o->m;

    if (r < 0)
        err = root_cause(o, err);
    stop_return_path(o);
    fy_mig_mfd_out_finish(m);
    if (o->c) {
        FyError *cerr = NULL;
        close_stream(o, NULL, &cerr);
        if (r < 0 && !cancel_requested(m))
            err = join_errors(err, "; ", cerr);
        else
            fy_error_free(cerr);
    }
    if (o->setup_done)
        fy_savevm_state_cleanup(m->ss);
    fy_mig_converge_stop(m);   /* after the dirty log is off */
    if (r < 0)
        err = restart_vm(o, err);
    fy_mig_rp_reset(m);

    pthread_mutex_lock(&m->lock);
    bool cancel = m->cancel_req;
    if (r < 0 && !cancel) {
        if (!err)
            fy_error_setg(&err, "migration failed");
        fy_error_free(m->error);
        m->error = err;
        err = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    fy_error_free(err);

    if (r == 0)
        fy_mig_set_status_now(m, MIGRATION_STATUS_COMPLETED);
    else
        fy_mig_set_status_now(m, cancel ? MIGRATION_STATUS_CANCELLED
                                        : MIGRATION_STATUS_FAILED);
}

void *fy_mig_outgoing_thread(void *opaque)
{
    Out o = { .m = opaque };
    FyError *err = NULL;

    pthread_setname_np(pthread_self(), "fy-mig-outgoing");
    fy_mig_block_sigpipe();
    int r = out_connect(&o, &err);
    if (r == 0)
        r = out_setup(&o, &err);
    if (r == 0)
        r = out_iterate(&o, &err);
    if (r > 0)
        r = fy_mig_pc_outgoing(o.m, &o.c, &o.f, &o.vm_stopped,
                               &o.vm_was_running, &err);
    else if (r == 0)
        r = out_complete(&o, &err);
    out_finish(&o, r, err);
    return NULL;
}

/* ---- starting ---- */

void fy_mig_join_workers(FyMigration *m)
{
    if (m->thread_joinable) {
        pthread_join(m->thread, NULL);
        m->thread_joinable = false;
    }
    if (m->in_thread_joinable) {
        pthread_join(m->in_thread, NULL);
        m->in_thread_joinable = false;
    }
}

static void reset_run_locked(FyMigration *m, bool incoming)
{
    fy_error_free(m->error);
    m->error = NULL;
    m->incoming = incoming;
    m->cancel_req = false;
    m->continue_req = false;
    m->committed = false;
    m->start_ms = fy_mig_now_ms();
    m->setup_time = m->total_time = m->downtime = m->expected_downtime = 0;
    m->mbps = 0;
    m->pages_per_second = 0;
    m->transferred = m->precopy_bytes = m->downtime_bytes = 0;
}

/* Shared by fy_migrate and fy_migrate_incoming: refuse while one runs,
 * join the previous worker, reset, go to setup. Called with event_lock. */
int fy_mig_begin_run(FyMigration *m, bool incoming, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    bool busy = fy_mig_status_is_running(m->status);
    pthread_mutex_unlock(&m->lock);
    if (busy) {
        fy_error_setg(errp, "There's a migration process in progress");
        return -1;
    }
    fy_mig_join_workers(m);
    pthread_mutex_lock(&m->lock);
    reset_run_locked(m, incoming);
    pthread_mutex_unlock(&m->lock);
    return fy_mig_pc_reset_run(m, errp);
}

int fy_migrate(FyMigration *m, const char *uri, bool resume, FyError **errp)
{
    FyUri u;
    if (resume)
        return fy_mig_pc_resume(m, uri, errp);
    if (fy_mig_pc_may_migrate(m, errp) < 0)
        return -1;
    if (fy_uri_parse(uri, &u, errp) < 0)
        return -1;
    fy_uri_clear(&u);
    if (fy_mig_mfd_check_uri(m, uri, false, errp) < 0)
        return -1;

    int ret = -1;
    pthread_mutex_lock(&m->event_lock);
    if (fy_mig_begin_run(m, false, errp) < 0)
        goto out;
    free(m->uri);
    m->uri = strdup(uri);
    if (!m->uri) {
        fy_error_setg(errp, "out of memory");
        goto out;
    }
    fy_mig_set_status_now(m, MIGRATION_STATUS_SETUP);
    if (pthread_create(&m->thread, NULL, fy_mig_outgoing_thread, m) != 0) {
        pthread_mutex_lock(&m->lock);
        fy_error_setg(&m->error, "cannot start the migration thread");
        fy_error_setg(errp, "cannot start the migration thread");
        pthread_mutex_unlock(&m->lock);
        fy_mig_set_status_now(m, MIGRATION_STATUS_FAILED);
        goto out;
    }
    m->thread_joinable = true;
    ret = 0;
out:
    pthread_mutex_unlock(&m->event_lock);
    return ret;
}
