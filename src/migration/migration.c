/*
 * migration.c: the FyMigration object: creation and teardown, events,
 * cancel and continue, query-migrate, and waiting for an outcome.
 *
 * Teardown order (fy_migration_free): stop events, cancel whatever runs
 * (even past the point where a cancel would normally be refused), join the
 * workers, unregister "ram", free.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "migration/converge.h"
#include "migration/mig-multifd.h"
#include "migration/mig-postcopy.h"
#include "migration/migration-int.h"

uint64_t fy_mig_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void ram_synced(void *opaque, uint64_t count)
{
    FyMigration *m = opaque;
    json_t *data = json_pack("{s:I}", "pass", (json_int_t)count);
    pthread_mutex_lock(&m->event_lock);
    fy_mig_emit(m, "MIGRATION_PASS", data);
    pthread_mutex_unlock(&m->event_lock);
    json_decref(data);
    fy_mig_converge_synced(m, count);
}

static int init_locks(FyMigration *m)
{
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int r = pthread_mutex_init(&m->lock, NULL) ||
            pthread_mutex_init(&m->event_lock, &ma) ||
            pthread_cond_init(&m->cond, &ca);
    pthread_mutexattr_destroy(&ma);
    pthread_condattr_destroy(&ca);
    return r ? -1 : 0;
}

FyMigration *fy_migration_new(FySaveState *ss, FyRamList *ram,
                              const FyVMOps *vm, void *vm_opaque)
{
    FyMigration *m = calloc(1, sizeof(*m));
    if (!m || !ss || !vm || init_locks(m) < 0) {
        free(m);
        return NULL;
    }
    m->ss = ss;
    m->ram = ram;
    m->vm = vm;
    m->vm_opaque = vm_opaque;
    m->autostart = true;
    fy_mig_params_init(&m->params);
    m->rs = fy_ram_new(ram, vm, vm_opaque);
    m->cv = fy_mig_converge_new(m);
    if (!m->rs || !m->cv || fy_ram_register(m->rs, ss, NULL) < 0) {
        fy_migration_free(m);
        return NULL;
    }
    m->ram_registered = true;
    fy_ram_set_sync_notify(m->rs, ram_synced, m);
    return m;
}

void fy_migration_free(FyMigration *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->event_fn = NULL;
    m->freeing = true;
    m->cancel_req = true;
    fy_mig_kick_locked(m);
    pthread_mutex_unlock(&m->lock);
    fy_mig_join_workers(m);

    if (m->ram_registered)
        fy_unregister_savevm(m->ss, "ram", 0);
    /* postcopy and multifd still hold pointers into the RAM state */
    fy_mig_pc_free(m);
    fy_mig_mfd_free(m);
    fy_mig_converge_free(m->cv);
    fy_ram_free(m->rs);
    fy_error_free(m->error);
    free(m->uri);
    free(m->in_address);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->event_lock);
    pthread_cond_destroy(&m->cond);
    free(m);
}

void fy_migration_set_event_handler(FyMigration *m, FyEventFn fn, void *opaque)
{
    pthread_mutex_lock(&m->lock);
    m->event_fn = fn;
    m->event_opaque = opaque;
    pthread_mutex_unlock(&m->lock);
}

void fy_migration_set_autostart(FyMigration *m, bool on)
{
    pthread_mutex_lock(&m->lock);
    m->autostart = on;
    pthread_mutex_unlock(&m->lock);
}

FyRamState *fy_migration_ram_state(FyMigration *m)
{
    return m->rs;
}

/* ---- cancel, continue ---- */

void fy_mig_kick_locked(FyMigration *m)
{
    if (m->chan && (!m->committed || m->freeing))
        fy_channel_shutdown(m->chan, FY_SHUTDOWN_BOTH, NULL);
    if (m->listener)
        fy_listener_shutdown(m->listener);
    fy_mig_mfd_kick_locked(m);
    fy_mig_pc_kick_locked(m);
    pthread_cond_broadcast(&m->cond);
}

