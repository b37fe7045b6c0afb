/*
 * bench-multifd: multifd throughput between two RAM areas in one process,
 * over real unix sockets. Not a test: it prints GB/s.
 *
 *   bench-multifd [MiB] [cold]
 *
 * For 1 and 2 channels, nocomp and zstd (level 1), it sends all of a
 * memfd source (default 2048 MiB) to a memfd destination, queued as the
 * RAM sender would, and stops the clock when the destination's sync
 * returns (every page in place). The source holds pages that look like
 * memory: 1/4 text-like, 1/4 random, 1/4 sparse words, 1/4 zero (zero
 * pages travel as offsets with zero-page-detection multifd). The
 * destination is touched first ("warm", as a destination that was
 * pre-allocated); with "cold" it is fresh, so every page faults on arrival.
 * Each figure is the median of 3 runs; GB/s counts guest RAM moved
 * (source size / time), and the wire bytes are shown too.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <time.h>

#include "mfd-test.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int run_once(FyRamBlock *src, FyRamBlock *dst, int channels,
                    FyMultifdCompression comp, bool cold, double *secs,
                    uint64_t *wire)
{
    FyError *err = NULL;
    FyRamList dl = { .count = 1, .blocks = { dst } };
    FyChannel *sc[4] = { 0 }, *dc[4] = { 0 };
    int rc = -1;

    if (cold) {
        /* Drop the destination's pages so each arrival faults again. */
        fallocate(dst->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                  (off_t)dst->used_length);
    } else {
        memset(dst->host, 0x11, dst->used_length);
    }
    FyMultifdSendConfig scfg;
    fy_multifd_send_config_init(&scfg);
    scfg.channels = channels;
    scfg.compression = comp;
    FyMultifdRecvConfig rcfg;
    fy_multifd_recv_config_init(&rcfg);
    rcfg.channels = channels;
    rcfg.compression = comp;
    rcfg.ram = &dl;
    FyMultifdRecv *r = fy_multifd_recv_new(&rcfg, &err);
    FyMultifdSend *s = NULL;
    if (!r || mfd_connect("unix", channels, sc, dc, &err) < 0)
        goto out;
    s = fy_multifd_send_new(&scfg, sc, &err);
    if (!s)
        goto out;
    for (int i = 0; i < channels; i++) {
        if (fy_multifd_recv_new_channel(r, dc[i], NULL, 0, &err) < 0)
            goto out;
        dc[i] = NULL;
    }
    double t0 = now_s();
    for (uint64_t off = 0; off < src->used_length; off += PG)
        if (fy_multifd_queue_page(s, src, off, &err) < 0)
            goto out;
    if (fy_multifd_send_sync(s, &err) < 0 || fy_multifd_recv_sync(r, &err) < 0)
        goto out;
    *secs = now_s() - t0;
    FyMultifdStats st;
    fy_multifd_send_get_stats(s, &st);
    *wire = st.bytes;
    if (memcmp(src->host, dst->host, src->used_length) != 0) {
        fprintf(stderr, "destination differs from source!\n");
        goto out;
    }
    rc = 0;
out:
    if (err) {
        fprintf(stderr, "bench-multifd: %s\n", fy_error_msg(err));
        fy_error_free(err);
    }
    fy_multifd_send_free(s);
    fy_multifd_recv_free(r);
    for (int i = 0; i < channels; i++) {
        if (!s)
            fy_channel_close(sc[i], NULL);
        fy_channel_close(dc[i], NULL);
    }
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 2048;
    bool cold = argc > 2 && !strcmp(argv[2], "cold");
    uint64_t len = mib << 20;
    FyRamBlock src, dst;

    if (!mib || mfd_block_init(&src, "pc.ram", len) < 0 ||
        mfd_block_init(&dst, "pc.ram", len) < 0) {
        fprintf(stderr, "bench-multifd: cannot map 2 x %" PRIu64 " MiB\n", mib);
        return 1;
    }
    uint64_t seed = 12345;
    static const int kinds[4] = { 1, 2, 4, 0 };
    for (uint64_t off = 0; off < len; off += PG)
        mfd_fill_page(src.host + off, kinds[mfd_rand(&seed) % 4], &seed);

    printf("multifd over unix sockets, %" PRIu64 " MiB, destination %s, "
           "median of 3\n", mib, cold ? "cold" : "warm");
    printf("%-8s %-4s %8s %8s %10s\n", "channels", "comp", "seconds", "GB/s",
           "wire MiB");
    for (int comp = 0; comp < 2; comp++) {
        FyMultifdCompression c = comp ? FY_MULTIFD_COMPRESSION_ZSTD
                                      : FY_MULTIFD_COMPRESSION_NONE;
        for (int ch = 1; ch <= 2; ch++) {
            double t[3];
            uint64_t wire = 0;
            for (int k = 0; k < 3; k++)
                if (run_once(&src, &dst, ch, c, cold, &t[k], &wire) < 0)
                    return 1;
            qsort(t, 3, sizeof(t[0]), cmp_double);
            printf("%-8d %-4s %8.3f %8.2f %10.1f\n", ch,
                   fy_multifd_compression_name(c), t[1], len / t[1] / 1e9,
                   wire / 1048576.0);
            fflush(stdout);
        }
    }
    mfd_block_fini(&src);
    mfd_block_fini(&dst);
    return 0;
}
