/*
 * vmstate-save.c: write a device's state and its JSON VM description.
 *
 * One level (device, struct, subsection, WITH_TMP temporary) saves as:
 *
 *   check the description (subsection names are "<name>/...", <= 255 bytes)
 *   pre_save                       -- a failure stops here, no post_save
 *   fields: for each that exists at vmsd->version_id, its elements
 *   subsections whose needed() is true (or that have no needed())
 *   post_save                      -- also after a failed field/subsection,
 *                                     so the device can undo pre_save
 *
 * Counts and sizes are checked against max here too: a device whose count
 * member exceeds its array is a bug, and reading past the array would send
 * another member's bytes (or fault).
 *
 * The VM description mirrors QEMU's vmstate.c so that QEMU's
 * scripts/analyze-migration.py decodes what we write:
 *   level:  "vmsd_name", "version", "fields": [...], ["subsections": [...]]
 *   field:  "name" ("name[k]" if the name repeats in the vmsd),
 *           ["array_len": n | "index": i], "type", ["struct": {level}],
 *           "size": bytes written for that element
 * An array whose elements cannot differ in shape (vms_field_can_compress) is
 * described once with "array_len"; otherwise each element has an entry with
 * "index" (QEMU 7.2's rule, which older and newer analyzers both read). In an
 * array of pointers, runs of NULL and non-NULL elements are described
 * separately (NULL is {"type": "nullptr", "size": 1}), as QEMU does since
 * 10.0. A WITH_TMP field is {"name": "tmp", "type": "tmp", <level of the
 * temporary's vmsd>, "size"}: QEMU writes the temporary inline like that.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "vmstate/vmstate-int.h"

typedef struct SaveLevel {
    FyStream *f;
    const VMStateDescription *vmsd;
    const char *kind;
    int depth;
} SaveLevel;

static int save_vmsd(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                     json_t *desc, int depth, const char *kind, FyError **errp);

/* ---- the description ---- */

static json_t *desc_entry(const char *name, const char *key, uint64_t num,
                          const char *type)
{
    json_t *e = json_object();
    if (!e)
        return NULL;
    json_object_set_new(e, "name", json_string(name));
    if (key)
        json_object_set_new(e, key, json_integer((json_int_t)num));
    json_object_set_new(e, "type", json_string(type));
    return e;
}

/* How many elements from i on share element i's NULL-ness. */
static uint64_t run_length(const VMStateField *field, const VMSFieldGeom *g,
                           uint64_t i, bool is_null)
{
    uint64_t j = i + 1;
    if (field->flags & VMS_ARRAY_OF_POINTER) {
        while (j < g->n && (vms_elem(field, g, j) == NULL) == is_null)
            j++;
        return j - i;
    }
    return g->n - i;
}

/* Describes the elements of one field as they are written: decides, for
 * element i, whether it gets its own entry (NULL if it is covered by an
 * earlier compressed one). */
typedef struct FieldDesc {
    json_t *fields;     /* the level's "fields" array, or NULL */
    const char *name;
    bool compress;
    uint64_t run_left;  /* elements still covered by the last entry */
    bool run_null;
} FieldDesc;

static json_t *field_desc_next(FieldDesc *fd, const VMStateField *field,
                               const VMSFieldGeom *g, uint64_t i, bool is_null)
{
    const char *type = is_null ? vmstate_info_nullptr.name
                               : vms_field_type_name(field);
    if (!fd->fields)
        return NULL;
    if (!fd->compress)
        return desc_entry(fd->name, g->n > 1 ? "index" : NULL, i, type);
    if (fd->run_left > 0 && is_null == fd->run_null) {
        fd->run_left--;
        return NULL;
    }
    uint64_t run = run_length(field, g, i, is_null);
    fd->run_left = run - 1;
    fd->run_null = is_null;
    return desc_entry(fd->name, run > 1 ? "array_len" : NULL, run, type);
}

/* ---- elements ---- */

