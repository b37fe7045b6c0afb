/*
 * test_postcopy_wire.c: postcopy's messages byte for byte -- page
 * requests, the received bitmap (golden bytes worked out by hand from
 * QEMU's format), block names, ADVISE -- and their decoders on bad input.
 */
#include <time.h>

#include <jansson.h>

#include "ferry/channel.h"
#include "ferry/stream.h"
#include "pc-test.h"
#include "t.h"

static void test_req_pages_golden(void)
{
    FyPostcopyReqEncoder e;
    uint8_t buf[FY_POSTCOPY_REQ_MAX];
    uint16_t type;
    fy_postcopy_req_encoder_reset(&e);

    int n = fy_postcopy_encode_req_pages(&e, "pc.ram", 0x2000, 0x1000, buf, &type);
    static const uint8_t id[] = { 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0x10, 0,
                                  6, 'p', 'c', '.', 'r', 'a', 'm' };
    T_EQ_INT(type, 3);
    T_EQ_INT(n, sizeof(id));
    T_EQ_MEM(buf, id, sizeof(id));

    /* Same block: REQ_PAGES, no name. */
    n = fy_postcopy_encode_req_pages(&e, "pc.ram", 0x123456789000ull, 0x200000, buf,
                                     &type);
    static const uint8_t same[] = { 0, 0, 0x12, 0x34, 0x56, 0x78, 0x90, 0,
                                    0, 0x20, 0, 0 };
    T_EQ_INT(type, 4);
    T_EQ_INT(n, 12);
    T_EQ_MEM(buf, same, 12);

    n = fy_postcopy_encode_req_pages(&e, "vga.vram", 0, 0x1000, buf, &type);
    T_EQ_INT(type, 3);
    T_EQ_INT(n, 13 + 8);
    n = fy_postcopy_encode_req_pages(&e, "pc.ram", 0, 0x1000, buf, &type);
    T_EQ_INT(type, 3);
    /* A new connection names its block again. */
    fy_postcopy_req_encoder_reset(&e);
    n = fy_postcopy_encode_req_pages(&e, "pc.ram", 0, 0x1000, buf, &type);
    T_EQ_INT(type, 3);
    T_EQ_INT(n, 19);

    char longname[300];
    memset(longname, 'x', 299);
    longname[299] = 0;
    T_EQ_INT(fy_postcopy_encode_req_pages(&e, longname, 0, 0x1000, buf, &type), -1);
}

static void test_req_pages_decode(void)
{
    static const uint8_t id[] = { 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0x10, 0,
                                  6, 'p', 'c', '.', 'r', 'a', 'm' };
    char name[256];
    uint64_t start;
    uint32_t len;
    FyError *err = NULL;

    T_EQ_INT(fy_postcopy_decode_req_pages(3, id, sizeof(id), name, &start, &len, &err), 0);
    T_EQ_STR(name, "pc.ram");
    T_EQ_INT(start, 0x2000);
    T_EQ_INT(len, 0x1000);
    T_EQ_INT(fy_postcopy_decode_req_pages(4, id, 12, name, &start, &len, &err), 0);
    T_EQ_STR(name, "");
    T_EQ_INT(start, 0x2000);

    /* REQ_PAGES must be exactly 12 bytes. */
    T_EQ_INT(fy_postcopy_decode_req_pages(4, id, 13, name, &start, &len, &err), -1);
    T_CONTAINS(fy_error_msg(err), "REQ_PAGES: length 13 (expected 12)");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_decode_req_pages(4, id, 11, name, &start, &len, &err), -1);
    fy_error_clear(&err);
    /* REQ_PAGES_ID: the name length must account for every byte. */
    T_EQ_INT(fy_postcopy_decode_req_pages(3, id, 12, name, &start, &len, &err), -1);
    T_CONTAINS(fy_error_msg(err), "REQ_PAGES_ID: length 12");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_decode_req_pages(3, id, sizeof(id) - 1, name, &start, &len,
                                          &err), -1);
    T_CONTAINS(fy_error_msg(err), "name length 6");
    fy_error_clear(&err);
    uint8_t big[13 + 255 + 1] = { 0 };
    big[12] = 255;
    T_EQ_INT(fy_postcopy_decode_req_pages(3, big, sizeof(big), name, &start, &len,
                                          &err), -1);
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_decode_req_pages(3, big, 13 + 255, name, &start, &len, &err),
             0);
    T_EQ_INT(strlen(name), 0);   /* the NULs inside: an empty-looking name */
    uint8_t empty[13] = { 0 };
    T_EQ_INT(fy_postcopy_decode_req_pages(3, empty, 13, name, &start, &len, &err), -1);
    T_CONTAINS(fy_error_msg(err), "empty RAM block name");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_decode_req_pages(2, id, 4, name, &start, &len, &err), -1);
    T_CONTAINS(fy_error_msg(err), "type 2 is not a page request");
    fy_error_clear(&err);
}

