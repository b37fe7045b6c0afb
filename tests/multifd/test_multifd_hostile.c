/*
 * test_multifd_hostile: a destination fed by hand-made packets over real
 * sockets. Every malformed or lying packet must fail the receiver with a
 * message naming the channel, the packet and the field, write nothing of
 * its pages, and never crash or hang; the sync the main loader is waiting
 * in returns that error. Also a well-formed compressed stream from an
 * independent (test-side) zlib/zstd encoder is accepted.
 */
#include <zlib.h>
#include <zstd.h>

#include "mfd-test.h"
#include "t.h"

#define NPAGES 64

static FyRamBlock blk;
static FyRamList list;
static const uint8_t UUID[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

typedef struct Dst {
    FyMultifdRecv *r;
    FyChannel *wr[4]; /* the test's (source's) ends */
    int n;
} Dst;

static int dst_open(Dst *d, int channels, FyMultifdCompression comp)
{
    FyError *err = NULL;
    memset(d, 0, sizeof(*d));
    memset(blk.host, 0, blk.used_length);
    FyMultifdRecvConfig cfg;
    fy_multifd_recv_config_init(&cfg);
    cfg.channels = channels;
    cfg.compression = comp;
    memcpy(cfg.uuid, UUID, 16);
    cfg.ram = &list;
    d->r = fy_multifd_recv_new(&cfg, &err);
    d->n = channels;
    for (int i = 0; i < channels && d->r; i++) {
        FyChannel *rd;
        if (fy_channel_socketpair(&d->wr[i], &rd, &err) < 0 ||
            fy_multifd_write_init(d->wr[i], UUID, (uint8_t)i, &err) < 0 ||
            fy_multifd_recv_new_channel(d->r, rd, NULL, 0, &err) != i) {
            T_FAIL("setup: %s", err ? fy_error_msg(err) : "?");
            fy_error_free(err);
            return -1;
        }
    }
    return d->r ? 0 : -1;
}

static void dst_close(Dst *d)
{
    fy_multifd_recv_free(d->r);
    for (int i = 0; i < d->n; i++)
        fy_channel_close(d->wr[i], NULL);
}

static FyMultifdPacket pkt(uint32_t flags, uint32_t normal, uint32_t zero,
                           uint64_t num)
{
    FyMultifdPacket p;
    memset(&p, 0, sizeof(p));
    p.magic = FY_MULTIFD_MAGIC;
    p.version = FY_MULTIFD_VERSION;
    p.flags = flags;
    p.pages_alloc = 128;
    p.normal_pages = normal;
    p.zero_pages = zero;
    p.next_packet_size = normal * PG;
    p.packet_num = num;
    strcpy(p.ramblock, "pc.ram");
    for (uint32_t i = 0; i < normal + zero && i < 128; i++)
        p.offset[i] = (uint64_t)i * PG;
    return p;
}

static void send_pkt(FyChannel *c, const FyMultifdPacket *p)
{
    static uint8_t wire[FY_MULTIFD_PACKET_LEN];
    fy_multifd_packet_encode(p, wire);
    T_EQ_INT(fy_channel_write_all(c, wire, sizeof(wire), NULL), 0);
}

static void send_bytes(FyChannel *c, uint8_t v, size_t n)
{
    static uint8_t buf[2 * FY_MULTIFD_PACKET_SIZE];
    memset(buf, v, n);
    T_EQ_INT(fy_channel_write_all(c, buf, n, NULL), 0);
}

/* The receiver must fail; the main loader's sync returns the message. */
static void expect_fail(Dst *d, const char *n1, const char *n2)
{
    FyError *err = NULL;
    T_EQ_INT(fy_multifd_recv_sync(d->r, &err), -1);
    const char *m = err ? fy_error_msg(err) : NULL;
    if (getenv("MFD_SHOW"))
        printf("# %s\n", m ? m : "(none)");
    T_CONTAINS(m, n1);
    if (n2)
        T_CONTAINS(m, n2);
    /* Later calls give the same first error. */
    FyError *again = NULL;
    T_EQ_INT(fy_multifd_recv_check(d->r, &again), -1);
    T_EQ_STR(again ? fy_error_msg(again) : NULL, m);
    fy_error_free(again);
    fy_error_free(err);
}

static bool block_untouched(void)
{
    return fy_multifd_buffer_is_zero(blk.host, blk.used_length);
}

/* One bad packet on channel 0, after nothing else. */
static void one_bad(FyMultifdCompression comp, const FyMultifdPacket *p,
                    const char *n1, const char *n2)
{
    Dst d;
    if (dst_open(&d, 1, comp) < 0)
        return;
    send_pkt(d.wr[0], p);
    expect_fail(&d, n1, n2);
    T_ASSERT(block_untouched());
    dst_close(&d);
}

static void test_bad_offsets(void)
{
    FyMultifdPacket p = pkt(0, 2, 1, 7);
    p.offset[1] = NPAGES * PG; /* one past the end; offset[0] is fine */
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p,
            "multifd channel 0: packet 1 (packet_num 7): field 'offset[1]' = "
            "0x40000 (a normal page) is outside RAM block 'pc.ram'", NULL);
    p = pkt(0, 1, 2, 8);
    p.offset[2] = 0x1234;
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "packet_num 8",
            "field 'offset[2]' = 0x1234 (a zero page) is not page-aligned");
    p = pkt(0, 1, 0, 9);
    p.offset[0] = ~0ull & ~0xfffull;
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "field 'offset[0]'", "outside");
}

