/*
 * dirtyrate.c: calc-dirty-rate / query-dirty-rate (see dirtyrate.h).
 *
 * Threads and state (all under dr->mu):
 *
 *   status  unstarted --calc--> measuring --thread done--> measured
 *                                   ^                         |
 *                                   +---------calc------------+
 *
 *   calc() checks the arguments, resets the result and starts the
 *   measurement thread (after joining the previous, finished one). The
 *   thread reads its inputs once under the lock, measures without it, and
 *   publishes the result and `measured` under it.
 *
 *   The dirty-log "source" of a log-mode measurement is either the VM
 *   (FyVMOps dirty log) or the migration's borrow function; it is chosen
 *   when the thread starts (source_gen = borrow_gen) and held until
 *   source_busy drops. set_borrow() bumps borrow_gen, which wakes the
 *   window early, and waits for source_busy to drop, so the previous source
 *   is never used after set_borrow() returns. free() sets cancel.
 *
 * Waiting uses a condition variable on the monotonic clock, so a free() or
 * a borrow change ends a 60-second window at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ferry/dirtyrate.h"

#define PAGE FY_TARGET_PAGE_SIZE
#define MAX_VCPUS 4096

struct FyDirtyRate {
    FyRamList *ram;
    const FyVMOps *vm;
    void *vm_opaque;

    pthread_mutex_t mu;
    pthread_cond_t wake;       /* to the thread: cancel or borrow change */
    pthread_cond_t changed;    /* from the thread: source released, done */
                               /* (both on CLOCK_MONOTONIC) */

    FyVcpuDirtyPagesFn vcpu_fn;
    void *vcpu_opaque;
    FyDirtyRateBorrowFn borrow_fn;
    void *borrow_opaque;
    uint64_t borrow_gen;

    pthread_t thread;
    bool thread_joinable;
    bool cancel;
    bool source_busy;
    uint64_t source_gen;

    /* the current or last measurement */
    FyDirtyRateStatus status;
    FyDirtyRateConfig cfg;
    int64_t calc_ms;           /* requested, then measured */
    int64_t start_time;        /* s */
    int64_t dirty_rate;        /* MB/s, -1 = none */
    int nvcpu;
    int64_t *vcpu_rates;
    char *error;
};

/* What the thread works from, copied under the lock when it starts. */
typedef struct Job {
    FyDirtyRateConfig cfg;
    int64_t calc_ms;
    FyDirtyRateBorrowFn borrow_fn;
    void *borrow_opaque;
    uint64_t gen;
    FyVcpuDirtyPagesFn vcpu_fn;
    void *vcpu_opaque;
} Job;

/* What it produces. */
typedef struct Result {
    int64_t rate;
    int64_t msec;
    int64_t start_time;
    int nvcpu;
    int64_t *vcpu_rates;
} Result;

static const char *const status_names[] = {"unstarted", "measuring",
                                           "measured"};
static const char *const mode_names[] = {"page-sampling", "dirty-ring",
                                         "dirty-bitmap"};

const char *fy_dirtyrate_status_name(FyDirtyRateStatus s)
{
    return (unsigned)s < 3 ? status_names[s] : "?";
}