int fy_migrate_cancel(FyMigration *m, FyError **errp)
{
    int ret = 0;
    if (fy_mig_pc_cancel_check(m, errp) < 0)
        return -1;
    pthread_mutex_lock(&m->event_lock);
    pthread_mutex_lock(&m->lock);
    FyMigStatus s = m->status;
    bool cancellable = s == MIGRATION_STATUS_SETUP ||
                       s == MIGRATION_STATUS_ACTIVE ||
                       s == MIGRATION_STATUS_PRE_SWITCHOVER ||
                       s == MIGRATION_STATUS_DEVICE;
    if (cancellable && m->committed) {
        fy_error_setg(errp, "the migration has sent its final state and "
                      "waits for the destination; it can no longer be "
                      "cancelled");
        ret = -1;
        cancellable = false;
    }
    if (cancellable)
        m->cancel_req = true;
    pthread_mutex_unlock(&m->lock);
    /* Status first, then unblock the worker: its final "cancelled" must
     * follow "cancelling". event_lock keeps the worker out until then. */
    if (cancellable && fy_mig_set_status_now(m, MIGRATION_STATUS_CANCELLING)) {
        pthread_mutex_lock(&m->lock);
        fy_mig_kick_locked(m);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&m->event_lock);
    return ret;
}

static int status_from_name(const char *name)
{
    for (int i = 0; i < MIGRATION_STATUS__MAX; i++) {
        if (!strcmp(fy_mig_status_name((FyMigStatus)i), name))
            return i;
    }
    return -1;
}

int fy_migrate_continue(FyMigration *m, const char *state, FyError **errp)
{
    int want = status_from_name(state);
    if (want < 0) {
        fy_error_setg(errp, "Parameter 'state' does not accept value '%s'",
                      state);
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    int ret = 0;
    if (m->status != (FyMigStatus)want) {
        fy_error_setg(errp, "Migration not in expected state: %s",
                      fy_mig_status_name(m->status));
        ret = -1;
    } else {
        m->continue_req = true;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

/* ---- postcopy entry points (mig-postcopy.c) ---- */

int fy_migrate_start_postcopy(FyMigration *m, FyError **errp)
{
    return fy_mig_pc_start(m, errp);
}

int fy_migrate_pause(FyMigration *m, FyError **errp)
{
    return fy_mig_pc_pause(m, errp);
}

int fy_migrate_recover(FyMigration *m, const char *uri, FyError **errp)
{
    return fy_mig_pc_recover(m, uri, errp);
}

/* ---- state ---- */

FyMigStatus fy_migration_status(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    FyMigStatus s = m->status;
    pthread_mutex_unlock(&m->lock);
    return s;
}

static bool wait_locked(FyMigration *m, const struct timespec *deadline)
{
    if (!deadline) {
        pthread_cond_wait(&m->cond, &m->lock);
        return true;
    }
    return pthread_cond_timedwait(&m->cond, &m->lock, deadline) != ETIMEDOUT;
}

static struct timespec deadline_in(int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* A status change is visible before its event has left; taking event_lock
 * once waits for that, so a waiter that saw a status has its event too. */
static void events_settle(FyMigration *m)
{
    pthread_mutex_lock(&m->event_lock);
    pthread_mutex_unlock(&m->event_lock);
}

FyMigStatus fy_migration_wait(FyMigration *m, int timeout_ms)
{
    struct timespec dl = deadline_in(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->lock);
    while (fy_mig_status_is_running(m->status) &&
           wait_locked(m, timeout_ms < 0 ? NULL : &dl))
        ;
    FyMigStatus s = m->status;
    pthread_mutex_unlock(&m->lock);
    events_settle(m);
    return s;
}

bool fy_migration_wait_for(FyMigration *m, FyMigStatus want, int timeout_ms)
{
    struct timespec dl = deadline_in(timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&m->lock);
    while (m->status != want && wait_locked(m, timeout_ms < 0 ? NULL : &dl))
        ;
    bool ok = m->status == want;
    pthread_mutex_unlock(&m->lock);
    events_settle(m);
    return ok;
}

char *fy_migration_incoming_address(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    char *a = m->in_address ? strdup(m->in_address) : NULL;
    pthread_mutex_unlock(&m->lock);
    return a;
}
