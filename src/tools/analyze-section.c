/*
 * analyze-section.c: one section record -- START/FULL or PART/END -- from
 * its header to its footer.
 *
 *   START/FULL  u8 type, be32 id, u8 len, idstr, be32 instance, be32 version
 *   PART/END    u8 type, be32 id
 *   body        by section: "ram" (analyze-ram.c), "spapr/htab" and
 *               "s390-storage_attributes" (their small formats, here), a
 *               device of the VM description (analyze-vmsd.c), or opaque:
 *               skipped to its footer (analyze-scan.c) and kept, when no
 *               description is known yet, to be decoded after EOF
 *   footer      0x7e, be32 id (send-section-footer, on since QEMU 2.4;
 *               whether a stream has them is learnt from its first section)
 *
 * A section id names one (idstr, instance) for the whole stream. Bytes are
 * accounted per section, and to the stop-and-copy phase from the first END
 * or FULL on (the source stops the VM before its completion pass).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

#define DEFERRED_MAX (64u << 20)
#define MAX_SECTIONS 65536

enum {
    T_START = 0x01, T_PART = 0x02, T_END = 0x03, T_FULL = 0x04, T_CMD = 0x08,
    T_FOOTER = 0x7e,
};

/* Section ids index an open-addressing table kept at most half full: a
 * stream may open tens of thousands of sections, and every PART/END (and
 * every footer candidate the scanner weighs) looks one up. */
static size_t id_slot(uint32_t id, size_t cap)
{
    return (size_t)((id * 2654435761u) & (cap - 1));
}

AnSection *an_section_by_id(An *a, uint32_t id)
{
    if (!a->sec_hash_cap)
        return NULL;
    for (size_t i = id_slot(id, a->sec_hash_cap);; i = (i + 1) & (a->sec_hash_cap - 1)) {
        AnSection *s = a->sec_hash[i];
        if (!s || s->id == id)
            return s;
    }
}

static bool index_section(An *a, AnSection *s)
{
    if ((a->nsecs + 1) * 2 > a->sec_hash_cap) {
        size_t ncap = a->sec_hash_cap ? a->sec_hash_cap * 2 : 128;
        AnSection **n = calloc(ncap, sizeof(*n));
        if (!n)
            return false;
        for (size_t i = 0; i < a->nsecs; i++) {
            size_t k = id_slot(a->secs[i]->id, ncap);
            while (n[k])
                k = (k + 1) & (ncap - 1);
            n[k] = a->secs[i];
        }
        free(a->sec_hash);
        a->sec_hash = n;
        a->sec_hash_cap = ncap;
    }
    size_t k = id_slot(s->id, a->sec_hash_cap);
    while (a->sec_hash[k])
        k = (k + 1) & (a->sec_hash_cap - 1);
    a->sec_hash[k] = s;
    return true;
}

void an_set_why(AnSection *s, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    free(s->why);
    s->why = strdup(buf);
}

static AnSection *new_section(An *a, uint32_t id, const uint8_t *name, size_t len,
                              uint32_t instance, uint32_t version, uint64_t off)
{
    if (a->nsecs >= MAX_SECTIONS) {
        an_fail(a, off, "more than %d sections", MAX_SECTIONS);
        return NULL;
    }
    if (a->nsecs == a->secs_cap) {
        size_t ncap = a->secs_cap ? a->secs_cap * 2 : 64;
        AnSection **n = realloc(a->secs, ncap * sizeof(*n));
        if (!n) {
            an_fail(a, off, "out of memory");
            return NULL;
        }
        a->secs = n;
        a->secs_cap = ncap;
    }
    AnSection *s = calloc(1, sizeof(*s));
    if (!s) {
        an_fail(a, off, "out of memory");
        return NULL;
    }
    s->id = id;
    if (!index_section(a, s)) {
        free(s);
        an_fail(a, off, "out of memory");
        return NULL;
    }
    memcpy(s->name, name, len);
    s->name[len] = '\0';
    an_printable(s->label, sizeof(s->label), name, len);
    s->instance = instance;
    s->version = version;
    s->first_off = off;
    s->order = (int)a->nsecs;
    a->secs[a->nsecs++] = s;

    if (!strcmp(s->name, "ram") && instance == 0)
        s->kind = SEC_RAM;
    else if (!strcmp(s->name, "spapr/htab") && instance == 0)
        s->kind = SEC_HTAB;
    else if (!strcmp(s->name, "s390-storage_attributes") && instance == 0)
        s->kind = SEC_S390;
    else if (a->vmdesc && (s->desc = an_find_device(a, s->name, instance)))
        s->kind = SEC_DEVICE;
    else
        s->kind = SEC_OPAQUE;
    return s;
}

