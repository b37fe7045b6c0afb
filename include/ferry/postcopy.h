/*
 * postcopy.h: postcopy RAM -- the destination's userfaultfd machinery and
 * the source's helpers, in QEMU's wire format.
 *
 * Postcopy starts the VM on the destination before all of its RAM is
 * there. Every page not yet received is a hole registered with
 * userfaultfd (MISSING mode); a vCPU that touches one blocks in the kernel,
 * the fault thread asks the source for that page over the return path, and
 * the RAM loader places the page atomically (UFFDIO_COPY), which wakes
 * exactly the threads waiting for it.
 *
 * Destination life cycle (FyPostcopyDest):
 *
 *   new --advise--> ADVISED --listen--> LISTENING <--pause/resume--> PAUSED
 *                     |                    |                           |
 *                     | mark_received      +------ stop / free --------+--> STOPPED
 *                     | discard            |
 *                     |                    | place_page / place_zero_page
 *
 *   ADVISED    POSTCOPY_ADVISE arrived: userfaultfd is open with every
 *              feature the RAM blocks need; precopy goes on and the RAM
 *              loader calls mark_received() for each page it loads;
 *              POSTCOPY_RAM_DISCARD payloads are applied with discard().
 *   LISTENING  POSTCOPY_LISTEN: every page not received is discarded
 *              (punched out of the memfd), every block is registered, the
 *              fault thread runs. Pages are placed with place_page().
 *   PAUSED     the return path broke (or pause() was called): every placed
 *              page stays, faults are still read and remembered, but no
 *              request goes out; the faulting threads keep waiting. resume()
 *              re-sends a request for every page still wanted.
 *   STOPPED    fault thread joined, blocks unregistered. Only stop once
 *              every page is received (or the VM is dead): unregistering
 *              wakes waiting threads onto zero-filled pages.
 *
 * Threads: request_fn runs only on the fault thread. place_page,
 * place_zero_page, mark_received and the queries may run on any thread,
 * concurrently (a main-channel loader and a postcopy-preempt loader).
 * Everything else is for the thread that drives the incoming migration.
 *
 * Page sizes: a "host page" is the block's page_size (4 KiB, or 2 MiB for
 * hugetlbfs); requests, placement and discards work in whole host pages,
 * the received bitmap in target pages (FY_TARGET_PAGE_SIZE), as in QEMU.
 */
#ifndef FERRY_POSTCOPY_H
#define FERRY_POSTCOPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ferry/error.h"
#include "ferry/ram.h"
#include "ferry/ramblock.h"
#include "ferry/stream.h"

struct json_t;

/* ---- wire constants (QEMU) ---- */

/* Return-path message types (migration.c MIG_RP_MSG_*). */
enum {
    FY_RP_MSG_REQ_PAGES_ID = 3, /* be64 start, be32 len, u8 n, name[n] */
    FY_RP_MSG_REQ_PAGES    = 4, /* be64 start, be32 len */
    FY_RP_MSG_RECV_BITMAP  = 5, /* u8 n, name[n]; the bitmap body follows */
    FY_RP_MSG_RESUME_ACK   = 6, /* be32 FY_POSTCOPY_RESUME_ACK_VALUE */
};
#define FY_POSTCOPY_RESUME_ACK_VALUE 1u
/* RAMBLOCK_RECV_BITMAP_ENDING */
#define FY_POSTCOPY_RECV_BITMAP_ENDING 0x0123456789abcdefull
/* postcopy_ram_discard_version */
#define FY_POSTCOPY_DISCARD_VERSION 0
/* QEMU sends at most this many ranges per POSTCOPY_RAM_DISCARD
 * (MAX_DISCARDS_PER_COMMAND); any count that fits the be16 length loads. */
#define FY_POSTCOPY_DISCARD_QEMU_RANGES 12u
/* Largest REQ_PAGES(_ID) payload. */
#define FY_POSTCOPY_REQ_MAX (12 + 1 + 255)
/* Most vCPUs blocktime accounts for. */
#define FY_POSTCOPY_MAX_VCPUS 256
/* postcopy-latency-dist: bucket N counts faults resolved in [2^N, 2^(N+1)) us. */
#define FY_POSTCOPY_LATENCY_BUCKETS 24

