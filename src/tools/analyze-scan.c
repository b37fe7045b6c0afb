/*
 * analyze-scan.c: find where a section we cannot decode ends.
 *
 * Device sections carry no length. Without their description (a pipe, where
 * the description comes last; a stream without one; a section the
 * description does not list) the only way past one is its footer: the byte
 * 0x7e and the section's be32 id. A body may hold those five bytes by
 * chance, so a candidate counts only if what follows it is a believable next
 * record: a START/FULL header with a printable idstr and small instance and
 * version, a PART/END of a section already started, a command with a valid
 * number and length, or EOF followed by the description (or by nothing).
 *
 * The body is consumed as it is scanned (the stream does not have to fit in
 * memory); up to keep_max bytes of it are kept so that the section can be
 * decoded once a description turns up.
 */
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

#define MAX_OPAQUE_BODY (1ull << 30)

/* Fixed payload length of each command, -1 where it varies. */
static int cmd_fixed_len(unsigned cmd)
{
    static const int len[] = { -2, 0, 4, -1, 0, 0, -1, 4, 0, 0, -1, 0 };
    return cmd < sizeof(len) / sizeof(len[0]) ? len[cmd] : -2;
}

/* Is there a believable record at p[0..n)? `at_end` says the stream ends
 * at p + n (so a short record there is a truncated one). */
static bool plausible_record(An *a, const uint8_t *p, size_t n, bool at_end)
{
    if (n == 0)
        return at_end;
    switch (p[0]) {
    case 0x00: /* EOF: then the description, or the end */
        if (n == 1)
            return at_end;
        if (a->depth > 0)
            return true;
        return p[1] == 0x06;
    case 0x01:
    case 0x04: { /* START/FULL */
        if (n < 6)
            return at_end;
        if (ld_be32(p + 1) > 0xffffff)
            return false;
        size_t len = p[5];
        if (len == 0)
            return false;
        for (size_t i = 0; i < len && 6 + i < n; i++)
            if (p[6 + i] < 0x20 || p[6 + i] > 0x7e)
                return false;
        if (n < 6 + len + 8)
            return at_end;
        return ld_be32(p + 6 + len) <= 0xffffff && ld_be32(p + 10 + len) <= 0xffff;
    }
    case 0x02:
    case 0x03: /* PART/END of a section we know */
        if (n < 5)
            return at_end;
        return an_section_by_id(a, ld_be32(p + 1)) != NULL;
    case 0x08: { /* COMMAND */
        if (n < 5)
            return at_end;
        unsigned cmd = ld_be16(p + 1), len = ld_be16(p + 3);
        int fixed = cmd_fixed_len(cmd);
        if (fixed == -2)
            return false;
        return fixed < 0 || (unsigned)fixed == len;
    }
    default:
        return false;
    }
}

static bool keep_bytes(uint8_t **keep, size_t *keep_len, size_t *keep_cap,
                       uint64_t keep_max, bool *kept_all, const uint8_t *p,
                       size_t n)
{
    if (!*kept_all)
        return true;
    if (*keep_len + n > keep_max) {
        *kept_all = false;
        free(*keep);
        *keep = NULL;
        *keep_len = *keep_cap = 0;
        return true;
    }
    if (*keep_len + n > *keep_cap) {
        size_t ncap = *keep_cap ? *keep_cap : 4096;
        while (ncap < *keep_len + n)
            ncap *= 2;
        uint8_t *nk = realloc(*keep, ncap);
        if (!nk)
            return false;
        *keep = nk;
        *keep_cap = ncap;
    }
    memcpy(*keep + *keep_len, p, n);
    *keep_len += n;
    return true;
}

int an_scan_body(An *a, AnRd *r, AnSection *s, uint64_t keep_max,
                 uint8_t **keep, size_t *keep_len, bool *kept_all)
{
    uint64_t start = rd_off(r), body = 0;
    size_t keep_cap = 0;
    *keep = NULL;
    *keep_len = 0;
    *kept_all = true;
    for (;;) {
        if (!rd_need(r, 1)) {
            an_fail(a, rd_off(r), "expected section footer 0x7e with id %u, found "
                    "end of stream (%llu bytes after the section header)",
                    s->id, (unsigned long long)body);
            return -1;
        }
        const uint8_t *p = rd_cur(r);
        size_t n = rd_avail(r);
        const uint8_t *q = memchr(p, 0x7e, n);
        size_t skip = q ? (size_t)(q - p) : n;
        if (skip) {
            if (!keep_bytes(keep, keep_len, &keep_cap, keep_max, kept_all, p, skip))
                goto oom;
            r->pos += skip;
            body += skip;
        }
        if (!q)
            goto check_len;
        /* a candidate footer: look at it and what follows */
        rd_need(r, 5 + AN_LOOKAHEAD);
        p = rd_cur(r);
        n = rd_avail(r);
        if (n >= 5 && ld_be32(p + 1) == s->id &&
            plausible_record(a, p + 5, n - 5, r->src_end && n < 5 + AN_LOOKAHEAD))
            return 0;
        if (!keep_bytes(keep, keep_len, &keep_cap, keep_max, kept_all, p, 1))
            goto oom;
        r->pos++;
        body++;
check_len:
        if (body > MAX_OPAQUE_BODY) {
            an_fail(a, start, "no section footer for id %u in the next %llu "
                    "bytes: the section is corrupt or the stream has no footers",
                    s->id, (unsigned long long)MAX_OPAQUE_BODY);
            return -1;
        }
    }
oom:
    an_fail(a, rd_off(r), "out of memory keeping a section body");
    return -1;
}
