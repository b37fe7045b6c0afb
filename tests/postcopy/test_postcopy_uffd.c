/*
 * test_postcopy_uffd.c: the destination with real userfaultfd on memfd
 * "guest RAM". Threads standing for vCPUs touch absent pages and block in
 * the kernel until the simulated source (pc-sim.h: real socketpairs, the
 * real request encoding) sends the page and the loader places it. Every
 * test checks the touched pages, and where the migration completes, all
 * of RAM, against the source's content.
 */
#include <stdatomic.h>

#include <jansson.h>

#include "pc-sim.h"
#include "t.h"

#define MiB (1ull << 20)

static FyRamBlock blk_a, blk_b;
static FyRamList ram = { .count = 2, .blocks = { &blk_a, &blk_b } };

static void ram_setup(uint64_t a_bytes, uint64_t b_bytes)
{
    if (pc_block_init(&blk_a, "pc.ram", a_bytes) < 0 ||
        pc_block_init(&blk_b, "vga.vram", b_bytes) < 0)
        T_FAIL("memfd RAM: %s", strerror(errno));
}

static void ram_teardown(void)
{
    pc_block_fini(&blk_a);
    pc_block_fini(&blk_b);
}

/* Write the source's content and tell the destination (precopy). */
static void precopy_pages(FyPostcopyDest *d, int blk, uint64_t first, uint64_t n)
{
    FyRamBlock *rb = ram.blocks[blk];
    for (uint64_t p = first; p < first + n; p++)
        pc_fill_page(rb->host + (p << 12), blk, p);
    fy_postcopy_dest_mark_received(d, rb, first << 12, n << 12);
}

/* ---- vCPU-like threads ---- */

typedef struct Touch {
    int blk;
    uint64_t page;
} Touch;

typedef struct Toucher {
    FyPostcopyDest *d;
    int vcpu;               /* < 0: not a vCPU */
    Touch *list;
    int n;
    int mismatches;
    atomic_bool registered, go, done;
    pthread_t th;
} Toucher;

static uint64_t expected_word(int blk, uint64_t page, size_t i)
{
    uint8_t buf[FY_TARGET_PAGE_SIZE];
    pc_fill_page(buf, blk, page);
    return ((uint64_t *)buf)[i];
}

static void *toucher_main(void *opaque)
{
    Toucher *t = opaque;
    if (t->vcpu >= 0)
        fy_postcopy_dest_register_vcpu(t->d, t->vcpu, pc_gettid(), NULL);
    atomic_store(&t->registered, true);
    while (!atomic_load(&t->go))
        pc_sleep_ms(1);
    for (int i = 0; i < t->n; i++) {
        size_t w = (size_t)(t->list[i].page % 512);
        volatile uint64_t *p = (volatile uint64_t *)
            (ram.blocks[t->list[i].blk]->host + (t->list[i].page << 12)) + w;
        if (*p != expected_word(t->list[i].blk, t->list[i].page, w))
            t->mismatches++;
    }
    atomic_store(&t->done, true);
    return NULL;
}

static void toucher_start(Toucher *t, FyPostcopyDest *d, int vcpu, Touch *list,
                          int n, bool go)
{
    memset(t, 0, sizeof(*t));
    t->d = d;
    t->vcpu = vcpu;
    t->list = list;
    t->n = n;
    atomic_store(&t->go, go);
    pthread_create(&t->th, NULL, toucher_main, t);
    while (!atomic_load(&t->registered))
        pc_sleep_ms(1);
}

static bool toucher_wait(Toucher *t, int ms)
{
    for (int i = 0; i < ms && !atomic_load(&t->done); i++)
        pc_sleep_ms(1);
    return atomic_load(&t->done);
}

/* Join; if the thread is stuck, stop the destination to free it (its
 * pages then read as zero and the test fails instead of hanging). */
static void toucher_join(Toucher *t, FyPostcopyDest *d, int ms)
{
    if (!toucher_wait(t, ms)) {
        T_FAIL("a touching thread is still blocked after %d ms", ms);
        fy_postcopy_dest_stop(d, NULL);
    }
    pthread_join(t->th, NULL);
}

static Touch *random_touches(int n, unsigned seed, uint64_t a_from, uint64_t a_to)
{
    Touch *l = calloc((size_t)n, sizeof(*l));
    srand(seed);
    for (int i = 0; i < n; i++) {
        if (i % 5 == 4) {
            l[i].blk = 1;
            l[i].page = (uint64_t)rand() % (blk_b.used_length >> 12);
        } else {
            l[i].blk = 0;
            l[i].page = a_from + (uint64_t)rand() % (a_to - a_from);
        }
    }
    return l;
}

