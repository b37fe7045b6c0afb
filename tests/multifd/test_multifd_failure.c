/*
 * test_multifd_failure: the source and destination objects when things go
 * wrong around them: refused configurations, a destination that dies or
 * never reads, cancel from another thread while the producer or the main
 * loader is blocked, free() with work still queued. Each must end with the
 * first error as a message, and no thread left hanging.
 */
#include <pthread.h>
#include <time.h>

#include "mfd-test.h"
#include "t.h"

#define RAMSZ (4u << 20)

static FyRamBlock src;

static FyMultifdSendConfig base_cfg(int channels)
{
    FyMultifdSendConfig cfg;
    fy_multifd_send_config_init(&cfg);
    cfg.channels = channels;
    return cfg;
}

static void expect_config_error(const FyMultifdSendConfig *cfg, const char *needle)
{
    FyChannel *a[4] = { 0 }, *b[4] = { 0 };
    FyError *err = NULL;
    int n = cfg->channels > 0 && cfg->channels <= 4 ? cfg->channels : 1;
    for (int i = 0; i < n; i++)
        fy_channel_socketpair(&a[i], &b[i], &err);
    T_ASSERT(fy_multifd_send_new(cfg, a, &err) == NULL);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, needle);
    fy_error_free(err);
    for (int i = 0; i < n; i++) { /* still ours after a failure */
        fy_channel_close(a[i], NULL);
        fy_channel_close(b[i], NULL);
    }
}

static void test_send_config(void)
{
    FyMultifdSendConfig cfg = base_cfg(0);
    expect_config_error(&cfg, "multifd-channels 0 is not in 1..255");
    cfg = base_cfg(256);
    expect_config_error(&cfg, "multifd-channels 256");
    cfg = base_cfg(2);
    cfg.zero_copy = true;
    cfg.compression = FY_MULTIFD_COMPRESSION_ZSTD;
    expect_config_error(&cfg, "zero-copy-send needs multifd-compression none, not zstd");
    cfg = base_cfg(2);
    cfg.wire = FY_MULTIFD_WIRE_7_2;
    expect_config_error(&cfg, "zero-page-detection multifd needs the packet layout "
                        "of QEMU 9.0");
    cfg = base_cfg(2);
    cfg.compression = FY_MULTIFD_COMPRESSION_ZLIB;
    cfg.zlib_level = 10;
    expect_config_error(&cfg, "multifd channel 0: zlib: multifd-zlib-level 10");
    cfg = base_cfg(1);
    cfg.compression = FY_MULTIFD_COMPRESSION_ZSTD;
    cfg.zstd_level = 21;
    expect_config_error(&cfg, "multifd-zstd-level 21 is not in 0..20");
    cfg = base_cfg(2);
    cfg.zero_copy = true;
    expect_config_error(&cfg, "zero-copy-send: socketpair:");
    expect_config_error(&cfg, "is not a tcp socket");

    FyError *err = NULL;
    FyMultifdRecvConfig rc;
    fy_multifd_recv_config_init(&rc);
    T_ASSERT(!fy_multifd_recv_new(&rc, &err)); /* no RAM list */
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "no RAM list");
    fy_error_clear(&err);
    FyRamList l = { 0 };
    rc.ram = &l;
    rc.channels = 300;
    T_ASSERT(!fy_multifd_recv_new(&rc, &err));
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "multifd-channels 300");
    fy_error_free(err);
}

typedef struct Pairs {
    FyChannel *a[4], *b[4];
    int n;
} Pairs;

static FyMultifdSend *start(Pairs *p, int n, FyError **errp)
{
    memset(p, 0, sizeof(*p));
    p->n = n;
    for (int i = 0; i < n; i++)
        if (fy_channel_socketpair(&p->a[i], &p->b[i], errp) < 0)
            return NULL;
    FyMultifdSendConfig cfg = base_cfg(n);
    cfg.zero_detect = FY_MULTIFD_ZERO_NONE; /* every page is sent */
    return fy_multifd_send_new(&cfg, p->a, errp);
}

