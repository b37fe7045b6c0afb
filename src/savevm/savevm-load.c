/*
 * savevm-load.c: reading QEMU's stream (format version 3).
 *
 *   header      be32 magic, be32 version (3; 2 is refused as obsolete)
 *   [0x07 configuration]   required when config->send_configuration
 *   load_setup of every active entry that has one
 *   records until 0x00 EOF:
 *     START/FULL  be32 id, u8 len, idstr, be32 instance, be32 version, body,
 *                 footer -- looked up by (idstr, instance); records the id
 *     PART/END    be32 id, body, footer -- looked up by that recorded id
 *     COMMAND     be16 cmd, be16 len, payload -- checked, then the hook
 *   [0x06 be32 len JSON]   the VM description, when config->send_vmdesc
 *   load_cleanup of every entry
 *
 * The stream is hostile: every record is checked before it is acted on; no
 * allocation is sized by the stream beyond a fixed bound (command payloads
 * <= 64 KiB, the VM description <= FY_MAX_VMDESC_SIZE and only as its bytes
 * arrive); idstr comparisons use the received length, so an embedded NUL
 * never matches; each record consumes bytes, so a finite stream ends.
 * Nested loads (a PACKAGED hook calling fy_loadvm_state_main) are bounded:
 * a package may not contain another package.
 *
 * Every error starts with the stream offset of the record it is about:
 *   "stream offset 812: section 'cpu' instance 0 (id 3): <why>"
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "savevm/savevm-int.h"

#define MAX_LOAD_DEPTH 2 /* the main stream and one package */

typedef struct LoadCtx {
    FySaveState *s;
    FyStream *f;
    const FyLoadHooks *hooks;
    FyLoadResult *result;
    uint64_t off;   /* where the current record started */
} LoadCtx;

static const char *section_type_name(uint8_t type)
{
    switch (type) {
    case QEMU_VM_SECTION_START: return "START";
    case QEMU_VM_SECTION_PART:  return "PART";
    case QEMU_VM_SECTION_END:   return "END";
    case QEMU_VM_SECTION_FULL:  return "FULL";
    default:                    return "?";
    }
}

/* ---- errors ---- */

/* Put "stream offset N: " in front of err and hand it to errp. */
static int fail_at(FyError **errp, uint64_t off, FyError *err)
{
    fy_error_prepend(&err, "stream offset %" PRIu64 ": ", off);
    fy_error_propagate(errp, err);
    return -1;
}

static int FY_PRINTF(3, 4)
failf_at(FyError **errp, uint64_t off, const char *fmt, ...)
{
    FyError *err = NULL;
    va_list ap;
    va_start(ap, fmt);
    fy_error_vsetg(&err, fmt, ap);
    va_end(ap);
    return fail_at(errp, off, err);
}

/* The stream's sticky error, with what we were reading. */
static int fail_stream(FyError **errp, uint64_t off, FyStream *f,
                       const char *what)
{
    return failf_at(errp, off, "%s: %s", what,
                    fy_error_msg(fy_stream_error(f)));
}

static int fail_section(FyError **errp, uint64_t off, const SaveStateEntry *se,
                        uint32_t section_id, FyError *err)
{
    fy_error_prepend(&err, "section '%s' instance %d (id %" PRIu32 "): ",
                     se->idstr, se->instance_id, section_id);
    return fail_at(errp, off, err);
}

/* ---- header and configuration ---- */

static int load_magic_version(FyStream *f, FyError **errp)
{
    uint64_t off = fy_stream_offset(f);
    uint32_t magic = fy_get_be32(f);

    if (fy_stream_error(f))
        return fail_stream(errp, off, f, "not a migration stream");
    if (magic != QEMU_VM_FILE_MAGIC)
        return failf_at(errp, off, "not a migration stream: bad magic 0x%08"
                        PRIx32 " at offset %" PRIu64 " (expected 0x%08x)",
                        magic, off, QEMU_VM_FILE_MAGIC);
    off = fy_stream_offset(f);
    uint32_t version = fy_get_be32(f);
    if (fy_stream_error(f))
        return fail_stream(errp, off, f, "reading the stream version");
    if (version == QEMU_VM_FILE_VERSION_COMPAT)
        return failf_at(errp, off, "SaveVM v2 format is obsolete and no "
                        "longer supported");
    if (version != QEMU_VM_FILE_VERSION)
        return failf_at(errp, off, "unsupported migration stream version %"
                        PRIu32 " (expected %u)", version, QEMU_VM_FILE_VERSION);
    return 0;
}

/* The configuration section is required when we would send one (QEMU);
 * a stream that has one anyway is still checked. */
