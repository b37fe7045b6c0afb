/*
 * recv.c: the destination side, one receive thread per channel.
 *
 * Each thread reads a packet header (FY_MULTIFD_PACKET_LEN bytes), checks
 * every field against this side's RAM list before using it, then puts the
 * pages in place: nocomp reads them with one readv straight into guest
 * memory; zlib/zstd read the chunk into the channel's buffer and inflate
 * into guest memory; zero pages are written only when not zero already.
 *
 * Per channel, under r->lock:
 *   connected  a handshake named this channel and its thread runs
 *   ended      the source closed it at a packet boundary
 *   sync_seen / sync_released  SYNC packets received / let go by
 *              fy_multifd_recv_sync(). seen - released is 0 or 1: after a
 *              SYNC the thread waits until the main loader releases it, so
 *              pages of the next round never land before the main stream
 *              reached its MULTIFD_FLUSH.
 *
 *   thread:  [ header -> checks -> pages -> (SYNC: wait for release) ]* -> EOF
 *
 * Failure: the first error is kept, every channel is shut down (a thread
 * blocked in a read returns) and the sync waiter wakes; errors that come
 * from our own shutdown in free() are dropped. Messages name the channel,
 * the packet's place on it and its packet_num, and the field.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multifd/multifd-int.h"

typedef struct RecvChannel {
    FyMultifdRecv *r;
    int id;
    FyChannel *c;
    pthread_t thread;
    bool started;
    pthread_cond_t wake;

    /* under r->lock */
    bool connected;
    bool ended;
    uint64_t sync_seen, sync_released;

    /* the thread's own */
    uint64_t seq; /* packets read on this channel, from 1 */
    uint8_t wire[FY_MULTIFD_PACKET_LEN];
    FyMultifdPacket pkt;
    struct iovec iov[MFD_PAGES];
    uint8_t *pages[MFD_PAGES];
    MfdCodec codec;
} RecvChannel;

struct FyMultifdRecv {
    FyMultifdRecvConfig cfg;
    FyMultifdCheck chk;
    pthread_mutex_t lock;
    pthread_cond_t main; /* a SYNC arrived, a channel ended or failed */
    FyError *err;
    bool failed;
    bool quit;
    bool enabled;        /* threads may read packets (start_disabled) */
    FyMultifdStats st;   /* atomic counters */
    int nch;
    RecvChannel *ch;
};

void fy_multifd_recv_config_init(FyMultifdRecvConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->channels = 2;
    cfg->compression = FY_MULTIFD_COMPRESSION_NONE;
}

/* ---- failure ---- */

static void fail_locked(FyMultifdRecv *r, FyError *err)
{
    if (r->quit || r->failed) {
        fy_error_free(err); /* ours is the first, or we shut them down */
        return;
    }
    r->err = err;
    r->failed = true;
    for (int i = 0; i < r->nch; i++) {
        if (r->ch[i].connected)
            fy_channel_shutdown(r->ch[i].c, FY_SHUTDOWN_BOTH, NULL);
        pthread_cond_signal(&r->ch[i].wake);
    }
    pthread_cond_broadcast(&r->main);
    if (r->cfg.hooks.failed)
        r->cfg.hooks.failed(r->cfg.hooks.opaque);
}

static void fail(FyMultifdRecv *r, FyError *err)
{
    pthread_mutex_lock(&r->lock);
    fail_locked(r, err);
    pthread_mutex_unlock(&r->lock);
}

static int failed_locked(FyMultifdRecv *r, FyError **errp)
{
    if (!r->failed)
        return 0;
    if (errp && !*errp)
        *errp = fy_error_copy(r->err);
    return -1;
}

/* ---- one packet ---- */

static int read_raw_pages(RecvChannel *ch, FyRamBlock *rb, FyError **errp)
{
    const FyMultifdPacket *p = &ch->pkt;
    int cnt = mfd_page_iov(ch->iov, rb->host, p->offset, p->normal_pages);
    int rc = mfd_readv_all(ch->c, ch->iov, cnt, errp);
    if (rc == 1)
        fy_error_setg(errp, "%s: end of stream before the %u pages",
                      ch->c->name, p->normal_pages);
    if (rc)
        fy_error_prepend(errp, "page data: ");
    return rc ? -1 : 0;
}

