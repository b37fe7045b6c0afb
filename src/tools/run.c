/*
 * run.c: `ferry run`, the reference VM with QMP and HMP.
 *
 *   options -> machine config -> VM + savevm + migration + monitor
 *   -> QMP servers, HMP on stdio -> [--incoming] -> main loop -> exit
 *
 * The main thread only waits: for quit (QMP/HMP), a signal (SIGINT,
 * SIGTERM, SIGHUP: blocked in every thread and taken with sigtimedwait
 * here), or the end of an incoming migration. A destination whose load
 * fails exits with status 1 and the error on stderr, as QEMU does; a
 * successful one goes on running the VM.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "run-int.h"
#include "tools.h"

#define MAX_QMP 4

typedef struct RunOptions {
    FyMachineConfig cfg;
    const char *qmp[MAX_QMP];
    int nqmp;
    bool monitor_stdio;
    const char *incoming;
    bool paused;
    const char *machine_type;
    const char *ram_file;
    bool snapshot;
    bool ram_anon;
    bool prealloc;
    const char *mem_path;  /* --memory-backend file:PATH */
    bool has_uuid;
    uint8_t uuid[16];
} RunOptions;

static void usage(FILE *f)
{
    fprintf(f,
"usage: ferry run [OPTIONS]\n"
"\n"
"Run the reference VM: software vCPUs that keep writing guest RAM, a UART,\n"
"a clock and a timer, with QMP/HMP to migrate it.\n"
"\n"
"  --ram SIZE               guest RAM (\"pc.ram\"): 512M, 2G, ... (default 64M)\n"
"  --ram-block NAME=SIZE    one more RAM block (repeatable)\n"
"  --ram-file PATH          fill guest RAM from PATH at start (the blocks end\n"
"                           to end; a shorter file leaves the rest zero)\n"
"  --memory-backend memfd|ram|file:PATH\n"
"                           memfd (default): shared memfd blocks, which a\n"
"                           local handover (mode cpr-transfer) can pass on;\n"
"                           ram: private anonymous memory with transparent\n"
"                           huge pages (QEMU's memory-backend-ram), faster to\n"
"                           fill for a destination, cannot be handed over;\n"
"                           file:PATH: pc.ram maps PATH shared (a tmpfs or\n"
"                           memfd-like file of at least --ram bytes; the\n"
"                           guest's writes land in it), QEMU's\n"
"                           memory-backend-file share=on\n"
"  --mem-prealloc           allocate all guest RAM at start (QEMU's\n"
"                           -mem-prealloc): no page faults later, for the\n"
"                           guest or an incoming migration\n"
"  --vcpus N                vCPUs (default 1)\n"
"  --workload NAME[,seed=S,wss=SIZE,rate=R]\n"
"                           idle | sweep | random | hotspot (default sweep);\n"
"                           wss: working set; rate: stores per second as\n"
"                           bytes (64M) or pages (1000p) per second\n"
"  --serial stdio|file:PATH|unix:PATH|none   the guest console (default none)\n"
"  --serial-every N         the guest prints a line every N steps\n"
"  --dirty-tracking bitmap|uffd-wp           (default bitmap)\n"
"  --qmp unix:PATH|tcp:HOST:PORT             QMP server (repeatable)\n"
"  --monitor stdio          HMP, the human monitor, on stdin/stdout\n"
"  --incoming URI|defer     wait for a migration (tcp:, unix:, exec:, fd:,\n"
"                           file:), or for migrate-incoming with defer\n"
"  -S                       do not start the VM (also not after an incoming\n"
"                           migration: `cont` starts it)\n"
"  --uuid UUID              the VM's UUID (checked by the destination with\n"
"                           the validate-uuid capability)\n"
"\n"
"debug options:\n"
"  --timer-period NS        the guest timer's period (0: off)\n"
"  --machine-type NAME      machine type in the stream's configuration\n"
"  --debug-switchover-snapshot\n"
"                           record RAM digests and device state when the\n"
"                           source stops for the switchover and before the\n"
"                           destination starts (x-ferry-switchover-snapshot)\n");
}

