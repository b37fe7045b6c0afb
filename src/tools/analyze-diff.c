/*
 * analyze-diff.c: compare the device state of two streams, field by field.
 *
 * The question it answers: two "identical" hosts refuse each other's
 * migrations; what differs? Sections are matched by (idstr, instance), not
 * by section id (ids depend on registration order, which differs when the
 * device sets do). Then, in order:
 *   configuration   machine type, capabilities
 *   RAM             page size, the block list and sizes
 *   each device     version, then every field and subsection
 * One line per difference, "path: A vs B", e.g.
 *   cpu[0].env.regs[3]: 0x0000000000000010 vs 0x0000000000000011
 *   0000:00:02.0/e1000[0].mac_reg: bytes differ at 12 (0x10 vs 0x11)
 *   e1000[0]: only in A
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

#define MAX_BYTE_DIFFS 8

typedef struct {
    FILE *out;
    size_t n;
} Diff;

static void line(Diff *d, const char *path, const char *fmt, ...) FY_PRINTF(3, 4);
static void line(Diff *d, const char *path, const char *fmt, ...)
{
    va_list ap;
    fprintf(d->out, "%s: ", path);
    va_start(ap, fmt);
    vfprintf(d->out, fmt, ap);
    va_end(ap);
    fputc('\n', d->out);
    d->n++;
}

/* A short text for a value, for "A vs B". */
static char *brief(json_t *v)
{
    char *s;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return strdup("{struct}");
    case JSON_ARRAY:
        if (asprintf(&s, "[%zu elements]", json_array_size(v)) < 0)
            return NULL;
        return s;
    case JSON_STRING: {
        const char *t = json_string_value(v);
        size_t n = strlen(t);
        if (n <= 100)
            return strdup(t);
        if (asprintf(&s, "%.90s... (%zu chars)", t, n) < 0)
            return NULL;
        return s;
    }
    default:
        return json_dumps(v, JSON_ENCODE_ANY);
    }
}

/* "xx xx xx" strings: the generic byte dump. */
static bool is_hex_bytes(const char *s, size_t n)
{
    if (n < 2 || (n + 1) % 3)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        if (i % 3 == 2 ? c != ' ' : !hex)
            return false;
    }
    return true;
}

static void diff_bytes(Diff *d, const char *path, const char *a, const char *b,
                       size_t n)
{
    char buf[512];
    size_t o = 0, count = 0;
    for (size_t i = 0; i + 1 < n; i += 3) {
        if (a[i] == b[i] && a[i + 1] == b[i + 1])
            continue;
        if (count < MAX_BYTE_DIFFS)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%zu (0x%.2s vs 0x%.2s)",
                                  count ? ", " : "", i / 3, a + i, b + i);
        count++;
    }
    if (count > MAX_BYTE_DIFFS)
        snprintf(buf + o, sizeof(buf) - o, ", and %zu more", count - MAX_BYTE_DIFFS);
    line(d, path, "%zu byte%s differ%s at %s", count, count == 1 ? "" : "s",
         count == 1 ? "s" : "", buf);
}

static void diff_value(Diff *d, const char *path, json_t *a, json_t *b);

static void diff_object(Diff *d, const char *path, json_t *a, json_t *b)
{
    const char *k;
    json_t *va;
    char sub[1024];
    json_object_foreach(a, k, va) {
        snprintf(sub, sizeof(sub), "%s.%s", path, k);
        json_t *vb = json_object_get(b, k);
        if (!vb)
            line(d, sub, "only in A");
        else
            diff_value(d, sub, va, vb);
    }
    json_object_foreach(b, k, va) {
        if (!json_object_get(a, k)) {
            snprintf(sub, sizeof(sub), "%s.%s", path, k);
            line(d, sub, "only in B");
        }
    }
}

static void diff_value(Diff *d, const char *path, json_t *a, json_t *b)
{
    if (json_is_object(a) && json_is_object(b)) {
        diff_object(d, path, a, b);
        return;
    }
    if (json_is_array(a) && json_is_array(b)) {
        size_t na = json_array_size(a), nb = json_array_size(b);
        char sub[1024];
        for (size_t i = 0; i < na && i < nb; i++) {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            diff_value(d, sub, json_array_get(a, i), json_array_get(b, i));
        }
        if (na != nb)
            line(d, path, "%zu elements vs %zu", na, nb);
        return;
    }
    if (json_equal(a, b))
        return;
    if (json_is_string(a) && json_is_string(b)) {
        const char *sa = json_string_value(a), *sb = json_string_value(b);
        size_t la = strlen(sa), lb = strlen(sb);
        if (la == lb && la > 2 && is_hex_bytes(sa, la) && is_hex_bytes(sb, lb)) {
            diff_bytes(d, path, sa, sb, la);
            return;
        }
    }
    char *ba = brief(a), *bb = brief(b);
    line(d, path, "%s vs %s", ba ? ba : "?", bb ? bb : "?");
    free(ba);
    free(bb);
}

