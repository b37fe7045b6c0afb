/*
 * mig-multifd.c: multifd in the migration (QEMU's multifd_send_setup,
 * multifd_recv_new_channel and friends): settings, extra connections,
 * their errors.
 *
 * Source (migration thread):
 *   [handover]  mode cpr-transfer: handover.c, before the main channel
 *   main        outgoing.c connects it
 *   channels    multifd-channels more connections to the same URI; a
 *               FyMultifdSend takes them (each thread writes its
 *               MultiFDInit_t at once) and the RAM sender queues pages to
 *               it (ram-multifd.c), with SYNC + MULTIFD_FLUSH keeping the
 *               rounds in order
 *   finish      the object is freed (its channels closed) once the
 *               migration ended, either way; its counters are kept for
 *               query-migrate
 * Destination (incoming thread):
 *   accept      connections are classified by their first four bytes
 *               (peeked, so the owner reads them again): multifd channels
 *               and a handover are served until the main channel arrives;
 *               then an acceptor thread takes the listener and serves the
 *               rest while the main stream loads (the loader's
 *               MULTIFD_FLUSH waits for channels not connected yet); a
 *               channel too many (id out of range or repeated) fails the
 *               migration. The source connects every channel before it
 *               writes the stream's header, so they are all queued on
 *               the listener long before the load can end.
 *   errors      a side channel that fails (bad handshake, wrong uuid,
 *               unknown or repeated id, corrupt packet, early end) fails
 *               the receive object; its failure hook shuts the main
 *               channel's reading side down so the loader stops at once,
 *               and the error reported is the side channel's
 *   finish      acceptor stopped, receive object freed; on failure,
 *               handed-over memory is given back (handover.c)
 * Settings follow QEMU: multifd needs a socket (tcp or unix), zero-copy-
 * send needs multifd without compression and a tcp URI; both sides must
 * agree on multifd, multifd-channels and multifd-compression.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "migration/mig-multifd.h"

static FyMigMfd *mfd_get(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    if (!m->mfd) {
        m->mfd = calloc(1, sizeof(*m->mfd));
        if (m->mfd) {
            m->mfd->m = m;
            pthread_mutex_init(&m->mfd->lock, NULL);
        }
    }
    FyMigMfd *mfd = m->mfd;
    pthread_mutex_unlock(&m->lock);
    return mfd;
}

static FyError *oom(void)
{
    FyError *err = NULL;
    fy_error_setg(&err, "out of memory for multifd");
    return err;
}

/* ---- settings ---- */

int fy_mig_mfd_check(const bool *caps, const FyMigParams *p, FyError **errp)
{
    static const char *const comp[] = { "none", "zlib", "zstd", "qpl", "uadk",
                                        "qatzip" };
    static const char *const modes[] = { "normal", "cpr-reboot",
                                         "cpr-transfer", "cpr-exec" };
    if (p->multifd_channels < 1) {
        fy_error_setg(errp, "Parameter 'multifd-channels' expects a value "
                      "between 1 and 255");
        return -1;
    }
    if (p->multifd_compression > FY_MULTIFD_COMPRESSION_ZSTD) {
        fy_error_setg(errp, "multifd-compression '%s' is not supported by "
                      "ferry (none, zlib, zstd)",
                      comp[p->multifd_compression < 6 ? p->multifd_compression
                                                      : 0]);
        return -1;
    }
    if (p->mode != FY_MIG_MODE_NORMAL && p->mode != FY_MIG_MODE_CPR_TRANSFER) {
        fy_error_setg(errp, "migration mode '%s' is not supported by ferry "
                      "(normal, cpr-transfer)", modes[p->mode < 4 ? p->mode : 0]);
        return -1;
    }
    if (caps[FY_CAP_ZERO_COPY_SEND] &&
        (!caps[FY_CAP_MULTIFD] || caps[FY_CAP_XBZRLE] ||
         p->multifd_compression != FY_MULTIFD_COMPRESSION_NONE)) {
        fy_error_setg(errp, "Zero copy only available for non-compressed "
                      "non-TLS multifd migration");
        return -1;
    }
    if (caps[FY_CAP_MULTIFD] && caps[FY_CAP_XBZRLE]) {
        fy_error_setg(errp, "Multifd is not compatible with xbzrle");
        return -1;
    }
    if (caps[FY_CAP_MULTIFD] && caps[FY_CAP_POSTCOPY_RAM]) {
        fy_error_setg(errp, "Postcopy is not yet compatible with multifd");
        return -1;
    }
    return 0;
}

