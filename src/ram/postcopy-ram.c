/*
 * postcopy-ram.c: the destination side of postcopy RAM (FyPostcopyDest):
 * its states, listen, page placement, pause/resume and stop. The fault
 * thread is in postcopy-fault.c; the invariants of the recv and wanted
 * bitmaps are in postcopy-int.h.
 *
 * States (postcopy.h has the diagram) move under d->lock; the hot paths
 * (placement, fault handling) read the state with an atomic load and never
 * take d->lock.
 *
 * Placement is one UFFDIO_COPY (or UFFDIO_ZEROPAGE) of a whole host page:
 * the kernel maps the page and wakes its waiters in one step, so a vCPU
 * never sees a partly written page. Then the recv bits are set, and if a
 * thread had faulted on the page its wait is ended for blocktime.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ram/bitmap.h"
#include "ram/postcopy-int.h"

/* ---- bits ---- */

static unsigned long range_mask(uint64_t start, uint64_t n, uint64_t *k)
{
    uint64_t b = start % FY_BITS_PER_LONG;
    *k = n < FY_BITS_PER_LONG - b ? n : FY_BITS_PER_LONG - b;
    return *k == FY_BITS_PER_LONG ? ~0ul : ((1ul << *k) - 1) << b;
}

uint64_t fy_pc_bits_set(unsigned long *map, uint64_t start, uint64_t n)
{
    uint64_t changed = 0, k;
    while (n) {
        unsigned long m = range_mask(start, n, &k);
        unsigned long old = __atomic_fetch_or(&map[start / FY_BITS_PER_LONG], m,
                                              __ATOMIC_SEQ_CST);
        changed += (uint64_t)__builtin_popcountl(m & ~old);
        start += k;
        n -= k;
    }
    return changed;
}

uint64_t fy_pc_bits_clear(unsigned long *map, uint64_t start, uint64_t n)
{
    uint64_t changed = 0, k;
    while (n) {
        unsigned long m = range_mask(start, n, &k);
        unsigned long old = __atomic_fetch_and(&map[start / FY_BITS_PER_LONG], ~m,
                                               __ATOMIC_SEQ_CST);
        changed += (uint64_t)__builtin_popcountl(m & old);
        start += k;
        n -= k;
    }
    return changed;
}

static bool bits_all_set(const unsigned long *map, uint64_t start, uint64_t n)
{
    uint64_t k;
    while (n) {
        unsigned long m = range_mask(start, n, &k);
        unsigned long w = __atomic_load_n(&map[start / FY_BITS_PER_LONG],
                                          __ATOMIC_SEQ_CST);
        if ((w & m) != m)
            return false;
        start += k;
        n -= k;
    }
    return true;
}

/* ---- lookups ---- */

PcBlock *fy_pc_block_by_rb(FyPostcopyDest *d, const FyRamBlock *rb)
{
    for (int i = 0; i < d->nblocks; i++)
        if (d->blocks[i].rb == rb)
            return &d->blocks[i];
    return NULL;
}

PcBlock *fy_pc_block_by_name(FyPostcopyDest *d, const char *idstr)
{
    for (int i = 0; i < d->nblocks; i++)
        if (strcmp(d->blocks[i].rb->idstr, idstr) == 0)
            return &d->blocks[i];
    return NULL;
}

FyPostcopyDestState fy_pc_state(FyPostcopyDest *d)
{
    return __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
}

static void set_state(FyPostcopyDest *d, FyPostcopyDestState s)
{
    __atomic_store_n(&d->state, s, __ATOMIC_RELEASE);
}

