/*
 * page-cache.c: the XBZRLE page cache and the sender's use of it.
 *
 * FyPageCache (QEMU's page_cache.c): a direct-mapped cache of page copies.
 *   slot(addr) = (addr >> page_shift) & (slots - 1), slots a power of two
 *   every slot is empty or holds (addr, age, one page of data)
 *   a lookup hit sets the slot's age to the caller's generation
 *   an insert for another addr is refused while the slot is fresh:
 *     slot.age + CACHED_PAGE_LIFETIME > generation
 * The page memory is one block allocated with the cache (malloc of a big
 * block is mmap, so untouched slots cost no RAM); nothing is allocated per
 * page.
 *
 * FyXbzrleCache: the cache, a page of zeros, the query-migrate counters and
 * the lock that keeps a resize away from the sender. The counters are
 * written by the sender (one thread, under the lock) with atomic stores, so
 * a query can read them from any thread without the lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ferry/xbzrle.h"

/* A page in the cache is not replaced in the two generations after use. */
#define CACHED_PAGE_LIFETIME 2

typedef struct CacheSlot {
    uint64_t addr;
    uint64_t age;
    bool used;
} CacheSlot;

struct FyPageCache {
    size_t page_size;
    unsigned page_shift;
    size_t nslots;       /* a power of two */
    size_t used;
    CacheSlot *slots;
    uint8_t *data;       /* nslots * page_size */
};

/* ---- FyPageCache ---- */

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Slots for size_bytes: pages rounded down to a power of two. */
static int slots_for(uint64_t size_bytes, size_t page_size, size_t *nslots,
                     FyError **errp)
{
    uint64_t pages;

    if (!is_pow2(page_size)) {
        fy_error_setg(errp, "XBZRLE cache: page size %zu is not a power of "
                      "two", page_size);
        return -1;
    }
    if (size_bytes < page_size) {
        fy_error_setg(errp, "XBZRLE cache: size %llu is smaller than the "
                      "page size %zu", (unsigned long long)size_bytes,
                      page_size);
        return -1;
    }
    pages = size_bytes / page_size;
    pages = 1ull << (63 - __builtin_clzll(pages));
    if (pages > SIZE_MAX / page_size || pages > SIZE_MAX / sizeof(CacheSlot)) {
        fy_error_setg(errp, "XBZRLE cache: size %llu exceeds the address "
                      "space", (unsigned long long)size_bytes);
        return -1;
    }
    *nslots = (size_t)pages;
    return 0;
}

static int cache_alloc(FyPageCache *c, size_t nslots, FyError **errp)
{
    c->slots = calloc(nslots, sizeof(CacheSlot));
    c->data = c->slots ? malloc(nslots * c->page_size) : NULL;
    if (!c->data) {
        free(c->slots);
        c->slots = NULL;
        fy_error_setg_errno(errp, ENOMEM, "XBZRLE cache: cannot allocate %zu "
                            "pages of %zu bytes", nslots, c->page_size);
        return -1;
    }
    c->nslots = nslots;
    c->used = 0;
    return 0;
}

