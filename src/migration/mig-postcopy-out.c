/*
 * mig-postcopy-out.c: the source side of postcopy (QEMU's postcopy_start,
 * the postcopy branch of migration_thread, postcopy_pause and
 * postcopy_do_resume), on the migration thread.
 *
 *   setup      POSTCOPY_ADVISE (page sizes) after OPEN_RETURN_PATH
 *   precopy    as usual, until migrate-start-postcopy
 *   switch     [preempt: open the second channel first, so a refusal costs
 *              nothing] status postcopy-active, stop the VM, discards,
 *              END sections of whatever cannot postcopy, then PACKAGED:
 *              LISTEN, every device's FULL section, PING 3, RUN. From
 *              the moment that package goes out the destination may run
 *              the VM: this side never restarts it (handed_over).
 *   postcopy   RAM PART sections: requested pages first (or on the preempt
 *              channel), background pages after them at most
 *              max-postcopy-bandwidth; then the END section and EOF, the
 *              preempt channel closed, and SHUT(0) awaited on the return
 *              path
 *   break      any error on either channel or the return path (and
 *              migrate-pause, which shuts them down): status
 *              postcopy-paused, both channels closed, pages kept; wait for
 *              `migrate uri resume=true`
 *   resume     status postcopy-recover; connect, new return path (and
 *              preempt channel), RECV_BITMAP for every block: each reply
 *              makes the pages the destination lacks the pages to send;
 *              POSTCOPY_RESUME, RESUME_ACK: postcopy-active again. A failure
 *              on the way goes back to postcopy-paused.
 *
 * Only a SHUT with an error from the destination (it gave up: the guest
 * is lost there) or fy_migration_free ends postcopy with "failed".
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "migration/mig-postcopy.h"

#define QUEUE_CAPACITY 4096      /* page requests in flight */
#define RESUME_TIMEOUT_MS 60000  /* the destination's answers on a resume */
#define PREEMPT_POLL_MS 100
#define PACKAGE_PING 3           /* QEMU's ping inside the package */

enum { PHASE_DONE = 0, PHASE_BROKEN = 1, PHASE_FATAL = -1 };

/* ---- setup ---- */

static bool block_migrates(FyMigration *m, const FyRamBlock *rb)
{
    return !(fy_savevm_config(m->ss)->cap_x_ignore_shared && rb->shared);
}

int fy_mig_pc_out_setup(FyMigration *m, FyStream *f, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    pthread_mutex_lock(&m->lock);
    bool on = m->caps[FY_CAP_POSTCOPY_RAM];
    bool preempt = m->caps[FY_CAP_POSTCOPY_PREEMPT];
    pthread_mutex_unlock(&m->lock);
    if (!on)
        return 0;
    for (int i = 0; i < m->ram->count; i++) {
        const FyRamBlock *rb = m->ram->blocks[i];
        if (block_migrates(m, rb) && rb->page_size != FY_TARGET_PAGE_SIZE) {
            fy_error_setg(errp, "postcopy-ram: RAM block '%s' has %" PRIu64
                          "-byte pages; ferry postcopies 4 KiB pages only",
                          rb->idstr, rb->page_size);
            return -1;
        }
    }
    pc->preempt = preempt;
    pc->q = fy_postcopy_req_queue_new(m->ram, QUEUE_CAPACITY);
    if (!pc->q) {
        fy_error_setg(errp, "out of memory for the postcopy request queue");
        return -1;
    }
    uint8_t advise[16];
    fy_postcopy_advise_encode(m->ram, fy_savevm_config(m->ss)->cap_x_ignore_shared,
                              advise);
    fy_savevm_command_send(f, MIG_CMD_POSTCOPY_ADVISE, sizeof(advise), advise);
    return fy_stream_check(f, errp);
}

bool fy_mig_pc_out_switch_requested(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    bool go = m->pc && m->pc->start_req && m->pc->q;
    pthread_mutex_unlock(&m->lock);
    return go;
}

/* ---- the preempt channel and its sender ---- */