static void check_no_sim_error(PcSim *s)
{
    if (s->err)
        T_FAIL("simulation: %s", fy_error_msg(s->err));
}

static void print_latency(const char *what, FyPostcopyDest *d)
{
    FyPostcopyLatency l;
    fy_postcopy_dest_get_latency(d, &l);
    printf("# %s: %" PRIu64 " faults resolved, median %.1f us, p99 %.1f us, "
           "max %.1f us (fault -> placed)\n", what, l.count, l.median_ns / 1e3,
           l.p99_ns / 1e3, l.max_ns / 1e3);
}

/* ---- tests ---- */

static void test_lifecycle_errors(void)
{
    ram_setup(1 * MiB, 64 << 10);
    FyPostcopyDest *d = fy_postcopy_dest_new(&ram, NULL, NULL);
    FyError *err = NULL;
    uint8_t page[4096] = { 0 };

    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_NEW);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), -1);
    T_CONTAINS(fy_error_msg(err), "LISTEN in state new");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &blk_a, 0, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "placing a page in state new");
    fy_error_clear(&err);

    /* A block whose shape cannot be registered is named. */
    blk_b.page_size = 3000;
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), -1);
    T_CONTAINS(fy_error_msg(err), "RAM block 'vga.vram' has page size 3000");
    fy_error_clear(&err);
    blk_b.page_size = 4096;

    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_ADVISED);
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), -1);
    T_CONTAINS(fy_error_msg(err), "ADVISE in state advised");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_resume(d, &err), -1);
    T_CONTAINS(fy_error_msg(err), "resume in state advised");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_LISTENING);

    /* Bad placements say what and where. */
    T_EQ_INT(fy_postcopy_dest_place_page(d, &blk_a, 100, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "offset 0x64 of RAM block 'pc.ram' is not page aligned");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_place_zero_page(d, &blk_b, 64 << 10, &err), -1);
    T_CONTAINS(fy_error_msg(err), "offset 0x10000 of RAM block 'vga.vram' is past its end");
    fy_error_clear(&err);
    FyRamBlock other = blk_a;
    T_EQ_INT(fy_postcopy_dest_place_page(d, &other, 0, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "RAM block 'pc.ram' is not known");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_register_vcpu(d, FY_POSTCOPY_MAX_VCPUS, 1, &err), -1);
    T_CONTAINS(fy_error_msg(err), "vCPU index 256 out of range");
    fy_error_clear(&err);

    T_EQ_INT(fy_postcopy_dest_stop(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_STOPPED);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &blk_a, 0, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "state stopped");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_stop(d, &err), 0);
    fy_postcopy_dest_free(d);
    ram_teardown();
}

/* Four threads touch random absent pages of two blocks; the source serves
 * only what is asked for; then the rest flows and all of RAM matches. */
static void test_faults_served(void)
{
    ram_setup(16 * MiB, 1 * MiB);
    PcSim s;
    FyPostcopyDest *d;
    FyError *err = NULL;
    T_EQ_INT(sim_init(&s, &ram, &d), 0);
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    precopy_pages(d, 0, 0, 100);     /* pc.ram pages 0..99 came in precopy */
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    sim_start(&s);

    Toucher t[4];
    Touch *lists[4];
    for (int i = 0; i < 4; i++) {
        lists[i] = random_touches(200, 100 + (unsigned)i, 0, blk_a.used_length >> 12);
        toucher_start(&t[i], d, i, lists[i], 200, true);
    }
    for (int i = 0; i < 4; i++)
        toucher_join(&t[i], d, 30000);
    for (int i = 0; i < 4; i++)
        T_EQ_INT(t[i].mismatches, 0);

    FyPostcopyDestStats st;
    fy_postcopy_dest_get_stats(d, &st);
    /* At most one request per distinct page, none for precopy pages. */
    uint64_t distinct = 0;
    for (int b = 0; b < 2; b++) {
        uint64_t n = ram.blocks[b]->used_length >> 12;
        for (uint64_t p = 0; p < n; p++)
            distinct += fy_postcopy_dest_page_received(d, ram.blocks[b], p << 12) &&
                        !(b == 0 && p < 100);
    }
    T_ASSERT(st.requests >= 1);
    T_ASSERT(st.requests <= distinct);
    T_EQ_INT(st.requests, __atomic_load_n(&s.requests_seen, __ATOMIC_RELAXED));
    T_EQ_INT(st.stray_faults, 0);
    printf("# %" PRIu64 " faults, %" PRIu64 " requests, %" PRIu64 " duplicates, "
           "%" PRIu64 " pages placed, %" PRIu64 " zero\n", st.faults, st.requests,
           st.dup_faults, st.placed, st.placed_zero);
    print_latency("no background", d);

    /* Now the background stream brings the rest. */
    s.background = true;
    sim_finish(&s);
    sim_start(&s);
    T_ASSERT(sim_wait_complete(&s, 30000));
    sim_finish(&s);
    check_no_sim_error(&s);
    T_EQ_INT(fy_postcopy_dest_stop(d, &err), 0);
    T_EQ_INT(sim_verify_all(&ram), 0);
    for (int i = 0; i < 4; i++)
        free(lists[i]);
    sim_fini(&s);
    ram_teardown();
}

