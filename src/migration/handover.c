/*
 * handover.c: local handover of guest RAM by file descriptor (migration
 * mode cpr-transfer), for a live upgrade on one host.
 *
 * When source and destination run on the same host and every RAM block is
 * a shared memfd, the pages need not travel: the source passes the memfds
 * over the migration's unix socket (SCM_RIGHTS), the destination maps them
 * over its own blocks (same addresses, so nothing that points into guest
 * RAM changes), and the migration stream is the one x-ignore-shared gives:
 * the block list with GPAs, no pages, then the device state. The source
 * keeps running on the same memory until the switchover stops it, so the
 * downtime is the device state alone. (QEMU's cpr-transfer passes its fds
 * on a separate "cpr" channel in its own format; this channel is ferry's.)
 *
 * The handover channel is one more connection to the migration URI, made
 * before the main one and answered before it is accepted:
 *   source -> destination
 *     be32 "FYHO", be32 version 1, be32 count
 *     count x { u8 len, idstr[len], be64 used_length, be64 fd_offset }
 *             each record written with its block's memfd attached
 *   destination -> source
 *     be32 status (0: mapped), be16 len, message[len] (why not)
 * The destination checks everything before it maps anything: the count and
 * names must be exactly its own blocks, sizes equal, offsets page aligned,
 * each fd a regular file (memfd) that holds the block. If the incoming
 * migration fails after the mapping, fresh memfds replace the source's
 * memory (rollback), so the failed destination can never write into the
 * memory of a source that resumes.
 *
 * Limits: only unix sockets carry descriptors (tcp, exec, fd and file
 * URIs are refused up front); a block that is not a shared memfd cannot be
 * handed over; after a successful handover both processes map the same
 * memory, so the source must not be resumed (it stays in postmigrate).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "migration/mig-multifd.h"

#define HO_HEADER_LEN 12
#define HO_REPLY_MAX  1024

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

int fy_mig_handover_check_blocks(const FyRamList *ram, FyError **errp)
{
    for (int i = 0; i < ram->count; i++) {
        const FyRamBlock *rb = ram->blocks[i];
        if (rb->fd < 0 || !rb->shared) {
            fy_error_setg(errp, "migration mode 'cpr-transfer': RAM block "
                          "'%s' is not a shared memfd, so it cannot be "
                          "handed over by file descriptor", rb->idstr);
            return -1;
        }
    }
    return 0;
}

/* ---- source ---- */

/* One block record with its fd: the fd rides on the first bytes written. */
static int send_record(FyChannel *c, const FyRamBlock *rb, FyError **errp)
{
    uint8_t rec[1 + 255 + 16];
    size_t idlen = strnlen(rb->idstr, 255);
    rec[0] = (uint8_t)idlen;
    memcpy(rec + 1, rb->idstr, idlen);
    put_be64(rec + 1 + idlen, rb->used_length);
    put_be64(rec + 9 + idlen, rb->fd_offset);
    size_t len = 17 + idlen, done = 0;
    while (done == 0) {
        struct iovec iov = { rec, len };
        ssize_t n = fy_channel_writev_fds(c, &iov, 1, &rb->fd, 1, errp);
        if (n == FY_IO_AGAIN) {
            if (fy_channel_wait(c, true, -1, errp) < 0)
                return -1;
            continue;
        }
        if (n < 0)
            return -1;
        done = (size_t)n;
    }
    return done < len ? fy_channel_write_all(c, rec + done, len - done, errp)
                      : 0;
}

/* The answer. A destination that is not in cpr-transfer mode takes this
 * connection for the migration stream, fails on its magic and closes it
 * (unread bytes make that a reset rather than an end of stream). */
