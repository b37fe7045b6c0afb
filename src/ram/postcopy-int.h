/*
 * postcopy-int.h: what the postcopy files share.
 *
 *   postcopy-ram.c        FyPostcopyDest: states, placement, listen, stop
 *   postcopy-fault.c      the fault thread
 *   postcopy-uffd.c       userfaultfd calls
 *   postcopy-blocktime.c  blocktime and fault latency accounting
 *   postcopy-wire.c       return-path messages, received bitmap, ADVISE
 *   postcopy-discard.c    POSTCOPY_RAM_DISCARD: parse, apply, build
 *   postcopy-queue.c      the source's page request queue
 *   postcopy-save.c       the RAM section's postcopy sender (discards,
 *                         requested pages first, background, recovery)
 *   postcopy-load.c       the RAM loader's postcopy side (received marks,
 *                         placement, the preempt channel's records)
 *
 * Destination invariants (per block, bits in target pages):
 * - recv: set once the page is in guest RAM for good (placed, or loaded in
 *   precopy and kept at listen); cleared only by a discard before listen.
 *   Set with atomic RMWs; `received` counts the set bits of all blocks.
 * - wanted: the first target page of each host page a thread faulted on
 *   and that was not there at the time; set before the request goes out,
 *   never cleared. "Wanted and not received" is what resume re-sends and
 *   what de-duplicates faults.
 * - Placement sets recv and then reads wanted; the fault thread sets
 *   wanted and then reads recv (both sequentially consistent), so a fault
 *   and a placement that race are always matched by one side: the waiter
 *   record is resolved either by the placer or by the fault thread.
 * - A fault on a page whose recv bit is set means the page is a hole that
 *   is known to be zero (precopy skipped it) or a placement in flight:
 *   UFFDIO_ZEROPAGE then resolves it either way (EEXIST -> UFFDIO_WAKE).
 */
#ifndef FERRY_POSTCOPY_INT_H
#define FERRY_POSTCOPY_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ferry/postcopy.h"

/* ---- postcopy-uffd.c ---- */
/* Open a userfaultfd (syscall, else /dev/userfaultfd), non-blocking. */
int fy_uffd_open(FyError **errp);
/* UFFDIO_API with `features`; returns the kernel's feature word through
 * *supported (may be NULL). */
int fy_uffd_api(int fd, uint64_t features, uint64_t *supported, FyError **errp);
/* Features this kernel offers (a throwaway fd). */
int fy_uffd_probe(uint64_t *supported, FyError **errp);
/* "MISSING_SHMEM, THREAD_ID" for the bits set in mask, into buf. */
void fy_uffd_feature_names(uint64_t mask, char *buf, size_t size);
int fy_uffd_register_missing(int fd, void *addr, uint64_t len, uint64_t *ioctls,
                             FyError **errp);
int fy_uffd_unregister(int fd, void *addr, uint64_t len, FyError **errp);
/* 0 placed, 1 already there (the range was woken), -1 error (errno kept). */
int fy_uffd_copy(int fd, void *dst, const void *src, uint64_t len);
int fy_uffd_zeropage(int fd, void *dst, uint64_t len);
int fy_uffd_wake(int fd, void *addr, uint64_t len);

/* ---- postcopy-blocktime.c ---- */
#define PC_MAX_OTHER_WAITERS 64
#define PC_LAT_SAMPLES 16384

typedef struct PcWaiter {
    bool active;
    pid_t tid;
    int block;
    uint64_t page;      /* first target page of the host page */
    uint64_t start_ns;
} PcWaiter;

typedef struct PcTrack {
    pthread_mutex_t lock;
    pid_t vcpu_tid[FY_POSTCOPY_MAX_VCPUS];
    int vcpus;          /* highest registered index + 1 */
    int registered;     /* vCPUs with a tid */
    int auto_vcpus;     /* unknown faulting threads become vCPUs below this */
    /* waiters: [0, MAX_VCPUS) are vCPUs by index, then other threads */
    PcWaiter w[FY_POSTCOPY_MAX_VCPUS + PC_MAX_OTHER_WAITERS];
    int active;         /* active waiters (all kinds) */
    int blocked_vcpus;
    uint64_t all_blocked_since;
    uint64_t total_ns;
    uint64_t vcpu_ns[FY_POSTCOPY_MAX_VCPUS];
    uint64_t vcpu_faults[FY_POSTCOPY_MAX_VCPUS];
    uint64_t non_vcpu_ns, non_vcpu_faults;
    uint64_t lat_sum_ns, resolved;
    uint64_t dist[FY_POSTCOPY_LATENCY_BUCKETS];
    uint64_t untracked;
    uint64_t max_ns;
    uint64_t samples[PC_LAT_SAMPLES];  /* ring of the latest latencies */
} PcTrack;

