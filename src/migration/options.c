/*
 * options.c: migration capabilities and parameters, with QEMU's names.
 *
 * Both are tables, so adding a feature is adding (or flipping) a row:
 * - a capability row says whether ferry implements it; turning on one that
 *   it does not gives "Capability 'X' is not supported by ferry yet";
 *   cross-capability rules go in caps_check();
 * - a parameter row gives its type, range, whether it may change while a
 *   migration runs (QEMU applies max-bandwidth and downtime-limit live, the
 *   migration thread picks them up at its next iteration), and whether
 *   ferry implements it. Unknown names: "Parameter 'X' is unexpected".
 * Parameters are set all-or-nothing: every value is validated into a copy
 * before the copy replaces the current set. Capabilities cannot change
 * while a migration runs ("There's a migration process in progress").
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "migration/converge.h"
#include "migration/mig-multifd.h"
#include "migration/mig-postcopy.h"
#include "migration/migration-int.h"

const FyMigCapInfo fy_mig_caps[FY_CAP__MAX] = {
    [FY_CAP_XBZRLE] = { "xbzrle", true },
    [FY_CAP_RDMA_PIN_ALL] = { "rdma-pin-all", false },
    [FY_CAP_AUTO_CONVERGE] = { "auto-converge", true },
    [FY_CAP_EVENTS] = { "events", true },
    [FY_CAP_POSTCOPY_RAM] = { "postcopy-ram", true },
    [FY_CAP_X_COLO] = { "x-colo", false },
    [FY_CAP_RELEASE_RAM] = { "release-ram", false },
    [FY_CAP_RETURN_PATH] = { "return-path", true },
    [FY_CAP_PAUSE_BEFORE_SWITCHOVER] = { "pause-before-switchover", true },
    [FY_CAP_MULTIFD] = { "multifd", true },
    [FY_CAP_DIRTY_BITMAPS] = { "dirty-bitmaps", false },
    [FY_CAP_POSTCOPY_BLOCKTIME] = { "postcopy-blocktime", true },
    [FY_CAP_LATE_BLOCK_ACTIVATE] = { "late-block-activate", false },
    [FY_CAP_X_IGNORE_SHARED] = { "x-ignore-shared", true },
    [FY_CAP_VALIDATE_UUID] = { "validate-uuid", true },
    [FY_CAP_BACKGROUND_SNAPSHOT] = { "background-snapshot", false },
    [FY_CAP_ZERO_COPY_SEND] = { "zero-copy-send", true },
    [FY_CAP_POSTCOPY_PREEMPT] = { "postcopy-preempt", true },
    [FY_CAP_SWITCHOVER_ACK] = { "switchover-ack", false },
    [FY_CAP_DIRTY_LIMIT] = { "dirty-limit", true },
    [FY_CAP_MAPPED_RAM] = { "mapped-ram", false },
};

static const char *const zpd_names[] = { "none", "legacy", "multifd", NULL };
/* QEMU's MultiFDCompression and MigMode; mig-multifd.c refuses the values
 * ferry does not implement. */
static const char *const mfd_comp_names[] = { "none", "zlib", "zstd", "qpl",
                                              "uadk", "qatzip", NULL };
static const char *const mode_names[] = { "normal", "cpr-reboot",
                                           "cpr-transfer", "cpr-exec", NULL };

/* PT_CONV: parsed and shown by converge.c (ranges, bools, enums). */
typedef enum { PT_UINT, PT_ENUM, PT_OTHER, PT_CONV } ParamType;

typedef struct ParamInfo {
    const char *name;
    ParamType type;
    bool supported;
    bool live;                      /* may change during a migration */
    size_t offset;                  /* of the uint64_t in FyMigParams */
    uint64_t max;                   /* PT_UINT: 0..max */
    const char *range;              /* PT_UINT: how the range reads */
    const char *const *names;       /* PT_ENUM */
} ParamInfo;

