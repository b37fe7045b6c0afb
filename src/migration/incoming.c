/*
 * incoming.c: fy_migrate_incoming() and the incoming thread (QEMU's
 * process_incoming_migration).
 *
 *   listen         synchronously, so a bad URI or a busy address fails the
 *                  call and tcp port 0 is known at once; status setup
 *   accept         one peer (exec, fd and file yield their channel once);
 *                  the listener is closed after it; status active
 *   load           fy_loadvm_state with the command hooks: OPEN_RETURN_PATH
 *                  opens the way back, PING answers PONG; the loader and
 *                  the RAM loader refuse a stream that does not match this
 *                  VM (unknown device, RAM block missing or of another
 *                  size) with an error that names the difference
 *   start          the VM (unless autostart is off); the downtime seen here
 *                  runs from the first device section (the source had
 *                  stopped) to this start
 *   report         SHUT(0) on the return path if one was opened, SHUT(1)
 *                  after a failure; close; status completed or failed
 *
 * The VM is never started after a failure; whoever embeds the engine
 * decides whether to exit.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "migration/mig-multifd.h"
#include "migration/mig-postcopy.h"
#include "migration/migration-int.h"

typedef struct In {
    FyMigration *m;
    FyChannel *c;
    FyStream *f;              /* over c, which it does not own */
    FyStream *rp;             /* owned by f */
    uint64_t devices_begin_ms;
    bool devices_begun;
} In;

static int in_command(void *opaque, FyStream *f, uint16_t cmd,
                      const uint8_t *payload, uint16_t len, FyError **errp)
{
    In *in = opaque;
    int r = fy_mig_pc_in_command(in->m, in->rp, f, cmd, payload, len, errp);
    if (r != FY_MIG_PC_NOT_MINE)
        return r;
    switch (cmd) {
    case MIG_CMD_OPEN_RETURN_PATH:
        if (in->rp) {
            fy_error_setg(errp, "the return path is opened twice");
            return -1;
        }
        in->rp = fy_stream_return_path(f, errp);
        return in->rp ? 0 : -1;
    case MIG_CMD_PING:
        if (!in->rp || len != 4) {
            fy_error_setg(errp, "PING before the return path was opened");
            return -1;
        }
        return fy_mig_rp_send(in->rp, MIG_RP_MSG_PONG, payload, 4, errp);
    case MIG_CMD_SWITCHOVER_START:
        return 0; /* only multifd device state waits for it */
    default:
        fy_error_setg(errp, "migration command %s is not supported by ferry "
                      "yet", fy_mig_cmd_name(cmd));
        return -1;
    }
}

static void in_devices_begin(void *opaque)
{
    In *in = opaque;
    if (!in->devices_begun) {
        in->devices_begun = true;
        in->devices_begin_ms = fy_mig_now_ms();
    }
}

static int in_accept(In *in, FyError **errp)
{
    FyMigration *m = in->m;
    pthread_mutex_lock(&m->lock);
    FyListener *l = m->listener;
    pthread_mutex_unlock(&m->lock);

    bool keep = false; /* multifd: more channels to accept on l */
    FyChannel *c = fy_mig_mfd_in_accept(m, l, &keep, errp);
    pthread_mutex_lock(&m->lock);
    m->listener = NULL;
    m->chan = c;
    bool cancel = m->cancel_req;
    pthread_mutex_unlock(&m->lock);
    /* postcopy-preempt: its channel arrives on l later */
    if (!keep && !(c && fy_mig_pc_in_take_listener(m, l)))
        fy_listener_free(l);
    if (!c)
        return -1;
    in->c = c;
    in->f = fy_stream_new_input(c, false);
    if (!in->f) {
        fy_error_setg(errp, "out of memory for the migration stream");
        return -1;
    }
    if (cancel || !fy_mig_set_status(m, MIGRATION_STATUS_SETUP,
                                     MIGRATION_STATUS_ACTIVE)) {
        fy_error_setg(errp, "incoming migration cancelled");
        return -1;
    }
    return 0;
}