uint64_t fy_pc_now_ns(void);
void fy_pc_track_init(PcTrack *t);
void fy_pc_track_set_auto_vcpus(PcTrack *t, int n);
void fy_pc_track_destroy(PcTrack *t);
int fy_pc_track_register_vcpu(PcTrack *t, int index, pid_t tid, FyError **errp);
/* Thread tid faulted on (block, page) at now. */
void fy_pc_track_fault(PcTrack *t, pid_t tid, int block, uint64_t page,
                       uint64_t now);
/* Host page (block, page) arrived: resolve its waiters. */
void fy_pc_track_placed(PcTrack *t, int block, uint64_t page, uint64_t now);
/* Snapshots; waits under way count up to now. */
void fy_pc_track_blocktime(PcTrack *t, FyPostcopyBlocktime *out, uint64_t now);
void fy_pc_track_latency(PcTrack *t, FyPostcopyLatency *out);

/* ---- the destination ---- */
typedef struct PcBlock {
    FyRamBlock *rb;
    uint64_t pages;         /* target pages */
    uint64_t hp_pages;      /* target pages per host page */
    bool ignored;           /* x-ignore-shared */
    bool registered;
    unsigned long *recv;    /* see above */
    unsigned long *wanted;
} PcBlock;

struct FyPostcopyDest {
    FyRamList *ram;
    FyPostcopyRequestFn request_fn;
    void *opaque;
    bool ignore_shared;

    int nblocks;
    PcBlock blocks[FY_RAMBLOCK_MAX];

    pthread_mutex_t lock;     /* state, paused, resend, quit, req_err */
    FyPostcopyDestState state;
    bool resend;              /* fault thread: re-send what is wanted */
    bool quit;                /* fault thread: exit */
    FyError *req_err;

    int uffd;
    uint64_t features;        /* asked of UFFDIO_API */
    int evfd;                 /* wakes the fault thread */
    pthread_t thread;
    bool thread_started;
    uint8_t *zero_buf;        /* a zero host page for huge-page blocks */
    size_t zero_len;

    uint64_t total_pages;     /* target pages of the blocks that migrate */
    uint64_t received;        /* atomic: recv bits set */

    /* statistics (atomic) */
    uint64_t st_faults, st_requests, st_dup, st_recv_faults, st_placed,
             st_placed_zero, st_eexist, st_stray;

    PcTrack track;
};

static inline void pc_stat_inc(uint64_t *p)
{
    __atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
}

static inline bool pc_test_bit(const unsigned long *map, uint64_t bit)
{
    unsigned long w = __atomic_load_n(&map[bit / FY_BITS_PER_LONG], __ATOMIC_SEQ_CST);
    return (w >> (bit % FY_BITS_PER_LONG)) & 1;
}

/* Atomically set / clear bits [start, start + n); return how many changed. */
uint64_t fy_pc_bits_set(unsigned long *map, uint64_t start, uint64_t n);
uint64_t fy_pc_bits_clear(unsigned long *map, uint64_t start, uint64_t n);

PcBlock *fy_pc_block_by_rb(FyPostcopyDest *d, const FyRamBlock *rb);
PcBlock *fy_pc_block_by_name(FyPostcopyDest *d, const char *idstr);
FyPostcopyDestState fy_pc_state(FyPostcopyDest *d);
/* Punch [off, off + len) of a block out of its backing. */
int fy_pc_discard_backing(PcBlock *b, uint64_t off, uint64_t len, FyError **errp);

/* ---- the RAM section in postcopy (postcopy-save.c, postcopy-load.c) ----
 * Hung off FyRamState.pc. Source fields are touched by the migration
 * thread and, with postcopy-preempt, the preempt sender (counters atomic,
 * dirty bits taken with atomic RMWs); destination fields by the incoming
 * thread. */
typedef struct RamPostcopy {
    bool enabled;             /* source: postcopy-ram on (has_postcopy) */
    bool sending;             /* source: in the postcopy phase */
    bool preempt;             /* source: requests are served elsewhere */
    FyPostcopyReqQueue *q;
    uint64_t bandwidth;       /* background bytes/s, 0 = unlimited */
    uint64_t win_start_ns, win_bytes;
    uint64_t st_bytes, st_urgent, st_requests;  /* atomic */

    FyPostcopyDest *d;        /* destination: advised */
    bool placing;             /* destination: listening */
    uint8_t *page;            /* destination: one page off guest RAM */
} RamPostcopy;

/* postcopy-fault.c */
void *fy_pc_fault_thread(void *opaque);
/* Wake the fault thread (quit, resend). */
void fy_pc_kick(FyPostcopyDest *d);

#endif
