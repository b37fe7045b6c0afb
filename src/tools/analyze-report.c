/*
 * analyze-report.c: what `ferry analyze` prints about one stream.
 *
 * The state (-d state, and state.json under -x) has analyze-migration.py's
 * shape: one member per section, in the order sections first appear, named
 * "idstr (section id)": RAM as {"section sizes": {block: "0x%016x"}} plus
 * "memory" with -m; devices as their decoded fields; spapr/htab and s390
 * storage attributes as "". A section that could not be decoded is a string
 * that says so, how big it is, where it is and why.
 *
 * --summary is a table for people: sections and their bytes, RAM pages by
 * kind, passes, commands, where the bytes go, and how long they would take
 * to send, split into the live phase and the stop-and-copy phase.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

static char *section_key(const AnSection *s)
{
    json_t *n = an_json_bytes_string((const uint8_t *)s->name, strlen(s->name));
    const char *name = json_string_value(n);
    size_t len = strlen(name) + 16;
    char *k = malloc(len);
    if (k)
        snprintf(k, len, "%s (%u)", name, s->id);
    json_decref(n);
    return k;
}

static json_t *undecoded_value(const AnSection *s)
{
    return json_sprintf("undecoded: %" PRIu64 " bytes at stream offset %" PRIu64
                        " (%s)", (uint64_t)s->raw_len, s->raw_off,
                        s->why ? s->why : "unknown reason");
}

static json_t *section_value(An *a, AnSection *s)
{
    switch (s->kind) {
    case SEC_RAM: {
        json_t *o = json_object();
        json_object_set_new(o, "section sizes", an_ram_sizes(a));
        return o;
    }
    case SEC_HTAB:
    case SEC_S390:
        return json_string("");
    case SEC_DEVICE:
        if (s->value)
            return json_incref(s->value);
        return json_string("undecoded: decoding stopped at the error reported");
    default:
        return undecoded_value(s);
    }
}

json_t *an_state_tree(An *a)
{
    json_t *o = json_object();
    for (size_t i = 0; i < a->nsecs; i++) {
        char *k = section_key(a->secs[i]);
        if (k)
            json_object_set_new(o, k, section_value(a, a->secs[i]));
        free(k);
    }
    return o;
}

int an_print_state(An *a, FILE *out)
{
    if (a->nsecs == 0) {
        fputs("{}\n", out);
        return 0;
    }
    int ret = 0;
    fputs("{\n", out);
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *s = a->secs[i];
        char *k = section_key(s);
        fputs("    ", out);
        an_json_print_string(out, k ? k : "?", k ? strlen(k) : 1);
        free(k);
        fputs(": ", out);
        if (s->kind == SEC_RAM && a->o.dump_memory) {
            json_t *sizes = an_ram_sizes(a);
            fputs("{\n        \"section sizes\": ", out);
            an_json_print(out, sizes, 2);
            json_decref(sizes);
            if (a->ram.norder) {
                fputs(",\n        \"memory\": {\n", out);
                if (an_ram_print_memory(a, out, 3) < 0)
                    ret = -1;
                fputs("        }\n    }", out);
            } else {
                fputs(",\n        \"memory\": {}\n    }", out);
            }
        } else {
            json_t *v = section_value(a, s);
            an_json_print(out, v, 1);
            json_decref(v);
        }
        fputs(i + 1 < a->nsecs ? ",\n" : "\n", out);
    }
    fputs("}\n", out);
    return ret;
}

/* ------------------------------------------------------------ summary */

static const char *human(uint64_t n, char *buf, size_t sz)
{
    if (n < 10 * 1024)
        snprintf(buf, sz, "%" PRIu64 " B", n);
    else if (n < 10ull << 20)
        snprintf(buf, sz, "%.1f KiB", n / 1024.0);
    else if (n < 10ull << 30)
        snprintf(buf, sz, "%.1f MiB", n / 1048576.0);
    else
        snprintf(buf, sz, "%.1f GiB", n / 1073741824.0);
    return buf;
}

static const char *duration(double s, char *buf, size_t sz)
{
    if (s < 1e-3)
        snprintf(buf, sz, "%.0f us", s * 1e6);
    else if (s < 1)
        snprintf(buf, sz, "%.1f ms", s * 1e3);
    else
        snprintf(buf, sz, "%.2f s", s);
    return buf;
}

