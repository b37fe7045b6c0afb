/*
 * xbzrle.h: XBZRLE page deltas and the sender's XBZRLE page cache.
 *
 * XBZRLE (QEMU's migration/xbzrle.c, docs/xbzrle.txt) sends a dirty page as
 * the difference from the copy the destination already has:
 *
 *   page  = zrun nzrun | zrun nzrun page
 *   zrun  = length                 bytes equal to the old page
 *   nzrun = length byte...         the NEW bytes where they differ
 *   length = ULEB128 of at most 14 bits (1 byte below 0x80, else 2)
 *
 * Only the first zrun may be empty; an nzrun never is; a trailing zrun is
 * left out. ferry's encoder produces exactly QEMU's bytes for the same
 * input, including when it gives up: it returns -1 ("overflow") in exactly
 * the cases QEMU does for the same out_max, so the same pages go as XBZRLE
 * and as plain PAGE records on both.
 *
 * On the wire (RAM record with RAM_SAVE_FLAG_XBZRLE, see ram.h) the body is
 * `u8 ENCODING_FLAG_XBZRLE (0x1)`, `be16 encoded_len` (<= page size), then
 * the encoded bytes; fy_xbzrle_load_record() checks and applies one body.
 *
 * The sender keeps a page cache (FyXbzrleCache): the last content it sent
 * for each page, aged by dirty-sync generation, so the next version of a
 * page can be sent as a delta. See fy_xbzrle_save_page() for the rules.
 */
#ifndef FERRY_XBZRLE_H
#define FERRY_XBZRLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/stream.h"

struct json_t;

#define ENCODING_FLAG_XBZRLE 0x1
/* Longest run a 14-bit ULEB128 length can carry. */
#define FY_XBZRLE_MAX_RUN 0x3fff
/* xbzrle-cache-size default (QEMU's DEFAULT_MIGRATE_XBZRLE_CACHE_SIZE). */
#define FY_XBZRLE_DEFAULT_CACHE_SIZE (64ull * 1024 * 1024)

/* ---- the codec (src/ram/xbzrle.c) ---- */

/*
 * Encode new_page against old_page (page_size bytes each) into out, which
 * has room for out_max bytes; QEMU passes out_max = page size. Returns the
 * encoded length, 0 when the pages are equal, or -1 when the encoding does
 * not fit in out_max (QEMU's overflow rule, checked at the same points) or
 * needs a run longer than FY_XBZRLE_MAX_RUN (pages over 16 KiB; QEMU would
 * assert). May write anywhere in out[0, out_max), also past the returned
 * length and also when it returns -1. Buffers may be unaligned; page_size
 * need not be a multiple of anything, but must be below 2^31.
 *
 * Hot path: compares 64 bytes per step (AVX-512BW, AVX2 or SSE2, picked from
 * the running CPU), so the cost is per changed run, not per byte.
 */
int fy_xbzrle_encode(const uint8_t *old_page, const uint8_t *new_page,
                     size_t page_size, uint8_t *out, size_t out_max);

/* Which comparison loop the encoder uses (tests and benchmarks pin one). */
typedef enum {
    FY_XBZRLE_IMPL_AUTO,     /* the best the CPU has */
    FY_XBZRLE_IMPL_GENERIC,  /* plain C, 8 bytes per step */
    FY_XBZRLE_IMPL_SSE2,
    FY_XBZRLE_IMPL_AVX2,
    FY_XBZRLE_IMPL_AVX512,   /* AVX-512BW */
    FY_XBZRLE_IMPL__MAX
} FyXbzrleImpl;

bool fy_xbzrle_impl_available(FyXbzrleImpl impl);
const char *fy_xbzrle_impl_name(FyXbzrleImpl impl);
/* fy_xbzrle_encode() with a given loop; an unavailable one gives -1. */
int fy_xbzrle_encode_impl(FyXbzrleImpl impl, const uint8_t *old_page,
                          const uint8_t *new_page, size_t page_size,
                          uint8_t *out, size_t out_max);

/*
 * Apply an encoding (len bytes at src, hostile) to page, which holds the
 * old content. Only nzrun bytes are written, never outside page[0,
 * page_size). Accepts exactly what QEMU's decoder accepts. Returns the
 * page offset just past the last nzrun (QEMU's return value; 0 for an empty
 * encoding), or -1 with *errp saying what is wrong and at which offset of
 * the encoding: truncated or over-14-bit length, zero-length zrun (other
 * than the first) or nzrun, a run past the page end, an nzrun longer than
 * the bytes left, or a stray trailing byte. On error the page may have been
 * partly patched.
 */
