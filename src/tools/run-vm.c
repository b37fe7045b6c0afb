/*
 * run-vm.c: the reference VM as `ferry run` exposes it: the hooks the
 * migration drives (the machine's, wrapped), and the VM's monitor commands.
 *
 * Wrapping the hooks lets the program see the two moments that matter for
 * verification without touching the engine: the source's stop at the
 * switchover (RAM and devices are final from then on) and the destination's
 * start after loading (nothing has run yet). With --debug-switchover-
 * snapshot both take a snapshot there (per-block RAM digests, device state
 * JSON, vCPU steps); x-ferry-switchover-snapshot returns it, so a test can
 * compare the source at switchover with the destination before it resumes.
 *
 * Locks: rv->lock guards the run-state flags; emit_lock keeps the monitor
 * alive while an event is sent. Neither is held while calling into the
 * migration (which may call back into the hooks).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "run-int.h"

static void emit(RunVM *rv, const char *name)
{
    pthread_mutex_lock(&rv->emit_lock);
    if (rv->mon)
        fy_monitor_emit_event(rv->mon, name, NULL);
    pthread_mutex_unlock(&rv->emit_lock);
}

static bool mig_running(FyMigStatus s)
{
    return s != MIGRATION_STATUS_NONE && s != MIGRATION_STATUS_COMPLETED &&
           s != MIGRATION_STATUS_FAILED && s != MIGRATION_STATUS_CANCELLED;
}

/* ---- snapshot ---- */

static json_t *ram_digests(RunVM *rv, FyError **errp)
{
    FyRamList *l = fy_machine_ram_list(rv->machine);
    json_t *list = json_array();
    for (int i = 0; list && i < l->count; i++) {
        char hex[FY_MACHINE_DIGEST_LEN];
        if (fy_machine_block_digest(l->blocks[i], hex, errp) < 0) {
            json_decref(list);
            return NULL;
        }
        json_array_append_new(list, json_pack(
            "{s:s,s:I,s:s}", "idstr", l->blocks[i]->idstr, "length",
            (json_int_t)l->blocks[i]->used_length, "digest", hex));
    }
    return list;
}

static json_t *vcpu_steps(RunVM *rv)
{
    json_t *a = json_array();
    for (int i = 0; a && i < fy_machine_vcpu_count(rv->machine); i++)
        json_array_append_new(a, json_integer(
            (json_int_t)fy_machine_vcpu_steps(rv->machine, i)));
    return a;
}

json_t *run_vm_snapshot(RunVM *rv, FyError **errp)
{
    if (fy_machine_is_running(rv->machine)) {
        fy_error_setg(errp, "the VM is running: stop it first for a "
                      "consistent snapshot");
        return NULL;
    }
    json_t *ram = ram_digests(rv, errp);
    json_t *dev = ram ? fy_machine_state_json(rv->machine) : NULL;
    if (ram && !dev)
        fy_error_setg(errp, "cannot dump the device state");
    if (!dev) {
        json_decref(ram);
        return NULL;
    }
    return json_pack("{s:o,s:o,s:o}", "ram", ram, "devices", dev,
                     "vcpu-steps", vcpu_steps(rv));
}

static void keep_snapshot(RunVM *rv)
{
    FyError *err = NULL;
    json_t *snap = run_vm_snapshot(rv, &err);
    if (!snap)
        snap = json_pack("{s:s}", "error", fy_error_msg(err));
    fy_error_free(err);
    pthread_mutex_lock(&rv->lock);
    json_decref(rv->snapshot);
    rv->snapshot = snap;
    pthread_mutex_unlock(&rv->lock);
}

/* ---- the hooks the migration drives ---- */

/* The migration thread stops the VM only for the switchover. */
static int ops_stop(void *opaque, FyError **errp)
{
    RunVM *rv = opaque;
    bool was = fy_machine_is_running(rv->machine);
    if (rv->mops->stop(rv->mopaque, errp) < 0)
        return -1;
    pthread_mutex_lock(&rv->lock);
    rv->mig_stopped = true;
    pthread_mutex_unlock(&rv->lock);
    if (was)
        emit(rv, "STOP");
    if (rv->snapshot_at_switchover)
        keep_snapshot(rv);
    return 0;
}

/* The destination starts the VM after loading; a source restarts it after
 * a failed or cancelled migration. */