static void test_bad_block(void)
{
    FyMultifdPacket p = pkt(0, 1, 0, 3);
    strcpy(p.ramblock, "pc.rom");
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p,
            "field 'ramblock' = 'pc.rom' is not a RAM block here", NULL);
    p = pkt(0, 1, 0, 3);
    memset(p.ramblock, 'A', sizeof(p.ramblock));
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "'ramblock' is not NUL-terminated",
            NULL);
}

static void test_bad_counts(void)
{
    FyMultifdPacket p = pkt(0, 2, 0, 1);
    p.normal_pages = 129; /* pages_alloc 128 */
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p,
            "field 'normal_pages' = 129 exceeds pages_alloc = 128", NULL);
    p = pkt(0, 2, 0, 1);
    p.pages_alloc = 12800; /* QEMU 7.2 took up to 100x and reallocated */
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "field 'pages_alloc' = 12800", NULL);
    p = pkt(0, 100, 0, 1);
    p.zero_pages = 29;
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p,
            "field 'zero_pages' = 29 exceeds pages_alloc - normal_pages = 28", NULL);
    p = pkt(0, 2, 0, 1);
    p.next_packet_size = 3 * PG;
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "field 'next_packet_size' = 12288",
            NULL);
    p = pkt(FY_MULTIFD_FLAG_ZSTD, 2, 0, 1);
    p.next_packet_size = 0xffffffffu;
    one_bad(FY_MULTIFD_COMPRESSION_ZSTD, &p,
            "field 'next_packet_size' = 4294967295 exceeds the 1048576 bytes", NULL);
}

static void test_bad_header(void)
{
    FyMultifdPacket p = pkt(0, 1, 0, 1);
    p.magic = 0x51455649;
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "field 'magic' = 0x51455649", NULL);
    p = pkt(0, 1, 0, 1);
    p.version = 2;
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "field 'version' = 2", NULL);
    p = pkt(FY_MULTIFD_FLAG_DEVICE_STATE, 1, 0, 1);
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "device state packets", NULL);
    p = pkt(0x80000000u, 1, 0, 1);
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "unknown bits 0x80000000", NULL);
    p = pkt(FY_MULTIFD_FLAG_ZLIB, 1, 0, 1);
    one_bad(FY_MULTIFD_COMPRESSION_ZSTD, &p,
            "says compression zlib, but multifd-compression here is zstd", NULL);
    p = pkt(FY_MULTIFD_FLAG_QPL, 1, 0, 1);
    one_bad(FY_MULTIFD_COMPRESSION_NONE, &p, "says compression qpl", NULL);
}

