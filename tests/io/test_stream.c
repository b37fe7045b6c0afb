/*
 * test_stream.c: the migration stream over the memory channel and over
 * socketpairs: every put/get kind round trips big-endian, peek, counted
 * strings, the sticky error and its messages, zero-copy pages keeping
 * their place among buffered bytes, offsets and counters, the direct path
 * for big reads, rate-limit arithmetic and the return path.
 */
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "ferry/stream.h"
#include "t.h"

static FyStream *mem_output(FyChannel **cp)
{
    *cp = fy_channel_mem_new(NULL, 0);
    return fy_stream_new_output(*cp, false);
}

static void test_roundtrip_every_kind(void)
{
    FyChannel *c;
    FyStream *f = mem_output(&c);
    uint8_t big[100000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 3);

    fy_put_byte(f, 0xab);
    fy_put_be16(f, 0x1234);
    fy_put_be32(f, 0xdeadbeef);
    fy_put_be64(f, 0x0102030405060708ull);
    fy_put_buffer(f, "hello", 5);
    fy_put_counted_string(f, "pc.ram");
    fy_put_counted_string(f, "");
    fy_put_buffer(f, big, sizeof(big)); /* the direct path */
    fy_put_page(f, big, 4096);
    fy_put_byte(f, 0x7e);
    T_EQ_INT(fy_stream_flush(f), 0);

    size_t len;
    const uint8_t *d = fy_channel_mem_data(c, &len);
    T_EQ_INT(len, 1 + 2 + 4 + 8 + 5 + 7 + 1 + sizeof(big) + 4096 + 1);
    /* Big-endian, exactly as QEMU's qemu_put_be*. */
    static const uint8_t head[] = { 0xab, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef,
                                    1, 2, 3, 4, 5, 6, 7, 8, 'h', 'e', 'l', 'l',
                                    'o', 6, 'p', 'c', '.', 'r', 'a', 'm', 0 };
    T_EQ_MEM(d, head, sizeof(head));

    FyChannel *ic = fy_channel_mem_new(d, len);
    FyStream *in = fy_stream_new_input(ic, true);
    T_EQ_INT(fy_get_byte(in), 0xab);
    T_EQ_INT(fy_get_be16(in), 0x1234);
    T_EQ_INT(fy_get_be32(in), 0xdeadbeef);
    T_ASSERT(fy_get_be64(in) == 0x0102030405060708ull);
    char s[256];
    T_EQ_INT(fy_get_buffer(in, s, 5), 5);
    T_EQ_MEM(s, "hello", 5);
    T_EQ_INT(fy_get_counted_string(in, s), 6);
    T_EQ_STR(s, "pc.ram");
    T_EQ_INT(fy_get_counted_string(in, s), 0);
    T_EQ_STR(s, "");
    static uint8_t back[100000];
    T_EQ_INT(fy_get_buffer(in, back, sizeof(back)), sizeof(back));
    T_EQ_MEM(back, big, sizeof(back));
    T_EQ_INT(fy_get_buffer(in, back, 4096), 4096);
    T_EQ_MEM(back, big, 4096);
    T_EQ_INT(fy_get_byte(in), 0x7e);
    T_ASSERT(fy_stream_eof(in));
    T_ASSERT(fy_stream_error(in) == NULL);
    T_EQ_INT(fy_stream_close(in, NULL), 0);

    T_EQ_INT(fy_stream_close(f, NULL), 0);
    fy_channel_close(c, NULL);
}

