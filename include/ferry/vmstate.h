/*
 * vmstate.h: declarative device state (QEMU's VMState, docs/devel/migration).
 *
 * A device describes its state once, as a VMStateDescription: a list of
 * fields (offsets into the device struct plus how to encode each), hooks,
 * versions and subsections. The same description saves, loads, and describes
 * itself in the JSON VM description that follows the stream's EOF.
 *
 * Wire rules (QEMU-compatible): integers big-endian, bool one byte, float64
 * as its IEEE bits in be64; a NULL struct pointer is the byte 0x30; after
 * the fields come subsections, each `0x05, u8 len, name, be32 version`, then
 * the subsection's own fields and subsections. No terminator: the loader
 * peeks for 0x05.
 *
 * Load-side guarantees (the stream is hostile): a variable array length or
 * buffer size read from the stream is checked against the field's capacity
 * (`max`) before any byte is written or allocated; a version outside
 * [minimum_version_id, version_id] fails naming the device and both versions;
 * an unknown subsection fails naming it; VALIDATE and _EQUAL fields fail
 * with their message. Every load error carries the stream offset.
 *
 * Subsections are named "<parent name>/<anything>" (saving refuses other
 * names). The loader peeks at a 0x05 and its name before consuming it: a
 * name with this level's prefix is loaded (or, if unknown, refused); any
 * other name ends this level and is left to the enclosing one, so nested
 * and sibling subsections resolve; at the device level, where nothing else
 * can follow, a foreign name is refused.
 *
 * NULL pointers: a NULL element (STRUCT_POINTER, ARRAY_OF_POINTER_*) is
 * sent as the byte 0x30 and a non-NULL one as the bare struct, as QEMU does.
 * On load, a NULL local slot requires the 0x30 byte. A non-NULL local slot
 * loads the struct: the format cannot tell a 0x30 marker from struct data
 * that starts with 0x30, so a source NULL meeting a destination object
 * shows up as a misaligned stream (an error further on, or at the section
 * footer), not as a dedicated message.
 *
 * Hook order. Save: pre_save, fields, subsections (each its own pre_save ..
 * post_save), post_save (also after a failed save, so devices can undo).
 * Load: pre_load, fields, subsections, post_load (after all subsections).
 */
#ifndef FERRY_VMSTATE_H
#define FERRY_VMSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/stream.h"

struct json_t; /* jansson, for the VM description */

typedef struct VMStateField VMStateField;
typedef struct VMStateDescription VMStateDescription;

/* How one element is encoded. name is the type name in the VM description
 * ("uint32", "bool", "buffer", "struct", "nullptr", ...). */
typedef struct VMStateInfo {
    const char *name;
    int (*get)(FyStream *f, void *pv, size_t size, const VMStateField *field,
               FyError **errp);
    int (*put)(FyStream *f, void *pv, size_t size, const VMStateField *field,
               FyError **errp);
} VMStateInfo;

enum VMStateFlags {
    VMS_SINGLE           = 1u << 0,  /* one element at offset */
    VMS_POINTER          = 1u << 1,  /* offset holds a pointer to the data */
    VMS_ARRAY            = 1u << 2,  /* num elements */
    VMS_STRUCT           = 1u << 3,  /* element is a struct described by vmsd */
    VMS_VARRAY_UINT8     = 1u << 4,  /* element count in a uint8 at num_offset */
    VMS_VARRAY_UINT16    = 1u << 5,
    VMS_VARRAY_UINT32    = 1u << 6,
    VMS_BUFFER           = 1u << 7,  /* opaque bytes, size bytes */
    VMS_VBUFFER_UINT32   = 1u << 8,  /* byte count in a uint32 at size_offset */
    VMS_ARRAY_OF_POINTER = 1u << 9,  /* array of pointers to elements */
    VMS_NULLABLE         = 1u << 10, /* pointer to struct: NULL as 0x30 marker */
    VMS_ALLOC            = 1u << 11, /* load allocates the pointed-to buffer */
    VMS_MUST_EXIST       = 1u << 12, /* VALIDATE: field_exists is the check */
    VMS_UNUSED           = 1u << 13, /* padding: zeros out, skipped in */
    VMS_WITH_TMP         = 1u << 14, /* see VMSTATE_WITH_TMP */
    VMS_END              = 1u << 15,
};