static int read_compressed_pages(RecvChannel *ch, FyRamBlock *rb,
                                 FyError **errp)
{
    const FyMultifdPacket *p = &ch->pkt;
    /* packet_check bounded next_packet_size by FY_MULTIFD_COMPRESSED_MAX,
     * the size of codec.buf. */
    int rc = fy_channel_read_all(ch->c, ch->codec.buf, p->next_packet_size, errp);
    if (rc == 1)
        fy_error_setg(errp, "%s: end of stream before the %u compressed bytes",
                      ch->c->name, p->next_packet_size);
    if (rc) {
        fy_error_prepend(errp, "compressed data: ");
        return -1;
    }
    for (uint32_t i = 0; i < p->normal_pages; i++)
        ch->pages[i] = rb->host + p->offset[i];
    return ch->codec.ops->decompress(&ch->codec, p->next_packet_size, ch->pages,
                                     p->normal_pages, errp);
}

/* Zero pages: write only pages that are not zero already, so a page the
 * destination never touched is not faulted in for nothing. */
static void apply_zero_pages(RecvChannel *ch, FyRamBlock *rb)
{
    const FyMultifdPacket *p = &ch->pkt;
    const FyMultifdRecvHooks *h = &ch->r->cfg.hooks;
    uint64_t skipped = 0;

    for (uint32_t i = p->normal_pages; i < p->normal_pages + p->zero_pages; i++) {
        uint64_t off = p->offset[i];
        uint8_t *page = rb->host + off;
        if ((h->page_known_zero && h->page_known_zero(h->opaque, rb, off)) ||
            fy_multifd_buffer_is_zero(page, MFD_PAGE))
            skipped++;
        else
            memset(page, 0, MFD_PAGE);
    }
    mfd_stat_add(&ch->r->st.zero_skipped, skipped);
}

/* 0: a packet was applied; 1: clean end of the channel; -1: error. */
static int recv_packet(RecvChannel *ch, FyError **errp)
{
    FyMultifdRecv *r = ch->r;
    FyMultifdPacket *p = &ch->pkt;
    FyRamBlock *rb;

    ch->seq++;
    int rc = fy_channel_read_all(ch->c, ch->wire, sizeof(ch->wire), errp);
    if (rc == 1)
        return 1;
    if (rc < 0) {
        fy_error_prepend(errp, "multifd channel %d: packet %" PRIu64 ": "
                         "header: ", ch->id, ch->seq);
        return -1;
    }
    fy_multifd_packet_decode(ch->wire, p);
    if (fy_multifd_packet_check(p, &r->chk, &rb, errp) < 0)
        goto bad;
    if (p->normal_pages) {
        rc = ch->codec.ops ? read_compressed_pages(ch, rb, errp)
                           : read_raw_pages(ch, rb, errp);
        if (rc < 0)
            goto bad;
    }
    if (p->zero_pages)
        apply_zero_pages(ch, rb);
    if (rb && r->cfg.hooks.pages_done)
        r->cfg.hooks.pages_done(r->cfg.hooks.opaque, rb, p->offset,
                                p->normal_pages, p->offset + p->normal_pages,
                                p->zero_pages);
    mfd_stat_add(&r->st.bytes, sizeof(ch->wire) +
                 (p->normal_pages ? p->next_packet_size : 0));
    mfd_stat_add(&r->st.packets, 1);
    mfd_stat_add(&r->st.normal_pages, p->normal_pages);
    mfd_stat_add(&r->st.zero_pages, p->zero_pages);
    return 0;

bad:
    fy_error_prepend(errp, "multifd channel %d: packet %" PRIu64 " (packet_num "
                     "%" PRIu64 "): ", ch->id, ch->seq, p->packet_num);
    return -1;
}

/* After a SYNC: report it, then wait for fy_multifd_recv_sync(). */
static bool wait_released(RecvChannel *ch)
{
    FyMultifdRecv *r = ch->r;
    pthread_mutex_lock(&r->lock);
    ch->sync_seen++;
    pthread_cond_broadcast(&r->main);
    while (ch->sync_released < ch->sync_seen && !r->failed && !r->quit)
        pthread_cond_wait(&ch->wake, &r->lock);
    bool go_on = !r->failed && !r->quit;
    pthread_mutex_unlock(&r->lock);
    return go_on;
}

