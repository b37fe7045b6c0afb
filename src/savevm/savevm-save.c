/*
 * savevm-save.c: writing QEMU's stream (format version 3).
 *
 * The order of a migration (QEMU's migration_thread, savevm.c):
 *
 *   header        be32 magic, be32 3, [0x07 configuration]
 *   setup         START section of every active entry with save_setup
 *   iterate*      PART sections, one entry at a time: an entry that is not
 *                 done (or hit the rate limit) ends the round, so a fast
 *                 changing entry is not resent over and over
 *   complete      END sections (save_live_complete_precopy), then FULL
 *                 sections of the vmsd and legacy (save_state) entries
 *   finish        0x00 EOF, [0x06 be32 len, JSON VM description]
 *
 * Every section is `header, body, [footer 0x7e be32 section_id]`.
 *
 * The VM description is built as the sections are written, in QEMU's shape
 * and key order: {"configuration": {...}, "page_size": N, "devices": [...]}.
 * Only FULL sections appear in "devices" (iterative entries such as "ram"
 * are decoded by analyze-migration.py without one). A legacy handler
 * section is one field {"name": "data", "size": N, "type": "buffer"}.
 * jansson's default formatting (", " and ": ") is the same as QEMU's
 * non-pretty JSON writer.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "savevm/savevm-int.h"

/* ---- section framing ---- */

static void section_header(FyStream *f, const SaveStateEntry *se, uint8_t type)
{
    fy_put_byte(f, type);
    fy_put_be32(f, se->section_id);
    if (type == QEMU_VM_SECTION_START || type == QEMU_VM_SECTION_FULL) {
        fy_put_byte(f, (uint8_t)se->idlen);
        fy_put_buffer(f, se->idstr, se->idlen);
        fy_put_be32(f, (uint32_t)se->instance_id);
        fy_put_be32(f, (uint32_t)se->version_id);
    }
}

static void section_footer(const FySaveState *s, FyStream *f,
                           const SaveStateEntry *se)
{
    if (s->config.send_section_footer) {
        fy_put_byte(f, QEMU_VM_SECTION_FOOTER);
        fy_put_be32(f, se->section_id);
    }
}

/* After a handler or vmsd save: turn its result, its error or the stream's
 * error into *errp with the section named. */
static int section_result(const SaveStateEntry *se, FyStream *f,
                          const char *what, int ret, FyError *err,
                          FyError **errp)
{
    if (ret < 0 || err) {
        if (!err)
            fy_error_setg(&err, "%s failed (%d)", what, ret);
    } else if (fy_stream_error(f)) {
        err = fy_error_copy(fy_stream_error(f));
    } else {
        return 0;
    }
    fy_error_prepend(&err, "section '%s' instance %d (id %" PRIu32 "): %s: ",
                     se->idstr, se->instance_id, se->section_id, what);
    fy_error_propagate(errp, err);
    return -1;
}

/* ---- the VM description ---- */

static json_t *vmdesc_root(FySaveState *s)
{
    if (!s->vmdesc)
        s->vmdesc = json_object();
    return s->vmdesc;
}

/* "page_size" then "devices", after "configuration" if the header put one. */
static json_t *vmdesc_devices(FySaveState *s)
{
    json_t *root = vmdesc_root(s);
    if (!root)
        return NULL;
    int bits = s->config.target_page_bits;
    if (!json_object_get(root, "page_size"))
        json_object_set_new(root, "page_size",
                            json_integer(bits >= 0 && bits < 63
                                         ? (json_int_t)1 << bits : 0));
    json_t *devs = json_object_get(root, "devices");
    if (!devs) {
        devs = json_array();
        json_object_set_new(root, "devices", devs);
    }
    return devs;
}

/* ---- header ---- */

int fy_savevm_state_header(FySaveState *s, FyStream *f, FyError **errp)
{
    json_decref(s->vmdesc);
    s->vmdesc = NULL;
    json_t *root = vmdesc_root(s);

    fy_put_be32(f, QEMU_VM_FILE_MAGIC);
    fy_put_be32(f, QEMU_VM_FILE_VERSION);
    if (s->config.send_configuration) {
        json_t *conf = json_object();
        FyError *err = NULL;
        if (root && conf)
            json_object_set(root, "configuration", conf);
        fy_put_byte(f, QEMU_VM_CONFIGURATION);
        int ret = vmstate_save_state(f, &vmstate_configuration, &s->conf, conf,
                                     &err);
        json_decref(conf);
        if (ret < 0) {
            fy_error_prepend(&err, "configuration section: ");
            fy_error_propagate(errp, err);
            return -1;
        }
    }
    if (fy_stream_check(f, errp) < 0) {
        fy_error_prepend(errp, "writing the stream header: ");
        return -1;
    }
    return 0;
}