static int ops_start(void *opaque, FyError **errp)
{
    RunVM *rv = opaque;
    pthread_mutex_lock(&rv->lock);
    bool dest = rv->incoming;
    pthread_mutex_unlock(&rv->lock);
    if (dest && rv->snapshot_at_switchover)
        keep_snapshot(rv);
    bool was = fy_machine_is_running(rv->machine);
    if (rv->mops->start(rv->mopaque, errp) < 0)
        return -1;
    pthread_mutex_lock(&rv->lock);
    rv->mig_stopped = false;
    rv->ever_started = true;
    pthread_mutex_unlock(&rv->lock);
    if (!was)
        emit(rv, "RESUME");
    return 0;
}

static bool ops_is_running(void *opaque)
{
    RunVM *rv = opaque;
    return rv->mops->is_running(rv->mopaque);
}

static int ops_log_start(void *opaque, FyError **errp)
{
    RunVM *rv = opaque;
    return rv->mops->dirty_log_start(rv->mopaque, errp);
}

static void ops_log_stop(void *opaque)
{
    RunVM *rv = opaque;
    rv->mops->dirty_log_stop(rv->mopaque);
}

static int ops_log_sync(void *opaque, FyRamBlock *b, unsigned long *bitmap,
                        FyError **errp)
{
    RunVM *rv = opaque;
    return rv->mops->dirty_log_sync(rv->mopaque, b, bitmap, errp);
}

static void ops_throttle(void *opaque, int percent)
{
    RunVM *rv = opaque;
    if (rv->mops->set_throttle)
        rv->mops->set_throttle(rv->mopaque, percent);
}

static void ops_dirty_limit(void *opaque, int vcpu, uint64_t mbps)
{
    RunVM *rv = opaque;
    if (rv->mops->set_dirty_limit)
        rv->mops->set_dirty_limit(rv->mopaque, vcpu, mbps);
}

static int ops_vcpu_count(void *opaque)
{
    RunVM *rv = opaque;
    return fy_machine_vcpu_count(rv->machine);
}

static const FyVMOps run_ops = {
    .stop = ops_stop,
    .start = ops_start,
    .is_running = ops_is_running,
    .dirty_log_start = ops_log_start,
    .dirty_log_stop = ops_log_stop,
    .dirty_log_sync = ops_log_sync,
    .set_throttle = ops_throttle,
    .set_dirty_limit = ops_dirty_limit,
    .vcpu_count = ops_vcpu_count,
};

/* ---- start, stop, quit ---- */

int run_vm_start(RunVM *rv, FyError **errp)
{
    if (fy_machine_is_running(rv->machine))
        return 0;
    if (fy_machine_start(rv->machine, errp) < 0)
        return -1;
    pthread_mutex_lock(&rv->lock);
    rv->ever_started = true;
    rv->mig_stopped = false;
    pthread_mutex_unlock(&rv->lock);
    emit(rv, "RESUME");
    return 0;
}

int run_vm_stop(RunVM *rv, FyError **errp)
{
    if (!fy_machine_is_running(rv->machine))
        return 0;
    if (fy_machine_stop(rv->machine, errp) < 0)
        return -1;
    emit(rv, "STOP");
    return 0;
}

void run_vm_request_quit(RunVM *rv)
{
    pthread_mutex_lock(&rv->lock);
    rv->quit = true;
    pthread_cond_broadcast(&rv->cond);
    pthread_mutex_unlock(&rv->lock);
}

bool run_vm_quit_requested(RunVM *rv)
{
    pthread_mutex_lock(&rv->lock);
    bool q = rv->quit;
    pthread_mutex_unlock(&rv->lock);
    return q;
}

/* ---- monitor commands ---- */

static bool busy_running_until(RunVM *rv, FyError **errp)
{
    pthread_mutex_lock(&rv->lock);
    bool busy = rv->run_until_busy;
    pthread_mutex_unlock(&rv->lock);
    if (busy)
        fy_error_setg(errp, "x-ferry-run-until is in progress");
    return busy;
}

static bool incoming_waiting(RunVM *rv)
{
    FyMigStatus s = fy_migration_status(rv->mig);
    pthread_mutex_lock(&rv->lock);
    bool w = rv->incoming_pending || (rv->incoming && mig_running(s));
    pthread_mutex_unlock(&rv->lock);
    return w;
}

static json_t *cmd_stop(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    if (busy_running_until(rv, errp))
        return NULL;
    if (incoming_waiting(rv)) {
        /* As QEMU: stop during an incoming migration means "do not start
         * the VM when it arrives". */
        fy_migration_set_autostart(rv->mig, false);
        return json_object();
    }
    return run_vm_stop(rv, errp) < 0 ? NULL : json_object();
}