struct VMStateField {
    const char *name;
    const char *err_hint;     /* appended to _EQUAL mismatch messages */
    size_t offset;            /* into the device struct */
    size_t size;              /* bytes per element (or buffer size) */
    size_t start;             /* VBUFFER: start offset within the buffer */
    int num;                  /* fixed element count (VMS_ARRAY) */
    size_t num_offset;        /* VARRAY: offset of the count field */
    size_t size_offset;       /* VBUFFER: offset of the byte-count field */
    size_t max;               /* VARRAY/VBUFFER: capacity, the load bound */
    const VMStateInfo *info;
    uint32_t flags;
    const VMStateDescription *vmsd; /* VMS_STRUCT, WITH_TMP */
    int version_id;           /* present from this version on (_V) */
    bool (*field_exists)(void *opaque, int version_id); /* _TEST, VALIDATE */
};

typedef enum {
    MIG_PRI_DEFAULT = 0,
    MIG_PRI_IOMMU,
    MIG_PRI_PCI_BUS,
    MIG_PRI_VIRTIO_MEM,
    MIG_PRI_GICV3_ITS,
    MIG_PRI_GICV3,
    MIG_PRI_MAX,
} MigrationPriority;

struct VMStateDescription {
    const char *name;
    int version_id;
    int minimum_version_id;
    MigrationPriority priority;
    int (*pre_load)(void *opaque, FyError **errp);
    int (*post_load)(void *opaque, int version_id, FyError **errp);
    int (*pre_save)(void *opaque, FyError **errp);
    int (*post_save)(void *opaque, FyError **errp);
    bool (*needed)(void *opaque);
    const VMStateField *fields;                 /* ends with VMSTATE_END_OF_LIST */
    const VMStateDescription *const *subsections; /* NULL-terminated, or NULL */
};

/* Save the fields and needed subsections of one vmsd. If vmdesc is not NULL,
 * append this vmsd's description (QEMU's JSON shape) to it: vmdesc is the
 * JSON object of the device ({"name":..,"fields":[..]} is filled in). */
int vmstate_save_state(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                       struct json_t *vmdesc, FyError **errp);
/* Load with the version the stream says it was saved at. */
int vmstate_load_state(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                       int version_id, FyError **errp);

/* Hooks return 0 on success; any other value fails the save or load (set
 * *errp to say why, or a generic "hook failed" message is used). Errors are
 * prefixed with where they happened, outermost first:
 *   "device 'cpu' field 'regs[3]': struct 'reg' field 'val': stream has 5,
 *    local is 4 (stream offset 812)"
 * Load errors always carry the stream offset of the failing element. */

/* Debug view of a device's state as JSON values (not the VM description):
 * one member per field that exists at vmsd->version_id (numbers, booleans,
 * arrays, hex strings for buffers, objects for structs, null for NULL
 * pointers) and one member per needed subsection, named by the subsection.
 * Used to compare a source device with its destination copy (json_equal).
 * Calls no device hooks (except a WITH_TMP temporary's pre_save/post_save).
 * Returns a new reference, or NULL when out of memory. */
struct json_t *vmstate_to_json(const VMStateDescription *vmsd, void *opaque);

