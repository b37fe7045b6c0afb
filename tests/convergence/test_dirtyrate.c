/*
 * test_dirtyrate.c: calc-dirty-rate / query-dirty-rate.
 *
 * page-sampling runs over a real memfd region that a thread writes at a
 * known page rate; dirty-bitmap over a fake VM whose dirty log is a bitmap
 * a "guest" thread sets bits in (the log's sync first makes every store
 * the guest owes by now, as a vCPU's stores are made before its dirty log
 * is read: a guest thread starved by a loaded host, ASan-slowed, cannot
 * make the measured rate look lower than the rate it runs at); dirty-ring over per-vCPU counters that grow
 * at known rates; the borrow path with a migration's counter, including a
 * borrow change in the middle of a measurement. Rates are checked against
 * what was written within 0.5x..2x (timing on a shared machine varies).
 */
#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/dirtyrate.h"
#include "t.h"

#define PAGE 4096

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* MB/s as QEMU counts them for a page rate. */
static double mbps(double pages_per_s)
{
    return pages_per_s * PAGE / (1 << 20);
}

#define T_NEAR(got, want)                                                   \
    do {                                                                    \
        double g_ = (double)(got), w_ = (double)(want);                     \
        if (!(g_ >= 0.5 * w_ && g_ <= 2.0 * w_))                            \
            T_FAIL("%s = %.1f, expected about %.1f (0.5x..2x)", #got, g_,  \
                   w_);                                                     \
    } while (0)

static json_t *args(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    if (!j)
        T_FAIL("bad JSON in test: %s", text);
    return j;
}

static int calc(FyDirtyRate *dr, const char *text, FyError **errp)
{
    json_t *a = args(text);
    int r = fy_dirtyrate_calc_json(dr, a, errp);
    json_decref(a);
    return r;
}

static long long qint(json_t *q, const char *k)
{
    return (long long)json_integer_value(json_object_get(q, k));
}

static const char *qstr(json_t *q, const char *k)
{
    return json_string_value(json_object_get(q, k));
}

/* ---- guest memory: a memfd region and a writer at a known rate ---- */

typedef struct Region {
    FyRamBlock rb;
    FyRamList list;
} Region;

static bool region_init(Region *r, const char *name, size_t size)
{
    memset(r, 0, sizeof(*r));
    r->rb.fd = memfd_create(name, MFD_CLOEXEC);
    if (r->rb.fd < 0 || ftruncate(r->rb.fd, (off_t)size) < 0) {
        T_FAIL("memfd: %s", strerror(errno));
        return false;
    }
    r->rb.host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
                      r->rb.fd, 0);
    if (r->rb.host == MAP_FAILED) {
        T_FAIL("mmap: %s", strerror(errno));
        return false;
    }
    snprintf(r->rb.idstr, sizeof(r->rb.idstr), "%s", name);
    r->rb.used_length = size;
    r->rb.page_size = PAGE;
    r->rb.shared = true;
    r->list.count = 1;
    r->list.blocks[0] = &r->rb;
    return true;
}

static void region_fini(Region *r)
{
    munmap(r->rb.host, r->rb.used_length);
    close(r->rb.fd);
}

/* Writes one byte in page after page (never the same page twice within a
 * wrap) at pages_per_s, catching up after any delay. Optionally, instead
 * of memory, it "dirties" through a callback. writer_catch_up() makes the
 * stores owed by now, from the writer thread or from whoever needs them
 * made (a dirty log sync). */
typedef struct Writer {
    uint8_t *mem;
    uint64_t pages;
    double pages_per_s;
    void (*dirty)(void *opaque, uint64_t page);
    void *opaque;
    bool stop;                 /* atomic */
    pthread_t th;
    pthread_mutex_t mu;
    int64_t t0;                /* (mu) */
    uint64_t done;             /* (mu) stores made */
} Writer;

