/*
 * stream.c: a buffered migration stream over a channel (QEMUFile's role).
 *
 * Output:  small puts are copied into buf. fy_put_page() closes the
 *          buffered run into an iovec and queues the page pointer after
 *          it, so one writev sends header bytes and pages in order without
 *          copying pages. Invariant: the bytes not yet sent are
 *          iov[0..iovcnt) followed by buf[iov_mark..buf_len); buf is only
 *          rewound by a flush, so the iovecs that point into it stay
 *          valid. The queue flushes itself when buf or the iovec array
 *          (IOV_MAX entries) is full. A big fy_put_buffer() is queued the
 *          same way and flushed at once (the caller's buffer does not
 *          outlive the call), so it is never copied either.
 * Input:   buf[buf_pos..buf_len) is read ahead. A get that drains buf reads
 *          the rest with one readv into {destination, buf}: the payload
 *          lands in place and whatever follows it becomes the next
 *          read-ahead, so pages are neither copied nor read one syscall at
 *          a time.
 * Errors:  the first error is kept; afterwards puts do nothing and gets
 *          return zeros (and zero their destination), so callers check
 *          once per section or iteration. End of stream in the middle of a
 *          get is an error that says at which offset the stream ended and
 *          how many bytes were wanted.
 * Offsets: pos counts bytes put (output) or consumed (input) since the
 *          stream was made; fy_stream_offset() adds base.
 * Rate:    QEMU's scheme: the budget of a 100 ms window is rate/10; bytes
 *          put (plus bytes accounted from elsewhere) count against it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/stream.h"

#define STREAM_BUF_SIZE (256 * 1024) /* one read takes what a fast sender queued */
#define STREAM_MAX_IOV IOV_MAX
#define STREAM_DIRECT_PUT (STREAM_BUF_SIZE / 2) /* put_buffer: no copy from here */
#define RATE_WINDOW_NS 100000000ull             /* QEMU checks per 100 ms */
#define RATE_WINDOWS_PER_SEC (1000000000ull / RATE_WINDOW_NS)

struct FyStream {
    FyChannel *c;
    bool own_channel;
    bool output;
    FyError *err;
    bool eof;             /* input: the channel said end of file */

    uint8_t *buf;
    size_t buf_pos, buf_len;
    size_t iov_mark;      /* output: buf[0..iov_mark) is already in iov */
    struct iovec *iov;    /* output only */
    int iovcnt;

    uint64_t base;        /* offset_base */
    uint64_t pos;         /* bytes put or consumed */
    uint64_t transferred; /* bytes that crossed the channel */

