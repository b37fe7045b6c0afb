/*
 * vmstate-load.c: read a device's state from the stream (vmstate_load_state).
 *
 * One level (a device, a nested struct, a subsection or a WITH_TMP
 * temporary) loads as:
 *
 *   check version in [minimum_version_id, version_id]
 *   pre_load
 *   fields, in order; each: exists at this version? -> geometry (counts and
 *     sizes checked against max) -> allocate if VMS_ALLOC -> elements
 *   subsections: while the next byte is 0x05 and the peeked name is
 *     "<this level's name>/...", consume it and load that subsection
 *   post_load (after the subsections, so it sees everything)
 *
 * The stream is hostile. Nothing is written to the device before the bound
 * that protects it is checked; every failure becomes an error that names the
 * level, the field (with the element index for arrays) and the stream offset
 * where the failing element began:
 *   "device 'cpu' field 'regs[3]': struct 'reg' field 'val': <why>
 *    (stream offset 812)"
 * The offset is added once, by the level where the failure happened; outer
 * levels only put their names in front.
 *
 * Subsection ownership: a 0x05 whose name does not start with "<name>/" is
 * not this level's; the level returns and its parent looks. The parent may be
 * a subsection list further out ("x/a" returns "x/b" to "x"), or, for a
 * nested struct, the next field of the enclosing level, whose bytes merely
 * happen to be 0x05 (QEMU's format has this ambiguity; we resolve it as QEMU
 * does). Only the device level, where no field can follow, refuses a
 * subsection that is not its own.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmstate/vmstate-int.h"

typedef struct LoadLevel {
    FyStream *f;
    const VMStateDescription *vmsd;
    const char *kind;  /* "device", "struct", "subsection", "tmp" */
    int depth;
    bool top;          /* the device level: stray subsections are errors */
} LoadLevel;

static int load_vmsd(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                     int64_t version_id, int depth, const char *kind, bool top,
                     FyError **errp);

/* ---- error helpers ---- */

/* Rewrite *errp as "<msg> (stream offset N)". */
static void add_offset(FyError **errp, uint64_t off)
{
    FyError *old = *errp;
    *errp = NULL;
    fy_error_setg(errp, "%s (stream offset %" PRIu64 ")", fy_error_msg(old), off);
    fy_error_free(old);
}

/* "<kind> '<name>': <msg> (stream offset N)" */
static void FY_PRINTF(4, 5)
level_err(const LoadLevel *lv, FyError **errp, uint64_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fy_error_vsetg(errp, fmt, ap);
    va_end(ap);
    add_offset(errp, off);
    fy_error_prepend(errp, "%s '%s': ", lv->kind, lv->vmsd->name);
}

/* Names read from the stream go into messages: keep them printable. */
static void printable(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e)
            s[i] = '?';
    }
}

/* After an element's get(): a stream failure (EOF, I/O) wins over whatever
 * the element type said, because it is the cause. */
static int finish_get(FyStream *f, const VMStateField *field, int ret,
                      uint64_t off, FyError **errp)
{
    const FyError *serr = fy_stream_error(f);
    if (serr) {
        fy_error_clear(errp);
        fy_error_setg(errp, "%s", fy_error_msg(serr));
    } else if (ret < 0) {
        if (!*errp)
            fy_error_setg(errp, "type '%s' failed to load",
                          vms_field_type_name(field));
    } else {
        return 0;
    }
    add_offset(errp, off);
    return -1;
}

/* ---- elements ---- */

static int load_tmp(const LoadLevel *lv, const VMStateField *field, void *pv,
                    FyError **errp)
{
    uint64_t off = fy_stream_offset(lv->f);
    void *tmp = vms_tmp_new(field, pv, errp);
    if (!tmp) {
        add_offset(errp, off);
        return -1;
    }
    int ret = load_vmsd(lv->f, field->vmsd, tmp, field->vmsd->version_id,
                        lv->depth + 1, "tmp", false, errp);
    free(tmp);
    return ret;
}

static int load_elem(const LoadLevel *lv, const VMStateField *field, void *elem,
                     size_t size, FyError **errp)
{
    FyStream *f = lv->f;
    uint64_t off = fy_stream_offset(f);

    if (!elem) {
        if (!vms_is_nullable(field))
            return 0; /* an empty buffer behind a NULL pointer */
        int ret = vmstate_info_nullptr.get(f, NULL, 1, field, errp);
        return finish_get(f, field, ret, off, errp);
    }
    if (vms_is_tmp(field))
        return load_tmp(lv, field, elem, errp);
    if (vms_is_struct(field)) {
        if (!field->vmsd) {
            fy_error_setg(errp, "struct field without a vmsd in the description");
            add_offset(errp, off);
            return -1;
        }
        return load_vmsd(f, field->vmsd, elem, field->vmsd->version_id,
                         lv->depth + 1, "struct", false, errp);
    }
    if (!field->info || !field->info->get) {
        fy_error_setg(errp, "no element type in the description");
        add_offset(errp, off);
        return -1;
    }
    int ret = field->info->get(f, elem, size, field, errp);
    return finish_get(f, field, ret, off, errp);
}

