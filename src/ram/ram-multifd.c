/*
 * ram-multifd.c: the RAM section with multifd (QEMU's multifd_ram_*).
 *
 * Source. With a FyMultifdSend attached, the RAM sender queues pages to the
 * multifd channels instead of putting PAGE records; the main stream keeps
 * only the section framing, ZERO records (zero-page-detection legacy) and
 * RAM_SAVE_FLAG_MULTIFD_FLUSH markers:
 *   none     every page is queued as data
 *   legacy   the sender checks each page; zero ones go as ZERO records on
 *            the main stream, the others to multifd
 *   multifd  every page is queued; the send threads check them, and pages
 *            known zero (never populated since the last sync) are queued
 *            as zero pages, so they are never read (a memfd hole stays one)
 * Ordering. The destination applies multifd pages whenever they arrive,
 * and main-stream records as the main stream goes, so two versions of a
 * page must never be in flight at once. A page is queued at most once per
 * dirty-bitmap round (bits are set only by a dirty sync and cleared when
 * the page is sent), so it is enough that, after a dirty sync that follows
 * queued pages, the next record of any kind waits for a multifd sync and
 * is preceded by MULTIFD_FLUSH: the destination's loader stops at the
 * flush until every channel's SYNC (everything queued before) is in place.
 * The completion ends with one more sync + flush, so the device state is
 * loaded after the last page landed.
 *
 * Destination. MULTIFD_FLUSH waits for the receive threads' SYNC. The
 * threads keep the loader's zero_map right (a page they fill is no longer
 * known zero; a zero page they apply is), under `lock` held for reading;
 * load setup and cleanup take it for writing, so the threads never see a
 * map being built or freed. The threads read no packet before load setup
 * enabled them (the receive object starts disabled).
 */
#include <pthread.h>
#include <stdlib.h>

#include "ram/bitmap.h"
#include "ram/ram-multifd.h"

struct RamMultifd {
    /* save: the migration thread's */
    FyMultifdSend *send;
    FyMultifdZeroDetect zd;
    bool queued;    /* a page was sent since the last multifd sync */
    bool sync_due;  /* ... and a dirty sync happened since */
    /* load */
    FyMultifdRecv *recv;
    pthread_rwlock_t lock;
    bool hooks_on;  /* (lock) the blocks' zero_maps may be used */
};

static RamMultifd *mfd_get(FyRamState *rs)
{
    if (!rs->mfd) {
        rs->mfd = calloc(1, sizeof(*rs->mfd));
        if (rs->mfd)
            pthread_rwlock_init(&rs->mfd->lock, NULL);
    }
    return rs->mfd;
}

int fy_ram_set_multifd_send(FyRamState *rs, FyMultifdSend *s,
                            FyMultifdZeroDetect zd)
{
    RamMultifd *mf = mfd_get(rs);
    if (!mf)
        return -1;
    mf->send = s;
    mf->zd = zd;
    mf->queued = mf->sync_due = false;
    return 0;
}

int fy_ram_set_multifd_recv(FyRamState *rs, FyMultifdRecv *r)
{
    RamMultifd *mf = mfd_get(rs);
    if (!mf)
        return -1;
    mf->recv = r;
    return 0;
}

void fy_ram_mfd_free(FyRamState *rs)
{
    if (!rs->mfd)
        return;
    pthread_rwlock_destroy(&rs->mfd->lock);
    free(rs->mfd);
    rs->mfd = NULL;
}

/* ---- save ---- */

static void fail_stream(FyStream *f, FyError *err)
{
    if (!err)
        fy_error_setg(&err, "multifd failed");
    fy_stream_set_error(f, err);
}

/* Wait until everything queued is on its way, then tell the destination. */
static void sync_and_flush(RamMultifd *mf, FyStream *f)
{
    FyError *err = NULL;
    if (fy_multifd_send_sync(mf->send, &err) < 0) {
        fail_stream(f, err);
        return;
    }
    /* Out now: the destination's channels wait at their SYNC until its
     * loader reads this, and the next round's pages wait for them. */
    fy_put_be64(f, RAM_SAVE_FLAG_MULTIFD_FLUSH);
    fy_stream_flush(f);
    mf->queued = mf->sync_due = false;
}