static void test_peek(void)
{
    uint8_t data[100];
    for (int i = 0; i < 100; i++)
        data[i] = (uint8_t)(200 - i);
    FyStream *in = fy_stream_new_input(fy_channel_mem_new(data, 70), true);
    for (size_t i = 0; i < 64; i++)
        T_EQ_INT(fy_peek_byte(in, i), 200 - (int)i);
    T_EQ_INT(fy_peek_byte(in, 64), -1); /* beyond what peek allows */
    T_EQ_INT(fy_stream_offset(in), 0);  /* peeking consumes nothing */
    T_EQ_INT(fy_get_byte(in), 200);
    fy_skip(in, 60);
    T_EQ_INT(fy_stream_offset(in), 61);
    T_EQ_INT(fy_peek_byte(in, 8), 131);
    /* Past the end: -1, and a clean EOF is not an error by itself. */
    T_EQ_INT(fy_peek_byte(in, 9), -1);
    T_ASSERT(fy_stream_error(in) == NULL);
    fy_skip(in, 9);
    T_ASSERT(fy_stream_eof(in));
    T_EQ_INT(fy_peek_byte(in, 0), -1);
    T_ASSERT(fy_stream_error(in) == NULL);
    /* A get that needs the missing byte is the error. */
    fy_get_byte(in);
    T_CONTAINS(fy_error_msg(fy_stream_error(in)),
               "memory: stream ends at offset 70 (reading 1 bytes)");
    fy_stream_close(in, NULL);
}

static void test_counted_strings(void)
{
    FyChannel *c;
    FyStream *f = mem_output(&c);
    char s255[256], s256[257];
    memset(s255, 'x', 255);
    s255[255] = 0;
    memset(s256, 'y', 256);
    s256[256] = 0;
    fy_put_counted_string(f, s255);
    T_ASSERT(fy_stream_error(f) == NULL);
    T_EQ_INT(fy_stream_offset(f), 256);
    fy_put_counted_string(f, s256);
    T_ASSERT(fy_stream_error(f) != NULL);
    T_CONTAINS(fy_error_msg(fy_stream_error(f)), "256 bytes, more than the 255");
    T_CONTAINS(fy_error_msg(fy_stream_error(f)), "memory: ");
    /* Nothing of the refused string went out, nor anything after it. */
    fy_put_be32(f, 1);
    T_EQ_INT(fy_stream_offset(f), 256);
    T_EQ_INT(fy_stream_flush(f), -1);
    size_t len;
    fy_channel_mem_data(c, &len);
    T_EQ_INT(len, 0);

    /* A 255-byte string reads back whole, NUL-terminated. */
    FyChannel *c2;
    FyStream *f2 = mem_output(&c2);
    fy_put_counted_string(f2, s255);
    fy_stream_flush(f2);
    const uint8_t *d = fy_channel_mem_data(c2, &len);
    FyStream *in = fy_stream_new_input(fy_channel_mem_new(d, len), true);
    char back[256];
    memset(back, 'z', sizeof(back));
    T_EQ_INT(fy_get_counted_string(in, back), 255);
    T_EQ_STR(back, s255);
    /* A string that the stream cuts short: -1, error, still terminated. */
    FyStream *cut = fy_stream_new_input(fy_channel_mem_new("\x05" "ab", 3), true);
    T_EQ_INT(fy_get_counted_string(cut, back), -1);
    T_EQ_INT(strlen(back), 2);
    T_CONTAINS(fy_error_msg(fy_stream_error(cut)), "stream ends at offset 3");

    fy_stream_close(cut, NULL);
    fy_stream_close(in, NULL);
    fy_stream_close(f2, NULL);
    fy_channel_close(c2, NULL);
    FyError *err = NULL;
    T_EQ_INT(fy_stream_close(f, &err), -1);
    T_CONTAINS(fy_error_msg(err), "more than the 255");
    fy_error_free(err);
    fy_channel_close(c, NULL);
}

