/*
 * test_multifd_e2e: RAM from one set of memfd blocks to another over 2 and
 * 4 real channels (socketpairs, unix and tcp sockets), with every
 * compression method and zero-page-detection mode. Each case runs several
 * sync rounds; between rounds the source re-dirties pages (data to other
 * data, data to zero, zero to data) and only those are queued again, and
 * after every sync the destination must equal the source byte for byte.
 * The destination starts filled with 0xaa, so a zero page that is not
 * applied shows.
 */
#include <pthread.h>

#include "mfd-test.h"
#include "t.h"

#define RAM0 (8u << 20) /* pc.ram */
#define RAM1 (1u << 20) /* vga.vram */
#define NBLK 2

typedef struct Vm {
    FyRamBlock blocks[NBLK];
    FyRamList list;
} Vm;

typedef struct Case {
    const char *transport;
    int channels;
    FyMultifdCompression comp;
    FyMultifdZeroDetect zd;
    bool zero_copy;
    FyMultifdWire wire;
    int rounds;
} Case;

static const char *zd_name(FyMultifdZeroDetect z)
{
    return z == FY_MULTIFD_ZERO_NONE ? "none"
         : z == FY_MULTIFD_ZERO_LEGACY ? "legacy" : "multifd";
}

static int vm_init(Vm *v, uint8_t fill)
{
    if (mfd_block_init(&v->blocks[0], "pc.ram", RAM0) < 0 ||
        mfd_block_init(&v->blocks[1], "vga.vram", RAM1) < 0)
        return -1;
    v->list.count = NBLK;
    for (int b = 0; b < NBLK; b++) {
        v->list.blocks[b] = &v->blocks[b];
        if (fill)
            memset(v->blocks[b].host, fill, v->blocks[b].used_length);
    }
    return 0;
}

static void vm_fini(Vm *v)
{
    for (int b = 0; b < NBLK; b++)
        mfd_block_fini(&v->blocks[b]);
}

/* What the test, acting as the RAM sender, queued in a round. */
typedef struct Tally {
    uint64_t queued, zero, main_stream_zero;
} Tally;

/* Queue one page, or, with legacy detection, do what the RAM sender would:
 * a zero page goes on the main stream as a ZERO record, which the test
 * applies to the destination directly. */
static int put_page(FyMultifdSend *s, const Case *c, Vm *src, Vm *dst, int b,
                    uint64_t off, Tally *t, FyError **errp)
{
    bool zero = fy_multifd_buffer_is_zero(src->blocks[b].host + off, PG);
    if (c->zd == FY_MULTIFD_ZERO_LEGACY && zero) {
        memset(dst->blocks[b].host + off, 0, PG);
        t->main_stream_zero++;
        return 0;
    }
    t->queued++;
    t->zero += zero;
    return fy_multifd_queue_page(s, &src->blocks[b], off, errp);
}

static bool same(const Vm *a, const Vm *b, const char *what)
{
    for (int k = 0; k < NBLK; k++) {
        const uint8_t *x = a->blocks[k].host, *y = b->blocks[k].host;
        if (memcmp(x, y, a->blocks[k].used_length) == 0)
            continue;
        for (uint64_t off = 0; off < a->blocks[k].used_length; off += PG) {
            if (memcmp(x + off, y + off, PG)) {
                T_FAIL("%s: block %s page 0x%llx differs", what,
                       a->blocks[k].idstr, (unsigned long long)off);
                break;
            }
        }
        return false;
    }
    return true;
}

/* Connect, hand the destination ends over as the incoming side would:
 * read 4 bytes to classify, then the rest of the handshake. */
static int connect_all(const Case *c, FyChannel **sc, FyChannel **dc,
                       FyMultifdRecv *r, const FyMultifdSendConfig *cfg,
                       FyMultifdSend **s, FyError **errp)
{
    if (mfd_connect(c->transport, c->channels, sc, dc, errp) < 0)
        return -1;
    *s = fy_multifd_send_new(cfg, sc, errp);
    if (!*s)
        return -1;
    for (int i = 0; i < c->channels; i++) {
        uint8_t first4[4];
        if (fy_channel_read_all(dc[i], first4, 4, errp) != 0)
            return -1;
        if (!fy_multifd_is_multifd_magic(first4)) {
            fy_error_setg(errp, "channel %d does not start with the magic", i);
            return -1;
        }
        if (fy_multifd_recv_new_channel(r, dc[i], first4, 4, errp) < 0)
            return -1;
        dc[i] = NULL; /* r owns it now */
    }
    return 0;
}