/* ==== destination ==== */

typedef struct FyPostcopyDest FyPostcopyDest;

/* Ask the source for len bytes at offset of block idstr (one host page).
 * Runs on the fault thread. Return 0 when the request went out; non-zero
 * means the return path is broken: the destination pauses (the request
 * stays wanted and is sent again by resume()). */
typedef int (*FyPostcopyRequestFn)(void *opaque, const char *idstr,
                                   uint64_t offset, uint64_t len);

typedef enum {
    FY_POSTCOPY_DEST_NEW,
    FY_POSTCOPY_DEST_ADVISED,
    FY_POSTCOPY_DEST_LISTENING,
    FY_POSTCOPY_DEST_PAUSED,
    FY_POSTCOPY_DEST_STOPPED,
} FyPostcopyDestState;

/* The RAM list must not change while the destination exists. NULL only
 * when memory runs out. */
FyPostcopyDest *fy_postcopy_dest_new(FyRamList *ram, FyPostcopyRequestFn request_fn,
                                     void *opaque);
/* Stops first (see stop). NULL is a no-op. */
void fy_postcopy_dest_free(FyPostcopyDest *d);
/* x-ignore-shared: shared blocks are neither registered nor discarded
 * (both sides map the same memory). Before advise. */
void fy_postcopy_dest_set_ignore_shared(FyPostcopyDest *d, bool on);

/* Check the blocks and the host, open userfaultfd with the features the
 * blocks need (MISSING_SHMEM for memfd/shared blocks, MISSING_HUGETLBFS for
 * huge pages; THREAD_ID when available, for blocktime). A missing feature
 * is an error that names it. NEW -> ADVISED. */
int fy_postcopy_dest_advise(FyPostcopyDest *d, FyError **errp);

/* Precopy: the RAM loader loaded [offset, offset + len) of rb (PAGE or ZERO
 * records). Such pages are kept at listen. Out-of-range parts are ignored. */
void fy_postcopy_dest_mark_received(FyPostcopyDest *d, const FyRamBlock *rb,
                                    uint64_t offset, uint64_t len);

/* Apply one POSTCOPY_RAM_DISCARD payload (ADVISED only): every range is
 * checked against its block first, then each is punched out and forgotten
 * as received. Nothing is applied when any part is invalid. */
int fy_postcopy_dest_discard(FyPostcopyDest *d, const uint8_t *payload,
                             size_t len, FyError **errp);

/* POSTCOPY_LISTEN. ADVISED -> LISTENING. */
int fy_postcopy_dest_listen(FyPostcopyDest *d, FyError **errp);

/* Place one host page of rb at offset (aligned to rb->page_size) from data
 * (page_size bytes, outside guest RAM). LISTENING or PAUSED. Returns 0 when
 * placed, 1 when the page was already there (left unchanged), -1 on error. */
int fy_postcopy_dest_place_page(FyPostcopyDest *d, const FyRamBlock *rb,
                                uint64_t offset, const void *data, FyError **errp);
int fy_postcopy_dest_place_zero_page(FyPostcopyDest *d, const FyRamBlock *rb,
                                     uint64_t offset, FyError **errp);

/* Map a vCPU thread (tid as gettid() returns it) to its index, for
 * blocktime. Any time, from any thread; tid 0 unregisters the index. */
int fy_postcopy_dest_register_vcpu(FyPostcopyDest *d, int index, pid_t tid,
                                   FyError **errp);

/* PAUSED on a broken return path; LISTENING again on resume (which also
 * re-sends every request still wanted, from the fault thread). Call
 * resume() after the new return path is up (and the REQ_PAGES encoder
 * reset). Both are no-ops in other states. */
void fy_postcopy_dest_pause(FyPostcopyDest *d);
int fy_postcopy_dest_resume(FyPostcopyDest *d, FyError **errp);

/* Join the fault thread, unregister the blocks. -> STOPPED. */
int fy_postcopy_dest_stop(FyPostcopyDest *d, FyError **errp);

FyPostcopyDestState fy_postcopy_dest_state(FyPostcopyDest *d);
bool fy_postcopy_dest_page_received(FyPostcopyDest *d, const FyRamBlock *rb,
                                    uint64_t offset);