/* ------------------------------------------------------------ small iterative formats */

static int htab_body(An *a, AnRd *r)
{
    uint64_t off = rd_off(r);
    if (!rd_need(r, 4)) {
        an_fail(a, off, "expected the HPT header (be32), found end of stream");
        return -1;
    }
    uint32_t header = ld_be32(rd_cur(r));
    r->pos += 4;
    if (header != 0)
        return 0; /* the hash shift, or "no HPT" */
    for (;;) {
        off = rd_off(r);
        if (!rd_need(r, 8)) {
            an_fail(a, off, "expected an HPT chunk (index, n_valid, n_invalid), "
                    "found end of stream");
            return -1;
        }
        const uint8_t *p = rd_cur(r);
        uint32_t index = ld_be32(p);
        uint16_t valid = ld_be16(p + 4), invalid = ld_be16(p + 6);
        r->pos += 8;
        if (!index && !valid && !invalid)
            return 0;
        if (rd_skip(r, (uint64_t)valid * 16) != (uint64_t)valid * 16) {
            an_fail(a, off, "HPT chunk: expected %u entries, found end of stream",
                    valid);
            return -1;
        }
    }
}

/* s390 storage attributes: be64 gfn<<12|flags records, MORE carrying a
 * be64 count and that many bytes, until EOS. The completion ends with DONE
 * then EOS; QEMU before 9.0 sent DONE alone, so after DONE a record that is
 * none of ours belongs to what follows the section. */
static int s390_body(An *a, AnRd *r)
{
    bool done = false;
    for (;;) {
        uint64_t off = rd_off(r);
        if (!rd_need(r, 8)) {
            if (done)
                return 0;
            an_fail(a, off, "expected a storage-attribute record, found end of "
                    "stream");
            return -1;
        }
        uint64_t v = ld_be64(rd_cur(r));
        unsigned flags = v & 0xfff;
        if (done && flags != 0x01 && flags != 0x02 && flags != 0x08)
            return 0;
        r->pos += 8;
        if (flags == 0x02) { /* MORE: be64 count + count bytes */
            if (!rd_need(r, 8)) {
                an_fail(a, rd_off(r), "expected a storage-attribute count, found "
                        "end of stream");
                return -1;
            }
            uint64_t count = ld_be64(rd_cur(r));
            r->pos += 8;
            if (rd_skip(r, count) != count) {
                an_fail(a, off, "storage attributes: expected %" PRIu64 " bytes, "
                        "found end of stream", count);
                return -1;
            }
        } else if (flags == 0x08) { /* DONE */
            done = true;
        } else if (flags == 0x01) { /* EOS */
            return 0;
        } else if (flags == 0x04) {
            an_fail(a, off, "storage attributes: the source flagged an ERROR "
                    "(QEMU: \"Storage attributes data is incomplete\")");
            return -1;
        } else {
            an_fail(a, off, "storage attributes: expected flag MORE, DONE or EOS, "
                    "found 0x%x (QEMU: \"Unexpected storage attribute flag data: "
                    "%#x\")", flags, flags);
            return -1;
        }
    }
}

/* ------------------------------------------------------------ device sections */

int an_device_body(An *a, AnRd *r, AnSection *s)
{
    json_t *jv = json_object_get(s->desc, "version");
    if (json_is_integer(jv) && json_integer_value(jv) != (json_int_t)s->version) {
        an_fail(a, rd_off(r), "the header says version %u, the VM description "
                "says %" JSON_INTEGER_FORMAT, s->version, json_integer_value(jv));
        return -1;
    }
    json_t *v = an_vmsd_decode(a, r, s->desc, "", 0);
    if (!v)
        return -1;
    json_decref(s->value);
    s->value = v;
    return 0;
}

/* A section whose footer never came. If what was kept of it ends with the
 * VM description (a pipe: the scan ran to the end of the stream), decode
 * the section with that description to say exactly where it went wrong,
 * as a file would have. Otherwise the scan's message stands. */