/* ---- element types ---- */
extern const VMStateInfo vmstate_info_bool;
extern const VMStateInfo vmstate_info_int8;
extern const VMStateInfo vmstate_info_int16;
extern const VMStateInfo vmstate_info_int32;
extern const VMStateInfo vmstate_info_int64;
extern const VMStateInfo vmstate_info_uint8;
extern const VMStateInfo vmstate_info_uint16;
extern const VMStateInfo vmstate_info_uint32;
extern const VMStateInfo vmstate_info_uint64;
extern const VMStateInfo vmstate_info_float64;
extern const VMStateInfo vmstate_info_buffer;
extern const VMStateInfo vmstate_info_unused_buffer;
extern const VMStateInfo vmstate_info_uint8_equal;
extern const VMStateInfo vmstate_info_uint16_equal;
extern const VMStateInfo vmstate_info_uint32_equal;
extern const VMStateInfo vmstate_info_uint64_equal;
extern const VMStateInfo vmstate_info_int32_equal;
extern const VMStateInfo vmstate_info_nullptr;

/* ---- field macros ----
 * Type checks: each macro checks at compile time that the named member has
 * the expected type, so a description cannot silently disagree with its
 * struct. */
#define vmstate_typeof_field(state, f) __typeof__(((state *)0)->f)
#define vmstate_check(state, f, type)                                          \
    (0 * sizeof(char[1 - 2 * !__builtin_types_compatible_p(                    \
                                 vmstate_typeof_field(state, f), type)]))
#define vmstate_sizeof(state, f) sizeof(vmstate_typeof_field(state, f))

#define VMSTATE_SINGLE_TEST(_f, _state, _test, _v, _info, _type) {             \
    .name = #_f, .version_id = (_v), .field_exists = (_test),                  \
    .size = sizeof(_type), .info = &(_info), .flags = VMS_SINGLE,              \
    .offset = offsetof(_state, _f) + vmstate_check(_state, _f, _type) }

#define VMSTATE_SINGLE(_f, _state, _v, _info, _type)                           \
    VMSTATE_SINGLE_TEST(_f, _state, NULL, _v, _info, _type)

#define VMSTATE_BOOL_V(f, s, v)    VMSTATE_SINGLE(f, s, v, vmstate_info_bool, bool)
#define VMSTATE_INT8_V(f, s, v)    VMSTATE_SINGLE(f, s, v, vmstate_info_int8, int8_t)
#define VMSTATE_INT16_V(f, s, v)   VMSTATE_SINGLE(f, s, v, vmstate_info_int16, int16_t)
#define VMSTATE_INT32_V(f, s, v)   VMSTATE_SINGLE(f, s, v, vmstate_info_int32, int32_t)
#define VMSTATE_INT64_V(f, s, v)   VMSTATE_SINGLE(f, s, v, vmstate_info_int64, int64_t)
#define VMSTATE_UINT8_V(f, s, v)   VMSTATE_SINGLE(f, s, v, vmstate_info_uint8, uint8_t)
#define VMSTATE_UINT16_V(f, s, v)  VMSTATE_SINGLE(f, s, v, vmstate_info_uint16, uint16_t)
#define VMSTATE_UINT32_V(f, s, v)  VMSTATE_SINGLE(f, s, v, vmstate_info_uint32, uint32_t)
#define VMSTATE_UINT64_V(f, s, v)  VMSTATE_SINGLE(f, s, v, vmstate_info_uint64, uint64_t)
#define VMSTATE_FLOAT64_V(f, s, v) VMSTATE_SINGLE(f, s, v, vmstate_info_float64, double)

#define VMSTATE_BOOL(f, s)    VMSTATE_BOOL_V(f, s, 0)
#define VMSTATE_INT8(f, s)    VMSTATE_INT8_V(f, s, 0)
#define VMSTATE_INT16(f, s)   VMSTATE_INT16_V(f, s, 0)
#define VMSTATE_INT32(f, s)   VMSTATE_INT32_V(f, s, 0)
#define VMSTATE_INT64(f, s)   VMSTATE_INT64_V(f, s, 0)
#define VMSTATE_UINT8(f, s)   VMSTATE_UINT8_V(f, s, 0)
#define VMSTATE_UINT16(f, s)  VMSTATE_UINT16_V(f, s, 0)
#define VMSTATE_UINT32(f, s)  VMSTATE_UINT32_V(f, s, 0)
#define VMSTATE_UINT64(f, s)  VMSTATE_UINT64_V(f, s, 0)
#define VMSTATE_FLOAT64(f, s) VMSTATE_FLOAT64_V(f, s, 0)