int fy_mig_mfd_check_uri(FyMigration *m, const char *uri, bool incoming,
                         FyError **errp)
{
    FyUri u;
    if (!mfd_get(m)) {
        fy_error_propagate(errp, oom());
        return -1;
    }
    if (fy_uri_parse(uri, &u, errp) < 0)
        return -1;
    pthread_mutex_lock(&m->lock);
    bool multifd = m->caps[FY_CAP_MULTIFD];
    bool zero_copy = m->caps[FY_CAP_ZERO_COPY_SEND];
    bool handover = m->params.mode == FY_MIG_MODE_CPR_TRANSFER;
    pthread_mutex_unlock(&m->lock);

    int r = -1;
    bool sock = u.kind == FY_URI_TCP || u.kind == FY_URI_UNIX;
    if (handover && u.kind != FY_URI_UNIX)
        fy_error_setg(errp, "migration mode 'cpr-transfer' hands RAM over as "
                      "file descriptors, which only a unix socket carries: "
                      "'%s' cannot (use unix:PATH)", uri);
    else if (multifd && !sock)
        fy_error_setg(errp, "multifd needs a tcp: or unix: URI (it opens "
                      "more connections to the same address); '%s' is a "
                      "single channel", uri);
    else if (zero_copy && !incoming && u.kind != FY_URI_TCP)
        fy_error_setg(errp, "zero-copy-send needs a tcp: URI (MSG_ZEROCOPY "
                      "is a tcp feature); '%s' is not one", uri);
    else if (handover && !incoming &&
             fy_mig_handover_check_blocks(m->ram, errp) < 0)
        ;
    else
        r = 0;
    fy_uri_clear(&u);
    return r;
}

void fy_mig_mfd_kick_locked(FyMigration *m)
{
    FyMigMfd *mfd = m->mfd;
    if (!mfd)
        return;
    if (mfd->send && (!m->committed || m->freeing))
        fy_multifd_send_cancel(mfd->send, "migration cancelled");
    if (mfd->recv)
        fy_multifd_recv_cancel(mfd->recv, "migration cancelled");
    if (mfd->listener)
        fy_listener_shutdown(mfd->listener);
    if (mfd->handover_chan)
        fy_channel_shutdown(mfd->handover_chan, FY_SHUTDOWN_BOTH, NULL);
    pthread_mutex_lock(&mfd->lock);
    mfd->stopping = true;
    if (mfd->peeking)
        fy_channel_shutdown(mfd->peeking, FY_SHUTDOWN_BOTH, NULL);
    pthread_mutex_unlock(&mfd->lock);
}

void fy_mig_mfd_free(FyMigration *m)
{
    FyMigMfd *mfd = m->mfd;
    if (!mfd)
        return;
    /* The workers are joined: nothing of a run is left but counters. */
    pthread_mutex_destroy(&mfd->lock);
    free(mfd);
    m->mfd = NULL;
}

void fy_mig_mfd_stats_locked(FyMigration *m, FyMultifdStats *out)
{
    FyMigMfd *mfd = m->mfd;
    memset(out, 0, sizeof(*out));
    if (!mfd)
        return;
    if (m->incoming) {
        if (mfd->recv)
            fy_multifd_recv_get_stats(mfd->recv, out);
        else
            *out = mfd->recv_last;
    } else {
        if (mfd->send)
            fy_multifd_send_get_stats(mfd->send, out);
        else
            *out = mfd->send_last;
    }
}

/* ---- source ---- */

