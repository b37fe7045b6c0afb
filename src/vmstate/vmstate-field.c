/*
 * vmstate-field.c: field geometry shared by the saver, loader and dumper.
 *
 * See vmstate-int.h for the invariants vms_field_geom establishes. Counts and
 * sizes are read from the device struct with memcpy: on the load side they
 * were just written there from the stream, so they are hostile until checked
 * against field->max here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmstate/vmstate-int.h"

bool vms_field_exists(const VMStateField *field, void *opaque, int version_id)
{
    if (field->field_exists)
        return field->field_exists(opaque, version_id);
    return field->version_id <= version_id;
}

uint64_t vms_field_count(const VMStateField *field, void *opaque)
{
    const uint8_t *p = (const uint8_t *)opaque + field->num_offset;

    if (field->flags & VMS_ARRAY)
        return field->num < 0 ? 0 : (uint64_t)field->num;
    if (field->flags & VMS_VARRAY_UINT8)
        return *p;
    if (field->flags & VMS_VARRAY_UINT16) {
        uint16_t v;
        memcpy(&v, p, sizeof(v));
        return v;
    }
    if (field->flags & VMS_VARRAY_UINT32) {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return v;
    }
    return 1;
}

int vms_field_geom(const VMStateField *field, void *opaque, VMSFieldGeom *g,
                   FyError **errp)
{
    uint8_t *slot = (uint8_t *)opaque + field->offset;
    bool varray = field->flags &
                  (VMS_VARRAY_UINT8 | VMS_VARRAY_UINT16 | VMS_VARRAY_UINT32);

    memset(g, 0, sizeof(*g));
    if ((field->flags & VMS_ARRAY) && field->num < 0) {
        fy_error_setg(errp, "negative element count %d in the description",
                      field->num);
        return -1;
    }
    g->n = vms_field_count(field, opaque);
    if (varray && g->n > field->max) {
        fy_error_setg(errp, "count %" PRIu64 " exceeds capacity %zu", g->n,
                      field->max);
        return -1;
    }
    g->size = field->size;
    if (field->flags & VMS_VBUFFER_UINT32) {
        uint32_t len;
        memcpy(&len, (const uint8_t *)opaque + field->size_offset, sizeof(len));
        size_t cap = field->start > field->max ? 0 : field->max - field->start;
        if (len > cap) {
            fy_error_setg(errp, "size %" PRIu32 " exceeds capacity %zu", len, cap);
            return -1;
        }
        g->size = len;
    }
    g->stride = (field->flags & VMS_ARRAY_OF_POINTER) ? sizeof(void *) : g->size;

    if (field->flags & VMS_ARRAY_OF_POINTER) {
        g->base = slot;
    } else if (field->flags & VMS_POINTER) {
        void *p;
        memcpy(&p, slot, sizeof(p));
        g->base = p;
        if (p && (field->flags & VMS_VBUFFER_UINT32))
            g->base += field->start;
    } else {
        g->base = slot;
    }
    return 0;
}

size_t vms_geom_bytes(const VMStateField *field, const VMSFieldGeom *g)
{
    size_t start = (field->flags & VMS_VBUFFER_UINT32) ? field->start : 0;
    /* n and size are bounded by max (VARRAY/VBUFFER) or by the description
     * (fixed arrays of declared members), so this cannot overflow. */
    return start + (size_t)g->n * g->size;
}

int vms_geom_check_pointer(const VMStateField *field, const VMSFieldGeom *g,
                           FyError **errp)
{
    if (g->base || vms_is_nullable(field) || !(field->flags & VMS_POINTER))
        return 0;
    if (g->n == 0 || g->size == 0)
        return 0;
    fy_error_setg(errp, "pointer is NULL but %" PRIu64 " x %zu bytes are to be "
                  "transferred", g->n, g->size);
    return -1;
}

void *vms_elem(const VMStateField *field, const VMSFieldGeom *g, uint64_t i)
{
    if (field->flags & VMS_ARRAY_OF_POINTER) {
        void *p;
        memcpy(&p, g->base + i * sizeof(void *), sizeof(p));
        return p;
    }
    if (!g->base)
        return NULL;
    return g->base + i * g->stride;
}

const char *vms_field_desc_name(const VMStateDescription *vmsd,
                                const VMStateField *field, char *buf,
                                size_t len)
{
    int total = 0, before = 0;

    for (const VMStateField *f = vmsd->fields; !vms_is_end(f); f++) {
        if (strcmp(f->name, field->name) != 0)
            continue;
        if (f < field)
            before++;
        total++;
    }
    if (total <= 1)
        return field->name;
    snprintf(buf, len, "%s[%d]", field->name, before);
    return buf;
}

const char *vms_field_type_name(const VMStateField *field)
{
    if (vms_is_tmp(field))
        return "tmp";
    if (vms_is_struct(field))
        return "struct";
    if (field->info && field->info->name)
        return field->info->name;
    return "unknown";
}

static bool can_compress(const VMStateField *field, int depth)
{
    if (field->field_exists)
        return false;
    if (!vms_is_struct(field) || !field->vmsd)
        return true;
    if (depth >= VMS_MAX_DEPTH)
        return false;
    for (const VMStateField *f = field->vmsd->fields; !vms_is_end(f); f++) {
        if (!can_compress(f, depth + 1))
            return false;
    }
    /* Subsections may come and go from one element to the next. */
    return field->vmsd->subsections == NULL;
}

bool vms_field_can_compress(const VMStateField *field)
{
    return can_compress(field, 0);
}

bool vms_subsection_needed(const VMStateDescription *sub, void *opaque)
{
    return !sub->needed || sub->needed(opaque);
}

void *vms_tmp_new(const VMStateField *field, void *parent, FyError **errp)
{
    if (!field->vmsd || field->size < sizeof(void *)) {
        fy_error_setg(errp, "WITH_TMP needs a vmsd and a temporary of at least "
                      "pointer size (has %zu bytes)", field->size);
        return NULL;
    }
    void *tmp = calloc(1, field->size);
    if (!tmp) {
        fy_error_setg_errno(errp, ENOMEM, "allocating a %zu-byte temporary",
                            field->size);
        return NULL;
    }
    memcpy(tmp, &parent, sizeof(parent));
    return tmp;
}
