/*
 * analyze-stream.c: walk a migration stream from its magic to its end.
 *
 *   header      be32 "QEVM", be32 3
 *   [0x07 configuration]          no section header, no footer
 *   records until EOF (0x00):
 *     START/FULL  0x01/0x04 be32 id, u8 len, idstr, be32 instance, be32 version,
 *                 body, [footer 0x7e be32 id]
 *     PART/END    0x02/0x03 be32 id, body, [footer]
 *     COMMAND     0x08 be16 cmd, be16 len, payload (PACKAGED: a nested stream)
 *   [0x06 be32 len, the JSON VM description]
 *
 * Bodies by section: "ram" (analyze-ram.c), "spapr/htab" and
 * "s390-storage_attributes" (their own small formats), devices listed in
 * the description (analyze-vmsd.c), anything else opaque: skipped to its
 * footer (analyze-scan.c) and kept, if small, to decode later.
 *
 * Where the description comes from decides when devices are decoded:
 *   seekable file:  read from the end first; devices decode as they come
 *   pipe:           only known after EOF; device bodies are kept (up to
 *                   64 MiB in all) and decoded then; what could not be kept
 *                   or decoded is reported as undecoded, with the reason
 *   --desc FILE:    given; devices decode as they come
 *
 * Footers are on in every QEMU since 2.4 (send-section-footer); whether a
 * stream has them is learnt from its first section.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analyze-int.h"

#define MAGIC 0x5145564du
#define DEFERRED_MAX (64u << 20)
#define PACKAGED_MAX (256u << 20)
#define MAX_SECTIONS 65536
#define MAX_DEPTH 4
#define VMDESC_MAX (64u << 20)

enum {
    T_EOF = 0x00, T_START = 0x01, T_PART = 0x02, T_END = 0x03, T_FULL = 0x04,
    T_SUB = 0x05, T_DESC = 0x06, T_CONFIG = 0x07, T_CMD = 0x08, T_FOOTER = 0x7e,
};

/* ------------------------------------------------------------ lifecycle */

An *an_new(const AnOpts *o)
{
    An *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->o = *o;
    a->fd = -1;
    a->footers = -1;
    a->budget = 1u << 24;
    a->target_page_bits = -1;
    return a;
}

void an_free(An *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *s = a->secs[i];
        json_decref(s->value);
        free(s->raw);
        free(s->why);
        free(s);
    }
    free(a->secs);
    an_ram_free(a);
    json_decref(a->vmdesc);
    json_decref(a->stream_vmdesc);
    json_decref(a->config);
    free(a->vmdesc_problem);
    for (size_t i = 0; i < a->nnotes; i++)
        free(a->notes[i]);
    free(a->notes);
    rd_free(&a->rd);
    if (a->own_fd && a->fd >= 0)
        close(a->fd);
    free(a);
}

/* ------------------------------------------------------------ messages */

void an_fail(An *a, uint64_t off, const char *fmt, ...)
{
    if (a->failed)
        return;
    a->failed = true;
    a->err_off = off;
    int n = snprintf(a->err, sizeof(a->err), "stream offset %" PRIu64 ": ", off);
    a->err_plain = (size_t)n;
    n += snprintf(a->err + n, sizeof(a->err) - (size_t)n, "%s", a->ctx);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->err + n, sizeof(a->err) - (size_t)n, fmt, ap);
    va_end(ap);
}

void an_note(An *a, const char *fmt, ...)
{
    if (a->nnotes >= 100)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char **n = realloc(a->notes, (a->nnotes + 1) * sizeof(*n));
    if (!n)
        return;
    a->notes = n;
    a->notes[a->nnotes] = strdup(buf);
    if (a->notes[a->nnotes])
        a->nnotes++;
}

