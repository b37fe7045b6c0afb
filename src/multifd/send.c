/*
 * send.c: the source side, one send thread per channel.
 *
 * The RAM sender (the producer, one thread) fills a batch of up to 128
 * offsets of one RAM block and swaps it with the batch of an idle channel,
 * as QEMU does: no copy of the offsets, no allocation after setup. The
 * channel's thread then checks which pages are zero (zero-page-detection
 * multifd), builds the packet and sends header and pages with ONE writev
 * straight from guest memory (nocomp), or compresses the pages into its
 * own buffer first (zlib, zstd).
 *
 * Per channel, under s->lock:
 *   pending   ch->batch holds work; while true the batch is the thread's,
 *             while false the producer may swap it out.
 *   sync_req  syncs asked for; sync_done  SYNC packets sent. The thread
 *             serves pending work before an owed sync, and the producer
 *             queues nothing while it waits for a sync, so a SYNC packet
 *             always follows every page queued before the request.
 *
 *   thread:  handshake -> [ wait -> batch | SYNC (+ zero-copy flush) ]* -> end
 *
 * Failure: the first error (any thread, or cancel) is kept in s->err,
 * failed and stop are set, every channel is shut down so that a thread
 * blocked in a write returns, and all waiters are woken; from then on
 * every producer call returns a copy of that error. free() joins.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multifd/multifd-int.h"

/* known_zero: bit i set = offset[i] was queued as known zero (not read). */
typedef struct MfdBatch {
    FyRamBlock *block;
    uint32_t num;
    uint64_t known_zero[MFD_PAGES / 64];
    uint64_t offset[MFD_PAGES];
} MfdBatch;

typedef struct SendChannel {
    FyMultifdSend *s;
    int id;
    FyChannel *c;
    pthread_t thread;
    bool started;
    pthread_cond_t wake;

    /* under s->lock */
    MfdBatch *batch;
    bool pending;
    uint64_t sync_req, sync_done;

    /* the thread's own */
    FyMultifdPacket pkt;
    uint8_t wire[FY_MULTIFD_PACKET_LEN];
    struct iovec iov[MFD_PAGES + 1];
    uint64_t zero[MFD_PAGES];
    uint8_t *pages[MFD_PAGES];
    MfdCodec codec;
    MfdZeroCopy zc;
} SendChannel;

struct FyMultifdSend {
    FyMultifdSendConfig cfg;
    pthread_mutex_t lock;
    pthread_cond_t idle;   /* a channel went idle, or a sync completed */
    FyError *err;          /* the first error */
    bool failed;
    bool quit;
    int stop;              /* failed || quit, read without the lock */

    MfdBatch *cur;         /* the producer's batch */
    int next;              /* round-robin start */
    uint64_t packet_num;   /* atomic: QEMU numbers packets over all channels */

    FyMultifdStats st;     /* atomic counters */
    int nch;
    SendChannel *ch;
};

void fy_multifd_send_config_init(FyMultifdSendConfig *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->channels = 2;
    cfg->compression = FY_MULTIFD_COMPRESSION_NONE;
    cfg->zlib_level = 1;
    cfg->zstd_level = 1;
    cfg->zero_detect = FY_MULTIFD_ZERO_MULTIFD;
    cfg->wire = FY_MULTIFD_WIRE_CURRENT;
}

/* ---- failure ---- */

static void fail_locked(FyMultifdSend *s, FyError *err)
{
    if (!s->err)
        s->err = err;
    else
        fy_error_free(err);
    if (s->failed)
        return;
    s->failed = true;
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < s->nch; i++) {
        if (s->ch[i].c)
            fy_channel_shutdown(s->ch[i].c, FY_SHUTDOWN_BOTH, NULL);
        pthread_cond_signal(&s->ch[i].wake);
    }
    pthread_cond_broadcast(&s->idle);
}

static void fail(FyMultifdSend *s, FyError *err)
{
    pthread_mutex_lock(&s->lock);
    fail_locked(s, err);
    pthread_mutex_unlock(&s->lock);
}

static int failed_locked(FyMultifdSend *s, FyError **errp)
{
    if (!s->failed)
        return 0;
    if (errp && !*errp)
        *errp = fy_error_copy(s->err);
    return -1;
}

/* ---- the channel thread ---- */

/* Split the batch into normal and zero pages (zero-page-detection=multifd)
 * and fill the packet's counts and offsets. */