/* Target pages not yet received (ignored blocks excluded); 0 = done. */
uint64_t fy_postcopy_dest_pages_remaining(FyPostcopyDest *d);
/* Why the last request failed (the pause reason), copied; NULL if none. */
FyError *fy_postcopy_dest_request_error(FyPostcopyDest *d);

typedef struct FyPostcopyDestStats {
    uint64_t faults;          /* fault messages read */
    uint64_t requests;        /* requests sent (incl. re-sent on resume) */
    uint64_t dup_faults;      /* faults on a page already requested */
    uint64_t received_faults; /* faults on a page already there: woken only */
    uint64_t placed;          /* host pages placed by UFFDIO_COPY */
    uint64_t placed_zero;     /* host pages placed as zero */
    uint64_t already_there;   /* placements that found the page (EEXIST) */
    uint64_t stray_faults;    /* faults outside every block, or that could
                                 not be resolved (never expected) */
} FyPostcopyDestStats;
void fy_postcopy_dest_get_stats(FyPostcopyDest *d, FyPostcopyDestStats *out);

/* Blocktime (QEMU's query-migrate names). A vCPU is blocked from the moment
 * the fault thread reads its fault until the page is placed. */
typedef struct FyPostcopyBlocktime {
    int vcpus;                         /* entries used in the arrays */
    /* postcopy-blocktime: time ALL vCPUs were blocked at once (ms). */
    uint32_t total_ms;
    uint64_t total_ns;
    /* postcopy-vcpu-blocktime: per vCPU, the sum of its waits (ms). Waits
     * still under way count up to now. */
    uint32_t vcpu_ms[FY_POSTCOPY_MAX_VCPUS];
    uint64_t vcpu_ns[FY_POSTCOPY_MAX_VCPUS];
    uint64_t vcpu_faults[FY_POSTCOPY_MAX_VCPUS];
    /* postcopy-vcpu-latency: per vCPU average wait (ns) */
    uint64_t vcpu_latency_ns[FY_POSTCOPY_MAX_VCPUS];
    /* postcopy-latency: average over every resolved fault (ns) */
    uint64_t latency_ns;
    /* postcopy-non-vcpu-latency: faults of threads that are not vCPUs (ns) */
    uint64_t non_vcpu_latency_ns;
    uint64_t non_vcpu_faults;
    uint64_t latency_dist[FY_POSTCOPY_LATENCY_BUCKETS];
    uint64_t resolved;                 /* faults resolved by a placement */
    uint64_t untracked;                /* faults not tracked (table full) */
} FyPostcopyBlocktime;
void fy_postcopy_dest_get_blocktime(FyPostcopyDest *d, FyPostcopyBlocktime *out);
/* {"postcopy-blocktime", "postcopy-vcpu-blocktime", "postcopy-latency",
 *  "postcopy-latency-dist", "postcopy-vcpu-latency",
 *  "postcopy-non-vcpu-latency"}: merge into query-migrate's answer. */
struct json_t *fy_postcopy_blocktime_json(const FyPostcopyBlocktime *bt);

/* Fault -> placed latency over the most recent faults (a bounded window). */
typedef struct FyPostcopyLatency {
    uint64_t count;      /* faults resolved since listen */
    uint64_t window;     /* samples the percentiles are computed from */
    uint64_t median_ns;
    uint64_t p99_ns;
    uint64_t max_ns;
    uint64_t mean_ns;
} FyPostcopyLatency;
void fy_postcopy_dest_get_latency(FyPostcopyDest *d, FyPostcopyLatency *out);

/* RECV_BITMAP reply for block idstr on the return path: the RP message
 * (type 5, u8 n + name) then the body, then a flush. The caller holds
 * whatever lock serialises return-path writers. */
int fy_postcopy_dest_send_recv_bitmap(FyPostcopyDest *d, FyStream *rp,
                                      const char *idstr, FyError **errp);
/* The body alone, malloc()ed, for block idstr. */
int fy_postcopy_dest_recv_bitmap(FyPostcopyDest *d, const char *idstr,
                                 uint8_t **body, size_t *len, FyError **errp);