int fy_xbzrle_decode(const uint8_t *src, size_t len, uint8_t *page,
                     size_t page_size, FyError **errp);

/*
 * The body of an XBZRLE RAM record, after the record header: check the
 * encoding flag and length (<= page_size) and apply the encoding to page.
 * _body reads from a buffer of avail bytes and returns the bytes consumed
 * (3 + encoded_len) or -1; _record reads from the stream into scratch
 * (page_size bytes, the caller's, so there is no allocation per page) and
 * returns 0 or -1. Errors name the field and, for the stream, its offset;
 * the RAM loader prepends the block and page.
 */
int fy_xbzrle_load_body(const uint8_t *body, size_t avail, uint8_t *page,
                        size_t page_size, FyError **errp);
int fy_xbzrle_load_record(FyStream *f, uint8_t *scratch, uint8_t *page,
                          size_t page_size, FyError **errp);

/* ---- the page cache (src/ram/page-cache.c) ---- */

/*
 * FyPageCache is QEMU's page_cache: a direct-mapped array of page copies,
 * slot = (addr / page_size) mod slots, where slots is the cache size in
 * pages rounded down to a power of two. All page memory is allocated when
 * the cache is made; nothing is allocated per page. Not thread-safe: its
 * owner serializes (FyXbzrleCache does, with its lock).
 */
typedef struct FyPageCache FyPageCache;

/* size_bytes must be >= page_size; the slot count is size_bytes/page_size
 * rounded down to a power of two. page_size must be a power of two. */
FyPageCache *fy_page_cache_new(uint64_t size_bytes, size_t page_size,
                               FyError **errp);
void fy_page_cache_free(FyPageCache *c);
/* The cached copy of addr, or NULL. A hit refreshes the entry's age to age
 * (QEMU's cache_is_cached + get_cached_data). */
uint8_t *fy_page_cache_lookup(FyPageCache *c, uint64_t addr, uint64_t age);
/* Copy page into addr's slot and return the copy. Refused (NULL) when the
 * slot holds another page that is still fresh: its age + 2 > age, i.e. it
 * was used in this dirty-sync generation or the previous one. */
uint8_t *fy_page_cache_insert(FyPageCache *c, uint64_t addr,
                              const uint8_t *page, uint64_t age);
/* Change the size, keeping the entries that still have a slot; when two
 * land on the same slot the more recently used one stays. On error the
 * cache is unchanged. */
int fy_page_cache_resize(FyPageCache *c, uint64_t size_bytes, FyError **errp);
size_t fy_page_cache_slots(const FyPageCache *c);
size_t fy_page_cache_pages(const FyPageCache *c);   /* slots in use */
size_t fy_page_cache_page_size(const FyPageCache *c);

/* ---- the sender's XBZRLE state (src/ram/page-cache.c) ---- */

/* query-migrate's "xbzrle-cache", QEMU's meanings:
 *   cache-size       the xbzrle-cache-size in force (bytes)
 *   bytes            encoded bytes sent: per XBZRLE record 3 + encoded_len
 *                    plus the block id if the header had one; a page size
 *                    per overflow (it goes as a normal page)
 *   pages            pages found in the cache (encoded, unchanged or
 *                    overflowed)
 *   cache-miss       pages not found in the cache
 *   cache-miss-rate  cache misses / pages handled, over the last period
 *   encoding-rate    unencoded / encoded bytes of cache hits, over the last
 *                    period (0 when nothing was encoded)
 *   overflow         hits whose encoding did not fit in a page */
typedef struct FyXbzrleStats {
    uint64_t cache_size;
    uint64_t bytes;
    uint64_t pages;
    uint64_t cache_miss;
    double cache_miss_rate;
    double encoding_rate;
    uint64_t overflow;
} FyXbzrleStats;

typedef struct FyXbzrleCache FyXbzrleCache;

/* Make the cache (cache_size bytes, see fy_page_cache_new) and zeroed
 * counters; one per outgoing migration, made at save_setup. */
FyXbzrleCache *fy_xbzrle_cache_new(uint64_t cache_size, size_t page_size,
                                   FyError **errp);
void fy_xbzrle_cache_free(FyXbzrleCache *x);