void an_printable(char *dst, size_t dstsz, const uint8_t *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < dstsz; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'' && s[i] != '\\')
            dst[o++] = (char)s[i];
        else
            o += (size_t)snprintf(dst + o, dstsz - o, "\\x%02x", s[i]);
    }
    dst[o] = '\0';
}

const char *an_found(AnRd *r, size_t i, char buf[32])
{
    int b = rd_peek(r, i);
    if (b < 0)
        return "end of stream";
    snprintf(buf, 32, "0x%02x", b);
    return buf;
}

static void set_ctx(An *a, AnSection *s)
{
    if (s)
        snprintf(a->ctx, sizeof(a->ctx), "section '%s' (id %u): ", s->label, s->id);
    else
        a->ctx[0] = '\0';
}

/* ------------------------------------------------------------ opening */

int an_open(An *a, const char *path)
{
    a->path = path;
    if (!strcmp(path, "-")) {
        a->fd = 0;
        a->own_fd = false;
    } else {
        a->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (a->fd < 0) {
            snprintf(a->err, sizeof(a->err), "cannot open %s: %s", path,
                     strerror(errno));
            a->failed = true;
            return -1;
        }
        a->own_fd = true;
    }
    struct stat st;
    if (fstat(a->fd, &st) == 0 && S_ISREG(st.st_mode) &&
        lseek(a->fd, 0, SEEK_CUR) == 0) {
        a->seekable = true;
        a->file_size = (uint64_t)st.st_size;
    }
    if (rd_init_fd(&a->rd, a->fd) < 0) {
        snprintf(a->err, sizeof(a->err), "out of memory");
        a->failed = true;
        return -1;
    }
    return 0;
}

int an_open_mem(An *a, const void *data, size_t len, bool seekable)
{
    a->path = "(memory)";
    if (!seekable) {
        rd_init_mem(&a->rd, data, len, 0);
        return 0;
    }
    int fd = memfd_create("ferry-analyze", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len || lseek(fd, 0, SEEK_SET) != 0) {
        snprintf(a->err, sizeof(a->err), "memfd: %s", strerror(errno));
        a->failed = true;
        if (fd >= 0)
            close(fd);
        return -1;
    }
    a->fd = fd;
    a->own_fd = true;
    a->seekable = true;
    a->file_size = len;
    if (rd_init_fd(&a->rd, fd) < 0) {
        snprintf(a->err, sizeof(a->err), "out of memory");
        a->failed = true;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ sections */

AnSection *an_section_by_id(An *a, uint32_t id)
{
    for (size_t i = a->nsecs; i-- > 0;)
        if (a->secs[i]->id == id)
            return a->secs[i];
    return NULL;
}

static void set_why(AnSection *s, const char *fmt, ...) FY_PRINTF(2, 3);
static void set_why(AnSection *s, const char *fmt, ...)
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
    else if (a->vmdesc && (s->desc = an_desc_find_device(a->vmdesc, s->name, instance)))
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

static int s390_body(An *a, AnRd *r)
{
    for (;;) {
        uint64_t off = rd_off(r);
        if (!rd_need(r, 8)) {
            an_fail(a, off, "expected a storage-attribute record, found end of "
                    "stream");
            return -1;
        }
        uint64_t v = ld_be64(rd_cur(r));
        r->pos += 8;
        unsigned flags = v & 0xfff;
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
            continue;
        } else if (flags == 0x01) { /* EOS */
            return 0;
        } else {
            an_fail(a, off, "storage attributes: expected flag MORE, DONE or EOS, "
                    "found 0x%x", flags);
            return -1;
        }
    }
}

/* ------------------------------------------------------------ device sections */

static int device_body(An *a, AnRd *r, AnSection *s)
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
        /* tell what the bytes would have been if a description is known */
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
            set_why(s, "its body of %" PRIu64 " bytes is too big to keep while "
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
            set_why(s, "%s", a->vmdesc
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
    if (a->depth == 0 && !a->in_downtime && (type == T_END || type == T_FULL)) {
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
            return device_body(a, r, s);
        return opaque_body(a, r, s, type);
    default:
        return opaque_body(a, r, s, type);
    }
}

static int start_full(An *a, AnRd *r, int type, uint64_t off)
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
    set_ctx(a, s);
    if (s->kind == SEC_RAM && version != 4) {
        an_fail(a, off, "expected RAM section version 4, found %u", version);
        return -1;
    }
    enter_downtime(a, type, off);
    if (section_body(a, r, s, type) < 0 || read_footer(a, r, s) < 0)
        return -1;
    account(a, s, type == T_START ? AN_ST_START : AN_ST_FULL, off, rd_off(r));
    set_ctx(a, NULL);
    return 0;
}

static int part_end(An *a, AnRd *r, int type, uint64_t off)
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
    set_ctx(a, s);
    enter_downtime(a, type, off);
    if (section_body(a, r, s, type) < 0 || read_footer(a, r, s) < 0)
        return -1;
    account(a, s, type == T_PART ? AN_ST_PART : AN_ST_END, off, rd_off(r));
    set_ctx(a, NULL);
    return 0;
}