static void test_block_name(void)
{
    uint8_t buf[256];
    char name[256];
    FyError *err = NULL;
    T_EQ_INT(fy_postcopy_encode_block_name("pc.ram", buf), 7);
    T_EQ_MEM(buf, "\x06pc.ram", 7);
    T_EQ_INT(fy_postcopy_decode_block_name(buf, 7, name, &err), 0);
    T_EQ_STR(name, "pc.ram");
    T_EQ_INT(fy_postcopy_decode_block_name(buf, 6, name, &err), -1);
    T_CONTAINS(fy_error_msg(err), "length 6");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_decode_block_name((const uint8_t *)"\x00", 1, name, &err), -1);
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_decode_block_name((const uint8_t *)"\x03" "a\0b", 4, name,
                                           &err), -1);
    T_CONTAINS(fy_error_msg(err), "NUL");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_decode_block_name(buf, 0, name, &err), -1);
    fy_error_clear(&err);
}

/* 10 pages, received {0, 3, 9}: byte 0 = 0b00001001, byte 1 = 0b10, padded
 * to 8 bytes. */
static const uint8_t golden10[] = {
    0, 0, 0, 0, 0, 0, 0, 8,
    0x09, 0x02, 0, 0, 0, 0, 0, 0,
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
};

/* 70 pages, received {1, 64, 69}: 9 bytes, padded to 16; byte 8 holds
 * pages 64..71: bits 0 and 5. */
static const uint8_t golden70[] = {
    0, 0, 0, 0, 0, 0, 0, 16,
    0x02, 0, 0, 0, 0, 0, 0, 0,
    0x21, 0, 0, 0, 0, 0, 0, 0,
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
};

static void test_recv_bitmap_golden(void)
{
    unsigned long map[2] = { 0, 0 };
    uint8_t out[64];

    map[0] = 1ul << 0 | 1ul << 3 | 1ul << 9;
    T_EQ_INT(fy_postcopy_recv_bitmap_body_len(10), sizeof(golden10));
    fy_postcopy_recv_bitmap_encode(map, 10, out);
    T_EQ_MEM(out, golden10, sizeof(golden10));
    /* A stray bit past the block's end is not sent. */
    map[0] |= 1ul << 12;
    fy_postcopy_recv_bitmap_encode(map, 10, out);
    T_EQ_MEM(out, golden10, sizeof(golden10));

    unsigned long m70[FY_BITMAP_LONGS(70)] = { 0 };
    m70[0] = 1ul << 1;
    m70[64 / FY_BITS_PER_LONG] |= 1ul << (64 % FY_BITS_PER_LONG);
    m70[69 / FY_BITS_PER_LONG] |= 1ul << (69 % FY_BITS_PER_LONG);
    T_EQ_INT(fy_postcopy_recv_bitmap_body_len(70), sizeof(golden70));
    fy_postcopy_recv_bitmap_encode(m70, 70, out);
    T_EQ_MEM(out, golden70, sizeof(golden70));

    /* Exactly 64 pages: 8 bytes, no padding. */
    T_EQ_INT(fy_postcopy_recv_bitmap_body_len(64), 24);
    T_EQ_INT(fy_postcopy_recv_bitmap_body_len(65), 32);
    T_EQ_INT(fy_postcopy_recv_bitmap_body_len(0), 16);
}

