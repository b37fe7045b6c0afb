/*
 * zero.c: is this page all zero? (QEMU's buffer_is_zero role.)
 *
 * Called for every page the sender puts, so it must be fast both ways: a
 * data page usually has a non-zero byte in its first cache line and should
 * exit at once; an all-zero page should be read at memory speed. The loop
 * ORs one 64-byte run at a time with vector types (SSE2 everywhere, AVX2
 * where the CPU has it, chosen once by the loader) and stops at the first
 * run that is not zero.
 */
#include <stdint.h>
#include <string.h>

#include "ferry/ram.h"

typedef uint64_t v32 __attribute__((vector_size(32)));

__attribute__((target_clones("avx2", "default")))
bool fy_buffer_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t i = 0;

    for (; i + 64 <= len; i += 64) {
        v32 a, b;
        memcpy(&a, p + i, sizeof(a));
        memcpy(&b, p + i + 32, sizeof(b));
        a |= b;
        if (a[0] | a[1] | a[2] | a[3])
            return false;
    }
    for (; i < len; i++) {
        if (p[i])
            return false;
    }
    return true;
}