static int load_configuration(FySaveState *s, FyStream *f, FyError **errp)
{
    uint64_t off = fy_stream_offset(f);
    int b = fy_peek_byte(f, 0);

    if (b != QEMU_VM_CONFIGURATION) {
        if (fy_stream_error(f))
            return fail_stream(errp, off, f, "Configuration section missing");
        if (!s->config.send_configuration)
            return 0;
        if (b < 0)
            return failf_at(errp, off, "Configuration section missing: the "
                            "stream ends");
        return failf_at(errp, off, "Configuration section missing: found 0x%02x"
                        " where 0x%02x was expected", b, QEMU_VM_CONFIGURATION);
    }
    fy_get_byte(f);

    FyError *err = NULL;
    if (vmstate_load_state(f, &vmstate_configuration, &s->conf,
                           vmstate_configuration.version_id, &err) < 0) {
        fy_error_prepend(&err, "configuration section: ");
        return fail_at(errp, off, err);
    }
    return 0;
}

int fy_loadvm_state_header(FySaveState *s, FyStream *f, FyError **errp)
{
    for (size_t i = 0; i < s->n_entries; i++)
        s->entries[i]->load_seen = false;
    if (load_magic_version(f, errp) < 0)
        return -1;
    return load_configuration(s, f, errp);
}

/* ---- setup and cleanup ---- */

static int load_begin(FySaveState *s, FyError **errp)
{
    s->load_active = true;
    s->devices_begun = false;
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        FyError *err = NULL;

        if (!se->ops.load_setup || !se_is_active(se))
            continue;
        if (se->ops.load_setup(se->opaque, &err) < 0) {
            if (!err)
                fy_error_setg(&err, "failed");
            fy_error_prepend(&err, "load_setup of section '%s' instance %d: ",
                             se->idstr, se->instance_id);
            fy_error_propagate(errp, err);
            return -1;
        }
        fy_error_free(err);
    }
    return 0;
}

void fy_loadvm_state_cleanup(FySaveState *s)
{
    if (!s->load_active)
        return;
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        if (se->ops.load_cleanup)
            se->ops.load_cleanup(se->opaque);
    }
    s->load_active = false;
}

/* ---- sections ---- */

static int load_body(LoadCtx *c, SaveStateEntry *se, uint32_t version,
                     FyError **errp)
{
    FyStream *f = c->f;
    int ret;

    if (se->vmsd)
        ret = vmstate_load_state(f, se->vmsd, se->opaque, (int)version, errp);
    else if (se->ops.load_state)
        ret = se->ops.load_state(f, se->opaque, (int)version, errp);
    else {
        fy_error_setg(errp, "this entry cannot be loaded (no load_state)");
        return -1;
    }
    if (ret < 0) {
        if (errp && !*errp)
            fy_error_setg(errp, "load_state failed (%d)", ret);
        return -1;
    }
    /* A handler that ignored a short read still failed. */
    return fy_stream_check(f, errp);
}

static int check_footer(LoadCtx *c, const SaveStateEntry *se,
                        uint32_t section_id, FyError **errp)
{
    FyStream *f = c->f;

    if (!c->s->config.send_section_footer)
        return 0;
    uint64_t off = fy_stream_offset(f);
    uint8_t mark = fy_get_byte(f);
    uint32_t id = mark == QEMU_VM_SECTION_FOOTER ? fy_get_be32(f) : 0;
    if (fy_stream_error(f)) {
        fy_error_setg(errp, "reading the section footer for '%s': %s",
                      se->idstr, fy_error_msg(fy_stream_error(f)));
        return -1;
    }
    if (mark != QEMU_VM_SECTION_FOOTER) {
        fy_error_setg(errp, "Missing section footer for '%s' (found 0x%02x at "
                      "offset %" PRIu64 ")", se->idstr, mark, off);
        return -1;
    }
    if (id != section_id) {
        fy_error_setg(errp, "Mismatched section id in footer for '%s': read %"
                      PRIu32 ", expected %" PRIu32, se->idstr, id, section_id);
        return -1;
    }
    return 0;
}

/* Body, footer, then the progress hook. */
static int load_section_rest(LoadCtx *c, SaveStateEntry *se, uint8_t type,
                             uint32_t section_id, uint32_t version,
                             FyError **errp)
{
    FyError *err = NULL;

    if (load_body(c, se, version, &err) < 0 ||
        check_footer(c, se, section_id, &err) < 0)
        return fail_section(errp, c->off, se, section_id, err);
    if (c->hooks && c->hooks->section_loaded)
        c->hooks->section_loaded(c->hooks->opaque, se->idstr, se->instance_id,
                                 type);
    return 0;
}

/* The id a START/FULL announced now means this entry, and only it. */
static void remember_section(FySaveState *s, SaveStateEntry *se,
                             uint32_t section_id, uint32_t version)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        if (s->entries[i]->load_section_id == section_id)
            s->entries[i]->load_seen = false;
    }
    se->load_seen = true;
    se->load_section_id = section_id;
    se->load_version_id = version;
}