#define VMSTATE_BOOL_TEST(f, s, t)   VMSTATE_SINGLE_TEST(f, s, t, 0, vmstate_info_bool, bool)
#define VMSTATE_UINT8_TEST(f, s, t)  VMSTATE_SINGLE_TEST(f, s, t, 0, vmstate_info_uint8, uint8_t)
#define VMSTATE_UINT16_TEST(f, s, t) VMSTATE_SINGLE_TEST(f, s, t, 0, vmstate_info_uint16, uint16_t)
#define VMSTATE_UINT32_TEST(f, s, t) VMSTATE_SINGLE_TEST(f, s, t, 0, vmstate_info_uint32, uint32_t)
#define VMSTATE_UINT64_TEST(f, s, t) VMSTATE_SINGLE_TEST(f, s, t, 0, vmstate_info_uint64, uint64_t)
#define VMSTATE_INT32_TEST(f, s, t)  VMSTATE_SINGLE_TEST(f, s, t, 0, vmstate_info_int32, int32_t)

/* Fields whose stream value must equal the destination's (e.g. a config
 * size); a mismatch fails the load: "field: stream has X, local is Y. hint". */
#define VMSTATE_EQUAL_F(_f, _s, _info, _type, _hint) {                         \
    .name = #_f, .err_hint = (_hint), .size = sizeof(_type),                   \
    .info = &(_info), .flags = VMS_SINGLE,                                     \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, _type) }
#define VMSTATE_UINT8_EQUAL(f, s, h)  VMSTATE_EQUAL_F(f, s, vmstate_info_uint8_equal, uint8_t, h)
#define VMSTATE_UINT16_EQUAL(f, s, h) VMSTATE_EQUAL_F(f, s, vmstate_info_uint16_equal, uint16_t, h)
#define VMSTATE_UINT32_EQUAL(f, s, h) VMSTATE_EQUAL_F(f, s, vmstate_info_uint32_equal, uint32_t, h)
#define VMSTATE_UINT64_EQUAL(f, s, h) VMSTATE_EQUAL_F(f, s, vmstate_info_uint64_equal, uint64_t, h)
#define VMSTATE_INT32_EQUAL(f, s, h)  VMSTATE_EQUAL_F(f, s, vmstate_info_int32_equal, int32_t, h)

/* Fixed arrays: _f is `_type _f[_n]`. */
#define VMSTATE_ARRAY_V(_f, _s, _n, _v, _info, _type) {                        \
    .name = #_f, .version_id = (_v), .num = (_n), .info = &(_info),            \
    .size = sizeof(_type), .flags = VMS_ARRAY,                                 \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, _type[_n]) }
#define VMSTATE_ARRAY(_f, _s, _n, _info, _type) VMSTATE_ARRAY_V(_f, _s, _n, 0, _info, _type)
#define VMSTATE_UINT8_ARRAY(f, s, n)   VMSTATE_ARRAY(f, s, n, vmstate_info_uint8, uint8_t)
#define VMSTATE_UINT16_ARRAY(f, s, n)  VMSTATE_ARRAY(f, s, n, vmstate_info_uint16, uint16_t)
#define VMSTATE_UINT32_ARRAY(f, s, n)  VMSTATE_ARRAY(f, s, n, vmstate_info_uint32, uint32_t)
#define VMSTATE_UINT64_ARRAY(f, s, n)  VMSTATE_ARRAY(f, s, n, vmstate_info_uint64, uint64_t)
#define VMSTATE_INT32_ARRAY(f, s, n)   VMSTATE_ARRAY(f, s, n, vmstate_info_int32, int32_t)
#define VMSTATE_INT64_ARRAY(f, s, n)   VMSTATE_ARRAY(f, s, n, vmstate_info_int64, int64_t)
#define VMSTATE_BOOL_ARRAY(f, s, n)    VMSTATE_ARRAY(f, s, n, vmstate_info_bool, bool)
#define VMSTATE_FLOAT64_ARRAY(f, s, n) VMSTATE_ARRAY(f, s, n, vmstate_info_float64, double)