#define P_UINT(n, field, mx, rng, lv) \
    { n, PT_UINT, true, lv, offsetof(FyMigParams, field), mx, rng, NULL }
#define P_ENUM(n, field, nm, lv) \
    { n, PT_ENUM, true, lv, offsetof(FyMigParams, field), 0, NULL, nm }
#define P_LATER(n) { n, PT_OTHER, false, false, 0, 0, NULL, NULL }
#define P_CONV(n, field) \
    { n, PT_CONV, true, true, offsetof(FyMigParams, field), 0, NULL, NULL }

static const ParamInfo params[] = {
    P_LATER("announce-initial"),
    P_LATER("announce-max"),
    P_LATER("announce-rounds"),
    P_LATER("announce-step"),
    P_CONV("throttle-trigger-threshold", throttle_trigger_threshold),
    P_CONV("cpu-throttle-initial", cpu_throttle_initial),
    P_CONV("cpu-throttle-increment", cpu_throttle_increment),
    P_CONV("cpu-throttle-tailslow", cpu_throttle_tailslow),
    P_LATER("tls-creds"),
    P_LATER("tls-hostname"),
    P_LATER("tls-authz"),
    P_UINT("max-bandwidth", max_bandwidth, INT64_MAX,
           "an integer in the range of 0 to 9223372036854775807 bytes/second",
           true),
    P_UINT("avail-switchover-bandwidth", avail_switchover_bandwidth, INT64_MAX,
           "an integer in the range of 0 to 9223372036854775807 bytes/second",
           true),
    P_UINT("downtime-limit", downtime_limit, FY_MAX_DOWNTIME_LIMIT,
           "an integer in the range of 0 to 2000000 milliseconds", true),
    P_LATER("x-checkpoint-delay"),
    P_UINT("multifd-channels", multifd_channels, FY_MULTIFD_CHANNELS_MAX,
           "a value between 1 and 255", false),
    P_CONV("xbzrle-cache-size", xbzrle_cache_size),
    P_UINT("max-postcopy-bandwidth", max_postcopy_bandwidth, INT64_MAX,
           "an integer in the range of 0 to 9223372036854775807 bytes/second",
           true),
    P_CONV("max-cpu-throttle", max_cpu_throttle),
    P_ENUM("multifd-compression", multifd_compression, mfd_comp_names, false),
    P_UINT("multifd-zlib-level", multifd_zlib_level, 9,
           "a value between 0 and 9", false),
    P_LATER("multifd-qatzip-level"),
    P_UINT("multifd-zstd-level", multifd_zstd_level, 20,
           "a value between 0 and 20", false),
    P_LATER("block-bitmap-mapping"),
    P_CONV("x-vcpu-dirty-limit-period", x_vcpu_dirty_limit_period),
    P_CONV("vcpu-dirty-limit", vcpu_dirty_limit),
    P_ENUM("mode", mode, mode_names, false),
    P_ENUM("zero-page-detection", zero_page_detection, zpd_names, false),
    P_LATER("direct-io"),
    P_CONV("x-stall-iterations", x_stall_iterations),
    P_CONV("x-stall-action", x_stall_action),
};
#define N_PARAMS (sizeof(params) / sizeof(params[0]))

void fy_mig_params_init(FyMigParams *p)
{
    memset(p, 0, sizeof(*p));
    p->max_bandwidth = FY_DEFAULT_MAX_BANDWIDTH;
    p->downtime_limit = FY_DEFAULT_DOWNTIME_LIMIT;
    p->zero_page_detection = FY_ZPD_MULTIFD; /* QEMU's default since 9.0 */
    p->multifd_channels = 2;
    p->multifd_compression = FY_MULTIFD_COMPRESSION_NONE;
    p->multifd_zlib_level = 1;
    p->multifd_zstd_level = 1;
    p->mode = FY_MIG_MODE_NORMAL;
    fy_mig_converge_params_init(p);
}