static const char *state_name(FyPostcopyDestState s)
{
    static const char *const names[] = { "new", "advised", "listening",
                                         "paused", "stopped" };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

/* ---- life cycle ---- */

static void count_total(FyPostcopyDest *d)
{
    uint64_t total = 0;
    for (int i = 0; i < d->nblocks; i++) {
        PcBlock *b = &d->blocks[i];
        b->ignored = d->ignore_shared && b->rb->shared;
        if (!b->ignored)
            total += b->pages;
    }
    d->total_pages = total;
}

FyPostcopyDest *fy_postcopy_dest_new(FyRamList *ram, FyPostcopyRequestFn request_fn,
                                     void *opaque)
{
    FyPostcopyDest *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->ram = ram;
    d->request_fn = request_fn;
    d->opaque = opaque;
    d->uffd = -1;
    d->evfd = -1;
    d->state = FY_POSTCOPY_DEST_NEW;
    pthread_mutex_init(&d->lock, NULL);
    fy_pc_track_init(&d->track);
    d->nblocks = ram->count < FY_RAMBLOCK_MAX ? ram->count : FY_RAMBLOCK_MAX;
    for (int i = 0; i < d->nblocks; i++) {
        PcBlock *b = &d->blocks[i];
        b->rb = ram->blocks[i];
        b->pages = b->rb->used_length >> FY_TARGET_PAGE_BITS;
        b->hp_pages = b->rb->page_size > FY_TARGET_PAGE_SIZE
                      ? b->rb->page_size >> FY_TARGET_PAGE_BITS : 1;
        b->recv = fy_bitmap_new(b->pages);
        b->wanted = fy_bitmap_new(b->pages);
        if (!b->recv || !b->wanted) {
            fy_postcopy_dest_free(d);
            return NULL;
        }
    }
    count_total(d);
    return d;
}

void fy_postcopy_dest_set_ignore_shared(FyPostcopyDest *d, bool on)
{
    d->ignore_shared = on;
    count_total(d);
}

void fy_postcopy_dest_free(FyPostcopyDest *d)
{
    if (!d)
        return;
    fy_postcopy_dest_stop(d, NULL);
    if (d->uffd >= 0)
        close(d->uffd);
    if (d->evfd >= 0)
        close(d->evfd);
    if (d->zero_buf)
        munmap(d->zero_buf, d->zero_len);
    for (int i = 0; i < d->nblocks; i++) {
        free(d->blocks[i].recv);
        free(d->blocks[i].wanted);
    }
    fy_error_free(d->req_err);
    fy_pc_track_destroy(&d->track);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static int check_block_shape(const FyRamBlock *rb, FyError **errp)
{
    uint64_t ps = rb->page_size;
    if (!rb->host || !rb->used_length) {
        fy_error_setg(errp, "postcopy-ram: RAM block '%s' has no memory", rb->idstr);
        return -1;
    }
    if (ps < FY_TARGET_PAGE_SIZE || (ps & (ps - 1))) {
        fy_error_setg(errp, "postcopy-ram: RAM block '%s' has page size %" PRIu64
                      ", not a power of two of at least %u", rb->idstr, ps,
                      FY_TARGET_PAGE_SIZE);
        return -1;
    }
    if (rb->used_length % ps || (uintptr_t)rb->host % ps) {
        fy_error_setg(errp, "postcopy-ram: RAM block '%s' (%" PRIu64 " bytes at "
                      "%p) is not aligned to its page size %" PRIu64,
                      rb->idstr, rb->used_length, (void *)rb->host, ps);
        return -1;
    }
    return 0;
}

/* The features the blocks need; *why names the first block needing each. */
static uint64_t needed_features(FyPostcopyDest *d, const char **why_shmem,
                                const char **why_huge, uint64_t *max_ps)
{
    uint64_t need = 0;
    *max_ps = FY_TARGET_PAGE_SIZE;
    for (int i = 0; i < d->nblocks; i++) {
        PcBlock *b = &d->blocks[i];
        if (b->ignored)
            continue;
        if (b->rb->page_size > FY_TARGET_PAGE_SIZE) {
            if (!(need & UFFD_FEATURE_MISSING_HUGETLBFS))
                *why_huge = b->rb->idstr;
            need |= UFFD_FEATURE_MISSING_HUGETLBFS;
            if (b->rb->page_size > *max_ps)
                *max_ps = b->rb->page_size;
        } else if (b->rb->fd >= 0 || b->rb->shared) {
            if (!(need & UFFD_FEATURE_MISSING_SHMEM))
                *why_shmem = b->rb->idstr;
            need |= UFFD_FEATURE_MISSING_SHMEM;
        }
    }
    return need;
}

static int check_features(uint64_t need, uint64_t have, const char *why_shmem,
                          const char *why_huge, FyError **errp)
{
    uint64_t missing = need & ~have;
    if (!missing)
        return 0;
    char names[128];
    fy_uffd_feature_names(missing, names, sizeof(names));
    fy_error_setg(errp, "postcopy-ram: this kernel's userfaultfd lacks %s "
                  "(features 0x%llx)%s%s%s%s%s", names, (unsigned long long)have,
                  missing & UFFD_FEATURE_MISSING_SHMEM ? "; RAM block '" : "",
                  missing & UFFD_FEATURE_MISSING_SHMEM ? why_shmem : "",
                  missing & UFFD_FEATURE_MISSING_SHMEM ? "' is shared memory" : "",
                  missing & UFFD_FEATURE_MISSING_HUGETLBFS ? "; a RAM block uses huge pages: " : "",
                  missing & UFFD_FEATURE_MISSING_HUGETLBFS ? why_huge : "");
    return -1;
}

static int open_uffd(FyPostcopyDest *d, FyError **errp)
{
    const char *why_shmem = "", *why_huge = "";
    uint64_t max_ps, have;
    uint64_t need = needed_features(d, &why_shmem, &why_huge, &max_ps);

    if (fy_uffd_probe(&have, errp) < 0 ||
        check_features(need, have, why_shmem, why_huge, errp) < 0)
        return -1;
    d->features = need | (have & UFFD_FEATURE_THREAD_ID);
    d->uffd = fy_uffd_open(errp);
    if (d->uffd < 0 || fy_uffd_api(d->uffd, d->features, NULL, errp) < 0)
        return -1;
    d->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->evfd < 0) {
        fy_error_setg_errno(errp, errno, "postcopy-ram: eventfd");
        return -1;
    }
    if (max_ps > FY_TARGET_PAGE_SIZE) {
        /* hugetlbfs has no UFFDIO_ZEROPAGE: zero pages are copied from here */
        d->zero_buf = mmap(NULL, max_ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
                           -1, 0);
        if (d->zero_buf == MAP_FAILED) {
            d->zero_buf = NULL;
            fy_error_setg_errno(errp, errno, "postcopy-ram: mapping a zero page "
                                "of %" PRIu64 " bytes", max_ps);
            return -1;
        }
        d->zero_len = max_ps;
    }
    return 0;
}

int fy_postcopy_dest_advise(FyPostcopyDest *d, FyError **errp)
{
    if (fy_pc_state(d) != FY_POSTCOPY_DEST_NEW) {
        fy_error_setg(errp, "postcopy-ram: ADVISE in state %s (expected new)",
                      state_name(fy_pc_state(d)));
        return -1;
    }
    if (d->ram->count > FY_RAMBLOCK_MAX) {
        fy_error_setg(errp, "postcopy-ram: %d RAM blocks (at most %d)",
                      d->ram->count, FY_RAMBLOCK_MAX);
        return -1;
    }
    for (int i = 0; i < d->nblocks; i++)
        if (!d->blocks[i].ignored && check_block_shape(d->blocks[i].rb, errp) < 0)
            return -1;
    if (open_uffd(d, errp) < 0) {
        if (d->uffd >= 0)
            close(d->uffd);
        d->uffd = -1;
        return -1;
    }
    pthread_mutex_lock(&d->lock);
    set_state(d, FY_POSTCOPY_DEST_ADVISED);
    pthread_mutex_unlock(&d->lock);
    return 0;
}

void fy_postcopy_dest_mark_received(FyPostcopyDest *d, const FyRamBlock *rb,
                                    uint64_t offset, uint64_t len)
{
    PcBlock *b = fy_pc_block_by_rb(d, rb);
    if (!b || b->ignored || offset >= rb->used_length)
        return;
    if (len > rb->used_length - offset)
        len = rb->used_length - offset;
    uint64_t first = offset >> FY_TARGET_PAGE_BITS;
    uint64_t end = (offset + len + FY_TARGET_PAGE_SIZE - 1) >> FY_TARGET_PAGE_BITS;
    uint64_t n = fy_pc_bits_set(b->recv, first, end - first);
    __atomic_fetch_add(&d->received, n, __ATOMIC_RELAXED);
}

/* ---- what precopy left in RAM ---- */

static void mark_range(FyPostcopyDest *d, PcBlock *b, uint64_t start, uint64_t end)
{
    if (end > b->rb->used_length)
        end = b->rb->used_length;
    if (end > start)
        fy_postcopy_dest_mark_received(d, b->rb, start, end - start);
}

/* A shared memfd's data ranges: exactly the pages written through any
 * mapping of it (holes read as zero and were never written). */
static int mark_file_data(FyPostcopyDest *d, PcBlock *b, FyError **errp)
{
    const FyRamBlock *rb = b->rb;
    uint64_t off = 0;
    while (off < rb->used_length) {
        off_t data = lseek(rb->fd, (off_t)(rb->fd_offset + off), SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                return 0;
            fy_error_setg_errno(errp, errno, "postcopy-ram: lseek(SEEK_DATA) "
                                "on RAM block '%s'", rb->idstr);
            return -1;
        }
        off_t hole = lseek(rb->fd, data, SEEK_HOLE);
        if (hole < 0) {
            fy_error_setg_errno(errp, errno, "postcopy-ram: lseek(SEEK_HOLE) "
                                "on RAM block '%s'", rb->idstr);
            return -1;
        }
        uint64_t ds = (uint64_t)data - rb->fd_offset;
        uint64_t he = (uint64_t)hole - rb->fd_offset;
        if (ds >= rb->used_length)
            return 0;
        mark_range(d, b, ds & ~(uint64_t)(FY_TARGET_PAGE_SIZE - 1), he);
        off = he > off ? he : off + FY_TARGET_PAGE_SIZE;
    }
    return 0;
}

/* Private memory: pages present or swapped out in /proc/self/pagemap. */
#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
static int mark_resident(FyPostcopyDest *d, PcBlock *b, int pm, FyError **errp)
{
    const FyRamBlock *rb = b->rb;
    uint64_t ent[512];
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t hpages = rb->used_length / (uint64_t)ps;
    uint64_t base = (uintptr_t)rb->host / (uint64_t)ps;
    for (uint64_t i = 0; i < hpages;) {
        uint64_t n = hpages - i < 512 ? hpages - i : 512;
        ssize_t got = pread(pm, ent, n * sizeof(ent[0]),
                            (off_t)((base + i) * sizeof(ent[0])));
        if (got <= 0 || got % (ssize_t)sizeof(ent[0])) {
            fy_error_setg_errno(errp, got < 0 ? errno : EIO, "postcopy-ram: "
                                "reading /proc/self/pagemap for RAM block '%s'",
                                rb->idstr);
            return -1;
        }
        n = (uint64_t)got / sizeof(ent[0]);
        for (uint64_t j = 0; j < n; j++)
            if (ent[j] & (PM_PRESENT | PM_SWAPPED))
                mark_range(d, b, (i + j) * (uint64_t)ps, (i + j + 1) * (uint64_t)ps);
        i += n;
    }
    return 0;
}

int fy_postcopy_dest_mark_populated(FyPostcopyDest *d, FyError **errp)
{
    if (fy_pc_state(d) != FY_POSTCOPY_DEST_ADVISED) {
        fy_error_setg(errp, "postcopy-ram: looking for received pages in state "
                      "%s (expected advised)", state_name(fy_pc_state(d)));
        return -1;
    }
    int pm = -1, r = 0;
    for (int i = 0; i < d->nblocks && r == 0; i++) {
        PcBlock *b = &d->blocks[i];
        if (b->ignored)
            continue;
        if (b->rb->fd >= 0 && b->rb->shared) {
            r = mark_file_data(d, b, errp);
            continue;
        }
        if (pm < 0 && (pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) < 0) {
            fy_error_setg_errno(errp, errno, "postcopy-ram: open /proc/self/pagemap");
            return -1;
        }
        r = mark_resident(d, b, pm, errp);
    }
    if (pm >= 0)
        close(pm);
    return r;
}

void fy_postcopy_dest_set_auto_vcpus(FyPostcopyDest *d, int n)
{
    fy_pc_track_set_auto_vcpus(&d->track, n);
}

int fy_pc_discard_backing(PcBlock *b, uint64_t off, uint64_t len, FyError **errp)
{
    FyRamBlock *rb = b->rb;
    const char *what;
    int r;

    if (rb->fd >= 0) {
        /* Drops the pages from the file, and so from every shared mapping. */
        what = "fallocate(PUNCH_HOLE)";
        r = fallocate(rb->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)(rb->fd_offset + off), (off_t)len);
        if (r == 0 && !rb->shared) {
            what = "madvise(DONTNEED)";
            r = madvise(rb->host + off, len, MADV_DONTNEED);
        }
    } else {
        what = rb->shared ? "madvise(REMOVE)" : "madvise(DONTNEED)";
        r = madvise(rb->host + off, len, rb->shared ? MADV_REMOVE : MADV_DONTNEED);
    }
    if (r < 0) {
        fy_error_setg_errno(errp, errno, "postcopy-ram: discarding RAM block '%s' "
                            "offset 0x%" PRIx64 " length 0x%" PRIx64 ": %s",
                            rb->idstr, off, len, what);
        return -1;
    }
    return 0;
}

