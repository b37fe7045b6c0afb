/*
 * testvm.h: a small VM for migration tests, source and destination in one
 * process.
 *
 * RAM: "pc.ram" on a memfd (MAP_SHARED, like the reference VM) and
 * "vga.vram" on private anonymous memory, so both ways the destination
 * learns which pages are untouched get exercised. A "vCPU" writer thread
 * dirties pages (a counter stamped at a pseudo-random page) and records
 * each write in the VM's own dirty log, as dirty tracking hardware would;
 * it also bumps a tiny VMState device. stop() parks the writer and returns
 * only once it is parked, so nothing changes after stop.
 *
 * Test hooks: gate_dirty_log_start makes dirty_log_start block until the
 * test opens the gate (to hold a migration in setup); events are recorded.
 */
#ifndef FERRY_TESTS_TESTVM_H
#define FERRY_TESTS_TESTVM_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/migration.h"
#include "ferry/ram.h"
#include "ferry/uri.h"

#define TVM_MAX_BLOCKS 4
#define TVM_MAX_EVENTS 256

typedef struct TestDev {
    uint32_t counter;
    uint64_t regs[4];
    uint8_t buf[32];
} TestDev;

static int testdev_pre_save(void *opaque, FyError **errp);

static const VMStateDescription vmstate_testdev = {
    .name = "testdev",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = testdev_pre_save,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(counter, TestDev),
        VMSTATE_UINT64_ARRAY(regs, TestDev, 4),
        VMSTATE_BUFFER(buf, TestDev),
        VMSTATE_END_OF_LIST()
    },
};

/* The same layout without the gate, for devices that are not vm->dev. */
static const VMStateDescription vmstate_testdev_plain = {
    .name = "testdev",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(counter, TestDev),
        VMSTATE_UINT64_ARRAY(regs, TestDev, 4),
        VMSTATE_BUFFER(buf, TestDev),
        VMSTATE_END_OF_LIST()
    },
};

typedef struct TestVM {
    const char *name;
    int nblocks;
    FyRamBlock blocks[TVM_MAX_BLOCKS];
    FyRamList list;
    unsigned long *log[TVM_MAX_BLOCKS]; /* the VM's dirty log (atomic ops) */
    atomic_bool logging;

    FySaveState *ss;
    FyMigration *mig;
    TestDev dev;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running;        /* (lock) */
    bool parked;         /* (lock) the writer acknowledged a stop */
    bool quit;           /* (lock) */
    bool has_writer;
    pthread_t writer;
    atomic_ulong writes;
    unsigned write_pages;  /* writer dirties pages [0, write_pages) of block 0 */
    int write_delay_us;

    bool gate_dirty_log_start; /* (lock) block dirty_log_start until cleared */
    bool in_dirty_log_start;   /* (lock) */
    bool gate_pre_save;        /* (lock) block the device's pre_save */
    bool in_pre_save;          /* (lock) */
    int starts, stops;         /* (lock) */

    pthread_mutex_t ev_lock;
    int nevents;
    char events[TVM_MAX_EVENTS][48];
} TestVM;

static inline uint64_t tvm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void tvm_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* The device save waits at the gate: a test holds the migration in the
 * device phase this way. */
