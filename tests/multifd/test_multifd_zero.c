/*
 * test_multifd_zero: fy_multifd_buffer_is_zero at every alignment and at
 * every length around its 8, 64 and 256-byte steps, with one non-zero byte
 * moved through every position, and non-zero bytes right outside the
 * buffer (which must not count). Exact-size heap buffers let ASan catch a
 * read past the end.
 */
#include "ferry/multifd.h"
#include "t.h"

#define AREA 9000

static bool naive(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

static size_t lengths[] = {
    0, 1, 2, 3, 7, 8, 9, 15, 16, 31, 32, 33, 55, 56, 57, 63, 64, 65, 71, 72,
    100, 127, 128, 129, 191, 192, 193, 255, 256, 257, 319, 320, 321, 383, 384,
    385, 447, 448, 449, 511, 512, 513, 1000, 1023, 1024, 1025, 4032, 4095,
    4096, 4097, 4160, 8191, 8192,
};

static int check_one(const uint8_t *p, size_t len, bool want)
{
    bool got = fy_multifd_buffer_is_zero(p, len);
    if (got != want || naive(p, len) != want)
        return -1;
    return 0;
}

static void test_alignments_and_lengths(void)
{
    static uint8_t area[AREA];
    int bad = 0;
    for (size_t a = 0; a < 64; a++) {
        for (size_t k = 0; k < sizeof(lengths) / sizeof(lengths[0]); k++) {
            size_t len = lengths[k];
            uint8_t *p = area + 64 + a;
            memset(area, 0xff, sizeof(area));
            memset(p, 0, len);
            if (check_one(p, len, true) < 0) {
                T_FAIL("align %zu len %zu: all-zero buffer not seen as zero", a, len);
                bad++;
            }
            /* One byte set at each position (every one for short buffers,
             * the edges and a stride for long ones). */
            for (size_t i = 0; i < len; i++) {
                if (len > 600 && i > 300 && i < len - 300 && i % 61)
                    continue;
                for (int bit = 0; bit < 8; bit += 7) {
                    p[i] = (uint8_t)(1u << bit);
                    if (check_one(p, len, false) < 0) {
                        T_FAIL("align %zu len %zu: byte %zu = 0x%02x missed",
                               a, len, i, p[i]);
                        bad++;
                    }
                    p[i] = 0;
                }
                if (bad > 10)
                    return;
            }
        }
    }
}

static void test_exact_heap_buffers(void)
{
    for (size_t len = 1; len <= 1100; len++) {
        uint8_t *p = calloc(1, len);
        T_ASSERT(p);
        T_ASSERT(fy_multifd_buffer_is_zero(p, len));
        p[len - 1] = 1;
        T_ASSERT(!fy_multifd_buffer_is_zero(p, len));
        p[len - 1] = 0;
        p[0] = 0x40;
        T_ASSERT(!fy_multifd_buffer_is_zero(p, len));
        free(p);
    }
    T_ASSERT(fy_multifd_buffer_is_zero(NULL, 0));
}

/* Pages as the RAM code hands them: page-aligned, 4 KiB. */
static void test_pages(void)
{
    uint8_t *pg = aligned_alloc(4096, 4096 * 4);
    T_ASSERT(pg);
    memset(pg, 0, 4096 * 4);
    for (int i = 0; i < 4; i++)
        T_ASSERT(fy_multifd_buffer_is_zero(pg + 4096 * i, 4096));
    pg[4096 + 4095] = 0x01;
    T_ASSERT(fy_multifd_buffer_is_zero(pg, 4096));
    T_ASSERT(!fy_multifd_buffer_is_zero(pg + 4096, 4096));
    T_ASSERT(!fy_multifd_buffer_is_zero(pg, 8192));
    pg[2 * 4096 + 2048] = 0x80;
    T_ASSERT(!fy_multifd_buffer_is_zero(pg + 2 * 4096, 4096));
    T_ASSERT(fy_multifd_buffer_is_zero(pg + 3 * 4096, 4096));
    free(pg);
}

int main(void)
{
    T_RUN(test_alignments_and_lengths);
    T_RUN(test_exact_heap_buffers);
    T_RUN(test_pages);
    return t_done();
}