typedef struct {
    FyPostcopyDest *d;
    const uint8_t *data;
    int result;
    atomic_bool *go;
} Placer;

static void *placer_main(void *opaque)
{
    Placer *p = opaque;
    while (!atomic_load(p->go))
        ;
    p->result = p->data ? fy_postcopy_dest_place_page(p->d, &blk_a, 5 << 12, p->data, NULL)
                        : fy_postcopy_dest_place_zero_page(p->d, &blk_a, 5 << 12, NULL);
    return NULL;
}

/* Zero pages, and placements racing for the same page: exactly one wins,
 * the others find it there, the content is the winner's, whole. */
static void test_zero_and_eexist(void)
{
    ram_setup(1 * MiB, 64 << 10);
    FyPostcopyDest *d = fy_postcopy_dest_new(&ram, NULL, NULL);
    FyError *err = NULL;
    uint8_t page[4096];
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);

    T_EQ_INT(fy_postcopy_dest_place_zero_page(d, &blk_a, 0, &err), 0);
    uint8_t zero[4096] = { 0 };
    T_EQ_MEM(blk_a.host, zero, 4096);
    pc_fill_page(page, 0, 1);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &blk_a, 0, page, &err), 1);
    T_EQ_MEM(blk_a.host, zero, 4096);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &blk_a, 4096, page, &err), 0);
    T_EQ_INT(fy_postcopy_dest_place_zero_page(d, &blk_a, 4096, &err), 1);
    T_EQ_MEM(blk_a.host + 4096, page, 4096);

    enum { N = 6 };
    static uint8_t datas[N][4096];
    Placer pl[N];
    pthread_t th[N];
    atomic_bool go = false;
    for (int i = 0; i < N; i++) {
        memset(datas[i], 0x10 + i, 4096);
        pl[i] = (Placer){ .d = d, .data = i == N - 1 ? NULL : datas[i], .go = &go };
        pthread_create(&th[i], NULL, placer_main, &pl[i]);
    }
    atomic_store(&go, true);
    int winners = 0, winner = -1;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        T_ASSERT(pl[i].result == 0 || pl[i].result == 1);
        if (pl[i].result == 0) {
            winners++;
            winner = i;
        }
    }
    T_EQ_INT(winners, 1);
    if (winner >= 0)
        T_EQ_MEM(blk_a.host + (5 << 12), winner == N - 1 ? zero : datas[winner], 4096);
    FyPostcopyDestStats st;
    fy_postcopy_dest_get_stats(d, &st);
    T_EQ_INT(st.already_there, N - 1 + 2);
    T_EQ_INT(st.placed + st.placed_zero, 3);
    T_ASSERT(fy_postcopy_dest_page_received(d, &blk_a, 5 << 12));
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), (1 * MiB + (64 << 10)) / 4096 - 3);

    fy_postcopy_dest_free(d);   /* stops: nothing waits */
    ram_teardown();
}

/* A request_fn that only counts: the test places pages itself. */
typedef struct {
    atomic_int n;
    char last_id[256];
    uint64_t last_off, last_len;
} Counter;

static int count_request(void *opaque, const char *idstr, uint64_t off, uint64_t len)
{
    Counter *c = opaque;
    snprintf(c->last_id, sizeof(c->last_id), "%s", idstr);
    c->last_off = off;
    c->last_len = len;
    atomic_fetch_add(&c->n, 1);
    return 0;
}