static int preempt_open(FyMigration *m, const char *uri, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    FyChannel *c = fy_channel_open_outgoing(uri, errp);
    if (!c) {
        fy_error_prepend(errp, "postcopy-preempt: opening its channel (is "
                         "postcopy-preempt on at the destination?): ");
        return -1;
    }
    FyStream *f = fy_stream_new_output(c, false);
    if (!f) {
        fy_channel_close(c, NULL);
        fy_error_setg(errp, "out of memory for the postcopy-preempt stream");
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    pc->pre_c = c;
    pc->pre_stop = false;
    pthread_mutex_unlock(&m->lock);
    pc->pre_f = f;
    return 0;
}

static void *preempt_main(void *opaque)
{
    FyMigration *m = opaque;
    FyMigPostcopy *pc = m->pc;
    const FyRamBlock *last = NULL;
    FyError *err = NULL;

    pthread_setname_np(pthread_self(), "fy-pc-preempt");
    fy_mig_block_sigpipe();
    for (;;) {
        pthread_mutex_lock(&m->lock);
        bool stop = pc->pre_stop;
        pthread_mutex_unlock(&m->lock);
        if (stop)
            break;
        if (!fy_postcopy_req_queue_wait(pc->q, PREEMPT_POLL_MS))
            continue;
        FyPostcopyReq req;
        int r = 0;
        while (r == 0 && fy_postcopy_req_queue_pop(pc->q, &req))
            r = fy_ram_postcopy_send_urgent(m->rs, pc->pre_f, &req, &last, &err);
        fy_stream_flush(pc->pre_f);
        if (r < 0 || fy_stream_check(pc->pre_f, &err) < 0)
            break;
    }
    fy_stream_flush(pc->pre_f);
    pthread_mutex_lock(&m->lock);
    if (err && !pc->pre_stop) {
        fy_error_prepend(&err, "postcopy-preempt channel: ");
        pc->pre_err = err;
        err = NULL;
        /* The main thread may sit in a write: make it notice too. */
        if (m->chan)
            fy_channel_shutdown(m->chan, FY_SHUTDOWN_BOTH, NULL);
    }
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    fy_error_free(err);
    return NULL;
}

static int preempt_start(FyMigration *m, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    if (!pc->preempt)
        return 0;
    if (pthread_create(&pc->pre_thread, NULL, preempt_main, m) != 0) {
        fy_error_setg(errp, "cannot start the postcopy-preempt sender");
        return -1;
    }
    pc->pre_started = true;
    return 0;
}

/* Stop the sender; with `finish` its last pages are flushed and the peer
 * sees the end of the stream, else the channel is cut. */
static void preempt_stop(FyMigration *m, bool finish)
{
    FyMigPostcopy *pc = m->pc;
    pthread_mutex_lock(&m->lock);
    pc->pre_stop = true;
    if (pc->pre_c && !finish)
        fy_channel_shutdown(pc->pre_c, FY_SHUTDOWN_BOTH, NULL);
    pthread_mutex_unlock(&m->lock);
    if (pc->q)
        fy_postcopy_req_queue_shutdown(pc->q);
    if (pc->pre_started) {
        pthread_join(pc->pre_thread, NULL);
        pc->pre_started = false;
    }
    if (pc->pre_c && finish)
        fy_channel_shutdown(pc->pre_c, FY_SHUTDOWN_WRITE, NULL);
}

static void preempt_close(FyMigration *m)
{
    FyMigPostcopy *pc = m->pc;
    preempt_stop(m, false);
    pthread_mutex_lock(&m->lock);
    FyChannel *c = pc->pre_c;
    pc->pre_c = NULL;
    fy_error_free(pc->pre_err);
    pc->pre_err = NULL;
    pthread_mutex_unlock(&m->lock);
    fy_stream_close(pc->pre_f, NULL);
    fy_channel_close(c, NULL);
    pc->pre_f = NULL;
    if (pc->q)
        fy_postcopy_req_queue_reset(pc->q);
}

/* ---- the switch ---- */

static int build_package(FyMigration *m, uint8_t **out, size_t *len,
                         FyError **errp)
{
    FyChannel *mc = fy_channel_mem_new(NULL, 0);
    FyStream *pf = mc ? fy_stream_new_output(mc, false) : NULL;
    int r = -1;
    *out = NULL;
    if (!pf) {
        fy_error_setg(errp, "out of memory for the postcopy package");
        goto out;
    }
    fy_savevm_command_send(pf, MIG_CMD_POSTCOPY_LISTEN, 0, NULL);
    if (fy_savevm_state_complete_devices(m->ss, pf, errp) < 0)
        goto out;
    fy_savevm_send_ping(pf, PACKAGE_PING);
    fy_savevm_command_send(pf, MIG_CMD_POSTCOPY_RUN, 0, NULL);
    fy_stream_flush(pf);
    if (fy_stream_check(pf, errp) < 0)
        goto out;
    const uint8_t *data = fy_channel_mem_data(mc, len);
    *out = malloc(*len ? *len : 1);
    if (!*out) {
        fy_error_setg(errp, "out of memory for the postcopy package");
        goto out;
    }
    memcpy(*out, data, *len);
    r = 0;
out:
    fy_stream_close(pf, NULL);
    fy_channel_close(mc, NULL);
    return r;
}

static uint64_t postcopy_bandwidth(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    uint64_t bw = m->params.max_postcopy_bandwidth;
    pthread_mutex_unlock(&m->lock);
    return bw;
}

/* Up to the package: a failure here leaves the VM to be restarted. */
static int switch_prepare(FyMigration *m, FyStream *f, bool *vm_stopped,
                          bool *vm_was_running, uint64_t *stop_ms,
                          FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    pc->switch_ms = fy_mig_now_ms();
    if (pc->preempt && preempt_open(m, m->uri, errp) < 0)
        return -1;
    if (!fy_mig_set_status(m, MIGRATION_STATUS_ACTIVE,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        fy_error_setg(errp, "migration cancelled");
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    pc->running = true;
    m->committed = true;  /* no cancel from here: migrate-pause instead */
    bool cancel = m->cancel_req;
    m->precopy_bytes = fy_stream_transferred(f);
    pthread_mutex_unlock(&m->lock);
    if (cancel) {
        fy_error_setg(errp, "migration cancelled");
        return -1;
    }
    *vm_was_running = m->vm->is_running ? m->vm->is_running(m->vm_opaque) : true;
    *stop_ms = fy_mig_now_ms();
    if (m->vm->stop(m->vm_opaque, errp) < 0) {
        fy_error_prepend(errp, "stopping the VM for the switch to postcopy: ");
        return -1;
    }
    *vm_stopped = true;
    fy_stream_set_rate_limit(f, 0); /* the RAM sender paces the background */
    if (fy_ram_postcopy_send_discards(m->rs, f, errp) < 0 ||
        fy_savevm_state_complete_iterable(m->ss, f, true, errp) < 0)
        return -1;
    return 0;
}

static int switch_to_postcopy(FyMigration *m, FyStream *f, bool *vm_stopped,
                              bool *vm_was_running, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    uint64_t stop_ms = 0;
    uint8_t *pkg = NULL;
    size_t len = 0;
    if (switch_prepare(m, f, vm_stopped, vm_was_running, &stop_ms, errp) < 0 ||
        build_package(m, &pkg, &len, errp) < 0)
        return -1;

    pthread_mutex_lock(&m->lock);
    pc->handed_over = true;
    pc->stale = true;
    pthread_mutex_unlock(&m->lock);
    *vm_stopped = false; /* from here the destination may run the VM */
    fy_savevm_send_packaged(f, pkg, len);
    fy_stream_flush(f);
    free(pkg);

    pthread_mutex_lock(&m->lock);
    m->downtime = fy_mig_now_ms() - stop_ms;
    pthread_mutex_unlock(&m->lock);
    /* A failed send shows up as a broken stream in the postcopy phase. */
    if (fy_ram_postcopy_begin(m->rs, pc->q, pc->preempt, postcopy_bandwidth(m),
                              errp) < 0)
        return -1;
    return preempt_start(m, errp);
}

/* ---- the postcopy phase ---- */

static void update_stats(FyMigration *m, FyStream *f)
{
    FyMigPostcopy *pc = m->pc;
    uint64_t bytes = pc->xfer_base + fy_stream_transferred(f) +
                     (pc->pre_f ? fy_stream_transferred(pc->pre_f) : 0);
    pthread_mutex_lock(&m->lock);
    m->transferred = bytes;
    pthread_mutex_unlock(&m->lock);
}

static int shut_verdict(FyMigration *m, FyError **errp)
{
    if (m->rp.shut_value == 0)
        return PHASE_DONE;
    fy_error_setg(errp, "the destination gave up during postcopy (return path "
                  "SHUT %" PRIu32 "): the guest was running there and is "
                  "lost; the state here is from the switch and stays stopped",
                  m->rp.shut_value);
    return PHASE_FATAL;
}

/* What the other threads reported (m->lock held): PHASE_* or 2 to go on. */
static int check_locked(FyMigration *m, bool done_sending, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    if (m->cancel_req) {
        fy_error_setg(errp, "migration stopped during postcopy; the VM stays "
                      "stopped here (the destination has run it)");
        return PHASE_FATAL;
    }
    if (pc->pre_err) {
        fy_error_propagate(errp, fy_error_copy(pc->pre_err));
        return PHASE_BROKEN;
    }
    if (!m->rp.done)
        return 2;
    if (m->rp.shut_received) {
        if (done_sending || m->rp.shut_value != 0)
            return shut_verdict(m, errp);
        fy_error_setg(errp, "the destination closed the migration (return "
                      "path SHUT 0) before the source finished postcopy");
        return PHASE_FATAL;
    }
    if (m->rp.err)
        fy_error_propagate(errp, fy_error_copy(m->rp.err));
    else
        fy_error_setg(errp, "the return path closed during postcopy");
    return PHASE_BROKEN;
}

static void throttle_wait(FyMigration *m)
{
    FyMigPostcopy *pc = m->pc;
    uint64_t ms = fy_ram_postcopy_throttle_ms(m->rs);
    if (!ms)
        return;
    if (ms > PREEMPT_POLL_MS)
        ms = PREEMPT_POLL_MS;
    if (!pc->preempt) {
        /* A request ends the wait: requested pages are never held back. */
        fy_postcopy_req_queue_wait(pc->q, (int)ms);
        return;
    }
    struct timespec ts = { 0, (long)ms * 1000000L };
    nanosleep(&ts, NULL);
}

static int wait_shut(FyMigration *m, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    int r;
    while ((r = check_locked(m, true, errp)) == 2)
        pthread_cond_wait(&m->cond, &m->lock);
    pthread_mutex_unlock(&m->lock);
    return r;
}

static int stream_phase(FyMigration *m, FyStream *f, FyError **errp)
{
    for (;;) {
        pthread_mutex_lock(&m->lock);
        int c = check_locked(m, false, errp);
        pthread_mutex_unlock(&m->lock);
        if (c != 2)
            return c;
        /* max-postcopy-bandwidth applies live, as in QEMU. */
        fy_ram_postcopy_set_bandwidth(m->rs, postcopy_bandwidth(m));
        int r = fy_savevm_state_iterate_postcopy(m->ss, f, errp);
        if (r >= 0) {
            fy_stream_flush(f);
            r = fy_stream_check(f, errp) < 0 ? -1 : r;
        }
        update_stats(m, f);
        if (r < 0)
            return PHASE_BROKEN;
        if (r == 1)
            break;
        throttle_wait(m);
    }
    if (fy_savevm_state_complete_postcopy(m->ss, f, errp) < 0)
        return PHASE_BROKEN;
    update_stats(m, f);
    if (m->pc->preempt)
        preempt_stop(m, true);
    return wait_shut(m, errp);
}

/* ---- pause and resume ---- */

static void enter_paused(FyMigration *m, FyError *why)
{
    FyMigPostcopy *pc = m->pc;
    pthread_mutex_lock(&m->lock);
    fy_error_prepend(&why, "postcopy paused: ");
    fy_error_free(pc->pause_err);
    pc->pause_err = why;
    pc->pauses++;
    pthread_mutex_unlock(&m->lock);
    fy_mig_set_status_now(m, MIGRATION_STATUS_POSTCOPY_PAUSED);
}

/* Close both channels and the return path; every page stays. */
static void teardown(FyMigration *m, FyChannel **c, FyStream **f)
{
    FyMigPostcopy *pc = m->pc;
    preempt_close(m);
    pthread_mutex_lock(&m->lock);
    if (m->chan)
        fy_channel_shutdown(m->chan, FY_SHUTDOWN_BOTH, NULL);
    pthread_mutex_unlock(&m->lock);
    fy_mig_rp_join(m);
    pthread_mutex_lock(&m->lock);
    pc->xfer_base += *f ? fy_stream_transferred(*f) : 0;
    m->chan = NULL;
    pthread_mutex_unlock(&m->lock);
    fy_stream_close(*f, NULL);
    fy_channel_close(*c, NULL);
    *f = NULL;
    *c = NULL;
    fy_mig_rp_reset(m);
    fy_postcopy_req_queue_reset(pc->q);
}

static char *wait_resume(FyMigration *m)
{
    FyMigPostcopy *pc = m->pc;
    pthread_mutex_lock(&m->lock);
    while (!pc->resume_uri && !m->cancel_req)
        pthread_cond_wait(&m->cond, &m->lock);
    char *uri = m->cancel_req ? NULL : pc->resume_uri;
    if (uri)
        pc->resume_uri = NULL;
    pthread_mutex_unlock(&m->lock);
    return uri;
}

typedef bool (*ReadyFn)(FyMigPostcopy *pc, int want);

static bool bitmaps_in(FyMigPostcopy *pc, int want)
{
    return pc->bitmaps_got >= want;
}

static bool acked(FyMigPostcopy *pc, int want)
{
    (void)want;
    return pc->resume_acked;
}

/* Wait for the return-path reader to see what we asked for. */
static int wait_answer(FyMigration *m, ReadyFn ready, int want,
                       const char *what, FyError **errp)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += RESUME_TIMEOUT_MS / 1000;
    int r = 0;
    pthread_mutex_lock(&m->lock);
    while (!ready(m->pc, want)) {
        if (m->cancel_req) {
            fy_error_setg(errp, "migration stopped");
            r = -1;
        } else if (m->rp.done) {
            if (m->rp.err)
                fy_error_propagate(errp, fy_error_copy(m->rp.err));
            else
                fy_error_setg(errp, "the destination closed the return path");
            r = -1;
        } else if (pthread_cond_timedwait(&m->cond, &m->lock, &dl) != 0) {
            fy_error_setg(errp, "no %s from the destination within %d s", what,
                          RESUME_TIMEOUT_MS / 1000);
            r = -1;
        }
        if (r < 0)
            break;
    }
    pthread_mutex_unlock(&m->lock);
    if (r < 0)
        fy_error_prepend(errp, "waiting for %s: ", what);
    return r;
}

static int ask_bitmaps(FyMigration *m, FyStream *f, int *want, FyError **errp)
{
    *want = 0;
    for (int i = 0; i < m->ram->count; i++) {
        const FyRamBlock *rb = m->ram->blocks[i];
        uint8_t name[256];
        if (!block_migrates(m, rb))
            continue;
        int n = fy_postcopy_encode_block_name(rb->idstr, name);
        if (n < 0) {
            fy_error_setg(errp, "RAM block name '%.40s...' is too long", rb->idstr);
            return -1;
        }
        fy_savevm_command_send(f, MIG_CMD_RECV_BITMAP, (uint16_t)n, name);
        (*want)++;
    }
    return fy_stream_check(f, errp);
}

static int reconnect(FyMigration *m, const char *uri, FyChannel **c,
                     FyStream **f, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    FyChannel *nc = fy_channel_open_outgoing(uri, errp);
    if (!nc)
        return -1;
    pthread_mutex_lock(&m->lock);
    m->chan = nc;
    pc->bitmaps_got = 0;
    pc->resume_acked = false;
    bool cancel = m->cancel_req;
    pthread_mutex_unlock(&m->lock);
    *c = nc;
    *f = fy_stream_new_output(nc, false);
    if (!*f || cancel) {
        fy_error_setg(errp, cancel ? "migration stopped" : "out of memory");
        return -1;
    }
    FyStream *rp = fy_stream_return_path(*f, errp);
    int want;
    if (!rp || fy_mig_rp_start(m, rp, errp) < 0)
        return -1;
    if (pc->preempt && preempt_open(m, uri, errp) < 0)
        return -1;
    if (ask_bitmaps(m, *f, &want, errp) < 0 ||
        wait_answer(m, bitmaps_in, want, "the received bitmaps", errp) < 0)
        return -1;
    fy_savevm_command_send(*f, MIG_CMD_POSTCOPY_RESUME, 0, NULL);
    if (fy_stream_check(*f, errp) < 0 ||
        wait_answer(m, acked, 0, "RESUME_ACK", errp) < 0)
        return -1;
    fy_ram_postcopy_set_bandwidth(m->rs, postcopy_bandwidth(m));
    return preempt_start(m, errp);
}

static int pause_and_resume(FyMigration *m, FyChannel **c, FyStream **f,
                            FyError *why, FyError **errp)
{
    for (;;) {
        enter_paused(m, why);
        teardown(m, c, f);
        char *uri = wait_resume(m);
        if (!uri) {
            fy_error_setg(errp, "the migration was stopped while postcopy was "
                          "paused; the VM stays stopped here (the destination "
                          "has run it)");
            return -1;
        }
        why = NULL;
        fy_mig_set_status(m, MIGRATION_STATUS_POSTCOPY_PAUSED,
                          MIGRATION_STATUS_POSTCOPY_RECOVER);
        int r = reconnect(m, uri, c, f, &why);
        if (r < 0)
            fy_error_prepend(&why, "resuming at %s: ", uri);
        free(uri);
        if (r == 0 && fy_mig_set_status(m, MIGRATION_STATUS_POSTCOPY_RECOVER,
                                        MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
            pthread_mutex_lock(&m->lock);
            fy_error_free(m->pc->pause_err);
            m->pc->pause_err = NULL;
            pthread_mutex_unlock(&m->lock);
            return 0;
        }
        if (r == 0)
            fy_error_setg(&why, "the status changed during the resume");
    }
}

/* ---- the whole of it ---- */

int fy_mig_pc_outgoing(FyMigration *m, FyChannel **c, FyStream **f,
                       bool *vm_stopped, bool *vm_was_running, FyError **errp)
{
    FyError *err = NULL;
    int r = switch_to_postcopy(m, *f, vm_stopped, vm_was_running, errp);
    while (r == 0) {
        int p = stream_phase(m, *f, &err);
        if (p == PHASE_DONE)
            break;
        if (p == PHASE_FATAL) {
            fy_error_propagate(errp, err);
            r = -1;
        } else {
            r = pause_and_resume(m, c, f, err, errp);
        }
        err = NULL;
    }
    preempt_close(m);
    fy_ram_postcopy_end(m->rs);
    if (r == 0) {
        uint64_t now = fy_mig_now_ms();
        pthread_mutex_lock(&m->lock);
        m->total_time = now - m->start_ms;
        m->downtime_bytes = 0;
        pthread_mutex_unlock(&m->lock);
    }
    return r;
}

/* ---- return-path messages (the reader thread) ---- */

static int on_recv_bitmap(FyMigration *m, FyStream *f, const uint8_t *payload,
                          uint16_t len, FyError **errp)
{
    char id[256];
    if (fy_postcopy_decode_block_name(payload, len, id, errp) < 0)
        return -1;
    pthread_mutex_lock(&m->lock);
    bool recovering = m->status == MIGRATION_STATUS_POSTCOPY_RECOVER;
    pthread_mutex_unlock(&m->lock);
    if (!recovering) {
        fy_error_setg(errp, "RECV_BITMAP outside a postcopy recovery");
        return -1;
    }
    if (fy_ram_postcopy_reload_bitmap(m->rs, f, id, errp) < 0)
        return -1;
    pthread_mutex_lock(&m->lock);
    m->pc->bitmaps_got++;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

int fy_mig_pc_rp_message(FyMigration *m, FyStream *f, uint16_t type,
                         const uint8_t *payload, uint16_t len, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    if (!pc || !pc->q)
        return FY_MIG_PC_NOT_MINE;
    switch (type) {
    case FY_RP_MSG_REQ_PAGES_ID:
    case FY_RP_MSG_REQ_PAGES:
        if (fy_postcopy_req_queue_push_rp(pc->q, type, payload, len, errp) < 0) {
            fy_error_prepend(errp, "return path: page request: ");
            return -1;
        }
        return 0;
    case FY_RP_MSG_RECV_BITMAP:
        if (on_recv_bitmap(m, f, payload, len, errp) < 0) {
            fy_error_prepend(errp, "return path: RECV_BITMAP: ");
            return -1;
        }
        return 0;
    case FY_RP_MSG_RESUME_ACK:
        if (fy_postcopy_check_resume_ack(payload, len, errp) < 0)
            return -1;
        pthread_mutex_lock(&m->lock);
        pc->resume_acked = true;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        return 0;
    default:
        return FY_MIG_PC_NOT_MINE;
    }
}