static void test_truncated(void)
{
    Dst d;
    /* Half a header, then the source goes away. */
    if (dst_open(&d, 1, FY_MULTIFD_COMPRESSION_NONE) < 0)
        return;
    send_bytes(d.wr[0], 0x11, 100);
    fy_channel_shutdown(d.wr[0], FY_SHUTDOWN_WRITE, NULL);
    expect_fail(&d, "multifd channel 0: packet 1: header: ",
                "end of stream after 100 of 1344 bytes");
    dst_close(&d);

    /* A header for 2 pages and only 1.5 of them. */
    if (dst_open(&d, 1, FY_MULTIFD_COMPRESSION_NONE) < 0)
        return;
    FyMultifdPacket p = pkt(0, 2, 0, 4);
    p.offset[1] = 5 * PG; /* not adjacent: two iovecs */
    send_pkt(d.wr[0], &p);
    send_bytes(d.wr[0], 0x77, PG + PG / 2);
    fy_channel_shutdown(d.wr[0], FY_SHUTDOWN_WRITE, NULL);
    expect_fail(&d, "multifd channel 0: packet 1 (packet_num 4): ",
                "end of stream after 6144 of 8192 bytes");
    dst_close(&d);

    /* A header and no page at all. */
    if (dst_open(&d, 1, FY_MULTIFD_COMPRESSION_NONE) < 0)
        return;
    p = pkt(0, 1, 0, 4);
    send_pkt(d.wr[0], &p);
    fy_channel_shutdown(d.wr[0], FY_SHUTDOWN_WRITE, NULL);
    expect_fail(&d, "packet_num 4", "end of stream before the 1 pages");
    dst_close(&d);

    /* Clean end at a packet boundary, but before the SYNC. */
    if (dst_open(&d, 1, FY_MULTIFD_COMPRESSION_NONE) < 0)
        return;
    p = pkt(0, 1, 0, 4);
    send_pkt(d.wr[0], &p);
    send_bytes(d.wr[0], 0x42, PG);
    fy_channel_shutdown(d.wr[0], FY_SHUTDOWN_WRITE, NULL);
    expect_fail(&d, "multifd channel 0: the stream ended after 1 packets, "
                "before its SYNC packet", NULL);
    T_EQ_INT(blk.host[0], 0x42);
    dst_close(&d);
}

static uint32_t comp_flag(FyMultifdCompression c)
{
    return c == FY_MULTIFD_COMPRESSION_ZLIB ? FY_MULTIFD_FLAG_ZLIB
         : c == FY_MULTIFD_COMPRESSION_ZSTD ? FY_MULTIFD_FLAG_ZSTD : 0;
}

/* ---- compressed chunks made by the test's own encoders ---- */

static uint8_t src_pages[8][PG];

static void make_pages(void)
{
    uint64_t seed = 42;
    for (int i = 0; i < 8; i++)
        mfd_fill_page(src_pages[i], 1 + i % 2, &seed);
}

/* n pages into one chunk, QEMU's way: Z_SYNC_FLUSH after the last. */
static size_t zlib_chunk(z_stream *zs, uint8_t *out, size_t cap, int first, int n)
{
    size_t len = 0;
    for (int i = first; i < first + n; i++) {
        zs->next_in = src_pages[i];
        zs->avail_in = PG;
        do {
            zs->next_out = out + len;
            zs->avail_out = (uInt)(cap - len);
            deflate(zs, i + 1 == first + n ? Z_SYNC_FLUSH : Z_NO_FLUSH);
            len = cap - zs->avail_out;
        } while (zs->avail_in || zs->avail_out == 0);
    }
    return len;
}

static size_t zstd_chunk(ZSTD_CCtx *cc, uint8_t *out, size_t cap, int first, int n)
{
    ZSTD_outBuffer o = { out, cap, 0 };
    for (int i = first; i < first + n; i++) {
        ZSTD_inBuffer in = { src_pages[i], PG, 0 };
        ZSTD_EndDirective op = i + 1 == first + n ? ZSTD_e_flush : ZSTD_e_continue;
        size_t r;
        do {
            r = ZSTD_compressStream2(cc, &o, &in, op);
        } while (!ZSTD_isError(r) && (in.pos < in.size || (op == ZSTD_e_flush && r)));
    }
    return o.pos;
}

static uint8_t chunk[1 << 20];

/* A compressed packet claiming `claim` pages with a chunk of `actual`. */
static void compressed_packet(Dst *d, FyMultifdCompression comp, void *enc,
                              int first, int actual, int claim, uint64_t num)
{
    size_t len = comp == FY_MULTIFD_COMPRESSION_ZLIB
               ? zlib_chunk(enc, chunk, sizeof(chunk), first, actual)
               : zstd_chunk(enc, chunk, sizeof(chunk), first, actual);
    FyMultifdPacket p = pkt(comp_flag(comp), (uint32_t)claim, 0, num);
    for (int i = 0; i < claim; i++)
        p.offset[i] = (uint64_t)(first + i) * PG;
    p.next_packet_size = (uint32_t)len;
    send_pkt(d->wr[0], &p);
    T_EQ_INT(fy_channel_write_all(d->wr[0], chunk, len, NULL), 0);
}

static void sync_packet(Dst *d, int ch, uint64_t num)
{
    FyMultifdPacket p = pkt(FY_MULTIFD_FLAG_SYNC, 0, 0, num);
    p.next_packet_size = 0;
    send_pkt(d->wr[ch], &p);
}

typedef struct Enc {
    z_stream zs;
    ZSTD_CCtx *cc;
} Enc;