static void close_b(Pairs *p)
{
    for (int i = 0; i < p->n; i++)
        fy_channel_close(p->b[i], NULL);
}

static void test_queue_bad_page(void)
{
    Pairs p;
    FyError *err = NULL;
    FyMultifdSend *s = start(&p, 1, &err);
    T_ASSERT(s);
    T_EQ_INT(fy_multifd_queue_page(s, &src, 100, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL,
               "queued offset 0x64 is not page-aligned in RAM block 'pc.ram'");
    fy_error_clear(&err);
    T_EQ_INT(fy_multifd_queue_page(s, &src, RAMSZ, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "queued offset 0x400000 is outside");
    fy_error_clear(&err);
    /* A caller's mistake does not break the object. */
    T_EQ_INT(fy_multifd_send_check(s, &err), 0);
    fy_multifd_send_free(s);
    close_b(&p);
}

static int queue_all(FyMultifdSend *s, FyError **errp)
{
    for (uint64_t off = 0; off < RAMSZ; off += PG)
        if (fy_multifd_queue_page(s, &src, off, errp) < 0)
            return -1;
    return fy_multifd_send_sync(s, errp);
}

/* Channel 1's destination is gone; channel 0's never reads. The write on
 * 1 fails, channel 0 is shut down instead of blocking forever, and the
 * producer gets channel 1's error. */
static void test_peer_dies(void)
{
    Pairs p;
    FyError *err = NULL;
    FyMultifdSend *s = start(&p, 2, &err);
    T_ASSERT(s);
    fy_channel_close(p.b[1], NULL);
    p.b[1] = NULL;
    T_EQ_INT(queue_all(s, &err), -1);
    const char *m = err ? fy_error_msg(err) : "";
    T_CONTAINS(m, "multifd channel 1: ");
    T_ASSERT(strstr(m, "Broken pipe") || strstr(m, "Connection reset"));
    FyError *again = NULL;
    T_EQ_INT(fy_multifd_queue_page(s, &src, 0, &again), -1);
    T_EQ_STR(again ? fy_error_msg(again) : NULL, m);
    fy_error_free(again);
    again = NULL;
    T_EQ_INT(fy_multifd_send_sync(s, &again), -1);
    fy_error_free(again);
    fy_error_free(err);
    fy_multifd_send_free(s);
    close_b(&p);
}

/* Handshake write fails: the peer closed before we started. */
static void test_handshake_fails(void)
{
    Pairs p;
    FyError *err = NULL;
    memset(&p, 0, sizeof(p));
    p.n = 1;
    fy_channel_socketpair(&p.a[0], &p.b[0], &err);
    fy_channel_close(p.b[0], NULL);
    p.b[0] = NULL;
    FyMultifdSendConfig cfg = base_cfg(1);
    FyMultifdSend *s = fy_multifd_send_new(&cfg, p.a, &err);
    T_ASSERT(s);
    T_EQ_INT(fy_multifd_send_sync(s, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "multifd channel 0: handshake: ");
    fy_error_free(err);
    fy_multifd_send_free(s);
}

typedef struct Producer {
    FyMultifdSend *s;
    int rc;
    FyError *err;
} Producer;

static void *producer(void *opaque)
{
    Producer *pr = opaque;
    pr->rc = queue_all(pr->s, &pr->err);
    return NULL;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Nobody reads: the producer blocks waiting for an idle channel until
 * another thread cancels. */
static void test_cancel_blocked_producer(void)
{
    Pairs p;
    FyError *err = NULL;
    Producer pr = { 0 };
    pr.s = start(&p, 2, &err);
    T_ASSERT(pr.s);
    pthread_t th;
    pthread_create(&th, NULL, producer, &pr);
    sleep_ms(200);
    FyMultifdStats st;
    fy_multifd_send_get_stats(pr.s, &st);
    T_ASSERT(st.normal_pages < RAMSZ / PG); /* it is stuck, not done */
    fy_multifd_send_cancel(pr.s, "cancelled by test");
    pthread_join(th, NULL);
    T_EQ_INT(pr.rc, -1);
    T_EQ_STR(pr.err ? fy_error_msg(pr.err) : NULL, "multifd: cancelled by test");
    fy_error_free(pr.err);
    fy_multifd_send_free(pr.s);
    close_b(&p);
}

/* free() while a channel is in the middle of a write nobody reads. */
static void test_free_with_work_queued(void)
{
    Pairs p;
    FyError *err = NULL;
    FyMultifdSend *s = start(&p, 2, &err);
    T_ASSERT(s);
    for (uint64_t off = 0; off < 2 * 128 * PG; off += PG)
        T_EQ_INT(fy_multifd_queue_page(s, &src, off, &err), 0);
    sleep_ms(50);
    fy_multifd_send_free(s);
    close_b(&p);
    fy_error_free(err);
}

typedef struct Loader {
    FyMultifdRecv *r;
    int rc;
    FyError *err;
} Loader;

static void *loader(void *opaque)
{
    Loader *l = opaque;
    l->rc = fy_multifd_recv_sync(l->r, &l->err);
    return NULL;
}

/* The main loader waits in a sync for a channel that never connects. */
static void test_cancel_waiting_sync(void)
{
    FyRamList list = { .count = 1, .blocks = { &src } };
    FyMultifdRecvConfig cfg;
    fy_multifd_recv_config_init(&cfg);
    cfg.ram = &list;
    FyError *err = NULL;
    Loader l = { 0 };
    l.r = fy_multifd_recv_new(&cfg, &err);
    T_ASSERT(l.r);
    FyChannel *a, *b;
    fy_channel_socketpair(&a, &b, &err);
    fy_multifd_write_init(a, cfg.uuid, 0, &err);
    T_EQ_INT(fy_multifd_recv_new_channel(l.r, b, NULL, 0, &err), 0);
    /* Channel 0 delivers its SYNC; channel 1 never comes. */
    FyMultifdPacket pk;
    memset(&pk, 0, sizeof(pk));
    pk.magic = FY_MULTIFD_MAGIC;
    pk.version = 1;
    pk.flags = FY_MULTIFD_FLAG_SYNC;
    pk.pages_alloc = 128;
    static uint8_t wire[FY_MULTIFD_PACKET_LEN];
    fy_multifd_packet_encode(&pk, wire);
    fy_channel_write_all(a, wire, sizeof(wire), &err);

    pthread_t th;
    pthread_create(&th, NULL, loader, &l);
    sleep_ms(200);
    fy_multifd_recv_cancel(l.r, "migration cancelled");
    pthread_join(th, NULL);
    T_EQ_INT(l.rc, -1);
    T_EQ_STR(l.err ? fy_error_msg(l.err) : NULL, "multifd: migration cancelled");
    fy_error_free(l.err);
    FyMultifdStats st;
    fy_multifd_recv_get_stats(l.r, &st);
    T_EQ_INT(st.packets, 1);
    T_EQ_INT(st.syncs, 0);
    fy_multifd_recv_free(l.r);
    fy_channel_close(a, NULL);
    fy_error_free(err);
}

int main(void)
{
    if (mfd_block_init(&src, "pc.ram", RAMSZ) < 0) {
        printf("Bail out! memfd\n");
        return 1;
    }
    uint64_t seed = 7;
    for (uint64_t off = 0; off < RAMSZ; off += PG)
        mfd_fill_page(src.host + off, 2, &seed);
    T_RUN(test_send_config);
    T_RUN(test_queue_bad_page);
    T_RUN(test_peer_dies);
    T_RUN(test_handshake_fails);
    T_RUN(test_cancel_blocked_producer);
    T_RUN(test_free_with_work_queued);
    T_RUN(test_cancel_waiting_sync);
    mfd_block_fini(&src);
    return t_done();
}