static int in_load(In *in, FyError **errp)
{
    FyMigration *m = in->m;
    FyLoadHooks hooks = {
        .opaque = in,
        .command = in_command,
        .devices_begin = in_devices_begin,
    };
    FyLoadResult res = { 0 };

    fy_mig_apply_caps(m);
    int r = fy_loadvm_state(m->ss, in->f, &hooks, &res, errp);
    json_decref(res.vmdesc);
    if (r == 0 && res.stopped_by_hook) /* POSTCOPY_RUN ran the VM */
        return fy_mig_pc_incoming(m, &in->c, &in->f, &in->rp, errp);
    if (r < 0)
        return -1;

    pthread_mutex_lock(&m->lock);
    bool autostart = m->autostart;
    pthread_mutex_unlock(&m->lock);
    if (autostart && m->vm->start(m->vm_opaque, errp) < 0) {
        fy_error_prepend(errp, "starting the VM: ");
        return -1;
    }
    uint64_t now = fy_mig_now_ms();
    pthread_mutex_lock(&m->lock);
    m->downtime = in->devices_begun ? now - in->devices_begin_ms : 0;
    m->total_time = now - m->start_ms;
    m->transferred = fy_stream_offset(in->f);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static void in_finish(In *in, int r, FyError *err)
{
    FyMigration *m = in->m;

    if (in->rp) {
        uint8_t v[4] = { 0, 0, 0, r < 0 ? 1 : 0 };
        fy_mig_rp_send(in->rp, MIG_RP_MSG_SHUT, v, 4, NULL);
    }
    pthread_mutex_lock(&m->lock);
    m->chan = NULL;
    pthread_mutex_unlock(&m->lock);
    /* The channel's close may know why the stream ended early: an exec
     * child that could not read its file says so in its exit status. */
    FyError *cerr = NULL;
    fy_stream_close(in->f, NULL);
    fy_channel_close(in->c, &cerr);
    if (r < 0 && err && cerr) {
        fy_error_prepend(&cerr, "%s; ", fy_error_msg(err));
        fy_error_free(err);
        err = cerr;
        cerr = NULL;
    }
    fy_error_free(cerr);

    pthread_mutex_lock(&m->lock);
    bool cancel = m->cancel_req;
    if (r < 0 && !cancel) {
        if (!err)
            fy_error_setg(&err, "incoming migration failed");
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

void *fy_mig_incoming_thread(void *opaque)
{
    In in = { .m = opaque };
    FyError *err = NULL;

    pthread_setname_np(pthread_self(), "fy-mig-incoming");
    fy_mig_block_sigpipe();
    int r = in_accept(&in, &err);
    if (r == 0)
        r = in_load(&in, &err);
    if (r < 0)
        err = fy_mig_mfd_in_error(in.m, err);
    fy_mig_mfd_in_finish(in.m, r == 0);
    in_finish(&in, r, err);
    return NULL;
}

static int start_incoming(FyMigration *m, const char *uri, FyError **errp)
{
    if (fy_mig_begin_run(m, true, errp) < 0)
        return -1;
    if (fy_mig_mfd_check_uri(m, uri, true, errp) < 0)
        return -1;
    FyListener *l = fy_listener_new(uri, errp);
    if (!l)
        return -1;
    pthread_mutex_lock(&m->lock);
    m->listener = l;
    m->deferred = false;
    free(m->in_address);
    m->in_address = strdup(fy_listener_address(l));
    pthread_mutex_unlock(&m->lock);

    fy_mig_set_status_now(m, MIGRATION_STATUS_SETUP);
    if (pthread_create(&m->in_thread, NULL, fy_mig_incoming_thread, m) != 0) {
        pthread_mutex_lock(&m->lock);
        m->listener = NULL;
        fy_error_setg(&m->error, "cannot start the incoming migration thread");
        pthread_mutex_unlock(&m->lock);
        fy_listener_free(l);
        fy_error_setg(errp, "cannot start the incoming migration thread");
        fy_mig_set_status_now(m, MIGRATION_STATUS_FAILED);
        return -1;
    }
    m->in_thread_joinable = true;
    return 0;
}

int fy_migrate_incoming(FyMigration *m, const char *uri, FyError **errp)
{
    if (!strcmp(uri, "defer")) {
        /* --incoming defer: wait for migrate-incoming with the real URI. */
        pthread_mutex_lock(&m->lock);
        m->deferred = true;
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    if (m->vm->is_running && m->vm->is_running(m->vm_opaque)) {
        fy_error_setg(errp, "the VM is running: an incoming migration would "
                      "overwrite it");
        return -1;
    }
    pthread_mutex_lock(&m->event_lock);
    int ret = start_incoming(m, uri, errp);
    pthread_mutex_unlock(&m->event_lock);
    return ret;
}
