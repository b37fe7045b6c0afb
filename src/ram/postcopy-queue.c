/*
 * postcopy-queue.c: the source's queue of page requests.
 *
 * The return-path reader pushes what the destination asks for; the RAM
 * sender pops ahead of its background scan (or a postcopy-preempt sender
 * waits on it). A ring of fixed capacity under one mutex; `count` is also
 * kept atomically so the sender's hot loop can peek without the lock.
 *
 * Every request is checked against the RAM blocks before it is queued,
 * because it comes from the network: the block must exist, start and
 * length must be target-page multiples, the length non-zero and the range
 * inside the block. REQ_PAGES (no name) means "the block of the previous
 * request", as in QEMU's ram_save_queue_pages; with no previous request
 * it is an error. A full queue is an error too: an honest destination has
 * few requests in flight (one per blocked thread), so thousands unserved
 * mean a destination gone wrong.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ram/postcopy-int.h"

struct FyPostcopyReqQueue {
    FyRamList *ram;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    FyPostcopyReq *ring;
    size_t cap, head, count;   /* count is also read atomically */
    FyRamBlock *last;          /* the previous request's block */
    bool shut;
    uint64_t total;
};

FyPostcopyReqQueue *fy_postcopy_req_queue_new(FyRamList *ram, size_t capacity)
{
    FyPostcopyReqQueue *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->cap = capacity ? capacity : 1;
    q->ring = calloc(q->cap, sizeof(*q->ring));
    if (!q->ring) {
        free(q);
        return NULL;
    }
    q->ram = ram;
    pthread_mutex_init(&q->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    return q;
}

void fy_postcopy_req_queue_free(FyPostcopyReqQueue *q)
{
    if (!q)
        return;
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    free(q->ring);
    free(q);
}

static int check_request(const FyRamBlock *rb, uint64_t start, uint64_t len,
                         FyError **errp)
{
    const char *why = NULL;
    if (len == 0)
        why = "is empty";
    else if (start % FY_TARGET_PAGE_SIZE || len % FY_TARGET_PAGE_SIZE)
        why = "is not aligned to the target page size";
    else if (start >= rb->used_length || len > rb->used_length - start)
        why = "runs past the end of the block";
    if (!why)
        return 0;
    fy_error_setg(errp, "page request for RAM block '%s' start 0x%" PRIx64
                  " length 0x%" PRIx64 " %s (0x%" PRIx64 " bytes)", rb->idstr,
                  start, len, why, rb->used_length);
    return -1;
}

int fy_postcopy_req_queue_push(FyPostcopyReqQueue *q, const char *idstr,
                               uint64_t start, uint64_t len, FyError **errp)
{
    pthread_mutex_lock(&q->lock);
    FyRamBlock *rb = idstr ? fy_ram_list_find(q->ram, idstr) : q->last;
    int r = -1;
    if (!rb && idstr)
        fy_error_setg(errp, "page request for unknown RAM block '%s'", idstr);
    else if (!rb)
        fy_error_setg(errp, "page request (REQ_PAGES) without a RAM block: no "
                      "earlier request named one");
    else if (check_request(rb, start, len, errp) == 0) {
        if (q->count == q->cap) {
            fy_error_setg(errp, "page request for RAM block '%s' start 0x%" PRIx64
                          ": the queue is full (%zu requests not yet served)",
                          rb->idstr, start, q->cap);
        } else {
            q->ring[(q->head + q->count) % q->cap] =
                (FyPostcopyReq){ .rb = rb, .offset = start, .len = len };
            __atomic_store_n(&q->count, q->count + 1, __ATOMIC_RELEASE);
            q->total++;
            pthread_cond_broadcast(&q->cond);
            r = 0;
        }
        q->last = rb;
    }
    pthread_mutex_unlock(&q->lock);
    return r;
}

int fy_postcopy_req_queue_push_rp(FyPostcopyReqQueue *q, uint16_t type,
                                  const uint8_t *payload, size_t len,
                                  FyError **errp)
{
    char idstr[256];
    uint64_t start;
    uint32_t rlen;
    if (fy_postcopy_decode_req_pages(type, payload, len, idstr, &start, &rlen,
                                     errp) < 0)
        return -1;
    return fy_postcopy_req_queue_push(q, idstr[0] ? idstr : NULL, start, rlen,
                                      errp);
}

bool fy_postcopy_req_queue_pop(FyPostcopyReqQueue *q, FyPostcopyReq *out)
{
    if (fy_postcopy_req_queue_empty(q))
        return false;
    pthread_mutex_lock(&q->lock);
    bool got = q->count > 0;
    if (got) {
        *out = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        __atomic_store_n(&q->count, q->count - 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&q->lock);
    return got;
}

bool fy_postcopy_req_queue_empty(FyPostcopyReqQueue *q)
{
    return __atomic_load_n(&q->count, __ATOMIC_ACQUIRE) == 0;
}

size_t fy_postcopy_req_queue_len(FyPostcopyReqQueue *q)
{
    return __atomic_load_n(&q->count, __ATOMIC_ACQUIRE);
}

bool fy_postcopy_req_queue_wait(FyPostcopyReqQueue *q, int timeout_ms)
{
    struct timespec until;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&q->lock);
    while (!q->count && !q->shut) {
        if (timeout_ms < 0)
            pthread_cond_wait(&q->cond, &q->lock);
        else if (pthread_cond_timedwait(&q->cond, &q->lock, &until) == ETIMEDOUT)
            break;
    }
    bool got = q->count > 0 && !q->shut;
    pthread_mutex_unlock(&q->lock);
    return got;
}

void fy_postcopy_req_queue_shutdown(FyPostcopyReqQueue *q)
{
    pthread_mutex_lock(&q->lock);
    q->shut = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

void fy_postcopy_req_queue_reset(FyPostcopyReqQueue *q)
{
    pthread_mutex_lock(&q->lock);
    q->head = 0;
    __atomic_store_n(&q->count, 0, __ATOMIC_RELEASE);
    q->last = NULL;
    q->shut = false;
    pthread_mutex_unlock(&q->lock);
}

uint64_t fy_postcopy_req_queue_total(FyPostcopyReqQueue *q)
{
    pthread_mutex_lock(&q->lock);
    uint64_t t = q->total;
    pthread_mutex_unlock(&q->lock);
    return t;
}