static int read_reply(FyChannel *c, FyError **errp)
{
    uint8_t hdr[6];
    FyError *err = NULL;
    int rc = fy_channel_read_all(c, hdr, sizeof(hdr), &err);
    if (rc) {
        fy_error_setg(errp, "%s: the destination closed the handover "
                      "channel without an answer (is its migration mode "
                      "cpr-transfer?)%s%s", c->name, err ? ": " : "",
                      err ? fy_error_msg(err) : "");
        fy_error_free(err);
        return -1;
    }
    uint32_t status = get_be32(hdr);
    size_t len = (size_t)hdr[4] << 8 | hdr[5];
    if (status == 0)
        return 0;
    char msg[HO_REPLY_MAX + 1];
    if (len > HO_REPLY_MAX)
        len = HO_REPLY_MAX;
    if (fy_channel_read_all(c, msg, len, NULL) != 0)
        len = 0;
    msg[len] = 0;
    for (size_t i = 0; i < len; i++)
        if (msg[i] < 0x20 || msg[i] > 0x7e)
            msg[i] = '?';
    fy_error_setg(errp, "the destination refused the RAM handover: %s",
                  len ? msg : "(no reason given)");
    return -1;
}

static void set_handover_chan(FyMigration *m, FyMigMfd *mfd, FyChannel *c)
{
    pthread_mutex_lock(&m->lock);
    mfd->handover_chan = c;
    pthread_mutex_unlock(&m->lock);
}

int fy_mig_handover_send(FyMigration *m, FyMigMfd *mfd, FyError **errp)
{
    if (fy_mig_handover_check_blocks(m->ram, errp) < 0)
        return -1;
    FyChannel *c = fy_channel_open_outgoing(m->uri, errp);
    if (!c) {
        fy_error_prepend(errp, "handover channel: ");
        return -1;
    }
    set_handover_chan(m, mfd, c);
    pthread_mutex_lock(&m->lock);
    bool cancel = m->cancel_req;
    pthread_mutex_unlock(&m->lock);

    int r = -1;
    uint8_t hdr[HO_HEADER_LEN];
    put_be32(hdr, FY_HANDOVER_MAGIC);
    put_be32(hdr + 4, FY_HANDOVER_VERSION);
    put_be32(hdr + 8, (uint32_t)m->ram->count);
    if (cancel)
        fy_error_setg(errp, "migration cancelled");
    else {
        /* A destination that refuses answers at once and stops reading:
         * after a failed write its answer is the better message. */
        FyError *werr = NULL;
        r = fy_channel_write_all(c, hdr, sizeof(hdr), &werr);
        for (int i = 0; i < m->ram->count && r == 0; i++)
            r = send_record(c, m->ram->blocks[i], &werr);
        FyError *rerr = NULL;
        if (read_reply(c, &rerr) == 0 && r == 0) {
            fy_error_free(werr);
        } else {
            r = -1;
            bool refused = rerr && strstr(fy_error_msg(rerr), "refused");
            if (refused || !werr || !rerr) {
                fy_error_propagate(errp, rerr ? rerr : werr);
                fy_error_free(rerr ? werr : NULL);
            } else {
                /* No answer after a failed write (a destination that is
                 * not in cpr-transfer closes as soon as it reads our
                 * magic, which may be before we are done writing): the
                 * missing answer says why, the write error what. */
                fy_error_setg(errp, "%s; before that: %s", fy_error_msg(rerr),
                              fy_error_msg(werr));
                fy_error_free(rerr);
                fy_error_free(werr);
            }
        }
    }
    set_handover_chan(m, mfd, NULL);
    fy_channel_close(c, NULL);
    if (r < 0)
        fy_error_prepend(errp, "handing RAM over: ");
    return r;
}

/* ---- destination ---- */

typedef struct HoBlock {
    FyRamBlock *rb;
    int fd;
    uint64_t fd_offset;
} HoBlock;

/* The first byte of a record, with the fd that travels with it. */
static int read_first_with_fd(FyChannel *c, uint8_t *b, int *fd,
                              FyError **errp)
{
    for (;;) {
        struct iovec iov = { b, 1 };
        size_t nfds = 1;
        ssize_t n = fy_channel_readv_fds(c, &iov, 1, fd, &nfds, errp);
        if (n == FY_IO_AGAIN) {
            if (fy_channel_wait(c, false, -1, errp) < 0)
                return -1;
            continue;
        }
        if (n < 0)
            return -1;
        if (n == 0) {
            fy_error_setg(errp, "%s: end of stream", c->name);
            return -1;
        }
        if (nfds != 1) {
            fy_error_setg(errp, "the record came without its file descriptor");
            return -1;
        }
        return 0;
    }
}