const char *fy_dirtyrate_mode_name(FyDirtyRateMode m)
{
    return (unsigned)m < 3 ? mode_names[m] : "?";
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* MB/s, rounded down once at the end (QEMU rounds the MB down first, which
 * reads 0 for a short window that saw under 256 pages). */
static int64_t pages_to_mbps(uint64_t pages, int64_t msec)
{
    return (int64_t)(pages * PAGE * 1000 / ((uint64_t)msec << 20));
}

/* ---- the window ---- */

/* Sleep until deadline (monotonic ms), unless cancelled or, when watching
 * the source, the borrow function changes. False if the window was cut. */
static bool window_wait(FyDirtyRate *dr, int64_t deadline, bool watch,
                        uint64_t gen)
{
    bool cut;

    pthread_mutex_lock(&dr->mu);
    for (;;) {
        cut = dr->cancel || (watch && dr->borrow_gen != gen);
        if (cut || now_ms() >= deadline)
            break;
        struct timespec ts = {.tv_sec = deadline / 1000,
                              .tv_nsec = (deadline % 1000) * 1000000};
        pthread_cond_timedwait(&dr->wake, &dr->mu, &ts);
    }
    pthread_mutex_unlock(&dr->mu);
    return !cut;
}

static bool cancelled(FyDirtyRate *dr)
{
    pthread_mutex_lock(&dr->mu);
    bool c = dr->cancel;
    pthread_mutex_unlock(&dr->mu);
    return c;
}

static void release_source(FyDirtyRate *dr)
{
    pthread_mutex_lock(&dr->mu);
    dr->source_busy = false;
    pthread_cond_broadcast(&dr->changed);
    pthread_mutex_unlock(&dr->mu);
}

/* Elapsed time of a window that started at t0, never 0. */
static int64_t elapsed_since(int64_t t0)
{
    int64_t ms = now_ms() - t0;
    return ms > 0 ? ms : 1;
}

/* ---- page-sampling ---- */

typedef struct Sampled {
    const FyRamBlock *rb;
    uint64_t pages;
    uint64_t count;
    uint64_t *vfn;
    uint64_t *hash;
} Sampled;

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* A 64-bit hash of one target page, XXH64's round structure (4 lanes of 8
 * bytes), enough to tell a changed page from an unchanged one. */
static uint64_t page_hash(const uint8_t *p)
{
    const uint64_t p1 = 0x9e3779b185ebca87ull, p2 = 0xc2b2ae3d27d4eb4full;
    uint64_t v[4] = {p1 + p2, p2, 0, (uint64_t)0 - p1};
    uint64_t h;

    for (size_t i = 0; i < PAGE; i += 32) {
        for (int l = 0; l < 4; l++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * l, 8);
            v[l] = rotl64(v[l] + w * p2, 31) * p1;
        }
    }
    h = rotl64(v[0], 1) + rotl64(v[1], 7) + rotl64(v[2], 12) +
        rotl64(v[3], 18) + PAGE;
    h ^= h >> 33;
    h *= p2;
    h ^= h >> 29;
    h *= 0x165667b19e3779f9ull;
    return h ^ (h >> 32);
}

static void free_samples(Sampled *s, int n)
{
    for (int i = 0; i < n; i++) {
        free(s[i].vfn);
        free(s[i].hash);
    }
    free(s);
}

/* Choose and hash the sample pages of every block big enough. */
static int sample_blocks(FyDirtyRate *dr, uint64_t per_gib, Sampled **out,
                         int *nout, FyError **errp)
{
    int nblocks = dr->ram ? dr->ram->count : 0;
    Sampled *s = calloc((size_t)(nblocks > 0 ? nblocks : 1), sizeof(*s));
    uint64_t seed = (uint64_t)now_ms() ^ (uint64_t)(uintptr_t)dr;
    int n = 0;

    if (!s) {
        fy_error_setg_errno(errp, ENOMEM, "page-sampling");
        return -1;
    }
    for (int b = 0; b < nblocks; b++) {
        const FyRamBlock *rb = dr->ram->blocks[b];
        Sampled *x;

        if (!rb || !rb->host || rb->used_length < FY_DIRTYRATE_MIN_BLOCK_SIZE)
            continue;
        x = &s[n++];
        x->rb = rb;
        x->pages = rb->used_length / PAGE;
        x->count = (rb->used_length * per_gib) >> 30;
        if (!x->count || !x->pages)
            continue;
        x->vfn = calloc(x->count, sizeof(uint64_t));
        x->hash = calloc(x->count, sizeof(uint64_t));
        if (!x->vfn || !x->hash) {
            fy_error_setg_errno(errp, ENOMEM, "page-sampling: %" PRIu64
                                " samples of block '%s'", x->count, rb->idstr);
            free_samples(s, n);
            return -1;
        }
        for (uint64_t i = 0; i < x->count; i++) {
            x->vfn[i] = splitmix64(&seed) % x->pages;
            x->hash[i] = page_hash(rb->host + x->vfn[i] * PAGE);
        }
    }
    *out = s;
    *nout = n;
    return 0;
}

