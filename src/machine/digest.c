/*
 * digest.c: a fast 128-bit digest of a RAM block, to compare a source's RAM
 * with its destination's (or with a run that never migrated).
 *
 * Per page: a 4-lane multiply-rotate hash over the 512 words (xxh64's round
 * and merge structure, written from its published description), so the
 * four lanes run in parallel. The page hashes are folded in page order into
 * two 64-bit accumulators with different mixing, giving 128 bits.
 *
 * Holes: the memfd is walked with SEEK_DATA/SEEK_HOLE and a hole page
 * contributes the hash of a zero page without being read, so digesting a
 * mostly-untouched multi-GiB block neither takes long nor allocates memory,
 * and a destination that wrote zero pages digests like a source with holes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "machine/machine-int.h"

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull
#define PAGE_WORDS (FY_TARGET_PAGE_SIZE / 8)

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t round64(uint64_t acc, uint64_t w)
{
    return rotl64(acc + w * P2, 31) * P1;
}

static inline uint64_t merge64(uint64_t acc, uint64_t lane)
{
    return (acc ^ round64(0, lane)) * P1 + P4;
}

static inline uint64_t avalanche64(uint64_t h)
{
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

static uint64_t page_hash(const uint8_t *page)
{
    uint64_t a0 = P1 + P2, a1 = P2, a2 = 0, a3 = 0 - P1;
    for (unsigned i = 0; i < PAGE_WORDS; i += 4) {
        uint64_t w[4];
        memcpy(w, page + i * 8, sizeof(w));
        a0 = round64(a0, w[0]);
        a1 = round64(a1, w[1]);
        a2 = round64(a2, w[2]);
        a3 = round64(a3, w[3]);
    }
    uint64_t h = rotl64(a0, 1) + rotl64(a1, 7) + rotl64(a2, 12) + rotl64(a3, 18);
    h = merge64(h, a0);
    h = merge64(h, a1);
    h = merge64(h, a2);
    h = merge64(h, a3);
    return avalanche64(h + FY_TARGET_PAGE_SIZE);
}

typedef struct Digest {
    uint64_t a, b;
} Digest;

static inline void digest_fold(Digest *d, uint64_t page_index, uint64_t ph)
{
    d->a = round64(d->a, ph);
    d->b += avalanche64(ph ^ (page_index * P5));
}

static const uint8_t zero_page[FY_TARGET_PAGE_SIZE];

/* Next data range at or after off, page-aligned: [*start, *end). Returns
 * false when the rest of the block is a hole. Without SEEK_DATA support,
 * everything is data. */
static bool next_data(const FyRamBlock *b, uint64_t off, uint64_t *start,
                      uint64_t *end)
{
    uint64_t len = b->used_length;
    if (b->fd < 0) {
        *start = off;
        *end = len;
        return true;
    }
    off_t d = lseek(b->fd, (off_t)(b->fd_offset + off), SEEK_DATA);
    if (d < 0) {
        if (errno == ENXIO)
            return false;
        *start = off;
        *end = len;
        return true;
    }
    uint64_t ds = (uint64_t)d - b->fd_offset;
    if (ds >= len)
        return false;
    off_t h = lseek(b->fd, d, SEEK_HOLE);
    uint64_t he = h < 0 ? len : (uint64_t)h - b->fd_offset;
    ds &= ~(uint64_t)(FY_TARGET_PAGE_SIZE - 1);
    he = (he + FY_TARGET_PAGE_SIZE - 1) & ~(uint64_t)(FY_TARGET_PAGE_SIZE - 1);
    *start = ds < off ? off : ds;
    *end = he > len ? len : he;
    if (*end <= *start)
        *end = *start + FY_TARGET_PAGE_SIZE;
    return true;
}

int fy_machine_block_digest(const FyRamBlock *b, char out_hex[FY_MACHINE_DIGEST_LEN],
                            FyError **errp)
{
    if (!b->host || b->used_length % FY_TARGET_PAGE_SIZE) {
        fy_error_setg(errp, "digest of RAM block '%s': not mapped or length %" PRIu64
                      " not page-aligned", b->idstr, b->used_length);
        return -1;
    }
    const uint64_t zh = page_hash(zero_page);
    const uint64_t npages = b->used_length / FY_TARGET_PAGE_SIZE;
    Digest d = { .a = P5 ^ npages, .b = P4 };
    uint64_t off = 0;
    while (off < b->used_length) {
        uint64_t ds, de;
        if (!next_data(b, off, &ds, &de))
            ds = de = b->used_length;
        for (; off < ds; off += FY_TARGET_PAGE_SIZE)
            digest_fold(&d, off / FY_TARGET_PAGE_SIZE, zh);
        for (; off < de; off += FY_TARGET_PAGE_SIZE)
            digest_fold(&d, off / FY_TARGET_PAGE_SIZE, page_hash(b->host + off));
    }
    snprintf(out_hex, FY_MACHINE_DIGEST_LEN, "%016" PRIx64 "%016" PRIx64,
             avalanche64(d.a), avalanche64(d.b));
    return 0;
}

int fy_machine_ram_digest(FyMachine *m, const char *idstr,
                          char out_hex[FY_MACHINE_DIGEST_LEN], FyError **errp)
{
    FyRamBlock *b = fy_ram_list_find(&m->list, idstr);
    if (!b) {
        fy_error_setg(errp, "digest: no RAM block '%s' in this machine", idstr);
        return -1;
    }
    return fy_machine_block_digest(b, out_hex, errp);
}
