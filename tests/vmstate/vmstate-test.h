/*
 * vmstate-test.h: helpers shared by the vmstate tests.
 *
 * save_bytes() runs vmstate_save_state into an in-memory channel and returns
 * a copy of the bytes; load_bytes() loads a device from a byte array and
 * reports how far the loader read. desc_walk() decodes a stream using only
 * a VM description, the way QEMU's scripts/analyze-migration.py does
 * (VMSDFieldStruct.read): it proves the description's sizes and shape match
 * the bytes.
 */
#ifndef FERRY_TESTS_VMSTATE_TEST_H
#define FERRY_TESTS_VMSTATE_TEST_H

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/channel.h"
#include "ferry/stream.h"
#include "ferry/vmstate.h"
#include "t.h"

typedef struct Bytes {
    uint8_t *data;
    size_t len;
} Bytes;

/* Save; on failure returns -1 with *errp set and out holds what was written
 * up to the failure (flushed). */
static inline int save_bytes(const VMStateDescription *vmsd, void *opaque,
                             json_t *vmdesc, Bytes *out, FyError **errp)
{
    FyChannel *c = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c, false);
    int ret = vmstate_save_state(f, vmsd, opaque, vmdesc, errp);
    fy_stream_flush(f);
    size_t len = 0;
    const uint8_t *d = fy_channel_mem_data(c, &len);
    out->data = malloc(len ? len : 1);
    if (len)
        memcpy(out->data, d, len);
    out->len = len;
    fy_stream_close(f, NULL);
    fy_channel_close(c, NULL);
    return ret;
}

/* Load from data[0..len); *consumed (if non-NULL) is the stream offset
 * afterwards. */
static inline int load_bytes(const VMStateDescription *vmsd, void *opaque,
                             int version, const uint8_t *data, size_t len,
                             size_t *consumed, FyError **errp)
{
    FyChannel *c = fy_channel_mem_new(data, len);
    FyStream *f = fy_stream_new_input(c, true);
    int ret = vmstate_load_state(f, vmsd, opaque, version, errp);
    if (consumed)
        *consumed = (size_t)fy_stream_offset(f);
    fy_stream_close(f, NULL);
    return ret;
}

static inline void bytes_free(Bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

/* ---- analyze-migration.py's reading of a device, in C ---- */

typedef struct DescWalk {
    const uint8_t *p;
    size_t len, pos;
    char err[256];
} DescWalk;

static inline int desc_walk_level(DescWalk *w, json_t *level);

static inline int desc_walk_field(DescWalk *w, json_t *field)
{
    const char *type = json_string_value(json_object_get(field, "type"));
    json_t *size = json_object_get(field, "size");
    if (!type || !json_is_integer(size)) {
        snprintf(w->err, sizeof(w->err), "field without type or size");
        return -1;
    }
    if (strcmp(type, "struct") == 0) {
        json_t *st = json_object_get(field, "struct");
        if (!json_is_object(st) || !json_object_get(st, "fields")) {
            snprintf(w->err, sizeof(w->err), "struct without fields");
            return -1;
        }
        size_t start = w->pos;
        if (desc_walk_level(w, st) < 0)
            return -1;
        if (w->pos - start != (size_t)json_integer_value(size)) {
            snprintf(w->err, sizeof(w->err), "struct '%s' read %zu bytes, size says %lld",
                     json_string_value(json_object_get(field, "name")),
                     w->pos - start, (long long)json_integer_value(size));
            return -1;
        }
        return 0;
    }
    size_t n = (size_t)json_integer_value(size);
    if (w->pos + n > w->len) {
        snprintf(w->err, sizeof(w->err), "field '%s' runs past the end",
                 json_string_value(json_object_get(field, "name")));
        return -1;
    }
    if (strcmp(type, "nullptr") == 0 && (n != 1 || w->p[w->pos] != 0x30)) {
        snprintf(w->err, sizeof(w->err), "nullptr field is not the 0x30 byte");
        return -1;
    }
    w->pos += n;
    return 0;
}

static inline int desc_walk_level(DescWalk *w, json_t *level)
{
    size_t i;
    json_t *field;
    json_array_foreach(json_object_get(level, "fields"), i, field) {
        json_t *alen = json_object_get(field, "array_len");
        long long reps = alen ? json_integer_value(alen) : 1;
        for (long long r = 0; r < reps; r++) {
            if (desc_walk_field(w, field) < 0)
                return -1;
        }
    }
    json_t *sub;
    json_array_foreach(json_object_get(level, "subsections"), i, sub) {
        if (w->pos + 2 > w->len || w->p[w->pos] != 0x05) {
            snprintf(w->err, sizeof(w->err), "subsection %s not found at %zu",
                     json_string_value(json_object_get(sub, "vmsd_name")), w->pos);
            return -1;
        }
        size_t nlen = w->p[w->pos + 1];
        const char *want = json_string_value(json_object_get(sub, "vmsd_name"));
        if (!want || strlen(want) != nlen || w->pos + 2 + nlen + 4 > w->len ||
            memcmp(w->p + w->pos + 2, want, nlen) != 0) {
            snprintf(w->err, sizeof(w->err), "subsection name mismatch at %zu", w->pos);
            return -1;
        }
        w->pos += 2 + nlen + 4;
        if (desc_walk_level(w, sub) < 0)
            return -1;
    }
    return 0;
}

/* Returns bytes consumed, or -1 (w.err says why) */
static inline long desc_walk(json_t *desc, const uint8_t *p, size_t len,
                             char *err, size_t errlen)
{
    DescWalk w = { .p = p, .len = len };
    if (desc_walk_level(&w, desc) < 0) {
        snprintf(err, errlen, "%s", w.err);
        return -1;
    }
    return (long)w.pos;
}

#endif