/* ---- setup and iteration ---- */

int fy_savevm_state_setup(FySaveState *s, FyStream *f, FyError **errp)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        FyError *err = NULL;

        if (!se->ops.save_setup || !se_is_active(se))
            continue;
        section_header(f, se, QEMU_VM_SECTION_START);
        int ret = se->ops.save_setup(f, se->opaque, &err);
        section_footer(s, f, se);
        if (section_result(se, f, "save_setup", ret, err, errp) < 0)
            return -1;
    }
    return 0;
}

/* In postcopy, entries that cannot do postcopy finished at the switch. */
static bool iterates_now(const SaveStateEntry *se, bool postcopy)
{
    return se->ops.save_live_iterate && se_is_active(se) &&
           (!se->ops.is_active_iterate || se->ops.is_active_iterate(se->opaque)) &&
           (!postcopy || (se->ops.has_postcopy && se->ops.has_postcopy(se->opaque)));
}

static int iterate(FySaveState *s, FyStream *f, bool postcopy, FyError **errp)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        FyError *err = NULL;
        int ret;

        if (!iterates_now(se, postcopy))
            continue;
        if (fy_stream_rate_limit_exceeded(f)) {
            if (fy_stream_check(f, errp) < 0)
                return -1;
            return 0;
        }
        section_header(f, se, QEMU_VM_SECTION_PART);
        ret = se->ops.save_live_iterate(f, se->opaque, &err);
        section_footer(s, f, se);
        if (section_result(se, f, "save_live_iterate", ret, err, errp) < 0)
            return -1;
        if (ret == 0)
            return 0;
    }
    return 1;
}

int fy_savevm_state_iterate(FySaveState *s, FyStream *f, FyError **errp)
{
    return iterate(s, f, false, errp);
}

int fy_savevm_state_iterate_postcopy(FySaveState *s, FyStream *f, FyError **errp)
{
    return iterate(s, f, true, errp);
}

static void pending(FySaveState *s, bool exact, uint64_t *must_precopy,
                    uint64_t *can_postcopy)
{
    uint64_t must = 0, can = 0;

    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        void (*fn)(void *, uint64_t *, uint64_t *) =
            exact ? se->ops.state_pending_exact : se->ops.state_pending_estimate;
        if (fn && se_is_active(se))
            fn(se->opaque, &must, &can);
    }
    if (must_precopy)
        *must_precopy = must;
    if (can_postcopy)
        *can_postcopy = can;
}

void fy_savevm_state_pending_estimate(FySaveState *s, uint64_t *must_precopy,
                                      uint64_t *can_postcopy)
{
    pending(s, false, must_precopy, can_postcopy);
}

void fy_savevm_state_pending_exact(FySaveState *s, uint64_t *must_precopy,
                                   uint64_t *can_postcopy)
{
    pending(s, true, must_precopy, can_postcopy);
}

/* ---- completion ---- */

int fy_savevm_state_complete_iterable(FySaveState *s, FyStream *f,
                                      bool in_postcopy, FyError **errp)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        FyError *err = NULL;

        if (!se->ops.save_live_complete_precopy || !se_is_active(se))
            continue;
        if (in_postcopy && se->ops.has_postcopy &&
            se->ops.has_postcopy(se->opaque))
            continue;
        section_header(f, se, QEMU_VM_SECTION_END);
        int ret = se->ops.save_live_complete_precopy(f, se->opaque, &err);
        section_footer(s, f, se);
        if (section_result(se, f, "save_live_complete_precopy", ret, err,
                           errp) < 0)
            return -1;
    }
    return 0;
}

/* A legacy section's body and its one-field description. */
static int save_legacy(SaveStateEntry *se, FyStream *f, json_t *dev,
                       FyError **errp)
{
    uint64_t before = fy_stream_offset(f);
    int ret = se->ops.save_state(f, se->opaque, errp);
    json_int_t size = (json_int_t)(fy_stream_offset(f) - before);

    if (dev) {
        json_t *fields = json_array();
        json_t *data = json_object();
        json_object_set_new(dev, "size", json_integer(size));
        json_object_set_new(data, "name", json_string("data"));
        json_object_set_new(data, "size", json_integer(size));
        json_object_set_new(data, "type", json_string("buffer"));
        json_array_append_new(fields, data);
        json_object_set_new(dev, "fields", fields);
    }
    return ret;
}

static bool saved_in_full(const SaveStateEntry *se)
{
    if (se->vmsd)
        return !se->vmsd->needed || se->vmsd->needed(se->opaque);
    return se->ops.save_state != NULL;
}