/* Variable arrays: _f is `_type _f[max]` inside the struct; the element count
 * is the member _len (uint8/16/32), which must be saved earlier in the list.
 * A count above max fails the load. */
#define VMSTATE_VARRAY_F(_f, _s, _len, _lentype, _flag, _info, _type) {        \
    .name = #_f, .info = &(_info), .size = sizeof(_type), .flags = (_flag),    \
    .num_offset = offsetof(_s, _len) + vmstate_check(_s, _len, _lentype),      \
    .max = sizeof(vmstate_typeof_field(_s, _f)) / sizeof(_type),               \
    .offset = offsetof(_s, _f) }
#define VMSTATE_VARRAY_UINT8(f, s, len, info, type)                            \
    VMSTATE_VARRAY_F(f, s, len, uint8_t, VMS_VARRAY_UINT8, info, type)
#define VMSTATE_VARRAY_UINT16(f, s, len, info, type)                           \
    VMSTATE_VARRAY_F(f, s, len, uint16_t, VMS_VARRAY_UINT16, info, type)
#define VMSTATE_VARRAY_UINT32(f, s, len, info, type)                           \
    VMSTATE_VARRAY_F(f, s, len, uint32_t, VMS_VARRAY_UINT32, info, type)

/* Variable array behind a pointer that the loader allocates (QEMU's
 * VMSTATE_VARRAY_UINT32_ALLOC): _f is `_type *`, the count is the uint32
 * member _len (saved earlier), at most _max elements. The pointer must be
 * NULL or malloc()ed: the loader reallocates it to exactly count elements
 * (NULL for 0) and the device owns the result. */
#define VMSTATE_VARRAY_UINT32_ALLOC(_f, _s, _len, _max, _info, _type) {        \
    .name = #_f, .info = &(_info), .size = sizeof(_type), .max = (_max),       \
    .flags = VMS_VARRAY_UINT32 | VMS_POINTER | VMS_ALLOC,                      \
    .num_offset = offsetof(_s, _len) + vmstate_check(_s, _len, uint32_t),      \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, _type *) }

/* Fixed byte buffer: _f is `uint8_t _f[N]` (or any fixed-size member). */
#define VMSTATE_BUFFER_V(_f, _s, _v) {                                         \
    .name = #_f, .version_id = (_v), .size = vmstate_sizeof(_s, _f),           \
    .info = &vmstate_info_buffer, .flags = VMS_BUFFER,                         \
    .offset = offsetof(_s, _f) }
#define VMSTATE_BUFFER(_f, _s) VMSTATE_BUFFER_V(_f, _s, 0)

/* Variable byte buffer: _f is `uint8_t *_f`, pointing at _max bytes of
 * storage; the byte count is the uint32 member _size (saved earlier). With
 * _ALLOC the loader allocates (count bytes, bounded by _max) and the device
 * owns the allocation; the pointer must then be NULL or malloc()ed, since
 * the loader reallocates it (to NULL for a count of 0). */
#define VMSTATE_VBUFFER_UINT32(_f, _s, _size, _max) {                          \
    .name = #_f, .info = &vmstate_info_buffer, .max = (_max),                  \
    .flags = VMS_VBUFFER_UINT32 | VMS_POINTER,                                 \
    .size_offset = offsetof(_s, _size) + vmstate_check(_s, _size, uint32_t),   \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, uint8_t *) }
#define VMSTATE_VBUFFER_ALLOC_UINT32(_f, _s, _size, _max) {                    \
    .name = #_f, .info = &vmstate_info_buffer, .max = (_max),                  \
    .flags = VMS_VBUFFER_UINT32 | VMS_POINTER | VMS_ALLOC,                     \
    .size_offset = offsetof(_s, _size) + vmstate_check(_s, _size, uint32_t),   \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, uint8_t *) }