/* ---- listen ---- */

/* Host pages [h, end) where each is missing at least one target page. */
static uint64_t next_partial_hp(PcBlock *b, uint64_t h, uint64_t nhp, bool want_hole)
{
    for (; h < nhp; h++) {
        if (b->hp_pages == 1 && h % FY_BITS_PER_LONG == 0 &&
            nhp - h >= FY_BITS_PER_LONG) {
            unsigned long w = b->recv[h / FY_BITS_PER_LONG];
            if (w == (want_hole ? ~0ul : 0ul)) {
                h += FY_BITS_PER_LONG - 1;
                continue;
            }
        }
        bool full = bits_all_set(b->recv, h * b->hp_pages, b->hp_pages);
        if (full != want_hole)
            return h;
    }
    return nhp;
}

static int discard_unreceived(FyPostcopyDest *d, PcBlock *b, FyError **errp)
{
    uint64_t nhp = b->pages / b->hp_pages, ps = b->rb->page_size;
    uint64_t h = 0;
    while ((h = next_partial_hp(b, h, nhp, true)) < nhp) {
        uint64_t end = next_partial_hp(b, h, nhp, false);
        if (fy_pc_discard_backing(b, h * ps, (end - h) * ps, errp) < 0)
            return -1;
        uint64_t n = fy_pc_bits_clear(b->recv, h * b->hp_pages, (end - h) * b->hp_pages);
        __atomic_fetch_sub(&d->received, n, __ATOMIC_RELAXED);
        h = end;
    }
    return 0;
}