static bool wait_faults(FyPostcopyDest *d, uint64_t n, int ms)
{
    FyPostcopyDestStats st;
    for (int i = 0; i < ms; i++) {
        fy_postcopy_dest_get_stats(d, &st);
        if (st.faults >= n)
            return true;
        pc_sleep_ms(1);
    }
    return false;
}

/* Three threads fault on one page: one request; a zero page frees all. A
 * page known zero but never written (a hole marked received) is filled
 * without asking. Stale bytes in a page not received are discarded at
 * listen, so the page faults and the source's content arrives. */
static void test_dedup_holes_stale(void)
{
    ram_setup(1 * MiB, 64 << 10);
    Counter c = { 0 };
    FyPostcopyDest *d = fy_postcopy_dest_new(&ram, count_request, &c);
    FyError *err = NULL;
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    /* page 7: stale data written during precopy but not counted received */
    memset(blk_a.host + (7 << 12), 0xee, 4096);
    /* page 9: received as a zero page that was already a hole */
    fy_postcopy_dest_mark_received(d, &blk_a, 9 << 12, 4096);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);

    Touch same = { 0, 3 };   /* page 3: 3 % 7 == 3, a zero page */
    Toucher t[3];
    for (int i = 0; i < 3; i++)
        toucher_start(&t[i], d, -1, &same, 1, true);
    T_ASSERT(wait_faults(d, 3, 5000));
    pc_sleep_ms(20);
    T_EQ_INT(atomic_load(&c.n), 1);
    T_EQ_STR(c.last_id, "pc.ram");
    T_EQ_INT(c.last_off, 3 << 12);
    T_EQ_INT(c.last_len, 4096);
    for (int i = 0; i < 3; i++)
        T_ASSERT(!atomic_load(&t[i].done));
    T_EQ_INT(fy_postcopy_dest_place_zero_page(d, &blk_a, 3 << 12, &err), 0);
    for (int i = 0; i < 3; i++) {
        toucher_join(&t[i], d, 5000);
        T_EQ_INT(t[i].mismatches, 0);
    }
    FyPostcopyDestStats st;
    fy_postcopy_dest_get_stats(d, &st);
    T_EQ_INT(st.requests, 1);
    T_EQ_INT(st.dup_faults, 2);

    /* The hole marked received: no request, zero. */
    uint64_t before = st.faults;
    T_EQ_INT(*(volatile uint64_t *)(blk_a.host + (9 << 12)), 0);
    fy_postcopy_dest_get_stats(d, &st);
    T_EQ_INT(st.faults, before + 1);
    T_EQ_INT(st.received_faults, 1);
    T_EQ_INT(st.stray_faults, 0);
    T_EQ_INT(atomic_load(&c.n), 1);

    /* The stale page: a fault and a request; the real bytes come. */
    Touch stale = { 0, 7 };
    Toucher ts;
    toucher_start(&ts, d, -1, &stale, 1, true);
    T_ASSERT(wait_faults(d, before + 2, 5000));
    pc_sleep_ms(5);
    T_EQ_INT(atomic_load(&c.n), 2);
    T_EQ_INT(c.last_off, 7 << 12);
    uint8_t page[4096];
    pc_fill_page(page, 0, 7);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &blk_a, 7 << 12, page, &err), 0);
    toucher_join(&ts, d, 5000);
    T_EQ_INT(ts.mismatches, 0);
    T_EQ_MEM(blk_a.host + (7 << 12), page, 4096);

    fy_postcopy_dest_free(d);
    ram_teardown();
}

/* pause: faults are remembered, nothing is asked, threads wait. resume:
 * the requests go, the threads run. A failing request pauses by itself. */