static void writer_catch_up(Writer *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t target = (uint64_t)((double)(now_ms() - w->t0) *
                                 w->pages_per_s / 1000.0);
    for (; w->done < target; w->done++) {
        uint64_t p = w->done % w->pages;
        if (w->dirty)
            w->dirty(w->opaque, p);
        else
            w->mem[p * PAGE + (w->done / w->pages) % PAGE]++;
    }
    pthread_mutex_unlock(&w->mu);
}

static void *writer_main(void *arg)
{
    Writer *w = arg;

    while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
        writer_catch_up(w);
        sleep_ms(1);
    }
    return NULL;
}

static void writer_start(Writer *w)
{
    __atomic_store_n(&w->stop, false, __ATOMIC_RELAXED);
    pthread_mutex_init(&w->mu, NULL);
    w->t0 = now_ms();
    w->done = 0;
    pthread_create(&w->th, NULL, writer_main, w);
}

static void writer_stop(Writer *w)
{
    __atomic_store_n(&w->stop, true, __ATOMIC_RELAXED);
    pthread_join(w->th, NULL);
    pthread_mutex_destroy(&w->mu);
}

/* ---- a fake VM whose dirty log is a bitmap ---- */

typedef struct FakeVM {
    int nblocks;
    FyRamBlock blocks[2];
    FyRamList list;
    unsigned long *log[2];     /* set by the guest while logging is on */
    bool logging;              /* atomic */
    int starts, stops, syncs;  /* atomic */
    int vcpus;
    double vcpu_rate[4];       /* pages/s, for the dirty-ring counters */
    int64_t vcpu_t0;
    Writer *guest;             /* its owed stores are made at each sync */
} FakeVM;

static int fake_stop(void *o, FyError **e) { (void)o; (void)e; return 0; }
static int fake_start(void *o, FyError **e) { (void)o; (void)e; return 0; }