static int check_fd(const HoBlock *hb, FyError **errp)
{
    struct stat st;
    if (fstat(hb->fd, &st) < 0) {
        fy_error_setg_errno(errp, errno, "fstat of its file descriptor");
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        fy_error_setg(errp, "its file descriptor is not a memfd or file");
        return -1;
    }
    uint64_t need = hb->fd_offset + hb->rb->used_length;
    if (need < hb->fd_offset || (uint64_t)st.st_size < need) {
        fy_error_setg(errp, "its memfd holds %" PRIu64 " bytes, %" PRIu64
                      " + %" PRIu64 " needed", (uint64_t)st.st_size,
                      hb->fd_offset, hb->rb->used_length);
        return -1;
    }
    return 0;
}

/* Record i: fd first, then the rest; checked against the local blocks. */
static int read_record(FyMigration *m, FyChannel *c, HoBlock *hb, int i,
                       const HoBlock *got, FyError **errp)
{
    uint8_t idlen;
    hb->fd = -1;
    if (read_first_with_fd(c, &idlen, &hb->fd, errp) < 0)
        return -1;
    uint8_t rest[255 + 16];
    char id[256];
    if (idlen == 0) {
        fy_error_setg(errp, "empty block name");
        return -1;
    }
    if (fy_channel_read_all(c, rest, (size_t)idlen + 16, errp) != 0) {
        if (errp && !*errp)
            fy_error_setg(errp, "%s: end of stream", c->name);
        return -1;
    }
    memcpy(id, rest, idlen);
    id[idlen] = 0;
    for (int k = 0; k < idlen; k++)
        if (id[k] < 0x20 || id[k] > 0x7e)
            id[k] = '?';
    hb->rb = fy_ram_list_find(m->ram, id);
    uint64_t len = get_be64(rest + idlen);
    hb->fd_offset = get_be64(rest + idlen + 8);
    if (!hb->rb) {
        fy_error_setg(errp, "RAM block '%s' does not exist here", id);
        return -1;
    }
    for (int k = 0; k < i; k++) {
        if (got[k].rb == hb->rb) {
            fy_error_setg(errp, "RAM block '%s' is handed over twice", id);
            return -1;
        }
    }
    if (len != hb->rb->used_length) {
        fy_error_setg(errp, "RAM block '%s' is 0x%" PRIx64 " bytes there, "
                      "0x%" PRIx64 " here", id, len, hb->rb->used_length);
        return -1;
    }
    if (hb->fd_offset % FY_TARGET_PAGE_SIZE) {
        fy_error_setg(errp, "RAM block '%s': fd offset 0x%" PRIx64 " is not "
                      "page aligned", id, hb->fd_offset);
        return -1;
    }
    if (check_fd(hb, errp) < 0) {
        fy_error_prepend(errp, "RAM block '%s': ", id);
        return -1;
    }
    return 0;
}

/* Put fd at rb's address and under rb's fd number. */
static int map_over(FyRamBlock *rb, int fd, uint64_t off, FyError **errp)
{
    void *p = mmap(rb->host, rb->used_length, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_FIXED, fd, (off_t)off);
    if (p == MAP_FAILED) {
        fy_error_setg_errno(errp, errno, "RAM block '%s': mapping its memfd",
                            rb->idstr);
        return -1;
    }
    if (rb->fd >= 0) {
        if (dup3(fd, rb->fd, O_CLOEXEC) < 0) {
            fy_error_setg_errno(errp, errno, "RAM block '%s': dup3",
                                rb->idstr);
            return -1;
        }
        close(fd);
    } else {
        rb->fd = fd;
    }
    rb->fd_offset = off;
    rb->shared = true;
    return 0;
}