static void test_pause_resume(void)
{
    ram_setup(4 * MiB, 64 << 10);
    PcSim s;
    FyPostcopyDest *d;
    FyError *err = NULL;
    T_EQ_INT(sim_init(&s, &ram, &d), 0);
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    sim_start(&s);

    fy_postcopy_dest_pause(d);
    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_PAUSED);
    Touch a[2] = { { 0, 10 }, { 1, 2 } };
    Toucher t;
    toucher_start(&t, d, 0, a, 2, true);
    T_ASSERT(wait_faults(d, 1, 5000));
    pc_sleep_ms(100);
    T_ASSERT(!atomic_load(&t.done));
    T_EQ_INT(__atomic_load_n(&s.requests_seen, __ATOMIC_RELAXED), 0);
    T_EQ_INT(fy_postcopy_dest_resume(d, &err), 0);
    toucher_join(&t, d, 5000);
    T_EQ_INT(t.mismatches, 0);
    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_LISTENING);

    /* The return path fails under the fault thread: paused, with a reason. */
    pthread_mutex_lock(&s.lock);
    s.fail_requests = 1;
    pthread_mutex_unlock(&s.lock);
    Touch b = { 0, 20 };
    toucher_start(&t, d, 0, &b, 1, true);
    for (int i = 0; i < 5000 && fy_postcopy_dest_state(d) != FY_POSTCOPY_DEST_PAUSED; i++)
        pc_sleep_ms(1);
    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_PAUSED);
    FyError *why = fy_postcopy_dest_request_error(d);
    T_CONTAINS(why ? fy_error_msg(why) : NULL,
               "request for RAM block 'pc.ram' offset 0x14000 could not be sent");
    fy_error_free(why);
    pc_sleep_ms(50);
    T_ASSERT(!atomic_load(&t.done));
    T_EQ_INT(fy_postcopy_dest_resume(d, &err), 0);
    toucher_join(&t, d, 5000);
    T_EQ_INT(t.mismatches, 0);
    T_ASSERT(fy_postcopy_dest_request_error(d) == NULL);

    sim_finish(&s);
    check_no_sim_error(&s);
    sim_fini(&s);
    ram_teardown();
}

/* The connection breaks in the middle of postcopy with threads blocked;
 * the destination keeps every page; after reconnecting, the received
 * bitmaps go back over the return path (the real encoding), the source
 * sends only what is missing, resume re-asks for what the threads wait
 * for, and RAM ends up whole. */
static void test_recovery(void)
{
    ram_setup(32 * MiB, 1 * MiB);
    PcSim s;
    FyPostcopyDest *d;
    FyError *err = NULL;
    T_EQ_INT(sim_init(&s, &ram, &d), 0);
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    precopy_pages(d, 0, 0, 64);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    s.background = true;
    sim_start(&s);

    /* Let part of RAM arrive, then break. */
    uint64_t total = fy_postcopy_dest_pages_remaining(d);
    for (int i = 0; i < 10000 && fy_postcopy_dest_pages_remaining(d) > total * 3 / 4; i++)
        pc_sleep_ms(1);
    sim_break(&s);
    check_no_sim_error(&s);
    uint64_t left = fy_postcopy_dest_pages_remaining(d);
    T_ASSERT(left > 0);
    T_EQ_INT(fy_postcopy_dest_state(d), FY_POSTCOPY_DEST_PAUSED);

    /* Threads fault during the outage: they wait. */
    Touch *l = random_touches(50, 7, (blk_a.used_length >> 12) * 7 / 8,
                              blk_a.used_length >> 12);
    Toucher t;
    toucher_start(&t, d, 0, l, 50, true);
    T_ASSERT(!toucher_wait(&t, 100));

    /* Reconnect: the bitmap exchange, on the new return path. */
    sim_connect(&s);
    uint64_t resend = 0;
    for (int b = 0; b < ram.count; b++) {
        FyRamBlock *rb = ram.blocks[b];
        pthread_mutex_lock(&s.lock);
        T_EQ_INT(fy_postcopy_dest_send_recv_bitmap(d, s.rp_out, rb->idstr, &err), 0);
        pthread_mutex_unlock(&s.lock);
        uint16_t type = fy_get_be16(s.rp_in), len = fy_get_be16(s.rp_in);
        uint8_t name[256];
        char id[256];
        fy_get_buffer(s.rp_in, name, len < 256 ? len : 0);
        T_EQ_INT(type, FY_RP_MSG_RECV_BITMAP);
        T_EQ_INT(fy_postcopy_decode_block_name(name, len, id, &err), 0);
        T_EQ_STR(id, rb->idstr);
        uint64_t n = rb->used_length >> 12;
        unsigned long *got = fy_bitmap_new(n);
        T_EQ_INT(fy_postcopy_recv_bitmap_read(s.rp_in, rb, got, &err), 0);
        if (err)
            T_FAIL("%s", fy_error_msg(err));
        /* the source's new "to send" is the complement */
        for (uint64_t p = 0; p < n; p++) {
            bool have = fy_test_bit(got, p);
            T_EQ_INT(have, fy_postcopy_dest_page_received(d, rb, p << 12));
            if (have)
                fy_clear_bit(s.to_send[b], p);
            else
                fy_set_bit(s.to_send[b], p);
            resend += !have;
        }
        free(got);
    }
    T_EQ_INT(resend, left);
    T_EQ_INT(fy_postcopy_dest_resume(d, &err), 0);
    sim_run(&s);

    toucher_join(&t, d, 30000);
    T_EQ_INT(t.mismatches, 0);
    T_ASSERT(sim_wait_complete(&s, 30000));
    sim_finish(&s);
    check_no_sim_error(&s);
    T_EQ_INT(fy_postcopy_dest_stop(d, &err), 0);
    T_EQ_INT(sim_verify_all(&ram), 0);
    free(l);
    sim_fini(&s);
    ram_teardown();
}