static json_t *cmd_cont(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    if (busy_running_until(rv, errp))
        return NULL;
    if (incoming_waiting(rv)) {
        fy_migration_set_autostart(rv->mig, true);
        return json_object();
    }
    FyMigStatus s = fy_migration_status(rv->mig);
    pthread_mutex_lock(&rv->lock);
    bool switching = rv->mig_stopped && mig_running(s);
    pthread_mutex_unlock(&rv->lock);
    if (switching) {
        fy_error_setg(errp, "the VM is stopped for the migration's switchover "
                      "(status %s): wait for it or cancel it",
                      fy_mig_status_name(s));
        return NULL;
    }
    /* ferry departs from QEMU here: after postcopy the destination owns the
     * guest, and running this older copy would fork it. */
    if (fy_migration_vm_stale(rv->mig, errp))
        return NULL;
    return run_vm_start(rv, errp) < 0 ? NULL : json_object();
}

static const char *run_state(RunVM *rv)
{
    if (fy_machine_is_running(rv->machine))
        return "running";
    FyMigStatus s = fy_migration_status(rv->mig);
    pthread_mutex_lock(&rv->lock);
    const char *st = "paused";
    if (rv->incoming_pending || (rv->incoming && mig_running(s)))
        st = "inmigrate";
    else if (rv->mig_stopped && !rv->incoming)
        st = s == MIGRATION_STATUS_COMPLETED ? "postmigrate"
           : mig_running(s) ? "finish-migrate" : "paused";
    else if (!rv->ever_started && !rv->incoming)
        st = "prelaunch";
    pthread_mutex_unlock(&rv->lock);
    return st;
}

static json_t *cmd_query_status(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    const char *st = run_state(rv);
    return json_pack("{s:b,s:b,s:s}", "running", !strcmp(st, "running"),
                     "singlestep", 0, "status", st);
}

static json_t *cmd_quit(void *opaque, json_t *args, FyError **errp)
{
    run_vm_request_quit(opaque);
    return json_object();
}

static json_t *cmd_ram_digest(void *opaque, json_t *args, FyError **errp)
{
    return ram_digests(opaque, errp);
}

static json_t *cmd_device_state(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    if (fy_machine_is_running(rv->machine)) {
        fy_error_setg(errp, "the VM is running: device state can be dumped "
                      "only while it is stopped");
        return NULL;
    }
    json_t *d = fy_machine_state_json(rv->machine);
    if (!d)
        fy_error_setg(errp, "cannot dump the device state");
    return d;
}

static json_t *cmd_snapshot(void *opaque, json_t *args, FyError **errp)
{
    return run_vm_snapshot(opaque, errp);
}

static json_t *cmd_switchover_snapshot(void *opaque, json_t *args,
                                       FyError **errp)
{
    RunVM *rv = opaque;
    pthread_mutex_lock(&rv->lock);
    json_t *s = rv->snapshot ? json_incref(rv->snapshot) : NULL;
    pthread_mutex_unlock(&rv->lock);
    if (!s)
        fy_error_setg(errp, rv->snapshot_at_switchover
                      ? "no switchover has happened yet"
                      : "switchover snapshots are off (start ferry run with "
                        "--debug-switchover-snapshot)");
    return s;
}

/* human-monitor-command that also says whether the command failed (QEMU's
 * returns only the text): `ferry monitor` turns that into its exit status. */
static json_t *cmd_hmp(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    bool failed = false;
    const char *line = json_string_value(json_object_get(args, "command-line"));
    char *out = fy_hmp_execute(rv->mon, line, false, &failed);
    if (!out) {
        fy_error_setg(errp, "out of memory");
        return NULL;
    }
    json_t *r = json_pack("{s:s,s:b}", "output", out, "failed", failed);
    free(out);
    return r;
}

typedef struct RunUntil {
    RunVM *rv;
    uint64_t steps;
} RunUntil;

static void *run_until_main(void *opaque)
{
    RunUntil *ru = opaque;
    RunVM *rv = ru->rv;
    FyError *err = NULL;
    emit(rv, "RESUME");
    fy_machine_run_until(rv->machine, ru->steps, &err);
    emit(rv, "STOP");
    pthread_mutex_lock(&rv->lock);
    rv->run_until_busy = false;
    pthread_cond_broadcast(&rv->cond);
    pthread_mutex_unlock(&rv->lock);
    fy_error_free(err);   /* checked before starting: steps not passed */
    free(ru);
    return NULL;
}

