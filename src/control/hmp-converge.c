/*
 * hmp-converge.c: HMP's convergence commands and lines, in QEMU's words
 * where QEMU has them (calc_dirty_rate, info dirty_rate, set/cancel_vcpu_
 * dirty_limit, info vcpu_dirty_limit, the dirty-limit lines of info
 * migrate) and ferry's own lines for what QEMU does not report (the
 * migration's dirty rate, the throttle history, stall state, the downtime
 * estimate and its measured parts).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "control/converge-cmds.h"
#include "ferry/dirtyrate.h"

static int parse_int(const char *s, const char *what, int64_t *out,
                     FyError **errp)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || end == s || *end) {
        fy_error_setg(errp, "'%s' is not a valid %s", s, what);
        return -1;
    }
    *out = v;
    return 0;
}

json_t *fy_hmp_calc_dirty_rate_args(int argc, char **argv, const char *flags,
                                    FyError **errp)
{
    bool ring = strchr(flags, 'r') != NULL, bitmap = strchr(flags, 'b') != NULL;
    int64_t sec, pages = 0;
    if (ring && bitmap) {
        fy_error_setg(errp, "Either dirty ring or dirty bitmap can be "
                      "specified!");
        return NULL;
    }
    if (parse_int(argv[0], "calc time", &sec, errp) < 0 ||
        (argc > 1 && parse_int(argv[1], "sample page count", &pages,
                               errp) < 0))
        return NULL;
    json_t *a = json_pack("{s:I,s:s}", "calc-time", (json_int_t)sec, "mode",
                          ring ? "dirty-ring" : bitmap ? "dirty-bitmap"
                                                       : "page-sampling");
    if (a && argc > 1)
        json_object_set_new(a, "sample-pages", json_integer(pages));
    return a;
}

json_t *fy_hmp_vcpu_dirty_limit_args(int argc, char **argv, bool with_rate,
                                     FyError **errp)
{
    int64_t rate = 0, cpu = 0;
    int i = 0;
    if (with_rate && parse_int(argv[i++], "dirty rate", &rate, errp) < 0)
        return NULL;
    bool has_cpu = i < argc;
    if (has_cpu && parse_int(argv[i], "cpu index", &cpu, errp) < 0)
        return NULL;
    json_t *a = json_object();
    if (a && with_rate)
        json_object_set_new(a, "dirty-rate", json_integer(rate));
    if (a && has_cpu)
        json_object_set_new(a, "cpu-index", json_integer(cpu));
    return a;
}

void fy_hmp_format_calc_dirty_rate(FyStrBuf *b, json_t *args)
{
    fy_sb_printf(b, "Starting dirty rate measurement with calc time %"
                 JSON_INTEGER_FORMAT " seconds\n",
                 json_integer_value(json_object_get(args, "calc-time")));
    fy_sb_puts(b, "[Please use 'info dirty_rate' to check results]\n");
}

void fy_hmp_format_dirty_rate(FyStrBuf *b, json_t *info)
{
    char *s = fy_dirtyrate_format_hmp(info);
    if (!s) {
        b->oom = true;
        return;
    }
    fy_sb_puts(b, s);
    free(s);
}

void fy_hmp_format_vcpu_dirty_limit(FyStrBuf *b, json_t *list)
{
    size_t i;
    json_t *v;
    if (!json_array_size(list)) {
        fy_sb_puts(b, "Dirty page limit not enabled!\n");
        return;
    }
    json_array_foreach(list, i, v) {
        fy_sb_printf(b, "vcpu[%" JSON_INTEGER_FORMAT "], limit rate %"
                     JSON_INTEGER_FORMAT " (MB/s), current rate %"
                     JSON_INTEGER_FORMAT " (MB/s)\n",
                     json_integer_value(json_object_get(v, "cpu-index")),
                     json_integer_value(json_object_get(v, "limit-rate")),
                     json_integer_value(json_object_get(v, "current-rate")));
    }
}

/* ---- info migrate ---- */