static void *idle_vcpu(void *opaque)
{
    Toucher *t = opaque;
    fy_postcopy_dest_register_vcpu(t->d, t->vcpu, pc_gettid(), NULL);
    atomic_store(&t->registered, true);
    while (!atomic_load(&t->go))
        pc_sleep_ms(1);
    atomic_store(&t->done, true);
    return NULL;
}

/* The placer accounts a wait right after the kernel woke the waiter, so
 * a thread may run before its wait is counted: poll for the count. */
static void blocktime_after(FyPostcopyDest *d, uint64_t resolved, FyPostcopyBlocktime *bt)
{
    for (int i = 0; i < 5000; i++) {
        fy_postcopy_dest_get_blocktime(d, bt);
        if (bt->resolved >= resolved)
            return;
        pc_sleep_ms(1);
    }
}

/* vCPU 0 waits on pages the source is slow to send; vCPU 1 idles. Then a
 * thread that is no vCPU faults, then both vCPUs block together. */
static void test_blocktime(void)
{
    ram_setup(4 * MiB, 64 << 10);
    PcSim s;
    FyPostcopyDest *d;
    FyError *err = NULL;
    T_EQ_INT(sim_init(&s, &ram, &d), 0);
    s.delay_ms = 20;
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    sim_start(&s);

    Toucher idle = { .d = d, .vcpu = 1 };
    pthread_create(&idle.th, NULL, idle_vcpu, &idle);
    while (!atomic_load(&idle.registered))
        pc_sleep_ms(1);

    Touch two[2] = { { 0, 100 }, { 0, 200 } };
    Toucher t;
    toucher_start(&t, d, 0, two, 2, true);
    toucher_join(&t, d, 10000);
    T_EQ_INT(t.mismatches, 0);

    FyPostcopyBlocktime bt;
    blocktime_after(d, 2, &bt);
    T_EQ_INT(bt.vcpus, 2);
    T_EQ_INT(bt.vcpu_faults[0], 2);
    T_ASSERT(bt.vcpu_ms[0] >= 30);     /* two waits of >= 20 ms */
    T_ASSERT(bt.vcpu_latency_ns[0] >= 15000000ull);
    T_EQ_INT(bt.vcpu_ns[1], 0);
    T_EQ_INT(bt.vcpu_ms[1], 0);
    T_EQ_INT(bt.total_ns, 0);          /* vCPU 1 never blocked */
    T_EQ_INT(bt.non_vcpu_faults, 0);
    printf("# vCPU 0 blocked %u ms over %" PRIu64 " faults\n", bt.vcpu_ms[0],
           bt.vcpu_faults[0]);

    /* A thread that is not a vCPU. */
    Touch other = { 0, 300 };
    toucher_start(&t, d, -1, &other, 1, true);
    toucher_join(&t, d, 10000);
    blocktime_after(d, 3, &bt);
    T_EQ_INT(bt.non_vcpu_faults, 1);
    T_ASSERT(bt.non_vcpu_latency_ns >= 15000000ull);
    T_EQ_INT(bt.vcpu_faults[0], 2);

    /* Both vCPUs blocked at once: postcopy-blocktime grows. vCPU 1 is now
     * a toucher thread registered under index 1. */
    atomic_store(&idle.go, true);
    pthread_join(idle.th, NULL);
    Touch p1 = { 0, 400 }, p2 = { 0, 500 };
    Toucher t1, t2;
    toucher_start(&t1, d, 0, &p1, 1, false);
    toucher_start(&t2, d, 1, &p2, 1, false);
    atomic_store(&t1.go, true);
    atomic_store(&t2.go, true);
    toucher_join(&t1, d, 10000);
    toucher_join(&t2, d, 10000);
    blocktime_after(d, 5, &bt);
    T_ASSERT(bt.total_ns > 0);
    T_ASSERT(bt.total_ms >= 5);
    T_ASSERT(bt.vcpu_ns[1] > 0);
    T_EQ_INT(bt.vcpu_faults[1], 1);
    uint64_t in_dist = 0;
    for (int i = 0; i < FY_POSTCOPY_LATENCY_BUCKETS; i++)
        in_dist += bt.latency_dist[i];
    T_EQ_INT(in_dist, bt.resolved);
    T_EQ_INT(bt.resolved, 5);
    /* 20 ms waits land in [16384, 32768) us or above: bucket >= 14 */
    uint64_t slow = 0;
    for (int i = 14; i < FY_POSTCOPY_LATENCY_BUCKETS; i++)
        slow += bt.latency_dist[i];
    T_EQ_INT(slow, 5);

    json_t *j = fy_postcopy_blocktime_json(&bt);
    T_EQ_INT(json_integer_value(json_object_get(j, "postcopy-blocktime")), bt.total_ms);
    T_EQ_INT(json_array_size(json_object_get(j, "postcopy-vcpu-blocktime")), 2);
    T_EQ_INT(json_integer_value(json_array_get(json_object_get(j, "postcopy-vcpu-blocktime"), 0)),
             bt.vcpu_ms[0]);
    T_ASSERT(json_integer_value(json_object_get(j, "postcopy-latency")) > 0);
    json_decref(j);
    printf("# postcopy-blocktime %u ms, vCPU blocktimes %u / %u ms\n", bt.total_ms,
           bt.vcpu_ms[0], bt.vcpu_ms[1]);

    sim_finish(&s);
    check_no_sim_error(&s);
    sim_fini(&s);
    ram_teardown();
}