static void records(const AnSection *s, char *buf, size_t sz)
{
    static const char *const names[AN_ST_N] = { "START", "PART", "END", "FULL" };
    size_t o = 0;
    buf[0] = '\0';
    for (int t = 0; t < AN_ST_N; t++) {
        if (!s->count[t])
            continue;
        if (s->count[t] == 1)
            o += (size_t)snprintf(buf + o, sz - o, "%s%s", o ? " " : "", names[t]);
        else
            o += (size_t)snprintf(buf + o, sz - o, "%s%s x%u", o ? " " : "", names[t],
                                  s->count[t]);
        if (o >= sz)
            break;
    }
}

static const char *kind_name(AnSecKind k)
{
    switch (k) {
    case SEC_RAM: return "ram";
    case SEC_DEVICE: return "device";
    case SEC_HTAB: return "htab";
    case SEC_S390: return "s390";
    default: return "undecoded";
    }
}

static void pct_line(FILE *out, const char *what, uint64_t n, uint64_t total)
{
    char h[32];
    fprintf(out, "  %-26s %14" PRIu64 "  %10s  %5.1f%%\n", what, n,
            human(n, h, sizeof(h)), total ? 100.0 * (double)n / (double)total : 0.0);
}

static void time_line(FILE *out, const char *what, uint64_t bytes)
{
    static const struct { const char *name; double bps; } links[] = {
        { "1 Gbit/s", 125e6 }, { "10 Gbit/s", 1.25e9 },
        { "128 MiB/s (QEMU's default limit)", 134217728.0 },
    };
    char h[32], d[32];
    fprintf(out, "  %-16s %10s:", what, human(bytes, h, sizeof(h)));
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
        fprintf(out, "%s %s at %s", i ? "," : "",
                duration((double)bytes / links[i].bps, d, sizeof(d)), links[i].name);
    fputc('\n', out);
}