static void diagnose_unterminated(An *a, AnSection *s, const uint8_t *raw,
                                  size_t len, uint64_t off)
{
    char saved[sizeof(a->err)];
    uint64_t saved_off = a->err_off;
    size_t saved_plain = a->err_plain;
    memcpy(saved, a->err, sizeof(saved));
    a->failed = false;

    json_t *d = NULL, *old_desc = s->desc;
    uint64_t doff = 0, dlen = 0;
    bool better = false;
    if (an_desc_in_buf(a, raw, len, off + len, &d, &doff, &dlen) == 1 &&
        doff > off && (s->desc = an_desc_find_device(d, s->name, s->instance))) {
        AnRd mr;
        rd_init_mem(&mr, raw, (size_t)(doff - 1 - off), off);
        if (an_device_body(a, &mr, s) < 0) {
            better = true;
        } else if (rd_avail(&mr) && rd_peek(&mr, 0) != 0x7e) {
            an_fail(a, rd_off(&mr), "expected section footer 0x7e, found 0x%02x "
                    "(QEMU: \"Missing section footer for %s\")", rd_peek(&mr, 0),
                    s->label);
            better = true;
        }
        json_decref(s->value);
        s->value = NULL;
    }
    s->desc = old_desc;
    json_decref(d);
    if (!better) {
        memcpy(a->err, saved, sizeof(saved));
        a->err_off = saved_off;
        a->err_plain = saved_plain;
    }
    a->failed = true;
}

static int opaque_body(An *a, AnRd *r, AnSection *s, int type)
{
    if (a->footers == 0) {
        an_fail(a, rd_off(r), "cannot tell where this section ends: %s, and the "
                "stream has no section footers to find its end by",
                a->vmdesc ? "the VM description does not list it"
                          : "the VM description is not known yet (it comes at "
                            "the end; analyze a file, or pass --desc FILE)");
        return -1;
    }
    uint64_t body_off = rd_off(r);
    bool keep = !a->vmdesc && (type == T_FULL || type == T_START);
    uint64_t room = keep && a->deferred_bytes < DEFERRED_MAX
                        ? DEFERRED_MAX - a->deferred_bytes : 0;
    uint8_t *raw;
    size_t raw_len;
    bool all;
    if (an_scan_body(a, r, s, room, &raw, &raw_len, &all) < 0) {
        if (keep && all && raw)
            diagnose_unterminated(a, s, raw, raw_len, body_off);
        free(raw);
        return -1;
    }
    uint64_t body_len = rd_off(r) - body_off;
    if (keep) {
        free(s->raw);
        s->raw = all ? raw : NULL;
        s->raw_len = all ? raw_len : (size_t)body_len;
        s->raw_off = body_off;
        s->raw_kept = all;
        if (!all) {
            free(raw);
            an_set_why(s, "its body of %" PRIu64 " bytes is too big to keep while "
                    "reading a pipe (limit %u MiB in all); analyze a file, or pass "
                    "--desc FILE", body_len, DEFERRED_MAX >> 20);
        } else {
            a->deferred_bytes += raw_len;
        }
    } else {
        free(raw);
        s->raw_off = body_off;
        s->raw_len = (size_t)body_len;
        if (!s->why)
            an_set_why(s, "%s", a->vmdesc
                    ? (type == T_FULL ? "not listed in the VM description"
                                      : "an iterative section not listed in the VM "
                                        "description, whose format analyze does not "
                                        "know")
                    : "no VM description");
    }
    if (a->footers < 0)
        a->footers = 1;
    return 0;
}

static int read_footer(An *a, AnRd *r, AnSection *s)
{
    if (a->footers == 0)
        return 0;
    uint64_t off = rd_off(r);
    int b = rd_peek(r, 0);
    if (b == T_FOOTER) {
        if (!rd_need(r, 5)) {
            an_fail(a, off, "expected the section id after the footer byte, found "
                    "end of stream");
            return -1;
        }
        uint32_t id = ld_be32(rd_cur(r) + 1);
        if (id != s->id) {
            an_fail(a, off + 1, "expected section id %u in the footer, found %u "
                    "(QEMU: \"Mismatched section id in footer for %s\")", s->id,
                    id, s->label);
            return -1;
        }
        r->pos += 5;
        a->footers = 1;
        return 0;
    }
    if (a->footers < 0 && b >= 0 && b != T_FOOTER &&
        (b <= T_FULL || b == T_CMD)) {
        a->footers = 0; /* the first section has none: an old machine type */
        return 0;
    }
    char fb[32];
    an_fail(a, off, "expected section footer 0x7e, found %s (QEMU: \"Missing "
            "section footer for %s\")", an_found(r, 0, fb), s->label);
    return -1;
}