/* Sections of one stream by "instance:name" -> position + 1 (first wins),
 * so that matching two streams of many sections stays linear. */
static json_t *section_index(An *x)
{
    json_t *idx = json_object();
    char key[300];
    for (size_t i = 0; idx && i < x->nsecs; i++) {
        snprintf(key, sizeof(key), "%u:%s", x->secs[i]->instance, x->secs[i]->name);
        if (!json_object_get(idx, key))
            json_object_set_new_nocheck(idx, key, json_integer((json_int_t)i + 1));
    }
    return idx;
}

static AnSection *find(An *x, json_t *idx, const AnSection *s)
{
    char key[300];
    snprintf(key, sizeof(key), "%u:%s", s->instance, s->name);
    json_int_t i = json_integer_value(json_object_get(idx, key));
    return i > 0 ? x->secs[i - 1] : NULL;
}

static void diff_config(Diff *d, An *a, An *b)
{
    if (strcmp(a->machine, b->machine))
        line(d, "configuration.machine", "%s vs %s", a->machine[0] ? a->machine : "(none)",
             b->machine[0] ? b->machine : "(none)");
    if (a->config && b->config) {
        /* the rest (capabilities, page bits, uuid) field by field */
        json_t *ca = json_deep_copy(a->config), *cb = json_deep_copy(b->config);
        json_object_del(ca, "name");
        json_object_del(cb, "name");
        json_object_del(ca, "len");
        json_object_del(cb, "len");
        diff_value(d, "configuration", ca, cb);
        json_decref(ca);
        json_decref(cb);
    } else if (a->has_config != b->has_config) {
        line(d, "configuration", "%s vs %s", a->has_config ? "present" : "absent",
             b->has_config ? "present" : "absent");
    }
}

static void diff_ram(Diff *d, An *a, An *b)
{
    AnRam *ra = &a->ram, *rb = &b->ram;
    if (ra->ps != rb->ps)
        line(d, "ram.page_size", "%u vs %u", ra->ps, rb->ps);
    char path[600];
    for (int i = 0; i < ra->nblocks; i++) {
        AnBlock *x = ra->blocks[i], *y = NULL;
        for (int j = 0; j < rb->nblocks; j++)
            if (!strcmp(rb->blocks[j]->name, x->name))
                y = rb->blocks[j];
        snprintf(path, sizeof(path), "ram.block '%s'", x->label);
        if (!y)
            line(d, path, "only in A (0x%" PRIx64 " bytes)", x->length);
        else if (x->length != y->length)
            line(d, path, "0x%" PRIx64 " vs 0x%" PRIx64 " bytes", x->length, y->length);
    }
    for (int j = 0; j < rb->nblocks; j++) {
        bool found = false;
        for (int i = 0; i < ra->nblocks; i++)
            found |= !strcmp(ra->blocks[i]->name, rb->blocks[j]->name);
        if (!found) {
            snprintf(path, sizeof(path), "ram.block '%s'", rb->blocks[j]->label);
            line(d, path, "only in B (0x%" PRIx64 " bytes)", rb->blocks[j]->length);
        }
    }
}

static void diff_section(Diff *d, AnSection *x, AnSection *y)
{
    char path[600];
    snprintf(path, sizeof(path), "%s[%u]", x->label, x->instance);
    if (x->version != y->version)
        line(d, path, "version %u vs %u", x->version, y->version);
    bool dx = x->kind == SEC_DEVICE && x->value, dy = y->kind == SEC_DEVICE && y->value;
    if (dx && dy) {
        diff_value(d, path, x->value, y->value);
    } else if (dx != dy) {
        line(d, path, "%s vs %s", dx ? "decoded" : "not decoded",
             dy ? "decoded" : "not decoded");
    }
}

size_t an_diff(An *a, An *b, FILE *out)
{
    Diff d = { out, 0 };
    json_t *ia = section_index(a), *ib = section_index(b);
    diff_config(&d, a, b);
    diff_ram(&d, a, b);
    char path[600];
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *x = a->secs[i];
        if (x->kind == SEC_RAM)
            continue;
        AnSection *y = find(b, ib, x);
        if (!y) {
            snprintf(path, sizeof(path), "%s[%u]", x->label, x->instance);
            line(&d, path, "only in A");
            continue;
        }
        diff_section(&d, x, y);
    }
    for (size_t i = 0; i < b->nsecs; i++) {
        AnSection *y = b->secs[i];
        if (y->kind != SEC_RAM && !find(a, ia, y)) {
            snprintf(path, sizeof(path), "%s[%u]", y->label, y->instance);
            line(&d, path, "only in B");
        }
    }
    json_decref(ia);
    json_decref(ib);
    return d.n;
}
