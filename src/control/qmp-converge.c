/*
 * qmp-converge.c: the convergence QMP commands, thin wrappers over
 * dirtyrate.h and converge.h. The monitor has checked argument types
 * against each command's spec before these run.
 */
#include <string.h>

#include "control/converge-cmds.h"
#include "ferry/converge.h"

static FyMigration *mig(void *opaque)
{
    return fy_monitor_migration(opaque);
}

json_t *fy_qmp_calc_dirty_rate(void *opaque, json_t *args, FyError **errp)
{
    if (fy_dirtyrate_calc_json(fy_migration_dirtyrate(mig(opaque)), args,
                               errp) < 0)
        return NULL;
    return json_object();
}

json_t *fy_qmp_query_dirty_rate(void *opaque, json_t *args, FyError **errp)
{
    json_t *r = fy_dirtyrate_query(fy_migration_dirtyrate(mig(opaque)));
    if (!r) {
        fy_error_setg(errp, "out of memory");
        return NULL;
    }
    /* calc-time-unit (QEMU 8.2): report calc-time in the unit asked for. */
    const char *unit = json_string_value(json_object_get(args,
                                                         "calc-time-unit"));
    const char *have = json_string_value(json_object_get(r, "calc-time-unit"));
    if (unit && have && strcmp(unit, have)) {
        json_int_t t = json_integer_value(json_object_get(r, "calc-time"));
        if (!strcmp(unit, "millisecond"))
            t *= 1000;
        else if (!strcmp(unit, "second"))
            t /= 1000;
        else {
            json_decref(r);
            fy_error_setg(errp, "Parameter 'calc-time-unit' does not accept "
                          "value '%s'", unit);
            return NULL;
        }
        json_object_set_new(r, "calc-time", json_integer(t));
        json_object_set_new(r, "calc-time-unit", json_string(unit));
    }
    return r;
}

static bool cpu_arg(json_t *args, int64_t *cpu)
{
    json_t *v = json_object_get(args, "cpu-index");
    *cpu = v ? json_integer_value(v) : -1;
    return v != NULL;
}

json_t *fy_qmp_set_vcpu_dirty_limit(void *opaque, json_t *args,
                                    FyError **errp)
{
    int64_t cpu;
    bool has_cpu = cpu_arg(args, &cpu);
    json_int_t rate = json_integer_value(json_object_get(args, "dirty-rate"));
    if (rate < 0) {
        fy_error_setg(errp, "Parameter 'dirty-rate' expects uint64");
        return NULL;
    }
    if (fy_migration_set_vcpu_dirty_limit(mig(opaque), has_cpu, cpu,
                                          (uint64_t)rate, errp) < 0)
        return NULL;
    return json_object();
}

json_t *fy_qmp_cancel_vcpu_dirty_limit(void *opaque, json_t *args,
                                       FyError **errp)
{
    int64_t cpu;
    bool has_cpu = cpu_arg(args, &cpu);
    if (fy_migration_cancel_vcpu_dirty_limit(mig(opaque), has_cpu, cpu,
                                             errp) < 0)
        return NULL;
    return json_object();
}

json_t *fy_qmp_query_vcpu_dirty_limit(void *opaque, json_t *args,
                                      FyError **errp)
{
    json_t *r = fy_migration_query_vcpu_dirty_limit(mig(opaque));
    if (!r)
        fy_error_setg(errp, "out of memory");
    return r;
}