static int load_start_full(LoadCtx *c, uint8_t type, FyError **errp)
{
    FyStream *f = c->f;
    char idstr[256];

    uint32_t section_id = fy_get_be32(f);
    int idlen = fy_get_counted_string(f, idstr);
    uint32_t instance_id = fy_get_be32(f);
    uint32_t version = fy_get_be32(f);
    if (fy_stream_error(f) || idlen < 0)
        return failf_at(errp, c->off, "%s section header: %s",
                        section_type_name(type),
                        fy_error_msg(fy_stream_error(f)));

    SaveStateEntry *se = fy_savevm_find(c->s, idstr, (size_t)idlen, instance_id);
    if (!se) {
        char shown[256];
        fy_savevm_printable(shown, idstr, (size_t)idlen);
        return failf_at(errp, c->off, "Unknown section or instance '%s' %" PRIu32
                        ". Make sure that your current VM setup matches your "
                        "saved VM setup, including any hotplugged devices",
                        shown, instance_id);
    }
    if (version > (uint32_t)se->version_id) {
        FyError *err = NULL;
        fy_error_setg(&err, "unsupported version %" PRIu32 " (local version "
                      "is %d)", version, se->version_id);
        return fail_section(errp, c->off, se, section_id, err);
    }
    if (type == QEMU_VM_SECTION_FULL && !c->s->devices_begun) {
        c->s->devices_begun = true;
        if (c->hooks && c->hooks->devices_begin)
            c->hooks->devices_begin(c->hooks->opaque);
    }
    remember_section(c->s, se, section_id, version);
    return load_section_rest(c, se, type, section_id, version, errp);
}

static int load_part_end(LoadCtx *c, uint8_t type, FyError **errp)
{
    FyStream *f = c->f;
    uint32_t section_id = fy_get_be32(f);

    if (fy_stream_error(f))
        return fail_stream(errp, c->off, f, type == QEMU_VM_SECTION_PART
                           ? "PART section header" : "END section header");
    SaveStateEntry *se = NULL;
    for (size_t i = 0; i < c->s->n_entries && !se; i++) {
        SaveStateEntry *e = c->s->entries[i];
        if (e->load_seen && e->load_section_id == section_id)
            se = e;
    }
    if (!se)
        return failf_at(errp, c->off, "Unknown section id %" PRIu32 " (%s "
                        "section): no START or FULL section announced it",
                        section_id, section_type_name(type));
    return load_section_rest(c, se, type, section_id, se->load_version_id,
                             errp);
}

/* ---- commands ---- */

/* What a command means without a migration around it. */
static int default_command(uint16_t cmd, FyError **errp)
{
    switch (cmd) {
    case MIG_CMD_OPEN_RETURN_PATH: /* nobody to answer; harmless */
    case MIG_CMD_PING:             /* no return path to pong on */
    case MIG_CMD_SWITCHOVER_START: /* QEMU 10 file streams carry it */
        return 0;
    default:
        fy_error_setg(errp, "command %s needs a migration context",
                      fy_mig_cmd_name(cmd));
        return -1;
    }
}

/* Returns 0 to go on, 1 when the hook stopped the load, -1 on error. */
static int load_command(LoadCtx *c, FyError **errp)
{
    FyStream *f = c->f;
    FyError *err = NULL;

    uint16_t cmd = fy_get_be16(f);
    uint16_t len = fy_get_be16(f);
    if (fy_stream_error(f))
        return fail_stream(errp, c->off, f, "command header");
    if (fy_mig_cmd_check_header(cmd, len, &err) < 0)
        return fail_at(errp, c->off, err);
    if (cmd == MIG_CMD_PACKAGED && c->s->load_depth >= MAX_LOAD_DEPTH)
        return failf_at(errp, c->off, "command PACKAGED inside a package");

    uint8_t *payload = malloc(len ? len : 1); /* len <= 64 KiB */
    if (!payload)
        return failf_at(errp, c->off, "command %s: out of memory",
                        fy_mig_cmd_name(cmd));
    fy_get_buffer(f, payload, len);
    if (fy_stream_error(f)) {
        free(payload);
        return failf_at(errp, c->off, "command %s payload: %s",
                        fy_mig_cmd_name(cmd), fy_error_msg(fy_stream_error(f)));
    }
    int ret = fy_mig_cmd_check(cmd, payload, len, &err);
    if (ret == 0) {
        if (c->hooks && c->hooks->command)
            ret = c->hooks->command(c->hooks->opaque, f, cmd, payload, len, &err);
        else
            ret = default_command(cmd, &err);
        if (ret < 0) {
            if (!err)
                fy_error_setg(&err, "failed (%d)", ret);
            fy_error_prepend(&err, "command %s: ", fy_mig_cmd_name(cmd));
        }
    }
    free(payload);
    if (ret < 0)
        return fail_at(errp, c->off, err);
    fy_error_free(err);
    return ret > 0 ? 1 : 0;
}

