/*
 * qmp-commands.c: the commands every monitor has: the migration commands
 * (QEMU's names and arguments, thin wrappers over migration.h), and
 * query-commands, query-version, human-monitor-command.
 *
 * The VM's own commands (stop, cont, query-status, quit, x-ferry-*) are
 * registered by the program that owns the VM.
 */
#include <stdlib.h>
#include <string.h>

#include "control/control-int.h"
#include "control/converge-cmds.h"

static json_t *ok(int r)
{
    return r < 0 ? NULL : json_object();
}

/* ---- generic ---- */

static json_t *cmd_qmp_capabilities(void *opaque, json_t *args, FyError **errp)
{
    /* Reached only outside the QMP protocol (negotiation is per client and
     * handled in qmp-protocol.c); there is nothing to negotiate here. */
    return json_object();
}

static json_t *cmd_query_commands(void *opaque, json_t *args, FyError **errp)
{
    FyMonitor *mon = opaque;
    json_t *list = json_array();
    for (size_t i = 0; list && i < fy_monitor_command_count(mon); i++)
        json_array_append_new(list, json_pack("{s:s}", "name",
                                              fy_monitor_command_name(mon, i)));
    return list;
}

static json_t *cmd_query_version(void *opaque, json_t *args, FyError **errp)
{
    return json_pack("{s:{s:i,s:i,s:i},s:s}", "qemu", "major",
                     FY_QMP_QEMU_MAJOR, "minor", FY_QMP_QEMU_MINOR, "micro",
                     FY_QMP_QEMU_MICRO, "package", FY_QMP_PACKAGE);
}

static json_t *cmd_human_monitor_command(void *opaque, json_t *args,
                                         FyError **errp)
{
    FyMonitor *mon = opaque;
    const char *line = json_string_value(json_object_get(args, "command-line"));
    /* The QMP thread must not wait for a migration: `migrate` without -d
     * goes on detached, as QEMU's HMP-over-QMP does. Errors are part of the
     * output, as in QEMU. */
    char *out = fy_hmp_execute(mon, line, false, NULL);
    if (!out) {
        fy_error_setg(errp, "out of memory");
        return NULL;
    }
    json_t *s = json_string(out);
    free(out);
    return s;
}

/* ---- migration ---- */

static json_t *cmd_migrate(void *opaque, json_t *args, FyError **errp)
{
    FyMigration *m = fy_monitor_migration(opaque);
    if (json_is_true(json_object_get(args, "blk")) ||
        json_is_true(json_object_get(args, "inc"))) {
        fy_error_setg(errp, "Block migration (blk, inc) is not supported by "
                      "ferry: the reference VM has no disks");
        return NULL;
    }
    return ok(fy_migrate(m, json_string_value(json_object_get(args, "uri")),
                         json_is_true(json_object_get(args, "resume")), errp));
}

static json_t *cmd_migrate_incoming(void *opaque, json_t *args, FyError **errp)
{
    FyMigration *m = fy_monitor_migration(opaque);
    return ok(fy_migrate_incoming(
        m, json_string_value(json_object_get(args, "uri")), errp));
}

static json_t *cmd_migrate_recover(void *opaque, json_t *args, FyError **errp)
{
    FyMigration *m = fy_monitor_migration(opaque);
    return ok(fy_migrate_recover(
        m, json_string_value(json_object_get(args, "uri")), errp));
}

static json_t *cmd_query_migrate(void *opaque, json_t *args, FyError **errp)
{
    json_t *r = fy_migration_query(fy_monitor_migration(opaque));
    if (!r)
        fy_error_setg(errp, "out of memory");
    return r;
}

static json_t *cmd_migrate_cancel(void *opaque, json_t *args, FyError **errp)
{
    return ok(fy_migrate_cancel(fy_monitor_migration(opaque), errp));
}

static json_t *cmd_migrate_continue(void *opaque, json_t *args, FyError **errp)
{
    return ok(fy_migrate_continue(
        fy_monitor_migration(opaque),
        json_string_value(json_object_get(args, "state")), errp));
}

static json_t *cmd_migrate_start_postcopy(void *opaque, json_t *args,
                                          FyError **errp)
{
    return ok(fy_migrate_start_postcopy(fy_monitor_migration(opaque), errp));
}

static json_t *cmd_migrate_pause(void *opaque, json_t *args, FyError **errp)
{
    return ok(fy_migrate_pause(fy_monitor_migration(opaque), errp));
}

static json_t *cmd_query_caps(void *opaque, json_t *args, FyError **errp)
{
    json_t *r = fy_migration_query_capabilities(fy_monitor_migration(opaque));
    if (!r)
        fy_error_setg(errp, "out of memory");
    return r;
}