static void run_case(const Case *c)
{
    char what[160];
    snprintf(what, sizeof(what), "%s, %d channels, %s, zero-page-detection %s%s%s",
             c->transport, c->channels, fy_multifd_compression_name(c->comp),
             zd_name(c->zd), c->zero_copy ? ", zero-copy" : "",
             c->wire == FY_MULTIFD_WIRE_7_2 ? ", 7.2 packets" : "");
    Vm src, dst;
    FyError *err = NULL;
    if (vm_init(&src, 0) < 0 || vm_init(&dst, 0xaa) < 0) {
        T_FAIL("%s: memfd RAM", what);
        return;
    }
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)c->channels;
    for (int b = 0; b < NBLK; b++)
        for (uint64_t off = 0; off < src.blocks[b].used_length; off += PG)
            mfd_fill_page(src.blocks[b].host + off, (int)(mfd_rand(&seed) % 5), &seed);

    FyMultifdSendConfig scfg;
    fy_multifd_send_config_init(&scfg);
    scfg.channels = c->channels;
    scfg.compression = c->comp;
    scfg.zero_detect = c->zd;
    scfg.zero_copy = c->zero_copy;
    scfg.wire = c->wire;
    memset(scfg.uuid, 0x5a, 16);
    FyMultifdRecvConfig rcfg;
    fy_multifd_recv_config_init(&rcfg);
    rcfg.channels = c->channels;
    rcfg.compression = c->comp;
    memset(rcfg.uuid, 0x5a, 16);
    rcfg.ram = &dst.list;

    FyChannel *sc[8] = { 0 }, *dc[8] = { 0 };
    FyMultifdSend *s = NULL;
    FyMultifdRecv *r = fy_multifd_recv_new(&rcfg, &err);
    T_ASSERT(r);
    if (!r || connect_all(c, sc, dc, r, &scfg, &s, &err) < 0) {
        T_FAIL("%s: setup: %s", what, err ? fy_error_msg(err) : "?");
        goto out;
    }
    T_ASSERT(fy_multifd_recv_all_channels_created(r));

    Tally t = { 0 };
    uint64_t pages0 = RAM0 / PG, pages1 = RAM1 / PG;
    static uint8_t picked[RAM0 / PG + RAM1 / PG];
    for (int round = 0; round < c->rounds; round++) {
        if (round == 0) {
            /* Everything, the blocks interleaved (a batch ends at each
             * block change). */
            for (uint64_t i = 0; i < pages0; i++) {
                if (put_page(s, c, &src, &dst, 0, i * PG, &t, &err) < 0)
                    break;
                if (i % 8 == 7 &&
                    put_page(s, c, &src, &dst, 1, (i / 8) * PG, &t, &err) < 0)
                    break;
            }
        } else {
            /* Re-dirty about 1/8 of the pages in random order, with new
             * contents of any kind, and queue them again. A page is queued
             * at most once per round and not written after (the contract:
             * the RAM sender's dirty bitmap gives the same guarantee). */
            memset(picked, 0, pages0 + pages1);
            for (uint64_t k = 0; k < (pages0 + pages1) / 8 && !err; k++) {
                int b = mfd_rand(&seed) % 9 == 0;
                uint64_t pg = mfd_rand(&seed) % (b ? pages1 : pages0);
                if (picked[b * pages0 + pg]++)
                    continue;
                mfd_fill_page(src.blocks[b].host + pg * PG,
                              (int)(mfd_rand(&seed) % 5), &seed);
                put_page(s, c, &src, &dst, b, pg * PG, &t, &err);
            }
        }
        if (err || fy_multifd_send_sync(s, &err) < 0 ||
            fy_multifd_recv_sync(r, &err) < 0) {
            T_FAIL("%s: round %d: %s", what, round, err ? fy_error_msg(err) : "?");
            goto out;
        }
        char w2[200];
        snprintf(w2, sizeof(w2), "%s: after sync %d", what, round + 1);
        if (!same(&src, &dst, w2))
            goto out;
    }

    FyMultifdStats ss, rs;
    fy_multifd_send_get_stats(s, &ss);
    fy_multifd_recv_get_stats(r, &rs);
    T_EQ_INT(ss.normal_pages + ss.zero_pages, t.queued);
    T_EQ_INT(ss.zero_pages, c->zd == FY_MULTIFD_ZERO_MULTIFD ? t.zero : 0);
    T_EQ_INT(rs.normal_pages, ss.normal_pages);
    T_EQ_INT(rs.zero_pages, ss.zero_pages);
    T_EQ_INT(rs.packets, ss.packets);
    T_EQ_INT(ss.syncs, c->rounds);
    T_EQ_INT(rs.syncs, c->rounds);
    if (c->zd == FY_MULTIFD_ZERO_LEGACY)
        T_ASSERT(t.main_stream_zero > 0);
    else
        T_ASSERT(t.zero > 0);
    if (c->comp == FY_MULTIFD_COMPRESSION_NONE)
        T_EQ_INT(ss.bytes, rs.bytes);
    if (c->zero_copy) {
        /* Honest reporting: on loopback the kernel copies every
         * MSG_ZEROCOPY send and says so (SO_EE_CODE_ZEROCOPY_COPIED); after
         * the last sync every completion was read, so all are counted. */
        T_ASSERT(ss.zero_copy_sends > 0);
        T_EQ_INT(ss.zero_copy_copied, ss.zero_copy_sends);
    } else {
        T_EQ_INT(ss.zero_copy_sends, 0);
    }
    /* Destination zero pages over the 0xaa fill were written; those over
     * pages already zero were skipped. */
    if (c->zd == FY_MULTIFD_ZERO_MULTIFD)
        T_ASSERT(rs.zero_skipped > 0 && rs.zero_skipped < rs.zero_pages);