/* ---- the main loop ---- */

static int load_records(LoadCtx *c, FyError **errp)
{
    FyStream *f = c->f;

    for (;;) {
        c->off = fy_stream_offset(f);
        uint8_t type = fy_get_byte(f);
        int ret;

        if (fy_stream_error(f))
            return fail_stream(errp, c->off, f, "reading the next section");
        switch (type) {
        case QEMU_VM_EOF:
            if (c->result)
                c->result->eof_offset = c->off;
            return 0;
        case QEMU_VM_SECTION_START:
        case QEMU_VM_SECTION_FULL:
            ret = load_start_full(c, type, errp);
            break;
        case QEMU_VM_SECTION_PART:
        case QEMU_VM_SECTION_END:
            ret = load_part_end(c, type, errp);
            break;
        case QEMU_VM_COMMAND:
            ret = load_command(c, errp);
            if (ret > 0) {
                if (c->result)
                    c->result->stopped_by_hook = true;
                return 1;
            }
            break;
        default:
            return failf_at(errp, c->off, "unknown section type 0x%02x", type);
        }
        if (ret < 0)
            return -1;
    }
}

int fy_loadvm_state_main(FySaveState *s, FyStream *f, const FyLoadHooks *hooks,
                         FyLoadResult *result, FyError **errp)
{
    LoadCtx c = { s, f, hooks, result, fy_stream_offset(f) };

    if (!s->load_active && load_begin(s, errp) < 0)
        return -1;
    if (s->load_depth >= MAX_LOAD_DEPTH)
        return failf_at(errp, c.off, "nested stream inside a nested stream");
    s->load_depth++;
    int ret = load_records(&c, errp);
    s->load_depth--;
    return ret;
}

/* ---- the VM description after EOF ---- */

static int load_vmdesc(FyStream *f, FyLoadResult *result, FyError **errp)
{
    uint64_t off = fy_stream_offset(f);

    if (fy_peek_byte(f, 0) != QEMU_VM_VMDESCRIPTION) {
        /* QEMU only warns when it is missing; a stream error is real. */
        if (fy_stream_error(f))
            return fail_stream(errp, off, f, "VM description");
        return 0;
    }
    fy_get_byte(f);
    uint32_t len = fy_get_be32(f);
    if (fy_stream_error(f))
        return fail_stream(errp, off, f, "VM description");
    if (len > FY_MAX_VMDESC_SIZE)
        return failf_at(errp, off, "VM description of %" PRIu32 " bytes is "
                        "larger than the %u byte limit", len, FY_MAX_VMDESC_SIZE);

    /* Grow as the bytes arrive: a short stream never costs len bytes. */
    char *buf = NULL;
    size_t have = 0;
    while (have < len) {
        size_t chunk = len - have < (1u << 20) ? len - have : (1u << 20);
        char *nb = realloc(buf, have + chunk);
        if (!nb) {
            free(buf);
            return failf_at(errp, off, "VM description: out of memory");
        }
        buf = nb;
        if (fy_get_buffer(f, buf + have, chunk) != chunk) {
            free(buf);
            return fail_stream(errp, off, f, "VM description");
        }
        have += chunk;
    }
    json_error_t jerr;
    json_t *j = json_loadb(buf ? buf : "", len, 0, &jerr);
    free(buf);
    if (!j)
        return failf_at(errp, off, "VM description is not valid JSON: %s "
                        "(line %d, column %d)", jerr.text, jerr.line,
                        jerr.column);
    if (!json_is_object(j)) {
        json_decref(j);
        return failf_at(errp, off, "VM description is not a JSON object");
    }
    if (result)
        result->vmdesc = j;
    else
        json_decref(j);
    return 0;
}

int fy_loadvm_state(FySaveState *s, FyStream *f, const FyLoadHooks *hooks,
                    FyLoadResult *result, FyError **errp)
{
    FyLoadResult local = { 0 };

    if (!result)
        result = &local;
    result->vmdesc = NULL;
    result->eof_offset = 0;
    result->stopped_by_hook = false;

    if (fy_loadvm_state_header(s, f, errp) < 0)
        return -1;
    int ret = fy_loadvm_state_main(s, f, hooks, result, errp);
    if (ret > 0)
        return 0; /* postcopy goes on; the caller cleans up */
    if (ret == 0 && s->config.send_vmdesc)
        ret = load_vmdesc(f, result, errp);
    fy_loadvm_state_cleanup(s);
    if (result == &local)
        json_decref(local.vmdesc);
    return ret < 0 ? -1 : 0;
}