static int register_block(FyPostcopyDest *d, PcBlock *b, FyError **errp)
{
    uint64_t ioctls;
    if (fy_uffd_register_missing(d->uffd, b->rb->host, b->rb->used_length,
                                 &ioctls, errp) < 0) {
        fy_error_prepend(errp, "postcopy-ram: RAM block '%s': ", b->rb->idstr);
        return -1;
    }
    b->registered = true;
    uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_WAKE);
    if (b->hp_pages == 1)
        need |= 1ull << _UFFDIO_ZEROPAGE;
    if ((ioctls & need) != need) {
        fy_error_setg(errp, "postcopy-ram: RAM block '%s': userfaultfd offers "
                      "ioctls 0x%llx, missing 0x%llx (COPY, WAKE%s)", b->rb->idstr,
                      (unsigned long long)ioctls,
                      (unsigned long long)(need & ~ioctls),
                      b->hp_pages == 1 ? ", ZEROPAGE" : "");
        return -1;
    }
    return 0;
}

static void unregister_all(FyPostcopyDest *d, FyError **errp)
{
    for (int i = 0; i < d->nblocks; i++) {
        PcBlock *b = &d->blocks[i];
        if (!b->registered)
            continue;
        FyError *err = NULL;
        if (fy_uffd_unregister(d->uffd, b->rb->host, b->rb->used_length, &err) < 0) {
            fy_error_prepend(&err, "postcopy-ram: RAM block '%s': ", b->rb->idstr);
            fy_error_propagate(errp, err);
        }
        b->registered = false;
    }
}