static void test_recv_bitmap_decode(void)
{
    unsigned long map[FY_BITMAP_LONGS(70)];
    FyError *err = NULL;

    T_EQ_INT(fy_postcopy_recv_bitmap_decode(golden10, sizeof(golden10), 10, map,
                                            &err), 0);
    T_EQ_INT(map[0], 1ul << 0 | 1ul << 3 | 1ul << 9);
    T_EQ_INT(fy_postcopy_recv_bitmap_decode(golden70, sizeof(golden70), 70, map,
                                            &err), 0);
    T_EQ_INT(map[0], 2);
    T_EQ_INT(map[1], 0x21);   /* pages 64 and 69 */

    /* Padding bits past nbits are ignored. */
    uint8_t b[sizeof(golden10)];
    memcpy(b, golden10, sizeof(b));
    b[9] |= 0x04;   /* page 10 */
    b[12] = 0xff;   /* padding */
    T_EQ_INT(fy_postcopy_recv_bitmap_decode(b, sizeof(b), 10, map, &err), 0);
    T_EQ_INT(map[0], 1ul << 0 | 1ul << 3 | 1ul << 9);

    /* The size must be the local block's. */
    T_EQ_INT(fy_postcopy_recv_bitmap_decode(golden70, sizeof(golden70), 10, map,
                                            &err), -1);
    T_CONTAINS(fy_error_msg(err), "size 16 bytes, expected 8 for 10 pages");
    fy_error_clear(&err);
    memcpy(b, golden10, sizeof(b));
    b[0] = 0x80;  /* 2^63 */
    T_EQ_INT(fy_postcopy_recv_bitmap_decode(b, sizeof(b), 10, map, &err), -1);
    T_CONTAINS(fy_error_msg(err), "size 9223372036854775816");
    fy_error_clear(&err);
    /* End marker. */
    memcpy(b, golden10, sizeof(b));
    b[sizeof(b) - 1] ^= 1;
    T_EQ_INT(fy_postcopy_recv_bitmap_decode(b, sizeof(b), 10, map, &err), -1);
    T_CONTAINS(fy_error_msg(err), "end marker 0x0123456789abcdee");
    fy_error_clear(&err);
    /* Truncated or too long. */
    T_EQ_INT(fy_postcopy_recv_bitmap_decode(golden10, sizeof(golden10) - 1, 10, map,
                                            &err), -1);
    T_CONTAINS(fy_error_msg(err), "23 bytes, expected 24");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_recv_bitmap_decode(golden10, 7, 10, map, &err), -1);
    fy_error_clear(&err);
}

static void test_recv_bitmap_stream(void)
{
    FyRamBlock rb = { .idstr = "pc.ram", .used_length = 10 * 4096,
                      .page_size = 4096, .fd = -1 };
    unsigned long map[1] = { 0 };
    FyError *err = NULL;

    FyChannel *c = fy_channel_mem_new(golden10, sizeof(golden10));
    FyStream *f = fy_stream_new_input(c, true);
    T_EQ_INT(fy_postcopy_recv_bitmap_read(f, &rb, map, &err), 0);
    T_EQ_INT(map[0], 1ul << 0 | 1ul << 3 | 1ul << 9);
    fy_stream_close(f, NULL);

    /* A block of 70 pages gets 10 pages' worth: size refused before any
     * bitmap byte is read. */
    rb.used_length = 70 * 4096;
    c = fy_channel_mem_new(golden10, sizeof(golden10));
    f = fy_stream_new_input(c, true);
    T_EQ_INT(fy_postcopy_recv_bitmap_read(f, &rb, map, &err), -1);
    T_CONTAINS(fy_error_msg(err), "RAM block 'pc.ram': received bitmap: size 8");
    fy_error_clear(&err);
    fy_stream_close(f, NULL);

    /* The stream ends inside the bitmap. */
    rb.used_length = 10 * 4096;
    c = fy_channel_mem_new(golden10, 12);
    f = fy_stream_new_input(c, true);
    T_EQ_INT(fy_postcopy_recv_bitmap_read(f, &rb, map, &err), -1);
    T_CONTAINS(fy_error_msg(err), "RAM block 'pc.ram'");
    fy_error_clear(&err);
    fy_stream_close(f, NULL);
}

