/*
 * query.c: query-migrate, with QEMU's field names and when QEMU shows them.
 *
 * Source: none -> {}; setup -> status; active and the later running
 * statuses, and completed -> status, total-time, setup-time,
 * expected-downtime (downtime once completed) and the "ram" object;
 * failed -> status and error-desc; cancelled -> status.
 * Destination: status, socket-address while listening, error-desc when
 * failed, and once completed its own measurement of the downtime (last
 * device section started -> VM started) and total time (QEMU reports
 * neither on the destination; ferry adds them).
 */
#include <jansson.h>

#include "migration/converge.h"
#include "migration/mig-multifd.h"
#include "migration/mig-postcopy.h"
#include "migration/migration-int.h"

static json_t *ram_info(FyMigration *m)
{
    FyRamStats st;
    FyMultifdStats mst;
    fy_ram_get_stats(m->rs, &st);
    fy_mig_mfd_stats_locked(m, &mst);
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I,"
                     "s:I,s:I,s:I,s:I}",
                     "transferred", (json_int_t)m->transferred,
                     "remaining", (json_int_t)st.remaining,
                     "total", (json_int_t)st.total,
                     "duplicate", (json_int_t)st.duplicate,
                     "normal", (json_int_t)st.normal,
                     "normal-bytes",
                     (json_int_t)(st.normal << FY_TARGET_PAGE_BITS),
                     "dirty-pages-rate", (json_int_t)st.dirty_pages_rate,
                     "mbps", m->mbps,
                     "dirty-sync-count", (json_int_t)st.dirty_sync_count,
                     "postcopy-requests", (json_int_t)0,
                     "page-size", (json_int_t)FY_TARGET_PAGE_SIZE,
                     "multifd-bytes", (json_int_t)mst.bytes,
                     "pages-per-second", (json_int_t)m->pages_per_second,
                     "precopy-bytes", (json_int_t)m->precopy_bytes,
                     "downtime-bytes", (json_int_t)m->downtime_bytes,
                     "postcopy-bytes", (json_int_t)0,
                     "dirty-sync-missed-zero-copy",
                     (json_int_t)mst.zero_copy_copied);
}

static bool shows_stats(FyMigStatus s)
{
    switch (s) {
    case MIGRATION_STATUS_NONE:
    case MIGRATION_STATUS_SETUP:
    case MIGRATION_STATUS_FAILED:
    case MIGRATION_STATUS_CANCELLED:
        return false;
    default:
        return true;
    }
}

static void fill_outgoing(FyMigration *m, json_t *o)
{
    FyMigStatus s = m->status;
    if (shows_stats(s)) {
        bool done = s == MIGRATION_STATUS_COMPLETED;
        json_object_set_new(o, "total-time", json_integer((json_int_t)(
            done ? m->total_time : fy_mig_now_ms() - m->start_ms)));
        json_object_set_new(o, "setup-time",
                            json_integer((json_int_t)m->setup_time));
        if (done)
            json_object_set_new(o, "downtime",
                                json_integer((json_int_t)m->downtime));
        else
            json_object_set_new(o, "expected-downtime",
                                json_integer((json_int_t)m->expected_downtime));
        json_object_set_new(o, "ram", ram_info(m));
        fy_mig_converge_query(m, o, s);
    }
}

/* "tcp:H:P" -> {"type":"inet",...}; "unix:P" -> {"type":"unix",...}. */
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

static void fill_incoming(FyMigration *m, json_t *o)
{
    FyMigStatus s = m->status;
    if (s == MIGRATION_STATUS_SETUP && m->in_address)
        json_object_set_new(o, "socket-address", socket_address(m->in_address));
    if (s == MIGRATION_STATUS_COMPLETED) {
        json_object_set_new(o, "total-time",
                            json_integer((json_int_t)m->total_time));
        json_object_set_new(o, "downtime",
                            json_integer((json_int_t)m->downtime));
    }
}

json_t *fy_migration_query(FyMigration *m)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    pthread_mutex_lock(&m->lock);
    if (m->status != MIGRATION_STATUS_NONE) {
        json_object_set_new(o, "status",
                            json_string(fy_mig_status_name(m->status)));
        if (m->incoming)
            fill_incoming(m, o);
        else
            fill_outgoing(m, o);
        if (m->status == MIGRATION_STATUS_FAILED && m->error)
            json_object_set_new(o, "error-desc",
                                json_string(fy_error_msg(m->error)));
        fy_mig_pc_query_locked(m, o);
    }
    pthread_mutex_unlock(&m->lock);
    return o;
}