int fy_postcopy_dest_listen(FyPostcopyDest *d, FyError **errp)
{
    if (fy_pc_state(d) != FY_POSTCOPY_DEST_ADVISED) {
        fy_error_setg(errp, "postcopy-ram: LISTEN in state %s (expected advised)",
                      state_name(fy_pc_state(d)));
        return -1;
    }
    for (int i = 0; i < d->nblocks; i++) {
        PcBlock *b = &d->blocks[i];
        if (b->ignored)
            continue;
        if (discard_unreceived(d, b, errp) < 0 || register_block(d, b, errp) < 0)
            goto fail;
    }
    pthread_mutex_lock(&d->lock);
    d->quit = false;
    set_state(d, FY_POSTCOPY_DEST_LISTENING);
    pthread_mutex_unlock(&d->lock);
    int err = pthread_create(&d->thread, NULL, fy_pc_fault_thread, d);
    if (err) {
        fy_error_setg_errno(errp, err, "postcopy-ram: starting the fault thread");
        pthread_mutex_lock(&d->lock);
        set_state(d, FY_POSTCOPY_DEST_ADVISED);
        pthread_mutex_unlock(&d->lock);
        goto fail;
    }
    d->thread_started = true;
    return 0;

fail:
    unregister_all(d, NULL);
    return -1;
}

