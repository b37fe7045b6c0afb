/*
 * hmp-info.c: HMP's `info` output, formatted from the QMP return values in
 * the shape QEMU prints (hmp_info_migrate and friends): same lines, same
 * units (kbytes are bytes >> 10), same conditions for optional lines.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/control-int.h"
#include "control/converge-cmds.h"

void fy_sb_printf(FyStrBuf *b, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    fy_sb_puts(b, s);
    free(s);
}

void fy_sb_puts(FyStrBuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static uint64_t u64(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return (uint64_t)json_integer_value(v);
    if (json_is_real(v))
        return (uint64_t)json_real_value(v);
    return 0;
}

static void globals(FyStrBuf *b, FySaveState *ss)
{
    FySaveVMConfig *cfg = ss ? fy_savevm_config(ss) : NULL;
    bool conf = cfg ? cfg->send_configuration : true;
    bool footer = cfg ? cfg->send_section_footer : true;
    fy_sb_printf(b, "globals:\n"
                 "store-global-state: on\n"
                 "only-migratable: off\n"
                 "send-configuration: %s\n"
                 "send-section-footer: %s\n"
                 "decompress-error-check: on\n"
                 "clear-bitmap-shift: 18\n",
                 conf ? "on" : "off", footer ? "on" : "off");
}

static void status_lines(FyStrBuf *b, json_t *info)
{
    const char *status = json_string_value(json_object_get(info, "status"));
    const char *err = json_string_value(json_object_get(info, "error-desc"));
    if (!status)
        return;
    fy_sb_printf(b, "Migration status: %s", status);
    if (!strcmp(status, "failed") && err)
        fy_sb_printf(b, " (%s)\n", err);
    else
        fy_sb_puts(b, "\n");
    fy_sb_printf(b, "total time: %" PRIu64 " ms\n", u64(info, "total-time"));
    if (json_object_get(info, "expected-downtime"))
        fy_sb_printf(b, "expected downtime: %" PRIu64 " ms\n",
                     u64(info, "expected-downtime"));
    if (json_object_get(info, "downtime"))
        fy_sb_printf(b, "downtime: %" PRIu64 " ms\n", u64(info, "downtime"));
    if (json_object_get(info, "setup-time"))
        fy_sb_printf(b, "setup: %" PRIu64 " ms\n", u64(info, "setup-time"));
}

static void optional_kbytes(FyStrBuf *b, json_t *ram, const char *key,
                            const char *label)
{
    uint64_t v = u64(ram, key);
    if (v)
        fy_sb_printf(b, "%s: %" PRIu64 " kbytes\n", label, v >> 10);
}

static void ram_lines(FyStrBuf *b, json_t *ram)
{
    json_t *mbps = json_object_get(ram, "mbps");
    fy_sb_printf(b, "transferred ram: %" PRIu64 " kbytes\n",
                 u64(ram, "transferred") >> 10);
    fy_sb_printf(b, "throughput: %0.2f mbps\n",
                 json_is_number(mbps) ? json_number_value(mbps) : 0.0);
    fy_sb_printf(b, "remaining ram: %" PRIu64 " kbytes\n",
                 u64(ram, "remaining") >> 10);
    fy_sb_printf(b, "total ram: %" PRIu64 " kbytes\n", u64(ram, "total") >> 10);
    fy_sb_printf(b, "duplicate: %" PRIu64 " pages\n", u64(ram, "duplicate"));
    fy_sb_printf(b, "normal: %" PRIu64 " pages\n", u64(ram, "normal"));
    fy_sb_printf(b, "normal bytes: %" PRIu64 " kbytes\n",
                 u64(ram, "normal-bytes") >> 10);
    fy_sb_printf(b, "dirty sync count: %" PRIu64 "\n",
                 u64(ram, "dirty-sync-count"));
    fy_sb_printf(b, "page size: %" PRIu64 " kbytes\n",
                 u64(ram, "page-size") >> 10);
    fy_sb_printf(b, "multifd bytes: %" PRIu64 " kbytes\n",
                 u64(ram, "multifd-bytes") >> 10);
    fy_sb_printf(b, "pages-per-second: %" PRIu64 "\n",
                 u64(ram, "pages-per-second"));
    if (u64(ram, "dirty-pages-rate"))
        fy_sb_printf(b, "dirty pages rate: %" PRIu64 " pages\n",
                     u64(ram, "dirty-pages-rate"));
    if (u64(ram, "postcopy-requests"))
        fy_sb_printf(b, "postcopy request count: %" PRIu64 "\n",
                     u64(ram, "postcopy-requests"));
    optional_kbytes(b, ram, "precopy-bytes", "precopy ram");
    optional_kbytes(b, ram, "downtime-bytes", "downtime ram");
    optional_kbytes(b, ram, "postcopy-bytes", "postcopy ram");
}

static void xbzrle_lines(FyStrBuf *b, json_t *x)
{
    json_t *miss_rate = json_object_get(x, "cache-miss-rate");
    json_t *enc_rate = json_object_get(x, "encoding-rate");
    fy_sb_printf(b, "cache size: %" PRIu64 " bytes\n", u64(x, "cache-size"));
    fy_sb_printf(b, "xbzrle transferred: %" PRIu64 " kbytes\n",
                 u64(x, "bytes") >> 10);
    fy_sb_printf(b, "xbzrle pages: %" PRIu64 " pages\n", u64(x, "pages"));
    fy_sb_printf(b, "xbzrle cache miss: %" PRIu64 " pages\n",
                 u64(x, "cache-miss"));
    fy_sb_printf(b, "xbzrle cache miss rate: %0.2f\n",
                 json_is_number(miss_rate) ? json_number_value(miss_rate) : 0);
    fy_sb_printf(b, "xbzrle encoding rate: %0.2f\n",
                 json_is_number(enc_rate) ? json_number_value(enc_rate) : 0);
    fy_sb_printf(b, "xbzrle overflow: %" PRIu64 "\n", u64(x, "overflow"));
}

static void socket_lines(FyStrBuf *b, json_t *list)
{
    size_t i;
    json_t *a;
    fy_sb_puts(b, "socket address: [\n");
    json_array_foreach(list, i, a) {
        const char *type = json_string_value(json_object_get(a, "type"));
        if (type && !strcmp(type, "unix"))
            fy_sb_printf(b, "\tunix:%s\n",
                         json_string_value(json_object_get(a, "path")));
        else
            fy_sb_printf(b, "\ttcp:%s:%s\n",
                         json_string_value(json_object_get(a, "host")),
                         json_string_value(json_object_get(a, "port")));
    }
    fy_sb_puts(b, "]\n");
}

/* QEMU's blocktime lines (destination, postcopy-blocktime on). */
static void postcopy_lines(FyStrBuf *b, json_t *info)
{
    json_t *bt = json_object_get(info, "postcopy-blocktime");
    json_t *vb = json_object_get(info, "postcopy-vcpu-blocktime");
    size_t i;
    json_t *v;
    if (json_is_integer(bt))
        fy_sb_printf(b, "Postcopy Blocktime (ms): %" PRIu64 "\n",
                     (uint64_t)json_integer_value(bt));
    if (!json_is_array(vb))
        return;
    fy_sb_puts(b, "Postcopy vCPU Blocktime (ms): [");
    json_array_foreach(vb, i, v)
        fy_sb_printf(b, "%s%" PRIu64, i ? ", " : "", (uint64_t)json_integer_value(v));
    fy_sb_puts(b, "]\n");
}

