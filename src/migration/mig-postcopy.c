/*
 * mig-postcopy.c: postcopy's state in a FyMigration, its capabilities, the
 * user's commands and its query-migrate fields (mig-postcopy.h has the
 * status diagram and the locks).
 *
 * The commands only record a request and wake the worker, which acts on it
 * at a safe point; the exception is migrate-pause, which shuts the
 * connection down so that a worker blocked in I/O notices at once (the
 * same way a network failure would show up).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "migration/mig-postcopy.h"

/* ---- capabilities ---- */

int fy_mig_pc_check(const bool *caps, FyError **errp)
{
    if (caps[FY_CAP_POSTCOPY_PREEMPT] && !caps[FY_CAP_POSTCOPY_RAM]) {
        fy_error_setg(errp, "Postcopy preempt requires postcopy-ram");
        return -1;
    }
    if (caps[FY_CAP_POSTCOPY_RAM] && caps[FY_CAP_MULTIFD]) {
        fy_error_setg(errp, "Capabilities 'postcopy-ram' and 'multifd' together "
                      "are not supported by ferry yet (the switch to postcopy "
                      "does not drain the multifd channels)");
        return -1;
    }
    return 0;
}

void fy_mig_pc_apply_caps(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    bool on = m->caps[FY_CAP_POSTCOPY_RAM] && !m->incoming;
    pthread_mutex_unlock(&m->lock);
    fy_ram_postcopy_enable(m->rs, on);
}

bool fy_mig_pc_is_paused(FyMigStatus s)
{
    return s == MIGRATION_STATUS_POSTCOPY_PAUSED ||
           s == MIGRATION_STATUS_POSTCOPY_RECOVER;
}

static bool in_postcopy(FyMigStatus s)
{
    return s == MIGRATION_STATUS_POSTCOPY_ACTIVE || fy_mig_pc_is_paused(s);
}

/* ---- life ---- */

static FyMigPostcopy *pc_new(void)
{
    FyMigPostcopy *pc = calloc(1, sizeof(*pc));
    if (pc)
        pthread_mutex_init(&pc->rp_lock, NULL);
    return pc;
}

/* The source's per-run state (no worker runs). */
static void release_source(FyMigration *m, FyMigPostcopy *pc)
{
    fy_ram_postcopy_end(m->rs);
    fy_postcopy_req_queue_free(pc->q);
    pc->q = NULL;
    free(pc->resume_uri);
    pc->resume_uri = NULL;
    fy_error_free(pc->pre_err);
    pc->pre_err = NULL;
}

int fy_mig_pc_reset_run(FyMigration *m, FyError **errp)
{
    if (!m->pc && !(m->pc = pc_new())) {
        fy_error_setg(errp, "out of memory for the postcopy state");
        return -1;
    }
    FyMigPostcopy *pc = m->pc;
    fy_mig_pc_in_release(m);
    release_source(m, pc);
    pthread_mutex_lock(&m->lock);
    bool stale = pc->stale && !m->incoming;
    fy_error_free(pc->pause_err);
    FyPostcopyDest *d = pc->d;
    /* No thread of the previous run is left to hold rp_lock. */
    pthread_mutex_destroy(&pc->rp_lock);
    memset(pc, 0, sizeof(*pc));
    pthread_mutex_init(&pc->rp_lock, NULL);
    pc->stale = stale;
    pthread_mutex_unlock(&m->lock);
    fy_postcopy_dest_free(d);
    return 0;
}

void fy_mig_pc_free(FyMigration *m)
{
    FyMigPostcopy *pc = m->pc;
    if (!pc)
        return;
    fy_mig_pc_in_release(m);
    release_source(m, pc);
    fy_postcopy_dest_free(pc->d);
    fy_error_free(pc->pause_err);
    pthread_mutex_destroy(&pc->rp_lock);
    free(pc);
    m->pc = NULL;
}

void fy_mig_pc_kick_locked(FyMigration *m)
{
    FyMigPostcopy *pc = m->pc;
    if (!pc)
        return;
    if (pc->pre_c)
        fy_channel_shutdown(pc->pre_c, FY_SHUTDOWN_BOTH, NULL);
    if (pc->pin_c)
        fy_channel_shutdown(pc->pin_c, FY_SHUTDOWN_BOTH, NULL);
    if (pc->recover_l)
        fy_listener_shutdown(pc->recover_l);
    if (pc->listener)
        fy_listener_shutdown(pc->listener);
}