/* ---- placement ---- */

static PcBlock *check_place(FyPostcopyDest *d, const FyRamBlock *rb,
                            uint64_t offset, const char *what, FyError **errp)
{
    FyPostcopyDestState s = fy_pc_state(d);
    if (s != FY_POSTCOPY_DEST_LISTENING && s != FY_POSTCOPY_DEST_PAUSED) {
        fy_error_setg(errp, "postcopy-ram: %s in state %s (before LISTEN or "
                      "after stop)", what, state_name(s));
        return NULL;
    }
    PcBlock *b = fy_pc_block_by_rb(d, rb);
    if (!b || b->ignored) {
        fy_error_setg(errp, "postcopy-ram: %s: RAM block '%s' is not %s", what,
                      rb->idstr, b ? "migrated (x-ignore-shared)" : "known");
        return NULL;
    }
    if (offset >= rb->used_length || offset % rb->page_size) {
        fy_error_setg(errp, "postcopy-ram: %s: offset 0x%" PRIx64 " of RAM block "
                      "'%s' is %s (0x%" PRIx64 " bytes, pages of 0x%" PRIx64 ")",
                      what, offset, rb->idstr,
                      offset >= rb->used_length ? "past its end" : "not page aligned",
                      rb->used_length, rb->page_size);
        return NULL;
    }
    return b;
}

static int placed(FyPostcopyDest *d, PcBlock *b, uint64_t offset, int r, bool zero)
{
    uint64_t page = offset >> FY_TARGET_PAGE_BITS;
    pc_stat_inc(r == 1 ? &d->st_eexist : zero ? &d->st_placed_zero : &d->st_placed);
    uint64_t n = fy_pc_bits_set(b->recv, page, b->hp_pages);
    if (n)
        __atomic_fetch_add(&d->received, n, __ATOMIC_RELAXED);
    if (pc_test_bit(b->wanted, page))
        fy_pc_track_placed(&d->track, (int)(b - d->blocks), page, fy_pc_now_ns());
    return r;
}

static int place_failed(const FyRamBlock *rb, uint64_t offset, const char *what,
                        FyError **errp)
{
    fy_error_setg_errno(errp, errno, "postcopy-ram: %s at offset 0x%" PRIx64
                        " of RAM block '%s'", what, offset, rb->idstr);
    return -1;
}

int fy_postcopy_dest_place_page(FyPostcopyDest *d, const FyRamBlock *rb,
                                uint64_t offset, const void *data, FyError **errp)
{
    PcBlock *b = check_place(d, rb, offset, "placing a page", errp);
    if (!b)
        return -1;
    int r = fy_uffd_copy(d->uffd, rb->host + offset, data, rb->page_size);
    if (r < 0)
        return place_failed(rb, offset, "UFFDIO_COPY", errp);
    return placed(d, b, offset, r, false);
}

int fy_postcopy_dest_place_zero_page(FyPostcopyDest *d, const FyRamBlock *rb,
                                     uint64_t offset, FyError **errp)
{
    PcBlock *b = check_place(d, rb, offset, "placing a zero page", errp);
    if (!b)
        return -1;
    int r;
    if (b->hp_pages > 1)
        r = fy_uffd_copy(d->uffd, rb->host + offset, d->zero_buf, rb->page_size);
    else
        r = fy_uffd_zeropage(d->uffd, rb->host + offset, rb->page_size);
    if (r < 0)
        return place_failed(rb, offset, "UFFDIO_ZEROPAGE", errp);
    return placed(d, b, offset, r, true);
}

/* ---- vCPUs, pause, resume, stop ---- */

int fy_postcopy_dest_register_vcpu(FyPostcopyDest *d, int index, pid_t tid,
                                   FyError **errp)
{
    return fy_pc_track_register_vcpu(&d->track, index, tid, errp);
}

