/*
 * bitmap.h: the page bitmaps of the RAM section (one bit per target page,
 * in unsigned longs, the layout ramblock.h documents for FyVMOps).
 *
 * Invariant: bits past nbits in the last word stay clear, so counting and
 * searching never see pages that do not exist.
 */
#ifndef FERRY_RAM_BITMAP_H
#define FERRY_RAM_BITMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/ramblock.h"

static inline unsigned long *fy_bitmap_new(uint64_t nbits)
{
    size_t longs = FY_BITMAP_LONGS(nbits);
    return calloc(longs ? longs : 1, sizeof(unsigned long));
}

static inline void fy_bitmap_fill(unsigned long *map, uint64_t nbits)
{
    size_t full = nbits / FY_BITS_PER_LONG;
    memset(map, 0xff, full * sizeof(unsigned long));
    if (nbits % FY_BITS_PER_LONG)
        map[full] = (1ul << (nbits % FY_BITS_PER_LONG)) - 1;
}

static inline void fy_bitmap_zero(unsigned long *map, uint64_t nbits)
{
    memset(map, 0, FY_BITMAP_LONGS(nbits) * sizeof(unsigned long));
}

static inline bool fy_test_bit(const unsigned long *map, uint64_t bit)
{
    return (map[bit / FY_BITS_PER_LONG] >> (bit % FY_BITS_PER_LONG)) & 1;
}

static inline void fy_set_bit(unsigned long *map, uint64_t bit)
{
    map[bit / FY_BITS_PER_LONG] |= 1ul << (bit % FY_BITS_PER_LONG);
}

static inline void fy_clear_bit(unsigned long *map, uint64_t bit)
{
    map[bit / FY_BITS_PER_LONG] &= ~(1ul << (bit % FY_BITS_PER_LONG));
}

/* Clear bits [start, end). */
static inline void fy_bitmap_clear_range(unsigned long *map, uint64_t start,
                                         uint64_t end)
{
    while (start < end && start % FY_BITS_PER_LONG)
        fy_clear_bit(map, start++);
    while (end - start >= FY_BITS_PER_LONG) {
        map[start / FY_BITS_PER_LONG] = 0;
        start += FY_BITS_PER_LONG;
    }
    while (start < end)
        fy_clear_bit(map, start++);
}

/* First set bit at or after start, or nbits. A word at a time. */
static inline uint64_t fy_find_next_bit(const unsigned long *map, uint64_t nbits,
                                        uint64_t start)
{
    if (start >= nbits)
        return nbits;
    uint64_t w = start / FY_BITS_PER_LONG;
    unsigned long word = map[w] & (~0ul << (start % FY_BITS_PER_LONG));
    uint64_t words = FY_BITMAP_LONGS(nbits);
    for (;;) {
        if (word) {
            uint64_t bit = w * FY_BITS_PER_LONG + (uint64_t)__builtin_ctzl(word);
            return bit < nbits ? bit : nbits;
        }
        if (++w >= words)
            return nbits;
        word = map[w];
    }
}

static inline uint64_t fy_bitmap_count(const unsigned long *map, uint64_t nbits)
{
    uint64_t n = 0;
    for (size_t i = 0; i < FY_BITMAP_LONGS(nbits); i++)
        n += (uint64_t)__builtin_popcountl(map[i]);
    return n;
}

#endif