static void test_sticky_input_error(void)
{
    FyStream *in = fy_stream_new_input(fy_channel_mem_new("\x01\x02\x03", 3), true);
    fy_stream_set_offset_base(in, 120);
    T_EQ_INT(fy_get_byte(in), 1);
    T_EQ_INT(fy_get_be32(in), 0); /* only 2 bytes left */
    const FyError *e = fy_stream_error(in);
    T_ASSERT(e != NULL);
    T_EQ_STR(fy_error_msg(e), "memory: stream ends at offset 123 (reading 4 bytes)");
    /* Afterwards every get is zero and the first message is kept. */
    T_EQ_INT(fy_get_byte(in), 0);
    T_EQ_INT(fy_get_be16(in), 0);
    T_ASSERT(fy_get_be64(in) == 0);
    uint8_t buf[8];
    memset(buf, 0xff, sizeof(buf));
    T_EQ_INT(fy_get_buffer(in, buf, sizeof(buf)), 0);
    T_EQ_MEM(buf, "\0\0\0\0\0\0\0\0", 8); /* zeroed, not left as it was */
    char s[256];
    T_EQ_INT(fy_get_counted_string(in, s), -1);
    T_EQ_STR(s, "");
    T_EQ_INT(fy_peek_byte(in, 0), -1);
    fy_stream_seterr(in, "a later error");
    fy_stream_set_error(in, NULL);
    T_ASSERT(fy_stream_error(in) == e);
    T_EQ_STR(fy_error_msg(fy_stream_error(in)),
             "memory: stream ends at offset 123 (reading 4 bytes)");
    T_EQ_INT(fy_stream_offset(in), 121);

    FyError *err = NULL;
    T_EQ_INT(fy_stream_check(in, &err), -1);
    T_EQ_STR(fy_error_msg(err), "memory: stream ends at offset 123 (reading 4 bytes)");
    fy_error_clear(&err);
    T_EQ_INT(fy_stream_close(in, &err), -1);
    T_CONTAINS(fy_error_msg(err), "stream ends at offset 123");
    fy_error_free(err);

    /* A big get cut short: partial count, the rest zeroed, the error. */
    uint8_t data[50000];
    memset(data, 0x5a, sizeof(data));
    in = fy_stream_new_input(fy_channel_mem_new(data, sizeof(data)), true);
    static uint8_t dst[80000];
    memset(dst, 0xff, sizeof(dst));
    T_EQ_INT(fy_get_buffer(in, dst, sizeof(dst)), sizeof(data));
    T_EQ_INT(dst[sizeof(data) - 1], 0x5a);
    T_EQ_INT(dst[sizeof(data)], 0);
    T_EQ_INT(dst[sizeof(dst) - 1], 0);
    T_CONTAINS(fy_error_msg(fy_stream_error(in)),
               "stream ends at offset 50000 (reading 80000 bytes)");
    fy_stream_close(in, NULL);

    /* fy_skip past the end is the same error. */
    in = fy_stream_new_input(fy_channel_mem_new(data, 10), true);
    fy_skip(in, 11);
    T_CONTAINS(fy_error_msg(fy_stream_error(in)), "stream ends at offset 10");
    fy_stream_close(in, NULL);

    /* An error set by a caller is sticky too and stops puts. */
    FyChannel *c;
    FyStream *f = mem_output(&c);
    fy_stream_seterr(f, "section '%s': bad", "cpu");
    fy_put_be64(f, 1);
    fy_put_page(f, data, 4096);
    fy_put_buffer(f, data, sizeof(data));
    T_EQ_INT(fy_stream_flush(f), -1);
    size_t len;
    fy_channel_mem_data(c, &len);
    T_EQ_INT(len, 0);
    T_ASSERT(fy_stream_rate_limit_exceeded(f)); /* a failed stream stops senders */
    T_EQ_STR(fy_error_msg(fy_stream_error(f)), "section 'cpu': bad");
    fy_stream_close(f, NULL);
    fy_channel_close(c, NULL);
}