static int measure_sampling(FyDirtyRate *dr, const Job *job, Result *res,
                            FyError **errp)
{
    Sampled *s = NULL;
    int n = 0;
    int64_t t0 = now_ms();
    uint64_t dirty = 0, total = 0, mem_mb = 0;

    res->start_time = t0 / 1000;
    if (sample_blocks(dr, (uint64_t)job->cfg.sample_pages, &s, &n, errp) < 0)
        return -1;
    if (!window_wait(dr, t0 + job->calc_ms, false, 0)) {
        free_samples(s, n);
        fy_error_setg(errp, "measurement cancelled");
        return -1;
    }
    res->msec = elapsed_since(t0);
    for (int b = 0; b < n; b++) {
        for (uint64_t i = 0; i < s[b].count; i++)
            dirty += page_hash(s[b].rb->host + s[b].vfn[i] * PAGE) !=
                     s[b].hash[i];
        total += s[b].count;
        mem_mb += (s[b].pages * PAGE) >> 20;
    }
    free_samples(s, n);
    if (!total) {
        fy_error_setg(errp, "page-sampling: no RAM block of at least %d KiB "
                      "to sample", FY_DIRTYRATE_MIN_BLOCK_SIZE / 1024);
        return -1;
    }
    res->rate = (int64_t)(dirty * mem_mb * 1000 / (total * (uint64_t)res->msec));
    return 0;
}

/* ---- the VM's dirty log ---- */

typedef struct LogScratch {
    int n;
    unsigned long *bm[FY_RAMBLOCK_MAX];
} LogScratch;

static void scratch_free(LogScratch *ls)
{
    for (int i = 0; i < ls->n; i++)
        free(ls->bm[i]);
    ls->n = 0;
}

static int scratch_alloc(FyDirtyRate *dr, LogScratch *ls, FyError **errp)
{
    int n = dr->ram ? dr->ram->count : 0;

    ls->n = 0;
    for (int i = 0; i < n && i < FY_RAMBLOCK_MAX; i++) {
        uint64_t bits = dr->ram->blocks[i]->used_length / PAGE;
        ls->bm[i] = calloc(FY_BITMAP_LONGS(bits) ? FY_BITMAP_LONGS(bits) : 1,
                           sizeof(unsigned long));
        ls->n = i + 1;
        if (!ls->bm[i]) {
            scratch_free(ls);
            fy_error_setg_errno(errp, ENOMEM, "dirty bitmap for block '%s'",
                                dr->ram->blocks[i]->idstr);
            return -1;
        }
    }
    return 0;
}

/* Sync every block into cleared scratch bitmaps; *pages = dirty pages. */
static int log_sync(FyDirtyRate *dr, LogScratch *ls, uint64_t *pages,
                    FyError **errp)
{
    uint64_t count = 0;

    for (int i = 0; i < ls->n; i++) {
        FyRamBlock *rb = dr->ram->blocks[i];
        size_t longs = FY_BITMAP_LONGS(rb->used_length / PAGE);

        memset(ls->bm[i], 0, longs * sizeof(unsigned long));
        if (dr->vm->dirty_log_sync(dr->vm_opaque, rb, ls->bm[i], errp) < 0) {
            fy_error_prepend(errp, "dirty log sync of block '%s': ",
                             rb->idstr);
            return -1;
        }
        for (size_t w = 0; w < longs; w++)
            count += (uint64_t)__builtin_popcountl(ls->bm[i][w]);
    }
    *pages = count;
    return 0;
}

/*
 * The dirty log as one source with three steps, whichever owns it:
 *   begin  VM: log on, one sync thrown away (it may report every page);
 *          borrowed: the migration's count now
 *   count  VM: sync, pages since the previous sync; borrowed: count delta
 *   end    VM: log off
 */
typedef struct LogSource {
    FyDirtyRate *dr;
    const Job *job;
    LogScratch ls;
    bool started;
    uint64_t base;
} LogSource;