/* ==== wire: return-path messages and command payloads ==== */

/* REQ_PAGES_ID names the block whenever it differs from the previous
 * request's; REQ_PAGES reuses it. One encoder per return path; reset it on
 * a new connection so the first request names its block. */
typedef struct FyPostcopyReqEncoder {
    bool have_last;
    char last[256];
} FyPostcopyReqEncoder;
void fy_postcopy_req_encoder_reset(FyPostcopyReqEncoder *e);
/* Encode into buf; returns the payload length (12 or 13 + n) and sets
 * *type, or -1 when idstr is longer than 255 bytes. */
int fy_postcopy_encode_req_pages(FyPostcopyReqEncoder *e, const char *idstr,
                                 uint64_t start, uint32_t len,
                                 uint8_t buf[FY_POSTCOPY_REQ_MAX], uint16_t *type);
/* Decode a REQ_PAGES(_ID) payload (hostile): exact lengths are checked.
 * idstr gets the name for REQ_PAGES_ID, "" for REQ_PAGES. */
int fy_postcopy_decode_req_pages(uint16_t type, const uint8_t *payload,
                                 size_t len, char idstr[256], uint64_t *start,
                                 uint32_t *rlen, FyError **errp);

/* `u8 n, name[n]` as in MIG_CMD_RECV_BITMAP and RP RECV_BITMAP; returns the
 * length (1 + n) or -1 if the name is too long. */
int fy_postcopy_encode_block_name(const char *idstr, uint8_t buf[256]);
int fy_postcopy_decode_block_name(const uint8_t *payload, size_t len,
                                  char idstr[256], FyError **errp);

/* Received bitmap body: be64 size, size bytes (bit i of the block is bit
 * i%8 of byte i/8: QEMU's little-endian longs), be64 ENDING; size is
 * ceil(nbits/8) rounded up to 8. */
size_t fy_postcopy_recv_bitmap_body_len(uint64_t nbits);
void fy_postcopy_recv_bitmap_encode(const unsigned long *map, uint64_t nbits,
                                    uint8_t *out);
/* Decode a whole body for a block of nbits target pages into map
 * (FY_BITMAP_LONGS(nbits) longs). Size, marker and length are checked. */
int fy_postcopy_recv_bitmap_decode(const uint8_t *body, size_t len, uint64_t nbits,
                                   unsigned long *map, FyError **errp);
/* Source side: read the body that follows an RP RECV_BITMAP for rb. */
int fy_postcopy_recv_bitmap_read(FyStream *rp, const FyRamBlock *rb,
                                 unsigned long *map, FyError **errp);

/* RP RESUME_ACK payload: be32 FY_POSTCOPY_RESUME_ACK_VALUE; check returns
 * 0 when the payload is exactly that. */
void fy_postcopy_encode_resume_ack(uint8_t buf[4]);
int fy_postcopy_check_resume_ack(const uint8_t *payload, size_t len, FyError **errp);

/* Source, recovery: the pages to send are those the destination lacks:
 * dirty = NOT received, over nbits (bits past nbits stay clear). Returns
 * the number of pages to send. */
uint64_t fy_postcopy_dirty_from_received(const unsigned long *received,
                                         unsigned long *dirty, uint64_t nbits);

/* POSTCOPY_ADVISE payload: be64 host page size summary (OR of the page
 * sizes of the blocks that migrate), be64 target page size. */
void fy_postcopy_advise_encode(const FyRamList *ram, bool ignore_shared,
                               uint8_t out[16]);
/* Destination check of an ADVISE payload: 1 = postcopy RAM advised (16
 * bytes, matching page sizes), 0 = len 0 (no RAM postcopy), -1 = error. */
int fy_postcopy_advise_check(const FyRamList *ram, bool ignore_shared,
                             const uint8_t *payload, size_t len, FyError **errp);

/* POSTCOPY_RAM_DISCARD payload: u8 version 0, u8 n, name[n], u8 0, then
 * count x (be64 start, be64 length), both in bytes. */