static void test_resume_ack_and_dirty(void)
{
    uint8_t b[4];
    FyError *err = NULL;
    fy_postcopy_encode_resume_ack(b);
    T_EQ_MEM(b, "\0\0\0\1", 4);
    T_EQ_INT(fy_postcopy_check_resume_ack(b, 4, &err), 0);
    T_EQ_INT(fy_postcopy_check_resume_ack(b, 3, &err), -1);
    T_CONTAINS(fy_error_msg(err), "RESUME_ACK: length 3");
    fy_error_clear(&err);
    b[3] = 2;
    T_EQ_INT(fy_postcopy_check_resume_ack(b, 4, &err), -1);
    T_CONTAINS(fy_error_msg(err), "value 2 (expected 1)");
    fy_error_clear(&err);

    /* received {0, 3, 9} of 10 -> 7 to send, nothing past page 9 */
    unsigned long recv[FY_BITMAP_LONGS(70)] = { 1ul << 0 | 1ul << 3 | 1ul << 9 };
    unsigned long dirty[FY_BITMAP_LONGS(70)];
    T_EQ_INT(fy_postcopy_dirty_from_received(recv, dirty, 10), 7);
    T_EQ_INT(dirty[0], 0x3ffu & ~(1ul << 0 | 1ul << 3 | 1ul << 9));
    memset(recv, 0, sizeof(recv));
    T_EQ_INT(fy_postcopy_dirty_from_received(recv, dirty, 70), 70);
    T_EQ_INT(dirty[1], 0x3f);
}

static void test_advise(void)
{
    FyRamBlock a = { .idstr = "pc.ram", .page_size = 4096, .fd = -1 };
    FyRamBlock h = { .idstr = "mem1", .page_size = 2 << 20, .fd = -1, .shared = true };
    FyRamList l = { .count = 1, .blocks = { &a } };
    uint8_t out[16];
    FyError *err = NULL;

    fy_postcopy_advise_encode(&l, false, out);
    static const uint8_t g[16] = { 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0 };
    T_EQ_MEM(out, g, 16);
    T_EQ_INT(fy_postcopy_advise_check(&l, false, out, 16, &err), 1);
    T_EQ_INT(fy_postcopy_advise_check(&l, false, out, 0, &err), 0);
    T_EQ_INT(fy_postcopy_advise_check(&l, false, out, 8, &err), -1);
    T_CONTAINS(fy_error_msg(err), "length 8");
    fy_error_clear(&err);

    l.count = 2;
    l.blocks[1] = &h;
    T_EQ_INT(fy_postcopy_advise_check(&l, false, out, 16, &err), -1);
    T_CONTAINS(fy_error_msg(err), "matching RAM page sizes (source 0x1000, "
               "destination 0x201000)");
    fy_error_clear(&err);
    /* An ignored shared block does not count. */
    T_EQ_INT(fy_postcopy_advise_check(&l, true, out, 16, &err), 1);

    fy_postcopy_advise_encode(&l, false, out);
    T_EQ_INT(out[5], 0x20);
    T_EQ_INT(out[6], 0x10);
    out[14] = 0x20;
    T_EQ_INT(fy_postcopy_advise_check(&l, false, out, 16, &err), -1);
    T_CONTAINS(fy_error_msg(err), "matching target page sizes (source 8192");
    fy_error_clear(&err);
}

static void test_blocktime_json(void)
{
    FyPostcopyBlocktime bt;
    memset(&bt, 0, sizeof(bt));
    bt.vcpus = 2;
    bt.total_ms = 3;
    bt.vcpu_ms[0] = 7;
    bt.vcpu_latency_ns[0] = 12345;
    bt.latency_ns = 999;
    bt.non_vcpu_latency_ns = 5;
    bt.latency_dist[4] = 2;
    json_t *j = fy_postcopy_blocktime_json(&bt);
    T_ASSERT(j != NULL);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    T_EQ_STR(s, "{\"postcopy-blocktime\":3,"
                "\"postcopy-latency\":999,"
                "\"postcopy-latency-dist\":[0,0,0,0,2,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"
                "\"postcopy-non-vcpu-latency\":5,"
                "\"postcopy-vcpu-blocktime\":[7,0],"
                "\"postcopy-vcpu-latency\":[12345,0]}");
    free(s);
    json_decref(j);
}

int main(void)
{
    T_RUN(test_req_pages_golden);
    T_RUN(test_req_pages_decode);
    T_RUN(test_block_name);
    T_RUN(test_recv_bitmap_golden);
    T_RUN(test_recv_bitmap_decode);
    T_RUN(test_recv_bitmap_stream);
    T_RUN(test_resume_ack_and_dirty);
    T_RUN(test_advise);
    T_RUN(test_blocktime_json);
    return t_done();
}
