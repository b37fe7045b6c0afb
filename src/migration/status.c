/*
 * status.c: QEMU's migration statuses and the moves allowed between them.
 *
 *   none ─> setup ─> active ─────────────────────────────> completed
 *                      │  └─> pre-switchover ─> device ──┘
 *                      └─> postcopy-active ─> completed
 *   postcopy-active <-> postcopy-paused <-> postcopy-recover
 *   setup|active|pre-switchover|device|postcopy-* ─> failed
 *   setup|active|pre-switchover|device ─> cancelling ─> cancelled
 *   completed|failed|cancelled ─> setup          (a new migration)
 *
 * "device" appears only with pause-before-switchover, as in QEMU (the
 * released pause moves pre-switchover -> device; without it the status goes
 * from active straight to completed). The destination takes the same path:
 * setup when it starts listening, active once a source connects.
 */
#include <jansson.h>

#include "migration/migration-int.h"

static const char *const status_names[MIGRATION_STATUS__MAX] = {
    [MIGRATION_STATUS_NONE] = "none",
    [MIGRATION_STATUS_SETUP] = "setup",
    [MIGRATION_STATUS_CANCELLING] = "cancelling",
    [MIGRATION_STATUS_CANCELLED] = "cancelled",
    [MIGRATION_STATUS_ACTIVE] = "active",
    [MIGRATION_STATUS_POSTCOPY_ACTIVE] = "postcopy-active",
    [MIGRATION_STATUS_POSTCOPY_PAUSED] = "postcopy-paused",
    [MIGRATION_STATUS_POSTCOPY_RECOVER] = "postcopy-recover",
    [MIGRATION_STATUS_COMPLETED] = "completed",
    [MIGRATION_STATUS_FAILED] = "failed",
    [MIGRATION_STATUS_COLO] = "colo",
    [MIGRATION_STATUS_PRE_SWITCHOVER] = "pre-switchover",
    [MIGRATION_STATUS_DEVICE] = "device",
    [MIGRATION_STATUS_WAIT_UNPLUG] = "wait-unplug",
};

#define S(x) (1u << MIGRATION_STATUS_##x)

/* legal[from] = the set of statuses `from` may move to. */
static const unsigned legal[MIGRATION_STATUS__MAX] = {
    [MIGRATION_STATUS_NONE] = S(SETUP),
    [MIGRATION_STATUS_SETUP] = S(ACTIVE) | S(FAILED) | S(CANCELLING),
    [MIGRATION_STATUS_ACTIVE] = S(PRE_SWITCHOVER) | S(DEVICE) | S(COMPLETED) |
                                S(POSTCOPY_ACTIVE) | S(FAILED) | S(CANCELLING),
    [MIGRATION_STATUS_PRE_SWITCHOVER] = S(DEVICE) | S(POSTCOPY_ACTIVE) |
                                        S(FAILED) | S(CANCELLING),
    [MIGRATION_STATUS_DEVICE] = S(COMPLETED) | S(FAILED) | S(CANCELLING),
    [MIGRATION_STATUS_POSTCOPY_ACTIVE] = S(COMPLETED) | S(POSTCOPY_PAUSED) |
                                         S(FAILED),
    [MIGRATION_STATUS_POSTCOPY_PAUSED] = S(POSTCOPY_RECOVER) |
                                         S(POSTCOPY_ACTIVE) | S(FAILED),
    [MIGRATION_STATUS_POSTCOPY_RECOVER] = S(POSTCOPY_ACTIVE) |
                                          S(POSTCOPY_PAUSED) | S(FAILED),
    [MIGRATION_STATUS_CANCELLING] = S(CANCELLED),
    [MIGRATION_STATUS_COMPLETED] = S(SETUP),
    [MIGRATION_STATUS_FAILED] = S(SETUP),
    [MIGRATION_STATUS_CANCELLED] = S(SETUP),
};

const char *fy_mig_status_name(FyMigStatus s)
{
    return (unsigned)s < MIGRATION_STATUS__MAX ? status_names[s] : "invalid";
}

bool fy_mig_status_transition_ok(FyMigStatus from, FyMigStatus to)
{
    if ((unsigned)from >= MIGRATION_STATUS__MAX ||
        (unsigned)to >= MIGRATION_STATUS__MAX)
        return false;
    return legal[from] & (1u << to);
}

bool fy_mig_status_is_running(FyMigStatus s)
{
    switch (s) {
    case MIGRATION_STATUS_NONE:
    case MIGRATION_STATUS_COMPLETED:
    case MIGRATION_STATUS_FAILED:
    case MIGRATION_STATUS_CANCELLED:
        return false;
    default:
        return true;
    }
}

void fy_mig_emit(FyMigration *m, const char *name, json_t *data)
{
    pthread_mutex_lock(&m->lock);
    FyEventFn fn = m->caps[FY_CAP_EVENTS] ? m->event_fn : NULL;
    void *opaque = m->event_opaque;
    pthread_mutex_unlock(&m->lock);
    if (fn && data)
        fn(opaque, name, data);
}

static bool set_status(FyMigration *m, bool any_from, FyMigStatus from,
                       FyMigStatus to)
{
    pthread_mutex_lock(&m->event_lock);
    pthread_mutex_lock(&m->lock);
    if (any_from)
        from = m->status;
    bool ok = m->status == from && fy_mig_status_transition_ok(from, to);
    if (ok) {
        m->status = to;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    if (ok) {
        json_t *data = json_pack("{s:s}", "status", fy_mig_status_name(to));
        fy_mig_emit(m, "MIGRATION", data);
        json_decref(data);
    }
    pthread_mutex_unlock(&m->event_lock);
    return ok;
}

bool fy_mig_set_status(FyMigration *m, FyMigStatus from, FyMigStatus to)
{
    return set_status(m, false, from, to);
}

bool fy_mig_set_status_now(FyMigration *m, FyMigStatus to)
{
    return set_status(m, true, MIGRATION_STATUS_NONE, to);
}
