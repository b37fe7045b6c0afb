/*
 * analyze-command.c: QEMU_VM_COMMAND records.
 *
 *   u8 0x08, be16 cmd, be16 len, payload[len]
 *
 * Every command QEMU defines is known, with its fixed length where it has
 * one and its payload checked where it has a shape (POSTCOPY_ADVISE,
 * POSTCOPY_RAM_DISCARD, RECV_BITMAP). PACKAGED carries a whole nested
 * stream after it (postcopy puts LISTEN, the device state and RUN in one):
 * it is read into memory (bounded) and walked like the main stream, up to
 * its EOF or, as QEMU 7.2 sends it, its POSTCOPY_RUN (QEMU's loader leaves
 * the package there; nothing after RUN in it is read).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

#define PACKAGED_MAX (256u << 20)
#define MAX_DEPTH 4

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
    int ret = an_walk(a, &nested);
    a->depth--;
    if (ret == 0 && rd_avail(&nested))
        an_note(a, "stream offset %" PRIu64 ": %zu bytes after the package's "
                "EOF or POSTCOPY_RUN are ignored (QEMU ignores them too)",
                rd_off(&nested), rd_avail(&nested));
    free(buf);
    return ret;
}

/* POSTCOPY_RAM_DISCARD: the pages of one block the destination must drop
 * (sent in precopy, dirtied since; they come again). Ranges are bytes. */
static int discard(An *a, const uint8_t *pl, unsigned len, uint64_t off)
{
    if (len < 3 || pl[0] != 0 || (size_t)pl[1] + 3 > len ||
        pl[2 + pl[1]] != 0 || (len - 3 - pl[1]) % 16) {
        an_fail(a, off, "command POSTCOPY_RAM_DISCARD: expected version 0, a "
                "block name, a 0 byte and 16-byte ranges, found a %u-byte "
                "payload that is not that", len);
        return -1;
    }
    char label[300];
    an_printable(label, sizeof(label), pl + 2, pl[1]);
    AnBlock *b = an_ram_block(a, pl + 2, pl[1]);
    if (a->ram.have_mem_size && !b) {
        an_fail(a, off + 2, "command POSTCOPY_RAM_DISCARD: expected a block listed "
                "in MEM_SIZE, found '%s' (QEMU: \"ram_discard_range: Failed to "
                "find block '%s'\")", label, label);
        return -1;
    }
    for (size_t at = 3 + (size_t)pl[1]; at < len; at += 16) {
        uint64_t start = ld_be64(pl + at), n = ld_be64(pl + at + 8);
        if (b && (start > b->length || n > b->length - start)) {
            an_fail(a, off + at, "command POSTCOPY_RAM_DISCARD: expected a range "
                    "inside '%s' (0x%" PRIx64 " bytes), found 0x%" PRIx64 " bytes "
                    "at 0x%" PRIx64 " (QEMU: \"Overrun block\")", label, b->length,
                    n, start);
            return -1;
        }
        a->discard_ranges++;
        a->discard_bytes += n;
    }
    return 0;
}

int an_command(An *a, AnRd *r, uint64_t off)
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
    case 6: /* RAM_DISCARD: u8 0, u8 n, name, u8 0, (be64 start, be64 len)* */
        if (discard(a, pl, len, off + 5) < 0)
            return -1;
        break;
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
    /* Postcopy: the source stops, sends the discards and the package (the
     * devices and RUN); the destination runs from there on and what follows
     * is the postcopy phase, not downtime. */
    if (a->depth == 0 && a->postcopy_advised && (cmd == 6 || cmd == 7) &&
        !a->in_downtime && !a->postcopy) {
        a->in_downtime = true;
        a->downtime_off = off;
    }
    r->pos += 5 + len;
    a->cmd_count[cmd]++;
    a->cmd_bytes += 5 + len;
    if (cmd == 5)
        return 1;
    if (cmd == 7) {
        uint64_t before = rd_off(r);
        int ret = packaged(a, r, pkg, off);
        a->cmd_bytes += rd_off(r) - before;
        if (ret == 0 && a->depth == 0 && a->postcopy_advised && !a->postcopy) {
            a->postcopy = true;
            a->in_downtime = false;
            a->postcopy_off = rd_off(r);
        }
        return ret;
    }
    return 0;
}