static void account(An *a, AnSection *s, int st, uint64_t start, uint64_t end)
{
    s->bytes += end - start;
    s->count[st]++;
    if (a->in_downtime)
        s->downtime_bytes += end - start;
}

static void enter_downtime(An *a, int type, uint64_t off)
{
    if (a->depth == 0 && !a->in_downtime && !a->postcopy &&
        (type == T_END || type == T_FULL)) {
        a->in_downtime = true;
        a->downtime_off = off;
    }
}

static int section_body(An *a, AnRd *r, AnSection *s, int type)
{
    switch (s->kind) {
    case SEC_RAM:
        return an_ram_section(a, r, s);
    case SEC_HTAB:
        return htab_body(a, r);
    case SEC_S390:
        return s390_body(a, r);
    case SEC_DEVICE:
        if (type == T_FULL || type == T_START)
            return an_device_body(a, r, s);
        return opaque_body(a, r, s, type);
    default:
        return opaque_body(a, r, s, type);
    }
}

int an_start_full(An *a, AnRd *r, int type, uint64_t off)
{
    if (!rd_need(r, 6)) {
        an_fail(a, off, "expected a section header (be32 id, u8 len, idstr, be32 "
                "instance, be32 version), found end of stream");
        return -1;
    }
    const uint8_t *p = rd_cur(r);
    uint32_t id = ld_be32(p + 1);
    size_t len = p[5];
    if (!rd_need(r, 6 + len + 8)) {
        an_fail(a, off, "expected a section header of %zu bytes, found end of "
                "stream", 14 + len);
        return -1;
    }
    p = rd_cur(r);
    const uint8_t *name = p + 6;
    uint32_t instance = ld_be32(p + 6 + len), version = ld_be32(p + 10 + len);
    char label[300];
    an_printable(label, sizeof(label), name, len);
    if (len == 0 || memchr(name, 0, len)) {
        an_fail(a, off + 5, "expected a section name, found %s", len ? "one with a "
                "NUL byte" : "an empty one");
        return -1;
    }
    r->pos += 6 + len + 8;
    AnSection *s = an_section_by_id(a, id);
    if (s && (strlen(s->name) != len || memcmp(s->name, name, len) ||
              s->instance != instance)) {
        /* QEMU looks entries up by name, but a section id names one entry */
        an_fail(a, off + 1, "section id %u is already used by '%s' instance %u, "
                "found '%s' instance %u", id, s->label, s->instance, label,
                instance);
        return -1;
    }
    if (!s) {
        s = new_section(a, id, name, len, instance, version, off);
        if (!s)
            return -1;
    }
    an_set_ctx(a, s);
    if (s->kind == SEC_RAM && version != 4) {
        an_fail(a, off, "expected RAM section version 4, found %u", version);
        return -1;
    }
    enter_downtime(a, type, off);
    if (section_body(a, r, s, type) < 0 || read_footer(a, r, s) < 0)
        return -1;
    account(a, s, type == T_START ? AN_ST_START : AN_ST_FULL, off, rd_off(r));
    an_set_ctx(a, NULL);
    return 0;
}

int an_part_end(An *a, AnRd *r, int type, uint64_t off)
{
    if (!rd_need(r, 5)) {
        an_fail(a, off, "expected a section id after the %s byte, found end of "
                "stream", type == T_PART ? "PART" : "END");
        return -1;
    }
    uint32_t id = ld_be32(rd_cur(r) + 1);
    AnSection *s = an_section_by_id(a, id);
    if (!s) {
        an_fail(a, off + 1, "%s record for section id %u, which no START opened "
                "(QEMU: \"Unknown savevm section %u\")",
                type == T_PART ? "PART" : "END", id, id);
        return -1;
    }
    r->pos += 5;
    an_set_ctx(a, s);
    enter_downtime(a, type, off);
    if (section_body(a, r, s, type) < 0 || read_footer(a, r, s) < 0)
        return -1;
    account(a, s, type == T_PART ? AN_ST_PART : AN_ST_END, off, rd_off(r));
    an_set_ctx(a, NULL);
    return 0;
}