static void *enc_new(Enc *e, FyMultifdCompression comp)
{
    memset(e, 0, sizeof(*e));
    if (comp == FY_MULTIFD_COMPRESSION_ZLIB) {
        deflateInit(&e->zs, 1);
        return &e->zs;
    }
    e->cc = ZSTD_createCCtx();
    return e->cc;
}

static void enc_free(Enc *e, FyMultifdCompression comp)
{
    if (comp == FY_MULTIFD_COMPRESSION_ZLIB)
        deflateEnd(&e->zs);
    else
        ZSTD_freeCCtx(e->cc);
}

static void compressed_cases(FyMultifdCompression comp, const char *name)
{
    Dst d;
    Enc e;
    FyError *err = NULL;
    make_pages();

    /* Good: two packets on one stream, then SYNC; pages land. */
    if (dst_open(&d, 1, comp) < 0)
        return;
    void *enc = enc_new(&e, comp);
    compressed_packet(&d, comp, enc, 0, 3, 3, 1);
    compressed_packet(&d, comp, enc, 3, 2, 2, 2);
    sync_packet(&d, 0, 3);
    T_EQ_INT(fy_multifd_recv_sync(d.r, &err), 0);
    if (err)
        T_FAIL("%s: %s", name, fy_error_msg(err));
    fy_error_free(err);
    err = NULL;
    T_EQ_MEM(blk.host, src_pages, 5 * PG);
    enc_free(&e, comp);
    dst_close(&d);

    /* Fewer pages in the chunk than the header lists. */
    if (dst_open(&d, 1, comp) < 0)
        return;
    enc = enc_new(&e, comp);
    compressed_packet(&d, comp, enc, 0, 1, 2, 5);
    expect_fail(&d, "multifd channel 0: packet 1 (packet_num 5): ",
                "compressed bytes end after 1 of 2 pages");
    enc_free(&e, comp);
    dst_close(&d);

    /* More. */
    if (dst_open(&d, 1, comp) < 0)
        return;
    enc = enc_new(&e, comp);
    compressed_packet(&d, comp, enc, 0, 3, 2, 6);
    expect_fail(&d, "packet_num 6", "holds more than the 2 pages");
    enc_free(&e, comp);
    dst_close(&d);

    /* Garbage. */
    if (dst_open(&d, 1, comp) < 0)
        return;
    FyMultifdPacket p = pkt(comp_flag(comp), 1, 0, 9);
    p.next_packet_size = 300;
    send_pkt(d.wr[0], &p);
    send_bytes(d.wr[0], 0xff, 300);
    expect_fail(&d, "packet_num 9", comp == FY_MULTIFD_COMPRESSION_ZLIB
                ? "zlib: inflate failed in page 0 of 1"
                : "zstd: decompression failed in page 0 of 1");
    dst_close(&d);

    /* A good packet, then one whose chunk is cut short and padded. */
    if (dst_open(&d, 1, comp) < 0)
        return;
    enc = enc_new(&e, comp);
    compressed_packet(&d, comp, enc, 0, 2, 2, 1);
    size_t len = comp == FY_MULTIFD_COMPRESSION_ZLIB
               ? zlib_chunk(enc, chunk, sizeof(chunk), 2, 4)
               : zstd_chunk(enc, chunk, sizeof(chunk), 2, 4);
    memset(chunk + len / 2, 0, len - len / 2);
    p = pkt(comp_flag(comp), 4, 0, 2);
    p.next_packet_size = (uint32_t)len;
    send_pkt(d.wr[0], &p);
    T_EQ_INT(fy_channel_write_all(d.wr[0], chunk, len, NULL), 0);
    expect_fail(&d, "multifd channel 0: packet 2 (packet_num 2): ", name);
    enc_free(&e, comp);
    dst_close(&d);

    /* The chunk itself cut off by the end of the stream. */
    if (dst_open(&d, 1, comp) < 0)
        return;
    p = pkt(comp_flag(comp), 1, 0, 3);
    p.next_packet_size = 5000;
    send_pkt(d.wr[0], &p);
    send_bytes(d.wr[0], 0, 1000);
    fy_channel_shutdown(d.wr[0], FY_SHUTDOWN_WRITE, NULL);
    expect_fail(&d, "packet_num 3", "end of stream after 1000 of 5000 bytes");
    dst_close(&d);
}

static void test_zlib_chunks(void)
{
    compressed_cases(FY_MULTIFD_COMPRESSION_ZLIB, "zlib");
}

static void test_zstd_chunks(void)
{
    compressed_cases(FY_MULTIFD_COMPRESSION_ZSTD, "zstd");
}