static uint64_t u64(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (json_is_integer(v))
        return (uint64_t)json_integer_value(v);
    return json_is_real(v) ? (uint64_t)json_real_value(v) : 0;
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static void throttle_lines(FyStrBuf *b, json_t *x)
{
    json_t *t = json_object_get(x, "throttle");
    if (u64(t, "peak"))
        fy_sb_printf(b, "cpu throttle: %" PRIu64 "%% now, peak %" PRIu64
                     "%%, raised %" PRIu64 " times\n", u64(t, "percentage"),
                     u64(t, "peak"), u64(t, "raises"));
    if (u64(x, "dirty-limit"))
        fy_sb_printf(b, "vcpu dirty limit: %" PRIu64 " MB/s (dirty-limit)\n",
                     u64(x, "dirty-limit"));
}

static void stall_lines(FyStrBuf *b, json_t *x)
{
    json_t *s = json_object_get(x, "stall");
    if (json_is_true(json_object_get(s, "stalled")))
        fy_sb_printf(b, "stall: STALLED, no progress for %" PRIu64 " dirty "
                     "syncs (events %" PRIu64 ", escalations %" PRIu64
                     ", last action: %s)\n", u64(s, "iterations"),
                     u64(s, "events"), u64(s, "escalations"),
                     json_string_value(json_object_get(s, "last-action")));
    else
        fy_sb_printf(b, "stall: no (events %" PRIu64 ", escalations %" PRIu64
                     ")\n", u64(s, "events"), u64(s, "escalations"));
}

static void downtime_lines(FyStrBuf *b, json_t *x)
{
    json_t *d = json_object_get(x, "downtime");
    json_t *p = json_object_get(x, "downtime-parts");
    if (json_is_object(d))
        fy_sb_printf(b, "downtime estimate: %" PRIu64 " ms for a limit of %"
                     PRIu64 " ms (%s; bandwidth %" PRIu64 " kbytes/s, device "
                     "state %" PRIu64 " bytes, fixed costs %0.1f ms)\n",
                     u64(d, "expected"), u64(d, "limit"),
                     json_is_true(json_object_get(d, "within-limit"))
                         ? "within" : "not yet within",
                     u64(d, "bandwidth") >> 10, u64(d, "device-bytes"),
                     num(d, "fixed-ms"));
    if (!json_is_object(p))
        return;
    fy_sb_printf(b, "downtime parts: stop %0.1f ms, ", num(p, "stop"));
    if (json_object_get(p, "paused"))
        fy_sb_printf(b, "paused %0.1f ms, ", num(p, "paused"));
    fy_sb_printf(b, "final ram %0.1f ms, device state %0.1f ms, ",
                 num(p, "final-ram"), num(p, "device-state"));
    if (json_object_get(p, "destination-load"))
        fy_sb_printf(b, "destination load %0.1f ms, start %0.1f ms",
                     num(p, "destination-load"), num(p, "start"));
    else
        fy_sb_printf(b, "transfer %0.1f ms", num(p, "transfer"));
    fy_sb_printf(b, " (total %0.1f ms, expected %" PRIu64 " ms)\n",
                 num(p, "total"), u64(p, "expected"));
}

void fy_hmp_format_convergence(FyStrBuf *b, json_t *info)
{
    if (json_object_get(info, "dirty-limit-throttle-time-per-round"))
        fy_sb_printf(b, "dirty-limit throttle time: %" PRIu64 " us\n",
                     u64(info, "dirty-limit-throttle-time-per-round"));
    if (json_object_get(info, "dirty-limit-ring-full-time"))
        fy_sb_printf(b, "dirty-limit ring full time: %" PRIu64 " us\n",
                     u64(info, "dirty-limit-ring-full-time"));
    json_t *x = json_object_get(info, "x-convergence");
    if (!json_is_object(x))
        return;
    fy_sb_printf(b, "dirty rate: %0.1f MB/s\n",
                 (double)u64(x, "dirty-rate") / (1 << 20));
    throttle_lines(b, x);
    stall_lines(b, x);
    downtime_lines(b, x);
}