static void test_zero_copy_pages(void)
{
    FyChannel *c;
    FyStream *f = mem_output(&c);
    static uint8_t ram[8 * 4096];
    for (size_t i = 0; i < sizeof(ram); i++)
        ram[i] = (uint8_t)(i / 4096 + 1);

    fy_put_be64(f, 0x1000);
    fy_put_page(f, ram, 4096);
    fy_put_page(f, ram + 4096, 4096); /* adjacent: merged into one iovec */
    fy_put_be64(f, 0x5000);
    fy_put_page(f, ram + 5 * 4096, 4096);
    fy_put_byte(f, 0x42);
    T_EQ_INT(fy_stream_offset(f), 8 + 8192 + 8 + 4096 + 1);
    T_EQ_INT(fy_stream_transferred(f), 0); /* nothing has left yet */
    /* Zero-copy: the page is read at flush time, not at put time. */
    memset(ram + 5 * 4096, 0xee, 4096);
    T_EQ_INT(fy_stream_flush(f), 0);
    T_EQ_INT(fy_stream_transferred(f), 8 + 8192 + 8 + 4096 + 1);

    size_t len;
    const uint8_t *d = fy_channel_mem_data(c, &len);
    T_EQ_INT(len, 8 + 8192 + 8 + 4096 + 1);
    T_EQ_MEM(d, "\0\0\0\0\0\0\x10\0", 8);
    T_EQ_MEM(d + 8, ram, 8192);
    T_EQ_MEM(d + 8 + 8192, "\0\0\0\0\0\0\x50\0", 8);
    T_EQ_INT(d[8 + 8192 + 8], 0xee);
    T_EQ_MEM(d + 8 + 8192 + 8, ram + 5 * 4096, 4096);
    T_EQ_INT(d[len - 1], 0x42);
    fy_stream_close(f, NULL);
    fy_channel_close(c, NULL);
}

/* More queued pages than one writev takes: the queue flushes itself and
 * order is kept across the flushes. */
static void test_many_pages_keep_order(void)
{
    enum { N = 3000, PS = 64 };
    static uint8_t ram[N * 2 * PS];
    for (size_t i = 0; i < sizeof(ram); i++)
        ram[i] = (uint8_t)(i * 31 + i / PS);
    FyChannel *c;
    FyStream *f = mem_output(&c);
    for (uint32_t i = 0; i < N; i++) {
        fy_put_be32(f, i);
        fy_put_page(f, ram + 2 * i * PS, PS); /* every other: no merging */
    }
    fy_stream_flush(f);
    T_ASSERT(fy_stream_error(f) == NULL);
    size_t len;
    const uint8_t *d = fy_channel_mem_data(c, &len);
    T_EQ_INT(len, N * (4 + PS));
    FyStream *in = fy_stream_new_input(fy_channel_mem_new(d, len), true);
    uint8_t page[PS];
    for (uint32_t i = 0; i < N; i++) {
        uint32_t v = fy_get_be32(in);
        fy_get_buffer(in, page, PS);
        if (v != i || memcmp(page, ram + 2 * i * PS, PS)) {
            T_FAIL("record %u out of place (header %u)", i, v);
            break;
        }
    }
    T_ASSERT(fy_stream_eof(in));
    fy_stream_close(in, NULL);
    fy_stream_close(f, NULL);
    fy_channel_close(c, NULL);
}

static void test_offsets_and_counters(void)
{
    FyChannel *c;
    FyStream *f = mem_output(&c);
    T_ASSERT(fy_stream_is_output(f));
    T_ASSERT(fy_stream_channel(f) == c);
    fy_stream_set_offset_base(f, 1000);
    T_EQ_INT(fy_stream_offset(f), 1000);
    fy_put_be32(f, 1);
    fy_put_buffer(f, "abc", 3);
    T_EQ_INT(fy_stream_offset(f), 1007);
    T_EQ_INT(fy_stream_transferred(f), 0);
    fy_stream_flush(f);
    T_EQ_INT(fy_stream_transferred(f), 7);
    fy_stream_close(f, NULL);

    /* Input: offset counts what was consumed, transferred what was read
     * from the channel (read-ahead included). */
    size_t len;
    const uint8_t *d = fy_channel_mem_data(c, &len);
    FyStream *in = fy_stream_new_input(fy_channel_mem_new(d, len), true);
    T_ASSERT(!fy_stream_is_output(in));
    fy_stream_set_offset_base(in, 9);
    T_EQ_INT(fy_get_be16(in), 0);
    T_EQ_INT(fy_stream_offset(in), 11);
    T_EQ_INT(fy_stream_transferred(in), 7);
    fy_stream_close(in, NULL);
    fy_channel_close(c, NULL);
}