/* Nested struct, array of structs, variable array of structs. */
#define VMSTATE_STRUCT_V(_f, _s, _v, _vmsd, _type) {                           \
    .name = #_f, .version_id = (_v), .vmsd = &(_vmsd), .size = sizeof(_type),  \
    .flags = VMS_STRUCT, .offset = offsetof(_s, _f) + vmstate_check(_s, _f, _type) }
#define VMSTATE_STRUCT(_f, _s, _vmsd, _type) VMSTATE_STRUCT_V(_f, _s, 0, _vmsd, _type)
#define VMSTATE_STRUCT_ARRAY(_f, _s, _n, _vmsd, _type) {                       \
    .name = #_f, .num = (_n), .vmsd = &(_vmsd), .size = sizeof(_type),         \
    .flags = VMS_STRUCT | VMS_ARRAY,                                           \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, _type[_n]) }
#define VMSTATE_STRUCT_VARRAY_UINT32(_f, _s, _len, _vmsd, _type) {             \
    .name = #_f, .vmsd = &(_vmsd), .size = sizeof(_type),                      \
    .flags = VMS_STRUCT | VMS_VARRAY_UINT32,                                   \
    .num_offset = offsetof(_s, _len) + vmstate_check(_s, _len, uint32_t),      \
    .max = sizeof(vmstate_typeof_field(_s, _f)) / sizeof(_type),               \
    .offset = offsetof(_s, _f) }

/* Pointer to a struct; NULL travels as the byte 0x30. Loading data into a
 * NULL pointer, or a NULL marker into a non-NULL pointer, fails. */
#define VMSTATE_STRUCT_POINTER(_f, _s, _vmsd, _type) {                         \
    .name = #_f, .vmsd = &(_vmsd), .size = sizeof(_type),                      \
    .flags = VMS_STRUCT | VMS_POINTER | VMS_NULLABLE,                          \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, _type *) }
/* Array of _n pointers to structs, each possibly NULL. */
#define VMSTATE_ARRAY_OF_POINTER_TO_STRUCT(_f, _s, _n, _vmsd, _type) {         \
    .name = #_f, .num = (_n), .vmsd = &(_vmsd), .size = sizeof(_type),         \
    .flags = VMS_STRUCT | VMS_ARRAY | VMS_ARRAY_OF_POINTER | VMS_NULLABLE,     \
    .offset = offsetof(_s, _f) + vmstate_check(_s, _f, _type *[_n]) }

/* Load-side check; fails the load with message _name when _test is false. */
#define VMSTATE_VALIDATE(_name, _test) {                                       \
    .name = (_name), .field_exists = (_test), .flags = VMS_MUST_EXIST }

/* _n bytes of padding (zeros out, ignored in). */
#define VMSTATE_UNUSED_V(_v, _n) {                                             \
    .name = "unused", .version_id = (_v), .size = (_n),                        \
    .info = &vmstate_info_unused_buffer, .flags = VMS_UNUSED }
#define VMSTATE_UNUSED(_n) VMSTATE_UNUSED_V(0, _n)

/* Temporary struct: _tmp_type's FIRST member must be `_state *parent`. On
 * save, a zeroed _tmp_type is allocated, parent set, _vmsd's pre_save fills
 * it from the parent, its fields are saved. On load, _vmsd's post_load moves
 * the loaded values into the parent. Lets the wire format differ from the
 * device's in-memory layout. */
#define VMSTATE_WITH_TMP(_state, _tmp_type, _vmsd) {                           \
    .name = "tmp", .vmsd = &(_vmsd), .size = sizeof(_tmp_type),                \
    .flags = VMS_STRUCT | VMS_WITH_TMP }

#define VMSTATE_END_OF_LIST() { .flags = VMS_END }

#endif