static int source_begin(LogSource *src, FyError **errp)
{
    FyDirtyRate *dr = src->dr;
    uint64_t ignored;

    if (src->job->borrow_fn)
        return src->job->borrow_fn(src->job->borrow_opaque, true, &src->base,
                                   errp);
    if (!dr->vm || !dr->vm->dirty_log_sync)
        return 0;           /* dirty-ring with a VM that needs no sync */
    if (scratch_alloc(dr, &src->ls, errp) < 0)
        return -1;
    if (dr->vm->dirty_log_start &&
        dr->vm->dirty_log_start(dr->vm_opaque, errp) < 0) {
        fy_error_prepend(errp, "dirty log start: ");
        return -1;
    }
    src->started = true;
    return log_sync(dr, &src->ls, &ignored, errp);
}

static int source_count(LogSource *src, uint64_t *pages, FyError **errp)
{
    FyDirtyRate *dr = src->dr;

    *pages = 0;
    if (src->job->borrow_fn) {
        uint64_t now = 0;
        if (src->job->borrow_fn(src->job->borrow_opaque, true, &now, errp) < 0)
            return -1;
        *pages = now >= src->base ? now - src->base : 0;
        return 0;
    }
    if (!dr->vm || !dr->vm->dirty_log_sync)
        return 0;
    return log_sync(dr, &src->ls, pages, errp);
}

static void source_end(LogSource *src)
{
    FyDirtyRate *dr = src->dr;

    if (src->started && dr->vm->dirty_log_stop)
        dr->vm->dirty_log_stop(dr->vm_opaque);
    scratch_free(&src->ls);
    release_source(dr);
}

static int measure_bitmap(FyDirtyRate *dr, const Job *job, Result *res,
                          FyError **errp)
{
    LogSource src = {.dr = dr, .job = job};
    uint64_t pages = 0;
    int64_t t0;
    int ret = -1;

    if (source_begin(&src, errp) < 0)
        goto out;
    t0 = now_ms();
    res->start_time = t0 / 1000;
    window_wait(dr, t0 + job->calc_ms, true, job->gen);
    res->msec = elapsed_since(t0);
    if (source_count(&src, &pages, errp) < 0)
        goto out;
    res->rate = pages_to_mbps(pages, res->msec);
    ret = 0;
out:
    source_end(&src);
    return ret;
}

/* ---- dirty-ring: per-vCPU counters ---- */

static int measure_ring(FyDirtyRate *dr, const Job *job, Result *res,
                        FyError **errp)
{
    LogSource src = {.dr = dr, .job = job};
    int n = dr->vm && dr->vm->vcpu_count ? dr->vm->vcpu_count(dr->vm_opaque)
                                         : 0;
    uint64_t *start = NULL, ignored;
    int64_t t0, sum = 0;
    int ret = -1;

    if (n <= 0 || n > MAX_VCPUS) {
        fy_error_setg(errp, "dirty-ring: the VM reports %d vCPUs", n);
        goto out;
    }
    start = calloc((size_t)n, sizeof(*start));
    res->vcpu_rates = calloc((size_t)n, sizeof(*res->vcpu_rates));
    if (!start || !res->vcpu_rates) {
        fy_error_setg_errno(errp, ENOMEM, "dirty-ring: %d vCPUs", n);
        goto out;
    }
    if (source_begin(&src, errp) < 0)
        goto out;
    t0 = now_ms();
    res->start_time = t0 / 1000;
    for (int i = 0; i < n; i++)
        start[i] = job->vcpu_fn(job->vcpu_opaque, i);
    window_wait(dr, t0 + job->calc_ms, true, job->gen);
    res->msec = elapsed_since(t0);
    /* harvest, so a VM that counts at sync time is up to date */
    if (source_count(&src, &ignored, errp) < 0)
        goto out;
    for (int i = 0; i < n; i++) {
        uint64_t end = job->vcpu_fn(job->vcpu_opaque, i);
        res->vcpu_rates[i] = pages_to_mbps(end >= start[i] ? end - start[i]
                                                           : 0, res->msec);
        sum += res->vcpu_rates[i];
    }
    res->nvcpu = n;
    res->rate = sum;
    ret = 0;
out:
    source_end(&src);
    free(start);
    return ret;
}