/* VMS_ALLOC: (re)allocate the pointed-to storage for exactly the bytes this
 * load will fill. Called after vms_field_geom bounded n and size. */
static int load_alloc(const VMStateField *field, void *opaque, VMSFieldGeom *g,
                      FyError **errp)
{
    uint8_t *slot = (uint8_t *)opaque + field->offset;
    size_t bytes = vms_geom_bytes(field, g);
    void *p;

    memcpy(&p, slot, sizeof(p));
    if (bytes == 0) {
        free(p);
        p = NULL;
    } else {
        void *np = realloc(p, bytes);
        if (!np) {
            fy_error_setg_errno(errp, ENOMEM, "allocating %zu bytes", bytes);
            return -1;
        }
        p = np;
        memset(p, 0, bytes);
    }
    memcpy(slot, &p, sizeof(p));
    size_t start = (field->flags & VMS_VBUFFER_UINT32) ? field->start : 0;
    g->base = p ? (uint8_t *)p + start : NULL;
    return 0;
}

static int load_field(const LoadLevel *lv, const VMStateField *field,
                      void *opaque, FyError **errp)
{
    FyStream *f = lv->f;
    uint64_t off = fy_stream_offset(f);
    VMSFieldGeom g;

    if (vms_field_geom(field, opaque, &g, errp) < 0 ||
        ((field->flags & VMS_POINTER) && (field->flags & VMS_ALLOC) &&
         load_alloc(field, opaque, &g, errp) < 0) ||
        vms_geom_check_pointer(field, &g, errp) < 0) {
        add_offset(errp, off);
        fy_error_prepend(errp, "%s '%s' field '%s': ", lv->kind, lv->vmsd->name,
                         field->name);
        return -1;
    }
    for (uint64_t i = 0; i < g.n; i++) {
        if (load_elem(lv, field, vms_elem(field, &g, i), g.size, errp) < 0) {
            if (vms_is_array(field))
                fy_error_prepend(errp, "%s '%s' field '%s[%" PRIu64 "]': ",
                                 lv->kind, lv->vmsd->name, field->name, i);
            else
                fy_error_prepend(errp, "%s '%s' field '%s': ", lv->kind,
                                 lv->vmsd->name, field->name);
            return -1;
        }
    }
    return 0;
}

static int load_fields(const LoadLevel *lv, void *opaque, int version_id,
                       FyError **errp)
{
    for (const VMStateField *field = lv->vmsd->fields; !vms_is_end(field);
         field++) {
        bool exists = vms_field_exists(field, opaque, version_id);

        if (field->flags & VMS_MUST_EXIST) {
            if (!exists) {
                level_err(lv, errp, fy_stream_offset(lv->f),
                          "validation '%s' failed", field->name);
                return -1;
            }
            continue; /* VALIDATE carries no data */
        }
        if (exists && load_field(lv, field, opaque, errp) < 0)
            return -1;
    }
    return 0;
}

/* ---- subsections ---- */

/* Does the subsection header at the read position name "<prefix>/..."?
 * Only the first VMS_PEEK_MAX bytes can be peeked; a longer prefix is
 * checked again in full once the name has been read. */
static bool peek_is_ours(FyStream *f, const char *prefix, size_t plen)
{
    int len = fy_peek_byte(f, 1);
    if (len < 0 || (size_t)len < plen + 1)
        return false;
    for (size_t i = 0; i <= plen && 2 + i < VMS_PEEK_MAX; i++) {
        int want = i < plen ? (unsigned char)prefix[i] : '/';
        if (fy_peek_byte(f, 2 + i) != want)
            return false;
    }
    return true;
}

static const VMStateDescription *find_subsection(const VMStateDescription *vmsd,
                                                 const char *name)
{
    if (!vmsd->subsections)
        return NULL;
    for (const VMStateDescription *const *s = vmsd->subsections; *s; s++) {
        if (strcmp((*s)->name, name) == 0)
            return *s;
    }
    return NULL;
}

/* Read "0x05, u8 len, name, be32 version" (already known to be ours). */
static int read_subsection_header(const LoadLevel *lv, char name[256],
                                  uint32_t *version, FyError **errp)
{
    FyStream *f = lv->f;
    uint64_t off = fy_stream_offset(f);

    fy_get_byte(f);
    uint8_t len = fy_get_byte(f);
    fy_get_buffer(f, name, len);
    name[len] = '\0';
    *version = fy_get_be32(f);
    if (fy_stream_error(f)) {
        level_err(lv, errp, off, "subsection header: %s",
                  fy_error_msg(fy_stream_error(f)));
        return -1;
    }
    size_t plen = strlen(lv->vmsd->name);
    if (memchr(name, '\0', len) || !find_subsection(lv->vmsd, name) ||
        strncmp(name, lv->vmsd->name, plen) != 0 || name[plen] != '/') {
        printable(name, len);
        level_err(lv, errp, off, "VM subsection '%s' in '%s' does not exist",
                  name, lv->vmsd->name);
        return -1;
    }
    return 0;
}

