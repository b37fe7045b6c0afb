/*
 * migrate-cli.c: `ferry migrate`, drive a migration over QMP and watch it.
 *
 *   connect to the source's QMP -> set capabilities and parameters -> migrate
 *   -> poll query-migrate (a progress bar, or JSON lines) -> summary
 *
 * The progress bar is one line redrawn in place on a terminal, a line per
 * second otherwise. Ctrl-C cancels the migration (migrate_cancel) and waits
 * for it to end. Exit status: 0 completed, 1 failed or cancelled, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/qmp.h"
#include "tools.h"

#define BAR_WIDTH 20

typedef struct MigOptions {
    const char *qmp;
    const char *uri;
    bool json;
    bool detach;
    int interval_ms;
    json_t *caps;     /* [{"capability", "state"}] */
    json_t *params;   /* {name: value} */
} MigOptions;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: ferry migrate --qmp SOCKET [OPTIONS] URI\n"
"\n"
"Migrate the VM behind SOCKET (its QMP server: unix:PATH, tcp:HOST:PORT or\n"
"a path) to URI (tcp:HOST:PORT, unix:PATH, exec:CMD, fd:N, file:PATH), with\n"
"a live progress bar and a summary.\n"
"\n"
"  --json                   progress and result as JSON, one object a line\n"
"  --interval MS            progress period (default 200)\n"
"  -c, --cap NAME[=on|off]  set a capability first (repeatable)\n"
"  -p, --param NAME=VALUE   set a parameter first (repeatable)\n"
"  --max-bandwidth BYTES    bytes/s, 0 = unlimited (= -p max-bandwidth=...)\n"
"  --downtime-limit MS      (= -p downtime-limit=...)\n"
"  -d, --detach             start the migration and return\n");
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t u64(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

/* "1.23 GiB" */
static const char *human(double bytes, char *buf, size_t len)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

/* ---- options ---- */

static int add_cap(MigOptions *o, const char *arg)
{
    char name[128];
    const char *eq = strchr(arg, '=');
    bool on = true;
    snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - arg) : (int)strlen(arg),
             arg);
    if (eq && !strcmp(eq + 1, "off"))
        on = false;
    else if (eq && strcmp(eq + 1, "on")) {
        fprintf(stderr, "ferry migrate: --cap %s: expected on or off\n", arg);
        return -1;
    }
    json_array_append_new(o->caps, json_pack("{s:s,s:b}", "capability", name,
                                             "state", on));
    return 0;
}

/* VALUE as an integer when it is one, else a string. */
static int add_param(MigOptions *o, const char *name, const char *value)
{
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 0);
    if (!*value) {
        fprintf(stderr, "ferry migrate: parameter %s: empty value\n", name);
        return -1;
    }
    if (!errno && !*end)
        json_object_set_new(o->params, name, json_integer(v));
    else
        json_object_set_new(o->params, name, json_string(value));
    return 0;
}

static int add_param_kv(MigOptions *o, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        fprintf(stderr, "ferry migrate: --param %s: expected NAME=VALUE\n",
                arg);
        return -1;
    }
    char name[128];
    snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
    return add_param(o, name, eq + 1);
}

enum { OPT_QMP = 256, OPT_JSON, OPT_INTERVAL, OPT_BW, OPT_DT };