static uint64_t *param_slot(FyMigParams *p, const ParamInfo *pi)
{
    return (uint64_t *)((char *)p + pi->offset);
}

/* ---- capabilities ---- */

static int cap_index(const char *name, FyError **errp)
{
    for (int i = 0; i < FY_CAP__MAX; i++) {
        if (!strcmp(fy_mig_caps[i].name, name))
            return i;
    }
    fy_error_setg(errp, "Parameter 'capability' does not accept value '%s'",
                  name);
    return -1;
}

/* Rules between capabilities; none yet among the implemented ones. */
static int caps_check(const bool *caps, FyError **errp)
{
    for (int i = 0; i < FY_CAP__MAX; i++) {
        if (caps[i] && !fy_mig_caps[i].supported) {
            fy_error_setg(errp, "Capability '%s' is not supported by ferry yet",
                          fy_mig_caps[i].name);
            return -1;
        }
    }
    if (fy_mig_pc_check(caps, errp) < 0)
        return -1;
    return fy_mig_converge_caps_check(caps, errp);
}

int fy_migration_set_capability(FyMigration *m, const char *name, bool on,
                                FyError **errp)
{
    int i = cap_index(name, errp);
    if (i < 0)
        return -1;
    pthread_mutex_lock(&m->lock);
    int ret = -1;
    bool caps[FY_CAP__MAX];
    memcpy(caps, m->caps, sizeof(caps));
    caps[i] = on;
    if (fy_mig_status_is_running(m->status))
        fy_error_setg(errp, "There's a migration process in progress");
    else if (caps_check(caps, errp) == 0 &&
             fy_mig_mfd_check(caps, &m->params, errp) == 0) {
        memcpy(m->caps, caps, sizeof(caps));
        ret = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

int fy_migration_get_capability(FyMigration *m, const char *name, bool *on,
                                FyError **errp)
{
    int i = cap_index(name, errp);
    if (i < 0)
        return -1;
    pthread_mutex_lock(&m->lock);
    *on = m->caps[i];
    pthread_mutex_unlock(&m->lock);
    return 0;
}

json_t *fy_migration_query_capabilities(FyMigration *m)
{
    json_t *list = json_array();
    pthread_mutex_lock(&m->lock);
    for (int i = 0; list && i < FY_CAP__MAX; i++) {
        json_array_append_new(list, json_pack("{s:s,s:b}", "capability",
                                              fy_mig_caps[i].name, "state",
                                              m->caps[i]));
    }
    pthread_mutex_unlock(&m->lock);
    return list;
}

/* ---- parameters ---- */

static const ParamInfo *param_find(const char *name)
{
    for (size_t i = 0; i < N_PARAMS; i++) {
        if (!strcmp(params[i].name, name))
            return &params[i];
    }
    return NULL;
}

static int parse_enum(const ParamInfo *pi, json_t *v, uint64_t *out,
                      FyError **errp)
{
    if (!json_is_string(v)) {
        fy_error_setg(errp, "Parameter '%s' expects a string", pi->name);
        return -1;
    }
    for (uint64_t i = 0; pi->names[i]; i++) {
        if (!strcmp(pi->names[i], json_string_value(v))) {
            *out = i;
            return 0;
        }
    }
    fy_error_setg(errp, "Parameter '%s' does not accept value '%s'", pi->name,
                  json_string_value(v));
    return -1;
}

static int parse_uint(const ParamInfo *pi, json_t *v, uint64_t *out,
                      FyError **errp)
{
    if (!json_is_integer(v)) {
        fy_error_setg(errp, "Parameter '%s' expects an integer", pi->name);
        return -1;
    }
    json_int_t n = json_integer_value(v);
    if (n < 0 || (uint64_t)n > pi->max) {
        fy_error_setg(errp, "Parameter '%s' expects %s", pi->name, pi->range);
        return -1;
    }
    *out = (uint64_t)n;
    return 0;
}

static int param_apply_one(const ParamInfo *pi, json_t *v, FyMigParams *p,
                           bool running, const FyMigParams *cur,
                           FyError **errp)
{
    uint64_t val;
    if (!pi->supported) {
        fy_error_setg(errp, "Parameter '%s' is not supported by ferry yet",
                      pi->name);
        return -1;
    }
    if (pi->type == PT_CONV) {
        if (fy_mig_converge_param_parse(pi->name, v, &val, errp) != 0)
            return -1;
    } else if ((pi->type == PT_UINT ? parse_uint(pi, v, &val, errp)
                                    : parse_enum(pi, v, &val, errp)) < 0)
        return -1;
    if (running && !pi->live &&
        val != *param_slot((FyMigParams *)cur, pi)) {
        fy_error_setg(errp, "Parameter '%s' cannot be changed while a "
                      "migration is in progress", pi->name);
        return -1;
    }
    *param_slot(p, pi) = val;
    return 0;
}

int fy_migration_set_parameters(FyMigration *m, json_t *obj, FyError **errp)
{
    if (!json_is_object(obj)) {
        fy_error_setg(errp, "migration parameters must be a JSON object");
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    FyMigParams next = m->params;
    bool running = fy_mig_status_is_running(m->status);
    const char *key;
    json_t *v;
    int ret = 0;
    json_object_foreach(obj, key, v) {
        const ParamInfo *pi = param_find(key);
        if (!pi) {
            fy_error_setg(errp, "Parameter '%s' is unexpected", key);
            ret = -1;
        } else {
            ret = param_apply_one(pi, v, &next, running, &m->params, errp);
        }
        if (ret < 0)
            break;
    }
    if (ret == 0)
        ret = fy_mig_mfd_check(m->caps, &next, errp);
    if (ret == 0)
        ret = fy_mig_converge_params_apply(m, &next, errp);
    if (ret == 0)
        m->params = next;
    pthread_mutex_unlock(&m->lock);
    return ret;
}

json_t *fy_migration_query_parameters(FyMigration *m)
{
    json_t *o = json_object();
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; o && i < N_PARAMS; i++) {
        const ParamInfo *pi = &params[i];
        uint64_t val = *param_slot(&m->params, pi);
        if (!pi->supported)
            continue;
        if (pi->type == PT_ENUM)
            json_object_set_new(o, pi->name, json_string(pi->names[val]));
        else if (pi->type == PT_CONV)
            json_object_set_new(o, pi->name,
                                fy_mig_converge_param_json(pi->name, val));
        else
            json_object_set_new(o, pi->name, json_integer((json_int_t)val));
    }
    pthread_mutex_unlock(&m->lock);
    return o;
}

FyZeroPageDetection fy_mig_zero_page_detection(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    FyZeroPageDetection z = (FyZeroPageDetection)m->params.zero_page_detection;
    pthread_mutex_unlock(&m->lock);
    return z;
}

void fy_mig_apply_caps(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    /* cpr-transfer hands every block over by fd (handover.c): the stream
     * is the one x-ignore-shared gives. */
    bool ignore_shared = m->caps[FY_CAP_X_IGNORE_SHARED] ||
                         m->params.mode == FY_MIG_MODE_CPR_TRANSFER;
    bool validate_uuid = m->caps[FY_CAP_VALIDATE_UUID];
    bool detect_zero = m->params.zero_page_detection != FY_ZPD_NONE;
    pthread_mutex_unlock(&m->lock);

    FySaveVMConfig *cfg = fy_savevm_config(m->ss);
    cfg->cap_x_ignore_shared = ignore_shared;
    cfg->validate_uuid = validate_uuid;
    FyRamOptions o = { .ignore_shared = ignore_shared,
                       .detect_zero = detect_zero };
    fy_ram_set_options(m->rs, &o);
    fy_mig_pc_apply_caps(m);
}