typedef struct FyPostcopyDiscard {
    char idstr[256];
    unsigned count;
    const uint8_t *ranges;  /* points into the parsed payload */
} FyPostcopyDiscard;
int fy_postcopy_discard_parse(const uint8_t *payload, size_t len,
                              FyPostcopyDiscard *out, FyError **errp);
void fy_postcopy_discard_range(const FyPostcopyDiscard *pd, unsigned i,
                               uint64_t *start, uint64_t *length);

/* ==== source ==== */

/* Emit one command payload (e.g. fy_savevm_command_send(f,
 * MIG_CMD_POSTCOPY_RAM_DISCARD, len, payload)). */
typedef int (*FyPostcopyEmitFn)(void *opaque, const uint8_t *payload,
                                uint16_t len, FyError **errp);

/* For a block with host pages larger than target pages: set every bit of
 * each host page that has any bit set (a partly dirty huge page is resent
 * whole). Returns the bits newly set. No-op for 4 KiB blocks. */
uint64_t fy_postcopy_chunk_hostpages(const FyRamBlock *rb, unsigned long *map,
                                     uint64_t nbits);
/* Turn the set bits of map (target pages of rb to discard: sent and dirtied
 * since, or never sent) into POSTCOPY_RAM_DISCARD payloads of at most
 * max_ranges ranges each (0: as many as the be16 length allows), calling
 * emit for each. Runs must be host-page aligned (chunk first). Returns the
 * number of payloads emitted, or -1. */
long fy_postcopy_discard_build(const FyRamBlock *rb, const unsigned long *map,
                               uint64_t nbits, unsigned max_ranges,
                               FyPostcopyEmitFn emit, void *opaque, FyError **errp);

/* Page requests from the destination, validated, in arrival order; the RAM
 * sender drains them ahead of its background scan. Thread-safe. */
typedef struct FyPostcopyReqQueue FyPostcopyReqQueue;
typedef struct FyPostcopyReq {
    FyRamBlock *rb;
    uint64_t offset;   /* bytes, target-page aligned */
    uint64_t len;      /* bytes, > 0, target-page multiple, within the block */
} FyPostcopyReq;

FyPostcopyReqQueue *fy_postcopy_req_queue_new(FyRamList *ram, size_t capacity);
void fy_postcopy_req_queue_free(FyPostcopyReqQueue *q);
/* idstr NULL: the block of the previous request (REQ_PAGES). Errors: an
 * unknown block, no previous block, a misaligned, empty or out-of-range
 * request, a full queue. */
int fy_postcopy_req_queue_push(FyPostcopyReqQueue *q, const char *idstr,
                               uint64_t start, uint64_t len, FyError **errp);
/* Decode an RP REQ_PAGES / REQ_PAGES_ID payload and push it. */
int fy_postcopy_req_queue_push_rp(FyPostcopyReqQueue *q, uint16_t type,
                                  const uint8_t *payload, size_t len,
                                  FyError **errp);
bool fy_postcopy_req_queue_pop(FyPostcopyReqQueue *q, FyPostcopyReq *out);
/* Lock-free peek for the sender's hot loop. */
bool fy_postcopy_req_queue_empty(FyPostcopyReqQueue *q);
size_t fy_postcopy_req_queue_len(FyPostcopyReqQueue *q);
/* Wait until a request is queued (true), or timeout_ms passes or the queue
 * is shut down (false). timeout_ms < 0: no timeout. */
bool fy_postcopy_req_queue_wait(FyPostcopyReqQueue *q, int timeout_ms);
/* Wake every waiter for good (until reset). */
void fy_postcopy_req_queue_shutdown(FyPostcopyReqQueue *q);
/* Drop every request, forget the previous block, clear shutdown
 * (recovery: the destination re-sends what it still wants). */
void fy_postcopy_req_queue_reset(FyPostcopyReqQueue *q);
uint64_t fy_postcopy_req_queue_total(FyPostcopyReqQueue *q); /* pushed ever */

