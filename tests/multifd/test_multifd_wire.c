/*
 * test_multifd_wire: the multifd handshake and packet header, byte for
 * byte against layouts written out by hand from QEMU's MultiFDInit_t and
 * MultiFDPacket_t, and every reason a destination refuses one.
 */
#include <unistd.h>

#include "ferry/multifd.h"
#include "t.h"

static const uint8_t UUID[16] = { 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                  0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff };
static const uint8_t ZERO_UUID[16];

static void test_constants(void)
{
    T_EQ_INT(FY_MULTIFD_INIT_LEN, 64);
    T_EQ_INT(FY_MULTIFD_PAGES_PER_PACKET, 128);
    T_EQ_INT(FY_MULTIFD_PACKET_LEN, 1344);
    T_EQ_INT(FY_MULTIFD_FLAG_ZLIB, 2);
    T_EQ_INT(FY_MULTIFD_FLAG_ZSTD, 4);
    T_EQ_INT(FY_MULTIFD_FLAG_COMPRESSION_MASK, 0x3e);
    T_EQ_INT(FY_MULTIFD_FLAG_DEVICE_STATE, 0x40);
    T_EQ_STR(fy_multifd_compression_name(FY_MULTIFD_COMPRESSION_ZSTD), "zstd");
    T_EQ_INT(fy_multifd_compression_parse("zlib"), FY_MULTIFD_COMPRESSION_ZLIB);
    T_EQ_INT(fy_multifd_compression_parse("qpl"), -1);
}

static void test_init_golden(void)
{
    uint8_t want[64] = {
        0x11, 0x22, 0x33, 0x44, /* magic */
        0x00, 0x00, 0x00, 0x01, /* version */
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, /* uuid */
        0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
        0x03, /* id; the rest is unused and zero */
    };
    uint8_t got[64];
    memset(got, 0xa5, sizeof(got));
    fy_multifd_init_encode(got, UUID, 3);
    T_EQ_MEM(got, want, 64);

    FyError *err = NULL;
    T_EQ_INT(fy_multifd_init_decode(want, UUID, 4, &err), 3);
    T_ASSERT(!err);
    uint8_t first4[4] = { 0x11, 0x22, 0x33, 0x44 }, qevm[4] = { 'Q', 'E', 'V', 'M' };
    T_ASSERT(fy_multifd_is_multifd_magic(first4));
    T_ASSERT(!fy_multifd_is_multifd_magic(qevm));
}