/* ---- the thread ---- */

static void *dirtyrate_thread(void *arg)
{
    FyDirtyRate *dr = arg;
    Job job;
    Result res = {.rate = -1};
    FyError *err = NULL;
    int ret;

    pthread_mutex_lock(&dr->mu);
    job = (Job){
        .cfg = dr->cfg, .calc_ms = dr->calc_ms,
        .borrow_fn = dr->borrow_fn, .borrow_opaque = dr->borrow_opaque,
        .gen = dr->borrow_gen,
        .vcpu_fn = dr->vcpu_fn, .vcpu_opaque = dr->vcpu_opaque,
    };
    dr->source_busy = job.cfg.mode != FY_DIRTYRATE_PAGE_SAMPLING;
    dr->source_gen = job.gen;
    res.start_time = dr->start_time;
    pthread_mutex_unlock(&dr->mu);
    res.msec = job.calc_ms;

    switch (job.cfg.mode) {
    case FY_DIRTYRATE_DIRTY_BITMAP:
        ret = measure_bitmap(dr, &job, &res, &err);
        break;
    case FY_DIRTYRATE_DIRTY_RING:
        ret = measure_ring(dr, &job, &res, &err);
        break;
    default:
        ret = measure_sampling(dr, &job, &res, &err);
        break;
    }
    if (ret < 0 && !err)
        fy_error_setg(&err, "dirty rate measurement failed");
    if (ret == 0 && cancelled(dr))
        fy_error_setg(&err, "measurement cancelled");

    pthread_mutex_lock(&dr->mu);
    dr->dirty_rate = err ? -1 : res.rate;
    dr->calc_ms = res.msec;
    dr->start_time = res.start_time;
    free(dr->vcpu_rates);
    dr->vcpu_rates = err ? NULL : res.vcpu_rates;
    dr->nvcpu = err ? 0 : res.nvcpu;
    free(dr->error);
    dr->error = err ? strdup(fy_error_msg(err)) : NULL;
    dr->status = FY_DIRTYRATE_MEASURED;
    dr->source_busy = false;
    pthread_cond_broadcast(&dr->changed);
    pthread_mutex_unlock(&dr->mu);
    if (err)
        free(res.vcpu_rates);
    fy_error_free(err);
    return NULL;
}

/* ---- object ---- */

FyDirtyRate *fy_dirtyrate_new(FyRamList *ram, const FyVMOps *vm,
                              void *vm_opaque)
{
    FyDirtyRate *dr = calloc(1, sizeof(*dr));
    pthread_condattr_t ca;

    if (!dr)
        return NULL;
    dr->ram = ram;
    dr->vm = vm;
    dr->vm_opaque = vm_opaque;
    dr->dirty_rate = -1;
    dr->cfg.mode = FY_DIRTYRATE_PAGE_SAMPLING;
    pthread_mutex_init(&dr->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dr->wake, &ca);
    pthread_cond_init(&dr->changed, &ca);
    pthread_condattr_destroy(&ca);
    return dr;
}

void fy_dirtyrate_free(FyDirtyRate *dr)
{
    if (!dr)
        return;
    pthread_mutex_lock(&dr->mu);
    dr->cancel = true;
    pthread_cond_broadcast(&dr->wake);
    pthread_mutex_unlock(&dr->mu);
    if (dr->thread_joinable)
        pthread_join(dr->thread, NULL);
    pthread_cond_destroy(&dr->wake);
    pthread_cond_destroy(&dr->changed);
    pthread_mutex_destroy(&dr->mu);
    free(dr->vcpu_rates);
    free(dr->error);
    free(dr);
}

void fy_dirtyrate_set_vcpu_counter(FyDirtyRate *dr, FyVcpuDirtyPagesFn fn,
                                   void *opaque)
{
    pthread_mutex_lock(&dr->mu);
    dr->vcpu_fn = fn;
    dr->vcpu_opaque = opaque;
    pthread_mutex_unlock(&dr->mu);
}