/* start_disabled: wait for fy_multifd_recv_enable(). */
static bool wait_enabled(FyMultifdRecv *r, RecvChannel *ch)
{
    pthread_mutex_lock(&r->lock);
    while (!r->enabled && !r->failed && !r->quit)
        pthread_cond_wait(&ch->wake, &r->lock);
    bool go_on = !r->failed && !r->quit;
    pthread_mutex_unlock(&r->lock);
    return go_on;
}

static void *recv_thread(void *opaque)
{
    RecvChannel *ch = opaque;
    FyMultifdRecv *r = ch->r;

    if (!wait_enabled(r, ch))
        return NULL;
    for (;;) {
        FyError *err = NULL;
        int rc = recv_packet(ch, &err);
        if (rc < 0) {
            fail(r, err);
            break;
        }
        if (rc == 1) {
            pthread_mutex_lock(&r->lock);
            ch->ended = true;
            pthread_cond_broadcast(&r->main);
            pthread_mutex_unlock(&r->lock);
            break;
        }
        if ((ch->pkt.flags & FY_MULTIFD_FLAG_SYNC) && !wait_released(ch))
            break;
    }
    return NULL;
}

/* ---- setup and teardown ---- */

FyMultifdRecv *fy_multifd_recv_new(const FyMultifdRecvConfig *cfg,
                                   FyError **errp)
{
    if (cfg->channels < 1 || cfg->channels > FY_MULTIFD_CHANNELS_MAX) {
        fy_error_setg(errp, "multifd-channels %d is not in 1..%d",
                      cfg->channels, FY_MULTIFD_CHANNELS_MAX);
        return NULL;
    }
    if (!fy_multifd_compression_name(cfg->compression)) {
        fy_error_setg(errp, "multifd-compression %d is not supported",
                      (int)cfg->compression);
        return NULL;
    }
    if (!cfg->ram) {
        fy_error_setg(errp, "multifd: no RAM list to receive into");
        return NULL;
    }
    FyMultifdRecv *r = calloc(1, sizeof(*r));
    RecvChannel *ch = calloc((size_t)cfg->channels, sizeof(*ch));
    if (!r || !ch) {
        free(r);
        free(ch);
        fy_error_setg(errp, "multifd: out of memory");
        return NULL;
    }
    r->cfg = *cfg;
    r->enabled = !cfg->start_disabled;
    r->chk.compression = cfg->compression;
    r->chk.ram = cfg->ram;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->main, NULL);
    r->ch = ch;
    r->nch = cfg->channels;
    for (int i = 0; i < r->nch; i++) {
        ch[i].r = r;
        ch[i].id = i;
        pthread_cond_init(&ch[i].wake, NULL);
    }
    for (int i = 0; i < r->nch; i++) {
        if (mfd_codec_init(&ch[i].codec, cfg->compression, false, 0, errp) < 0) {
            fy_error_prepend(errp, "multifd channel %d: ", i);
            fy_multifd_recv_free(r);
            return NULL;
        }
    }
    return r;
}