bool fy_migration_vm_stale(FyMigration *m, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    bool stale = m->pc && m->pc->stale;
    pthread_mutex_unlock(&m->lock);
    if (stale)
        fy_error_setg(errp, "postcopy handed this VM over to the destination, "
                      "which has run it since: the state here dates from the "
                      "switch and is stale; starting it would run a second, "
                      "older copy of the guest");
    return stale;
}

int fy_mig_pc_may_migrate(FyMigration *m, FyError **errp)
{
    FyError *err = NULL;
    if (!fy_migration_vm_stale(m, &err))
        return 0;
    fy_error_prepend(&err, "refusing to migrate this VM: ");
    fy_error_propagate(errp, err);
    return -1;
}

/* ---- commands ---- */

int fy_mig_pc_cancel_check(FyMigration *m, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    bool pc = in_postcopy(m->status);
    pthread_mutex_unlock(&m->lock);
    if (!pc)
        return 0;
    fy_error_setg(errp, "the migration is in postcopy: the destination runs "
                  "the VM and needs the pages still here, so it cannot be "
                  "cancelled (migrate-pause interrupts it; migrate-recover and "
                  "migrate with resume=true continue it)");
    return -1;
}

int fy_mig_pc_start(FyMigration *m, FyError **errp)
{
    int ret = 0;
    pthread_mutex_lock(&m->lock);
    if (!m->caps[FY_CAP_POSTCOPY_RAM]) {
        fy_error_setg(errp, "Enable postcopy with migrate_set_capability "
                      "before the start of migration");
        ret = -1;
    } else if (m->status == MIGRATION_STATUS_NONE || !m->pc) {
        fy_error_setg(errp, "Postcopy must be started after migration has "
                      "been started");
        ret = -1;
    } else {
        /* As QEMU: after the end of a migration this is harmless. */
        m->pc->start_req = true;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

int fy_mig_pc_pause(FyMigration *m, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    FyMigStatus s = m->status;
    bool ok = m->pc && (s == MIGRATION_STATUS_POSTCOPY_ACTIVE ||
                        s == MIGRATION_STATUS_POSTCOPY_RECOVER);
    if (ok) {
        /* Exactly what a broken network does to both channels. */
        if (m->chan)
            fy_channel_shutdown(m->chan, FY_SHUTDOWN_BOTH, NULL);
        if (m->pc->pre_c)
            fy_channel_shutdown(m->pc->pre_c, FY_SHUTDOWN_BOTH, NULL);
        if (m->pc->pin_c)
            fy_channel_shutdown(m->pc->pin_c, FY_SHUTDOWN_BOTH, NULL);
    }
    pthread_mutex_unlock(&m->lock);
    if (!ok)
        fy_error_setg(errp, "migrate-pause is currently only supported during "
                      "postcopy-active or postcopy-recover state");
    return ok ? 0 : -1;
}

int fy_mig_pc_recover(FyMigration *m, const char *uri, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    bool paused = m->pc && m->incoming &&
                  m->status == MIGRATION_STATUS_POSTCOPY_PAUSED;
    bool busy = paused && m->pc->recover_l;
    pthread_mutex_unlock(&m->lock);
    if (!paused) {
        fy_error_setg(errp, "Migrate recover can only be run when postcopy is "
                      "paused.");
        return -1;
    }
    if (busy) {
        fy_error_setg(errp, "Migrate recovery is triggered already");
        return -1;
    }
    FyListener *l = fy_listener_new(uri, errp);
    if (!l)
        return -1;
    pthread_mutex_lock(&m->lock);
    int ret = 0;
    if (m->status != MIGRATION_STATUS_POSTCOPY_PAUSED || m->pc->recover_l) {
        fy_error_setg(errp, "Migrate recover can only be run when postcopy is "
                      "paused.");
        ret = -1;
    } else {
        m->pc->recover_l = l;
        free(m->in_address);
        m->in_address = strdup(fy_listener_address(l));
        l = NULL;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    fy_listener_free(l);
    return ret;
}

int fy_mig_pc_resume(FyMigration *m, const char *uri, FyError **errp)
{
    FyUri u;
    if (fy_uri_parse(uri, &u, errp) < 0)
        return -1;
    bool sock = u.kind == FY_URI_TCP || u.kind == FY_URI_UNIX;
    fy_uri_clear(&u);
    char *copy = strdup(uri);
    int ret = -1;
    pthread_mutex_lock(&m->lock);
    if (!m->pc || m->incoming || m->status != MIGRATION_STATUS_POSTCOPY_PAUSED)
        fy_error_setg(errp, "Cannot resume if there is no paused migration");
    else if (m->pc->resume_uri)
        fy_error_setg(errp, "a resume of this migration is already under way");
    else if (!sock)
        fy_error_setg(errp, "postcopy resumes over tcp: or unix: only (the "
                      "connection needs a return path)");
    else if (!copy)
        fy_error_setg(errp, "out of memory");
    else {
        m->pc->resume_uri = copy;
        copy = NULL;
        pthread_cond_broadcast(&m->cond);
        ret = 0;
    }
    pthread_mutex_unlock(&m->lock);
    free(copy);
    return ret;
}

/* ---- query-migrate ---- */

static json_t *socket_address(const char *addr)
{
    FyUri u;
    json_t *list = json_array();
    if (!addr || fy_uri_parse(addr, &u, NULL) < 0)
        return list;
    if (u.kind == FY_URI_TCP)
        json_array_append_new(list, json_pack("{s:s,s:s,s:s}", "type", "inet",
                                              "host", u.host, "port", u.port));
    else if (u.kind == FY_URI_UNIX)
        json_array_append_new(list, json_pack("{s:s,s:s}", "type", "unix",
                                              "path", u.path));
    fy_uri_clear(&u);
    return list;
}

static json_t *dest_stats(FyPostcopyDest *d)
{
    FyPostcopyDestStats st;
    FyPostcopyLatency lat;
    fy_postcopy_dest_get_stats(d, &st);
    fy_postcopy_dest_get_latency(d, &lat);
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                     "faults", (json_int_t)st.faults,
                     "requests", (json_int_t)st.requests,
                     "placed", (json_int_t)st.placed,
                     "placed-zero", (json_int_t)st.placed_zero,
                     "already-there", (json_int_t)st.already_there,
                     "pages-remaining",
                     (json_int_t)fy_postcopy_dest_pages_remaining(d),
                     "resolved", (json_int_t)lat.count,
                     "latency-median-ns", (json_int_t)lat.median_ns,
                     "latency-p99-ns", (json_int_t)lat.p99_ns,
                     "latency-max-ns", (json_int_t)lat.max_ns);
}

static void query_dest(FyMigration *m, FyMigPostcopy *pc, json_t *o)
{
    if (m->status == MIGRATION_STATUS_POSTCOPY_PAUSED && pc->recover_l)
        json_object_set_new(o, "socket-address",
                            socket_address(fy_listener_address(pc->recover_l)));
    if (!pc->d || fy_postcopy_dest_state(pc->d) == FY_POSTCOPY_DEST_ADVISED)
        return;
    if (m->caps[FY_CAP_POSTCOPY_BLOCKTIME]) {
        FyPostcopyBlocktime *bt = malloc(sizeof(*bt));
        json_t *j = NULL;
        if (bt) {
            fy_postcopy_dest_get_blocktime(pc->d, bt);
            j = fy_postcopy_blocktime_json(bt);
        }
        free(bt);
        if (j)
            json_object_update(o, j);
        json_decref(j);
    }
    json_object_set_new(o, "x-ferry-postcopy", dest_stats(pc->d));
}

static void query_source(FyMigration *m, FyMigPostcopy *pc, json_t *o)
{
    json_t *ram = json_object_get(o, "ram");
    if (!pc->running || !json_is_object(ram))
        return;
    FyRamPostcopyStats st;
    fy_ram_postcopy_get_stats(m->rs, &st);
    json_object_set_new(ram, "postcopy-requests", json_integer((json_int_t)st.requests));
    json_object_set_new(ram, "postcopy-bytes", json_integer((json_int_t)st.bytes));
}

void fy_mig_pc_query_locked(FyMigration *m, json_t *o)
{
    FyMigPostcopy *pc = m->pc;
    if (!pc || m->status == MIGRATION_STATUS_NONE)
        return;
    if (fy_mig_pc_is_paused(m->status) && pc->pause_err)
        json_object_set_new(o, "error-desc",
                            json_string(fy_error_msg(pc->pause_err)));
    if (m->incoming)
        query_dest(m, pc, o);
    else
        query_source(m, pc, o);
}