/* ---- options ---- */

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-')
        return -1;
    *out = v;
    return 0;
}

/* xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, as QEMU's -uuid takes it. */
static int parse_uuid(const char *s, uint8_t out[16])
{
    static const int dash[] = { 8, 13, 18, 23 };
    if (strlen(s) != 36)
        return -1;
    for (int i = 0, d = 0, n = 0; i < 36; i++) {
        if (d < 4 && i == dash[d]) {
            if (s[i] != '-')
                return -1;
            d++;
            continue;
        }
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0)
            return -1;
        out[n / 2] = (uint8_t)(n % 2 ? out[n / 2] | v : v << 4);
        n++;
    }
    return 0;
}

/* NAME[,seed=S,wss=SIZE,rate=R] */
static int parse_workload(const char *arg, FyMachineConfig *c, FyError **errp)
{
    char *copy = strdup(arg), *save = NULL;
    int ret = -1;
    char *name = strtok_r(copy, ",", &save);
    if (!name || fy_workload_parse(name, &c->workload, errp) < 0)
        goto out;
    for (char *kv; (kv = strtok_r(NULL, ",", &save));) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            fy_error_setg(errp, "--workload: '%s' is not KEY=VALUE", kv);
            goto out;
        }
        *eq++ = '\0';
        if (!strcmp(kv, "seed")) {
            if (parse_u64(eq, &c->seed) < 0) {
                fy_error_setg(errp, "--workload: bad seed '%s'", eq);
                goto out;
            }
        } else if (!strcmp(kv, "wss")) {
            if (fy_parse_size(eq, &c->working_set, errp) < 0)
                goto out;
        } else if (!strcmp(kv, "rate")) {
            if (fy_parse_dirty_rate(eq, &c->dirty_rate, errp) < 0)
                goto out;
        } else {
            fy_error_setg(errp, "--workload: unknown key '%s' (seed, wss, rate)",
                          kv);
            goto out;
        }
    }
    ret = 0;
out:
    free(copy);
    return ret;
}

static int parse_ram_block(const char *arg, FyMachineConfig *c, FyError **errp)
{
    const char *eq = strchr(arg, '=');
    uint64_t size;
    if (!eq) {
        fy_error_setg(errp, "--ram-block: expected NAME=SIZE, got '%s'", arg);
        return -1;
    }
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
    if (fy_parse_size(eq + 1, &size, errp) < 0)
        return -1;
    return fy_machine_config_add_ram(c, name, size, errp);
}

enum {
    OPT_RAM = 256, OPT_RAM_BLOCK, OPT_VCPUS, OPT_WORKLOAD, OPT_SERIAL,
    OPT_SERIAL_EVERY, OPT_DIRTY, OPT_QMP, OPT_MONITOR, OPT_INCOMING,
    OPT_TIMER, OPT_MTYPE, OPT_SNAPSHOT, OPT_RAM_FILE, OPT_UUID,
    OPT_MEM_BACKEND, OPT_PREALLOC,
};