int fy_mig_mfd_out_before_main(FyMigration *m, FyError **errp)
{
    FyMigMfd *mfd = mfd_get(m);
    if (!mfd) {
        fy_error_propagate(errp, oom());
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    memset(&mfd->send_last, 0, sizeof(mfd->send_last));
    bool handover = m->params.mode == FY_MIG_MODE_CPR_TRANSFER;
    pthread_mutex_unlock(&m->lock);
    return handover ? fy_mig_handover_send(m, mfd, errp) : 0;
}

static void send_config(FyMigration *m, FyMultifdSendConfig *cfg)
{
    fy_multifd_send_config_init(cfg);
    pthread_mutex_lock(&m->lock);
    cfg->channels = (int)m->params.multifd_channels;
    cfg->compression = (FyMultifdCompression)m->params.multifd_compression;
    cfg->zlib_level = (int)m->params.multifd_zlib_level;
    cfg->zstd_level = (int)m->params.multifd_zstd_level;
    cfg->zero_detect = (FyMultifdZeroDetect)m->params.zero_page_detection;
    cfg->zero_copy = m->caps[FY_CAP_ZERO_COPY_SEND];
    pthread_mutex_unlock(&m->lock);
    memcpy(cfg->uuid, fy_savevm_config(m->ss)->uuid, sizeof(cfg->uuid));
}

static int connect_channels(FyMigration *m, FyChannel **chans, int n,
                            FyError **errp)
{
    for (int i = 0; i < n; i++) {
        chans[i] = fy_channel_open_outgoing(m->uri, errp);
        if (!chans[i]) {
            fy_error_prepend(errp, "multifd channel %d: ", i);
            return -1;
        }
    }
    return 0;
}

int fy_mig_mfd_out_after_main(FyMigration *m, FyError **errp)
{
    FyMigMfd *mfd = mfd_get(m);
    pthread_mutex_lock(&m->lock);
    bool on = m->caps[FY_CAP_MULTIFD];
    pthread_mutex_unlock(&m->lock);
    if (!on)
        return 0;
    if (!mfd) {
        fy_error_propagate(errp, oom());
        return -1;
    }
    FyMultifdSendConfig cfg;
    send_config(m, &cfg);
    FyChannel **chans = calloc((size_t)cfg.channels, sizeof(*chans));
    if (!chans) {
        fy_error_propagate(errp, oom());
        return -1;
    }
    FyMultifdSend *s = NULL;
    if (connect_channels(m, chans, cfg.channels, errp) == 0)
        s = fy_multifd_send_new(&cfg, chans, errp);
    if (!s) {
        for (int i = 0; i < cfg.channels; i++)
            fy_channel_close(chans[i], NULL);
        free(chans);
        return -1;
    }
    free(chans);
    if (fy_ram_set_multifd_send(m->rs, s, cfg.zero_detect) < 0) {
        fy_multifd_send_free(s);
        fy_error_propagate(errp, oom());
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    mfd->send = s;
    bool cancel = m->cancel_req;
    pthread_mutex_unlock(&m->lock);
    if (cancel) {
        fy_error_setg(errp, "migration cancelled");
        return -1;
    }
    return 0;
}

uint64_t fy_mig_out_bytes(FyMigration *m, const FyStream *f)
{
    uint64_t bytes = f ? fy_stream_transferred(f) : 0;
    /* The migration thread sets and clears send: no lock needed here. */
    if (m->mfd && m->mfd->send) {
        FyMultifdStats st;
        fy_multifd_send_get_stats(m->mfd->send, &st);
        bytes += st.bytes;
    }
    return bytes;
}

void fy_mig_mfd_out_finish(FyMigration *m)
{
    FyMigMfd *mfd = m->mfd;
    if (!mfd || !mfd->send)
        return;
    pthread_mutex_lock(&m->lock);
    FyMultifdSend *s = mfd->send;
    fy_multifd_send_get_stats(s, &mfd->send_last);
    mfd->send = NULL;
    pthread_mutex_unlock(&m->lock);
    fy_ram_set_multifd_send(m->rs, NULL, FY_MULTIFD_ZERO_NONE);
    fy_multifd_send_free(s);
}

/* ---- destination ---- */

static bool hook_known_zero(void *opaque, FyRamBlock *rb, uint64_t offset)
{
    FyMigMfd *mfd = opaque;
    return fy_ram_multifd_page_known_zero(mfd->m->rs, rb, offset);
}

static void hook_pages_done(void *opaque, FyRamBlock *rb,
                            const uint64_t *normal, uint32_t n_normal,
                            const uint64_t *zero, uint32_t n_zero)
{
    FyMigMfd *mfd = opaque;
    fy_ram_multifd_pages_done(mfd->m->rs, rb, normal, n_normal, zero, n_zero);
}

/* A side channel failed: stop the main loader (its reading side only, so
 * the return path can still say SHUT). Runs under the receive lock. */
static void hook_failed(void *opaque)
{
    FyMigMfd *mfd = opaque;
    pthread_mutex_lock(&mfd->lock);
    if (mfd->main)
        fy_channel_shutdown(mfd->main, FY_SHUTDOWN_READ, NULL);
    pthread_mutex_unlock(&mfd->lock);
}

static int recv_setup(FyMigration *m, FyMigMfd *mfd, FyError **errp)
{
    FyMultifdRecvConfig cfg;
    fy_multifd_recv_config_init(&cfg);
    pthread_mutex_lock(&m->lock);
    cfg.channels = (int)m->params.multifd_channels;
    cfg.compression = (FyMultifdCompression)m->params.multifd_compression;
    pthread_mutex_unlock(&m->lock);
    memcpy(cfg.uuid, fy_savevm_config(m->ss)->uuid, sizeof(cfg.uuid));
    cfg.ram = m->ram;
    cfg.start_disabled = true;
    cfg.hooks = (FyMultifdRecvHooks){ .page_known_zero = hook_known_zero,
                                      .pages_done = hook_pages_done,
                                      .failed = hook_failed, .opaque = mfd };
    FyMultifdRecv *r = fy_multifd_recv_new(&cfg, errp);
    if (!r)
        return -1;
    if (fy_ram_set_multifd_recv(m->rs, r) < 0) {
        fy_multifd_recv_free(r);
        fy_error_propagate(errp, oom());
        return -1;
    }
    pthread_mutex_lock(&m->lock);
    mfd->recv = r;
    bool cancel = m->cancel_req;
    pthread_mutex_unlock(&m->lock);
    if (cancel) {
        fy_error_setg(errp, "incoming migration cancelled");
        return -1;
    }
    return 0;
}

/* The first four bytes, left in the socket for whoever reads it. */
static int peek_magic(FyMigMfd *mfd, FyChannel *c, uint32_t *magic,
                      FyError **errp)
{
    pthread_mutex_lock(&mfd->lock);
    bool stop = mfd->stopping;
    mfd->peeking = stop ? NULL : c;
    pthread_mutex_unlock(&mfd->lock);
    int r = -1;
    uint8_t b[4];
    while (!stop) {
        ssize_t n = recv(c->rfd, b, sizeof(b), MSG_PEEK | MSG_WAITALL);
        if (n == (ssize_t)sizeof(b)) {
            *magic = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                     (uint32_t)b[2] << 8 | b[3];
            r = 0;
            break;
        }
        if (n == 0) {
            fy_error_setg(errp, "%s: the peer closed the connection before "
                          "saying what it is", c->name);
            break;
        }
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
            fy_error_setg_errno(errp, errno, "%s: read", c->name);
            break;
        }
        /* Fewer than 4 bytes yet (or non-blocking): wait a little. */
        struct pollfd p = { .fd = c->rfd, .events = POLLIN };
        if (n < 0 && errno == EAGAIN)
            (void)poll(&p, 1, 100);
        else
            nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
        pthread_mutex_lock(&mfd->lock);
        stop = mfd->stopping;
        pthread_mutex_unlock(&mfd->lock);
    }
    if (stop && r < 0 && errp && !*errp)
        fy_error_setg(errp, "incoming migration cancelled");
    pthread_mutex_lock(&mfd->lock);
    mfd->peeking = NULL;
    pthread_mutex_unlock(&mfd->lock);
    return r;
}

/* A connection that is not the main channel. Takes c. */
static int serve_side_channel(FyMigration *m, FyMigMfd *mfd, FyChannel *c,
                              uint32_t magic, FyError **errp)
{
    if (magic == FY_MULTIFD_MAGIC && mfd->recv) {
        if (fy_multifd_recv_new_channel(mfd->recv, c, NULL, 0, errp) >= 0)
            return 0;
        fy_channel_close(c, NULL);
        return -1;
    }
    int r = -1;
    if (magic == FY_HANDOVER_MAGIC)
        r = fy_mig_handover_receive(m, mfd, c, errp);
    else if (magic == FY_MULTIFD_MAGIC)
        fy_error_setg(errp, "%s: a multifd channel arrived, but the multifd "
                      "capability is off here", c->name);
    else
        fy_error_setg(errp, "%s: a connection that starts with 0x%08x is "
                      "neither a migration stream nor a multifd channel",
                      c->name, magic);
    fy_channel_close(c, NULL);
    return r;
}

static void *acceptor_thread(void *opaque)
{
    FyMigMfd *mfd = opaque;
    FyMigration *m = mfd->m;
    fy_mig_block_sigpipe();
    pthread_setname_np(pthread_self(), "fy-mfd-accept");
    /* Until the load ends, also after every channel is connected: one
     * more (the source has more multifd-channels than we do) must fail
     * the migration, not leave its pages unread. */
    for (;;) {
        FyError *err = NULL;
        uint32_t magic = 0;
        FyChannel *c = fy_listener_accept(mfd->listener, -1, &err);
        if (c && peek_magic(mfd, c, &magic, &err) < 0) {
            fy_channel_close(c, NULL);
            c = NULL;
        }
        if (c && serve_side_channel(m, mfd, c, magic, &err) == 0)
            continue;
        pthread_mutex_lock(&mfd->lock);
        bool stopping = mfd->stopping;
        pthread_mutex_unlock(&mfd->lock);
        if (!stopping)
            fy_multifd_recv_cancel(mfd->recv, fy_error_msg(err));
        fy_error_free(err);
        break;
    }
    return NULL;
}

static int start_acceptor(FyMigration *m, FyMigMfd *mfd, FyListener *l,
                          FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    mfd->listener = l;
    pthread_mutex_unlock(&m->lock);
    int e = pthread_create(&mfd->acceptor, NULL, acceptor_thread, mfd);
    if (e) {
        pthread_mutex_lock(&m->lock);
        mfd->listener = NULL;
        pthread_mutex_unlock(&m->lock);
        fy_error_setg_errno(errp, e, "multifd: starting the acceptor thread");
        return -1;
    }
    mfd->acceptor_started = true;
    return 0;
}

static void set_main(FyMigMfd *mfd, FyChannel *c)
{
    pthread_mutex_lock(&mfd->lock);
    mfd->main = c;
    pthread_mutex_unlock(&mfd->lock);
}

FyChannel *fy_mig_mfd_in_accept(FyMigration *m, FyListener *l,
                                bool *keep_listener, FyError **errp)
{
    FyMigMfd *mfd = mfd_get(m);
    *keep_listener = false;
    pthread_mutex_lock(&m->lock);
    bool multifd = m->caps[FY_CAP_MULTIFD];
    bool handover = m->params.mode == FY_MIG_MODE_CPR_TRANSFER;
    pthread_mutex_unlock(&m->lock);
    const char *addr = fy_listener_address(l);
    bool sock = addr && (!strncmp(addr, "tcp:", 4) || !strncmp(addr, "unix:", 5));
    if (!sock || (!multifd && !handover))
        return fy_listener_accept(l, -1, errp);
    if (!mfd) {
        fy_error_propagate(errp, oom());
        return NULL;
    }
    pthread_mutex_lock(&mfd->lock);
    mfd->stopping = false;
    pthread_mutex_unlock(&mfd->lock);
    pthread_mutex_lock(&m->lock);
    memset(&mfd->recv_last, 0, sizeof(mfd->recv_last));
    pthread_mutex_unlock(&m->lock);
    if (multifd && recv_setup(m, mfd, errp) < 0)
        return NULL;
    for (;;) {
        uint32_t magic = 0;
        FyChannel *c = fy_listener_accept(l, -1, errp);
        if (!c)
            return NULL;
        if (peek_magic(mfd, c, &magic, errp) < 0) {
            fy_channel_close(c, NULL);
            return NULL;
        }
        if (magic == QEMU_VM_FILE_MAGIC) {
            set_main(mfd, c);
            if (multifd) {
                if (start_acceptor(m, mfd, l, errp) < 0) {
                    set_main(mfd, NULL);
                    fy_channel_close(c, NULL);
                    return NULL;
                }
                *keep_listener = true;
            }
            return c;
        }
        if (serve_side_channel(m, mfd, c, magic, errp) < 0) {
            if (magic == FY_MULTIFD_MAGIC)
                fy_error_prepend(errp, "multifd: ");
            return NULL;
        }
    }
}

FyError *fy_mig_mfd_in_error(FyMigration *m, FyError *err)
{
    FyMigMfd *mfd = m->mfd;
    FyError *side = NULL;
    if (mfd && mfd->recv && fy_multifd_recv_check(mfd->recv, &side) < 0) {
        fy_error_free(err);
        return side;
    }
    return err;
}

void fy_mig_mfd_in_finish(FyMigration *m, bool ok)
{
    FyMigMfd *mfd = m->mfd;
    if (!mfd)
        return;
    pthread_mutex_lock(&mfd->lock);
    mfd->stopping = true;
    mfd->main = NULL;
    if (mfd->peeking)
        fy_channel_shutdown(mfd->peeking, FY_SHUTDOWN_BOTH, NULL);
    pthread_mutex_unlock(&mfd->lock);
    pthread_mutex_lock(&m->lock);
    FyListener *l = mfd->listener;
    if (l)
        fy_listener_shutdown(l);
    pthread_mutex_unlock(&m->lock);
    if (mfd->acceptor_started) {
        pthread_join(mfd->acceptor, NULL);
        mfd->acceptor_started = false;
    }
    pthread_mutex_lock(&m->lock);
    mfd->listener = NULL;
    FyMultifdRecv *r = mfd->recv;
    if (r)
        fy_multifd_recv_get_stats(r, &mfd->recv_last);
    mfd->recv = NULL;
    pthread_mutex_unlock(&m->lock);
    fy_listener_free(l);
    if (r) {
        fy_ram_set_multifd_recv(m->rs, NULL);
        fy_multifd_recv_free(r);
    }
    if (!ok)
        fy_mig_handover_rollback(m, mfd);
    mfd->handed_over = false;
}