/* Two channels: the bad one fails the receiver; the quiet one is shut
 * down, so the sync returns and free() does not hang on it. */
static void test_first_error_wins(void)
{
    Dst d;
    if (dst_open(&d, 2, FY_MULTIFD_COMPRESSION_NONE) < 0)
        return;
    FyMultifdPacket p = pkt(0, 1, 0, 11);
    send_pkt(d.wr[1], &p);
    send_bytes(d.wr[1], 0x33, PG);
    p = pkt(0, 1, 0, 12);
    p.offset[0] = 3;
    send_pkt(d.wr[1], &p);
    expect_fail(&d, "multifd channel 1: packet 2 (packet_num 12): field 'offset[0]'",
                NULL);
    T_EQ_INT(blk.host[0], 0x33); /* the good packet before it landed */
    /* Channel 0's source side now sees the shutdown as end of stream. */
    uint8_t b;
    T_EQ_INT(fy_channel_read_all(d.wr[0], &b, 1, NULL), 1);
    dst_close(&d);
}

static void test_handshakes(void)
{
    FyError *err = NULL;
    FyMultifdRecvConfig cfg;
    fy_multifd_recv_config_init(&cfg);
    cfg.channels = 2;
    memcpy(cfg.uuid, UUID, 16);
    cfg.ram = &list;
    FyMultifdRecv *r = fy_multifd_recv_new(&cfg, &err);
    T_ASSERT(r);
    FyChannel *a, *b;

    /* Wrong uuid. */
    fy_channel_socketpair(&a, &b, &err);
    uint8_t other[16] = { 0 };
    fy_multifd_write_init(a, other, 0, &err);
    T_EQ_INT(fy_multifd_recv_new_channel(r, b, NULL, 0, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "received uuid '00000000-0000-");
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "expected uuid '01020304-0506-");
    fy_error_clear(&err);
    fy_channel_close(a, NULL);
    fy_channel_close(b, NULL);

    /* id 2 of 2 channels. */
    fy_channel_socketpair(&a, &b, &err);
    fy_multifd_write_init(a, UUID, 2, &err);
    T_EQ_INT(fy_multifd_recv_new_channel(r, b, NULL, 0, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "field 'id' = 2, but there are only 2");
    fy_error_clear(&err);
    fy_channel_close(a, NULL);
    fy_channel_close(b, NULL);

    /* The main stream's magic is not a multifd handshake. */
    fy_channel_socketpair(&a, &b, &err);
    fy_channel_write_all(a, "QEVM\0\0\0\3", 8, &err);
    send_bytes(a, 0, 56);
    T_EQ_INT(fy_multifd_recv_new_channel(r, b, NULL, 0, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "field 'magic' = 0x5145564d");
    fy_error_clear(&err);
    fy_channel_close(a, NULL);
    fy_channel_close(b, NULL);

    /* The same id twice: the second is refused, the first works on. */
    FyChannel *a2, *b2;
    fy_channel_socketpair(&a, &b, &err);
    fy_channel_socketpair(&a2, &b2, &err);
    fy_multifd_write_init(a, UUID, 1, &err);
    fy_multifd_write_init(a2, UUID, 1, &err);
    T_EQ_INT(fy_multifd_recv_new_channel(r, b, NULL, 0, &err), 1);
    T_EQ_INT(fy_multifd_recv_new_channel(r, b2, NULL, 0, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "multifd channel 1 is already connected");
    fy_error_clear(&err);
    T_ASSERT(!fy_multifd_recv_all_channels_created(r));
    T_EQ_INT(fy_multifd_recv_check(r, &err), 0);
    fy_channel_close(b2, NULL);
    fy_channel_close(a2, NULL);
    fy_multifd_recv_free(r);
    fy_channel_close(a, NULL);
}

int main(void)
{
    static uint8_t ram[NPAGES * PG] __attribute__((aligned(4096)));
    strcpy(blk.idstr, "pc.ram");
    blk.host = ram;
    blk.used_length = sizeof(ram);
    blk.page_size = PG;
    blk.fd = -1;
    list.count = 1;
    list.blocks[0] = &blk;

    T_RUN(test_bad_offsets);
    T_RUN(test_bad_block);
    T_RUN(test_bad_counts);
    T_RUN(test_bad_header);
    T_RUN(test_truncated);
    T_RUN(test_zlib_chunks);
    T_RUN(test_zstd_chunks);
    T_RUN(test_first_error_wins);
    T_RUN(test_handshakes);
    return t_done();
}