/* ------------------------------------------------------------ commands */

static const char *const cmd_names[] = {
    "INVALID", "OPEN_RETURN_PATH", "PING", "POSTCOPY_ADVISE", "POSTCOPY_LISTEN",
    "POSTCOPY_RUN", "POSTCOPY_RAM_DISCARD", "PACKAGED", "ENABLE_COLO",
    "POSTCOPY_RESUME", "RECV_BITMAP", "SWITCHOVER_START",
};
#define N_CMDS (sizeof(cmd_names) / sizeof(cmd_names[0]))

const char *an_cmd_name(unsigned cmd)
{
    return cmd < N_CMDS ? cmd_names[cmd] : "?";
}

static int walk(An *a, AnRd *r);

static int packaged(An *a, AnRd *r, uint32_t len, uint64_t off)
{
    if (len > PACKAGED_MAX) {
        an_fail(a, off, "PACKAGED command: expected at most %u bytes of package, "
                "found length %u", PACKAGED_MAX, len);
        return -1;
    }
    if (a->depth >= MAX_DEPTH) {
        an_fail(a, off, "PACKAGED command nested more than %d deep", MAX_DEPTH);
        return -1;
    }
    uint64_t pkg_off = rd_off(r);
    uint8_t *buf = NULL;
    size_t have = 0;
    while (have < len) {
        size_t chunk = len - have < (8u << 20) ? len - have : (8u << 20);
        uint8_t *nb = realloc(buf, have + chunk);
        if (!nb) {
            free(buf);
            an_fail(a, pkg_off, "out of memory reading a package");
            return -1;
        }
        buf = nb;
        if (!rd_copy(r, buf + have, chunk)) {
            free(buf);
            an_fail(a, pkg_off, "PACKAGED command: expected %u bytes of package, "
                    "found end of stream", len);
            return -1;
        }
        have += chunk;
    }
    AnRd nested;
    rd_init_mem(&nested, buf, len, pkg_off);
    a->depth++;
    int ret = walk(a, &nested);
    a->depth--;
    if (ret == 0 && rd_avail(&nested))
        an_note(a, "stream offset %" PRIu64 ": %zu bytes after the package's EOF "
                "are ignored (QEMU ignores them too)", rd_off(&nested),
                rd_avail(&nested));
    free(buf);
    return ret;
}

