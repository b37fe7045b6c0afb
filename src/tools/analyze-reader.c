/*
 * analyze-reader.c: a buffered reader that knows where it is.
 *
 * One big buffer (AN_BUF_SIZE) in front of an fd, refilled with read() in
 * large chunks, or a fixed block of memory. Callers ask rd_need(n) and then
 * read buf[pos..pos+n) directly, so the RAM path costs no function call per
 * byte and no copy per page.
 *
 * Invariants: buf[pos..len) are the next unread bytes; base + pos is their
 * stream offset; once src_end is set no read() is tried again.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "analyze-int.h"

int rd_init_fd(AnRd *r, int fd)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->buf = malloc(AN_BUF_SIZE);
    if (!r->buf)
        return -1;
    r->cap = AN_BUF_SIZE;
    r->own_buf = true;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return 0;
}

void rd_init_mem(AnRd *r, const void *data, size_t len, uint64_t base)
{
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    r->buf = (uint8_t *)data;
    r->cap = r->len = len;
    r->base = base;
    r->src_end = true;
}

void rd_free(AnRd *r)
{
    if (r->own_buf)
        free(r->buf);
    r->buf = NULL;
    r->own_buf = false;
}

bool rd_is_mem(const AnRd *r)
{
    return r->fd < 0;
}

bool rd_fill_slow(AnRd *r, size_t n)
{
    if (n > r->cap)
        return false;
    while (r->len - r->pos < n && !r->src_end) {
        if (r->cap - r->pos < n || r->len == r->cap) {
            /* slide the unread tail to the front */
            size_t keep = r->len - r->pos;
            memmove(r->buf, r->buf + r->pos, keep);
            r->base += r->pos;
            r->pos = 0;
            r->len = keep;
        }
        ssize_t got = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            r->err = errno;
            r->src_end = true;
            break;
        }
        if (got == 0) {
            r->src_end = true;
            break;
        }
        r->len += (size_t)got;
    }
    return r->len - r->pos >= n;
}

int rd_peek(AnRd *r, size_t i)
{
    if (!rd_need(r, i + 1))
        return -1;
    return r->buf[r->pos + i];
}

uint64_t rd_skip(AnRd *r, uint64_t n)
{
    uint64_t done = 0;
    while (done < n) {
        if (!rd_need(r, 1))
            break;
        size_t a = rd_avail(r);
        size_t step = (uint64_t)a < n - done ? a : (size_t)(n - done);
        r->pos += step;
        done += step;
    }
    return done;
}

bool rd_copy(AnRd *r, void *dst, size_t n)
{
    uint8_t *d = dst;
    while (n) {
        if (!rd_need(r, 1))
            return false;
        size_t a = rd_avail(r);
        size_t step = a < n ? a : n;
        memcpy(d, r->buf + r->pos, step);
        r->pos += step;
        d += step;
        n -= step;
    }
    return true;
}