static int fake_log_start(void *o, FyError **e)
{
    FakeVM *vm = o;
    /* like KVM_DIRTY_LOG_INITIALLY_SET: the first sync reports everything */
    for (int b = 0; b < vm->nblocks; b++) {
        size_t longs = FY_BITMAP_LONGS(vm->blocks[b].used_length / PAGE);
        for (size_t i = 0; i < longs; i++)
            __atomic_store_n(&vm->log[b][i], ~0ul, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&vm->logging, true, __ATOMIC_RELAXED);
    __atomic_add_fetch(&vm->starts, 1, __ATOMIC_RELAXED);
    return 0;
}

static void fake_log_stop(void *o)
{
    FakeVM *vm = o;
    __atomic_store_n(&vm->logging, false, __ATOMIC_RELAXED);
    __atomic_add_fetch(&vm->stops, 1, __ATOMIC_RELAXED);
}

static int fake_log_sync(void *o, FyRamBlock *rb, unsigned long *bitmap,
                         FyError **e)
{
    FakeVM *vm = o;
    int b = (int)(rb - vm->blocks);
    size_t longs = FY_BITMAP_LONGS(rb->used_length / PAGE);

    (void)e;
    if (b < 0 || b >= vm->nblocks)
        return -1;
    if (vm->guest)
        writer_catch_up(vm->guest);
    for (size_t i = 0; i < longs; i++)
        bitmap[i] |= __atomic_exchange_n(&vm->log[b][i], 0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&vm->syncs, 1, __ATOMIC_RELAXED);
    return 0;
}

static int fake_vcpu_count(void *o)
{
    return ((FakeVM *)o)->vcpus;
}

/* The guest's store to page p of the whole RAM (blocks back to back). */
static void fake_dirty(void *o, uint64_t p)
{
    FakeVM *vm = o;
    int b = 0;

    while (b < vm->nblocks - 1 && p >= vm->blocks[b].used_length / PAGE) {
        p -= vm->blocks[b].used_length / PAGE;
        b++;
    }
    if (__atomic_load_n(&vm->logging, __ATOMIC_RELAXED))
        __atomic_or_fetch(&vm->log[b][p / FY_BITS_PER_LONG],
                          1ul << (p % FY_BITS_PER_LONG), __ATOMIC_RELAXED);
}

static uint64_t fake_vcpu_pages(void *o, int vcpu)
{
    FakeVM *vm = o;
    return (uint64_t)((double)(now_ms() - vm->vcpu_t0) *
                      vm->vcpu_rate[vcpu] / 1000.0);
}

static const FyVMOps fake_ops = {
    .stop = fake_stop, .start = fake_start,
    .dirty_log_start = fake_log_start, .dirty_log_stop = fake_log_stop,
    .dirty_log_sync = fake_log_sync, .vcpu_count = fake_vcpu_count,
};

/* RAM need not be readable for the log modes: no host memory. */
static void fake_init(FakeVM *vm, uint64_t block_size)
{
    memset(vm, 0, sizeof(*vm));
    vm->nblocks = 2;
    vm->list.count = 2;
    for (int b = 0; b < 2; b++) {
        snprintf(vm->blocks[b].idstr, sizeof(vm->blocks[b].idstr), "blk%d", b);
        vm->blocks[b].used_length = block_size;
        vm->blocks[b].page_size = PAGE;
        vm->blocks[b].fd = -1;
        vm->list.blocks[b] = &vm->blocks[b];
        vm->log[b] = calloc(FY_BITMAP_LONGS(block_size / PAGE),
                            sizeof(unsigned long));
    }
    vm->vcpu_t0 = now_ms();
}

static void fake_fini(FakeVM *vm)
{
    for (int b = 0; b < vm->nblocks; b++)
        free(vm->log[b]);
}

/* A migration's borrowed count: grows at a known rate; records use after
 * it was withdrawn. */
typedef struct Borrow {
    double pages_per_s;
    int64_t t0;
    int calls, syncs;           /* atomic */
    bool gone;                  /* atomic: set_borrow(NULL) returned */
    int calls_after_gone;       /* atomic */
} Borrow;

static int borrow_fn(void *o, bool sync, uint64_t *pages, FyError **e)
{
    Borrow *b = o;
    (void)e;
    __atomic_add_fetch(&b->calls, 1, __ATOMIC_RELAXED);
    if (sync)
        __atomic_add_fetch(&b->syncs, 1, __ATOMIC_RELAXED);
    if (__atomic_load_n(&b->gone, __ATOMIC_RELAXED))
        __atomic_add_fetch(&b->calls_after_gone, 1, __ATOMIC_RELAXED);
    *pages = (uint64_t)((double)(now_ms() - b->t0) * b->pages_per_s / 1000.0);
    return 0;
}

/* ---- tests ---- */

static void test_arguments(void)
{
    FakeVM vm;
    FyDirtyRate *dr;
    FyError *err = NULL;
    json_t *q;

    fake_init(&vm, 1 << 20);
    dr = fy_dirtyrate_new(&vm.list, NULL, NULL);

    q = fy_dirtyrate_query(dr);
    T_EQ_STR(qstr(q, "status"), "unstarted");
    T_ASSERT(json_object_get(q, "dirty-rate") == NULL);
    T_EQ_STR(qstr(q, "mode"), "page-sampling");
    T_EQ_STR(qstr(q, "calc-time-unit"), "second");
    T_ASSERT(json_object_get(q, "vcpu-dirty-rate") == NULL);
    json_decref(q);

    static const struct { const char *args, *msg; } bad[] = {
        {"{}", "Parameter 'calc-time' is missing"},
        {"{\"calc-time\": \"1\"}",
         "Invalid parameter type for 'calc-time', expected: integer"},
        {"{\"calc-time\": 1, \"x\": 1}", "Parameter 'x' is unexpected"},
        {"{\"calc-time\": 1, \"calc-time-unit\": \"hour\"}",
         "Parameter 'calc-time-unit' does not accept value 'hour'"},
        {"{\"calc-time\": 1, \"mode\": \"dirty-log\"}",
         "Parameter 'mode' does not accept value 'dirty-log'"},
        {"{\"calc-time\": 0}",
         "Calculation time is out of range [50ms, 60000ms]."},
        {"{\"calc-time\": 61}", "out of range [50ms, 60000ms]"},
        {"{\"calc-time\": 49, \"calc-time-unit\": \"millisecond\"}",
         "out of range [50ms, 60000ms]"},
        {"{\"calc-time\": -5}", "out of range"},
        {"{\"calc-time\": 9223372036854775807}", "out of range"},
        {"{\"calc-time\": 1, \"sample-pages\": 127}",
         "sample-pages is out of range[128, 16384]."},
        {"{\"calc-time\": 1, \"sample-pages\": 16385}",
         "sample-pages is out of range[128, 16384]."},
        {"{\"calc-time\": 1, \"sample-pages\": 512, \"mode\": \"dirty-bitmap\"}",
         "sample-pages is used only in page-sampling mode"},
        {"{\"calc-time\": 1, \"mode\": \"dirty-ring\"}",
         "mode dirty-ring is not enabled, use other method instead."},
        {"{\"calc-time\": 1, \"mode\": \"dirty-bitmap\"}",
         "mode dirty-bitmap is not enabled, use other method instead."},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (calc(dr, bad[i].args, &err) != -1)
            T_FAIL("%s accepted", bad[i].args);
        else
            T_CONTAINS(fy_error_msg(err), bad[i].msg);
        fy_error_clear(&err);
    }
    T_EQ_INT(fy_dirtyrate_status(dr), FY_DIRTYRATE_UNSTARTED);
    T_EQ_INT(fy_dirtyrate_calc_json(dr, NULL, &err), -1);
    T_CONTAINS(fy_error_msg(err), "calc-time' is missing");
    fy_error_clear(&err);
    fy_dirtyrate_free(dr);
    fake_fini(&vm);
}

static void test_page_sampling(void)
{
    Region r;
    FyDirtyRate *dr;
    FyError *err = NULL;
    Writer w = {0};
    json_t *q;
    const double rate = 4096;          /* pages/s = 16 MB/s */

    if (!region_init(&r, "pc.ram", 64 << 20))
        return;
    dr = fy_dirtyrate_new(&r.list, NULL, NULL);
    w.mem = r.rb.host;
    w.pages = r.rb.used_length / PAGE;
    w.pages_per_s = rate;

    writer_start(&w);
    T_EQ_INT(calc(dr, "{\"calc-time\": 1, \"sample-pages\": 16384}", &err), 0);
    T_ASSERT(err == NULL);
    q = fy_dirtyrate_query(dr);
    T_EQ_STR(qstr(q, "status"), "measuring");
    T_ASSERT(json_object_get(q, "dirty-rate") == NULL);
    T_EQ_INT(qint(q, "sample-pages"), 16384);
    json_decref(q);
    T_EQ_INT(calc(dr, "{\"calc-time\": 1}", &err), -1);
    T_CONTAINS(fy_error_msg(err), "the dirty rate is already being measured.");
    fy_error_clear(&err);

    T_ASSERT(fy_dirtyrate_wait(dr, 30000));
    writer_stop(&w);
    q = fy_dirtyrate_query(dr);
    printf("# page-sampling: %lld MB/s for %.1f MB/s written\n",
           qint(q, "dirty-rate"), mbps(rate));
    T_EQ_STR(qstr(q, "status"), "measured");
    T_NEAR(qint(q, "dirty-rate"), mbps(rate));
    T_EQ_STR(qstr(q, "mode"), "page-sampling");
    T_EQ_INT(qint(q, "sample-pages"), 16384);
    T_ASSERT(qint(q, "calc-time") >= 1 && qint(q, "calc-time") <= 3);
    T_EQ_STR(qstr(q, "calc-time-unit"), "second");
    T_ASSERT(qint(q, "start-time") > 0);
    T_ASSERT(json_object_get(q, "vcpu-dirty-rate") == NULL);
    json_decref(q);
    T_ASSERT(fy_dirtyrate_last_error(dr) == NULL);

    /* nobody writes: exactly 0, with the default 512 samples per GiB */
    T_EQ_INT(calc(dr, "{\"calc-time\": 300, \"calc-time-unit\": "
                      "\"millisecond\"}", &err), 0);
    T_ASSERT(fy_dirtyrate_wait(dr, 30000));
    q = fy_dirtyrate_query(dr);
    T_EQ_INT(qint(q, "dirty-rate"), 0);
    T_EQ_INT(qint(q, "sample-pages"), 512);
    T_ASSERT(qint(q, "calc-time") >= 300 && qint(q, "calc-time") < 3000);
    T_EQ_STR(qstr(q, "calc-time-unit"), "millisecond");
    json_decref(q);

    fy_dirtyrate_free(dr);
    region_fini(&r);
}

static void test_page_sampling_small_block(void)
{
    Region r;
    FyDirtyRate *dr;
    json_t *q;
    char *e;

    if (!region_init(&r, "rom", 64 << 10))     /* under 128 KiB: skipped */
        return;
    dr = fy_dirtyrate_new(&r.list, NULL, NULL);
    T_EQ_INT(calc(dr, "{\"calc-time\": 50, \"calc-time-unit\": "
                      "\"millisecond\"}", NULL), 0);
    T_ASSERT(fy_dirtyrate_wait(dr, 10000));
    q = fy_dirtyrate_query(dr);
    T_EQ_STR(qstr(q, "status"), "measured");
    T_EQ_INT(qint(q, "dirty-rate"), -1);
    json_decref(q);
    e = fy_dirtyrate_last_error(dr);
    T_CONTAINS(e, "no RAM block of at least 128 KiB to sample");
    free(e);
    fy_dirtyrate_free(dr);
    region_fini(&r);
}

static void test_dirty_bitmap(void)
{
    FakeVM vm;
    FyDirtyRate *dr;
    FyError *err = NULL;
    Writer w = {0};
    json_t *q;
    const double rate = 5120;          /* pages/s = 20 MB/s */

    fake_init(&vm, 32 << 20);          /* 2 x 32 MiB, 16384 pages */
    dr = fy_dirtyrate_new(&vm.list, &fake_ops, &vm);
    w.pages = 2 * (32 << 20) / PAGE;
    w.pages_per_s = rate;
    w.dirty = fake_dirty;
    w.opaque = &vm;

    writer_start(&w);
    vm.guest = &w;
    T_EQ_INT(calc(dr, "{\"calc-time\": 1000, \"calc-time-unit\": "
                      "\"millisecond\", \"mode\": \"dirty-bitmap\"}", &err), 0);
    T_ASSERT(err == NULL);
    T_ASSERT(fy_dirtyrate_wait(dr, 30000));
    vm.guest = NULL;
    writer_stop(&w);

    q = fy_dirtyrate_query(dr);
    printf("# dirty-bitmap: %lld MB/s for %.1f MB/s written\n",
           qint(q, "dirty-rate"), mbps(rate));
    T_EQ_STR(qstr(q, "status"), "measured");
    T_EQ_STR(qstr(q, "mode"), "dirty-bitmap");
    T_NEAR(qint(q, "dirty-rate"), mbps(rate));
    T_EQ_INT(qint(q, "sample-pages"), 0);
    T_ASSERT(qint(q, "calc-time") >= 1000 && qint(q, "calc-time") < 5000);
    json_decref(q);
    /* the log was started once, synced twice per block (one sync thrown
     * away: it reported every page), and is off again */
    T_EQ_INT(vm.starts, 1);
    T_EQ_INT(vm.stops, 1);
    T_EQ_INT(vm.syncs, 4);
    T_ASSERT(!vm.logging);

    fy_dirtyrate_free(dr);
    fake_fini(&vm);
}

static void test_borrowed_bitmap(void)
{
    FakeVM vm;
    FyDirtyRate *dr;
    Borrow b = {.pages_per_s = 10240, .t0 = now_ms()};   /* 40 MB/s */
    json_t *q;

    fake_init(&vm, 32 << 20);
    dr = fy_dirtyrate_new(&vm.list, &fake_ops, &vm);
    fy_dirtyrate_set_borrow(dr, borrow_fn, &b);

    T_EQ_INT(calc(dr, "{\"calc-time\": 500, \"calc-time-unit\": "
                      "\"millisecond\", \"mode\": \"dirty-bitmap\"}", NULL), 0);
    T_ASSERT(fy_dirtyrate_wait(dr, 30000));
    q = fy_dirtyrate_query(dr);
    printf("# borrowed: %lld MB/s for %.1f MB/s\n", qint(q, "dirty-rate"),
           mbps(b.pages_per_s));
    T_NEAR(qint(q, "dirty-rate"), mbps(b.pages_per_s));
    json_decref(q);
    /* the migration's count was used; the VM's log was not touched */
    T_EQ_INT(b.calls, 2);
    T_EQ_INT(b.syncs, 2);
    T_EQ_INT(vm.starts + vm.stops + vm.syncs, 0);

    /* a long measurement; the migration ends: set_borrow(NULL) cuts it
     * short and returns once the borrow function is no longer used */
    T_EQ_INT(calc(dr, "{\"calc-time\": 60, \"mode\": \"dirty-bitmap\"}",
                  NULL), 0);
    sleep_ms(400);
    int64_t t0 = now_ms();
    fy_dirtyrate_set_borrow(dr, NULL, NULL);
    __atomic_store_n(&b.gone, true, __ATOMIC_RELAXED);
    T_ASSERT(now_ms() - t0 < 5000);
    T_ASSERT(fy_dirtyrate_wait(dr, 5000));
    T_EQ_INT(b.calls_after_gone, 0);
    q = fy_dirtyrate_query(dr);
    T_EQ_STR(qstr(q, "status"), "measured");
    T_NEAR(qint(q, "dirty-rate"), mbps(b.pages_per_s));
    T_ASSERT(qint(q, "calc-time") < 5);
    json_decref(q);
    T_EQ_INT(vm.starts + vm.stops + vm.syncs, 0);

    /* the other way: a measurement on the VM's log, then a migration
     * starts: the log is released before set_borrow returns */
    T_EQ_INT(calc(dr, "{\"calc-time\": 60, \"mode\": \"dirty-bitmap\"}",
                  NULL), 0);
    sleep_ms(300);
    T_EQ_INT(vm.starts, 1);
    t0 = now_ms();
    __atomic_store_n(&b.gone, false, __ATOMIC_RELAXED);
    fy_dirtyrate_set_borrow(dr, borrow_fn, &b);
    T_ASSERT(now_ms() - t0 < 5000);
    T_EQ_INT(vm.stops, 1);
    T_ASSERT(!vm.logging);
    T_ASSERT(fy_dirtyrate_wait(dr, 5000));
    fy_dirtyrate_set_borrow(dr, NULL, NULL);

    fy_dirtyrate_free(dr);
    fake_fini(&vm);
}

static void test_dirty_ring(void)
{
    FakeVM vm;
    FyDirtyRate *dr;
    FyError *err = NULL;
    json_t *q, *rates;
    long long sum = 0;

    fake_init(&vm, 1 << 20);
    vm.vcpus = 3;
    vm.vcpu_rate[0] = 2560;            /* 10 MB/s */
    vm.vcpu_rate[1] = 7680;            /* 30 MB/s */
    vm.vcpu_rate[2] = 0;
    dr = fy_dirtyrate_new(&vm.list, &fake_ops, &vm);
    fy_dirtyrate_set_vcpu_counter(dr, fake_vcpu_pages, &vm);

    T_EQ_INT(calc(dr, "{\"calc-time\": 1, \"mode\": \"dirty-ring\"}", &err),
             0);
    T_ASSERT(err == NULL);
    T_ASSERT(fy_dirtyrate_wait(dr, 30000));
    q = fy_dirtyrate_query(dr);
    T_EQ_STR(qstr(q, "mode"), "dirty-ring");
    T_EQ_INT(qint(q, "sample-pages"), 0);
    rates = json_object_get(q, "vcpu-dirty-rate");
    T_EQ_INT(json_array_size(rates), 3);
    for (size_t i = 0; i < json_array_size(rates); i++) {
        json_t *r = json_array_get(rates, i);
        T_EQ_INT(qint(r, "id"), (long long)i);
        sum += qint(r, "dirty-rate");
    }
    T_NEAR(qint(json_array_get(rates, 0), "dirty-rate"), 10);
    T_NEAR(qint(json_array_get(rates, 1), "dirty-rate"), 30);
    T_EQ_INT(qint(json_array_get(rates, 2), "dirty-rate"), 0);
    T_EQ_INT(qint(q, "dirty-rate"), sum);
    /* harvested through the VM's log, which is off again */
    T_EQ_INT(vm.starts, 1);
    T_EQ_INT(vm.stops, 1);
    T_ASSERT(!vm.logging);

    char *text = fy_dirtyrate_format_hmp(q);
    T_CONTAINS(text, "Status: measured\n");
    T_CONTAINS(text, "Mode: dirty-ring\n");
    T_CONTAINS(text, "Period: 1 (sec)\n");
    T_CONTAINS(text, "vcpu[1], Dirty rate: ");
    T_ASSERT(strstr(text, "Sample Pages") == NULL);
    free(text);
    json_decref(q);

    /* without the counter the mode is refused again */
    fy_dirtyrate_set_vcpu_counter(dr, NULL, NULL);
    T_EQ_INT(calc(dr, "{\"calc-time\": 1, \"mode\": \"dirty-ring\"}", &err),
             -1);
    T_CONTAINS(fy_error_msg(err), "mode dirty-ring is not enabled");
    fy_error_clear(&err);
    fy_dirtyrate_free(dr);
    fake_fini(&vm);
}

static void test_hmp_not_ready_and_free(void)
{
    Region r;
    FyDirtyRate *dr;
    json_t *q;
    char *text;

    if (!region_init(&r, "pc.ram", 1 << 20))
        return;
    dr = fy_dirtyrate_new(&r.list, NULL, NULL);
    T_EQ_INT(calc(dr, "{\"calc-time\": 60}", NULL), 0);
    q = fy_dirtyrate_query(dr);
    text = fy_dirtyrate_format_hmp(q);
    T_CONTAINS(text, "Status: measuring\n");
    T_CONTAINS(text, "Sample Pages: 512 (per GB)\n");
    T_CONTAINS(text, "Period: 60 (sec)\n");
    T_CONTAINS(text, "Mode: page-sampling\n");
    T_CONTAINS(text, "Dirty rate: (not ready)\n");
    free(text);
    json_decref(q);

    /* free during a 60-second window returns at once */
    int64_t t0 = now_ms();
    fy_dirtyrate_free(dr);
    T_ASSERT(now_ms() - t0 < 5000);
    region_fini(&r);
}

int main(void)
{
    T_RUN(test_arguments);
    T_RUN(test_page_sampling);
    T_RUN(test_page_sampling_small_block);
    T_RUN(test_dirty_bitmap);
    T_RUN(test_borrowed_bitmap);
    T_RUN(test_dirty_ring);
    T_RUN(test_hmp_not_ready_and_free);
    return t_done();
}
