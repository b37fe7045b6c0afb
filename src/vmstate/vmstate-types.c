/*
 * vmstate-types.c: the element encodings (VMStateInfo) of QEMU's vmstate.
 *
 * Every integer is big-endian at its natural width, bool is one byte (any
 * non-zero byte loads as true, as QEMU does), float64 is its IEEE-754 bits as
 * a be64. The names are QEMU's, because they go into the VM description and
 * scripts/analyze-migration.py picks its decoder by name (that is why the
 * uint64 equality check is called "int64 equal": QEMU names it so).
 *
 * get() runs on a sticky-error stream: after an error, reads return zeros.
 * The _equal checks therefore stay quiet when the stream has failed and let
 * the loader report the stream error, which is the real cause.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "vmstate/vmstate-int.h"

#define VMS_INT_INFO(_name, _type, _wire, _getfn, _putfn)                      \
    static int get_##_name(FyStream *f, void *pv, size_t size,                 \
                           const VMStateField *field, FyError **errp)          \
    {                                                                          \
        _type v = (_type)_getfn(f);                                            \
        memcpy(pv, &v, sizeof(v));                                             \
        return 0;                                                              \
    }                                                                          \
    static int put_##_name(FyStream *f, void *pv, size_t size,                 \
                           const VMStateField *field, FyError **errp)          \
    {                                                                          \
        _type v;                                                               \
        memcpy(&v, pv, sizeof(v));                                             \
        _putfn(f, (_wire)v);                                                   \
        return 0;                                                              \
    }                                                                          \
    const VMStateInfo vmstate_info_##_name = {                                 \
        .name = #_name, .get = get_##_name, .put = put_##_name,                \
    };

VMS_INT_INFO(int8, int8_t, uint8_t, fy_get_byte, fy_put_byte)
VMS_INT_INFO(int16, int16_t, uint16_t, fy_get_be16, fy_put_be16)
VMS_INT_INFO(int32, int32_t, uint32_t, fy_get_be32, fy_put_be32)
VMS_INT_INFO(int64, int64_t, uint64_t, fy_get_be64, fy_put_be64)
VMS_INT_INFO(uint8, uint8_t, uint8_t, fy_get_byte, fy_put_byte)
VMS_INT_INFO(uint16, uint16_t, uint16_t, fy_get_be16, fy_put_be16)
VMS_INT_INFO(uint32, uint32_t, uint32_t, fy_get_be32, fy_put_be32)
VMS_INT_INFO(uint64, uint64_t, uint64_t, fy_get_be64, fy_put_be64)

/* ---- bool ---- */

static int get_bool(FyStream *f, void *pv, size_t size,
                    const VMStateField *field, FyError **errp)
{
    bool v = fy_get_byte(f) != 0;
    memcpy(pv, &v, sizeof(v));
    return 0;
}

static int put_bool(FyStream *f, void *pv, size_t size,
                    const VMStateField *field, FyError **errp)
{
    bool v;
    memcpy(&v, pv, sizeof(v));
    fy_put_byte(f, v ? 1 : 0);
    return 0;
}

const VMStateInfo vmstate_info_bool = {
    .name = "bool", .get = get_bool, .put = put_bool,
};

/* ---- float64: the IEEE bits, so NaN payloads and -0.0 survive ---- */

static int get_float64(FyStream *f, void *pv, size_t size,
                       const VMStateField *field, FyError **errp)
{
    uint64_t bits = fy_get_be64(f);
    memcpy(pv, &bits, sizeof(bits));
    return 0;
}

static int put_float64(FyStream *f, void *pv, size_t size,
                       const VMStateField *field, FyError **errp)
{
    uint64_t bits;
    memcpy(&bits, pv, sizeof(bits));
    fy_put_be64(f, bits);
    return 0;
}

const VMStateInfo vmstate_info_float64 = {
    .name = "float64", .get = get_float64, .put = put_float64,
};

/* ---- opaque bytes ---- */

static int get_buffer(FyStream *f, void *pv, size_t size,
                      const VMStateField *field, FyError **errp)
{
    if (size)
        fy_get_buffer(f, pv, size);
    return 0;
}