static int save_tmp(const SaveLevel *lv, const VMStateField *field, void *pv,
                    json_t *entry, FyError **errp)
{
    void *tmp = vms_tmp_new(field, pv, errp);
    if (!tmp)
        return -1;
    int ret = save_vmsd(lv->f, field->vmsd, tmp, entry, lv->depth + 1, "tmp",
                        errp);
    free(tmp);
    return ret;
}

static int save_elem(const SaveLevel *lv, const VMStateField *field, void *elem,
                     size_t size, json_t *entry, FyError **errp)
{
    if (!elem) {
        if (!vms_is_nullable(field))
            return 0; /* an empty buffer behind a NULL pointer */
        return vmstate_info_nullptr.put(lv->f, NULL, 1, field, errp);
    }
    if (vms_is_tmp(field))
        return save_tmp(lv, field, elem, entry, errp);
    if (vms_is_struct(field)) {
        json_t *sub = NULL;
        if (!field->vmsd) {
            fy_error_setg(errp, "struct field without a vmsd in the description");
            return -1;
        }
        if (entry) {
            sub = json_object();
            json_object_set_new(entry, "struct", sub);
        }
        return save_vmsd(lv->f, field->vmsd, elem, sub, lv->depth + 1, "struct",
                         errp);
    }
    if (!field->info || !field->info->put) {
        fy_error_setg(errp, "no element type in the description");
        return -1;
    }
    if (field->info->put(lv->f, elem, size, field, errp) < 0) {
        if (!*errp)
            fy_error_setg(errp, "type '%s' failed to save", field->info->name);
        return -1;
    }
    return 0;
}