static int load_subsections(const LoadLevel *lv, void *opaque, FyError **errp)
{
    FyStream *f = lv->f;
    size_t plen = strlen(lv->vmsd->name);

    while (fy_peek_byte(f, 0) == VMS_WIRE_SUBSECTION &&
           peek_is_ours(f, lv->vmsd->name, plen)) {
        char name[256];
        uint32_t version;

        if (read_subsection_header(lv, name, &version, errp) < 0)
            return -1;
        if (load_vmsd(f, find_subsection(lv->vmsd, name), opaque, version,
                      lv->depth + 1, "subsection", false, errp) < 0) {
            fy_error_prepend(errp, "%s '%s' ", lv->kind, lv->vmsd->name);
            return -1;
        }
    }
    if (fy_stream_error(f)) {
        level_err(lv, errp, fy_stream_offset(f), "%s",
                  fy_error_msg(fy_stream_error(f)));
        return -1;
    }
    return 0;
}

/* The device level: nothing may follow its subsections but the end of the
 * section, so a subsection still waiting is a foreign one. */
static int refuse_stray_subsection(const LoadLevel *lv, FyError **errp)
{
    FyStream *f = lv->f;
    if (fy_peek_byte(f, 0) != VMS_WIRE_SUBSECTION)
        return 0;

    char name[VMS_PEEK_MAX];
    int len = fy_peek_byte(f, 1);
    size_t n = 0;
    while (len > 0 && n < (size_t)len && n + 2 < VMS_PEEK_MAX) {
        int c = fy_peek_byte(f, 2 + n);
        if (c < 0)
            break;
        name[n++] = (char)c;
    }
    name[n] = '\0';
    printable(name, n);
    level_err(lv, errp, fy_stream_offset(f),
              "VM subsection '%s%s' is not one of '%s': its name must start "
              "with '%s/'", name, len > 0 && n < (size_t)len ? "..." : "",
              lv->vmsd->name, lv->vmsd->name);
    return -1;
}

/* ---- one level ---- */

static int run_load_hook(const LoadLevel *lv, const char *what, int ret,
                         FyError *hook_err, FyError **errp)
{
    if (ret == 0) {
        fy_error_free(hook_err);
        return 0;
    }
    if (hook_err) {
        level_err(lv, errp, fy_stream_offset(lv->f), "%s: %s", what,
                  fy_error_msg(hook_err));
        fy_error_free(hook_err);
    } else {
        level_err(lv, errp, fy_stream_offset(lv->f), "%s hook failed (%d)",
                  what, ret);
    }
    return -1;
}

static int load_vmsd(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                     int64_t version_id, int depth, const char *kind, bool top,
                     FyError **errp)
{
    LoadLevel lv = { f, vmsd, kind, depth, top };
    uint64_t off = fy_stream_offset(f);
    FyError *hook_err = NULL;

    if (depth > VMS_MAX_DEPTH) {
        level_err(&lv, errp, off, "nested more than %d levels deep",
                  VMS_MAX_DEPTH);
        return -1;
    }
    if (version_id > vmsd->version_id) {
        level_err(&lv, errp, off, "stream version %" PRId64 " is newer than "
                  "supported %d", version_id, vmsd->version_id);
        return -1;
    }
    if (version_id < vmsd->minimum_version_id) {
        level_err(&lv, errp, off, "stream version %" PRId64 " is older than "
                  "minimum %d", version_id, vmsd->minimum_version_id);
        return -1;
    }
    if (vmsd->pre_load) {
        int ret = vmsd->pre_load(opaque, &hook_err);
        if (run_load_hook(&lv, "pre_load", ret, hook_err, errp) < 0)
            return -1;
    }
    if (load_fields(&lv, opaque, (int)version_id, errp) < 0 ||
        load_subsections(&lv, opaque, errp) < 0 ||
        (top && refuse_stray_subsection(&lv, errp) < 0))
        return -1;
    if (vmsd->post_load) {
        hook_err = NULL;
        int ret = vmsd->post_load(opaque, (int)version_id, &hook_err);
        if (run_load_hook(&lv, "post_load", ret, hook_err, errp) < 0)
            return -1;
    }
    return 0;
}

int vmstate_load_state(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                       int version_id, FyError **errp)
{
    FyError *err = NULL;

    if (load_vmsd(f, vmsd, opaque, version_id, 0, "device", true, &err) < 0) {
        fy_error_propagate(errp, err);
        return -1;
    }
    return 0;
}
