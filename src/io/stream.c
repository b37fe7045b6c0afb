/*
 * stream.c: a buffered migration stream over a channel (QEMUFile's role).
 *
 * Output:  puts fill buf; fy_put_page() closes the buffered run into an iovec
 *          and queues the page pointer after it, so one writev sends header
 *          bytes and pages in order without copying pages. Invariant: the
 *          bytes not yet sent are iov[0..iovcnt) followed by
 *          buf[iov_mark..buf_len).
 * Input:   buf[buf_pos..buf_len) is read ahead; large gets bypass the buffer
 *          once it is drained and read straight into the caller's memory.
 * Errors:  the first error is kept; afterwards puts do nothing and gets
 *          return zeros, so callers check once per section or iteration.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/stream.h"

#define STREAM_BUF_SIZE 32768
#define STREAM_MAX_IOV 64
#define RATE_WINDOW_NS 100000000ull /* QEMU checks the limit per 100 ms */

struct FyStream {
    FyChannel *c;
    bool own_channel;
    bool output;
    FyError *err;
    bool eof;

    uint8_t *buf;
    size_t buf_pos, buf_len;
    size_t iov_mark;
    struct iovec iov[STREAM_MAX_IOV];
    int iovcnt;

    uint64_t base;        /* offset_base */
    uint64_t pos;         /* bytes put or consumed */
    uint64_t transferred; /* bytes that crossed the channel */

    uint64_t rate;        /* bytes/s, 0 = unlimited */
    uint64_t window_start_ns;
    uint64_t window_start_pos;
    uint64_t rate_extra;  /* bytes accounted from other channels */