void an_print_summary(An *a, FILE *out)
{
    char h[32], rec[96];
    AnRam *R = &a->ram;
    uint64_t total = a->end_off;

    fprintf(out, "stream       %s\n", a->path ? a->path : "-");
    fprintf(out, "  %" PRIu64 " bytes (%s), QEMU migration stream v%u%s%s, page size "
            "%u%s\n", total, human(total, h, sizeof(h)), a->version,
            a->machine[0] ? ", machine " : "", a->machine, R->ps,
            a->ps_guessed ? " (assumed)" : "");
    if (a->has_config) {
        fprintf(out, "  configuration: %" PRIu64 " bytes%s%s\n", a->config_bytes,
                a->cap_ignore_shared ? ", x-ignore-shared" : "",
                a->cap_mapped_ram ? ", mapped-ram" : "");
    } else {
        fprintf(out, "  no configuration section\n");
    }
    fprintf(out, "  section footers: %s\n", a->footers == 1 ? "yes"
            : a->footers == 0 ? "no" : "unknown");
    if (a->stream_vmdesc)
        fprintf(out, "  VM description: %" PRIu64 " bytes at offset %" PRIu64
                ", %zu devices\n", a->vmdesc_len, a->vmdesc_off,
                json_array_size(json_object_get(a->stream_vmdesc, "devices")));
    else
        fprintf(out, "  VM description: none in the stream%s\n",
                a->vmdesc_external ? " (using --desc)" : "");
    if (a->saw_eof)
        fprintf(out, "  EOF marker at offset %" PRIu64 "\n", a->eof_off);

    fprintf(out, "\nsections (in stream order)\n");
    fprintf(out, "  %5s  %-34s %5s %4s  %-9s %-22s %12s %12s\n", "id", "name",
            "inst", "ver", "kind", "records", "bytes", "stopped");
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *s = a->secs[i];
        records(s, rec, sizeof(rec));
        fprintf(out, "  %5u  %-34s %5u %4u  %-9s %-22s %12" PRIu64 " %12" PRIu64 "\n",
                s->id, s->label, s->instance, s->version, kind_name(s->kind), rec,
                s->bytes, s->downtime_bytes);
    }
    for (size_t i = 0; i < a->nsecs; i++)
        if (a->secs[i]->kind == SEC_OPAQUE)
            fprintf(out, "  undecoded: '%s' (id %u): %s\n", a->secs[i]->label,
                    a->secs[i]->id, a->secs[i]->why ? a->secs[i]->why : "?");

    if (R->nblocks || R->sections) {
        fprintf(out, "\nRAM: %d blocks, %" PRIu64 " bytes (%s)\n", R->nblocks,
                R->total, human(R->total, h, sizeof(h)));
        fprintf(out, "  %-32s %14s %10s %10s %10s %10s\n", "block", "size", "zero",
                "normal", "xbzrle", "other");
        for (int i = 0; i < R->nblocks; i++) {
            AnBlock *b = R->blocks[i];
            fprintf(out, "  %-32s %#14" PRIx64 " %10" PRIu64 " %10" PRIu64 " %10"
                    PRIu64 " %10" PRIu64 "\n", b->label, b->length, b->zero,
                    b->normal, b->xbzrle, b->compressed + b->mapped);
        }
        fprintf(out, "  pages: %" PRIu64 " zero, %" PRIu64 " normal (%s), %" PRIu64
                " xbzrle (%" PRIu64 " encoded bytes for %s of pages)", R->zero,
                R->normal, human(R->normal * R->ps, h, sizeof(h)), R->xbzrle,
                R->xbzrle_bytes, human(R->xbzrle * R->ps, rec, sizeof(rec)));
        if (R->compressed)
            fprintf(out, ", %" PRIu64 " zlib-compressed (%" PRIu64 " bytes)",
                    R->compressed, R->compressed_bytes);
        if (R->mapped)
            fprintf(out, ", %" PRIu64 " mapped-ram", R->mapped);
        fputc('\n', out);
        fprintf(out, "  iterations: %" PRIu64 " RAM sections, %" PRIu64 " pass%s "
                "(%" PRIu64 " pages sent again), %" PRIu64 " multifd flushes\n",
                R->sections, R->passes, R->passes == 1 ? "" : "es", R->resent,
                R->flushes);
        if (R->zero_nonzero_fill)
            fprintf(out, "  zero pages with a non-zero fill byte: %" PRIu64 "\n",
                    R->zero_nonzero_fill);
    }

    fprintf(out, "\ncommands\n");
    bool any = false;
    for (unsigned c = 0; c < AN_CMD_MAX; c++) {
        if (!a->cmd_count[c])
            continue;
        fprintf(out, "  %-22s %" PRIu64 "\n", an_cmd_name(c), a->cmd_count[c]);
        any = true;
    }
    if (!any)
        fprintf(out, "  none\n");
    if (a->discard_ranges)
        fprintf(out, "  postcopy discards: %" PRIu64 " ranges, %s of RAM\n",
                a->discard_ranges, human(a->discard_bytes, h, sizeof(h)));

    /* where the bytes go */
    uint64_t ram_bytes = 0, dev_bytes = 0, other_bytes = 0;
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *s = a->secs[i];
        if (s->kind == SEC_RAM)
            ram_bytes += s->bytes;
        else if (s->kind == SEC_DEVICE || s->kind == SEC_OPAQUE)
            dev_bytes += s->bytes;
        else
            other_bytes += s->bytes;
    }
    uint64_t desc_bytes = a->vmdesc_len ? a->vmdesc_len + 5 : 0;
    uint64_t ram_framing = ram_bytes > R->data_bytes + R->xbzrle_bytes +
                                       R->compressed_bytes + R->header_bytes
                               ? ram_bytes - R->data_bytes - R->xbzrle_bytes -
                                     R->compressed_bytes - R->header_bytes
                               : 0;
    fprintf(out, "\nbytes\n");
    pct_line(out, "total", total, total);
    pct_line(out, "RAM page data", R->data_bytes, total);
    if (R->xbzrle_bytes)
        pct_line(out, "RAM XBZRLE deltas", R->xbzrle_bytes, total);
    if (R->compressed_bytes)
        pct_line(out, "RAM compressed pages", R->compressed_bytes, total);
    pct_line(out, "RAM record headers", R->header_bytes, total);
    pct_line(out, "RAM section framing", ram_framing, total);
    pct_line(out, "device sections", dev_bytes, total);
    if (other_bytes)
        pct_line(out, "other sections", other_bytes, total);
    pct_line(out, "configuration", a->config_bytes, total);
    if (a->cmd_bytes)
        pct_line(out, "commands", a->cmd_bytes, total);
    pct_line(out, "VM description", desc_bytes, total);
    if (a->trailing)
        pct_line(out, "after the end", a->trailing, total);

    /* where the time would go */
    bool stopped_once = a->in_downtime || a->postcopy;
    uint64_t stop_at = stopped_once ? a->downtime_off : (a->saw_eof ? a->eof_off : total);
    uint64_t stop_end = a->postcopy ? a->postcopy_off : total - a->trailing;
    fprintf(out, "\nwhere the time would go (sending this stream)\n");
    time_line(out, "live phase", stop_at);
    time_line(out, "stop-and-copy", stop_end - stop_at);
    if (a->postcopy) {
        time_line(out, "postcopy phase", total - a->trailing - stop_end);
        fprintf(out, "  the stop-and-copy phase (offsets %" PRIu64 "-%" PRIu64 ": the "
                "discards and the package with the devices) is the guest's "
                "downtime; in the postcopy phase it runs on the destination and "
                "waits only for the pages it touches\n", stop_at, stop_end);
    } else {
        fprintf(out, "  the stop-and-copy phase (from offset %" PRIu64 ": the final "
                "RAM pass, the devices, EOF and the description) is the guest's "
                "downtime\n", stop_at);
    }
    /* the biggest contributors to downtime */
    AnSection *top[5] = { NULL };
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *s = a->secs[i];
        if (!s->downtime_bytes)
            continue;
        for (int k = 0; k < 5; k++) {
            if (!top[k] || s->downtime_bytes > top[k]->downtime_bytes) {
                memmove(top + k + 1, top + k, (size_t)(4 - k) * sizeof(top[0]));
                top[k] = s;
                break;
            }
        }
    }
    if (top[0]) {
        fprintf(out, "  largest while stopped:");
        for (int k = 0; k < 5 && top[k]; k++)
            fprintf(out, "%s %s %s", k ? "," : "", top[k]->label,
                    human(top[k]->downtime_bytes, h, sizeof(h)));
        if (desc_bytes && !a->postcopy)
            fprintf(out, "; and the VM description, %s", human(desc_bytes, h, sizeof(h)));
        fputc('\n', out);
    }
}

