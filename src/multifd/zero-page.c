/*
 * zero-page.c: is this buffer all zero? (QEMU's buffer_is_zero.)
 *
 * Two costs matter: a data page must be rejected at once (it nearly always
 * has a non-zero byte in its first cache line), and an all-zero page must
 * be read at memory speed. So: look at the first 64 bytes alone, then OR
 * four 64-byte runs per step and test once per 256 bytes, then the rest in
 * 64-byte runs, the last one overlapping the end (re-reading a few bytes
 * is cheaper than a byte loop). Buffers under 64 bytes use 8-byte words,
 * again overlapping at the end.
 *
 * The 64-byte type is one AVX-512 register, two AVX2 or four SSE2 ones;
 * target_clones builds the function for each and the loader picks the
 * widest the CPU has (the __builtin_cpu_supports dispatch, done once, with
 * no mutable state of ours). Loads go through memcpy, so any alignment is
 * fine and the compiler emits unaligned vector loads.
 */
#include <string.h>

#include "multifd/multifd-int.h"

typedef uint64_t mfd_v64 __attribute__((vector_size(64)));

/* Vectors never cross a function boundary (that would tie the ABI to the
 * target): helpers take pointers and return a verdict. */
#define LOAD64(dst, src) memcpy(&(dst), (src), sizeof(mfd_v64))
#define V_ZERO(v) (!((v)[0] | (v)[1] | (v)[2] | (v)[3] | \
                     (v)[4] | (v)[5] | (v)[6] | (v)[7]))

static inline bool run64_zero(const unsigned char *p)
{
    mfd_v64 a;
    LOAD64(a, p);
    return V_ZERO(a);
}

static inline bool run256_zero(const unsigned char *p)
{
    mfd_v64 a, b, c, d;
    LOAD64(a, p);
    LOAD64(b, p + 64);
    LOAD64(c, p + 128);
    LOAD64(d, p + 192);
    a |= b | c | d;
    return V_ZERO(a);
}

static inline bool small_is_zero(const unsigned char *p, size_t len)
{
    if (len < 8) {
        unsigned char acc = 0;
        for (size_t i = 0; i < len; i++)
            acc |= p[i];
        return acc == 0;
    }
    uint64_t acc = 0, w;
    for (size_t i = 0; i + 8 <= len; i += 8) {
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    memcpy(&w, p + len - 8, 8);
    return (acc | w) == 0;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
bool fy_multifd_buffer_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    if (len < 64)
        return small_is_zero(p, len);
    if (!run64_zero(p))
        return false;
    size_t i = 64;
    for (; i + 256 <= len; i += 256) {
        if (!run256_zero(p + i))
            return false;
    }
    for (; i + 64 <= len; i += 64) {
        if (!run64_zero(p + i))
            return false;
    }
    return i == len || run64_zero(p + len - 64);
}