void fy_pc_kick(FyPostcopyDest *d)
{
    uint64_t one = 1;
    if (d->evfd >= 0 && write(d->evfd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is saturated, the thread is woken anyway */
    }
}

void fy_postcopy_dest_pause(FyPostcopyDest *d)
{
    pthread_mutex_lock(&d->lock);
    if (d->state == FY_POSTCOPY_DEST_LISTENING)
        set_state(d, FY_POSTCOPY_DEST_PAUSED);
    pthread_mutex_unlock(&d->lock);
}

int fy_postcopy_dest_resume(FyPostcopyDest *d, FyError **errp)
{
    pthread_mutex_lock(&d->lock);
    FyPostcopyDestState s = d->state;
    if (s != FY_POSTCOPY_DEST_PAUSED && s != FY_POSTCOPY_DEST_LISTENING) {
        pthread_mutex_unlock(&d->lock);
        fy_error_setg(errp, "postcopy-ram: resume in state %s (expected paused)",
                      state_name(s));
        return -1;
    }
    /* Requests sent before the break may have died with the connection,
     * so everything still wanted goes again, even if we never noticed the
     * break ourselves. */
    set_state(d, FY_POSTCOPY_DEST_LISTENING);
    d->resend = true;
    fy_error_free(d->req_err);
    d->req_err = NULL;
    pthread_mutex_unlock(&d->lock);
    fy_pc_kick(d);
    return 0;
}

int fy_postcopy_dest_stop(FyPostcopyDest *d, FyError **errp)
{
    pthread_mutex_lock(&d->lock);
    if (d->state == FY_POSTCOPY_DEST_STOPPED) {
        pthread_mutex_unlock(&d->lock);
        return 0;
    }
    d->quit = true;
    set_state(d, FY_POSTCOPY_DEST_STOPPED);
    pthread_mutex_unlock(&d->lock);
    if (d->thread_started) {
        fy_pc_kick(d);
        pthread_join(d->thread, NULL);
        d->thread_started = false;
    }
    FyError *err = NULL;
    unregister_all(d, &err);
    if (err) {
        fy_error_propagate(errp, err);
        return -1;
    }
    return 0;
}

/* ---- queries ---- */

FyPostcopyDestState fy_postcopy_dest_state(FyPostcopyDest *d)
{
    return fy_pc_state(d);
}

bool fy_postcopy_dest_page_received(FyPostcopyDest *d, const FyRamBlock *rb,
                                    uint64_t offset)
{
    PcBlock *b = fy_pc_block_by_rb(d, rb);
    if (!b || offset >= rb->used_length)
        return false;
    return b->ignored || pc_test_bit(b->recv, offset >> FY_TARGET_PAGE_BITS);
}

uint64_t fy_postcopy_dest_pages_remaining(FyPostcopyDest *d)
{
    uint64_t got = __atomic_load_n(&d->received, __ATOMIC_RELAXED);
    return got < d->total_pages ? d->total_pages - got : 0;
}

FyError *fy_postcopy_dest_request_error(FyPostcopyDest *d)
{
    pthread_mutex_lock(&d->lock);
    FyError *e = d->req_err ? fy_error_copy(d->req_err) : NULL;
    pthread_mutex_unlock(&d->lock);
    return e;
}

void fy_postcopy_dest_get_stats(FyPostcopyDest *d, FyPostcopyDestStats *out)
{
    out->faults = __atomic_load_n(&d->st_faults, __ATOMIC_RELAXED);
    out->requests = __atomic_load_n(&d->st_requests, __ATOMIC_RELAXED);
    out->dup_faults = __atomic_load_n(&d->st_dup, __ATOMIC_RELAXED);
    out->received_faults = __atomic_load_n(&d->st_recv_faults, __ATOMIC_RELAXED);
    out->placed = __atomic_load_n(&d->st_placed, __ATOMIC_RELAXED);
    out->placed_zero = __atomic_load_n(&d->st_placed_zero, __ATOMIC_RELAXED);
    out->already_there = __atomic_load_n(&d->st_eexist, __ATOMIC_RELAXED);
    out->stray_faults = __atomic_load_n(&d->st_stray, __ATOMIC_RELAXED);
}

void fy_postcopy_dest_get_blocktime(FyPostcopyDest *d, FyPostcopyBlocktime *out)
{
    fy_pc_track_blocktime(&d->track, out, fy_pc_now_ns());
}

void fy_postcopy_dest_get_latency(FyPostcopyDest *d, FyPostcopyLatency *out)
{
    fy_pc_track_latency(&d->track, out);
}