/* Latency with the background stream flowing, with and without the
 * preempt channel; RAM must be whole at the end. No timing asserts. */
static void run_latency(bool preempt)
{
    ram_setup(64 * MiB, 1 * MiB);
    PcSim s;
    FyPostcopyDest *d;
    FyError *err = NULL;
    T_EQ_INT(sim_init(&s, &ram, &d), 0);
    s.background = true;
    s.preempt = preempt;
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    sim_start(&s);
    uint64_t n = blk_a.used_length >> 12;
    Touch *l = random_touches(300, preempt ? 3 : 4, n / 2, n);
    Toucher t[2];
    toucher_start(&t[0], d, 0, l, 150, true);
    toucher_start(&t[1], d, 1, l + 150, 150, true);
    toucher_join(&t[0], d, 30000);
    toucher_join(&t[1], d, 30000);
    T_EQ_INT(t[0].mismatches + t[1].mismatches, 0);
    print_latency(preempt ? "background + preempt" : "background, one channel", d);
    T_ASSERT(sim_wait_complete(&s, 30000));
    sim_finish(&s);
    check_no_sim_error(&s);
    T_EQ_INT(fy_postcopy_dest_stop(d, &err), 0);
    T_EQ_INT(sim_verify_all(&ram), 0);
    free(l);
    sim_fini(&s);
    ram_teardown();
}

static void test_latency_background(void)
{
    run_latency(false);
}

static void test_latency_preempt(void)
{
    run_latency(true);
}

/* x-ignore-shared: a shared block is neither discarded nor registered
 * and does not count as missing; placing into it is refused. */
static void test_ignore_shared(void)
{
    ram_setup(1 * MiB, 64 << 10);
    blk_b.shared = true;
    memset(blk_b.host, 0x77, 64 << 10);
    FyPostcopyDest *d = fy_postcopy_dest_new(&ram, NULL, NULL);
    FyError *err = NULL;
    fy_postcopy_dest_set_ignore_shared(d, true);
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), (1 * MiB) >> 12);
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    /* Untouched by listen, and readable without any fault. */
    T_EQ_INT(blk_b.host[12345], 0x77);
    FyPostcopyDestStats st;
    fy_postcopy_dest_get_stats(d, &st);
    T_EQ_INT(st.faults, 0);
    T_ASSERT(fy_postcopy_dest_page_received(d, &blk_b, 0));
    T_EQ_INT(fy_postcopy_dest_place_zero_page(d, &blk_b, 0, &err), -1);
    T_CONTAINS(fy_error_msg(err), "'vga.vram' is not migrated (x-ignore-shared)");
    fy_error_clear(&err);
    uint8_t *body;
    size_t len;
    T_EQ_INT(fy_postcopy_dest_recv_bitmap(d, "vga.vram", &body, &len, &err), -1);
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_recv_bitmap(d, "pc.ram", &body, &len, &err), 0);
    T_EQ_INT(len, 8 + 32 + 8);
    free(body);
    fy_postcopy_dest_free(d);
    ram_teardown();
}