static int parse_options(int argc, char **argv, MigOptions *o)
{
    static const struct option opts[] = {
        { "qmp", required_argument, NULL, OPT_QMP },
        { "json", no_argument, NULL, OPT_JSON },
        { "interval", required_argument, NULL, OPT_INTERVAL },
        { "cap", required_argument, NULL, 'c' },
        { "param", required_argument, NULL, 'p' },
        { "max-bandwidth", required_argument, NULL, OPT_BW },
        { "downtime-limit", required_argument, NULL, OPT_DT },
        { "detach", no_argument, NULL, 'd' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt, r = 0;
    optind = 1;
    while (r == 0 && (opt = getopt_long(argc, argv, "c:p:dh", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_QMP: o->qmp = optarg; break;
        case OPT_JSON: o->json = true; break;
        case OPT_INTERVAL: o->interval_ms = atoi(optarg); break;
        case 'c': r = add_cap(o, optarg); break;
        case 'p': r = add_param_kv(o, optarg); break;
        case OPT_BW: r = add_param(o, "max-bandwidth", optarg); break;
        case OPT_DT: r = add_param(o, "downtime-limit", optarg); break;
        case 'd': o->detach = true; break;
        case 'h': usage(stdout); return 1;
        default: r = -1;
        }
    }
    if (r == 0 && optind == argc - 1 && o->qmp) {
        o->uri = argv[optind];
    } else if (r == 0) {
        fprintf(stderr, "ferry migrate: %s\n", !o->qmp ? "--qmp SOCKET is "
                "required" : "expected exactly one URI");
        r = -1;
    }
    if (o->interval_ms <= 0)
        o->interval_ms = 200;
    if (r < 0)
        fprintf(stderr, "`ferry migrate --help` lists the options.\n");
    return r;
}

/* ---- display ---- */

typedef struct View {
    bool tty;
    uint64_t start_ms;
    uint64_t last_line_ms;
    bool drew;
} View;

static double percent_sent(json_t *ram)
{
    uint64_t total = u64(ram, "total"), rem = u64(ram, "remaining");
    if (!total)
        return 0;
    if (rem > total)
        rem = total;
    return 100.0 * (double)(total - rem) / (double)total;
}

/* ", throttle 40%, limit 8 MB/s, xbzrle 1234 pages 93% hit, STALLED 12":
 * the convergence state, each part only when it applies. */
static void converge_bits(json_t *info, char *out, size_t len)
{
    json_t *x = json_object_get(info, "x-convergence");
    json_t *xb = json_object_get(info, "xbzrle-cache");
    json_t *st = json_object_get(x, "stall");
    uint64_t pct = json_object_get(info, "cpu-throttle-percentage")
                   ? u64(info, "cpu-throttle-percentage")
                   : u64(json_object_get(x, "throttle"), "percentage");
    size_t n = 0;
    out[0] = '\0';
    if (pct && n < len)
        n += (size_t)snprintf(out + n, len - n, ", throttle %" PRIu64 "%%", pct);
    if (u64(x, "dirty-limit") && n < len)
        n += (size_t)snprintf(out + n, len - n, ", limit %" PRIu64 " MB/s",
                              u64(x, "dirty-limit"));
    uint64_t hits = u64(xb, "pages"), seen = hits + u64(xb, "cache-miss");
    if (json_is_object(xb) && n < len)
        n += (size_t)(seen ? snprintf(out + n, len - n, ", xbzrle %" PRIu64
                                      " pages %.0f%% hit", hits,
                                      100.0 * (double)hits / (double)seen)
                           : snprintf(out + n, len - n, ", xbzrle on"));
    if (json_is_true(json_object_get(st, "stalled")) && n < len)
        snprintf(out + n, len - n, ", STALLED %" PRIu64,
                 u64(st, "iterations"));
}

static void draw_bar(View *v, json_t *info)
{
    json_t *ram = json_object_get(info, "ram");
    const char *status = json_string_value(json_object_get(info, "status"));
    double pct = percent_sent(ram);
    int fill = (int)(pct * BAR_WIDTH / 100.0 + 0.5);
    char bar[BAR_WIDTH + 1], a[32], b[32], c[32];
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '-';
    bar[BAR_WIDTH] = 0;
    double rate = num(ram, "mbps") * 1e6 / 8.0;
    double dirty = (double)u64(ram, "dirty-pages-rate") *
                   (double)(u64(ram, "page-size") ? u64(ram, "page-size") : 4096);
    char line[384];
    snprintf(line, sizeof(line),
             "[%s] %5.1f%% %s/s, dirty %s/s, left %s, pass %" PRIu64
             ", exp. downtime %" PRIu64 " ms, %s",
             bar, pct, human(rate, a, sizeof(a)), human(dirty, b, sizeof(b)),
             human((double)u64(ram, "remaining"), c, sizeof(c)),
             u64(ram, "dirty-sync-count"), u64(info, "expected-downtime"),
             status ? status : "");
    size_t used = strlen(line);
    converge_bits(info, line + used, sizeof(line) - used);
    uint64_t now = now_ms();
    if (v->tty) {
        /* One terminal line, or the redraw in place breaks. */
        struct winsize ws;
        if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 &&
            ws.ws_col <= sizeof(line))
            line[ws.ws_col - 1] = '\0';
        fprintf(stderr, "\r\033[K%s", line);
        v->drew = true;
    } else if (now - v->last_line_ms >= 1000) {
        fprintf(stderr, "%s\n", line);
        v->last_line_ms = now;
    }
    fflush(stderr);
}

static void print_json_progress(View *v, json_t *info)
{
    json_t *ram = json_object_get(info, "ram");
    json_t *o = json_pack("{s:s,s:I,s:s,s:f}", "type", "progress", "elapsed-ms",
                          (json_int_t)(now_ms() - v->start_ms), "status",
                          json_string_value(json_object_get(info, "status")),
                          "percent", percent_sent(ram));
    json_object_set(o, "query-migrate", info);
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

/* The summary's convergence lines: where the downtime went, XBZRLE, the
 * throttle and stalls, each only when it applies. */
static void print_converge_summary(json_t *info)
{
    json_t *x = json_object_get(info, "x-convergence");
    json_t *p = json_object_get(x, "downtime-parts");
    json_t *xb = json_object_get(info, "xbzrle-cache");
    json_t *t = json_object_get(x, "throttle");
    json_t *st = json_object_get(x, "stall");
    char a[32];
    if (json_is_object(p))
        printf("  downtime was  stop %.1f, final RAM %.1f, devices %.1f, %s "
               "%.1f, start %.1f ms (expected %" PRIu64 ", limit %" PRIu64
               " ms)\n", num(p, "stop"), num(p, "final-ram"),
               num(p, "device-state"),
               json_object_get(p, "destination-load") ? "dest. load"
                                                      : "transfer",
               num(p, json_object_get(p, "destination-load")
                          ? "destination-load" : "transfer"),
               num(p, "start"), u64(p, "expected"), u64(p, "limit"));
    if (json_is_object(xb))
        printf("  xbzrle        %" PRIu64 " pages as %s, %" PRIu64 " cache "
               "misses, %" PRIu64 " overflows\n", u64(xb, "pages"),
               human((double)u64(xb, "bytes"), a, sizeof(a)),
               u64(xb, "cache-miss"), u64(xb, "overflow"));
    if (u64(t, "peak"))
        printf("  cpu throttle  peak %" PRIu64 "%%, raised %" PRIu64
               " times\n", u64(t, "peak"), u64(t, "raises"));
    if (u64(st, "events"))
        printf("  stalls        %" PRIu64 " (escalations %" PRIu64 ")\n",
               u64(st, "events"), u64(st, "escalations"));
}

static void print_summary(View *v, json_t *info, bool json)
{
    json_t *ram = json_object_get(info, "ram");
    const char *status = json_string_value(json_object_get(info, "status"));
    const char *err = json_string_value(json_object_get(info, "error-desc"));
    if (json) {
        json_t *o = json_pack("{s:s,s:s}", "type", "result", "status",
                              status ? status : "unknown");
        json_object_set(o, "query-migrate", info);
        char *s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        return;
    }
    if (v->drew)
        fprintf(stderr, "\n");
    if (!status || strcmp(status, "completed")) {
        fprintf(stderr, "Migration %s%s%s\n", status ? status : "ended",
                err ? ": " : "", err ? err : "");
        return;
    }
    char a[32];
    uint64_t total = u64(info, "total-time"), setup = u64(info, "setup-time");
    double bw = total > setup ? (double)u64(ram, "transferred") /
                                ((double)(total - setup) / 1000.0) : 0;
    char b[32];
    printf("Migration completed\n"
           "  total time    %" PRIu64 " ms\n"
           "  downtime      %" PRIu64 " ms\n"
           "  setup time    %" PRIu64 " ms\n"
           "  transferred   %s (%" PRIu64 " pages sent, %" PRIu64
           " zero pages)\n"
           "  iterations    %" PRIu64 " (dirty syncs)\n"
           "  throughput    %s/s\n",
           total, u64(info, "downtime"), setup,
           human((double)u64(ram, "transferred"), a, sizeof(a)),
           u64(ram, "normal"), u64(ram, "duplicate"),
           u64(ram, "dirty-sync-count"), human(bw, b, sizeof(b)));
    print_converge_summary(info);
}

/* ---- driving ---- */

static json_t *qmp(FyQmpClient *c, const char *name, json_t *args)
{
    FyError *err = NULL;
    json_t *r = fy_qmp_client_execute(c, name, args, NULL, &err);
    if (!r)
        fprintf(stderr, "ferry migrate: %s: %s\n", name, fy_error_msg(err));
    fy_error_free(err);
    return r;
}

static int prepare(FyQmpClient *c, MigOptions *o)
{
    json_t *r;
    if (json_array_size(o->caps)) {
        json_t *a = json_pack("{s:O}", "capabilities", o->caps);
        r = qmp(c, "migrate-set-capabilities", a);
        json_decref(a);
        if (!r)
            return -1;
        json_decref(r);
    }
    if (json_object_size(o->params)) {
        r = qmp(c, "migrate-set-parameters", o->params);
        if (!r)
            return -1;
        json_decref(r);
    }
    json_t *a = json_pack("{s:s}", "uri", o->uri);
    r = qmp(c, "migrate", a);
    json_decref(a);
    if (!r)
        return -1;
    json_decref(r);
    return 0;
}

static bool finished(const char *status)
{
    return status && (!strcmp(status, "completed") ||
                      !strcmp(status, "failed") ||
                      !strcmp(status, "cancelled"));
}

static int watch(FyQmpClient *c, MigOptions *o)
{
    View v = { .tty = isatty(STDERR_FILENO), .start_ms = now_ms() };
    bool cancel_sent = false;
    for (;;) {
        if (interrupted && !cancel_sent) {
            json_decref(qmp(c, "migrate_cancel", NULL));
            cancel_sent = true;
        }
        json_t *info = qmp(c, "query-migrate", NULL);
        if (!info)
            return 1;
        const char *status = json_string_value(json_object_get(info, "status"));
        if (finished(status)) {
            print_summary(&v, info, o->json);
            int rc = strcmp(status, "completed") ? 1 : 0;
            json_decref(info);
            return rc;
        }
        if (o->json)
            print_json_progress(&v, info);
        else
            draw_bar(&v, info);
        json_decref(info);
        struct timespec ts = { o->interval_ms / 1000,
                               (long)(o->interval_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
}

int cmd_migrate(int argc, char **argv)
{
    MigOptions o = { .caps = json_array(), .params = json_object() };
    int rc = parse_options(argc, argv, &o);
    if (rc != 0) {
        json_decref(o.caps);
        json_decref(o.params);
        return rc > 0 ? 0 : 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = { .sa_handler = on_sigint };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    FyError *err = NULL;
    FyQmpClient *c = fy_qmp_client_connect(o.qmp, 10000, &err);
    if (!c) {
        fprintf(stderr, "ferry migrate: %s\n", fy_error_msg(err));
        fy_error_free(err);
        rc = 1;
    } else if (prepare(c, &o) < 0) {
        rc = 1;
    } else {
        rc = o.detach ? 0 : watch(c, &o);
    }
    fy_qmp_client_close(c);
    json_decref(o.caps);
    json_decref(o.params);
    return rc;
}