static int put_buffer(FyStream *f, void *pv, size_t size,
                      const VMStateField *field, FyError **errp)
{
    if (size)
        fy_put_buffer(f, pv, size);
    return 0;
}

const VMStateInfo vmstate_info_buffer = {
    .name = "buffer", .get = get_buffer, .put = put_buffer,
};

/* ---- padding: zeros out, skipped in ---- */

static const uint8_t vms_zeros[1024];

static int get_unused_buffer(FyStream *f, void *pv, size_t size,
                             const VMStateField *field, FyError **errp)
{
    fy_skip(f, size);
    return 0;
}

static int put_unused_buffer(FyStream *f, void *pv, size_t size,
                             const VMStateField *field, FyError **errp)
{
    while (size > 0) {
        size_t chunk = size < sizeof(vms_zeros) ? size : sizeof(vms_zeros);
        fy_put_buffer(f, vms_zeros, chunk);
        size -= chunk;
    }
    return 0;
}

const VMStateInfo vmstate_info_unused_buffer = {
    .name = "unused_buffer", .get = get_unused_buffer, .put = put_unused_buffer,
};

/* ---- equality checks: the stream must carry the local value ---- */

static void equal_error(FyError **errp, const VMStateField *field,
                        const char *stream_val, const char *local_val)
{
    const char *hint = field ? field->err_hint : NULL;
    fy_error_setg(errp, "stream has %s, local is %s%s%s", stream_val, local_val,
                  hint ? ". " : "", hint ? hint : "");
}

#define VMS_EQUAL_INFO(_name, _qemu_name, _type, _getfn, _putname, _fmt)        \
    static int get_##_name(FyStream *f, void *pv, size_t size,                 \
                           const VMStateField *field, FyError **errp)          \
    {                                                                          \
        _type stream_v = (_type)_getfn(f), local_v;                            \
        memcpy(&local_v, pv, sizeof(local_v));                                 \
        if (fy_stream_error(f) || stream_v == local_v)                         \
            return 0;                                                          \
        char a[32], b[32];                                                     \
        snprintf(a, sizeof(a), "%" _fmt, stream_v);                            \
        snprintf(b, sizeof(b), "%" _fmt, local_v);                             \
        equal_error(errp, field, a, b);                                        \
        return -1;                                                             \
    }                                                                          \
    const VMStateInfo vmstate_info_##_name = {                                 \
        .name = _qemu_name, .get = get_##_name, .put = put_##_putname,         \
    };

VMS_EQUAL_INFO(uint8_equal, "uint8 equal", uint8_t, fy_get_byte, uint8, PRIu8)
VMS_EQUAL_INFO(uint16_equal, "uint16 equal", uint16_t, fy_get_be16, uint16, PRIu16)
VMS_EQUAL_INFO(uint32_equal, "uint32 equal", uint32_t, fy_get_be32, uint32, PRIu32)
VMS_EQUAL_INFO(uint64_equal, "int64 equal", uint64_t, fy_get_be64, uint64, PRIu64)
VMS_EQUAL_INFO(int32_equal, "int32 equal", int32_t, fy_get_be32, int32, PRId32)

/* ---- the NULL pointer marker ---- */

static int get_nullptr(FyStream *f, void *pv, size_t size,
                       const VMStateField *field, FyError **errp)
{
    uint8_t b = fy_get_byte(f);
    if (fy_stream_error(f) || b == VMS_WIRE_NULLPTR)
        return 0;
    fy_error_setg(errp, "stream has data (byte 0x%02x) where the local pointer "
                  "is NULL; expected the NULL marker 0x%02x", b,
                  VMS_WIRE_NULLPTR);
    return -1;
}

static int put_nullptr(FyStream *f, void *pv, size_t size,
                       const VMStateField *field, FyError **errp)
{
    if (pv) {
        fy_error_setg(errp, "the NULL marker is only written for NULL pointers");
        return -1;
    }
    fy_put_byte(f, VMS_WIRE_NULLPTR);
    return 0;
}

const VMStateInfo vmstate_info_nullptr = {
    .name = "nullptr", .get = get_nullptr, .put = put_nullptr,
};
