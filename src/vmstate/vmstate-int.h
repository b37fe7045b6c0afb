/*
 * vmstate-int.h: what the VMState saver, loader and JSON dumper share.
 *
 * A field is walked the same way by all three: decide whether it exists at
 * this version (vms_field_exists), work out its geometry (how many elements,
 * how many bytes each, where the first one lives: vms_field_geom), then visit
 * each element (vms_elem). Keeping that in one place keeps the three walkers
 * agreeing on the layout, which is what makes save -> load round trip.
 *
 * Geometry invariants (checked by vms_field_geom before any element is
 * touched, on save and on load alike):
 * - a variable element count (VARRAY) is <= field->max;
 * - a variable byte count (VBUFFER) plus field->start is <= field->max;
 * and, by vms_geom_check_pointer (the loader first allocates VMS_ALLOC
 * fields, whose size it now knows to be bounded):
 * - a non-nullable pointer that is NULL has nothing to transfer.
 * So an element index < geom.n always addresses memory the device declared.
 */
#ifndef FERRY_VMSTATE_INT_H
#define FERRY_VMSTATE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/vmstate.h"

/* Wire bytes (QEMU's QEMU_VM_SUBSECTION and VMS_NULLPTR_MARKER). */
#define VMS_WIRE_SUBSECTION 0x05
#define VMS_WIRE_NULLPTR    0x30

/* How deep structs, subsections and temporaries may nest. Descriptions are
 * static, so only a recursive description (a struct that points to its own
 * type) can get near this; the bound turns that into an error, not a stack
 * overflow. */
#define VMS_MAX_DEPTH 64

/* The loader can only peek this far ahead (fy_peek_byte's limit). */
#define VMS_PEEK_MAX 64

typedef struct VMSFieldGeom {
    uint64_t n;     /* number of elements */
    size_t size;    /* bytes per element (buffer length for buffers) */
    size_t stride;  /* distance between elements (or pointer slots) */
    uint8_t *base;  /* first element, or first pointer slot; may be NULL */
} VMSFieldGeom;

static inline bool vms_is_end(const VMStateField *field)
{
    return !field || (field->flags & VMS_END) || !field->name;
}

static inline bool vms_is_tmp(const VMStateField *field)
{
    return (field->flags & VMS_WITH_TMP) != 0;
}

static inline bool vms_is_struct(const VMStateField *field)
{
    return (field->flags & VMS_STRUCT) && !vms_is_tmp(field);
}

/* Fields shown with an index: fixed and variable arrays. */
static inline bool vms_is_array(const VMStateField *field)
{
    return (field->flags & (VMS_ARRAY | VMS_VARRAY_UINT8 | VMS_VARRAY_UINT16 |
                            VMS_VARRAY_UINT32 | VMS_ARRAY_OF_POINTER)) != 0;
}

/* Element pointers may be NULL (sent as the 0x30 marker). */
static inline bool vms_is_nullable(const VMStateField *field)
{
    return (field->flags & (VMS_NULLABLE | VMS_ARRAY_OF_POINTER)) != 0;
}

/* Does this field travel at version_id? _TEST fields ask their function,
 * others compare their version (_V) with the stream's. */
bool vms_field_exists(const VMStateField *field, void *opaque, int version_id);

/* The element count of a field: num, or the VARRAY count member. */
uint64_t vms_field_count(const VMStateField *field, void *opaque);

/* Fill *g for the field in the device at opaque, checking the count and
 * size bounds at the top of this file. On failure returns -1 with an error
 * that names the problem but not the field (the caller adds "field 'x': "). */
int vms_field_geom(const VMStateField *field, void *opaque, VMSFieldGeom *g,
                   FyError **errp);
/* Bytes the pointed-to storage must hold: start + n * size. */
size_t vms_geom_bytes(const VMStateField *field, const VMSFieldGeom *g);
/* Fail if g->base is a NULL non-nullable pointer with bytes to transfer. */
int vms_geom_check_pointer(const VMStateField *field, const VMSFieldGeom *g,
                           FyError **errp);

/* Element i (i < g->n); NULL only for a nullable pointer that is NULL. */
void *vms_elem(const VMStateField *field, const VMSFieldGeom *g, uint64_t i);

/* The field's name in the VM description and in dumps: "name", or
 * "name[k]" when the name appears more than once in the vmsd (k counts the
 * earlier fields with that name), as QEMU does. Writes into buf. */
const char *vms_field_desc_name(const VMStateDescription *vmsd,
                                const VMStateField *field, char *buf,
                                size_t len);

/* Type name for the VM description: "struct", "tmp", the info's name. */
const char *vms_field_type_name(const VMStateField *field);

/* QEMU's array compression rule: a field may be described once for all its
 * elements unless something about the elements can differ (a _TEST
 * function, or a struct with such fields or with subsections). */
bool vms_field_can_compress(const VMStateField *field);

/* Is the subsection needed now? A subsection without needed() always is. */
bool vms_subsection_needed(const VMStateDescription *sub, void *opaque);

/* The WITH_TMP temporary: zeroed field->size bytes whose first member points
 * at the parent. Returns NULL with an error on a bad size or no memory. */
void *vms_tmp_new(const VMStateField *field, void *parent, FyError **errp);

#endif