bool fy_ram_mfd_save_page(FyRamState *rs, FyStream *f, RamBlockMig *b,
                          uint64_t page)
{
    RamMultifd *mf = rs->mfd;
    if (!mf || !mf->send)
        return false;
    if (fy_stream_error(f))
        return true;
    if (mf->sync_due) {
        sync_and_flush(mf, f);
        if (fy_stream_error(f))
            return true;
    }
    /* Also a ZERO record on the main stream must not overtake or be
     * overtaken by another version of its page. */
    mf->queued = true;
    uint64_t offset = page << FY_TARGET_PAGE_BITS;
    bool known_zero = fy_test_bit(b->zero_map, page);
    FyError *err = NULL;
    int r;
    switch (mf->zd) {
    case FY_MULTIFD_ZERO_LEGACY:
        if (known_zero ||
            fy_buffer_is_zero(b->rb->host + offset, FY_TARGET_PAGE_SIZE))
            return false; /* a ZERO record, and no multifd page to order */
        r = fy_multifd_queue_page(mf->send, b->rb, offset, &err);
        break;
    case FY_MULTIFD_ZERO_MULTIFD:
        r = known_zero ? fy_multifd_queue_zero_page(mf->send, b->rb, offset,
                                                    &err)
                       : fy_multifd_queue_page(mf->send, b->rb, offset, &err);
        break;
    default:
        r = fy_multifd_queue_page(mf->send, b->rb, offset, &err);
        break;
    }
    if (r < 0) {
        fail_stream(f, err);
        return true;
    }
    if (known_zero && mf->zd == FY_MULTIFD_ZERO_MULTIFD) {
        stat_add(&rs->st_duplicate, 1);
    } else {
        stat_add(&rs->st_normal, 1);
        fy_stream_rate_limit_account(f, FY_TARGET_PAGE_SIZE);
    }
    return true;
}

void fy_ram_mfd_dirty_synced(FyRamState *rs)
{
    RamMultifd *mf = rs->mfd;
    if (mf && mf->send && mf->queued)
        mf->sync_due = true;
}

void fy_ram_mfd_save_complete(FyRamState *rs, FyStream *f)
{
    RamMultifd *mf = rs->mfd;
    if (mf && mf->send && !fy_stream_error(f))
        sync_and_flush(mf, f);
}

/* ---- load ---- */

int fy_ram_mfd_load_flush(FyRamState *rs, FyError **errp)
{
    RamMultifd *mf = rs->mfd;
    if (!mf || !mf->recv)
        return 0; /* nothing to synchronise without multifd */
    if (fy_multifd_recv_sync(mf->recv, errp) < 0) {
        fy_error_prepend(errp, "MULTIFD_FLUSH: ");
        return -1;
    }
    return 0;
}

void fy_ram_mfd_load_setup(FyRamState *rs)
{
    RamMultifd *mf = rs->mfd;
    if (!mf || !mf->recv)
        return;
    pthread_rwlock_wrlock(&mf->lock);
    mf->hooks_on = true;
    pthread_rwlock_unlock(&mf->lock);
    fy_multifd_recv_enable(mf->recv);
}

void fy_ram_mfd_load_cleanup(FyRamState *rs)
{
    RamMultifd *mf = rs->mfd;
    if (!mf)
        return;
    pthread_rwlock_wrlock(&mf->lock);
    mf->hooks_on = false;
    pthread_rwlock_unlock(&mf->lock);
}

static RamBlockMig *find_mig_block(FyRamState *rs, const FyRamBlock *rb)
{
    for (int i = 0; i < rs->nblocks; i++) {
        if (rs->blocks[i].rb == rb)
            return rs->blocks[i].zero_map ? &rs->blocks[i] : NULL;
    }
    return NULL;
}

bool fy_ram_multifd_page_known_zero(FyRamState *rs, FyRamBlock *rb,
                                    uint64_t offset)
{
    RamMultifd *mf = rs->mfd;
    bool zero = false;
    if (!mf)
        return false;
    pthread_rwlock_rdlock(&mf->lock);
    RamBlockMig *b = mf->hooks_on ? find_mig_block(rs, rb) : NULL;
    if (b)
        zero = ram_zero_test(b->zero_map, offset >> FY_TARGET_PAGE_BITS);
    pthread_rwlock_unlock(&mf->lock);
    return zero;
}

void fy_ram_multifd_pages_done(FyRamState *rs, FyRamBlock *rb,
                               const uint64_t *normal, uint32_t n_normal,
                               const uint64_t *zero, uint32_t n_zero)
{
    RamMultifd *mf = rs->mfd;
    if (!mf)
        return;
    pthread_rwlock_rdlock(&mf->lock);
    RamBlockMig *b = mf->hooks_on ? find_mig_block(rs, rb) : NULL;
    if (b) {
        for (uint32_t i = 0; i < n_normal; i++)
            ram_zero_clear(b->zero_map, normal[i] >> FY_TARGET_PAGE_BITS);
        for (uint32_t i = 0; i < n_zero; i++)
            ram_zero_set(b->zero_map, zero[i] >> FY_TARGET_PAGE_BITS);
    }
    pthread_rwlock_unlock(&mf->lock);
}