/* Each element: {"capability": NAME, "state": BOOL}, nothing else. */
static int check_cap_item(json_t *item, size_t i, FyError **errp)
{
    if (!json_is_object(item)) {
        fy_error_setg(errp, "Invalid parameter type for 'capabilities[%zu]', "
                      "expected: object", i);
        return -1;
    }
    json_t *name = json_object_get(item, "capability");
    json_t *state = json_object_get(item, "state");
    if (!name || !state) {
        fy_error_setg(errp, "Parameter 'capabilities[%zu].%s' is missing", i,
                      name ? "state" : "capability");
        return -1;
    }
    if (!json_is_string(name) || !json_is_boolean(state)) {
        fy_error_setg(errp, "Invalid parameter type for 'capabilities[%zu].%s',"
                      " expected: %s", i, json_is_string(name) ? "state"
                      : "capability", json_is_string(name) ? "boolean"
                      : "string");
        return -1;
    }
    if (json_object_size(item) != 2) {
        const char *key;
        json_t *v;
        json_object_foreach(item, key, v) {
            if (strcmp(key, "capability") && strcmp(key, "state")) {
                fy_error_setg(errp, "Parameter 'capabilities[%zu].%s' is "
                              "unexpected", i, key);
                return -1;
            }
        }
    }
    return 0;
}

/* All or nothing: check every item and name first, then set them one by
 * one, putting the earlier ones back if a later one is refused. */
static json_t *cmd_set_caps(void *opaque, json_t *args, FyError **errp)
{
    FyMigration *m = fy_monitor_migration(opaque);
    json_t *list = json_object_get(args, "capabilities");
    size_t n = json_array_size(list), i;
    json_t *item;
    bool *old = calloc(n ? n : 1, sizeof(*old));
    if (!old) {
        fy_error_setg(errp, "out of memory");
        return NULL;
    }
    json_array_foreach(list, i, item) {
        if (check_cap_item(item, i, errp) < 0 ||
            fy_migration_get_capability(
                m, json_string_value(json_object_get(item, "capability")),
                &old[i], errp) < 0) {
            free(old);
            return NULL;
        }
    }
    for (i = 0; i < n; i++) {
        item = json_array_get(list, i);
        if (fy_migration_set_capability(
                m, json_string_value(json_object_get(item, "capability")),
                json_is_true(json_object_get(item, "state")), errp) < 0)
            break;
    }
    bool failed = i < n;
    while (failed && i-- > 0) {
        item = json_array_get(list, i);
        fy_migration_set_capability(
            m, json_string_value(json_object_get(item, "capability")), old[i],
            NULL);
    }
    free(old);
    return failed ? NULL : json_object();
}

static json_t *cmd_query_params(void *opaque, json_t *args, FyError **errp)
{
    json_t *r = fy_migration_query_parameters(fy_monitor_migration(opaque));
    if (!r)
        fy_error_setg(errp, "out of memory");
    return r;
}

static json_t *cmd_set_params(void *opaque, json_t *args, FyError **errp)
{
    return ok(fy_migration_set_parameters(fy_monitor_migration(opaque), args,
                                          errp));
}

/* ---- the table ---- */

typedef struct Builtin {
    const char *name;
    const char *args;
    FyQmpCommandFn fn;
    bool needs_migration;
} Builtin;

static const Builtin builtins[] = {
    { "qmp_capabilities", "enable:a?", cmd_qmp_capabilities, false },
    { "query-commands", "", cmd_query_commands, false },
    { "query-version", "", cmd_query_version, false },
    { "human-monitor-command", "command-line:s cpu-index:i?",
      cmd_human_monitor_command, false },
    { "migrate", "uri:s blk:b? inc:b? detach:b? resume:b?", cmd_migrate, true },
    { "migrate-incoming", "uri:s", cmd_migrate_incoming, true },
    { "migrate-recover", "uri:s", cmd_migrate_recover, true },
    { "query-migrate", "", cmd_query_migrate, true },
    { "migrate_cancel", "", cmd_migrate_cancel, true },
    { "migrate-continue", "state:s", cmd_migrate_continue, true },
    { "migrate-start-postcopy", "", cmd_migrate_start_postcopy, true },
    { "migrate-pause", "", cmd_migrate_pause, true },
    { "migrate-set-capabilities", "capabilities:a", cmd_set_caps, true },
    { "query-migrate-capabilities", "", cmd_query_caps, true },
    { "migrate-set-parameters", NULL, cmd_set_params, true },
    { "query-migrate-parameters", "", cmd_query_params, true },
    { "calc-dirty-rate", "calc-time:i calc-time-unit:s? sample-pages:i? "
      "mode:s?", fy_qmp_calc_dirty_rate, true },
    { "query-dirty-rate", "calc-time-unit:s?", fy_qmp_query_dirty_rate, true },
    { "set-vcpu-dirty-limit", "cpu-index:i? dirty-rate:i",
      fy_qmp_set_vcpu_dirty_limit, true },
    { "cancel-vcpu-dirty-limit", "cpu-index:i?",
      fy_qmp_cancel_vcpu_dirty_limit, true },
    { "query-vcpu-dirty-limit", "", fy_qmp_query_vcpu_dirty_limit, true },
};

int fy_qmp_register_builtin(FyMonitor *mon, FyError **errp)
{
    bool have_mig = fy_monitor_migration(mon) != NULL;
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        const Builtin *b = &builtins[i];
        if (b->needs_migration && !have_mig)
            continue;
        if (fy_monitor_register(mon, b->name, b->args, b->fn, mon, errp) < 0)
            return -1;
    }
    return 0;
}