static int save_field(const SaveLevel *lv, const VMStateField *field,
                      void *opaque, json_t *fields, FyError **errp)
{
    FyStream *f = lv->f;
    char namebuf[256];
    VMSFieldGeom g;
    FieldDesc fd = { .fields = fields };

    if (vms_field_geom(field, opaque, &g, errp) < 0 ||
        vms_geom_check_pointer(field, &g, errp) < 0) {
        fy_error_prepend(errp, "%s '%s' field '%s': ", lv->kind, lv->vmsd->name,
                         field->name);
        return -1;
    }
    if (fields) {
        fd.name = vms_field_desc_name(lv->vmsd, field, namebuf, sizeof(namebuf));
        fd.compress = vms_field_can_compress(field);
    }
    for (uint64_t i = 0; i < g.n; i++) {
        void *elem = vms_elem(field, &g, i);
        bool is_null = !elem && vms_is_nullable(field);
        json_t *entry = field_desc_next(&fd, field, &g, i, is_null);
        uint64_t before = fy_stream_offset(f);
        int ret = save_elem(lv, field, elem, g.size, entry, errp);

        if (ret == 0 && fy_stream_error(f)) {
            fy_error_setg(errp, "%s", fy_error_msg(fy_stream_error(f)));
            ret = -1;
        }
        if (entry) {
            json_object_set_new(entry, "size",
                                json_integer((json_int_t)(fy_stream_offset(f) - before)));
            json_array_append_new(fields, entry);
        }
        if (ret < 0) {
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

static int save_fields(const SaveLevel *lv, void *opaque, json_t *fields,
                       FyError **errp)
{
    int version = lv->vmsd->version_id;

    for (const VMStateField *field = lv->vmsd->fields; !vms_is_end(field);
         field++) {
        bool exists = vms_field_exists(field, opaque, version);

        if (field->flags & VMS_MUST_EXIST) {
            if (!exists) {
                fy_error_setg(errp, "%s '%s': validation '%s' failed on the "
                              "source", lv->kind, lv->vmsd->name, field->name);
                return -1;
            }
            continue;
        }
        if (exists && save_field(lv, field, opaque, fields, errp) < 0)
            return -1;
    }
    return 0;
}

/* ---- subsections ---- */

static int check_subsection_names(const VMStateDescription *vmsd,
                                  FyError **errp)
{
    size_t plen = strlen(vmsd->name);

    if (!vmsd->subsections)
        return 0;
    for (const VMStateDescription *const *s = vmsd->subsections; *s; s++) {
        const char *name = (*s)->name;
        if (!name || strncmp(name, vmsd->name, plen) != 0 || name[plen] != '/' ||
            name[plen + 1] == '\0' || strlen(name) > 255) {
            fy_error_setg(errp, "subsection '%s' of '%s' must be named '%s/...' "
                          "(at most 255 bytes)", name ? name : "(null)",
                          vmsd->name, vmsd->name);
            return -1;
        }
    }
    return 0;
}

static int save_subsections(const SaveLevel *lv, void *opaque, json_t *desc,
                            FyError **errp)
{
    FyStream *f = lv->f;
    json_t *subs = NULL;

    if (!lv->vmsd->subsections)
        return 0;
    for (const VMStateDescription *const *s = lv->vmsd->subsections; *s; s++) {
        const VMStateDescription *sub = *s;
        json_t *sdesc = NULL;

        if (!vms_subsection_needed(sub, opaque))
            continue;
        if (desc) {
            /* Only devices that sent a subsection have the array. */
            if (!subs) {
                subs = json_array();
                json_object_set_new(desc, "subsections", subs);
            }
            sdesc = json_object();
            json_array_append_new(subs, sdesc);
        }
        fy_put_byte(f, VMS_WIRE_SUBSECTION);
        fy_put_counted_string(f, sub->name);
        fy_put_be32(f, (uint32_t)sub->version_id);
        if (save_vmsd(f, sub, opaque, sdesc, lv->depth + 1, "subsection",
                      errp) < 0) {
            fy_error_prepend(errp, "%s '%s' ", lv->kind, lv->vmsd->name);
            return -1;
        }
    }
    return 0;
}

/* ---- one level ---- */

static int run_save_hook(const SaveLevel *lv, const char *what, int ret,
                         FyError *hook_err, FyError **errp)
{
    if (ret == 0) {
        fy_error_free(hook_err);
        return 0;
    }
    if (hook_err)
        fy_error_setg(errp, "%s '%s': %s: %s", lv->kind, lv->vmsd->name, what,
                      fy_error_msg(hook_err));
    else
        fy_error_setg(errp, "%s '%s': %s hook failed (%d)", lv->kind,
                      lv->vmsd->name, what, ret);
    fy_error_free(hook_err);
    return -1;
}

static int save_vmsd(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                     json_t *desc, int depth, const char *kind, FyError **errp)
{
    SaveLevel lv = { f, vmsd, kind, depth };
    FyError *hook_err = NULL;
    json_t *fields = NULL;
    int ret;

    if (depth > VMS_MAX_DEPTH) {
        fy_error_setg(errp, "%s '%s': nested more than %d levels deep", kind,
                      vmsd->name, VMS_MAX_DEPTH);
        return -1;
    }
    if (check_subsection_names(vmsd, errp) < 0)
        return -1;
    if (vmsd->pre_save) {
        ret = vmsd->pre_save(opaque, &hook_err);
        if (run_save_hook(&lv, "pre_save", ret, hook_err, errp) < 0)
            return -1;
    }
    if (desc) {
        json_object_set_new(desc, "vmsd_name", json_string(vmsd->name));
        json_object_set_new(desc, "version", json_integer(vmsd->version_id));
        fields = json_array();
        json_object_set_new(desc, "fields", fields);
    }
    ret = save_fields(&lv, opaque, fields, errp);
    if (ret == 0)
        ret = save_subsections(&lv, opaque, desc, errp);
    if (vmsd->post_save) {
        FyError *post_err = NULL;
        int pret = vmsd->post_save(opaque, &post_err);
        if (ret == 0)
            ret = run_save_hook(&lv, "post_save", pret, post_err, errp);
        else
            fy_error_free(post_err);
    }
    return ret;
}

int vmstate_save_state(FyStream *f, const VMStateDescription *vmsd, void *opaque,
                       struct json_t *vmdesc, FyError **errp)
{
    FyError *err = NULL;

    if (vmdesc && !json_is_object(vmdesc)) {
        fy_error_setg(errp, "device '%s': the VM description must be a JSON "
                      "object", vmsd->name);
        return -1;
    }
    if (save_vmsd(f, vmsd, opaque, vmdesc, 0, "device", &err) < 0) {
        fy_error_propagate(errp, err);
        return -1;
    }
    return 0;
}