out:
    if (err)
        fy_error_free(err);
    fy_multifd_send_free(s);
    fy_multifd_recv_free(r);
    for (int i = 0; i < c->channels; i++) {
        if (!s)
            fy_channel_close(sc[i], NULL);
        fy_channel_close(dc[i], NULL);
    }
    vm_fini(&src);
    vm_fini(&dst);
}

static void run_cases(const Case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        run_case(&cases[i]);
}

#define CASES(...) do { \
        static const Case cs[] = { __VA_ARGS__ }; \
        run_cases(cs, sizeof(cs) / sizeof(cs[0])); \
    } while (0)

#define NONE FY_MULTIFD_COMPRESSION_NONE
#define ZLIB FY_MULTIFD_COMPRESSION_ZLIB
#define ZSTD FY_MULTIFD_COMPRESSION_ZSTD
#define ZD_NONE FY_MULTIFD_ZERO_NONE
#define ZD_LEGACY FY_MULTIFD_ZERO_LEGACY
#define ZD_MULTIFD FY_MULTIFD_ZERO_MULTIFD
#define CUR FY_MULTIFD_WIRE_CURRENT

static void test_nocomp(void)
{
    CASES({ "pair", 2, NONE, ZD_MULTIFD, false, CUR, 4 },
          { "pair", 4, NONE, ZD_MULTIFD, false, CUR, 4 },
          { "pair", 2, NONE, ZD_NONE, false, CUR, 3 },
          { "pair", 4, NONE, ZD_LEGACY, false, CUR, 3 },
          { "pair", 1, NONE, ZD_MULTIFD, false, CUR, 2 });
}

static void test_zlib(void)
{
    CASES({ "pair", 2, ZLIB, ZD_MULTIFD, false, CUR, 4 },
          { "pair", 4, ZLIB, ZD_NONE, false, CUR, 3 },
          { "pair", 2, ZLIB, ZD_LEGACY, false, CUR, 3 });
}

static void test_zstd(void)
{
    CASES({ "pair", 2, ZSTD, ZD_MULTIFD, false, CUR, 4 },
          { "pair", 4, ZSTD, ZD_LEGACY, false, CUR, 3 },
          { "pair", 2, ZSTD, ZD_NONE, false, CUR, 3 });
}

static void test_unix_sockets(void)
{
    CASES({ "unix", 2, NONE, ZD_MULTIFD, false, CUR, 3 },
          { "unix", 4, ZSTD, ZD_MULTIFD, false, CUR, 3 });
}

static void test_tcp_sockets(void)
{
    CASES({ "tcp", 2, NONE, ZD_MULTIFD, false, CUR, 3 },
          { "tcp", 4, ZLIB, ZD_MULTIFD, false, CUR, 3 });
}

static void test_zero_copy(void)
{
    CASES({ "tcp", 2, NONE, ZD_MULTIFD, true, CUR, 3 },
          { "tcp", 4, NONE, ZD_LEGACY, true, CUR, 3 });
}

/* Toward a QEMU 7.2: no zero pages in packets; legacy detection works. */
static void test_wire_7_2(void)
{
    CASES({ "pair", 2, NONE, ZD_LEGACY, false, FY_MULTIFD_WIRE_7_2, 3 },
          { "pair", 2, ZLIB, ZD_NONE, false, FY_MULTIFD_WIRE_7_2, 2 });
}

int main(void)
{
    T_RUN(test_nocomp);
    T_RUN(test_zlib);
    T_RUN(test_zstd);
    T_RUN(test_unix_sockets);
    T_RUN(test_tcp_sockets);
    T_RUN(test_zero_copy);
    T_RUN(test_wire_7_2);
    return t_done();
}