static int testdev_pre_save(void *opaque, FyError **errp)
{
    TestVM *vm = (TestVM *)((char *)opaque - offsetof(TestVM, dev));
    (void)errp;
    pthread_mutex_lock(&vm->lock);
    vm->in_pre_save = true;
    pthread_cond_broadcast(&vm->cond);
    while (vm->gate_pre_save)
        pthread_cond_wait(&vm->cond, &vm->lock);
    vm->in_pre_save = false;
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

/* ---- VM ops ---- */

static inline int tvm_block_index(TestVM *vm, const FyRamBlock *b)
{
    for (int i = 0; i < vm->nblocks; i++)
        if (&vm->blocks[i] == b)
            return i;
    return -1;
}

static inline int tvm_stop(void *opaque, FyError **errp)
{
    TestVM *vm = opaque;
    (void)errp;
    pthread_mutex_lock(&vm->lock);
    vm->running = false;
    vm->stops++;
    pthread_cond_broadcast(&vm->cond);
    while (vm->has_writer && !vm->parked)
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

static inline int tvm_start(void *opaque, FyError **errp)
{
    TestVM *vm = opaque;
    (void)errp;
    pthread_mutex_lock(&vm->lock);
    vm->running = true;
    vm->starts++;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

static inline bool tvm_is_running(void *opaque)
{
    TestVM *vm = opaque;
    pthread_mutex_lock(&vm->lock);
    bool r = vm->running;
    pthread_mutex_unlock(&vm->lock);
    return r;
}

static inline int tvm_dirty_log_start(void *opaque, FyError **errp)
{
    TestVM *vm = opaque;
    (void)errp;
    pthread_mutex_lock(&vm->lock);
    vm->in_dirty_log_start = true;
    pthread_cond_broadcast(&vm->cond);
    while (vm->gate_dirty_log_start)
        pthread_cond_wait(&vm->cond, &vm->lock);
    vm->in_dirty_log_start = false;
    pthread_mutex_unlock(&vm->lock);
    for (int i = 0; i < vm->nblocks; i++) {
        uint64_t pages = vm->blocks[i].used_length / FY_TARGET_PAGE_SIZE;
        for (size_t w = 0; w < FY_BITMAP_LONGS(pages); w++)
            __atomic_store_n(&vm->log[i][w], 0, __ATOMIC_RELAXED);
    }
    atomic_store(&vm->logging, true);
    return 0;
}

static inline void tvm_dirty_log_stop(void *opaque)
{
    TestVM *vm = opaque;
    atomic_store(&vm->logging, false);
}

static inline int tvm_dirty_log_sync(void *opaque, FyRamBlock *b, unsigned long *bitmap,
                              FyError **errp)
{
    TestVM *vm = opaque;
    int i = tvm_block_index(vm, b);
    if (i < 0) {
        fy_error_setg(errp, "unknown block");
        return -1;
    }
    uint64_t pages = b->used_length / FY_TARGET_PAGE_SIZE;
    for (size_t w = 0; w < FY_BITMAP_LONGS(pages); w++)
        bitmap[w] |= __atomic_exchange_n(&vm->log[i][w], 0, __ATOMIC_ACQ_REL);
    return 0;
}

static const FyVMOps tvm_ops = {
    .stop = tvm_stop,
    .start = tvm_start,
    .is_running = tvm_is_running,
    .dirty_log_start = tvm_dirty_log_start,
    .dirty_log_stop = tvm_dirty_log_stop,
    .dirty_log_sync = tvm_dirty_log_sync,
};

/* ---- the writer ("vCPU") ---- */

static inline void tvm_mark_dirty(TestVM *vm, int blk, uint64_t page)
{
    if (atomic_load(&vm->logging))
        __atomic_fetch_or(&vm->log[blk][page / FY_BITS_PER_LONG],
                          1ul << (page % FY_BITS_PER_LONG), __ATOMIC_RELEASE);
}

static inline void *tvm_writer(void *opaque)
{
    TestVM *vm = opaque;
    uint64_t x = 88172645463325252ull;
    for (;;) {
        pthread_mutex_lock(&vm->lock);
        while (!vm->running && !vm->quit) {
            vm->parked = true;
            pthread_cond_broadcast(&vm->cond);
            pthread_cond_wait(&vm->cond, &vm->lock);
        }
        vm->parked = false;
        bool quit = vm->quit;
        pthread_mutex_unlock(&vm->lock);
        if (quit)
            break;
        for (int n = 0; n < 64; n++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            uint64_t page = x % vm->write_pages;
            uint64_t w = atomic_fetch_add(&vm->writes, 1) + 1;
            uint8_t *p = vm->blocks[0].host + page * FY_TARGET_PAGE_SIZE;
            memcpy(p + (x >> 40) % (FY_TARGET_PAGE_SIZE - 8), &w, sizeof(w));
            tvm_mark_dirty(vm, 0, page);
            vm->dev.counter = (uint32_t)w;
            vm->dev.regs[w % 4] = w;
        }
        if (vm->write_delay_us)
            usleep((useconds_t)vm->write_delay_us);
    }
    return NULL;
}

/* ---- events ---- */

static inline void tvm_event(void *opaque, const char *name, json_t *data)
{
    TestVM *vm = opaque;
    pthread_mutex_lock(&vm->ev_lock);
    if (vm->nevents < TVM_MAX_EVENTS) {
        json_t *st = json_object_get(data, "status");
        json_t *pass = json_object_get(data, "pass");
        if (st)
            snprintf(vm->events[vm->nevents++], 48, "%s:%s", name,
                     json_string_value(st));
        else if (pass)
            snprintf(vm->events[vm->nevents++], 48, "%s:%lld", name,
                     (long long)json_integer_value(pass));
    }
    pthread_mutex_unlock(&vm->ev_lock);
}

/* "MIGRATION:setup,MIGRATION:active,..." of the status events only. */
static inline void tvm_status_events(TestVM *vm, char *out, size_t len)
{
    out[0] = 0;
    pthread_mutex_lock(&vm->ev_lock);
    for (int i = 0; i < vm->nevents; i++) {
        if (strncmp(vm->events[i], "MIGRATION:", 10))
            continue;
        if (out[0])
            strncat(out, ",", len - strlen(out) - 1);
        strncat(out, vm->events[i] + 10, len - strlen(out) - 1);
    }
    pthread_mutex_unlock(&vm->ev_lock);
}

static inline int tvm_count_events(TestVM *vm, const char *prefix)
{
    int n = 0;
    pthread_mutex_lock(&vm->ev_lock);
    for (int i = 0; i < vm->nevents; i++)
        n += !strncmp(vm->events[i], prefix, strlen(prefix));
    pthread_mutex_unlock(&vm->ev_lock);
    return n;
}

/* ---- construction ---- */

typedef struct TvmBlockSpec {
    const char *name;
    uint64_t size;
    bool memfd;
} TvmBlockSpec;

static const TvmBlockSpec tvm_default_blocks[] = {
    { "pc.ram", 32 << 20, true },
    { "vga.vram", 4 << 20, false },
    { NULL, 0, false },
};

static inline int tvm_add_block(TestVM *vm, const TvmBlockSpec *s)
{
    FyRamBlock *b = &vm->blocks[vm->nblocks];
    memset(b, 0, sizeof(*b));
    snprintf(b->idstr, sizeof(b->idstr), "%s", s->name);
    b->used_length = s->size;
    b->page_size = FY_TARGET_PAGE_SIZE;
    b->fd = -1;
    b->mr_addr = (uint64_t)vm->nblocks << 32;
    if (s->memfd) {
        b->fd = memfd_create(s->name, MFD_CLOEXEC);
        if (b->fd < 0 || ftruncate(b->fd, (off_t)s->size) < 0)
            return -1;
        b->host = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                       b->fd, 0);
        b->shared = true;
    } else {
        b->host = mmap(NULL, s->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (b->host == MAP_FAILED)
        return -1;
    vm->log[vm->nblocks] = calloc(FY_BITMAP_LONGS(s->size / FY_TARGET_PAGE_SIZE),
                                  sizeof(unsigned long));
    vm->list.blocks[vm->list.count++] = b;
    vm->nblocks++;
    return 0;
}

/* A VM with the given blocks (NULL: the default two) and the test device. */
static inline TestVM *tvm_new(const char *name, const TvmBlockSpec *specs)
{
    TestVM *vm = calloc(1, sizeof(*vm));
    vm->name = name;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_cond_init(&vm->cond, NULL);
    pthread_mutex_init(&vm->ev_lock, NULL);
    vm->write_pages = 1024;
    for (const TvmBlockSpec *s = specs ? specs : tvm_default_blocks; s->name; s++) {
        if (tvm_add_block(vm, s) < 0) {
            perror("tvm_add_block");
            abort();
        }
    }
    vm->ss = fy_savevm_new("ferry-test-1.0");
    FyError *err = NULL;
    if (fy_register_vmstate(vm->ss, "testdev", 0, &vmstate_testdev, &vm->dev,
                            &err) < 0) {
        fprintf(stderr, "register: %s\n", fy_error_msg(err));
        abort();
    }
    vm->mig = fy_migration_new(vm->ss, &vm->list, &tvm_ops, vm);
    if (!vm->mig)
        abort();
    fy_migration_set_event_handler(vm->mig, tvm_event, vm);
    return vm;
}

/* Deterministic contents: every 3rd page zero, the rest patterned. */
static inline void tvm_fill(TestVM *vm, uint32_t seed)
{
    for (int i = 0; i < vm->nblocks; i++) {
        FyRamBlock *b = &vm->blocks[i];
        uint64_t pages = b->used_length / FY_TARGET_PAGE_SIZE;
        for (uint64_t p = 0; p < pages; p++) {
            uint32_t *w = (uint32_t *)(b->host + p * FY_TARGET_PAGE_SIZE);
            if (p % 3 == 0)
                continue;
            for (size_t k = 0; k < FY_TARGET_PAGE_SIZE / 4; k += 61)
                w[k] = seed ^ (uint32_t)(p * 2654435761u + k + (uint32_t)i);
        }
    }
    vm->dev.counter = seed;
    for (int k = 0; k < 4; k++)
        vm->dev.regs[k] = seed * 1000003ull + (uint64_t)k;
    memset(vm->dev.buf, (int)(seed & 0xff), sizeof(vm->dev.buf));
}

/* Start running; with_writer also starts the vCPU writer. */
static inline void tvm_run(TestVM *vm, bool with_writer)
{
    if (with_writer && !vm->has_writer) {
        vm->has_writer = true;
        pthread_create(&vm->writer, NULL, tvm_writer, vm);
    }
    tvm_start(vm, NULL);
}

static inline void tvm_free(TestVM *vm)
{
    if (!vm)
        return;
    fy_migration_free(vm->mig);
    pthread_mutex_lock(&vm->lock);
    vm->quit = true;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    if (vm->has_writer)
        pthread_join(vm->writer, NULL);
    fy_savevm_free(vm->ss);
    for (int i = 0; i < vm->nblocks; i++) {
        munmap(vm->blocks[i].host, vm->blocks[i].used_length);
        if (vm->blocks[i].fd >= 0)
            close(vm->blocks[i].fd);
        free(vm->log[i]);
    }
    free(vm);
}

/* ---- comparisons ---- */

/* First differing page of block i, or -1. */
static inline long tvm_first_diff(TestVM *a, TestVM *b, int i)
{
    uint64_t len = a->blocks[i].used_length;
    if (len != b->blocks[i].used_length)
        return 0;
    for (uint64_t off = 0; off < len; off += FY_TARGET_PAGE_SIZE) {
        if (memcmp(a->blocks[i].host + off, b->blocks[i].host + off,
                   FY_TARGET_PAGE_SIZE))
            return (long)(off / FY_TARGET_PAGE_SIZE);
    }
    return -1;
}

static inline bool tvm_ram_equal(TestVM *a, TestVM *b)
{
    if (a->nblocks != b->nblocks)
        return false;
    for (int i = 0; i < a->nblocks; i++) {
        long d = tvm_first_diff(a, b, i);
        if (d >= 0) {
            printf("# block '%s' differs at page %ld\n", a->blocks[i].idstr, d);
            return false;
        }
    }
    return true;
}

static inline bool tvm_dev_equal(TestVM *a, TestVM *b)
{
    json_t *ja = vmstate_to_json(&vmstate_testdev, &a->dev);
    json_t *jb = vmstate_to_json(&vmstate_testdev, &b->dev);
    bool eq = ja && jb && json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return eq;
}

/* query-migrate's string/integer members. */
static inline const char *tvm_query_str(TestVM *vm, const char *key, char *buf,
                                 size_t len)
{
    json_t *q = fy_migration_query(vm->mig);
    json_t *v = json_object_get(q, key);
    snprintf(buf, len, "%s", json_is_string(v) ? json_string_value(v) : "");
    json_decref(q);
    return buf;
}

static inline long long tvm_query_int(TestVM *vm, const char *key, const char *sub)
{
    json_t *q = fy_migration_query(vm->mig);
    json_t *v = json_object_get(q, key);
    if (sub)
        v = json_object_get(v, sub);
    long long r = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(q);
    return r;
}

static inline int tvm_set_param_int(TestVM *vm, const char *name, long long v)
{
    json_t *o = json_pack("{s:I}", name, (json_int_t)v);
    int r = fy_migration_set_parameters(vm->mig, o, NULL);
    json_decref(o);
    return r;
}

static inline void tvm_cap(TestVM *vm, const char *cap, bool on)
{
    FyError *err = NULL;
    if (fy_migration_set_capability(vm->mig, cap, on, &err) < 0) {
        fprintf(stderr, "cap %s: %s\n", cap, fy_error_msg(err));
        abort();
    }
}

/* ---- running a migration ---- */

/* A unique socket or file path for this test process. */
static inline const char *tvm_path(char *buf, size_t len, const char *what)
{
    static int n;
    snprintf(buf, len, "/tmp/ferry-test-%d-%d.%s", (int)getpid(), n++, what);
    return buf;
}

static inline void tvm_print_error(TestVM *vm)
{
    char e[1024];
    tvm_query_str(vm, "error-desc", e, sizeof(e));
    if (e[0])
        printf("# %s error-desc: %s\n", vm->name, e);
}

/* Incoming on dst at in_uri (NULL: none, the caller did it), outgoing from
 * src to out_uri (NULL: use dst's bound address). Waits for both. */
static inline void tvm_migrate(TestVM *src, TestVM *dst, const char *out_uri,
                               const char *in_uri, FyMigStatus *src_st,
                               FyMigStatus *dst_st)
{
    FyError *err = NULL;
    char *addr = NULL;
    if (in_uri && fy_migrate_incoming(dst->mig, in_uri, &err) < 0) {
        printf("# incoming: %s\n", fy_error_msg(err));
        fy_error_clear(&err);
    }
    if (!out_uri)
        out_uri = addr = fy_migration_incoming_address(dst->mig);
    if (fy_migrate(src->mig, out_uri, false, &err) < 0) {
        printf("# migrate: %s\n", fy_error_msg(err));
        fy_error_clear(&err);
    }
    free(addr);
    *src_st = fy_migration_wait(src->mig, 60000);
    *dst_st = dst ? fy_migration_wait(dst->mig, 60000) : MIGRATION_STATUS_NONE;
    tvm_print_error(src);
    if (dst)
        tvm_print_error(dst);
}

#endif