/*
 * The lock that keeps a resize (from the QMP thread) away from the sender.
 * The sender holds it across fy_xbzrle_save_page() and until it has copied
 * out what the result points to (QEMU holds XBZRLE.lock for a whole
 * iteration the same way).
 */
void fy_xbzrle_lock(FyXbzrleCache *x);
void fy_xbzrle_unlock(FyXbzrleCache *x);

/* Resize from any thread (takes the lock), keeping what fits. */
int fy_xbzrle_cache_resize(FyXbzrleCache *x, uint64_t cache_size,
                           FyError **errp);

/* QEMU's check for the xbzrle-cache-size parameter (a power of two no less
 * than the page size), with QEMU's message. The cache itself accepts any
 * size >= one page and rounds the slot count down. */
int fy_xbzrle_cache_size_check(uint64_t cache_size, size_t page_size,
                               FyError **errp);

typedef enum {
    FY_XBZRLE_MISS,       /* not cached: send a normal PAGE from data */
    FY_XBZRLE_OVERFLOW,   /* delta too big: send a normal PAGE from data */
    FY_XBZRLE_UNCHANGED,  /* same as what the destination has: send nothing */
    FY_XBZRLE_ENCODED,    /* send an XBZRLE record: data[0, len) encoded */
} FyXbzrleOutcome;

typedef struct FyXbzrleResult {
    FyXbzrleOutcome outcome;
    /* MISS/OVERFLOW: the page to send, page_size bytes: the cache's copy
     * when the cache took it (so the destination gets exactly what the
     * cache now holds even if the guest writes meanwhile), else the guest
     * page. ENCODED: the caller's out buffer. UNCHANGED: NULL. */
    const uint8_t *data;
    size_t len;
} FyXbzrleResult;

/*
 * One dirty page for a sender with XBZRLE on (QEMU's save_xbzrle_page).
 * Call with the lock held. addr: the page's key, unique over all blocks
 * (QEMU uses the ram_addr: block offset + page offset); page: the guest
 * page (may be changing under us); generation: the dirty-sync count;
 * last_stage: the VM is stopped for completion, so the cache is no longer
 * updated; out: the caller's buffer of at least page_size bytes.
 *
 *   miss      cache-miss++; unless last_stage, copy the page into the
 *             cache (if its slot is not fresh for another page) -> MISS
 *   hit       pages++; encode guest page against the cached copy
 *     equal   -> UNCHANGED
 *     -1      overflow++, bytes += page_size; unless last_stage the cache
 *             takes the page -> OVERFLOW
 *     n > 0   bytes += 3 + n; unless last_stage the cache is patched with
 *             the encoding itself, so it equals what the destination will
 *             hold even if the guest wrote during the encode -> ENCODED
 *
 * What result->data points to stays valid until the next call for a page in
 * the same cache slot, a resize or free; copy it out (fy_put_buffer) before
 * dropping the lock. Returns 0; -1 only for bad arguments.
 */
int fy_xbzrle_save_page(FyXbzrleCache *x, uint64_t addr, const uint8_t *page,
                        uint64_t generation, bool last_stage, uint8_t *out,
                        FyXbzrleResult *result);

/* After a ZERO record outside the first pass, cache the zero page so a
 * later small write goes as XBZRLE (QEMU's xbzrle_cache_zero_page). Call
 * with the lock held. */
void fy_xbzrle_cache_zero_page(FyXbzrleCache *x, uint64_t addr,
                               uint64_t generation);

/* The record header carried the block id (CONTINUE clear): count its
 * 1 + strlen(idstr) bytes in `bytes`, as QEMU does. */
void fy_xbzrle_account_header(FyXbzrleCache *x, size_t extra_bytes);

/* At each dirty sync: pages_handled is the number of target pages the
 * sender handled since the previous call (QEMU's target_page_count delta).
 * Recomputes cache-miss-rate and encoding-rate for that period; does
 * nothing when pages_handled is 0. */
void fy_xbzrle_update_rates(FyXbzrleCache *x, uint64_t pages_handled);

/* Counters, from any thread (each value atomic, the set not a snapshot). */
void fy_xbzrle_get_stats(FyXbzrleCache *x, FyXbzrleStats *out);
/* {"cache-size", "bytes", "pages", "cache-miss", "cache-miss-rate",
 *  "encoding-rate", "overflow"} for query-migrate; new reference. */
struct json_t *fy_xbzrle_stats_json(const FyXbzrleStats *s);

#endif