    FyStream *rp;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static FyStream *stream_new(FyChannel *c, bool own, bool output)
{
    FyStream *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->buf = malloc(STREAM_BUF_SIZE);
    if (!f->buf) {
        free(f);
        return NULL;
    }
    f->c = c;
    f->own_channel = own;
    f->output = output;
    f->window_start_ns = now_ns();
    return f;
}

FyStream *fy_stream_new_output(FyChannel *c, bool own_channel)
{
    return stream_new(c, own_channel, true);
}

FyStream *fy_stream_new_input(FyChannel *c, bool own_channel)
{
    return stream_new(c, own_channel, false);
}

FyChannel *fy_stream_channel(FyStream *f) { return f->c; }
bool fy_stream_is_output(const FyStream *f) { return f->output; }

/* ---- sticky error ---- */

const FyError *fy_stream_error(const FyStream *f) { return f->err; }

void fy_stream_set_error(FyStream *f, FyError *err)
{
    if (!err)
        return;
    if (f->err)
        fy_error_free(err);
    else
        f->err = err;
}

void fy_stream_seterr(FyStream *f, const char *fmt, ...)
{
    if (f->err)
        return;
    va_list ap;
    va_start(ap, fmt);
    fy_error_vsetg(&f->err, fmt, ap);
    va_end(ap);
}

int fy_stream_check(const FyStream *f, FyError **errp)
{
    if (!f->err)
        return 0;
    if (errp && !*errp)
        *errp = fy_error_copy(f->err);
    return -1;
}

/* ---- output ---- */

static void close_buffered_run(FyStream *f)
{
    if (f->buf_len > f->iov_mark) {
        f->iov[f->iovcnt].iov_base = f->buf + f->iov_mark;
        f->iov[f->iovcnt].iov_len = f->buf_len - f->iov_mark;
        f->iovcnt++;
        f->iov_mark = f->buf_len;
    }
}

int fy_stream_flush(FyStream *f)
{
    if (!f->output || f->err)
        return f->err ? -1 : 0;
    close_buffered_run(f);
    size_t total = 0;
    for (int i = 0; i < f->iovcnt; i++)
        total += f->iov[i].iov_len;
    if (f->iovcnt) {
        FyError *err = NULL;
        if (fy_channel_writev_all(f->c, f->iov, f->iovcnt, &err) < 0)
            fy_stream_set_error(f, err);
        else
            f->transferred += total;
    }
    f->iovcnt = 0;
    f->buf_len = 0;
    f->iov_mark = 0;
    return f->err ? -1 : 0;
}

/* Make room for n (<= STREAM_BUF_SIZE) contiguous bytes in buf. */
static inline uint8_t *put_room(FyStream *f, size_t n)
{
    if (f->buf_len + n > STREAM_BUF_SIZE || f->iovcnt >= STREAM_MAX_IOV - 1)
        fy_stream_flush(f);
    return f->buf + f->buf_len;
}

void fy_put_byte(FyStream *f, uint8_t v)
{
    if (f->err)
        return;
    uint8_t *p = put_room(f, 1);
    *p = v;
    f->buf_len++;
    f->pos++;
}

void fy_put_be16(FyStream *f, uint16_t v)
{
    if (f->err)
        return;
    uint8_t *p = put_room(f, 2);
    p[0] = v >> 8;
    p[1] = v;
    f->buf_len += 2;
    f->pos += 2;
}

void fy_put_be32(FyStream *f, uint32_t v)
{
    if (f->err)
        return;
    uint8_t *p = put_room(f, 4);
    for (int i = 0; i < 4; i++)
        p[i] = v >> (24 - 8 * i);
    f->buf_len += 4;
    f->pos += 4;
}

void fy_put_be64(FyStream *f, uint64_t v)
{
    if (f->err)
        return;
    uint8_t *p = put_room(f, 8);
    for (int i = 0; i < 8; i++)
        p[i] = v >> (56 - 8 * i);
    f->buf_len += 8;
    f->pos += 8;
}

void fy_put_buffer(FyStream *f, const void *buf, size_t len)
{
    const uint8_t *s = buf;
    while (len && !f->err) {
        size_t n = len < STREAM_BUF_SIZE ? len : STREAM_BUF_SIZE;
        uint8_t *p = put_room(f, n);
        size_t room = STREAM_BUF_SIZE - f->buf_len;
        if (n > room)
            n = room;
        memcpy(p, s, n);
        f->buf_len += n;
        f->pos += n;
        s += n;
        len -= n;
    }
}

void fy_put_counted_string(FyStream *f, const char *s)
{
    size_t len = strlen(s);
    if (len > 255) {
        fy_stream_seterr(f, "%s: string '%.32s...' is %zu bytes, more than 255",
                         f->c->name, s, len);
        return;
    }
    fy_put_byte(f, (uint8_t)len);
    fy_put_buffer(f, s, len);
}

void fy_put_page(FyStream *f, const void *p, size_t len)
{
    if (f->err || !len)
        return;
    if (f->iovcnt >= STREAM_MAX_IOV - 2)
        fy_stream_flush(f);
    close_buffered_run(f);
    struct iovec *last = f->iovcnt ? &f->iov[f->iovcnt - 1] : NULL;
    /* Neighbouring pages of guest memory go out as one iovec. */
    if (last && (const uint8_t *)last->iov_base + last->iov_len == p &&
        !((uint8_t *)last->iov_base >= f->buf &&
          (uint8_t *)last->iov_base < f->buf + STREAM_BUF_SIZE)) {
        last->iov_len += len;
    } else {
        f->iov[f->iovcnt].iov_base = (void *)p;
        f->iov[f->iovcnt].iov_len = len;
        f->iovcnt++;
    }
    f->pos += len;
}

/* ---- input ---- */

/* Read more into buf; returns bytes added, 0 at EOF or error. */
static size_t fill(FyStream *f)
{
    if (f->err || f->eof)
        return 0;
    if (f->buf_pos > 0) {
        memmove(f->buf, f->buf + f->buf_pos, f->buf_len - f->buf_pos);
        f->buf_len -= f->buf_pos;
        f->buf_pos = 0;
    }
    for (;;) {
        struct iovec iov = { f->buf + f->buf_len, STREAM_BUF_SIZE - f->buf_len };
        FyError *err = NULL;
        ssize_t n = fy_channel_readv(f->c, &iov, 1, &err);
        if (n == FY_IO_AGAIN) {
            /* A non-blocking channel: the stream API is blocking, wait. */
            uint8_t b;
            if (fy_channel_read_all(f->c, &b, 1, &err) != 0) {
                if (err)
                    fy_stream_set_error(f, err);
                else
                    f->eof = true;
                return 0;
            }
            f->buf[f->buf_len++] = b;
            f->transferred++;
            return 1;
        }
        if (n < 0) {
            fy_stream_set_error(f, err);
            return 0;
        }
        if (n == 0) {
            f->eof = true;
            return 0;
        }
        f->buf_len += (size_t)n;
        f->transferred += (uint64_t)n;
        return (size_t)n;
    }
}

static void set_eof_error(FyStream *f, size_t want)
{
    fy_stream_seterr(f, "%s: stream ends at offset %llu (reading %zu bytes)",
                     f->c->name, (unsigned long long)(f->base + f->pos), want);
}

/* Ensure n (<= STREAM_BUF_SIZE) bytes are buffered. */
static bool need(FyStream *f, size_t n)
{
    while (f->buf_len - f->buf_pos < n) {
        if (!fill(f)) {
            if (!f->err)
                set_eof_error(f, n);
            return false;
        }
    }
    return true;
}

uint8_t fy_get_byte(FyStream *f)
{
    if (f->err || !need(f, 1))
        return 0;
    f->pos++;
    return f->buf[f->buf_pos++];
}

static uint64_t get_be(FyStream *f, size_t n)
{
    if (f->err || !need(f, n))
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | f->buf[f->buf_pos + i];
    f->buf_pos += n;
    f->pos += n;
    return v;
}

uint16_t fy_get_be16(FyStream *f) { return (uint16_t)get_be(f, 2); }
uint32_t fy_get_be32(FyStream *f) { return (uint32_t)get_be(f, 4); }
uint64_t fy_get_be64(FyStream *f) { return get_be(f, 8); }

size_t fy_get_buffer(FyStream *f, void *buf, size_t len)
{
    uint8_t *d = buf;
    size_t done = 0;
    if (f->err)
        return 0;
    size_t have = f->buf_len - f->buf_pos;
    size_t n = have < len ? have : len;
    memcpy(d, f->buf + f->buf_pos, n);
    f->buf_pos += n;
    f->pos += n;
    done = n;
    if (done < len && len - done >= STREAM_BUF_SIZE / 2 && !f->eof) {
        /* Big reads (pages) go straight to their destination. */
        FyError *err = NULL;
        int r = fy_channel_read_all(f->c, d + done, len - done, &err);
        if (r == 0) {
            f->transferred += len - done;
            f->pos += len - done;
            return len;
        }
        if (r > 0) {
            f->eof = true;
            set_eof_error(f, len - done);
        } else {
            fy_stream_set_error(f, err);
        }
        return done;
    }
    while (done < len) {
        if (!fill(f)) {
            if (!f->err)
                set_eof_error(f, len - done);
            return done;
        }
        have = f->buf_len - f->buf_pos;
        n = have < len - done ? have : len - done;
        memcpy(d + done, f->buf + f->buf_pos, n);
        f->buf_pos += n;
        f->pos += n;
        done += n;
    }
    return done;
}

int fy_get_counted_string(FyStream *f, char buf[256])
{
    uint8_t len = fy_get_byte(f);
    size_t got = fy_get_buffer(f, buf, len);
    buf[got] = 0;
    return f->err ? -1 : len;
}

int fy_peek_byte(FyStream *f, size_t offset)
{
    if (f->err || offset >= 64)
        return -1;
    while (f->buf_len - f->buf_pos <= offset)
        if (!fill(f))
            return -1;
    return f->buf[f->buf_pos + offset];
}

void fy_skip(FyStream *f, size_t len)
{
    uint8_t tmp[4096];
    while (len && !f->err) {
        size_t n = len < sizeof(tmp) ? len : sizeof(tmp);
        if (fy_get_buffer(f, tmp, n) != n)
            return;
        len -= n;
    }
}

bool fy_stream_eof(FyStream *f)
{
    if (f->buf_pos < f->buf_len)
        return false;
    if (!f->eof)
        fill(f);
    return f->eof && f->buf_pos == f->buf_len;
}

/* ---- position, counters, rate limit ---- */

uint64_t fy_stream_offset(const FyStream *f) { return f->base + f->pos; }
void fy_stream_set_offset_base(FyStream *f, uint64_t base) { f->base = base; }
uint64_t fy_stream_transferred(const FyStream *f) { return f->transferred; }

void fy_stream_set_rate_limit(FyStream *f, uint64_t bytes_per_sec)
{
    f->rate = bytes_per_sec;
}

uint64_t fy_stream_rate_limit(const FyStream *f) { return f->rate; }

void fy_stream_rate_limit_account(FyStream *f, uint64_t bytes)
{
    f->rate_extra += bytes;
}

static void window_refresh(FyStream *f)
{
    uint64_t now = now_ns();
    if (now - f->window_start_ns >= RATE_WINDOW_NS) {
        f->window_start_ns = now;
        f->window_start_pos = f->pos;
        f->rate_extra = 0;
    }
}

bool fy_stream_rate_limit_exceeded(FyStream *f)
{
    if (f->err)
        return true;
    if (!f->rate)
        return false;
    window_refresh(f);
    uint64_t used = f->pos - f->window_start_pos + f->rate_extra;
    return used >= f->rate / (1000000000ull / RATE_WINDOW_NS);
}

void fy_stream_rate_limit_wait(FyStream *f)
{
    uint64_t end = f->window_start_ns + RATE_WINDOW_NS;
    uint64_t now = now_ns();
    if (now < end) {
        struct timespec ts = { 0, (long)(end - now) };
        nanosleep(&ts, NULL);
    }
    window_refresh(f);
}

/* ---- return path and close ---- */

FyStream *fy_stream_return_path(FyStream *f, FyError **errp)
{
    if (f->rp)
        return f->rp;
    int fd = f->output ? f->c->wfd : f->c->rfd;
    if (!(f->c->features & FY_CHANNEL_FEATURE_SHUTDOWN) || fd < 0 ||
        !strncmp(f->c->name, "exec:", 5) || !strncmp(f->c->name, "file:", 5)) {
        fy_error_setg(errp, "channel '%s' has no return path", f->c->name);
        return NULL;
    }
    int dupfd = dup(fd);
    if (dupfd < 0) {
        fy_error_setg_errno(errp, errno, "%s: dup for the return path", f->c->name);
        return NULL;
    }
    char name[300];
    snprintf(name, sizeof(name), "%s (return path)", f->c->name);
    FyChannel *c = fy_channel_fd_new(dupfd, name, errp);
    if (!c) {
        close(dupfd);
        return NULL;
    }
    f->rp = f->output ? fy_stream_new_input(c, true) : fy_stream_new_output(c, true);
    if (!f->rp)
        fy_channel_close(c, NULL);
    return f->rp;
}

void fy_stream_set_return_path(FyStream *f, FyStream *rp)
{
    f->rp = rp;
}

int fy_stream_close(FyStream *f, FyError **errp)
{
    if (!f)
        return 0;
    if (f->output)
        fy_stream_flush(f);
    int r = fy_stream_check(f, errp);
    if (f->rp)
        fy_stream_close(f->rp, NULL);
    if (f->own_channel) {
        FyError *err = NULL;
        if (fy_channel_close(f->c, &err) < 0) {
            fy_error_propagate(errp, err);
            r = -1;
        }
    }
    fy_error_free(f->err);
    free(f->buf);
    free(f);
    return r;
}