/* Reads bigger than the buffer, at every alignment relative to it. */
static void test_big_reads(void)
{
    enum { LEN = 300000 };
    static uint8_t data[LEN], back[LEN];
    for (size_t i = 0; i < LEN; i++)
        data[i] = (uint8_t)(i ^ (i >> 8));
    FyStream *in = fy_stream_new_input(fy_channel_mem_new(data, LEN), true);
    size_t pos = 0, sizes[] = { 10, 50000, 3, 32768, 1, 65536, 7, 40000 };
    for (size_t k = 0; pos < LEN; k++) {
        size_t n = sizes[k % 8];
        if (n > LEN - pos)
            n = LEN - pos;
        T_EQ_INT(fy_get_buffer(in, back + pos, n), n);
        pos += n;
        T_EQ_INT(fy_stream_offset(in), pos);
    }
    T_EQ_MEM(back, data, LEN);
    T_ASSERT(fy_stream_eof(in));
    T_EQ_INT(fy_stream_transferred(in), LEN);
    T_ASSERT(fy_stream_error(in) == NULL);
    fy_stream_close(in, NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Rate-limit arithmetic. A window can only roll over (which resets the
 * count) if 100 ms pass, so "exceeded" is asserted only when the checks
 * ran well inside one window: slow machines skip it, never fail it. */
static void test_rate_limit(void)
{
    FyChannel *c;
    FyStream *f = mem_output(&c);
    uint8_t junk[4096] = { 0 };
    T_ASSERT(!fy_stream_rate_limit_exceeded(f)); /* 0 = unlimited */
    fy_put_buffer(f, junk, sizeof(junk));
    T_ASSERT(!fy_stream_rate_limit_exceeded(f));

    /* 100 kB/s: a 10 kB budget per 100 ms window. */
    fy_stream_set_rate_limit(f, 100000);
    T_EQ_INT(fy_stream_rate_limit(f), 100000);
    fy_stream_rate_limit_wait(f); /* a fresh window */
    uint64_t t0 = now_ms();
    fy_put_buffer(f, junk, 4000);
    fy_put_buffer(f, junk, 4000);
    fy_put_buffer(f, junk, 1999);
    T_ASSERT(!fy_stream_rate_limit_exceeded(f));
    fy_put_byte(f, 0);
    bool ex = fy_stream_rate_limit_exceeded(f);
    if (now_ms() - t0 < 50)
        T_ASSERT(ex);
    else
        printf("# slow machine: budget edge not checked\n");
    fy_stream_rate_limit_wait(f); /* sleeps at most to the window's end */
    T_ASSERT(!fy_stream_rate_limit_exceeded(f));

    /* Bytes sent on other channels count against the same budget. */
    t0 = now_ms();
    fy_stream_rate_limit_account(f, 9999);
    T_ASSERT(!fy_stream_rate_limit_exceeded(f));
    fy_stream_rate_limit_account(f, 1);
    ex = fy_stream_rate_limit_exceeded(f);
    if (now_ms() - t0 < 50)
        T_ASSERT(ex);
    fy_stream_rate_limit_wait(f);
    T_ASSERT(!fy_stream_rate_limit_exceeded(f));

    /* One byte at a time: exactly the budget goes out before it says stop. */
    fy_stream_set_rate_limit(f, 640); /* 64 bytes per window */
    fy_stream_rate_limit_wait(f);
    t0 = now_ms();
    uint64_t start = fy_stream_offset(f);
    int sent = 0;
    while (!fy_stream_rate_limit_exceeded(f) && sent < 1000) {
        fy_put_byte(f, 1);
        sent++;
    }
    if (now_ms() - t0 < 50)
        T_EQ_INT(sent, 64);
    T_EQ_INT(fy_stream_offset(f) - start, sent);

    /* A budget of 0 (under 10 B/s) holds everything back. */
    fy_stream_set_rate_limit(f, 5);
    T_ASSERT(fy_stream_rate_limit_exceeded(f));
    fy_stream_rate_limit_wait(f);
    T_ASSERT(fy_stream_rate_limit_exceeded(f));
    fy_stream_set_rate_limit(f, 0);
    T_ASSERT(!fy_stream_rate_limit_exceeded(f));
    T_ASSERT(fy_stream_error(f) == NULL);
    fy_stream_close(f, NULL);
    fy_channel_close(c, NULL);
}

static void test_return_path_socketpair(void)
{
    FyChannel *a, *b;
    FyError *err = NULL;
    T_EQ_INT(fy_channel_socketpair(&a, &b, &err), 0);
    FyStream *out = fy_stream_new_output(a, true);
    FyStream *in = fy_stream_new_input(b, true);
    FyStream *out_rp = fy_stream_return_path(out, &err);
    FyStream *in_rp = fy_stream_return_path(in, &err);
    T_ASSERT(out_rp && in_rp);
    T_ASSERT(err == NULL);
    T_ASSERT(!fy_stream_is_output(out_rp)); /* the way back is input */
    T_ASSERT(fy_stream_is_output(in_rp));
    T_ASSERT(fy_stream_return_path(out, &err) == out_rp); /* made once */
    T_CONTAINS(fy_stream_channel(out_rp)->name, "socketpair:0");
    T_CONTAINS(fy_stream_channel(out_rp)->name, "return path");

    fy_put_be32(out, 0x11223344);
    fy_stream_flush(out);
    T_EQ_INT(fy_get_be32(in), 0x11223344);
    fy_put_be16(in_rp, 0x0102); /* e.g. a PONG */
    fy_put_counted_string(in_rp, "ok");
    fy_stream_flush(in_rp);
    T_EQ_INT(fy_get_be16(out_rp), 0x0102);
    char s[256];
    T_EQ_INT(fy_get_counted_string(out_rp, s), 2);
    T_EQ_STR(s, "ok");
    /* Both directions stay usable. */
    fy_put_byte(out, 9);
    fy_stream_flush(out);
    T_EQ_INT(fy_get_byte(in), 9);

    /* Closing the source's main stream closes its return path: the
     * destination's return path sees the other end go. */
    T_EQ_INT(fy_stream_close(out, NULL), 0);
    T_EQ_INT(fy_get_byte(in), 0);
    T_CONTAINS(fy_error_msg(fy_stream_error(in)), "socketpair:1: stream ends at offset 5");
    fy_stream_close(in, NULL);
}

static void test_return_path_refused(void)
{
    FyError *err = NULL;
    FyChannel *c = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c, true);
    T_ASSERT(fy_stream_return_path(f, &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "channel 'memory' has no return path");
    fy_error_clear(&err);

    /* One that is given is used (and owned by the stream). */
    FyStream *rp = fy_stream_new_input(fy_channel_mem_new("\x2a", 1), true);
    fy_stream_set_return_path(f, rp);
    T_ASSERT(fy_stream_return_path(f, &err) == rp);
    T_EQ_INT(fy_get_byte(rp), 42);
    fy_stream_close(f, NULL);

    char path[] = "/tmp/ferry-test-io-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    FyChannel *fc = fy_channel_file_open(path, true, 0, &err);
    f = fy_stream_new_output(fc, true);
    T_ASSERT(fy_stream_return_path(f, &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "channel 'file:/tmp/ferry-test-io-");
    T_CONTAINS(fy_error_msg(err), "' has no return path");
    fy_error_clear(&err);
    fy_stream_close(f, NULL);
    unlink(path);

    FyChannel *ec = fy_channel_exec_new("cat > /dev/null", true, &err);
    f = fy_stream_new_output(ec, true);
    T_ASSERT(fy_stream_return_path(f, &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "channel 'exec:cat > /dev/null' has no return path");
    fy_error_clear(&err);
    T_EQ_INT(fy_stream_close(f, &err), 0);
    T_ASSERT(err == NULL);
}

static void test_write_error_is_sticky(void)
{
    FyChannel *a, *b;
    T_EQ_INT(fy_channel_socketpair(&a, &b, NULL), 0);
    fy_channel_close(b, NULL);
    FyStream *f = fy_stream_new_output(a, true);
    fy_put_be64(f, 1);
    T_EQ_INT(fy_stream_flush(f), -1);
    T_EQ_STR(fy_error_msg(fy_stream_error(f)), "socketpair:0: write: Broken pipe");
    fy_put_be64(f, 2);
    T_EQ_INT(fy_stream_offset(f), 8);
    FyError *err = NULL;
    T_EQ_INT(fy_stream_close(f, &err), -1);
    T_EQ_STR(fy_error_msg(err), "socketpair:0: write: Broken pipe");
    fy_error_free(err);
}

/* A non-blocking channel under an input stream: gets still block until
 * the bytes come (the stream polls on FY_IO_AGAIN). */
typedef struct {
    FyChannel *c;
    size_t len;
} Writer;

static void *slow_writer(void *opaque)
{
    Writer *w = opaque;
    uint8_t chunk[1000];
    for (size_t off = 0; off < w->len; off += sizeof(chunk)) {
        for (size_t i = 0; i < sizeof(chunk); i++)
            chunk[i] = (uint8_t)(off + i);
        fy_channel_write_all(w->c, chunk, sizeof(chunk), NULL);
        if (off % 50000 == 0)
            usleep(2000);
    }
    fy_channel_shutdown(w->c, FY_SHUTDOWN_WRITE, NULL);
    return NULL;
}

static void test_nonblocking_input(void)
{
    FyChannel *a, *b;
    T_EQ_INT(fy_channel_socketpair(&a, &b, NULL), 0);
    T_EQ_INT(fy_channel_set_blocking(b, false, NULL), 0);
    T_ASSERT(!b->blocking);
    Writer w = { a, 400000 };
    pthread_t t;
    pthread_create(&t, NULL, slow_writer, &w);
    FyStream *in = fy_stream_new_input(b, true);
    static uint8_t back[400000];
    T_EQ_INT(fy_get_byte(in), 0);
    T_EQ_INT(fy_get_buffer(in, back + 1, sizeof(back) - 1), sizeof(back) - 1);
    bool ok = true;
    for (size_t i = 0; i < sizeof(back) && ok; i++)
        ok = back[i] == (uint8_t)i;
    T_ASSERT(ok);
    T_ASSERT(fy_stream_eof(in));
    pthread_join(t, NULL);
    fy_stream_close(in, NULL);
    fy_channel_close(a, NULL);
}

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

int main(void)
{
    int fds = count_fds();
    T_RUN(test_roundtrip_every_kind);
    T_RUN(test_peek);
    T_RUN(test_counted_strings);
    T_RUN(test_sticky_input_error);
    T_RUN(test_zero_copy_pages);
    T_RUN(test_many_pages_keep_order);
    T_RUN(test_offsets_and_counters);
    T_RUN(test_big_reads);
    T_RUN(test_rate_limit);
    T_RUN(test_return_path_socketpair);
    T_RUN(test_return_path_refused);
    T_RUN(test_write_error_is_sticky);
    T_RUN(test_nonblocking_input);
    if (count_fds() != fds)
        printf("# %d descriptors leaked\n", count_fds() - fds);
    T_EQ_INT(count_fds(), fds);
    return t_done();
}
