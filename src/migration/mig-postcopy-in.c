/*
 * mig-postcopy-in.c: the destination side of postcopy (QEMU's
 * loadvm_postcopy_handle_*, postcopy_ram_listen_thread,
 * postcopy_pause_incoming and the recovery handshake), on the incoming
 * thread.
 *
 *   ADVISE     page sizes checked; userfaultfd opened (FyPostcopyDest);
 *              from now the RAM loader reports what it loads as received
 *   DISCARD    drop pages the source will send again
 *   PACKAGED   the nested stream is read whole (it is device state, and
 *              the main stream goes on with RAM behind it), then loaded:
 *     LISTEN   whatever precopy did not leave is punched out, RAM is
 *              registered (MISSING), the fault thread starts, the RAM
 *              loader places pages from now on; status postcopy-active;
 *              [preempt: accept the second channel, start its loader]
 *     devices  FULL sections
 *     RUN      the VM starts (unless autostart is off); the main loader
 *              stops here and the postcopy phase below takes over
 *   postcopy   RAM sections from the main stream until EOF, urgent pages
 *              from the preempt channel, page requests out on the return
 *              path from the fault thread; at EOF (and the preempt
 *              channel's end) every page is there: stop userfaultfd
 *   break      status postcopy-paused: the fault thread stops asking (it
 *              remembers what was asked), channels closed, every placed
 *              page kept, the vCPUs that wait for a page keep waiting.
 *              The reason is error-desc. migrate-recover URI listens; a
 *              connection makes it postcopy-recover and the same load
 *              loop continues on the new stream, where the source sends
 *              RECV_BITMAP (we answer with what we have) and
 *              POSTCOPY_RESUME (RESUME_ACK, postcopy-active, every
 *              outstanding request sent again).
 *
 * A destination in postcopy never fails by itself: the guest runs here and
 * half of its memory is over there, so every error pauses and waits for a
 * recovery (a source that died stays "postcopy-paused", with error-desc
 * saying the connection broke and how many pages are missing). Only
 * fy_migration_free ends it; then userfaultfd is stopped and the blocked
 * vCPUs see zero pages, which is why that is left to whoever frees the VM.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "migration/mig-postcopy.h"

#define PREEMPT_ACCEPT_MS 30000
#define PACKAGE_CHUNK (1u << 20)

/* ---- the return path (any thread) ---- */

static int rp_send(FyMigPostcopy *pc, uint16_t type, const uint8_t *data,
                   uint16_t len, FyError **errp)
{
    pthread_mutex_lock(&pc->rp_lock);
    int r = -1;
    if (pc->rp)
        r = fy_mig_rp_send(pc->rp, type, data, len, errp);
    else
        fy_error_setg(errp, "the return path is closed (postcopy paused)");
    pthread_mutex_unlock(&pc->rp_lock);
    return r;
}

/* FyPostcopyRequestFn, on the fault thread. */
static int request_page(void *opaque, const char *idstr, uint64_t offset,
                        uint64_t len)
{
    FyMigration *m = opaque;
    FyMigPostcopy *pc = m->pc;
    uint8_t buf[FY_POSTCOPY_REQ_MAX];
    uint16_t type;
    int r = -1;
    pthread_mutex_lock(&pc->rp_lock);
    if (pc->rp && !fy_stream_error(pc->rp)) {
        int n = fy_postcopy_encode_req_pages(&pc->enc, idstr, offset,
                                             (uint32_t)len, buf, &type);
        if (n > 0)
            r = fy_mig_rp_send(pc->rp, type, buf, (uint16_t)n, NULL);
    }
    pthread_mutex_unlock(&pc->rp_lock);
    if (r < 0) {
        /* The way back is broken: make the loader notice and pause too. */
        pthread_mutex_lock(&m->lock);
        if (m->chan)
            fy_channel_shutdown(m->chan, FY_SHUTDOWN_BOTH, NULL);
        pthread_mutex_unlock(&m->lock);
    }
    return r;
}

static void set_rp(FyMigPostcopy *pc, FyStream *rp)
{
    pthread_mutex_lock(&pc->rp_lock);
    pc->rp = rp;
    fy_postcopy_req_encoder_reset(&pc->enc);
    pthread_mutex_unlock(&pc->rp_lock);
}