static void classify(SendChannel *ch, const MfdBatch *b)
{
    FyMultifdPacket *p = &ch->pkt;
    uint32_t nn = 0, nz = 0;

    if (ch->s->cfg.zero_detect == FY_MULTIFD_ZERO_MULTIFD) {
        for (uint32_t i = 0; i < b->num; i++) {
            uint64_t off = b->offset[i];
            if (((b->known_zero[i / 64] >> (i % 64)) & 1) ||
                fy_multifd_buffer_is_zero(b->block->host + off, MFD_PAGE))
                ch->zero[nz++] = off;
            else
                p->offset[nn++] = off;
        }
        memcpy(p->offset + nn, ch->zero, nz * sizeof(uint64_t));
    } else {
        memcpy(p->offset, b->offset, b->num * sizeof(uint64_t));
        nn = b->num;
    }
    p->normal_pages = nn;
    p->zero_pages = nz;
}

static void packet_start(SendChannel *ch, uint32_t flags)
{
    FyMultifdPacket *p = &ch->pkt;
    p->magic = FY_MULTIFD_MAGIC;
    p->version = FY_MULTIFD_VERSION;
    p->flags = flags;
    p->pages_alloc = MFD_PAGES;
    p->normal_pages = p->zero_pages = 0;
    p->next_packet_size = 0;
    memset(p->ramblock, 0, sizeof(p->ramblock));
}

static void packet_seal(SendChannel *ch)
{
    ch->pkt.packet_num = __atomic_fetch_add(&ch->s->packet_num, 1,
                                            __ATOMIC_RELAXED);
    fy_multifd_packet_encode(&ch->pkt, ch->wire);
    ch->iov[0].iov_base = ch->wire;
    ch->iov[0].iov_len = FY_MULTIFD_PACKET_LEN;
}

/* Write header + payload iov[1..cnt). */
static int packet_write(SendChannel *ch, int cnt, FyError **errp)
{
    FyMultifdSend *s = ch->s;
    if (!s->cfg.zero_copy || cnt == 1)
        return fy_channel_writev_all(ch->c, ch->iov, cnt, errp);
    /* The header buffer is reused at once: it goes by copy, the pages not. */
    uint64_t sent = ch->zc.sent, copied = ch->zc.copied;
    int r = fy_channel_write_all(ch->c, ch->wire, FY_MULTIFD_PACKET_LEN, errp);
    if (r == 0)
        r = mfd_zc_writev_all(&ch->zc, ch->c, ch->iov + 1, cnt - 1, errp);
    mfd_stat_add(&s->st.zero_copy_sends, ch->zc.sent - sent);
    mfd_stat_add(&s->st.zero_copy_copied, ch->zc.copied - copied);
    return r;
}

static int send_batch(SendChannel *ch, FyError **errp)
{
    FyMultifdSend *s = ch->s;
    const MfdBatch *b = ch->batch;
    FyMultifdPacket *p = &ch->pkt;
    int cnt = 1;
    size_t payload = 0;

    packet_start(ch, mfd_compression_flag(s->cfg.compression));
    memcpy(p->ramblock, b->block->idstr, strnlen(b->block->idstr, 255));
    classify(ch, b);
    if (ch->codec.ops) {
        if (p->normal_pages) {
            for (uint32_t i = 0; i < p->normal_pages; i++)
                ch->pages[i] = b->block->host + p->offset[i];
            if (ch->codec.ops->compress(&ch->codec, ch->pages, p->normal_pages,
                                        &payload, errp) < 0)
                return -1;
            ch->iov[1].iov_base = ch->codec.buf;
            ch->iov[1].iov_len = payload;
            cnt = 2;
        }
    } else {
        cnt += mfd_page_iov(ch->iov + 1, b->block->host, p->offset,
                            p->normal_pages);
        payload = (size_t)p->normal_pages * MFD_PAGE;
    }
    p->next_packet_size = (uint32_t)payload;
    packet_seal(ch);
    if (packet_write(ch, cnt, errp) < 0)
        return -1;
    mfd_stat_add(&s->st.bytes, FY_MULTIFD_PACKET_LEN + payload);
    mfd_stat_add(&s->st.packets, 1);
    mfd_stat_add(&s->st.normal_pages, p->normal_pages);
    mfd_stat_add(&s->st.zero_pages, p->zero_pages);
    return 0;
}

