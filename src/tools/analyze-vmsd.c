/*
 * analyze-vmsd.c: decode a device section with the VM description.
 *
 * A device section is not length-prefixed; what it holds is known only from
 * its field list, which the source wrote into the description after EOF:
 * for each field its name, type and the bytes each element took ("size"),
 * arrays folded into "array_len" (or listed per "index"), nested structs
 * under "struct", and the subsections that were sent under "subsections".
 *
 * Values come out in analyze-migration.py's shape:
 *   int types      "0x%0<2*size>x", negatives "0x... (-n)"
 *   bool           true/false
 *   struct         an object of its fields and subsections
 *   capability     the name
 *   nullptr        "nullptr"
 *   anything else  the bytes as "xx xx xx"
 * A name seen twice (array elements, segments split by NULL pointers)
 * becomes a list, first value first. A subsection is a member named as the
 * stream names it.
 *
 * Hostile descriptions: every count and size is checked, recursion is
 * bounded, and a budget of values stops descriptions that would make
 * millions of entries out of a few bytes.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

#define MAX_DEPTH 64
#define MAX_ARRAY_LEN (1 << 21)

typedef enum { R_GENERIC, R_INT, R_UINT, R_BOOL, R_STRUCT, R_CAP, R_NULL } Reader;

/* The reader for each type name, as analyze-migration.py picks them (its
 * "uint8 equal" and "uint16 equal" are read as signed: kept for the same
 * output). */
