/*
 * postcopy-blocktime.c: how long threads wait for pages (QEMU's
 * postcopy-blocktime and postcopy-latency family).
 *
 * A waiter is a thread blocked on one host page: it starts when the fault
 * thread reads the fault and ends when that page is placed. vCPUs have a
 * fixed slot (their index, from the tid registered by the VM); other
 * threads share a small table and, if it is full, go untracked (counted).
 * A thread can wait on one page at a time: a second fault from the same
 * thread on another page means the first wait ended unseen (the page came
 * in some other way), so it is closed then.
 *
 * postcopy-blocktime is the time during which every registered vCPU was
 * blocked at once (blocked_vcpus == registered), as in QEMU; per-vCPU
 * blocktime is the sum of that vCPU's waits.
 *
 * When the VM cannot name its vCPU threads, auto_vcpus = N makes the first
 * N distinct threads that fault take the vCPU slots (first-fault order),
 * and "all blocked" means all N blocked. On the destination only vCPUs
 * touch guest RAM (the loaders place pages with ioctls), so those threads
 * are the vCPUs; only their numbering is not the VM's.
 *
 * Latency samples go to a ring of the latest PC_LAT_SAMPLES values, so the
 * median and p99 describe recent behaviour with bounded memory.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ram/postcopy-int.h"

uint64_t fy_pc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void fy_pc_track_init(PcTrack *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
}

void fy_pc_track_destroy(PcTrack *t)
{
    pthread_mutex_destroy(&t->lock);
}

static int vcpu_of(const PcTrack *t, pid_t tid)
{
    for (int i = 0; i < t->vcpus; i++)
        if (t->vcpu_tid[i] == tid)
            return i;
    return -1;
}

int fy_pc_track_register_vcpu(PcTrack *t, int index, pid_t tid, FyError **errp)
{
    if (index < 0 || index >= FY_POSTCOPY_MAX_VCPUS) {
        fy_error_setg(errp, "postcopy blocktime: vCPU index %d out of range "
                      "(0..%d)", index, FY_POSTCOPY_MAX_VCPUS - 1);
        return -1;
    }
    pthread_mutex_lock(&t->lock);
    if (tid && !t->vcpu_tid[index])
        t->registered++;
    else if (!tid && t->vcpu_tid[index])
        t->registered--;
    t->vcpu_tid[index] = tid;
    if (index >= t->vcpus)
        t->vcpus = index + 1;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* How many vCPUs "all blocked at once" means: the registered ones, or the
 * count auto-registration expects (see fy_postcopy_dest_set_auto_vcpus). */
static int expected_vcpus(const PcTrack *t)
{
    return t->registered > t->auto_vcpus ? t->registered : t->auto_vcpus;
}

/* An unknown faulting thread takes the lowest free vCPU slot below
 * auto_vcpus (lock held). Returns the slot or -1. */
static int auto_register(PcTrack *t, pid_t tid)
{
    if (!tid || t->registered >= t->auto_vcpus)
        return -1;
    for (int i = 0; i < t->auto_vcpus; i++) {
        if (!t->vcpu_tid[i]) {
            t->vcpu_tid[i] = tid;
            t->registered++;
            if (i >= t->vcpus)
                t->vcpus = i + 1;
            return i;
        }
    }
    return -1;
}

void fy_pc_track_set_auto_vcpus(PcTrack *t, int n)
{
    pthread_mutex_lock(&t->lock);
    t->auto_vcpus = n < 0 ? 0 : n > FY_POSTCOPY_MAX_VCPUS ? FY_POSTCOPY_MAX_VCPUS : n;
    if (t->auto_vcpus > t->vcpus)
        t->vcpus = t->auto_vcpus;
    pthread_mutex_unlock(&t->lock);
}

static int dist_bucket(uint64_t ns)
{
    uint64_t us = ns / 1000;
    int b = 0;
    while (us > 1 && b < FY_POSTCOPY_LATENCY_BUCKETS - 1) {
        us >>= 1;
        b++;
    }
    return b;
}

/* End waiter slot i at now (lock held). */
static void resolve(PcTrack *t, int i, uint64_t now)
{
    PcWaiter *w = &t->w[i];
    uint64_t lat = now > w->start_ns ? now - w->start_ns : 0;

    if (i < FY_POSTCOPY_MAX_VCPUS) {
        if (t->blocked_vcpus == expected_vcpus(t) && t->blocked_vcpus > 0)
            t->total_ns += now - t->all_blocked_since;
        t->blocked_vcpus--;
        t->vcpu_ns[i] += lat;
        t->vcpu_faults[i]++;
    } else {
        t->non_vcpu_ns += lat;
        t->non_vcpu_faults++;
    }
    t->lat_sum_ns += lat;
    t->samples[t->resolved % PC_LAT_SAMPLES] = lat;
    t->resolved++;
    t->dist[dist_bucket(lat)]++;
    if (lat > t->max_ns)
        t->max_ns = lat;
    w->active = false;
    t->active--;
}

static int other_slot(PcTrack *t, pid_t tid)
{
    int free_slot = -1;
    for (int i = FY_POSTCOPY_MAX_VCPUS; i < FY_POSTCOPY_MAX_VCPUS + PC_MAX_OTHER_WAITERS; i++) {
        if (t->w[i].active && t->w[i].tid == tid)
            return i;
        if (!t->w[i].active && free_slot < 0)
            free_slot = i;
    }
    return free_slot;
}