bool fy_dirtyrate_vcpu_pages(FyDirtyRate *dr, int vcpu, uint64_t *pages)
{
    pthread_mutex_lock(&dr->mu);
    FyVcpuDirtyPagesFn fn = dr->vcpu_fn;
    void *opaque = dr->vcpu_opaque;
    pthread_mutex_unlock(&dr->mu);
    if (!fn)
        return false;
    *pages = fn(opaque, vcpu);
    return true;
}

void fy_dirtyrate_set_borrow(FyDirtyRate *dr, FyDirtyRateBorrowFn fn,
                             void *opaque)
{
    uint64_t gen;

    pthread_mutex_lock(&dr->mu);
    dr->borrow_fn = fn;
    dr->borrow_opaque = opaque;
    gen = ++dr->borrow_gen;
    pthread_cond_broadcast(&dr->wake);
    while (dr->source_busy && dr->source_gen != gen)
        pthread_cond_wait(&dr->changed, &dr->mu);
    pthread_mutex_unlock(&dr->mu);
}

/* ---- calc-dirty-rate ---- */

static int check_config(FyDirtyRate *dr, const FyDirtyRateConfig *cfg,
                        int64_t *calc_ms, FyError **errp)
{
    int64_t unit = cfg->calc_time_ms ? 1 : 1000;

    if (dr->status == FY_DIRTYRATE_MEASURING) {
        fy_error_setg(errp, "the dirty rate is already being measured.");
        return -1;
    }
    if (cfg->calc_time < 0 || cfg->calc_time > INT64_MAX / unit ||
        cfg->calc_time * unit < FY_DIRTYRATE_MIN_CALC_TIME_MS ||
        cfg->calc_time * unit > FY_DIRTYRATE_MAX_CALC_TIME_MS) {
        fy_error_setg(errp, "Calculation time is out of range [%dms, %dms].",
                      FY_DIRTYRATE_MIN_CALC_TIME_MS,
                      FY_DIRTYRATE_MAX_CALC_TIME_MS);
        return -1;
    }
    *calc_ms = cfg->calc_time * unit;
    if ((unsigned)cfg->mode > FY_DIRTYRATE_DIRTY_BITMAP) {
        fy_error_setg(errp, "unknown dirty rate mode %d", (int)cfg->mode);
        return -1;
    }
    if (cfg->has_sample_pages && cfg->mode != FY_DIRTYRATE_PAGE_SAMPLING) {
        fy_error_setg(errp, "sample-pages is used only in page-sampling mode");
        return -1;
    }
    if (cfg->has_sample_pages &&
        (cfg->sample_pages < FY_DIRTYRATE_MIN_SAMPLE_PAGES ||
         cfg->sample_pages > FY_DIRTYRATE_MAX_SAMPLE_PAGES)) {
        fy_error_setg(errp, "sample-pages is out of range[%d, %d].",
                      FY_DIRTYRATE_MIN_SAMPLE_PAGES,
                      FY_DIRTYRATE_MAX_SAMPLE_PAGES);
        return -1;
    }
    if ((cfg->mode == FY_DIRTYRATE_DIRTY_RING &&
         (!dr->vcpu_fn || !dr->vm || !dr->vm->vcpu_count)) ||
        (cfg->mode == FY_DIRTYRATE_DIRTY_BITMAP && !dr->borrow_fn &&
         (!dr->vm || !dr->vm->dirty_log_sync))) {
        fy_error_setg(errp, "mode %s is not enabled, use other method "
                      "instead.", fy_dirtyrate_mode_name(cfg->mode));
        return -1;
    }
    return 0;
}

