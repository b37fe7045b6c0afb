/*
 * analyze-stream.c: walk a migration stream from its magic to its end
 * (sections: analyze-section.c, commands: analyze-command.c, the
 * configuration: analyze-config.c).
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
    a->budget = o->value_budget ? o->value_budget : AN_VALUE_BUDGET;
    a->free_budget = AN_FREE_VALUE_BUDGET;
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
    free(a->sec_hash);
    an_ram_free(a);
    json_decref(a->vmdesc);
    json_decref(a->vmdesc_index);
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

void an_set_ctx(An *a, AnSection *s)
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

/* ------------------------------------------------------------ the walk */

int an_walk(An *a, AnRd *r)
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
            else if (a->depth)
                an_fail(a, off, "expected a section type, EOF (0x00) or "
                        "POSTCOPY_RUN, found the end of the package");
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
            if (an_start_full(a, r, t, off) < 0)
                return -1;
            break;
        case T_PART:
        case T_END:
            if (an_part_end(a, r, t, off) < 0)
                return -1;
            break;
        case T_CMD: {
            int rc = an_command(a, r, off);
            if (rc < 0)
                return -1;
            if (rc == 1 && a->depth)
                return 0; /* POSTCOPY_RUN ends a package's walk, as in QEMU */
            break;
        }
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
            an_set_why(s, "the stream has no VM description (QEMU sends none after "
                    "postcopy or for machines with suppress-vmdesc); pass --desc "
                    "FILE with the description of the same VM");
            continue;
        }
        s->desc = an_find_device(a, s->name, s->instance);
        if (!s->desc) {
            an_set_why(s, "not listed in the VM description");
            continue;
        }
        AnRd mr;
        rd_init_mem(&mr, s->raw, s->raw_len, s->raw_off);
        an_set_ctx(a, s);
        json_t *v = NULL;
        if (an_device_body(a, &mr, s) == 0) {
            v = s->value;
            if (rd_avail(&mr)) {
                char fb[32];
                an_fail(a, rd_off(&mr), "expected section footer 0x7e, found %s "
                        "(the description accounts for %zu of the section's %zu "
                        "bytes)", an_found(&mr, 0, fb), mr.pos, s->raw_len);
            }
        }
        an_set_ctx(a, NULL);
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
    /* -x: desc.json first, then the blocks, as analyze-migration.py does */
    if (a->o.extract_dir && a->stream_vmdesc) {
        if (an_extract_write_json(a, "desc.json", a->stream_vmdesc) < 0)
            return -1;
        a->desc_written = true;
    }
    if (rd_peek(r, 0) == T_CONFIG && an_configuration(a, r) < 0)
        return -1;
    choose_page_size(a);
    if (an_ram_init(a) < 0)
        return -1;
    int ret = an_walk(a, r);
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
            an_set_why(s, "%s", a->vmdesc ? "not listed in the VM description"
                                       : "no VM description");
    }
    if (a->vmdesc_problem)
        an_note(a, "the description at the end of the file is unusable, so "
                "device sections are not decoded: %s", a->vmdesc_problem);
    return ret;
}

