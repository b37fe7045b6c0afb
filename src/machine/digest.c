/*
 * digest.c: a fast 128-bit digest of a RAM block, to compare a source's RAM
 * with its destination's (or with a run that never migrated).
 *
 * Per page: eight 64-bit accumulators over the page's 64-byte stripes, in
 * the style of xxh3's long-input loop (written from its published
 * description): for word j of stripe s, with key k = K[s + j],
 *     acc[j ^ 1] += w;    acc[j] += lo32(w ^ k) * hi32(w ^ k)
 * One 32x32 multiply per word and no carried dependency longer than an
 * add, so it vectorizes: SSE2 (the x86-64 baseline) does two words per
 * instruction, ~12 GB/s here, against ~3 GB/s for a scalar xxh64-style
 * loop. The scalar path computes the same values. The per-stripe key shift
 * makes stripe order matter. The accumulators are then mixed into a page
 * hash, and page hashes are folded in page order into two 64-bit
 * accumulators with different mixing: 128 bits.
 *
 * Holes: the memfd is walked with SEEK_DATA/SEEK_HOLE and a hole page
 * contributes the hash of a zero page without being read, so digesting a
 * mostly-untouched multi-GiB block neither takes long nor allocates memory,
 * and a destination that wrote zero pages digests like a source with holes.
 *
 * Not a cryptographic hash: it catches any accidental difference, not a
 * crafted one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "machine/machine-int.h"

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull
#define STRIPES (FY_TARGET_PAGE_SIZE / 64)

/* splitmix64 outputs; stripe s uses K[s .. s + 7]. */
static const uint64_t K[STRIPES + 8] = {
    0x3a34ce6380fc0bc5ull, 0xc05a677850dc981aull, 0x9e32cdf7948370bdull, 0xa7765f796f00bbefull,
    0xbbbb23fe6921fe52ull, 0x5bf0c31cacf1e17full, 0x3e1900a6529be043ull, 0x2a16cd9ed424ea1eull,
    0x579593114410e048ull, 0x0a29f5fe3df351f0ull, 0x1b4897e079059ad2ull, 0x2d9cd179c9e412e1ull,
    0x315949173d12f7e0ull, 0x7c69b356b72b606full, 0xb6ec11f8caa9ebcfull, 0x841e03b1ed92f734ull,
    0x8898a5df2ba2ae99ull, 0xf810fea09e7eeaa5ull, 0x27a56de32b6a852cull, 0x141d3cdeb2a328a7ull,
    0xfa6c784c6c59c00full, 0x6bb8c0b28140b75full, 0xb3469baeabcf5facull, 0xc03b1af969a981b8ull,
    0xec7c99144be2ac06ull, 0x52af400deb7b9daeull, 0x4e3c54f2f51f1e28ull, 0x7991820c21348daaull,
    0x16fda58f4606377cull, 0x1f2b3b8ec35c9e73ull, 0x88ba012f31187eb0ull, 0x38156c76ce316da2ull,
    0x568c3abe507f99c9ull, 0xfbb94b9c5aa35f85ull, 0x6357d4ce0564f16dull, 0x807b8e8b225d506cull,
    0xe94dd7b1c51efc33ull, 0xc78818d18f476c5aull, 0xafdd7f640cfb3147ull, 0x88e410d77db44e58ull,
    0x00871a89c7e149d2ull, 0xc32a37d735a6a5c3ull, 0x9814cde8cb99c6a2ull, 0x49fbb7b0c24a1146ull,
    0xed934cc988d7dd5dull, 0x5cdc4addde6b913dull, 0xa1708eaaf26cfbc9ull, 0xa7290a064d79dba7ull,
    0x7def499a20a56e26ull, 0x107532de91bfdb7full, 0xb01c7470f051b1d1ull, 0xaff67c257e344217ull,
    0x02774eed2cac1497ull, 0xc51c12415224ee63ull, 0x0d3f09b4649a477dull, 0xa5c44956672c538cull,
    0x7bd882afdda23261ull, 0x8492e86fef7afd00ull, 0x0fcd515a9fcba46aull, 0xb19e422e29164cddull,
    0x10cda2da6a6d40a3ull, 0xed515e82625cf1c7ull, 0xe8f457f3878b7139ull, 0x4b7d7f308ceb0775ull,
    0x5b83f5eb70523dc8ull, 0x59ed655f6ae89864ull, 0xded49194cbf83585ull, 0x0fe79ce92e869f62ull,
    0xd9bc2484cafaddaeull, 0x9ecf31b73df8b814ull, 0x2855cd6f8a104633ull, 0x404a344696f96da5ull
};

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t round64(uint64_t acc, uint64_t w)
{
    return rotl64(acc + w * P2, 31) * P1;
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

#ifdef __SSE2__
static void page_accumulate(uint64_t acc_out[8], const uint8_t *page)
{
    __m128i acc[4];
    for (int j = 0; j < 4; j++)
        acc[j] = _mm_loadu_si128((const __m128i *)(acc_out + 2 * j));
    for (unsigned s = 0; s < STRIPES; s++) {
        const uint8_t *key = (const uint8_t *)(K + s);
        for (int j = 0; j < 4; j++) {
            __m128i d = _mm_loadu_si128((const __m128i *)(page + s * 64 + 16 * j));
            __m128i k = _mm_loadu_si128((const __m128i *)(key + 16 * j));
            __m128i dk = _mm_xor_si128(d, k);
            __m128i hi = _mm_shuffle_epi32(dk, _MM_SHUFFLE(0, 3, 0, 1));
            __m128i prod = _mm_mul_epu32(dk, hi);
            __m128i swapped = _mm_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2));
            acc[j] = _mm_add_epi64(acc[j], _mm_add_epi64(prod, swapped));
        }
    }
    for (int j = 0; j < 4; j++)
        _mm_storeu_si128((__m128i *)(acc_out + 2 * j), acc[j]);
}
#else
static void page_accumulate(uint64_t acc[8], const uint8_t *page)
{
    for (unsigned s = 0; s < STRIPES; s++) {
        uint64_t w[8];
        memcpy(w, page + s * 64, sizeof(w));
        for (int j = 0; j < 8; j++) {
            uint64_t dk = w[j] ^ K[s + (unsigned)j];
            acc[j ^ 1] += w[j];
            acc[j] += (uint64_t)(uint32_t)dk * (dk >> 32);
        }
    }
}
#endif

static uint64_t page_hash(const uint8_t *page)
{
    uint64_t acc[8];
    for (int j = 0; j < 8; j++)
        acc[j] = K[STRIPES + (unsigned)j];
    page_accumulate(acc, page);
    uint64_t h = FY_TARGET_PAGE_SIZE * P1;
    for (int j = 0; j < 8; j++)
        h = rotl64(h ^ avalanche64(acc[j] + (uint64_t)j), 27) * P1 + P4;
    return avalanche64(h);
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