void fy_pc_track_fault(PcTrack *t, pid_t tid, int block, uint64_t page,
                       uint64_t now)
{
    pthread_mutex_lock(&t->lock);
    int v = tid ? vcpu_of(t, tid) : -1;
    if (v < 0)
        v = auto_register(t, tid);
    int i = v >= 0 ? v : other_slot(t, tid);
    if (i < 0) {
        t->untracked++;
        pthread_mutex_unlock(&t->lock);
        return;
    }
    PcWaiter *w = &t->w[i];
    if (w->active) {
        if (w->block == block && w->page == page) {
            /* The same wait, reported again (e.g. after a signal). */
            pthread_mutex_unlock(&t->lock);
            return;
        }
        resolve(t, i, now);
    }
    *w = (PcWaiter){ .active = true, .tid = tid, .block = block,
                     .page = page, .start_ns = now };
    t->active++;
    if (v >= 0 && ++t->blocked_vcpus == expected_vcpus(t))
        t->all_blocked_since = now;
    pthread_mutex_unlock(&t->lock);
}

void fy_pc_track_placed(PcTrack *t, int block, uint64_t page, uint64_t now)
{
    pthread_mutex_lock(&t->lock);
    int n = FY_POSTCOPY_MAX_VCPUS + PC_MAX_OTHER_WAITERS;
    for (int i = 0; i < n && t->active; i++)
        if (t->w[i].active && t->w[i].block == block && t->w[i].page == page)
            resolve(t, i, now);
    pthread_mutex_unlock(&t->lock);
}

static uint32_t ns_to_ms32(uint64_t ns)
{
    uint64_t ms = ns / 1000000;
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

void fy_pc_track_blocktime(PcTrack *t, FyPostcopyBlocktime *out, uint64_t now)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&t->lock);
    out->vcpus = t->vcpus;
    out->total_ns = t->total_ns;
    if (t->blocked_vcpus > 0 && t->blocked_vcpus == expected_vcpus(t))
        out->total_ns += now - t->all_blocked_since;
    for (int i = 0; i < t->vcpus; i++) {
        uint64_t ns = t->vcpu_ns[i];
        if (t->w[i].active && now > t->w[i].start_ns)
            ns += now - t->w[i].start_ns;
        out->vcpu_ns[i] = ns;
        out->vcpu_ms[i] = ns_to_ms32(ns);
        out->vcpu_faults[i] = t->vcpu_faults[i];
        out->vcpu_latency_ns[i] = t->vcpu_faults[i] ? t->vcpu_ns[i] / t->vcpu_faults[i] : 0;
    }
    out->total_ms = ns_to_ms32(out->total_ns);
    out->latency_ns = t->resolved ? t->lat_sum_ns / t->resolved : 0;
    out->non_vcpu_faults = t->non_vcpu_faults;
    out->non_vcpu_latency_ns = t->non_vcpu_faults ? t->non_vcpu_ns / t->non_vcpu_faults : 0;
    memcpy(out->latency_dist, t->dist, sizeof(out->latency_dist));
    out->resolved = t->resolved;
    out->untracked = t->untracked;
    pthread_mutex_unlock(&t->lock);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void fy_pc_track_latency(PcTrack *t, FyPostcopyLatency *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t *copy = malloc(sizeof(t->samples));
    pthread_mutex_lock(&t->lock);
    out->count = t->resolved;
    out->max_ns = t->max_ns;
    out->mean_ns = t->resolved ? t->lat_sum_ns / t->resolved : 0;
    size_t n = t->resolved < PC_LAT_SAMPLES ? (size_t)t->resolved : PC_LAT_SAMPLES;
    if (copy)
        memcpy(copy, t->samples, n * sizeof(uint64_t));
    pthread_mutex_unlock(&t->lock);
    if (!copy || !n) {
        free(copy);
        return;
    }
    qsort(copy, n, sizeof(uint64_t), cmp_u64);
    out->window = n;
    out->median_ns = copy[(n - 1) / 2];
    out->p99_ns = copy[(n * 99 + 99) / 100 - 1];
    free(copy);
}

json_t *fy_postcopy_blocktime_json(const FyPostcopyBlocktime *bt)
{
    json_t *o = json_object();
    json_t *vb = json_array(), *vl = json_array(), *dist = json_array();
    if (!o || !vb || !vl || !dist) {
        json_decref(o);
        json_decref(vb);
        json_decref(vl);
        json_decref(dist);
        return NULL;
    }
    for (int i = 0; i < bt->vcpus; i++) {
        json_array_append_new(vb, json_integer(bt->vcpu_ms[i]));
        json_array_append_new(vl, json_integer((json_int_t)bt->vcpu_latency_ns[i]));
    }
    for (int i = 0; i < FY_POSTCOPY_LATENCY_BUCKETS; i++)
        json_array_append_new(dist, json_integer((json_int_t)bt->latency_dist[i]));
    json_object_set_new(o, "postcopy-blocktime", json_integer(bt->total_ms));
    json_object_set_new(o, "postcopy-vcpu-blocktime", vb);
    json_object_set_new(o, "postcopy-latency", json_integer((json_int_t)bt->latency_ns));
    json_object_set_new(o, "postcopy-latency-dist", dist);
    json_object_set_new(o, "postcopy-vcpu-latency", vl);
    json_object_set_new(o, "postcopy-non-vcpu-latency",
                        json_integer((json_int_t)bt->non_vcpu_latency_ns));
    return o;
}