/* ==== the "ram" section in postcopy (FyRamState, ram.h) ====
 *
 * Source: postcopy-ram on makes the RAM entry say has_postcopy, so the
 * switch to postcopy leaves it iterating; from fy_ram_postcopy_begin() its
 * PART sections carry requested pages first (unless postcopy-preempt sends
 * them on their own channel) and then the background pages, and its END
 * section (save_live_complete_postcopy) closes the stream's RAM.
 * Destination: from POSTCOPY_ADVISE the RAM loader reports every page it
 * loads as received; from POSTCOPY_LISTEN it places PAGE and ZERO records
 * atomically through the FyPostcopyDest instead of writing guest memory
 * (which is registered with userfaultfd by then), and refuses any other
 * kind of record. */

/* Source, for the next run (from fy_mig_apply_caps). */
void fy_ram_postcopy_enable(FyRamState *rs, bool on);
bool fy_ram_postcopy_enabled(FyRamState *rs);
/* The switch, VM stopped: the final dirty sync, then POSTCOPY_RAM_DISCARD
 * commands on f for every page still to send (the destination must not
 * keep an older copy of those). */
int fy_ram_postcopy_send_discards(FyRamState *rs, FyStream *f, FyError **errp);
/* Enter the postcopy phase. Requests come from q; with preempt another
 * thread serves them with fy_ram_postcopy_send_urgent(). bandwidth limits
 * the background pages only (bytes/s, 0 = none); requested pages always go
 * at once. */
int fy_ram_postcopy_begin(FyRamState *rs, FyPostcopyReqQueue *q, bool preempt,
                          uint64_t bandwidth, FyError **errp);
void fy_ram_postcopy_set_bandwidth(FyRamState *rs, uint64_t bandwidth);
/* Leave the postcopy phase (the run ended). */
void fy_ram_postcopy_end(FyRamState *rs);
/* Milliseconds until the background stream may send again (0: now). */
uint64_t fy_ram_postcopy_throttle_ms(FyRamState *rs);
/* Send the pages of one request on f, whatever their dirty bits say (the
 * destination is waiting for them). *last is the block the previous record
 * on f named (for CONTINUE); NULL at the start of a stream. Any thread. */
int fy_ram_postcopy_send_urgent(FyRamState *rs, FyStream *f,
                                const FyPostcopyReq *req,
                                const FyRamBlock **last, FyError **errp);
/* Recovery: the body of an RP RECV_BITMAP for block idstr follows on rp;
 * every page the destination lacks becomes a page to send. */
int fy_ram_postcopy_reload_bitmap(FyRamState *rs, FyStream *rp,
                                  const char *idstr, FyError **errp);
/* Target pages still to send in the background. */
uint64_t fy_ram_postcopy_pending_pages(FyRamState *rs);
typedef struct FyRamPostcopyStats {
    uint64_t bytes;         /* RAM bytes put since the switch (postcopy-bytes) */
    uint64_t urgent_pages;  /* target pages sent because they were requested */
    uint64_t requests;      /* requests served */
} FyRamPostcopyStats;
void fy_ram_postcopy_get_stats(FyRamState *rs, FyRamPostcopyStats *out);

/* Destination. attach(NULL) detaches (and stops placing). */
void fy_ram_postcopy_attach(FyRamState *rs, FyPostcopyDest *d);
void fy_ram_postcopy_set_placing(FyRamState *rs, bool on);

/* The postcopy-preempt channel (QEMU sends RAM records there, no framing):
 * load `be64 offset|flags [+ u8 n, idstr]` + page (PAGE) or fill byte
 * (ZERO) records and place each, until the stream ends. Returns 0 at a
 * clean end of stream, -1 on an error (a shut-down channel included). */
int fy_postcopy_dest_load_preempt(FyPostcopyDest *d, FyStream *f, FyError **errp);

/* ADVISED only: mark as received every page that holds data now (for a
 * shared memfd block, the file's data ranges; otherwise resident or
 * swapped pages). Before listen this is exactly what the migration wrote,
 * whichever path wrote it (main stream, multifd, XBZRLE). */
int fy_postcopy_dest_mark_populated(FyPostcopyDest *d, FyError **errp);
/* Blocktime without registered vCPU threads: the first n threads that
 * fault take vCPU slots 0..n-1 in the order they first fault (the slot
 * index is then not the vCPU index). 0 turns it off. */
void fy_postcopy_dest_set_auto_vcpus(FyPostcopyDest *d, int n);

#endif