FyPageCache *fy_page_cache_new(uint64_t size_bytes, size_t page_size,
                               FyError **errp)
{
    FyPageCache *c;
    size_t nslots;

    if (slots_for(size_bytes, page_size, &nslots, errp) < 0)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (!c) {
        fy_error_setg_errno(errp, ENOMEM, "XBZRLE cache");
        return NULL;
    }
    c->page_size = page_size;
    c->page_shift = (unsigned)__builtin_ctzll(page_size);
    if (cache_alloc(c, nslots, errp) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

void fy_page_cache_free(FyPageCache *c)
{
    if (!c)
        return;
    free(c->slots);
    free(c->data);
    free(c);
}

static inline size_t slot_of(const FyPageCache *c, uint64_t addr)
{
    return (size_t)(addr >> c->page_shift) & (c->nslots - 1);
}

static inline uint8_t *slot_data(const FyPageCache *c, size_t i)
{
    return c->data + i * c->page_size;
}

uint8_t *fy_page_cache_lookup(FyPageCache *c, uint64_t addr, uint64_t age)
{
    size_t i = slot_of(c, addr);
    CacheSlot *s = &c->slots[i];

    if (!s->used || s->addr != addr)
        return NULL;
    s->age = age;
    return slot_data(c, i);
}

uint8_t *fy_page_cache_insert(FyPageCache *c, uint64_t addr,
                              const uint8_t *page, uint64_t age)
{
    size_t i = slot_of(c, addr);
    CacheSlot *s = &c->slots[i];
    uint8_t *dst = slot_data(c, i);

    if (s->used && s->addr != addr && s->age + CACHED_PAGE_LIFETIME > age)
        return NULL;
    if (!s->used)
        c->used++;
    if (dst != page)
        memcpy(dst, page, c->page_size);
    s->used = true;
    s->addr = addr;
    s->age = age;
    return dst;
}

int fy_page_cache_resize(FyPageCache *c, uint64_t size_bytes, FyError **errp)
{
    FyPageCache old = *c;
    size_t nslots;

    if (slots_for(size_bytes, c->page_size, &nslots, errp) < 0)
        return -1;
    if (nslots == c->nslots)
        return 0;
    if (cache_alloc(c, nslots, errp) < 0) {
        *c = old;
        return -1;
    }
    for (size_t i = 0; i < old.nslots; i++) {
        const CacheSlot *o = &old.slots[i];
        size_t j;

        if (!o->used)
            continue;
        j = slot_of(c, o->addr);
        if (c->slots[j].used && c->slots[j].age >= o->age)
            continue;               /* the more recently used one stays */
        if (!c->slots[j].used)
            c->used++;
        c->slots[j] = *o;
        memcpy(slot_data(c, j), old.data + i * old.page_size, c->page_size);
    }
    free(old.slots);
    free(old.data);
    return 0;
}

size_t fy_page_cache_slots(const FyPageCache *c)
{
    return c->nslots;
}

size_t fy_page_cache_pages(const FyPageCache *c)
{
    return c->used;
}

size_t fy_page_cache_page_size(const FyPageCache *c)
{
    return c->page_size;
}

/* ---- FyXbzrleCache ---- */

struct FyXbzrleCache {
    pthread_mutex_t lock;
    FyPageCache *cache;
    uint8_t *zero_page;
    size_t page_size;

    /* counters (atomic stores, see the top comment) */
    uint64_t st_cache_size, st_bytes, st_pages, st_cache_miss, st_overflow;
    double st_miss_rate, st_encoding_rate;

    /* period baselines for update_rates (sender thread only) */
    uint64_t miss_prev, pages_prev, bytes_prev;
};

static inline void st_set(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline uint64_t st_get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* One writer, so load + store is enough (no locked add on the hot path). */
static inline void st_add(uint64_t *p, uint64_t v)
{
    st_set(p, st_get(p) + v);
}

static inline void st_set_double(double *p, double v)
{
    __atomic_store(p, &v, __ATOMIC_RELAXED);
}

static inline double st_get_double(double *p)
{
    double v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}

FyXbzrleCache *fy_xbzrle_cache_new(uint64_t cache_size, size_t page_size,
                                   FyError **errp)
{
    FyXbzrleCache *x = calloc(1, sizeof(*x));

    if (!x) {
        fy_error_setg_errno(errp, ENOMEM, "XBZRLE cache");
        return NULL;
    }
    x->page_size = page_size;
    x->cache = fy_page_cache_new(cache_size, page_size, errp);
    if (!x->cache) {
        free(x);
        return NULL;
    }
    x->zero_page = calloc(1, page_size);
    if (!x->zero_page) {
        fy_page_cache_free(x->cache);
        free(x);
        fy_error_setg_errno(errp, ENOMEM, "XBZRLE cache: zero page");
        return NULL;
    }
    pthread_mutex_init(&x->lock, NULL);
    st_set(&x->st_cache_size, cache_size);
    return x;
}

void fy_xbzrle_cache_free(FyXbzrleCache *x)
{
    if (!x)
        return;
    pthread_mutex_destroy(&x->lock);
    fy_page_cache_free(x->cache);
    free(x->zero_page);
    free(x);
}

void fy_xbzrle_lock(FyXbzrleCache *x)
{
    pthread_mutex_lock(&x->lock);
}

void fy_xbzrle_unlock(FyXbzrleCache *x)
{
    pthread_mutex_unlock(&x->lock);
}

int fy_xbzrle_cache_resize(FyXbzrleCache *x, uint64_t cache_size,
                           FyError **errp)
{
    int ret;

    pthread_mutex_lock(&x->lock);
    ret = fy_page_cache_resize(x->cache, cache_size, errp);
    if (ret == 0)
        st_set(&x->st_cache_size, cache_size);
    pthread_mutex_unlock(&x->lock);
    return ret;
}

int fy_xbzrle_cache_size_check(uint64_t cache_size, size_t page_size,
                               FyError **errp)
{
    if (cache_size < page_size || !is_pow2(cache_size)) {
        fy_error_setg(errp, "Parameter 'xbzrle_cache_size' expects a power "
                      "of two no less than the target page size");
        return -1;
    }
    return 0;
}

static void save_miss(FyXbzrleCache *x, uint64_t addr, const uint8_t *page,
                      uint64_t generation, bool last_stage, FyXbzrleResult *r)
{
    st_add(&x->st_cache_miss, 1);
    r->outcome = FY_XBZRLE_MISS;
    r->data = page;
    r->len = x->page_size;
    if (!last_stage) {
        uint8_t *copy = fy_page_cache_insert(x->cache, addr, page, generation);
        if (copy)
            r->data = copy;   /* send what the cache holds */
    }
}

int fy_xbzrle_save_page(FyXbzrleCache *x, uint64_t addr, const uint8_t *page,
                        uint64_t generation, bool last_stage, uint8_t *out,
                        FyXbzrleResult *r)
{
    size_t ps;
    uint8_t *cached;
    int n;

    if (!x || !page || !out || !r)
        return -1;
    ps = x->page_size;
    cached = fy_page_cache_lookup(x->cache, addr, generation);
    if (!cached) {
        save_miss(x, addr, page, generation, last_stage, r);
        return 0;
    }

    /* A hit counts as encoded whatever comes of it, so encoding-rate
     * reflects how well this guest's pages encode (QEMU's rule). */
    st_add(&x->st_pages, 1);
    n = fy_xbzrle_encode(cached, page, ps, out, ps);
    /* Patching the cache with the encoding (rather than copying the page)
     * makes it equal to what the destination will hold even if the guest
     * wrote while we encoded; it cannot fail on our own encoding, but if
     * it did the page goes whole. */
    if (n > 0 && !last_stage && fy_xbzrle_decode(out, (size_t)n, cached, ps,
                                                 NULL) < 0)
        n = -1;
    if (n == 0) {
        r->outcome = FY_XBZRLE_UNCHANGED;
        r->data = NULL;
        r->len = 0;
    } else if (n < 0) {
        st_add(&x->st_overflow, 1);
        st_add(&x->st_bytes, ps);
        r->outcome = FY_XBZRLE_OVERFLOW;
        r->data = page;
        r->len = ps;
        if (!last_stage) {
            memcpy(cached, page, ps);
            r->data = cached;
        }
    } else {
        st_add(&x->st_bytes, 3 + (uint64_t)n);   /* flag, be16 len, data */
        r->outcome = FY_XBZRLE_ENCODED;
        r->data = out;
        r->len = (size_t)n;
    }
    return 0;
}

void fy_xbzrle_cache_zero_page(FyXbzrleCache *x, uint64_t addr,
                               uint64_t generation)
{
    /* Refused when the slot is fresh for another page: fine, a cache. */
    (void)fy_page_cache_insert(x->cache, addr, x->zero_page, generation);
}

void fy_xbzrle_account_header(FyXbzrleCache *x, size_t extra_bytes)
{
    st_add(&x->st_bytes, extra_bytes);
}

void fy_xbzrle_update_rates(FyXbzrleCache *x, uint64_t pages_handled)
{
    uint64_t miss = st_get(&x->st_cache_miss);
    uint64_t pages = st_get(&x->st_pages);
    uint64_t bytes = st_get(&x->st_bytes);
    double rate = 0;

    if (!pages_handled)
        return;
    st_set_double(&x->st_miss_rate,
                  (double)(miss - x->miss_prev) / (double)pages_handled);
    if (pages != x->pages_prev && bytes != x->bytes_prev)
        rate = (double)(pages - x->pages_prev) * (double)x->page_size /
               (double)(bytes - x->bytes_prev);
    st_set_double(&x->st_encoding_rate, rate);
    x->miss_prev = miss;
    x->pages_prev = pages;
    x->bytes_prev = bytes;
}

void fy_xbzrle_get_stats(FyXbzrleCache *x, FyXbzrleStats *out)
{
    out->cache_size = st_get(&x->st_cache_size);
    out->bytes = st_get(&x->st_bytes);
    out->pages = st_get(&x->st_pages);
    out->cache_miss = st_get(&x->st_cache_miss);
    out->cache_miss_rate = st_get_double(&x->st_miss_rate);
    out->encoding_rate = st_get_double(&x->st_encoding_rate);
    out->overflow = st_get(&x->st_overflow);
}

json_t *fy_xbzrle_stats_json(const FyXbzrleStats *s)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:f, s:f, s:I}",
                     "cache-size", (json_int_t)s->cache_size,
                     "bytes", (json_int_t)s->bytes,
                     "pages", (json_int_t)s->pages,
                     "cache-miss", (json_int_t)s->cache_miss,
                     "cache-miss-rate", s->cache_miss_rate,
                     "encoding-rate", s->encoding_rate,
                     "overflow", (json_int_t)s->overflow);
}
