/*
 * bench_postcopy.c: page-request latency (fault -> page placed) on the
 * destination, with the real userfaultfd machinery against the simulated
 * source of pc-sim.h over loopback socketpairs. Not a test.
 *
 *   bench_postcopy [MiB] [runs]
 *
 * Three setups, each a fresh destination of MiB of memfd RAM:
 *   idle      no background stream: every page comes because it was asked
 *   bg        the background stream flows on the one channel; requested
 *             pages go out ahead of the next background page, but behind
 *             whatever already sits in the socket
 *   preempt   background on the main channel, requested pages on their own
 *             (postcopy-preempt)
 * One vCPU thread touches random pages of the RAM's second half (the
 * background stream sends in order, so those stay absent the longest),
 * one after another, until the background stream is 90% done. The median
 * and p99 come from the destination's own accounting.
 */
#include <inttypes.h>
#include <stdatomic.h>

#include "pc-sim.h"

static FyRamBlock blk;
static FyRamList ram = { .count = 1, .blocks = { &blk } };

typedef struct {
    FyPostcopyDest *d;
    PcSim *s;
    uint64_t *order;
    uint64_t n;
    uint64_t touched;
    atomic_bool done;
} Vcpu;

static void *vcpu_main(void *opaque)
{
    Vcpu *v = opaque;
    uint64_t pages = blk.used_length >> 12;
    fy_postcopy_dest_register_vcpu(v->d, 0, pc_gettid(), NULL);
    for (uint64_t i = 0; i < v->n; i++) {
        if (v->s->background &&
            __atomic_load_n(&v->s->bg_sent, __ATOMIC_RELAXED) > pages * 9 / 10)
            break;
        volatile uint8_t *p = blk.host + (v->order[i] << 12);
        (void)*p;
        v->touched++;
    }
    atomic_store(&v->done, true);
    return NULL;
}

static int run(const char *name, uint64_t mib, bool background, bool preempt,
               unsigned seed)
{
    if (pc_block_init(&blk, "pc.ram", mib << 20) < 0) {
        fprintf(stderr, "memfd: %s\n", strerror(errno));
        return -1;
    }
    PcSim s;
    FyPostcopyDest *d;
    FyError *err = NULL;
    if (sim_init(&s, &ram, &d) < 0 || fy_postcopy_dest_advise(d, &err) < 0 ||
        fy_postcopy_dest_listen(d, &err) < 0) {
        fprintf(stderr, "%s\n", err ? fy_error_msg(err) : "setup failed");
        return -1;
    }
    s.background = background;
    s.preempt = preempt;

    uint64_t pages = blk.used_length >> 12, half = pages / 2;
    Vcpu v = { .d = d, .s = &s, .n = background ? half : 4000 };
    v.order = malloc(half * sizeof(uint64_t));
    for (uint64_t i = 0; i < half; i++)
        v.order[i] = half + i;
    srand(seed);
    for (uint64_t i = half - 1; i > 0; i--) {
        uint64_t j = ((uint64_t)rand() << 31 ^ (uint64_t)rand()) % (i + 1);
        uint64_t t = v.order[i];
        v.order[i] = v.order[j];
        v.order[j] = t;
    }

    uint64_t t0 = pc_now_ns();
    sim_start(&s);
    pthread_t th;
    pthread_create(&th, NULL, vcpu_main, &v);
    pthread_join(th, NULL);
    uint64_t t1 = pc_now_ns();
    if (background && !sim_wait_complete(&s, 60000))
        fprintf(stderr, "%s: RAM did not complete\n", name);
    uint64_t t2 = pc_now_ns();

    FyPostcopyLatency l;
    fy_postcopy_dest_get_latency(d, &l);
    FyPostcopyDestStats st;
    fy_postcopy_dest_get_stats(d, &st);
    printf("%-8s %6" PRIu64 " faults  median %7.1f us  p99 %8.1f us  max %8.1f us"
           "  (%" PRIu64 " touches in %.0f ms",
           name, l.count, l.median_ns / 1e3, l.p99_ns / 1e3, l.max_ns / 1e3,
           v.touched, (t1 - t0) / 1e6);
    if (background)
        printf("; %" PRIu64 " MiB whole in %.0f ms", mib, (t2 - t0) / 1e6);
    printf(")\n");

    sim_finish(&s);
    if (s.err)
        fprintf(stderr, "%s: %s\n", name, fy_error_msg(s.err));
    fy_postcopy_dest_stop(d, NULL);
    free(v.order);
    sim_fini(&s);
    pc_block_fini(&blk);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 0) : 512;
    int runs = argc > 2 ? atoi(argv[2]) : 1;
    printf("postcopy page-request latency, %" PRIu64 " MiB of RAM, loopback\n", mib);
    for (int r = 0; r < runs; r++) {
        if (run("idle", mib, false, false, 1 + (unsigned)r) < 0 ||
            run("bg", mib, true, false, 2 + (unsigned)r) < 0 ||
            run("preempt", mib, true, true, 3 + (unsigned)r) < 0)
            return 1;
    }
    return 0;
}