static Reader reader_for(const char *type)
{
    static const struct { const char *name; Reader r; } tab[] = {
        { "bool", R_BOOL },
        { "int8", R_INT }, { "int16", R_INT }, { "int32", R_INT },
        { "int32 equal", R_INT }, { "int32 le", R_INT }, { "int64", R_INT },
        { "int64 equal", R_INT }, { "uint8 equal", R_INT },
        { "uint16 equal", R_INT },
        { "uint8", R_UINT }, { "uint16", R_UINT }, { "uint32", R_UINT },
        { "uint32 equal", R_UINT }, { "uint64", R_UINT },
        { "struct", R_STRUCT }, { "capability", R_CAP }, { "nullptr", R_NULL },
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        if (!strcmp(type, tab[i].name))
            return tab[i].r;
    return R_GENERIC;
}

static bool spend(An *a, AnRd *r)
{
    if (a->budget == 0) {
        an_fail(a, rd_off(r), "the description asks for more values than any "
                "real device has (over %u); refusing it as hostile",
                a->o.value_budget ? (unsigned)a->o.value_budget : AN_VALUE_BUDGET);
        return false;
    }
    a->budget--;
    return true;
}

/* A value that took no stream bytes: an empty struct, a size-0 field. Real
 * descriptions have a handful; a hostile one can ask for millions of them
 * out of nothing but its own few bytes. */
static bool spend_free(An *a, AnRd *r, const char *path)
{
    if (a->free_budget == 0) {
        an_fail(a, rd_off(r), "field '%s': the description asks for more than %u "
                "values that take no bytes of the stream; refusing it as hostile",
                path, AN_FREE_VALUE_BUDGET);
        return false;
    }
    a->free_budget--;
    return true;
}

/* Read n bytes for field `path`; NULL with the error set at the end. */
static const uint8_t *take(An *a, AnRd *r, size_t n, const char *path,
                           const char *type)
{
    uint64_t off = rd_off(r);
    if (!rd_need(r, n)) {
        an_fail(a, off, "field '%s' (%s): expected %zu bytes, found %s", path,
                type, n, rd_avail(r) ? "fewer before the end of the stream"
                                     : "end of stream");
        return NULL;
    }
    const uint8_t *p = rd_cur(r);
    r->pos += n;
    return p;
}

static const char hexdig[] = "0123456789abcdef";

/* "xx xx xx" of `size` bytes, read in chunks (old-style sections can be
 * megabytes). */
static json_t *read_generic(An *a, AnRd *r, uint64_t size, const char *path,
                            const char *type)
{
    uint64_t off = rd_off(r);
    if (size == 0)
        return json_string("");
    if (size > (1ull << 32)) {
        an_fail(a, off, "field '%s' (%s): size %" PRIu64 " is not believable",
                path, type, size);
        return NULL;
    }
    char *s = NULL;
    size_t slen = 0, scap = 0;
    uint64_t left = size;
    while (left) {
        size_t chunk = left < 65536 ? (size_t)left : 65536;
        if (!rd_need(r, chunk)) {
            free(s);
            an_fail(a, off, "field '%s' (%s): expected %" PRIu64 " bytes, found "
                    "end of stream after %" PRIu64, path, type, size,
                    size - left + rd_avail(r));
            return NULL;
        }
        if (slen + chunk * 3 + 1 > scap) {
            size_t ncap = scap ? scap * 2 : 256;
            while (ncap < slen + chunk * 3 + 1)
                ncap *= 2;
            char *ns = realloc(s, ncap);
            if (!ns) {
                free(s);
                an_fail(a, off, "field '%s': out of memory", path);
                return NULL;
            }
            s = ns;
            scap = ncap;
        }
        const uint8_t *p = rd_cur(r);
        for (size_t i = 0; i < chunk; i++) {
            s[slen++] = hexdig[p[i] >> 4];
            s[slen++] = hexdig[p[i] & 15];
            s[slen++] = ' ';
        }
        r->pos += chunk;
        left -= chunk;
    }
    slen--; /* no trailing space */
    json_t *j = json_stringn(s, slen);
    free(s);
    return j;
}

/* Decimal of a big-endian magnitude (for signed ints wider than 8 bytes). */
static void big_decimal(const uint8_t *mag, size_t n, char *out, size_t outsz)
{
    uint8_t *t = malloc(n ? n : 1);
    char *rev = malloc(n * 3 + 2);
    size_t nd = 0;
    if (!t || !rev) {
        snprintf(out, outsz, "?");
        free(t);
        free(rev);
        return;
    }
    memcpy(t, mag, n);
    for (;;) {
        unsigned rem = 0;
        bool nonzero = false;
        for (size_t i = 0; i < n; i++) {
            unsigned cur = rem << 8 | t[i];
            t[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            nonzero |= t[i] != 0;
        }
        rev[nd++] = (char)('0' + rem);
        if (!nonzero)
            break;
    }
    size_t o = 0;
    for (size_t i = 0; i < nd && o + 1 < outsz; i++)
        out[o++] = rev[nd - 1 - i];
    out[o] = '\0';
    free(t);
    free(rev);
}

static json_t *format_int(const uint8_t *p, size_t size, bool is_signed)
{
    char buf[64];
    if (size <= 8) {
        uint64_t u = 0;
        for (size_t i = 0; i < size; i++)
            u = u << 8 | p[i];
        int64_t s = (int64_t)u;
        if (size && size < 8 && (u >> (size * 8 - 1)) & 1)
            s = (int64_t)(u | (~0ull << (size * 8)));
        if (is_signed && s < 0)
            snprintf(buf, sizeof(buf), "0x%0*" PRIx64 " (%" PRId64 ")",
                     (int)size * 2, u, s);
        else
            snprintf(buf, sizeof(buf), "0x%0*" PRIx64, (int)size * 2, u);
        return json_string(buf);
    }
    /* wide: hex of every byte, and python's decimal for negatives */
    char *s = malloc(size * 2 + 3 + size * 3 + 8);
    if (!s)
        return NULL;
    size_t o = 0;
    s[o++] = '0';
    s[o++] = 'x';
    for (size_t i = 0; i < size; i++) {
        s[o++] = hexdig[p[i] >> 4];
        s[o++] = hexdig[p[i] & 15];
    }
    s[o] = '\0';
    if (is_signed && (p[0] & 0x80)) {
        /* magnitude = two's complement */
        uint8_t *m = malloc(size);
        char *dec = malloc(size * 3 + 2);
        if (m && dec) {
            unsigned carry = 1;
            for (size_t i = size; i-- > 0;) {
                unsigned v = (uint8_t)~p[i] + carry;
                m[i] = (uint8_t)v;
                carry = v >> 8;
            }
            big_decimal(m, size, dec, size * 3 + 2);
            o += (size_t)sprintf(s + o, " (-%s)", dec);
        }
        free(m);
        free(dec);
    }
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* One element of one field. */
static json_t *read_field(An *a, AnRd *r, json_t *f, const char *type,
                          const char *path, int depth)
{
    Reader rk = reader_for(type);
    json_t *jsize = json_object_get(f, "size");
    int64_t size = json_is_integer(jsize) ? json_integer_value(jsize) : -1;

    if (rk == R_STRUCT) {
        json_t *sd = json_object_get(f, "struct");
        if (!json_is_object(sd) || !json_is_array(json_object_get(sd, "fields"))) {
            an_fail(a, rd_off(r), "field '%s': the description has no fields for "
                    "this struct", path);
            return NULL;
        }
        return an_vmsd_decode(a, r, sd, path, depth + 1);
    }
    if (rk == R_CAP) {
        const uint8_t *p = take(a, r, 1, path, type);
        if (!p)
            return NULL;
        size_t n = *p;
        p = take(a, r, n, path, type);
        return p ? an_json_bytes_string(p, n) : NULL;
    }
    if (size < 0) {
        an_fail(a, rd_off(r), "field '%s' (%s): the description gives no size",
                path, type);
        return NULL;
    }
    switch (rk) {
    case R_BOOL: {
        if (size < 1) {
            an_fail(a, rd_off(r), "field '%s' (bool): size 0 in the description",
                    path);
            return NULL;
        }
        const uint8_t *p = take(a, r, (size_t)size, path, type);
        return p ? json_boolean(p[0] != 0) : NULL;
    }
    case R_INT:
    case R_UINT: {
        if (size > 1024)
            return read_generic(a, r, (uint64_t)size, path, type);
        const uint8_t *p = take(a, r, (size_t)size, path, type);
        return p ? format_int(p, (size_t)size, rk == R_INT) : NULL;
    }
    case R_NULL: {
        uint64_t off = rd_off(r);
        if (size != 1) {
            an_fail(a, off, "field '%s' (nullptr): expected size 1, the "
                    "description says %" PRId64, path, size);
            return NULL;
        }
        const uint8_t *p = take(a, r, 1, path, type);
        if (!p)
            return NULL;
        if (*p != 0x30) {
            an_fail(a, off, "field '%s': expected the NULL-pointer marker 0x30, "
                    "found 0x%02x", path, *p);
            return NULL;
        }
        return json_string("nullptr");
    }
    default:
        return read_generic(a, r, (uint64_t)size, path, type);
    }
}

/* Python's merge: first value as is, a second one makes a list. */
static void merge(json_t *out, const char *name, json_t *v)
{
    json_t *old = json_object_get(out, name);
    if (!old) {
        json_object_set_new(out, name, v);
    } else if (json_is_array(old)) {
        json_array_append_new(old, v);
    } else {
        json_t *l = json_array();
        json_array_append(l, old);
        json_array_append_new(l, v);
        json_object_set_new(out, name, l);
    }
}

static json_t *decode_fields(An *a, AnRd *r, json_t *fields, json_t *out,
                             const char *path, int depth)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *type = json_string_value(json_object_get(f, "type"));
        if (!json_is_object(f) || !name || !type) {
            an_fail(a, rd_off(r), "%s%sfield %zu of the description has no "
                    "name or type", path, *path ? ": " : "", i);
            return NULL;
        }
        json_t *jlen = json_object_get(f, "array_len");
        int64_t n = 1;
        if (jlen) {
            if (!json_is_integer(jlen) || json_integer_value(jlen) < 0 ||
                json_integer_value(jlen) > MAX_ARRAY_LEN) {
                an_fail(a, rd_off(r), "field '%s%s%s': array_len is not a count "
                        "(0..%d)", path, *path ? "." : "", name, MAX_ARRAY_LEN);
                return NULL;
            }
            n = json_integer_value(jlen);
            if (n < 1)
                n = 1; /* python keeps the first element of an empty array */
        }
        for (int64_t k = 0; k < n; k++) {
            char fpath[512];
            if (jlen || json_object_get(f, "index"))
                snprintf(fpath, sizeof(fpath), "%s%s%s[%" PRId64 "]", path,
                         *path ? "." : "", name,
                         jlen ? k : (int64_t)json_integer_value(json_object_get(f, "index")));
            else
                snprintf(fpath, sizeof(fpath), "%s%s%s", path, *path ? "." : "",
                         name);
            if (!spend(a, r))
                return NULL;
            uint64_t before = rd_off(r);
            json_t *v = read_field(a, r, f, type, fpath, depth);
            if (!v)
                return NULL;
            merge(out, name, v);
            if (rd_off(r) == before && !spend_free(a, r, fpath))
                return NULL;
        }
    }
    return out;
}

static json_t *decode_subsections(An *a, AnRd *r, json_t *subs, json_t *out,
                                  const char *path, int depth)
{
    size_t i;
    json_t *sd;
    json_array_foreach(subs, i, sd) {
        const char *vname = json_string_value(json_object_get(sd, "vmsd_name"));
        uint64_t off = rd_off(r);
        char fbuf[32];
        if (!json_is_object(sd) || !json_is_array(json_object_get(sd, "fields"))) {
            an_fail(a, off, "%s%ssubsection %zu of the description has no "
                    "fields", path, *path ? ": " : "", i);
            return NULL;
        }
        if (rd_peek(r, 0) != 0x05) {
            an_fail(a, off, "%s%sexpected subsection '%s' (0x05), found %s",
                    path, *path ? ": " : "", vname ? vname : "?",
                    an_found(r, 0, fbuf));
            return NULL;
        }
        int len = rd_peek(r, 1);
        if (len < 0 || !rd_need(r, 2 + (size_t)len + 4)) {
            an_fail(a, off, "%s%ssubsection '%s': expected its header, found end "
                    "of stream", path, *path ? ": " : "", vname ? vname : "?");
            return NULL;
        }
        const uint8_t *p = rd_cur(r);
        char name[256];
        memcpy(name, p + 2, (size_t)len);
        name[len] = '\0';
        r->pos += 2 + (size_t)len + 4;
        if (vname && (strlen(vname) != (size_t)len || memcmp(vname, p + 2, (size_t)len))) {
            char pr[300];
            an_printable(pr, sizeof(pr), p + 2, (size_t)len);
            an_fail(a, off, "%s%sexpected subsection '%s', found '%s'", path,
                    *path ? ": " : "", vname, pr);
            return NULL;
        }
        if (memchr(name, '\0', (size_t)len)) {
            an_fail(a, off, "%s%ssubsection name holds a NUL byte", path,
                    *path ? ": " : "");
            return NULL;
        }
        char spath[512];
        snprintf(spath, sizeof(spath), "%s%s%s", path, *path ? "." : "", name);
        json_t *v = an_vmsd_decode(a, r, sd, spath, depth + 1);
        if (!v)
            return NULL;
        json_t *key = an_json_bytes_string((const uint8_t *)name, (size_t)len);
        json_object_set_new(out, json_string_value(key), v);
        json_decref(key);
    }
    return out;
}

json_t *an_vmsd_decode(An *a, AnRd *r, json_t *desc, const char *path, int depth)
{
    if (depth > MAX_DEPTH) {
        an_fail(a, rd_off(r), "%s: the description nests more than %d levels",
                path, MAX_DEPTH);
        return NULL;
    }
    json_t *fields = json_object_get(desc, "fields");
    if (!json_is_array(fields)) {
        an_fail(a, rd_off(r), "%s%sthe description has no field list", path,
                *path ? ": " : "");
        return NULL;
    }
    json_t *out = json_object();
    if (!decode_fields(a, r, fields, out, path, depth)) {
        json_decref(out);
        return NULL;
    }
    json_t *subs = json_object_get(desc, "subsections");
    if (json_is_array(subs) && !decode_subsections(a, r, subs, out, path, depth)) {
        json_decref(out);
        return NULL;
    }
    return out;
}