static void reply(FyChannel *c, const FyError *err)
{
    uint8_t buf[6 + HO_REPLY_MAX];
    const char *msg = err ? fy_error_msg(err) : "";
    size_t len = strnlen(msg, HO_REPLY_MAX);
    put_be32(buf, err ? 1 : 0);
    buf[4] = (uint8_t)(len >> 8);
    buf[5] = (uint8_t)len;
    memcpy(buf + 6, msg, len);
    fy_channel_write_all(c, buf, 6 + len, NULL);
}

static int receive_blocks(FyMigration *m, FyMigMfd *mfd, FyChannel *c,
                          HoBlock *hb, uint32_t *n, FyError **errp)
{
    uint8_t hdr[HO_HEADER_LEN];
    if (fy_channel_read_all(c, hdr, sizeof(hdr), errp) != 0) {
        if (errp && !*errp)
            fy_error_setg(errp, "%s: end of stream in the header", c->name);
        return -1;
    }
    uint32_t version = get_be32(hdr + 4), count = get_be32(hdr + 8);
    if (version != FY_HANDOVER_VERSION) {
        fy_error_setg(errp, "version %" PRIu32 " (expected %u)", version,
                      FY_HANDOVER_VERSION);
        return -1;
    }
    if (count != (uint32_t)m->ram->count) {
        fy_error_setg(errp, "the source hands over %" PRIu32 " RAM blocks, "
                      "this VM has %d", count, m->ram->count);
        return -1;
    }
    for (*n = 0; *n < count; (*n)++) {
        if (read_record(m, c, &hb[*n], (int)*n, hb, errp) < 0) {
            if (hb[*n].fd >= 0)
                close(hb[*n].fd);
            fy_error_prepend(errp, "block record %" PRIu32 ": ", *n);
            return -1;
        }
    }
    /* Everything checked: now map, all of it. */
    for (uint32_t i = 0; i < count; i++) {
        if (map_over(hb[i].rb, hb[i].fd, hb[i].fd_offset, errp) < 0) {
            for (uint32_t k = i; k < count; k++)
                close(hb[k].fd);
            *n = 0;
            mfd->handed_over = true; /* some may be mapped: roll back */
            return -1;
        }
        mfd->handed_over = true;
    }
    *n = 0;
    return 0;
}

int fy_mig_handover_receive(FyMigration *m, FyMigMfd *mfd, FyChannel *c,
                            FyError **errp)
{
    HoBlock hb[FY_RAMBLOCK_MAX];
    uint32_t n = 0;
    FyError *err = NULL;

    pthread_mutex_lock(&m->lock);
    bool mode_ok = m->params.mode == FY_MIG_MODE_CPR_TRANSFER;
    pthread_mutex_unlock(&m->lock);
    if (!mode_ok)
        fy_error_setg(&err, "a RAM handover (mode cpr-transfer) arrived, but "
                      "this destination's migration mode is not "
                      "cpr-transfer");
    else if (mfd->handed_over)
        fy_error_setg(&err, "a second RAM handover arrived");
    else if (receive_blocks(m, mfd, c, hb, &n, &err) < 0) {
        for (uint32_t i = 0; i < n; i++)
            close(hb[i].fd);
    }
    if (err)
        fy_error_prepend(&err, "%s: handover: ", c->name);
    reply(c, err);
    if (err) {
        fy_error_propagate(errp, err);
        return -1;
    }
    return 0;
}

void fy_mig_handover_rollback(FyMigration *m, FyMigMfd *mfd)
{
    if (!mfd->handed_over)
        return;
    for (int i = 0; i < m->ram->count; i++) {
        FyRamBlock *rb = m->ram->blocks[i];
        int fd = memfd_create(rb->idstr, MFD_CLOEXEC);
        if (fd < 0)
            continue;
        if (ftruncate(fd, (off_t)rb->used_length) < 0 ||
            map_over(rb, fd, 0, NULL) < 0)
            close(fd);
    }
    mfd->handed_over = false;
}