static const struct option long_opts[] = {
    { "ram", required_argument, NULL, OPT_RAM },
    { "ram-block", required_argument, NULL, OPT_RAM_BLOCK },
    { "ram-file", required_argument, NULL, OPT_RAM_FILE },
    { "memory-backend", required_argument, NULL, OPT_MEM_BACKEND },
    { "mem-prealloc", no_argument, NULL, OPT_PREALLOC },
    { "vcpus", required_argument, NULL, OPT_VCPUS },
    { "workload", required_argument, NULL, OPT_WORKLOAD },
    { "serial", required_argument, NULL, OPT_SERIAL },
    { "serial-every", required_argument, NULL, OPT_SERIAL_EVERY },
    { "dirty-tracking", required_argument, NULL, OPT_DIRTY },
    { "qmp", required_argument, NULL, OPT_QMP },
    { "monitor", required_argument, NULL, OPT_MONITOR },
    { "incoming", required_argument, NULL, OPT_INCOMING },
    { "timer-period", required_argument, NULL, OPT_TIMER },
    { "machine-type", required_argument, NULL, OPT_MTYPE },
    { "debug-switchover-snapshot", no_argument, NULL, OPT_SNAPSHOT },
    { "uuid", required_argument, NULL, OPT_UUID },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

static int apply_option(int opt, const char *arg, RunOptions *o,
                        FyError **errp)
{
    FyMachineConfig *c = &o->cfg;
    uint64_t v;
    switch (opt) {
    case OPT_RAM:
        return fy_parse_size(arg, &c->ram[0].size, errp);
    case OPT_RAM_BLOCK:
        return parse_ram_block(arg, c, errp);
    case OPT_RAM_FILE:
        o->ram_file = arg;
        return 0;
    case OPT_PREALLOC:
        o->prealloc = true;
        return 0;
    case OPT_MEM_BACKEND:
        o->ram_anon = strcmp(arg, "ram") == 0;
        o->mem_path = NULL;
        if (strncmp(arg, "file:", 5) == 0 && arg[5])
            o->mem_path = arg + 5;
        else if (strcmp(arg, "memfd") != 0 && !o->ram_anon) {
            fy_error_setg(errp, "--memory-backend: expected 'memfd', 'ram' or "
                          "'file:PATH', got '%s'", arg);
            return -1;
        }
        return 0;
    case OPT_VCPUS:
        if (parse_u64(arg, &v) < 0 || v < 1 || v > FY_MACHINE_MAX_VCPUS) {
            fy_error_setg(errp, "--vcpus: expected 1..%d, got '%s'",
                          FY_MACHINE_MAX_VCPUS, arg);
            return -1;
        }
        c->vcpus = (int)v;
        return 0;
    case OPT_WORKLOAD:
        return parse_workload(arg, c, errp);
    case OPT_SERIAL:
        if (strlen(arg) >= sizeof(c->serial)) {
            fy_error_setg(errp, "--serial: too long");
            return -1;
        }
        snprintf(c->serial, sizeof(c->serial), "%s", arg);
        return 0;
    case OPT_SERIAL_EVERY:
    case OPT_TIMER:
        if (parse_u64(arg, &v) < 0) {
            fy_error_setg(errp, "--%s: expected a number, got '%s'",
                          opt == OPT_TIMER ? "timer-period" : "serial-every",
                          arg);
            return -1;
        }
        *(opt == OPT_TIMER ? &c->timer_period_ns : &c->serial_every) = v;
        return 0;
    case OPT_DIRTY:
        return fy_dirty_track_parse(arg, &c->dirty_track, errp);
    case OPT_QMP:
        if (o->nqmp == MAX_QMP) {
            fy_error_setg(errp, "--qmp: at most %d", MAX_QMP);
            return -1;
        }
        o->qmp[o->nqmp++] = arg;
        return 0;
    case OPT_MONITOR:
        if (strcmp(arg, "stdio") != 0) {
            fy_error_setg(errp, "--monitor: only 'stdio' (for a socket, use "
                          "--qmp and `ferry monitor SOCKET`)");
            return -1;
        }
        o->monitor_stdio = true;
        return 0;
    case OPT_INCOMING:
        o->incoming = arg;
        return 0;
    case OPT_MTYPE:
        o->machine_type = arg;
        return 0;
    case OPT_SNAPSHOT:
        o->snapshot = true;
        return 0;
    case OPT_UUID:
        if (parse_uuid(arg, o->uuid) < 0) {
            fy_error_setg(errp, "--uuid: expected xxxxxxxx-xxxx-xxxx-xxxx-"
                          "xxxxxxxxxxxx (hex), got '%s'", arg);
            return -1;
        }
        o->has_uuid = true;
        return 0;
    }
    return -1;
}

/* Returns 0, 1 for --help, -1 on a bad option (message printed). */
static int parse_options(int argc, char **argv, RunOptions *o)
{
    int opt;
    memset(o, 0, sizeof(*o));
    fy_machine_config_init(&o->cfg);
    optind = 1;
    while ((opt = getopt_long(argc, argv, "Sh", long_opts, NULL)) != -1) {
        FyError *err = NULL;
        if (opt == 'h') {
            usage(stdout);
            return 1;
        }
        if (opt == 'S') {
            o->paused = true;
            continue;
        }
        if (opt == '?' || apply_option(opt, optarg, o, &err) < 0) {
            if (err)
                fprintf(stderr, "ferry run: %s\n", fy_error_msg(err));
            fy_error_free(err);
            fprintf(stderr, "`ferry run --help` lists the options.\n");
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ferry run: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    for (int i = 0; i < o->cfg.nr_ram; i++) {
        o->cfg.ram[i].anon = o->ram_anon;
        o->cfg.ram[i].prealloc = o->prealloc;
    }
    if (o->ram_file && o->incoming) {
        /* A destination's RAM is what the migration brings. */
        fprintf(stderr, "ferry run: --ram-file and --incoming exclude each "
                "other\n");
        return -1;
    }
    return 0;
}

/* ---- startup ---- */

static int start_servers(RunVM *rv, RunOptions *o, FyQmpServer **servers,
                         FyError **errp)
{
    for (int i = 0; i < o->nqmp; i++) {
        servers[i] = fy_qmp_server_new(rv->mon, o->qmp[i], errp);
        if (!servers[i]) {
            fy_error_prepend(errp, "--qmp %s: ", o->qmp[i]);
            return -1;
        }
        const char *bound = fy_qmp_server_address(servers[i]);
        if (strncmp(o->qmp[i], bound, strlen(bound)) != 0)
            fprintf(stderr, "ferry run: QMP listening on %s\n", bound);
    }
    return 0;
}

static int start_incoming(RunVM *rv, RunOptions *o, FyError **errp)
{
    fy_migration_set_autostart(rv->mig, !o->paused);
    json_t *ret = NULL;
    json_t *args = json_pack("{s:s}", "uri", o->incoming);
    FyQmpResult r = fy_monitor_execute(rv->mon, "migrate-incoming", args, &ret,
                                       errp);
    json_decref(args);
    json_decref(ret);
    if (r != FY_QMP_OK) {
        fy_error_prepend(errp, "--incoming %s: ", o->incoming);
        return -1;
    }
    char *addr = fy_migration_incoming_address(rv->mig);
    if (strcmp(o->incoming, "defer") != 0)
        fprintf(stderr, "ferry run: waiting for an incoming migration on %s\n",
                addr ? addr : o->incoming);
    free(addr);
    return 0;
}

/* ---- the main loop ---- */

typedef struct Watch {
    FyMigStatus last;
    bool incoming_done;
} Watch;

static char *error_desc(FyMigration *m)
{
    json_t *q = fy_migration_query(m);
    const char *d = json_string_value(json_object_get(q, "error-desc"));
    char *s = strdup(d ? d : "unknown error");
    json_decref(q);
    return s;
}

/* Returns -1 when an incoming migration failed (the process exits 1). */
static int watch_migration(RunVM *rv, Watch *w)
{
    FyMigStatus s = fy_migration_status(rv->mig);
    if (s == w->last)
        return 0;
    w->last = s;
    pthread_mutex_lock(&rv->lock);
    bool incoming = rv->incoming;
    if (incoming && s != MIGRATION_STATUS_NONE)
        rv->incoming_pending = false;
    pthread_mutex_unlock(&rv->lock);
    if (!incoming)
        return 0;
    if (s == MIGRATION_STATUS_FAILED) {
        char *d = error_desc(rv->mig);
        fprintf(stderr, "ferry run: incoming migration failed: %s\n", d);
        free(d);
        return -1;
    }
    if (s == MIGRATION_STATUS_COMPLETED)
        fprintf(stderr, "ferry run: incoming migration completed; the VM is "
                "%s\n", fy_machine_is_running(rv->machine) ? "running"
                                                             : "paused");
    return 0;
}

static int main_loop(RunVM *rv, const sigset_t *sigs)
{
    Watch w = { .last = MIGRATION_STATUS_NONE };
    struct timespec tick = { 0, 50 * 1000 * 1000 };
    for (;;) {
        int sig = sigtimedwait(sigs, NULL, &tick);
        if (sig > 0) {
            fprintf(stderr, "ferry run: terminating on signal %d\n", sig);
            return 0;
        }
        if (run_vm_quit_requested(rv))
            return 0;
        if (watch_migration(rv, &w) < 0)
            return 1;
    }
}

static void shutdown_all(RunVM *rv, FyQmpServer **servers, int n, RunHmp *hmp)
{
    json_t *data = json_pack("{s:b,s:s}", "guest", 0, "reason",
                             "host-qmp-quit");
    if (rv->mon)
        fy_monitor_emit_event(rv->mon, "SHUTDOWN", data);
    json_decref(data);
    for (int i = 0; i < n; i++)
        fy_qmp_server_free(servers[i], 1000);
    /* A blocking HMP `migrate` must return before its thread can end. */
    if (rv->mig)
        fy_migrate_cancel(rv->mig, NULL);
    run_hmp_stop(hmp);
}

int cmd_run(int argc, char **argv)
{
    RunOptions o;
    int pr = parse_options(argc, argv, &o);
    if (pr != 0)
        return pr > 0 ? 0 : 2;

    /* Signals are taken by the main loop only: block them before any
     * thread exists, so every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    RunVM rv = { .snapshot_at_switchover = o.snapshot };
    FyQmpServer *servers[MAX_QMP] = { 0 };
    RunHmp *hmp = NULL;
    FyError *err = NULL;
    int rc = 1;

    if (o.mem_path) {
        /* The machine maps a dup of it; ours closes once it exists. */
        o.cfg.ram[0].fd = open(o.mem_path, O_RDWR | O_CLOEXEC);
        if (o.cfg.ram[0].fd < 0) {
            fy_error_setg_errno(&err, errno, "--memory-backend file:%s",
                                o.mem_path);
            goto out;
        }
    }
    int init = run_vm_init(&rv, &o.cfg, o.machine_type, &err);
    if (o.mem_path)
        close(o.cfg.ram[0].fd);
    if (init < 0)
        goto out;
    if (o.has_uuid)
        memcpy(fy_savevm_config(rv.ss)->uuid, o.uuid, sizeof(o.uuid));
    if (o.ram_file && run_vm_fill_ram(&rv, o.ram_file, &err) < 0)
        goto out;
    /* The incoming side listens before QMP serves, so the first client
     * already sees status "setup" and the address (QEMU processes
     * -incoming before its monitors run too). */
    if (o.incoming && start_incoming(&rv, &o, &err) < 0)
        goto out;
    if (start_servers(&rv, &o, servers, &err) < 0)
        goto out;
    if (!o.incoming && !o.paused && run_vm_start(&rv, &err) < 0)
        goto out;
    if (o.monitor_stdio && !(hmp = run_hmp_start(rv.mon, &err)))
        goto out;
    rc = main_loop(&rv, &sigs);
out:
    if (err)
        fprintf(stderr, "ferry run: %s\n", fy_error_msg(err));
    fy_error_free(err);
    shutdown_all(&rv, servers, o.nqmp, hmp);
    run_vm_destroy(&rv);
    return rc;
}
