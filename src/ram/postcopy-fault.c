/*
 * postcopy-fault.c: the destination's fault thread.
 *
 * It sleeps in poll() on the userfaultfd and an eventfd. Each fault
 * message names an address (and, with THREAD_ID, the faulting thread):
 *
 *   page received already  -> UFFDIO_ZEROPAGE: the page is a hole known to
 *                             be zero, or a placement just landed (EEXIST,
 *                             the range is woken); no request
 *   page wanted already    -> nothing: a request is in flight (or will be
 *                             re-sent by resume), the thread just waits
 *   otherwise              -> mark wanted, request_fn(block, host page)
 *
 * While paused, faults are recorded as wanted but no request is sent; the
 * faulting threads stay blocked in the kernel. The eventfd carries "quit"
 * (stop) and "re-send" (resume): everything wanted and not received is
 * requested again, because requests in flight when the connection broke
 * are lost.
 *
 * request_fn is called from this thread only, so the return path's
 * REQ_PAGES encoder needs no lock of its own against other requests.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <unistd.h>

#include "ram/bitmap.h"
#include "ram/postcopy-int.h"

#define FAULT_BATCH 64

static PcBlock *block_of_addr(FyPostcopyDest *d, uint64_t addr)
{
    for (int i = 0; i < d->nblocks; i++) {
        PcBlock *b = &d->blocks[i];
        uint64_t start = (uintptr_t)b->rb->host;
        if (b->registered && addr >= start && addr - start < b->rb->used_length)
            return b;
    }
    return NULL;
}

/* Send one request unless paused; a failure pauses. */
static bool send_request(FyPostcopyDest *d, PcBlock *b, uint64_t off)
{
    if (fy_pc_state(d) != FY_POSTCOPY_DEST_LISTENING)
        return false;
    /* Counted first: the page may be placed (and seen) before we return. */
    pc_stat_inc(&d->st_requests);
    if (d->request_fn(d->opaque, b->rb->idstr, off, b->rb->page_size) == 0)
        return true;
    __atomic_fetch_sub(&d->st_requests, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&d->lock);
    if (d->state == FY_POSTCOPY_DEST_LISTENING)
        __atomic_store_n(&d->state, FY_POSTCOPY_DEST_PAUSED, __ATOMIC_RELEASE);
    if (!d->req_err)
        fy_error_setg(&d->req_err, "postcopy-ram: the request for RAM block "
                      "'%s' offset 0x%" PRIx64 " could not be sent; paused",
                      b->rb->idstr, off);
    pthread_mutex_unlock(&d->lock);
    return false;
}

/* The page is there, or known zero: make sure the faulting thread runs. */
static void resolve_present(FyPostcopyDest *d, PcBlock *b, uint64_t off)
{
    uint8_t *hp = b->rb->host + off;
    /* Counted first: the woken thread may look at the statistics. */
    pc_stat_inc(&d->st_recv_faults);
    int r = b->hp_pages > 1
            ? fy_uffd_copy(d->uffd, hp, d->zero_buf, b->rb->page_size)
            : fy_uffd_zeropage(d->uffd, hp, b->rb->page_size);
    if (r < 0)
        pc_stat_inc(&d->st_stray);
}

static void handle_fault(FyPostcopyDest *d, uint64_t addr, pid_t tid)
{
    pc_stat_inc(&d->st_faults);
    PcBlock *b = block_of_addr(d, addr);
    if (!b) {
        pc_stat_inc(&d->st_stray);
        return;
    }
    uint64_t off = (addr - (uintptr_t)b->rb->host) & ~(b->rb->page_size - 1);
    uint64_t page = off >> FY_TARGET_PAGE_BITS;
    int idx = (int)(b - d->blocks);

    if (pc_test_bit(b->recv, page)) {
        resolve_present(d, b, off);
        return;
    }
    fy_pc_track_fault(&d->track, tid, idx, page, fy_pc_now_ns());
    bool was_wanted = fy_pc_bits_set(b->wanted, page, 1) == 0;
    if (pc_test_bit(b->recv, page)) {
        /* Placed meanwhile; the placer may not have seen our waiter. */
        fy_pc_track_placed(&d->track, idx, page, fy_pc_now_ns());
        return;
    }
    if (was_wanted) {
        pc_stat_inc(&d->st_dup);
        return;
    }
    send_request(d, b, off);
}

static void resend_wanted(FyPostcopyDest *d)
{
    for (int i = 0; i < d->nblocks; i++) {
        PcBlock *b = &d->blocks[i];
        if (!b->registered)
            continue;
        for (uint64_t p = fy_find_next_bit(b->wanted, b->pages, 0); p < b->pages;
             p = fy_find_next_bit(b->wanted, b->pages, p + 1)) {
            if (pc_test_bit(b->recv, p))
                continue;
            if (!send_request(d, b, p << FY_TARGET_PAGE_BITS))
                return;  /* paused again: the next resume starts over */
        }
    }
}

/* Returns false when the thread must exit. */
static bool handle_kick(FyPostcopyDest *d)
{
    uint64_t v;
    if (read(d->evfd, &v, sizeof(v)) < 0) {
        /* EAGAIN: a spurious wakeup; the flags below decide */
    }
    pthread_mutex_lock(&d->lock);
    bool quit = d->quit, resend = d->resend;
    d->resend = false;
    pthread_mutex_unlock(&d->lock);
    if (quit)
        return false;
    if (resend)
        resend_wanted(d);
    return true;
}

/* Returns false when the userfaultfd failed. */
static bool read_faults(FyPostcopyDest *d)
{
    struct uffd_msg msgs[FAULT_BATCH];
    ssize_t n = read(d->uffd, msgs, sizeof(msgs));
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
        if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
            continue;
        pid_t tid = (d->features & UFFD_FEATURE_THREAD_ID)
                    ? (pid_t)msgs[i].arg.pagefault.feat.ptid : 0;
        handle_fault(d, msgs[i].arg.pagefault.address, tid);
    }
    return true;
}

void *fy_pc_fault_thread(void *opaque)
{
    FyPostcopyDest *d = opaque;
    pthread_setname_np(pthread_self(), "fy-pc-fault");
    for (;;) {
        struct pollfd p[2] = {
            { .fd = d->uffd, .events = POLLIN },
            { .fd = d->evfd, .events = POLLIN },
        };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents && !handle_kick(d))
            break;
        if ((p[0].revents & POLLIN) && !read_faults(d))
            break;
        if (p[0].revents & (POLLERR | POLLNVAL))
            break;
    }
    pthread_mutex_lock(&d->lock);
    if (!d->quit && !d->req_err)
        fy_error_setg_errno(&d->req_err, errno, "postcopy-ram: the fault thread "
                            "stopped on a userfaultfd error");
    pthread_mutex_unlock(&d->lock);
    return NULL;
}