typedef struct {
    volatile uint8_t *a;
    uint8_t v;
} Reader;

static void *reader(void *o)
{
    Reader *r = o;
    r->v = *r->a;
    return NULL;
}

/* hugetlbfs RAM (2 MiB pages): requests and placements are whole huge
 * pages, zero pages are copied (hugetlbfs has no UFFDIO_ZEROPAGE), a host
 * page only partly received in precopy is discarded whole at listen. Runs
 * only when huge pages are reserved (vm.nr_hugepages). */
static void test_hugetlb(void)
{
    const uint64_t hp = 2 * MiB, size = 4 * hp;
    FyRamBlock h;
    memset(&h, 0, sizeof(h));
    snprintf(h.idstr, sizeof(h.idstr), "mem-huge");
    h.fd = memfd_create("mem-huge", MFD_CLOEXEC | MFD_HUGETLB);
    void *p = MAP_FAILED;
    if (h.fd >= 0 && ftruncate(h.fd, (off_t)size) == 0)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, h.fd, 0);
    if (p == MAP_FAILED) {
        printf("# SKIP test_hugetlb: no 2 MiB huge pages (%s); reserve some with "
               "vm.nr_hugepages to run it\n", strerror(errno));
        if (h.fd >= 0)
            close(h.fd);
        return;
    }
    h.host = p;
    h.used_length = size;
    h.page_size = hp;
    FyRamList hl = { .count = 1, .blocks = { &h } };
    Counter c = { 0 };
    FyPostcopyDest *d = fy_postcopy_dest_new(&hl, count_request, &c);
    FyError *err = NULL;
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    /* Huge page 0 fully received in precopy; huge page 3 only partly. */
    memset(h.host, 0xab, hp);
    fy_postcopy_dest_mark_received(d, &h, 0, hp);
    memset(h.host + 3 * hp, 0xcd, hp);
    fy_postcopy_dest_mark_received(d, &h, 3 * hp, 4096);
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 3 * 512 - 1);
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 3 * 512);
    T_EQ_INT(h.host[100], 0xab);

    /* A touch in the middle of huge page 1 asks for the whole of it. */
    uint8_t *data = malloc(hp);
    memset(data, 0x5e, hp);
    Reader arg = { h.host + hp + 12345, 0 };
    pthread_t th;
    pthread_create(&th, NULL, reader, &arg);
    T_ASSERT(wait_faults(d, 1, 5000));
    pc_sleep_ms(5);
    T_EQ_INT(atomic_load(&c.n), 1);
    T_EQ_INT(c.last_off, hp);
    T_EQ_INT(c.last_len, hp);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &h, hp + 4096, data, &err), -1);
    T_CONTAINS(fy_error_msg(err), "not page aligned");
    fy_error_clear(&err);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &h, hp, data, &err), 0);
    pthread_join(th, NULL);
    T_EQ_INT(arg.v, 0x5e);
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 2 * 512);
    T_ASSERT(fy_postcopy_dest_page_received(d, &h, hp + 511 * 4096));

    T_EQ_INT(fy_postcopy_dest_place_zero_page(d, &h, 2 * hp, &err), 0);
    T_EQ_INT(fy_postcopy_dest_place_zero_page(d, &h, 2 * hp, &err), 1);
    T_EQ_INT(h.host[2 * hp + 77], 0);
    T_EQ_INT(fy_postcopy_dest_place_page(d, &h, 3 * hp, data, &err), 0);
    T_EQ_INT(h.host[3 * hp], 0x5e);   /* the stale 0xcd was discarded */
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 0);
    T_EQ_INT(fy_postcopy_dest_stop(d, &err), 0);
    fy_postcopy_dest_free(d);
    free(data);
    munmap(p, size);
    close(h.fd);
}

int main(void)
{
    /* userfaultfd works on every machine this project runs on
     * (machine.md): a failure to open it fails the tests, no skip. */
    T_RUN(test_lifecycle_errors);
    T_RUN(test_faults_served);
    T_RUN(test_zero_and_eexist);
    T_RUN(test_dedup_holes_stale);
    T_RUN(test_pause_resume);
    T_RUN(test_recovery);
    T_RUN(test_blocktime);
    T_RUN(test_latency_background);
    T_RUN(test_latency_preempt);
    T_RUN(test_ignore_shared);
    T_RUN(test_hugetlb);
    return t_done();
}