static int run_until_check(RunVM *rv, uint64_t steps, FyError **errp)
{
    if (fy_machine_is_running(rv->machine)) {
        fy_error_setg(errp, "the VM is running: stop it first");
        return -1;
    }
    if (mig_running(fy_migration_status(rv->mig)) || incoming_waiting(rv)) {
        fy_error_setg(errp, "a migration is in progress");
        return -1;
    }
    for (int i = 0; i < fy_machine_vcpu_count(rv->machine); i++) {
        uint64_t at = fy_machine_vcpu_steps(rv->machine, i);
        if (at > steps) {
            fy_error_setg(errp, "vCPU %d is already at step %" PRIu64
                          ", past %" PRIu64, i, at, steps);
            return -1;
        }
    }
    return 0;
}

/* Runs in the background: the command returns at once; query-status says
 * "running" until every vCPU is parked at the step count. */
static json_t *cmd_run_until(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    json_int_t steps = json_integer_value(json_object_get(args, "steps"));
    if (steps < 0) {
        fy_error_setg(errp, "Parameter 'steps' expects a non-negative integer");
        return NULL;
    }
    if (busy_running_until(rv, errp) ||
        run_until_check(rv, (uint64_t)steps, errp) < 0)
        return NULL;
    if (rv->run_until_joinable) {
        pthread_join(rv->run_until_thread, NULL);
        rv->run_until_joinable = false;
    }
    RunUntil *ru = malloc(sizeof(*ru));
    if (!ru) {
        fy_error_setg(errp, "out of memory");
        return NULL;
    }
    *ru = (RunUntil){ rv, (uint64_t)steps };
    pthread_mutex_lock(&rv->lock);
    rv->run_until_busy = true;
    rv->ever_started = true;
    rv->mig_stopped = false;
    pthread_mutex_unlock(&rv->lock);
    if (pthread_create(&rv->run_until_thread, NULL, run_until_main, ru) != 0) {
        pthread_mutex_lock(&rv->lock);
        rv->run_until_busy = false;
        pthread_mutex_unlock(&rv->lock);
        free(ru);
        fy_error_setg(errp, "cannot start a thread for x-ferry-run-until");
        return NULL;
    }
    rv->run_until_joinable = true;
    return json_object();
}

static json_t *cmd_query_vcpus(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    FyMachineStats st;
    fy_machine_get_stats(rv->machine, &st);
    pthread_mutex_lock(&rv->lock);
    bool busy = rv->run_until_busy;
    pthread_mutex_unlock(&rv->lock);
    return json_pack("{s:b,s:b,s:o,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I}}",
                     "running", fy_machine_is_running(rv->machine),
                     "run-until-busy", busy, "steps", vcpu_steps(rv),
                     "clock-ns", (json_int_t)fy_machine_clock_ns(rv->machine),
                     "stats", "steps", (json_int_t)st.steps, "stores",
                     (json_int_t)st.stores, "throttle-ns",
                     (json_int_t)st.throttle_ns, "pace-ns",
                     (json_int_t)st.pace_ns, "serial-bytes",
                     (json_int_t)st.serial_bytes, "timer-fired",
                     (json_int_t)st.timer_fired);
}

/* migrate-incoming, wrapped: this VM becomes a destination. The flag is
 * set first: a short stream can be loaded (and the start hook run) before
 * fy_migrate_incoming() even returns. */
static json_t *cmd_migrate_incoming(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    const char *uri = json_string_value(json_object_get(args, "uri"));
    if (busy_running_until(rv, errp))
        return NULL;
    pthread_mutex_lock(&rv->lock);
    bool was_incoming = rv->incoming, was_pending = rv->incoming_pending;
    rv->incoming = true;
    rv->incoming_pending = !strcmp(uri, "defer");
    pthread_mutex_unlock(&rv->lock);
    if (fy_migrate_incoming(rv->mig, uri, errp) < 0) {
        pthread_mutex_lock(&rv->lock);
        rv->incoming = was_incoming;
        rv->incoming_pending = was_pending;
        pthread_mutex_unlock(&rv->lock);
        return NULL;
    }
    return json_object();
}

/* migrate, wrapped: this VM becomes a source (a former destination may
 * migrate on). */