/* ---- the preempt channel's loader ---- */

static void *preempt_loader(void *opaque)
{
    FyMigration *m = opaque;
    FyMigPostcopy *pc = m->pc;
    FyError *err = NULL;
    pthread_setname_np(pthread_self(), "fy-pc-preempt-in");
    fy_mig_block_sigpipe();
    int r = fy_postcopy_dest_load_preempt(pc->d, pc->pin_f, &err);
    pthread_mutex_lock(&m->lock);
    if (r < 0 && !pc->pin_stopping) {
        pc->pin_err = err;
        err = NULL;
        if (m->chan)
            fy_channel_shutdown(m->chan, FY_SHUTDOWN_BOTH, NULL);
    }
    pthread_mutex_unlock(&m->lock);
    fy_error_free(err);
    return NULL;
}

static int preempt_accept(FyMigration *m, FyListener *l, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    FyChannel *c = fy_listener_accept(l, PREEMPT_ACCEPT_MS, errp);
    if (!c) {
        fy_error_prepend(errp, "postcopy-preempt: accepting its channel: ");
        return -1;
    }
    FyStream *f = fy_stream_new_input(c, false);
    if (!f) {
        fy_channel_close(c, NULL);
        fy_error_setg(errp, "out of memory for the postcopy-preempt stream");
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    pc->pin_c = c;
    pc->pin_stopping = false;
    fy_error_free(pc->pin_err);
    pc->pin_err = NULL;
    pthread_mutex_unlock(&m->lock);
    pc->pin_f = f;
    if (pthread_create(&pc->pin_thread, NULL, preempt_loader, m) != 0) {
        fy_error_setg(errp, "cannot start the postcopy-preempt loader");
        return -1;
    }
    pc->pin_started = true;
    return 0;
}

/* Wait for the loader: at the end of postcopy the source closes the
 * channel (graceful), on a break we cut it. Returns -1 with why when the
 * loader failed on its own. */
static int preempt_finish(FyMigration *m, bool graceful, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    pthread_mutex_lock(&m->lock);
    if (!graceful) {
        pc->pin_stopping = true;
        if (pc->pin_c)
            fy_channel_shutdown(pc->pin_c, FY_SHUTDOWN_BOTH, NULL);
    }
    pthread_mutex_unlock(&m->lock);
    if (pc->pin_started) {
        pthread_join(pc->pin_thread, NULL);
        pc->pin_started = false;
    }
    pthread_mutex_lock(&m->lock);
    FyChannel *c = pc->pin_c;
    pc->pin_c = NULL;
    FyError *err = pc->pin_err;
    pc->pin_err = NULL;
    pthread_mutex_unlock(&m->lock);
    fy_stream_close(pc->pin_f, NULL);
    fy_channel_close(c, NULL);
    pc->pin_f = NULL;
    if (err && graceful) {
        fy_error_propagate(errp, err);
        return -1;
    }
    fy_error_free(err);
    return 0;
}

/* ---- commands before the package ---- */

static int on_advise(FyMigration *m, FyStream *rp, const uint8_t *payload,
                     uint16_t len, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    bool ignore_shared = fy_savevm_config(m->ss)->cap_x_ignore_shared;
    int r = fy_postcopy_advise_check(m->ram, ignore_shared, payload, len, errp);
    if (r <= 0)
        return r; /* 0: no RAM postcopy (dirty bitmaps only) */
    if (pc->d) {
        fy_error_setg(errp, "postcopy was advised twice");
        return -1;
    }
    if (!rp) {
        fy_error_setg(errp, "postcopy needs the return path, but the source "
                      "advised it without OPEN_RETURN_PATH");
        return -1;
    }
    FyPostcopyDest *d = fy_postcopy_dest_new(m->ram, request_page, m);
    if (!d) {
        fy_error_setg(errp, "out of memory for the postcopy state");
        return -1;
    }
    fy_postcopy_dest_set_ignore_shared(d, ignore_shared);
    if (fy_postcopy_dest_advise(d, errp) < 0) {
        fy_postcopy_dest_free(d);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    bool blocktime = m->caps[FY_CAP_POSTCOPY_BLOCKTIME];
    pc->d = d;
    pthread_mutex_unlock(&m->lock);
    if (blocktime && m->vm->vcpu_count)
        fy_postcopy_dest_set_auto_vcpus(d, m->vm->vcpu_count(m->vm_opaque));
    set_rp(pc, rp);
    fy_ram_postcopy_attach(m->rs, d);
    return 0;
}

static FyPostcopyDest *advised(FyMigration *m, uint16_t cmd, FyError **errp)
{
    FyPostcopyDest *d = m->pc->d;
    if (!d)
        fy_error_setg(errp, "%s before POSTCOPY_ADVISE", fy_mig_cmd_name(cmd));
    return d;
}

/* ---- the package ---- */

static int on_listen(FyMigration *m, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    FyPostcopyDest *d = advised(m, MIG_CMD_POSTCOPY_LISTEN, errp);
    if (!d || fy_postcopy_dest_mark_populated(d, errp) < 0 ||
        fy_postcopy_dest_listen(d, errp) < 0)
        return -1;
    fy_ram_postcopy_set_placing(m->rs, true);
    pthread_mutex_lock(&m->lock);
    pc->running = true;
    bool preempt = m->caps[FY_CAP_POSTCOPY_PREEMPT];
    FyListener *l = pc->listener;
    pthread_mutex_unlock(&m->lock);
    if (!fy_mig_set_status(m, MIGRATION_STATUS_ACTIVE,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        fy_error_setg(errp, "incoming migration cancelled");
        return -1;
    }
    if (!preempt)
        return 0;
    if (!l) {
        fy_error_setg(errp, "postcopy-preempt: no listener to accept its "
                      "channel on (tcp: or unix: only)");
        return -1;
    }
    return preempt_accept(m, l, errp);
}

static int on_run(FyMigration *m, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    if (!advised(m, MIG_CMD_POSTCOPY_RUN, errp))
        return -1;
    if (fy_postcopy_dest_state(pc->d) != FY_POSTCOPY_DEST_LISTENING) {
        fy_error_setg(errp, "POSTCOPY_RUN before POSTCOPY_LISTEN");
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    bool autostart = m->autostart;
    pthread_mutex_unlock(&m->lock);
    if (autostart && m->vm->start(m->vm_opaque, errp) < 0) {
        fy_error_prepend(errp, "starting the VM: ");
        return -1;
    }
    pc->run_ms = fy_mig_now_ms();
    return 1;
}

static int pong(FyMigPostcopy *pc, const uint8_t *payload, uint16_t len,
                FyError **errp)
{
    return rp_send(pc, MIG_RP_MSG_PONG, payload, len, errp);
}

static int package_command(void *opaque, FyStream *f, uint16_t cmd,
                           const uint8_t *payload, uint16_t len, FyError **errp)
{
    FyMigration *m = opaque;
    (void)f;
    switch (cmd) {
    case MIG_CMD_POSTCOPY_LISTEN:
        return on_listen(m, errp);
    case MIG_CMD_POSTCOPY_RUN:
        return on_run(m, errp);
    case MIG_CMD_PING:
        return pong(m->pc, payload, len, errp);
    case MIG_CMD_SWITCHOVER_START:
        return 0;
    default:
        fy_error_setg(errp, "not expected inside the postcopy package");
        return -1;
    }
}

static void package_devices_begin(void *opaque)
{
    FyMigration *m = opaque;
    if (!m->pc->devices_begun) {
        m->pc->devices_begun = true;
        m->pc->devices_begin_ms = fy_mig_now_ms();
    }
}

/* The nested stream's bytes, read as they arrive (never more than the
 * stream holds, whatever length it announced). */
static uint8_t *read_package(FyStream *f, uint32_t n, FyError **errp)
{
    uint8_t *buf = NULL;
    size_t have = 0;
    while (have < n) {
        size_t chunk = n - have < PACKAGE_CHUNK ? n - have : PACKAGE_CHUNK;
        uint8_t *nb = realloc(buf, have + chunk);
        if (!nb) {
            free(buf);
            fy_error_setg(errp, "out of memory for the postcopy package");
            return NULL;
        }
        buf = nb;
        if (fy_get_buffer(f, buf + have, chunk) != chunk) {
            free(buf);
            fy_stream_check(f, errp);
            fy_error_prepend(errp, "reading the %" PRIu32 "-byte package: ", n);
            return NULL;
        }
        have += chunk;
    }
    return buf ? buf : malloc(1);
}

static int on_packaged(FyMigration *m, FyStream *f, const uint8_t *payload,
                       FyError **errp)
{
    uint32_t n = (uint32_t)payload[0] << 24 | (uint32_t)payload[1] << 16 |
                 (uint32_t)payload[2] << 8 | payload[3];
    if (!advised(m, MIG_CMD_PACKAGED, errp))
        return -1;
    uint64_t base = fy_stream_offset(f);
    uint8_t *buf = read_package(f, n, errp);
    if (!buf)
        return -1;
    FyChannel *mc = fy_channel_mem_new(buf, n);
    free(buf);
    FyStream *pf = mc ? fy_stream_new_input(mc, true) : NULL;
    if (!pf) {
        fy_channel_close(mc, NULL);
        fy_error_setg(errp, "out of memory for the postcopy package");
        return -1;
    }
    fy_stream_set_offset_base(pf, base);
    FyLoadHooks hooks = {
        .opaque = m,
        .command = package_command,
        .devices_begin = package_devices_begin,
    };
    int r = fy_loadvm_state_main(m->ss, pf, &hooks, NULL, errp);
    fy_stream_close(pf, NULL);
    if (r == 0) {
        fy_error_setg(errp, "the package ended without POSTCOPY_RUN");
        return -1;
    }
    return r < 0 ? -1 : 1;
}

int fy_mig_pc_in_command(FyMigration *m, FyStream *rp, FyStream *f,
                         uint16_t cmd, const uint8_t *payload, uint16_t len,
                         FyError **errp)
{
    if (!m->pc)
        return FY_MIG_PC_NOT_MINE;
    FyPostcopyDest *d;
    switch (cmd) {
    case MIG_CMD_POSTCOPY_ADVISE:
        return on_advise(m, rp, payload, len, errp);
    case MIG_CMD_POSTCOPY_RAM_DISCARD:
        d = advised(m, cmd, errp);
        return d ? fy_postcopy_dest_discard(d, payload, len, errp) : -1;
    case MIG_CMD_PACKAGED:
        return on_packaged(m, f, payload, errp);
    case MIG_CMD_POSTCOPY_LISTEN:
    case MIG_CMD_POSTCOPY_RUN:
        fy_error_setg(errp, "only valid inside the postcopy package (PACKAGED)");
        return -1;
    case MIG_CMD_POSTCOPY_RESUME:
    case MIG_CMD_RECV_BITMAP:
        fy_error_setg(errp, "only valid when recovering a paused postcopy");
        return -1;
    case MIG_CMD_PING:
        /* The fault thread may write the return path too once advised. */
        return m->pc->d ? pong(m->pc, payload, len, errp) : FY_MIG_PC_NOT_MINE;
    default:
        return FY_MIG_PC_NOT_MINE;
    }
}

bool fy_mig_pc_in_take_listener(FyMigration *m, FyListener *l)
{
    pthread_mutex_lock(&m->lock);
    bool take = m->pc && m->caps[FY_CAP_POSTCOPY_PREEMPT] && l;
    if (take)
        m->pc->listener = l;
    pthread_mutex_unlock(&m->lock);
    return take;
}

/* ---- the postcopy phase ---- */

static int on_recv_bitmap(FyMigration *m, const uint8_t *payload, uint16_t len,
                          FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    char id[256];
    if (fy_postcopy_decode_block_name(payload, len, id, errp) < 0)
        return -1;
    pthread_mutex_lock(&pc->rp_lock);
    int r = -1;
    if (pc->rp)
        r = fy_postcopy_dest_send_recv_bitmap(pc->d, pc->rp, id, errp);
    else
        fy_error_setg(errp, "the return path is closed");
    pthread_mutex_unlock(&pc->rp_lock);
    return r;
}

static int on_resume(FyMigration *m, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    uint8_t ack[4];
    if (!fy_mig_set_status(m, MIGRATION_STATUS_POSTCOPY_RECOVER,
                           MIGRATION_STATUS_POSTCOPY_ACTIVE)) {
        fy_error_setg(errp, "POSTCOPY_RESUME outside a recovery");
        return -1;
    }
    fy_postcopy_encode_resume_ack(ack);
    if (rp_send(pc, FY_RP_MSG_RESUME_ACK, ack, sizeof(ack), errp) < 0)
        return -1;
    pthread_mutex_lock(&m->lock);
    fy_error_free(pc->pause_err);
    pc->pause_err = NULL;
    pthread_mutex_unlock(&m->lock);
    /* Requests in flight at the break died with it: all go again. */
    return fy_postcopy_dest_resume(pc->d, errp);
}

static int postcopy_command(void *opaque, FyStream *f, uint16_t cmd,
                            const uint8_t *payload, uint16_t len, FyError **errp)
{
    FyMigration *m = opaque;
    (void)f;
    FyMigStatus s = fy_migration_status(m);
    switch (cmd) {
    case MIG_CMD_PING:
        return pong(m->pc, payload, len, errp);
    case MIG_CMD_RECV_BITMAP:
        if (s != MIGRATION_STATUS_POSTCOPY_RECOVER)
            break;
        return on_recv_bitmap(m, payload, len, errp);
    case MIG_CMD_POSTCOPY_RESUME:
        return on_resume(m, errp);
    default:
        break;
    }
    fy_error_setg(errp, "not expected in status %s", fy_mig_status_name(s));
    return -1;
}

static uint64_t missing_mib(FyMigPostcopy *pc)
{
    return (fy_postcopy_dest_pages_remaining(pc->d) << FY_TARGET_PAGE_BITS) >> 20;
}

static void enter_paused(FyMigration *m, FyError *why)
{
    FyMigPostcopy *pc = m->pc;
    fy_postcopy_dest_pause(pc->d);
    set_rp(pc, NULL);
    if (!why)
        fy_error_setg(&why, "the connection to the source ended");
    fy_error_prepend(&why, "postcopy paused (%" PRIu64 " MiB of RAM still on "
                     "the source; recover with migrate-recover URI here and "
                     "migrate URI resume=true there): ", missing_mib(pc));
    pthread_mutex_lock(&m->lock);
    fy_error_free(pc->pause_err);
    pc->pause_err = why;
    pc->pauses++;
    pthread_mutex_unlock(&m->lock);
    fy_mig_set_status_now(m, MIGRATION_STATUS_POSTCOPY_PAUSED);
}

static void close_main(FyMigration *m, FyChannel **c, FyStream **f,
                       FyStream **rp)
{
    pthread_mutex_lock(&m->lock);
    m->chan = NULL;
    pthread_mutex_unlock(&m->lock);
    fy_stream_close(*f, NULL); /* and the return path it owns */
    fy_channel_close(*c, NULL);
    *f = NULL;
    *rp = NULL;
    *c = NULL;
}

/* migrate-recover's listener, or NULL when the run is being freed. */
static FyListener *wait_recover(FyMigration *m)
{
    FyMigPostcopy *pc = m->pc;
    pthread_mutex_lock(&m->lock);
    while (!pc->recover_l && !m->cancel_req)
        pthread_cond_wait(&m->cond, &m->lock);
    FyListener *l = m->cancel_req ? NULL : pc->recover_l;
    pthread_mutex_unlock(&m->lock);
    return l;
}

static int accept_recovery(FyMigration *m, FyListener *l, FyChannel **c,
                           FyStream **f, FyStream **rp, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    *c = fy_listener_accept(l, -1, errp);
    if (!*c)
        return -1;
    pthread_mutex_lock(&m->lock);
    m->chan = *c;
    bool preempt = m->caps[FY_CAP_POSTCOPY_PREEMPT];
    pthread_mutex_unlock(&m->lock);
    *f = fy_stream_new_input(*c, false);
    if (!*f) {
        fy_error_setg(errp, "out of memory for the migration stream");
        return -1;
    }
    if (!(*rp = fy_stream_return_path(*f, errp)))
        return -1;
    if (preempt && preempt_accept(m, l, errp) < 0)
        return -1;
    set_rp(pc, *rp);
    return 0;
}

/* Paused until a recovery connects (0: postcopy-recover, with the new
 * channel, stream and return path) or the run is freed (-1). */
static int pause_and_wait(FyMigration *m, FyChannel **c, FyStream **f,
                          FyStream **rp, FyError *why, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    for (;;) {
        enter_paused(m, why);
        why = NULL;
        preempt_finish(m, false, NULL);
        close_main(m, c, f, rp);
        FyListener *l = wait_recover(m);
        if (!l) {
            fy_error_setg(errp, "incoming migration stopped while postcopy was "
                          "paused");
            return -1;
        }
        int r = accept_recovery(m, l, c, f, rp, &why);
        pthread_mutex_lock(&m->lock);
        pc->recover_l = NULL;
        pthread_mutex_unlock(&m->lock);
        fy_listener_free(l);
        if (r == 0 && fy_mig_set_status(m, MIGRATION_STATUS_POSTCOPY_PAUSED,
                                        MIGRATION_STATUS_POSTCOPY_RECOVER))
            return 0;
        if (r == 0)
            fy_error_setg(&why, "the status changed during the recovery");
        fy_error_prepend(&why, "recovery failed: ");
        set_rp(pc, NULL);
    }
}

/* EOF on the main stream: the preempt channel drains, every page is here. */
static int at_end(FyMigration *m, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    if (preempt_finish(m, true, errp) < 0)
        return -1;
    uint64_t left = fy_postcopy_dest_pages_remaining(pc->d);
    if (left) {
        fy_error_setg(errp, "the source ended its stream but %" PRIu64
                      " pages never arrived", left);
        return -1;
    }
    return 0;
}

static bool cancelled(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    bool c = m->cancel_req;
    pthread_mutex_unlock(&m->lock);
    return c;
}

int fy_mig_pc_incoming(FyMigration *m, FyChannel **c, FyStream **f,
                       FyStream **rp, FyError **errp)
{
    FyMigPostcopy *pc = m->pc;
    FyLoadHooks hooks = { .opaque = m, .command = postcopy_command };
    for (;;) {
        FyError *err = NULL;
        int r = fy_loadvm_state_main(m->ss, *f, &hooks, NULL, &err);
        if (r == 0 && at_end(m, &err) == 0)
            break;
        if (r > 0)
            fy_error_setg(&err, "the postcopy load stopped on a command");
        if (cancelled(m)) {
            fy_error_propagate(errp, err);
            err = NULL;
        } else if (pause_and_wait(m, c, f, rp, err, errp) == 0) {
            continue;
        }
        /* Freed while in postcopy: the blocked vCPUs get zero pages now;
         * whoever frees the VM stops it next. */
        fy_mig_pc_in_release(m);
        fy_loadvm_state_cleanup(m->ss);
        return -1;
    }
    int r = fy_postcopy_dest_stop(pc->d, errp);
    fy_ram_postcopy_attach(m->rs, NULL);
    fy_loadvm_state_cleanup(m->ss);
    set_rp(pc, NULL);
    uint64_t now = fy_mig_now_ms();
    pthread_mutex_lock(&m->lock);
    m->downtime = pc->devices_begun && pc->run_ms >= pc->devices_begin_ms
                  ? pc->run_ms - pc->devices_begin_ms : 0;
    m->total_time = now - m->start_ms;
    pthread_mutex_unlock(&m->lock);
    return r;
}

void fy_mig_pc_in_release(FyMigration *m)
{
    FyMigPostcopy *pc = m->pc;
    if (!pc)
        return;
    preempt_finish(m, false, NULL);
    set_rp(pc, NULL);
    if (pc->d)
        fy_postcopy_dest_stop(pc->d, NULL);
    fy_ram_postcopy_attach(m->rs, NULL);
    pthread_mutex_lock(&m->lock);
    FyListener *l = pc->listener, *rl = pc->recover_l;
    pc->listener = pc->recover_l = NULL;
    pthread_mutex_unlock(&m->lock);
    fy_listener_free(l);
    fy_listener_free(rl);
}
