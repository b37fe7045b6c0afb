/*
 * vmstate-json.c: a device's state as JSON values (vmstate_to_json).
 *
 * The debug view used to compare a source device with its destination
 * copy: it walks the description exactly as the saver does (same existence
 * rules, same geometry and bounds), but reads memory instead of writing a
 * stream, and calls no device hooks except a WITH_TMP temporary's pre_save,
 * which is what gives the temporary its contents.
 *
 * Shape: an object with one member per field that exists at vmsd->version_id
 * (named as in the VM description, "name[k]" for repeated names), plus one
 * member per needed subsection, named by the subsection and holding the same
 * kind of object (as analyze-migration.py shows them). Values:
 *   integers -> numbers (a uint64 above INT64_MAX -> "0x..." string)
 *   bool -> true/false; float64 -> number ("nan", "inf", "-inf" strings)
 *   buffers -> lowercase hex string; struct -> object; NULL pointer -> null
 *   arrays (fixed, variable, of pointers) -> JSON arrays
 *   other element types -> hex of the bytes their put() writes
 * UNUSED padding and VALIDATE checks have no value and are left out. A field
 * whose geometry is broken (count above max) shows as "<error: ...>" rather
 * than reading out of bounds.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "vmstate/vmstate-int.h"

static json_t *dump_vmsd(const VMStateDescription *vmsd, void *opaque,
                         int depth);

static json_t *hex_string(const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 * n + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    s[2 * n] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

static json_t *error_value(FyError *err)
{
    json_t *j = json_sprintf("<error: %s>", fy_error_msg(err));
    fy_error_free(err);
    return j;
}

/* An element type we do not know: show the bytes it would send. */
static json_t *dump_by_put(const VMStateField *field, void *elem, size_t size)
{
    FyChannel *c = fy_channel_mem_new(NULL, 0);
    FyStream *f = c ? fy_stream_new_output(c, true) : NULL;
    FyError *err = NULL;
    json_t *j = NULL;

    if (!f) {
        fy_channel_close(c, NULL);
        return NULL;
    }
    if (field->info->put(f, elem, size, field, &err) == 0 &&
        fy_stream_flush(f) == 0) {
        size_t len;
        const uint8_t *data = fy_channel_mem_data(c, &len);
        j = hex_string(data, len);
    } else {
        if (!err)
            err = fy_error_copy(fy_stream_error(f));
        j = error_value(err);
        err = NULL;
    }
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return j;
}

static json_t *dump_float(const void *elem)
{
    double d;
    memcpy(&d, elem, sizeof(d));
    if (isnan(d))
        return json_string("nan");
    if (isinf(d))
        return json_string(d < 0 ? "-inf" : "inf");
    return json_real(d);
}

static json_t *dump_uint64(const void *elem)
{
    uint64_t v;
    memcpy(&v, elem, sizeof(v));
    if (v <= INT64_MAX)
        return json_integer((json_int_t)v);
    return json_sprintf("0x%016llx", (unsigned long long)v);
}

/* Integers of the widths the info names, read without alignment
 * assumptions. */
static int64_t read_signed(const void *elem, size_t width)
{
    int8_t i8; int16_t i16; int32_t i32; int64_t i64;
    switch (width) {
    case 1: memcpy(&i8, elem, 1); return i8;
    case 2: memcpy(&i16, elem, 2); return i16;
    case 4: memcpy(&i32, elem, 4); return i32;
    default: memcpy(&i64, elem, 8); return i64;
    }
}

static uint64_t read_unsigned(const void *elem, size_t width)
{
    uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;
    switch (width) {
    case 1: memcpy(&u8, elem, 1); return u8;
    case 2: memcpy(&u16, elem, 2); return u16;
    case 4: memcpy(&u32, elem, 4); return u32;
    default: memcpy(&u64, elem, 8); return u64;
    }
}