static int send_sync(SendChannel *ch, FyError **errp)
{
    FyMultifdSend *s = ch->s;
    packet_start(ch, FY_MULTIFD_FLAG_SYNC);
    packet_seal(ch);
    if (fy_channel_write_all(ch->c, ch->wire, FY_MULTIFD_PACKET_LEN, errp) < 0)
        return -1;
    mfd_stat_add(&s->st.bytes, FY_MULTIFD_PACKET_LEN);
    mfd_stat_add(&s->st.packets, 1);
    if (s->cfg.zero_copy) {
        uint64_t copied = ch->zc.copied;
        int r = mfd_zc_flush(&ch->zc, ch->c, &s->stop, errp);
        mfd_stat_add(&s->st.zero_copy_copied, ch->zc.copied - copied);
        return r;
    }
    return 0;
}

static void *send_thread(void *opaque)
{
    SendChannel *ch = opaque;
    FyMultifdSend *s = ch->s;
    FyError *err = NULL;

    if (fy_multifd_write_init(ch->c, s->cfg.uuid, (uint8_t)ch->id, &err) < 0) {
        fail(s, err);
        return NULL;
    }
    mfd_stat_add(&s->st.bytes, FY_MULTIFD_INIT_LEN);

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->failed && !s->quit && !ch->pending &&
               ch->sync_done == ch->sync_req)
            pthread_cond_wait(&ch->wake, &s->lock);
        if (s->failed || s->quit)
            break;
        bool is_sync = !ch->pending;
        pthread_mutex_unlock(&s->lock);
        int r = is_sync ? send_sync(ch, &err) : send_batch(ch, &err);
        pthread_mutex_lock(&s->lock);
        if (r < 0) {
            fy_error_prepend(&err, "multifd channel %d: %s: ", ch->id,
                             is_sync ? "SYNC packet" : "packet");
            fail_locked(s, err);
            err = NULL;
            break;
        }
        if (is_sync)
            ch->sync_done++;
        else
            ch->pending = false;
        pthread_cond_broadcast(&s->idle);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- setup and teardown ---- */

static int check_config(const FyMultifdSendConfig *cfg, FyError **errp)
{
    if (cfg->channels < 1 || cfg->channels > FY_MULTIFD_CHANNELS_MAX) {
        fy_error_setg(errp, "multifd-channels %d is not in 1..%d",
                      cfg->channels, FY_MULTIFD_CHANNELS_MAX);
        return -1;
    }
    if (!fy_multifd_compression_name(cfg->compression)) {
        fy_error_setg(errp, "multifd-compression %d is not supported",
                      (int)cfg->compression);
        return -1;
    }
    if ((unsigned)cfg->zero_detect > FY_MULTIFD_ZERO_MULTIFD) {
        fy_error_setg(errp, "zero-page-detection %d is not valid",
                      (int)cfg->zero_detect);
        return -1;
    }
    if (cfg->zero_copy && cfg->compression != FY_MULTIFD_COMPRESSION_NONE) {
        fy_error_setg(errp, "zero-copy-send needs multifd-compression none, "
                      "not %s", fy_multifd_compression_name(cfg->compression));
        return -1;
    }
    if (cfg->wire == FY_MULTIFD_WIRE_7_2 &&
        cfg->zero_detect == FY_MULTIFD_ZERO_MULTIFD) {
        fy_error_setg(errp, "zero-page-detection multifd needs the packet "
                      "layout of QEMU 9.0 or later (zero_pages); with a QEMU "
                      "7.2 peer use legacy or none");
        return -1;
    }
    return 0;
}

static void destroy(FyMultifdSend *s, bool close_channels)
{
    for (int i = 0; i < s->nch; i++) {
        SendChannel *ch = &s->ch[i];
        if (close_channels)
            fy_channel_close(ch->c, NULL);
        mfd_codec_fini(&ch->codec);
        free(ch->batch);
        pthread_cond_destroy(&ch->wake);
    }
    free(s->ch);
    free(s->cur);
    fy_error_free(s->err);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Stop and join every started thread. */
static void stop_threads(FyMultifdSend *s)
{
    pthread_mutex_lock(&s->lock);
    s->quit = true;
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    bool busy = false;
    for (int i = 0; i < s->nch; i++)
        busy |= s->ch[i].pending || s->ch[i].sync_req != s->ch[i].sync_done;
    for (int i = 0; i < s->nch; i++) {
        /* A thread in the middle of a write would not see quit. */
        if (busy && s->ch[i].c)
            fy_channel_shutdown(s->ch[i].c, FY_SHUTDOWN_BOTH, NULL);
        pthread_cond_signal(&s->ch[i].wake);
    }
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < s->nch; i++) {
        if (s->ch[i].started)
            pthread_join(s->ch[i].thread, NULL);
        s->ch[i].started = false;
    }
}