static int command(An *a, AnRd *r, uint64_t off)
{
    if (!rd_need(r, 5)) {
        an_fail(a, off, "expected a command header (be16 cmd, be16 len), found "
                "end of stream");
        return -1;
    }
    const uint8_t *p = rd_cur(r);
    unsigned cmd = ld_be16(p + 1), len = ld_be16(p + 3);
    if (cmd == 0 || cmd >= N_CMDS) {
        an_fail(a, off + 1, "expected a command number 1..%zu, found 0x%x (QEMU: "
                "\"MIG_CMD 0x%x unknown\")", N_CMDS - 1, cmd, cmd);
        return -1;
    }
    static const int fixed[] = { -1, 0, 4, -1, 0, 0, -1, 4, 0, 0, -1, 0 };
    if (fixed[cmd] >= 0 && (unsigned)fixed[cmd] != len) {
        an_fail(a, off + 3, "command %s: expected length %d, found %u", cmd_names[cmd],
                fixed[cmd], len);
        return -1;
    }
    if (!rd_need(r, 5 + len)) {
        an_fail(a, off + 5, "command %s: expected %u bytes of payload, found end "
                "of stream", cmd_names[cmd], len);
        return -1;
    }
    const uint8_t *pl = rd_cur(r) + 5;
    switch (cmd) {
    case 3: /* POSTCOPY_ADVISE: nothing, or two be64 page sizes */
        if (len != 0 && len != 16) {
            an_fail(a, off + 3, "command POSTCOPY_ADVISE: expected length 0 or 16, "
                    "found %u", len);
            return -1;
        }
        a->postcopy_advised = true;
        break;
    case 6: { /* RAM_DISCARD: u8 0, u8 n, name, u8 0, (be64 start, be64 len)* */
        if (len < 3 || pl[0] != 0 || (size_t)pl[1] + 3 > len ||
            pl[2 + pl[1]] != 0 || (len - 3 - pl[1]) % 16) {
            an_fail(a, off + 5, "command POSTCOPY_RAM_DISCARD: expected version 0, "
                    "a block name, a 0 byte and 16-byte ranges, found a %u-byte "
                    "payload that is not that", len);
            return -1;
        }
        break;
    }
    case 10: /* RECV_BITMAP: u8 len + name */
        if (len < 1 || (unsigned)pl[0] + 1 != len) {
            an_fail(a, off + 5, "command RECV_BITMAP: expected u8 length + block "
                    "name filling %u bytes, found length byte %u", len,
                    len ? pl[0] : 0);
            return -1;
        }
        break;
    default:
        break;
    }
    uint32_t pkg = cmd == 7 ? ld_be32(pl) : 0;
    r->pos += 5 + len;
    a->cmd_count[cmd]++;
    a->cmd_bytes += 5 + len;
    if (cmd == 7) {
        uint64_t before = rd_off(r);
        int ret = packaged(a, r, pkg, off);
        a->cmd_bytes += rd_off(r) - before;
        return ret;
    }
    return 0;
}

/* ------------------------------------------------------------ the walk */

static int walk(An *a, AnRd *r)
{
    for (;;) {
        if (a->failed)
            return -1;
        uint64_t off = rd_off(r);
        int t = rd_peek(r, 0);
        char fb[32];
        switch (t) {
        case -1:
            if (r->err)
                an_fail(a, off, "read error: %s", strerror(r->err));
            else
                an_fail(a, off, "expected a section type or EOF (0x00), found end "
                        "of stream: the stream is truncated (QEMU would fail "
                        "with an EOF and no reason)");
            return -1;
        case T_EOF:
            r->pos++;
            if (a->depth == 0) {
                a->saw_eof = true;
                a->eof_off = off;
            }
            return 0;
        case T_START:
        case T_FULL:
            if (start_full(a, r, t, off) < 0)
                return -1;
            break;
        case T_PART:
        case T_END:
            if (part_end(a, r, t, off) < 0)
                return -1;
            break;
        case T_CMD:
            if (command(a, r, off) < 0)
                return -1;
            break;
        case T_DESC:
            an_fail(a, off, "expected a section type, found the VM description "
                    "marker 0x06 before EOF");
            return -1;
        case T_FOOTER:
            an_fail(a, off, "expected a section type, found a section footer 0x7e "
                    "with no section before it");
            return -1;
        case T_SUB:
            an_fail(a, off, "expected a section type, found a subsection marker "
                    "0x05 outside any section (a device section longer than its "
                    "description says?)");
            return -1;
        default:
            an_fail(a, off, "expected a section type (0x00-0x04, 0x08), found %s "
                    "(QEMU: \"Unknown savevm section type %d\")", an_found(r, 0, fb), t);
            return -1;
        }
    }
}