static json_t *dump_scalar(const VMStateField *field, void *elem, size_t size)
{
    const VMStateInfo *info = field->info;
    bool b;

    if (info == &vmstate_info_bool) {
        memcpy(&b, elem, sizeof(b));
        return json_boolean(b);
    }
    if (info == &vmstate_info_int8)
        return json_integer(read_signed(elem, 1));
    if (info == &vmstate_info_int16)
        return json_integer(read_signed(elem, 2));
    if (info == &vmstate_info_int32 || info == &vmstate_info_int32_equal)
        return json_integer(read_signed(elem, 4));
    if (info == &vmstate_info_int64)
        return json_integer(read_signed(elem, 8));
    if (info == &vmstate_info_uint8 || info == &vmstate_info_uint8_equal)
        return json_integer((json_int_t)read_unsigned(elem, 1));
    if (info == &vmstate_info_uint16 || info == &vmstate_info_uint16_equal)
        return json_integer((json_int_t)read_unsigned(elem, 2));
    if (info == &vmstate_info_uint32 || info == &vmstate_info_uint32_equal)
        return json_integer((json_int_t)read_unsigned(elem, 4));
    if (info == &vmstate_info_uint64 || info == &vmstate_info_uint64_equal)
        return dump_uint64(elem);
    if (info == &vmstate_info_float64)
        return dump_float(elem);
    if (info == &vmstate_info_buffer)
        return hex_string(elem, size);
    if (info && info->put)
        return dump_by_put(field, elem, size);
    return json_string("<no element type>");
}

static json_t *dump_elem(const VMStateField *field, void *elem, size_t size,
                         int depth)
{
    if (!elem)
        return vms_is_nullable(field) ? json_null() : json_string("");
    if (vms_is_struct(field)) {
        if (!field->vmsd)
            return json_string("<struct without a vmsd>");
        return dump_vmsd(field->vmsd, elem, depth + 1);
    }
    return dump_scalar(field, elem, size);
}

static json_t *dump_tmp(const VMStateField *field, void *pv, int depth)
{
    FyError *err = NULL;
    void *tmp = vms_tmp_new(field, pv, &err);
    json_t *j;

    if (!tmp)
        return error_value(err);
    if (field->vmsd->pre_save && field->vmsd->pre_save(tmp, &err) != 0) {
        j = err ? error_value(err) : json_string("<error: pre_save failed>");
    } else {
        j = dump_vmsd(field->vmsd, tmp, depth + 1);
        if (field->vmsd->post_save) {
            field->vmsd->post_save(tmp, &err);
            fy_error_free(err);
        }
    }
    free(tmp);
    return j;
}

static json_t *dump_field(const VMStateField *field, void *opaque, int depth)
{
    FyError *err = NULL;
    VMSFieldGeom g;

    if (vms_field_geom(field, opaque, &g, &err) < 0 ||
        vms_geom_check_pointer(field, &g, &err) < 0)
        return error_value(err);
    if (vms_is_tmp(field))
        return dump_tmp(field, vms_elem(field, &g, 0), depth);
    if (!vms_is_array(field))
        return dump_elem(field, vms_elem(field, &g, 0), g.size, depth);

    json_t *arr = json_array();
    for (uint64_t i = 0; arr && i < g.n; i++)
        json_array_append_new(arr, dump_elem(field, vms_elem(field, &g, i),
                                             g.size, depth));
    return arr;
}

static bool has_value(const VMStateField *field)
{
    return !(field->flags & (VMS_MUST_EXIST | VMS_UNUSED)) &&
           field->info != &vmstate_info_unused_buffer;
}

static json_t *dump_vmsd(const VMStateDescription *vmsd, void *opaque,
                         int depth)
{
    char namebuf[256];

    if (depth > VMS_MAX_DEPTH)
        return json_string("<nested too deep>");
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    for (const VMStateField *field = vmsd->fields; !vms_is_end(field); field++) {
        if (!has_value(field) ||
            !vms_field_exists(field, opaque, vmsd->version_id))
            continue;
        json_object_set_new(obj, vms_field_desc_name(vmsd, field, namebuf,
                                                     sizeof(namebuf)),
                            dump_field(field, opaque, depth));
    }
    if (vmsd->subsections) {
        for (const VMStateDescription *const *s = vmsd->subsections; *s; s++) {
            if (vms_subsection_needed(*s, opaque))
                json_object_set_new(obj, (*s)->name,
                                    dump_vmsd(*s, opaque, depth + 1));
        }
    }
    return obj;
}

struct json_t *vmstate_to_json(const VMStateDescription *vmsd, void *opaque)
{
    return dump_vmsd(vmsd, opaque, 0);
}