static int setup_channel(FyMultifdSend *s, SendChannel *ch, int id,
                         FyChannel *c, FyError **errp)
{
    ch->s = s;
    ch->id = id;
    ch->c = c;
    pthread_cond_init(&ch->wake, NULL);
    ch->batch = calloc(1, sizeof(*ch->batch));
    if (!ch->batch) {
        fy_error_setg(errp, "multifd channel %d: out of memory", id);
        return -1;
    }
    int level = s->cfg.compression == FY_MULTIFD_COMPRESSION_ZLIB
              ? s->cfg.zlib_level : s->cfg.zstd_level;
    if (mfd_codec_init(&ch->codec, s->cfg.compression, true, level, errp) < 0 ||
        (s->cfg.zero_copy && mfd_zc_init(&ch->zc, c, errp) < 0)) {
        fy_error_prepend(errp, "multifd channel %d: ", id);
        return -1;
    }
    return 0;
}

FyMultifdSend *fy_multifd_send_new(const FyMultifdSendConfig *cfg,
                                   FyChannel *const *chans, FyError **errp)
{
    if (check_config(cfg, errp) < 0)
        return NULL;
    FyMultifdSend *s = calloc(1, sizeof(*s));
    if (!s) {
        fy_error_setg(errp, "multifd: out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->ch = calloc((size_t)cfg->channels, sizeof(*s->ch));
    s->cur = calloc(1, sizeof(*s->cur));
    if (!s->ch || !s->cur) {
        fy_error_setg(errp, "multifd: out of memory");
        destroy(s, false);
        return NULL;
    }
    for (int i = 0; i < cfg->channels; i++) {
        s->nch = i + 1;
        if (setup_channel(s, &s->ch[i], i, chans[i], errp) < 0) {
            destroy(s, false);
            return NULL;
        }
    }
    for (int i = 0; i < s->nch; i++) {
        int e = pthread_create(&s->ch[i].thread, NULL, send_thread, &s->ch[i]);
        if (e) {
            fy_error_setg_errno(errp, e, "multifd channel %d: starting its "
                                "thread", i);
            stop_threads(s);
            destroy(s, false);
            return NULL;
        }
        s->ch[i].started = true;
        char name[16];
        snprintf(name, sizeof(name), "mfd-send/%u", (unsigned)i & 0xff);
        pthread_setname_np(s->ch[i].thread, name);
    }
    return s;
}

void fy_multifd_send_free(FyMultifdSend *s)
{
    if (!s)
        return;
    stop_threads(s);
    destroy(s, true);
}

/* ---- the producer ---- */

/* Give the producer's batch to the next idle channel (waiting for one). */
static int hand_off(FyMultifdSend *s, FyError **errp)
{
    pthread_mutex_lock(&s->lock);
    SendChannel *ch = NULL;
    while (!ch) {
        if (failed_locked(s, errp) < 0) {
            pthread_mutex_unlock(&s->lock);
            return -1;
        }
        for (int k = 0; k < s->nch && !ch; k++) {
            SendChannel *c = &s->ch[(s->next + k) % s->nch];
            if (!c->pending)
                ch = c;
        }
        if (!ch)
            pthread_cond_wait(&s->idle, &s->lock);
    }
    MfdBatch *b = ch->batch;
    ch->batch = s->cur;
    ch->pending = true;
    s->next = (ch->id + 1) % s->nch;
    pthread_cond_signal(&ch->wake);
    pthread_mutex_unlock(&s->lock);
    s->cur = b;
    b->num = 0;
    b->block = NULL;
    memset(b->known_zero, 0, sizeof(b->known_zero));
    return 0;
}

static int check_page(const FyRamBlock *rb, uint64_t offset, FyError **errp)
{
    if (!rb || !rb->host) {
        fy_error_setg(errp, "multifd: queued a page of %s", rb ? "an unmapped "
                      "RAM block" : "no RAM block");
        return -1;
    }
    if (strnlen(rb->idstr, sizeof(rb->idstr)) == sizeof(rb->idstr)) {
        fy_error_setg(errp, "multifd: RAM block name is not NUL-terminated");
        return -1;
    }
    if (offset % MFD_PAGE || offset >= rb->used_length) {
        fy_error_setg(errp, "multifd: queued offset 0x%" PRIx64 " is %s RAM "
                      "block '%s' of 0x%" PRIx64 " bytes", offset,
                      offset % MFD_PAGE ? "not page-aligned in" : "outside",
                      rb->idstr, rb->used_length);
        return -1;
    }
    return 0;
}

static int queue_one(FyMultifdSend *s, FyRamBlock *rb, uint64_t offset,
                     bool known_zero, FyError **errp)
{
    if (check_page(rb, offset, errp) < 0)
        return -1;
    /* One atomic load per page: a failed object refuses work at once. */
    if (__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE) &&
        fy_multifd_send_check(s, errp) < 0)
        return -1;
    MfdBatch *b = s->cur;
    if (b->num && b->block != rb && hand_off(s, errp) < 0)
        return -1;
    b = s->cur;
    b->block = rb;
    if (known_zero)
        b->known_zero[b->num / 64] |= 1ull << (b->num % 64);
    b->offset[b->num++] = offset;
    if (b->num == MFD_PAGES)
        return hand_off(s, errp);
    return 0;
}

int fy_multifd_queue_page(FyMultifdSend *s, FyRamBlock *rb, uint64_t offset,
                          FyError **errp)
{
    return queue_one(s, rb, offset, false, errp);
}

int fy_multifd_queue_zero_page(FyMultifdSend *s, FyRamBlock *rb,
                               uint64_t offset, FyError **errp)
{
    if (s->cfg.zero_detect != FY_MULTIFD_ZERO_MULTIFD) {
        fy_error_setg(errp, "multifd: a known zero page can only be queued "
                      "with zero-page-detection multifd");
        return -1;
    }
    return queue_one(s, rb, offset, true, errp);
}

int fy_multifd_queue_pages(FyMultifdSend *s, FyRamBlock *rb,
                           const uint64_t *offsets, size_t n, FyError **errp)
{
    for (size_t i = 0; i < n; i++) {
        if (fy_multifd_queue_page(s, rb, offsets[i], errp) < 0)
            return -1;
    }
    return 0;
}

int fy_multifd_send_flush(FyMultifdSend *s, FyError **errp)
{
    if (s->cur->num)
        return hand_off(s, errp);
    return fy_multifd_send_check(s, errp);
}

int fy_multifd_send_sync(FyMultifdSend *s, FyError **errp)
{
    if (fy_multifd_send_flush(s, errp) < 0)
        return -1;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->nch; i++) {
        s->ch[i].sync_req++;
        pthread_cond_signal(&s->ch[i].wake);
    }
    for (;;) {
        if (failed_locked(s, errp) < 0) {
            pthread_mutex_unlock(&s->lock);
            return -1;
        }
        bool all = true;
        for (int i = 0; i < s->nch; i++)
            all &= s->ch[i].sync_done == s->ch[i].sync_req;
        if (all)
            break;
        pthread_cond_wait(&s->idle, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    mfd_stat_add(&s->st.syncs, 1);
    return 0;
}

/* ---- any thread ---- */

void fy_multifd_send_cancel(FyMultifdSend *s, const char *why)
{
    FyError *err = NULL;
    fy_error_setg(&err, "multifd: %s", why ? why : "cancelled");
    fail(s, err);
}

int fy_multifd_send_check(FyMultifdSend *s, FyError **errp)
{
    pthread_mutex_lock(&s->lock);
    int r = failed_locked(s, errp);
    pthread_mutex_unlock(&s->lock);
    return r;
}

void fy_multifd_send_get_stats(FyMultifdSend *s, FyMultifdStats *out)
{
    out->bytes = mfd_stat_get(&s->st.bytes);
    out->packets = mfd_stat_get(&s->st.packets);
    out->normal_pages = mfd_stat_get(&s->st.normal_pages);
    out->zero_pages = mfd_stat_get(&s->st.zero_pages);
    out->syncs = mfd_stat_get(&s->st.syncs);
    out->zero_skipped = 0;
    out->zero_copy_sends = mfd_stat_get(&s->st.zero_copy_sends);
    out->zero_copy_copied = mfd_stat_get(&s->st.zero_copy_copied);
}