int fy_dirtyrate_calc(FyDirtyRate *dr, const FyDirtyRateConfig *cfg,
                      FyError **errp)
{
    int64_t calc_ms;
    int rc;

    pthread_mutex_lock(&dr->mu);
    if (check_config(dr, cfg, &calc_ms, errp) < 0) {
        pthread_mutex_unlock(&dr->mu);
        return -1;
    }
    if (dr->thread_joinable) {          /* finished: status is measured */
        pthread_join(dr->thread, NULL);
        dr->thread_joinable = false;
    }
    dr->cfg = *cfg;
    if (!cfg->has_sample_pages)
        dr->cfg.sample_pages = FY_DIRTYRATE_DEFAULT_SAMPLE_PAGES;
    dr->calc_ms = calc_ms;
    dr->start_time = now_ms() / 1000;
    dr->dirty_rate = -1;
    free(dr->vcpu_rates);
    dr->vcpu_rates = NULL;
    dr->nvcpu = 0;
    free(dr->error);
    dr->error = NULL;
    dr->status = FY_DIRTYRATE_MEASURING;
    rc = pthread_create(&dr->thread, NULL, dirtyrate_thread, dr);
    if (rc != 0) {
        dr->status = FY_DIRTYRATE_UNSTARTED;
        pthread_mutex_unlock(&dr->mu);
        fy_error_setg_errno(errp, rc, "cannot start the dirty rate thread");
        return -1;
    }
    dr->thread_joinable = true;
    pthread_mutex_unlock(&dr->mu);
    return 0;
}

static int json_int_arg(json_t *v, const char *name, int64_t *out,
                        FyError **errp)
{
    if (!json_is_integer(v)) {
        fy_error_setg(errp, "Invalid parameter type for '%s', expected: "
                      "integer", name);
        return -1;
    }
    *out = (int64_t)json_integer_value(v);
    return 0;
}