static void expect_init_error(const uint8_t *buf, const uint8_t *uuid,
                              int channels, const char *needle)
{
    FyError *err = NULL;
    T_EQ_INT(fy_multifd_init_decode(buf, uuid, channels, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, needle);
    fy_error_free(err);
}

static void test_init_rejects(void)
{
    uint8_t good[64], bad[64];
    fy_multifd_init_encode(good, UUID, 1);

    memcpy(bad, good, 64);
    bad[3] = 0x45;
    expect_init_error(bad, UUID, 2, "field 'magic' = 0x11223345");
    memcpy(bad, good, 64);
    bad[7] = 2;
    expect_init_error(bad, UUID, 2, "field 'version' = 2, expected 1");
    expect_init_error(good, ZERO_UUID, 2,
                      "received uuid '00112233-4455-6677-8899-aabbccddeeff' and "
                      "expected uuid '00000000-0000-0000-0000-000000000000'");
    /* id must be below the channel count (QEMU 7.2 let id == channels in). */
    expect_init_error(good, UUID, 1, "field 'id' = 1, but there are only 1 channels");
    memcpy(bad, good, 64);
    bad[24] = 255;
    expect_init_error(bad, UUID, 255, "field 'id' = 255");
    FyError *err = NULL;
    T_EQ_INT(fy_multifd_init_decode(good, UUID, 2, &err), 1);
    T_ASSERT(!err);
}

/* The handshake read from a channel, with the first 4 bytes already taken
 * by the caller to classify it, and cut short. */
static void test_init_channel(void)
{
    FyChannel *a, *b;
    FyError *err = NULL;
    T_ASSERT(fy_channel_socketpair(&a, &b, &err) == 0);
    T_ASSERT(fy_multifd_write_init(a, UUID, 2, &err) == 0);
    uint8_t first4[4];
    T_EQ_INT(fy_channel_read_all(b, first4, 4, &err), 0);
    T_ASSERT(fy_multifd_is_multifd_magic(first4));
    T_EQ_INT(fy_multifd_read_init(b, first4, 4, UUID, 3, &err), 2);
    T_ASSERT(!err);

    uint8_t whole[64];
    fy_multifd_init_encode(whole, UUID, 0);
    T_EQ_INT(fy_channel_write_all(a, whole, 40, &err), 0); /* 40 of 64 bytes */
    fy_channel_shutdown(a, FY_SHUTDOWN_WRITE, NULL);
    T_EQ_INT(fy_multifd_read_init(b, NULL, 0, UUID, 3, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "multifd handshake");
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "40 of 64");
    fy_error_free(err);
    fy_channel_close(a, NULL);
    fy_channel_close(b, NULL);
}

static FyMultifdPacket sample_packet(void)
{
    FyMultifdPacket p;
    memset(&p, 0, sizeof(p));
    p.magic = FY_MULTIFD_MAGIC;
    p.version = FY_MULTIFD_VERSION;
    p.flags = FY_MULTIFD_FLAG_ZLIB;
    p.pages_alloc = 128;
    p.normal_pages = 2;
    p.next_packet_size = 0x1234;
    p.packet_num = 0x0102030405060708ull;
    p.zero_pages = 1;
    strcpy(p.ramblock, "pc.ram");
    p.offset[0] = 0x1000;
    p.offset[1] = 0x3000;
    p.offset[2] = 0x7000;
    return p;
}

static void test_packet_golden(void)
{
    static const uint8_t head[72] = {
        0x11, 0x22, 0x33, 0x44, /* magic */
        0x00, 0x00, 0x00, 0x01, /* version */
        0x00, 0x00, 0x00, 0x02, /* flags: zlib */
        0x00, 0x00, 0x00, 0x80, /* pages_alloc 128 */
        0x00, 0x00, 0x00, 0x02, /* normal_pages */
        0x00, 0x00, 0x12, 0x34, /* next_packet_size */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* packet_num */
        0x00, 0x00, 0x00, 0x01, /* zero_pages */
        0, 0, 0, 0,             /* unused32[1] */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* unused64[3] */
        0, 0, 0, 0, 0, 0, 0, 0,
        'p', 'c', '.', 'r', 'a', 'm', 0, 0, /* ramblock[256] starts at 64 */
    };
    static const uint8_t offsets[24] = {
        0, 0, 0, 0, 0, 0, 0x10, 0x00, /* normal */
        0, 0, 0, 0, 0, 0, 0x30, 0x00, /* normal */
        0, 0, 0, 0, 0, 0, 0x70, 0x00, /* zero */
    };
    FyMultifdPacket p = sample_packet();
    static uint8_t wire[FY_MULTIFD_PACKET_LEN];
    memset(wire, 0xa5, sizeof(wire));
    fy_multifd_packet_encode(&p, wire);
    T_EQ_MEM(wire, head, sizeof(head));
    for (int i = 72; i < 320; i++)
        T_EQ_INT(wire[i], 0);
    T_EQ_MEM(wire + 320, offsets, sizeof(offsets));
    for (int i = 320 + 24; i < (int)FY_MULTIFD_PACKET_LEN; i++)
        T_EQ_INT(wire[i], 0);

    FyMultifdPacket q;
    memset(&q, 0xff, sizeof(q));
    fy_multifd_packet_decode(wire, &q);
    T_EQ_INT(q.magic, p.magic);
    T_EQ_INT(q.flags, 2);
    T_EQ_INT(q.pages_alloc, 128);
    T_EQ_INT(q.normal_pages, 2);
    T_EQ_INT(q.zero_pages, 1);
    T_EQ_INT(q.next_packet_size, 0x1234);
    T_ASSERT(q.packet_num == 0x0102030405060708ull);
    T_EQ_STR(q.ramblock, "pc.ram");
    T_ASSERT(q.offset[0] == 0x1000 && q.offset[1] == 0x3000 && q.offset[2] == 0x7000);
}

/* QEMU 7.2 wrote bytes 32..63 as u64 unused[4] = 0 and called
 * normal_pages pages_used: the same decoder reads it, zero_pages = 0. */
static void test_packet_7_2(void)
{
    static uint8_t wire[FY_MULTIFD_PACKET_LEN];
    memset(wire, 0, sizeof(wire));
    const uint8_t head[32] = {
        0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1, 0, 0, 0, 0, /* nocomp */
        0, 0, 0, 0x80, 0, 0, 0, 1, 0, 0, 0x10, 0x00,   /* 1 page, 4096 bytes */
        0, 0, 0, 0, 0, 0, 0, 9,                        /* packet_num 9 */
    };
    memcpy(wire, head, sizeof(head));
    strcpy((char *)wire + 64, "pc.ram");
    wire[320 + 6] = 0x20; /* offset 0x2000 */
    FyMultifdPacket p;
    fy_multifd_packet_decode(wire, &p);
    T_EQ_INT(p.normal_pages, 1);
    T_EQ_INT(p.zero_pages, 0);
    T_ASSERT(p.offset[0] == 0x2000);

    static uint8_t block_mem[16 * 4096];
    FyRamBlock rb = { .host = block_mem, .used_length = sizeof(block_mem),
                      .page_size = 4096, .fd = -1 };
    strcpy(rb.idstr, "pc.ram");
    FyRamList list = { .count = 1, .blocks = { &rb } };
    FyMultifdCheck chk = { FY_MULTIFD_COMPRESSION_NONE, &list };
    FyRamBlock *got = NULL;
    FyError *err = NULL;
    T_EQ_INT(fy_multifd_packet_check(&p, &chk, &got, &err), 0);
    T_ASSERT(got == &rb);
    fy_error_free(err);
}

static uint8_t ram_a[64 * 4096];
static FyRamBlock block_a;
static FyRamList ram_list;

static void setup_ram(void)
{
    memset(&block_a, 0, sizeof(block_a));
    strcpy(block_a.idstr, "pc.ram");
    block_a.host = ram_a;
    block_a.used_length = sizeof(ram_a);
    block_a.page_size = 4096;
    block_a.fd = -1;
    ram_list.count = 1;
    ram_list.blocks[0] = &block_a;
}

static void expect_check(const FyMultifdPacket *p, FyMultifdCompression comp,
                         const char *needle)
{
    FyMultifdCheck chk = { comp, &ram_list };
    FyRamBlock *rb = (FyRamBlock *)1;
    FyError *err = NULL;
    int r = fy_multifd_packet_check(p, &chk, &rb, &err);
    if (!needle) {
        T_EQ_INT(r, 0);
        if (err)
            T_FAIL("unexpected error: %s", fy_error_msg(err));
    } else {
        T_EQ_INT(r, -1);
        T_ASSERT(rb == NULL);
        T_CONTAINS(err ? fy_error_msg(err) : NULL, needle);
    }
    fy_error_free(err);
}

static FyMultifdPacket nocomp_packet(void)
{
    FyMultifdPacket p = sample_packet();
    p.flags = FY_MULTIFD_FLAG_NOCOMP;
    p.next_packet_size = 2 * 4096;
    return p;
}

static void test_packet_check(void)
{
    setup_ram();
    FyMultifdPacket p = nocomp_packet();
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, NULL);

    p = nocomp_packet(); p.magic = 0x11223345;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "field 'magic' = 0x11223345");
    p = nocomp_packet(); p.version = 7;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "field 'version' = 7");
    p = nocomp_packet(); p.flags = FY_MULTIFD_FLAG_DEVICE_STATE;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "device state packets");
    p = nocomp_packet(); p.flags = 0x100;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "unknown bits 0x100");
    p = nocomp_packet(); p.flags = FY_MULTIFD_FLAG_ZSTD;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE,
                 "says compression zstd, but multifd-compression here is none");
    p = sample_packet();
    expect_check(&p, FY_MULTIFD_COMPRESSION_ZSTD, "says compression zlib");
    p = nocomp_packet(); p.pages_alloc = 129;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "field 'pages_alloc' = 129");
    p = nocomp_packet(); p.pages_alloc = 1;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE,
                 "field 'normal_pages' = 2 exceeds pages_alloc = 1");
    p = nocomp_packet(); p.zero_pages = 127;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "field 'zero_pages' = 127");
    p = nocomp_packet(); p.zero_pages = 0xffffffffu;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "field 'zero_pages'");
    p = nocomp_packet(); p.next_packet_size = 4096;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "field 'next_packet_size' = 4096");
    p = sample_packet(); p.next_packet_size = FY_MULTIFD_COMPRESSED_MAX + 1;
    expect_check(&p, FY_MULTIFD_COMPRESSION_ZLIB, "field 'next_packet_size' = 1048577");
    p = sample_packet(); p.next_packet_size = 0;
    expect_check(&p, FY_MULTIFD_COMPRESSION_ZLIB, "next_packet_size' = 0 with 2");
    /* No normal pages: nothing follows, the field is not looked at (QEMU
     * 7.2's SYNC packets carry the previous packet's size). */
    p = nocomp_packet(); p.normal_pages = 0; p.zero_pages = 1;
    p.next_packet_size = 524288;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, NULL);
    p = nocomp_packet(); memset(p.ramblock, 'x', sizeof(p.ramblock));
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "not NUL-terminated");
    p = nocomp_packet(); strcpy(p.ramblock, "vga.vram");
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE,
                 "field 'ramblock' = 'vga.vram' is not a RAM block here");
    p = nocomp_packet(); p.offset[1] = 0x3001;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE,
                 "field 'offset[1]' = 0x3001 (a normal page) is not page-aligned");
    p = nocomp_packet(); p.offset[2] = sizeof(ram_a);
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE,
                 "field 'offset[2]' = 0x40000 (a zero page) is outside RAM block "
                 "'pc.ram' of 0x40000 bytes");
    p = nocomp_packet(); p.offset[0] = 0xfffffffffffff000ull;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, "is outside RAM block");
    p = nocomp_packet(); p.offset[2] = sizeof(ram_a) - 4096;
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, NULL);

    /* A SYNC packet: no pages, a stale block name and no compression bits
     * (QEMU's), accepted whatever the method. */
    memset(&p, 0, sizeof(p));
    p.magic = FY_MULTIFD_MAGIC;
    p.version = 1;
    p.flags = FY_MULTIFD_FLAG_SYNC;
    p.pages_alloc = 128;
    strcpy(p.ramblock, "gone.block");
    expect_check(&p, FY_MULTIFD_COMPRESSION_ZSTD, NULL);
    expect_check(&p, FY_MULTIFD_COMPRESSION_NONE, NULL);
    /* Only zero pages, compressed: no chunk. */
    p = sample_packet();
    p.normal_pages = 0;
    p.zero_pages = 3;
    p.next_packet_size = 0;
    expect_check(&p, FY_MULTIFD_COMPRESSION_ZLIB, NULL);
}

int main(void)
{
    T_RUN(test_constants);
    T_RUN(test_init_golden);
    T_RUN(test_init_rejects);
    T_RUN(test_init_channel);
    T_RUN(test_packet_golden);
    T_RUN(test_packet_7_2);
    T_RUN(test_packet_check);
    return t_done();
}