void an_print_check_ok(An *a, FILE *out)
{
    size_t devices = 0, undecoded = 0;
    for (size_t i = 0; i < a->nsecs; i++) {
        if (a->secs[i]->kind == SEC_DEVICE)
            devices++;
        if (a->secs[i]->kind == SEC_OPAQUE)
            undecoded++;
    }
    char more[96] = "";
    if (a->ram.compressed)
        snprintf(more, sizeof(more), ", %" PRIu64 " zlib-compressed", a->ram.compressed);
    if (a->ram.mapped)
        snprintf(more + strlen(more), sizeof(more) - strlen(more), ", %" PRIu64
                 " mapped-ram", a->ram.mapped);
    fprintf(out, "%s: OK: QEMU migration stream v%u, %" PRIu64 " bytes, %zu "
            "sections (%zu devices decoded field by field), %" PRIu64 " RAM pages "
            "(%" PRIu64 " zero, %" PRIu64 " normal, %" PRIu64 " xbzrle%s), %s\n",
            a->path ? a->path : "-", a->version, a->end_off, a->nsecs, devices,
            a->ram.zero + a->ram.normal + a->ram.xbzrle + a->ram.compressed +
                a->ram.mapped,
            a->ram.zero, a->ram.normal, a->ram.xbzrle, more,
            a->stream_vmdesc ? "VM description valid"
            : a->vmdesc_external ? "no VM description (decoded with --desc)"
                                 : "no VM description");
    if (undecoded) {
        fprintf(out, "%s: %zu sections could not be checked field by field:\n",
                a->path ? a->path : "-", undecoded);
        for (size_t i = 0; i < a->nsecs; i++)
            if (a->secs[i]->kind == SEC_OPAQUE)
                fprintf(out, "  '%s' (id %u): %s\n", a->secs[i]->label, a->secs[i]->id,
                        a->secs[i]->why ? a->secs[i]->why : "?");
    }
}