int fy_savevm_state_complete_devices(FySaveState *s, FyStream *f, FyError **errp)
{
    json_t *devs = vmdesc_devices(s);

    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        FyError *err = NULL;
        int ret;

        if (!saved_in_full(se))
            continue;
        json_t *dev = devs ? json_object() : NULL;
        if (dev) {
            json_object_set_new(dev, "name", json_string(se->idstr));
            json_object_set_new(dev, "instance_id",
                                json_integer(se->instance_id));
        }
        section_header(f, se, QEMU_VM_SECTION_FULL);
        if (se->vmsd)
            ret = vmstate_save_state(f, se->vmsd, se->opaque, dev, &err);
        else
            ret = save_legacy(se, f, dev, &err);
        section_footer(s, f, se);
        if (dev)
            json_array_append_new(devs, dev);
        if (section_result(se, f, se->vmsd ? "vmstate" : "save_state", ret,
                           err, errp) < 0)
            return -1;
    }
    return 0;
}

/* analyze-migration.py finds the description as "the first '{' after the
 * last NUL byte" and then checks for 0x06 five bytes before it. A length
 * whose big-endian bytes hold a '{' after their last zero byte (1 in 256
 * lengths, e.g. 379 = 00 00 01 7b) defeats that: QEMU's own streams with
 * such a length cannot be analyzed. */
static bool len_hides_json(uint32_t len)
{
    bool brace = false;
    for (int i = 0; i < 4; i++) {
        uint8_t c = (uint8_t)(len >> (24 - 8 * i));
        if (c == 0)
            brace = false;
        else if (c == '{')
            brace = true;
    }
    return brace;
}

static int put_vmdesc(FySaveState *s, FyStream *f, FyError **errp)
{
    vmdesc_devices(s);
    char *js = s->vmdesc ? json_dumps(s->vmdesc, 0) : NULL;
    size_t len = js ? strlen(js) : 0;

    /* Trailing blanks are still the same JSON: pad past a bad length. */
    while (js && len_hides_json((uint32_t)len)) {
        char *n = realloc(js, len + 2);
        if (!n) {
            free(js);
            js = NULL;
            break;
        }
        js = n;
        js[len++] = ' ';
        js[len] = '\0';
    }
    if (!js) {
        fy_error_setg(errp, "out of memory writing the VM description");
        return -1;
    }
    fy_put_byte(f, QEMU_VM_VMDESCRIPTION);
    fy_put_be32(f, (uint32_t)len);
    fy_put_buffer(f, js, len);
    free(js);
    return 0;
}

int fy_savevm_state_finish(FySaveState *s, FyStream *f, FyError **errp)
{
    fy_put_byte(f, QEMU_VM_EOF);
    if (s->config.send_vmdesc && put_vmdesc(s, f, errp) < 0)
        return -1;
    fy_stream_flush(f);
    if (fy_stream_check(f, errp) < 0) {
        fy_error_prepend(errp, "writing the end of the stream: ");
        return -1;
    }
    return 0;
}

int fy_savevm_state_complete_precopy(FySaveState *s, FyStream *f, FyError **errp)
{
    if (fy_savevm_state_complete_iterable(s, f, false, errp) < 0 ||
        fy_savevm_state_complete_devices(s, f, errp) < 0)
        return -1;
    return fy_savevm_state_finish(s, f, errp);
}

int fy_savevm_state_complete_postcopy(FySaveState *s, FyStream *f,
                                      FyError **errp)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        FyError *err = NULL;

        if (!se->ops.save_live_complete_postcopy || !se_is_active(se))
            continue;
        section_header(f, se, QEMU_VM_SECTION_END);
        int ret = se->ops.save_live_complete_postcopy(f, se->opaque, &err);
        section_footer(s, f, se);
        if (section_result(se, f, "save_live_complete_postcopy", ret, err,
                           errp) < 0)
            return -1;
    }
    fy_put_byte(f, QEMU_VM_EOF);
    fy_stream_flush(f);
    return fy_stream_check(f, errp);
}

void fy_savevm_state_cleanup(FySaveState *s)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        if (se->ops.save_cleanup)
            se->ops.save_cleanup(se->opaque);
    }
    json_decref(s->vmdesc);
    s->vmdesc = NULL;
}

int fy_savevm_save_all(FySaveState *s, FyStream *f, FyError **errp)
{
    int ret = fy_savevm_state_header(s, f, errp);

    if (ret == 0)
        ret = fy_savevm_state_setup(s, f, errp);
    while (ret == 0) {
        ret = fy_savevm_state_iterate(s, f, errp);
        if (ret == 0 && fy_stream_rate_limit_exceeded(f))
            fy_stream_rate_limit_wait(f);
    }
    if (ret > 0)
        ret = fy_savevm_state_complete_precopy(s, f, errp);
    fy_savevm_state_cleanup(s);
    return ret < 0 ? -1 : 0;
}