/* ------------------------------------------------------------ configuration */

static json_t *hexstr(const uint8_t *p, size_t n)
{
    static const char d[] = "0123456789abcdef";
    char *s = malloc(n * 3 + 1);
    size_t o = 0;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[o++] = d[p[i] >> 4];
        s[o++] = d[p[i] & 15];
        s[o++] = ' ';
    }
    s[o ? o - 1 : 0] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* Without a description the configuration's layout is QEMU's, known here:
 * be32 len + machine name, then the subsections QEMU has defined. */
static json_t *config_builtin(An *a, AnRd *r)
{
    uint64_t off = rd_off(r);
    if (!rd_need(r, 4)) {
        an_fail(a, off, "configuration: expected be32 name length, found end of "
                "stream");
        return NULL;
    }
    uint32_t len = ld_be32(rd_cur(r));
    if (len > 255) {
        an_fail(a, off, "configuration: expected a machine type name of at most "
                "255 bytes, found length %u", len);
        return NULL;
    }
    if (!rd_need(r, 4 + len)) {
        an_fail(a, off + 4, "configuration: expected %u bytes of machine type, "
                "found end of stream", len);
        return NULL;
    }
    json_t *o = json_object();
    char b[32];
    snprintf(b, sizeof(b), "0x%08x", len);
    json_object_set_new(o, "len", json_string(b));
    json_object_set_new(o, "name", hexstr(rd_cur(r) + 4, len));
    an_printable(a->machine, sizeof(a->machine), rd_cur(r) + 4, len);
    r->pos += 4 + len;
    while (rd_peek(r, 0) == T_SUB) {
        uint64_t soff = rd_off(r);
        int nl = rd_peek(r, 1);
        if (nl < 0 || !rd_need(r, 2 + (size_t)nl + 4)) {
            an_fail(a, soff, "configuration: expected a subsection header, found "
                    "end of stream");
            json_decref(o);
            return NULL;
        }
        char name[256];
        memcpy(name, rd_cur(r) + 2, (size_t)nl);
        name[nl] = '\0';
        r->pos += 2 + (size_t)nl + 4;
        json_t *sub = json_object();
        if (!strcmp(name, "configuration/target-page-bits")) {
            if (!rd_need(r, 4)) {
                an_fail(a, rd_off(r), "configuration: expected target page bits, "
                        "found end of stream");
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            uint32_t bits = ld_be32(rd_cur(r));
            r->pos += 4;
            snprintf(b, sizeof(b), "0x%08x", bits);
            json_object_set_new(sub, "target_page_bits", json_string(b));
            a->target_page_bits = bits <= 30 ? (int)bits : -1;
        } else if (!strcmp(name, "configuration/capabilities")) {
            if (!rd_need(r, 4)) {
                an_fail(a, rd_off(r), "configuration: expected the capability "
                        "count, found end of stream");
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            uint32_t n = ld_be32(rd_cur(r));
            r->pos += 4;
            if (n > 64) {
                an_fail(a, rd_off(r) - 4, "configuration: expected at most 64 "
                        "capabilities, found %u", n);
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            snprintf(b, sizeof(b), "0x%08x", n);
            json_object_set_new(sub, "caps_count", json_string(b));
            json_t *caps = json_array();
            for (uint32_t i = 0; i < n; i++) {
                int cl = rd_peek(r, 0);
                if (cl < 0 || !rd_need(r, 1 + (size_t)cl)) {
                    an_fail(a, rd_off(r), "configuration: expected capability %u "
                            "of %u, found end of stream", i + 1, n);
                    json_decref(caps);
                    json_decref(sub);
                    json_decref(o);
                    return NULL;
                }
                const uint8_t *cp = rd_cur(r) + 1;
                if (cl == 15 && !memcmp(cp, "x-ignore-shared", 15))
                    a->cap_ignore_shared = true;
                if (cl == 10 && !memcmp(cp, "mapped-ram", 10))
                    a->cap_mapped_ram = true;
                json_array_append_new(caps, an_json_bytes_string(cp, (size_t)cl));
                r->pos += 1 + (size_t)cl;
            }
            json_object_set_new(sub, "capabilities", caps);
        } else if (!strcmp(name, "configuration/uuid")) {
            if (!rd_need(r, 16)) {
                an_fail(a, rd_off(r), "configuration: expected a 16-byte uuid, "
                        "found end of stream");
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            json_object_set_new(sub, "uuid", hexstr(rd_cur(r), 16));
            r->pos += 16;
        } else {
            char pr[300];
            an_printable(pr, sizeof(pr), (const uint8_t *)name, (size_t)nl);
            an_fail(a, soff, "configuration: subsection '%s' is not one analyze "
                    "knows, and without the VM description its length is unknown",
                    pr);
            json_decref(sub);
            json_decref(o);
            return NULL;
        }
        json_t *key = an_json_bytes_string((const uint8_t *)name, (size_t)nl);
        json_object_set_new(o, json_string_value(key), sub);
        json_decref(key);
    }
    return o;
}

/* With a description that lists it (newer QEMU), decode it the generic way,
 * then read the capabilities the RAM format depends on. */
static void config_facts(An *a, json_t *cfg)
{
    json_t *name = json_object_get(cfg, "name");
    if (json_is_string(name) && !a->machine[0]) {
        /* "70 63 2d ..." back to text */
        const char *h = json_string_value(name);
        uint8_t buf[256];
        size_t n = 0;
        while (h[0] && h[1] && n < sizeof(buf)) {
            unsigned v;
            if (sscanf(h, "%2x", &v) != 1)
                break;
            buf[n++] = (uint8_t)v;
            h += h[2] == ' ' ? 3 : 2;
        }
        an_printable(a->machine, sizeof(a->machine), buf, n);
    }
    json_t *caps = json_object_get(json_object_get(cfg, "configuration/capabilities"),
                                   "capabilities");
    json_t *list = json_is_array(caps) ? caps : NULL;
    size_t n = list ? json_array_size(list) : (caps ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        const char *c = json_string_value(list ? json_array_get(list, i) : caps);
        if (c && !strcmp(c, "x-ignore-shared"))
            a->cap_ignore_shared = true;
        if (c && !strcmp(c, "mapped-ram"))
            a->cap_mapped_ram = true;
    }
}

static int configuration(An *a, AnRd *r)
{
    uint64_t off = rd_off(r);
    r->pos++;
    snprintf(a->ctx, sizeof(a->ctx), "configuration: ");
    json_t *cd = a->vmdesc ? json_object_get(a->vmdesc, "configuration") : NULL;
    json_t *cfg = cd ? an_vmsd_decode(a, r, cd, "", 0) : NULL;
    a->ctx[0] = '\0';
    if (cd && cfg)
        config_facts(a, cfg);
    else if (!cd)
        cfg = config_builtin(a, r);
    if (!cfg)
        return -1;
    a->config = cfg;
    a->has_config = true;
    a->config_bytes = rd_off(r) - off;
    return 0;
}

/* ------------------------------------------------------------ after EOF */

static int description(An *a, AnRd *r)
{
    uint64_t off = rd_off(r);
    int t = rd_peek(r, 0);
    if (t < 0)
        return 0; /* no description: postcopy, suppress-vmdesc, or old QEMU */
    if (t != T_DESC) {
        an_fail(a, off, "expected the VM description (0x06) or the end after EOF, "
                "found 0x%02x", t);
        return -1;
    }
    if (!rd_need(r, 5)) {
        an_fail(a, off + 1, "VM description: expected be32 length, found end of "
                "stream");
        return -1;
    }
    uint32_t len = ld_be32(rd_cur(r) + 1);
    if (len > VMDESC_MAX) {
        an_fail(a, off + 1, "VM description: expected at most %u bytes, found "
                "length %u", VMDESC_MAX, len);
        return -1;
    }
    r->pos += 5;
    char *text = malloc(len ? len : 1);
    if (!text) {
        an_fail(a, off, "out of memory");
        return -1;
    }
    if (!rd_copy(r, text, len)) {
        free(text);
        an_fail(a, off + 5, "VM description: expected %u bytes, found end of "
                "stream", len);
        return -1;
    }
    a->vmdesc_len = len;
    if (a->vmdesc_problem && !a->o.check) {
        free(text);
        return 0; /* already reported as unusable */
    }
    if (a->vmdesc_early && !a->vmdesc_external) {
        free(text);
        if (off != a->vmdesc_off) {
            an_fail(a, off, "the VM description found at the end of the file "
                    "starts at offset %" PRIu64 ", but the stream's EOF leads "
                    "here", a->vmdesc_off);
            return -1;
        }
        return 0;
    }
    json_t *j = an_desc_parse(a, text, len, off, "the VM description");
    free(text);
    if (!j)
        return -1;
    a->vmdesc_off = off;
    a->stream_vmdesc = j;
    if (!a->vmdesc)
        a->vmdesc = json_incref(j);
    return 0;
}

/* Devices kept while the description was unknown: decode them now. */
static void decode_deferred(An *a)
{
    for (size_t i = 0; i < a->nsecs && !a->failed; i++) {
        AnSection *s = a->secs[i];
        if (s->kind != SEC_OPAQUE || !s->raw_kept)
            continue;
        if (!a->vmdesc) {
            set_why(s, "the stream has no VM description (QEMU sends none after "
                    "postcopy or for machines with suppress-vmdesc); pass --desc "
                    "FILE with the description of the same VM");
            continue;
        }
        s->desc = an_desc_find_device(a->vmdesc, s->name, s->instance);
        if (!s->desc) {
            set_why(s, "not listed in the VM description");
            continue;
        }
        AnRd mr;
        rd_init_mem(&mr, s->raw, s->raw_len, s->raw_off);
        set_ctx(a, s);
        json_t *v = NULL;
        if (device_body(a, &mr, s) == 0) {
            v = s->value;
            if (rd_avail(&mr)) {
                char fb[32];
                an_fail(a, rd_off(&mr), "expected section footer 0x7e, found %s "
                        "(the description accounts for %zu of the section's %zu "
                        "bytes)", an_found(&mr, 0, fb), mr.pos, s->raw_len);
            }
        }
        set_ctx(a, NULL);
        if (v && !a->failed) {
            s->kind = SEC_DEVICE;
            free(s->why);
            s->why = NULL;
        }
    }
}

/* ------------------------------------------------------------ run */

static int find_description_first(An *a)
{
    if (a->o.desc_override) {
        a->vmdesc = json_incref(a->o.desc_override);
        a->vmdesc_early = a->vmdesc_external = true;
        return 0;
    }
    if (!a->seekable)
        return 0;
    json_t *j = NULL;
    uint64_t off = 0, len = 0;
    int ret = an_desc_from_tail(a, a->fd, a->file_size, &j, &off, &len);
    if (ret < 0) {
        /* a broken description: keep going without it, unless checking */
        if (a->o.check)
            return -1;
        a->vmdesc_problem = strdup(a->err);
        a->failed = false;
        a->err[0] = '\0';
        return 0;
    }
    if (ret == 1) {
        a->vmdesc = j;
        a->stream_vmdesc = json_incref(j);
        a->vmdesc_off = off;
        a->vmdesc_len = len;
        a->vmdesc_early = true;
    }
    return 0;
}

static int header(An *a, AnRd *r)
{
    if (!rd_need(r, 8)) {
        an_fail(a, 0, "expected the 8-byte header (\"QEVM\", version 3), found "
                "%zu bytes", rd_avail(r));
        return -1;
    }
    uint32_t magic = ld_be32(rd_cur(r)), ver = ld_be32(rd_cur(r) + 4);
    if (magic != MAGIC) {
        an_fail(a, 0, "expected magic 0x5145564d (\"QEVM\"), found 0x%08x: not a "
                "QEMU migration stream", magic);
        return -1;
    }
    if (ver != 3) {
        an_fail(a, 4, "expected stream version 3, found %u%s", ver,
                ver == 2 ? " (QEMU: \"SaveVM v2 format is obsolete\")" : "");
        return -1;
    }
    a->version = ver;
    r->pos += 8;
    return 0;
}

static void choose_page_size(An *a)
{
    uint32_t ps = 0;
    if (a->vmdesc)
        ps = (uint32_t)json_integer_value(json_object_get(a->vmdesc, "page_size"));
    if (!ps && a->o.page_size)
        ps = a->o.page_size;
    if (!ps && a->target_page_bits >= 10 && a->target_page_bits <= 20)
        ps = 1u << a->target_page_bits;
    if (!ps) {
        ps = 4096;
        a->ps_guessed = true;
    }
    a->ram.ps = ps;
}

int an_run(An *a)
{
    AnRd *r = &a->rd;
    if (a->failed)
        return -1;
    if (find_description_first(a) < 0)
        return -1;
    if (header(a, r) < 0)
        return -1;
    if (rd_peek(r, 0) == T_CONFIG && configuration(a, r) < 0)
        return -1;
    choose_page_size(a);
    if (an_ram_init(a) < 0)
        return -1;
    int ret = walk(a, r);
    if (ret == 0)
        ret = description(a, r);
    if (ret == 0) {
        /* anything after the description? */
        uint64_t more = 0;
        while (rd_need(r, 1)) {
            more += rd_avail(r);
            r->pos = r->len;
        }
        a->trailing = more;
        if (more && a->o.check) {
            an_fail(a, rd_off(r) - more, "expected the end of the stream after %s, "
                    "found %" PRIu64 " more bytes",
                    a->vmdesc_len ? "the VM description" : "EOF", more);
            ret = -1;
        } else if (more) {
            an_note(a, "%" PRIu64 " bytes after the end of the stream are ignored",
                    more);
        }
    }
    a->end_off = rd_off(r);
    if (ret == 0) {
        decode_deferred(a);
        if (a->failed)
            ret = -1;
    }
    if (ret == 0 && a->ps_guessed && a->vmdesc &&
        json_integer_value(json_object_get(a->vmdesc, "page_size")) != a->ram.ps) {
        an_fail(a, 0, "RAM was read with page size %u but the VM description "
                "says %" JSON_INTEGER_FORMAT "; run again with --page-size %"
                JSON_INTEGER_FORMAT, a->ram.ps,
                json_integer_value(json_object_get(a->vmdesc, "page_size")),
                json_integer_value(json_object_get(a->vmdesc, "page_size")));
        ret = -1;
    }
    if (an_ram_finish(a) < 0)
        ret = -1;
    /* say why each undecoded section is so */
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *s = a->secs[i];
        if (s->kind == SEC_OPAQUE && !s->why)
            set_why(s, "%s", a->vmdesc ? "not listed in the VM description"
                                       : "no VM description");
    }
    if (a->vmdesc_problem)
        an_note(a, "the description at the end of the file is unusable, so "
                "device sections are not decoded: %s", a->vmdesc_problem);
    return ret;
}