static json_t *cmd_migrate(void *opaque, json_t *args, FyError **errp)
{
    RunVM *rv = opaque;
    if (json_is_true(json_object_get(args, "blk")) ||
        json_is_true(json_object_get(args, "inc"))) {
        fy_error_setg(errp, "Block migration (blk, inc) is not supported by "
                      "ferry: the reference VM has no disks");
        return NULL;
    }
    if (busy_running_until(rv, errp))
        return NULL;
    if (incoming_waiting(rv)) {
        fy_error_setg(errp, "this VM is waiting for an incoming migration");
        return NULL;
    }
    pthread_mutex_lock(&rv->lock);
    bool was_incoming = rv->incoming;
    rv->incoming = false;
    pthread_mutex_unlock(&rv->lock);
    if (fy_migrate(rv->mig, json_string_value(json_object_get(args, "uri")),
                   json_is_true(json_object_get(args, "resume")), errp) < 0) {
        pthread_mutex_lock(&rv->lock);
        rv->incoming = was_incoming;
        pthread_mutex_unlock(&rv->lock);
        return NULL;
    }
    return json_object();
}

typedef struct VmCommand {
    const char *name;
    const char *args;
    FyQmpCommandFn fn;
} VmCommand;

static const VmCommand vm_commands[] = {
    { "stop", "", cmd_stop },
    { "cont", "", cmd_cont },
    { "query-status", "", cmd_query_status },
    { "quit", "", cmd_quit },
    { "migrate-incoming", "uri:s", cmd_migrate_incoming },
    { "migrate", "uri:s blk:b? inc:b? detach:b? resume:b?", cmd_migrate },
    { "x-ferry-ram-digest", "", cmd_ram_digest },
    { "x-ferry-device-state", "", cmd_device_state },
    { "x-ferry-snapshot", "", cmd_snapshot },
    { "x-ferry-switchover-snapshot", "", cmd_switchover_snapshot },
    { "x-ferry-run-until", "steps:i", cmd_run_until },
    { "x-ferry-query-vcpus", "", cmd_query_vcpus },
    { "x-ferry-human-monitor-command", "command-line:s", cmd_hmp },
};

int run_vm_register_commands(RunVM *rv, FyError **errp)
{
    for (size_t i = 0; i < sizeof(vm_commands) / sizeof(vm_commands[0]); i++) {
        if (fy_monitor_register(rv->mon, vm_commands[i].name,
                                vm_commands[i].args, vm_commands[i].fn, rv,
                                errp) < 0)
            return -1;
    }
    return 0;
}

/* ---- life ---- */

int run_vm_init(RunVM *rv, const FyMachineConfig *cfg, const char *machine_type,
                FyError **errp)
{
    pthread_mutex_init(&rv->lock, NULL);
    pthread_mutex_init(&rv->emit_lock, NULL);
    pthread_cond_init(&rv->cond, NULL);
    rv->machine = fy_machine_new(cfg, errp);
    if (!rv->machine)
        return -1;
    rv->mops = fy_machine_vm_ops(rv->machine, &rv->mopaque);
    rv->ops = run_ops;
    rv->ss = fy_savevm_new(machine_type ? machine_type : FY_MACHINE_TYPE);
    if (!rv->ss) {
        fy_error_setg(errp, "out of memory");
        return -1;
    }
    if (fy_machine_register_state(rv->machine, rv->ss, errp) < 0)
        return -1;
    rv->mig = fy_migration_new(rv->ss, fy_machine_ram_list(rv->machine),
                               &rv->ops, rv);
    if (!rv->mig) {
        fy_error_setg(errp, "cannot set up the migration state");
        return -1;
    }
    FyMonitor *mon = fy_monitor_new(rv->mig, rv->ss);
    if (!mon) {
        fy_error_setg(errp, "cannot set up the monitor");
        return -1;
    }
    pthread_mutex_lock(&rv->emit_lock);
    rv->mon = mon;
    pthread_mutex_unlock(&rv->emit_lock);
    return run_vm_register_commands(rv, errp);
}

void run_vm_destroy(RunVM *rv)
{
    if (rv->run_until_joinable)
        pthread_join(rv->run_until_thread, NULL);
    pthread_mutex_lock(&rv->emit_lock);
    FyMonitor *mon = rv->mon;
    rv->mon = NULL;
    pthread_mutex_unlock(&rv->emit_lock);
    fy_monitor_free(mon);          /* detaches from the migration's events */
    fy_migration_free(rv->mig);    /* cancels and joins a running one */
    fy_savevm_free(rv->ss);
    fy_machine_free(rv->machine);
    json_decref(rv->snapshot);
    pthread_mutex_destroy(&rv->lock);
    pthread_mutex_destroy(&rv->emit_lock);
    pthread_cond_destroy(&rv->cond);
}