static int json_enum_arg(json_t *v, const char *name,
                         const char *const *names, int n, int *out,
                         FyError **errp)
{
    if (!json_is_string(v)) {
        fy_error_setg(errp, "Invalid parameter type for '%s', expected: "
                      "string", name);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(json_string_value(v), names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    fy_error_setg(errp, "Parameter '%s' does not accept value '%s'", name,
                  json_string_value(v));
    return -1;
}

int fy_dirtyrate_calc_json(FyDirtyRate *dr, json_t *args, FyError **errp)
{
    static const char *const units[] = {"second", "millisecond"};
    FyDirtyRateConfig cfg = {.mode = FY_DIRTYRATE_PAGE_SAMPLING};
    bool has_time = false;
    const char *key;
    json_t *v;
    int e;

    if (args && !json_is_object(args)) {
        fy_error_setg(errp, "calc-dirty-rate: arguments must be an object");
        return -1;
    }
    json_object_foreach(args, key, v) {
        if (strcmp(key, "calc-time") == 0) {
            if (json_int_arg(v, key, &cfg.calc_time, errp) < 0)
                return -1;
            has_time = true;
        } else if (strcmp(key, "calc-time-unit") == 0) {
            if (json_enum_arg(v, key, units, 2, &e, errp) < 0)
                return -1;
            cfg.calc_time_ms = e == 1;
        } else if (strcmp(key, "sample-pages") == 0) {
            if (json_int_arg(v, key, &cfg.sample_pages, errp) < 0)
                return -1;
            cfg.has_sample_pages = true;
        } else if (strcmp(key, "mode") == 0) {
            if (json_enum_arg(v, key, mode_names, 3, &e, errp) < 0)
                return -1;
            cfg.mode = (FyDirtyRateMode)e;
        } else {
            fy_error_setg(errp, "Parameter '%s' is unexpected", key);
            return -1;
        }
    }
    if (!has_time) {
        fy_error_setg(errp, "Parameter 'calc-time' is missing");
        return -1;
    }
    return fy_dirtyrate_calc(dr, &cfg, errp);
}

/* ---- query-dirty-rate ---- */

json_t *fy_dirtyrate_query(FyDirtyRate *dr)
{
    json_t *o = json_object();
    bool measured;

    pthread_mutex_lock(&dr->mu);
    measured = dr->status == FY_DIRTYRATE_MEASURED;
    if (measured)
        json_object_set_new(o, "dirty-rate", json_integer(dr->dirty_rate));
    json_object_set_new(o, "status",
                        json_string(fy_dirtyrate_status_name(dr->status)));
    json_object_set_new(o, "start-time", json_integer(dr->start_time));
    json_object_set_new(o, "calc-time",
                        json_integer(dr->cfg.calc_time_ms ? dr->calc_ms
                                                          : dr->calc_ms / 1000));
    json_object_set_new(o, "calc-time-unit",
                        json_string(dr->cfg.calc_time_ms ? "millisecond"
                                                         : "second"));
    json_object_set_new(o, "sample-pages",
                        json_integer(measured && dr->cfg.mode !=
                                     FY_DIRTYRATE_PAGE_SAMPLING
                                     ? 0 : dr->cfg.sample_pages));
    json_object_set_new(o, "mode",
                        json_string(fy_dirtyrate_mode_name(dr->cfg.mode)));
    if (measured && dr->cfg.mode == FY_DIRTYRATE_DIRTY_RING) {
        json_t *a = json_array();
        for (int i = 0; i < dr->nvcpu; i++)
            json_array_append_new(a, json_pack("{s:i, s:I}", "id", i,
                                               "dirty-rate",
                                               (json_int_t)dr->vcpu_rates[i]));
        json_object_set_new(o, "vcpu-dirty-rate", a);
    }
    pthread_mutex_unlock(&dr->mu);
    return o;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static long long jint(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

char *fy_dirtyrate_format_hmp(json_t *info)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    json_t *rates = json_object_get(info, "vcpu-dirty-rate");
    size_t i;
    json_t *r;

    if (!f)
        return NULL;
    fprintf(f, "Status: %s\n", jstr(info, "status"));
    fprintf(f, "Start Time: %lld (ms)\n", jint(info, "start-time"));
    if (strcmp(jstr(info, "mode"), "page-sampling") == 0)
        fprintf(f, "Sample Pages: %lld (per GB)\n", jint(info, "sample-pages"));
    fprintf(f, "Period: %lld (%s)\n", jint(info, "calc-time"),
            strcmp(jstr(info, "calc-time-unit"), "millisecond") == 0 ? "ms"
                                                                     : "sec");
    fprintf(f, "Mode: %s\n", jstr(info, "mode"));
    fprintf(f, "Dirty rate: ");
    if (json_object_get(info, "dirty-rate")) {
        fprintf(f, "%lld (MB/s)\n", jint(info, "dirty-rate"));
        json_array_foreach(rates, i, r)
            fprintf(f, "vcpu[%lld], Dirty rate: %lld (MB/s)\n", jint(r, "id"),
                    jint(r, "dirty-rate"));
    } else {
        fprintf(f, "(not ready)\n");
    }
    fclose(f);
    return buf;
}

FyDirtyRateStatus fy_dirtyrate_status(FyDirtyRate *dr)
{
    pthread_mutex_lock(&dr->mu);
    FyDirtyRateStatus s = dr->status;
    pthread_mutex_unlock(&dr->mu);
    return s;
}

char *fy_dirtyrate_last_error(FyDirtyRate *dr)
{
    pthread_mutex_lock(&dr->mu);
    char *e = dr->error ? strdup(dr->error) : NULL;
    pthread_mutex_unlock(&dr->mu);
    return e;
}

bool fy_dirtyrate_wait(FyDirtyRate *dr, int64_t timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    struct timespec ts = {.tv_sec = deadline / 1000,
                          .tv_nsec = (deadline % 1000) * 1000000};
    bool done;

    pthread_mutex_lock(&dr->mu);
    while (!(done = dr->status != FY_DIRTYRATE_MEASURING)) {
        if (timeout_ms < 0)
            pthread_cond_wait(&dr->changed, &dr->mu);
        else if (pthread_cond_timedwait(&dr->changed, &dr->mu, &ts) ==
                 ETIMEDOUT)
            break;
    }
    done = dr->status != FY_DIRTYRATE_MEASURING;
    pthread_mutex_unlock(&dr->mu);
    return done;
}