void fy_hmp_format_migrate(FyStrBuf *b, json_t *info, FySaveState *ss)
{
    globals(b, ss);
    status_lines(b, info);
    json_t *ram = json_object_get(info, "ram");
    if (json_is_object(ram))
        ram_lines(b, ram);
    json_t *x = json_object_get(info, "xbzrle-cache");
    if (json_is_object(x))
        xbzrle_lines(b, x);
    json_t *cpu = json_object_get(info, "cpu-throttle-percentage");
    if (cpu)
        fy_sb_printf(b, "cpu throttle percentage: %" PRIu64 "\n",
                     u64(info, "cpu-throttle-percentage"));
    fy_hmp_format_convergence(b, info);
    json_t *sa = json_object_get(info, "socket-address");
    if (json_is_array(sa))
        socket_lines(b, sa);
    postcopy_lines(b, info);
}

void fy_hmp_format_capabilities(FyStrBuf *b, json_t *caps)
{
    size_t i;
    json_t *c;
    json_array_foreach(caps, i, c) {
        fy_sb_printf(b, "%s: %s\n",
                     json_string_value(json_object_get(c, "capability")),
                     json_is_true(json_object_get(c, "state")) ? "on" : "off");
    }
}

/* Units QEMU prints after a parameter's value. */
static const char *param_unit(const char *name)
{
    static const struct { const char *name, *unit; } units[] = {
        { "announce-initial", " ms" }, { "announce-max", " ms" },
        { "announce-step", " ms" }, { "max-bandwidth", " bytes/second" },
        { "avail-switchover-bandwidth", " bytes/second" },
        { "downtime-limit", " ms" }, { "x-checkpoint-delay", " ms" },
        { "xbzrle-cache-size", " bytes" },
        { "x-vcpu-dirty-limit-period", " ms" },
        { "vcpu-dirty-limit", " MB/s" },
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (!strcmp(units[i].name, name))
            return units[i].unit;
    }
    return "";
}

void fy_hmp_format_parameters(FyStrBuf *b, json_t *params)
{
    const char *key;
    json_t *v;
    json_object_foreach(params, key, v) {
        if (json_is_integer(v))
            fy_sb_printf(b, "%s: %" PRIu64 "%s\n", key,
                         (uint64_t)json_integer_value(v), param_unit(key));
        else if (json_is_boolean(v))
            fy_sb_printf(b, "%s: %s\n", key, json_is_true(v) ? "on" : "off");
        else if (json_is_string(v) && !strncmp(key, "tls-", 4))
            fy_sb_printf(b, "%s: '%s'\n", key, json_string_value(v));
        else if (json_is_string(v))
            fy_sb_printf(b, "%s: %s\n", key, json_string_value(v));
    }
}

void fy_hmp_format_status(FyStrBuf *b, json_t *st)
{
    const char *status = json_string_value(json_object_get(st, "status"));
    if (!status)
        status = "unknown";
    if (json_is_true(json_object_get(st, "running")))
        fy_sb_puts(b, "VM status: running\n");
    else if (!strcmp(status, "paused"))
        fy_sb_puts(b, "VM status: paused\n");
    else
        fy_sb_printf(b, "VM status: paused (%s)\n", status);
}