    uint64_t rate;        /* bytes/s, 0 = unlimited */
    uint64_t window_start_ns;
    uint64_t window_start_pos;
    uint64_t rate_extra;  /* bytes accounted from other channels */
    uint64_t clock_due;   /* used bytes at which the window's clock is read */

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
    if (!c)
        return NULL;
    FyStream *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->buf = malloc(STREAM_BUF_SIZE);
    if (output)
        f->iov = malloc(sizeof(*f->iov) * STREAM_MAX_IOV);
    if (!f->buf || (output && !f->iov)) {
        free(f->buf);
        free(f->iov);
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
    if (f->iovcnt) {
        size_t total = 0;
        for (int i = 0; i < f->iovcnt; i++)
            total += f->iov[i].iov_len;
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

/* Room for n (<= STREAM_BUF_SIZE) contiguous bytes in buf, or NULL once the
 * stream has failed. One iovec stays free for the final buffered run. */
static inline uint8_t *put_room(FyStream *f, size_t n)
{
    if (f->err)
        return NULL;
    if (f->buf_len + n > STREAM_BUF_SIZE || f->iovcnt >= STREAM_MAX_IOV - 1) {
        if (fy_stream_flush(f) < 0)
            return NULL;
    }
    return f->buf + f->buf_len;
}

static inline void put_be(FyStream *f, uint64_t v, size_t n)
{
    uint8_t *p = put_room(f, n);
    if (!p)
        return;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    f->buf_len += n;
    f->pos += n;
}

void fy_put_byte(FyStream *f, uint8_t v) { put_be(f, v, 1); }
void fy_put_be16(FyStream *f, uint16_t v) { put_be(f, v, 2); }
void fy_put_be32(FyStream *f, uint32_t v) { put_be(f, v, 4); }
void fy_put_be64(FyStream *f, uint64_t v) { put_be(f, v, 8); }

/* Queue len bytes at p after everything pending; the caller flushes before
 * p may go away. Neighbouring queued memory is merged into one iovec. */
static void queue_iov(FyStream *f, const void *p, size_t len)
{
    if (f->iovcnt >= STREAM_MAX_IOV - 2 && fy_stream_flush(f) < 0)
        return;
    close_buffered_run(f);
    struct iovec *last = f->iovcnt ? &f->iov[f->iovcnt - 1] : NULL;
    uintptr_t lb = last ? (uintptr_t)last->iov_base : 0;
    bool last_is_buf = lb >= (uintptr_t)f->buf &&
                       lb < (uintptr_t)f->buf + STREAM_BUF_SIZE;
    if (last && !last_is_buf && lb + last->iov_len == (uintptr_t)p) {
        last->iov_len += len;
    } else {
        f->iov[f->iovcnt].iov_base = (void *)p;
        f->iov[f->iovcnt].iov_len = len;
        f->iovcnt++;
    }
    f->pos += len;
}

void fy_put_buffer(FyStream *f, const void *buf, size_t len)
{
    if (f->err || !len)
        return;
    if (len >= STREAM_DIRECT_PUT) {
        queue_iov(f, buf, len);
        fy_stream_flush(f); /* buf is the caller's only until we return */
        return;
    }
    const uint8_t *s = buf;
    while (len) {
        size_t room = STREAM_BUF_SIZE - f->buf_len;
        size_t n = len < room ? len : room;
        if (!n || f->iovcnt >= STREAM_MAX_IOV - 1) {
            if (fy_stream_flush(f) < 0)
                return;
            continue;
        }
        memcpy(f->buf + f->buf_len, s, n);
        f->buf_len += n;
        f->pos += n;
        s += n;
        len -= n;
    }
}

void fy_put_counted_string(FyStream *f, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    if (len > 255) {
        fy_stream_seterr(f, "%s: string '%.32s...' is %zu bytes, more than the "
                         "255 a counted string holds (stream offset %llu)",
                         f->c->name, s, len,
                         (unsigned long long)fy_stream_offset(f));
        return;
    }
    fy_put_byte(f, (uint8_t)len);
    fy_put_buffer(f, s, len);
}

void fy_put_page(FyStream *f, const void *p, size_t len)
{
    if (f->err || !len)
        return;
    queue_iov(f, p, len);
}

/* ---- input ---- */

static uint64_t end_offset(const FyStream *f)
{
    return f->base + f->pos + (f->buf_len - f->buf_pos);
}

static void set_eof_error(FyStream *f, size_t want)
{
    fy_stream_seterr(f, "%s: stream ends at offset %llu (reading %zu bytes)",
                     f->c->name, (unsigned long long)end_offset(f), want);
}

/* readv on the channel, waiting out FY_IO_AGAIN: the stream API blocks.
 * Returns bytes read, 0 at EOF (f->eof set), -1 with the error set. */
static ssize_t stream_readv(FyStream *f, struct iovec *iov, int iovcnt)
{
    if (f->err)
        return -1;
    if (f->eof)
        return 0;
    for (;;) {
        FyError *err = NULL;
        ssize_t n = fy_channel_readv(f->c, iov, iovcnt, &err);
        if (n == FY_IO_AGAIN) {
            if (fy_channel_wait(f->c, false, -1, &err) < 0) {
                fy_stream_set_error(f, err);
                return -1;
            }
            continue;
        }
        if (n < 0) {
            fy_stream_set_error(f, err);
            return -1;
        }
        if (n == 0)
            f->eof = true;
        f->transferred += (uint64_t)n;
        return n;
    }
}

/* Read more into buf after what is buffered; returns false at EOF/error. */
static bool fill(FyStream *f)
{
    if (f->buf_pos > 0) {
        memmove(f->buf, f->buf + f->buf_pos, f->buf_len - f->buf_pos);
        f->buf_len -= f->buf_pos;
        f->buf_pos = 0;
    }
    struct iovec iov = { f->buf + f->buf_len, STREAM_BUF_SIZE - f->buf_len };
    ssize_t n = stream_readv(f, &iov, 1);
    if (n <= 0)
        return false;
    f->buf_len += (size_t)n;
    return true;
}

/* Ensure n (<= STREAM_BUF_SIZE) bytes are buffered. */
static bool need(FyStream *f, size_t n)
{
    if (f->err)
        return false;
    while (f->buf_len - f->buf_pos < n) {
        if (!fill(f)) {
            set_eof_error(f, n);
            return false;
        }
    }
    return true;
}

static uint64_t get_be(FyStream *f, size_t n)
{
    if (n == 8 && !f->err && f->buf_len - f->buf_pos >= 8) {
        /* The hot case (every RAM record header): one load and a swap. */
        uint64_t v;
        memcpy(&v, f->buf + f->buf_pos, 8);
        f->buf_pos += 8;
        f->pos += 8;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
#endif
        return v;
    }
    if (!need(f, n))
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | f->buf[f->buf_pos + i];
    f->buf_pos += n;
    f->pos += n;
    return v;
}

uint8_t fy_get_byte(FyStream *f) { return (uint8_t)get_be(f, 1); }
uint16_t fy_get_be16(FyStream *f) { return (uint16_t)get_be(f, 2); }
uint32_t fy_get_be32(FyStream *f) { return (uint32_t)get_be(f, 4); }
uint64_t fy_get_be64(FyStream *f) { return get_be(f, 8); }

size_t fy_get_buffer(FyStream *f, void *buf, size_t len)
{
    uint8_t *d = buf;
    size_t done = 0;
    if (f->err) {
        if (len)
            memset(d, 0, len);
        return 0;
    }
    size_t have = f->buf_len - f->buf_pos;
    size_t n = have < len ? have : len;
    if (n) {
        memcpy(d, f->buf + f->buf_pos, n);
        f->buf_pos += n;
        f->pos += n;
        done = n;
    }
    if (done < len) {
        /* buf is drained: the rest goes straight to d, the overflow
         * becomes the next read-ahead. */
        f->buf_pos = f->buf_len = 0;
        while (done < len) {
            struct iovec iov[2] = { { d + done, len - done },
                                    { f->buf, STREAM_BUF_SIZE } };
            ssize_t r = stream_readv(f, iov, 2);
            if (r <= 0) {
                if (r == 0)
                    set_eof_error(f, len);
                memset(d + done, 0, len - done);
                return done;
            }
            size_t got = (size_t)r;
            if (got > len - done) {
                f->buf_len = got - (len - done);
                got = len - done;
            }
            f->pos += got;
            done += got;
        }
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
    while (len && !f->err) {
        size_t have = f->buf_len - f->buf_pos;
        if (!have) {
            if (!fill(f)) {
                set_eof_error(f, len);
                return;
            }
            continue;
        }
        size_t n = have < len ? have : len;
        f->buf_pos += n;
        f->pos += n;
        len -= n;
    }
}

bool fy_stream_eof(FyStream *f)
{
    if (f->output || f->buf_pos < f->buf_len)
        return false;
    if (!f->eof && !f->err)
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
        return true; /* stop sending: nothing more will go out anyway */
    if (!f->rate)
        return false;
    /* Under 10 B/s the budget is 0: nothing goes out (callers rely on it
     * to hold a stream back completely). */
    uint64_t budget = f->rate / RATE_WINDOWS_PER_SEC;
    uint64_t used = f->pos - f->window_start_pos + f->rate_extra;
    /* The clock is read only when an eighth of a budget went out since it
     * last was, or the budget is used up: a per-page clock_gettime was
     * half of the sender's time on zero pages. A stale window can let at
     * most budget/8 more out than an exact one. */
    if (used < budget && used < f->clock_due)
        return false;
    window_refresh(f);
    used = f->pos - f->window_start_pos + f->rate_extra;
    f->clock_due = used + budget / 8;
    return used >= budget;
}

void fy_stream_rate_limit_wait(FyStream *f)
{
    uint64_t end = f->window_start_ns + RATE_WINDOW_NS;
    uint64_t now = now_ns();
    if (now < end) {
        struct timespec ts = { 0, (long)(end - now) };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    window_refresh(f);
}

/* ---- return path and close ---- */

FyStream *fy_stream_return_path(FyStream *f, FyError **errp)
{
    if (f->rp)
        return f->rp;
    FyChannel *c = f->c;
    int fd = c->rfd >= 0 ? c->rfd : c->wfd;
    if (!(c->features & FY_CHANNEL_FEATURE_DUPLEX) || fd < 0) {
        fy_error_setg(errp, "channel '%s' has no return path", c->name);
        return NULL;
    }
    int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) {
        fy_error_setg_errno(errp, errno, "%s: dup for the return path", c->name);
        return NULL;
    }
    char *name = NULL;
    if (asprintf(&name, "%s (return path)", c->name) < 0)
        name = NULL;
    FyChannel *rc = name ? fy_channel_fd_new(dupfd, name, errp) : NULL;
    if (!name)
        fy_error_setg(errp, "%s: out of memory for the return path", c->name);
    free(name);
    if (!rc) {
        close(dupfd);
        return NULL;
    }
    f->rp = f->output ? fy_stream_new_input(rc, true) : fy_stream_new_output(rc, true);
    if (!f->rp) {
        fy_error_setg(errp, "%s: out of memory for the return path", c->name);
        fy_channel_close(rc, NULL);
    }
    return f->rp;
}

void fy_stream_set_return_path(FyStream *f, FyStream *rp)
{
    if (f->rp && f->rp != rp)
        fy_stream_close(f->rp, NULL);
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
    free(f->iov);
    free(f);
    return r;
}