void fy_multifd_recv_free(FyMultifdRecv *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->quit = true;
    for (int i = 0; i < r->nch; i++) {
        if (r->ch[i].connected)
            fy_channel_shutdown(r->ch[i].c, FY_SHUTDOWN_BOTH, NULL);
        pthread_cond_signal(&r->ch[i].wake);
    }
    pthread_cond_broadcast(&r->main);
    pthread_mutex_unlock(&r->lock);
    for (int i = 0; i < r->nch; i++) {
        RecvChannel *ch = &r->ch[i];
        if (ch->started)
            pthread_join(ch->thread, NULL);
        if (ch->connected)
            fy_channel_close(ch->c, NULL);
        mfd_codec_fini(&ch->codec);
        pthread_cond_destroy(&ch->wake);
    }
    free(r->ch);
    fy_error_free(r->err);
    pthread_cond_destroy(&r->main);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

int fy_multifd_recv_add_channel(FyMultifdRecv *r, FyChannel *c, int id,
                                FyError **errp)
{
    if (id < 0 || id >= r->nch) {
        fy_error_setg(errp, "%s: multifd channel id %d is not in 0..%d",
                      c->name, id, r->nch - 1);
        return -1;
    }
    RecvChannel *ch = &r->ch[id];
    pthread_mutex_lock(&r->lock);
    if (failed_locked(r, errp) < 0 || r->quit) {
        if (errp && !*errp)
            fy_error_setg(errp, "multifd: receiving is shutting down");
        pthread_mutex_unlock(&r->lock);
        return -1;
    }
    if (ch->connected) {
        fy_error_setg(errp, "%s: multifd channel %d is already connected (from "
                      "%s)", c->name, id, ch->c->name);
        pthread_mutex_unlock(&r->lock);
        return -1;
    }
    ch->c = c;
    int e = pthread_create(&ch->thread, NULL, recv_thread, ch);
    if (e) {
        ch->c = NULL;
        pthread_mutex_unlock(&r->lock);
        fy_error_setg_errno(errp, e, "multifd channel %d: starting its thread",
                            id);
        return -1;
    }
    ch->started = true;
    ch->connected = true;
    char name[16];
    snprintf(name, sizeof(name), "mfd-recv/%u", (unsigned)id & 0xff);
    pthread_setname_np(ch->thread, name);
    pthread_cond_broadcast(&r->main);
    pthread_mutex_unlock(&r->lock);
    mfd_stat_add(&r->st.bytes, FY_MULTIFD_INIT_LEN);
    return 0;
}

int fy_multifd_recv_new_channel(FyMultifdRecv *r, FyChannel *c,
                                const void *prefix, size_t prefix_len,
                                FyError **errp)
{
    int id = fy_multifd_read_init(c, prefix, prefix_len, r->cfg.uuid, r->nch,
                                  errp);
    if (id < 0 || fy_multifd_recv_add_channel(r, c, id, errp) < 0)
        return -1;
    return id;
}

void fy_multifd_recv_enable(FyMultifdRecv *r)
{
    pthread_mutex_lock(&r->lock);
    r->enabled = true;
    for (int i = 0; i < r->nch; i++)
        pthread_cond_signal(&r->ch[i].wake);
    pthread_mutex_unlock(&r->lock);
}

bool fy_multifd_recv_all_channels_created(FyMultifdRecv *r)
{
    pthread_mutex_lock(&r->lock);
    bool all = true;
    for (int i = 0; i < r->nch; i++)
        all &= r->ch[i].connected;
    pthread_mutex_unlock(&r->lock);
    return all;
}

/* ---- the main loader's side ---- */

/* True once every channel holds a SYNC not yet released; fails the object
 * when a channel ended without one. */
static bool all_synced_locked(FyMultifdRecv *r)
{
    bool all = true;
    for (int i = 0; i < r->nch; i++) {
        RecvChannel *ch = &r->ch[i];
        if (ch->connected && ch->sync_seen > ch->sync_released)
            continue;
        all = false;
        if (ch->ended) {
            FyError *err = NULL;
            fy_error_setg(&err, "multifd channel %d: the stream ended after "
                          "%" PRIu64 " packets, before its SYNC packet",
                          i, ch->seq - 1);
            fail_locked(r, err);
            return false;
        }
    }
    return all;
}

int fy_multifd_recv_sync(FyMultifdRecv *r, FyError **errp)
{
    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (failed_locked(r, errp) < 0)
            break;
        if (r->quit) {
            fy_error_setg(errp, "multifd: receiving is shutting down");
            break;
        }
        if (all_synced_locked(r)) {
            for (int i = 0; i < r->nch; i++) {
                r->ch[i].sync_released++;
                pthread_cond_signal(&r->ch[i].wake);
            }
            pthread_mutex_unlock(&r->lock);
            mfd_stat_add(&r->st.syncs, 1);
            return 0;
        }
        if (!r->failed)
            pthread_cond_wait(&r->main, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return -1;
}

/* ---- any thread ---- */

void fy_multifd_recv_cancel(FyMultifdRecv *r, const char *why)
{
    FyError *err = NULL;
    fy_error_setg(&err, "multifd: %s", why ? why : "cancelled");
    fail(r, err);
}

int fy_multifd_recv_check(FyMultifdRecv *r, FyError **errp)
{
    pthread_mutex_lock(&r->lock);
    int rc = failed_locked(r, errp);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void fy_multifd_recv_get_stats(FyMultifdRecv *r, FyMultifdStats *out)
{
    out->bytes = mfd_stat_get(&r->st.bytes);
    out->packets = mfd_stat_get(&r->st.packets);
    out->normal_pages = mfd_stat_get(&r->st.normal_pages);
    out->zero_pages = mfd_stat_get(&r->st.zero_pages);
    out->syncs = mfd_stat_get(&r->st.syncs);
    out->zero_skipped = mfd_stat_get(&r->st.zero_skipped);
    out->zero_copy_sends = 0;
    out->zero_copy_copied = 0;
}
