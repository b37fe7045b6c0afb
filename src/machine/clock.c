/*
 * clock.c: the guest clock ("clock" device). See clock.h for the model.
 */
#include <time.h>

#include "machine/clock.h"

uint64_t fy_host_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void fy_clock_init(FyClock *c)
{
    c->ns = 0;
    c->offset = 0;
    c->running = false;
    pthread_mutex_init(&c->lock, NULL);
}

void fy_clock_destroy(FyClock *c)
{
    pthread_mutex_destroy(&c->lock);
}

static uint64_t clock_now_locked(const FyClock *c)
{
    if (!c->running)
        return c->ns;
    return (uint64_t)((int64_t)fy_host_ns() + c->offset);
}

uint64_t fy_clock_get_ns(FyClock *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t ns = clock_now_locked(c);
    pthread_mutex_unlock(&c->lock);
    return ns;
}

void fy_clock_start(FyClock *c)
{
    pthread_mutex_lock(&c->lock);
    if (!c->running) {
        c->offset = (int64_t)(c->ns - fy_host_ns());
        c->running = true;
    }
    pthread_mutex_unlock(&c->lock);
}

void fy_clock_stop(FyClock *c)
{
    pthread_mutex_lock(&c->lock);
    if (c->running) {
        c->ns = clock_now_locked(c);
        c->running = false;
    }
    pthread_mutex_unlock(&c->lock);
}

/* A save normally happens stopped, when ns is already the guest time; if the
 * VM still runs, send the time of the save. */
static int clock_pre_save(void *opaque, FyError **errp)
{
    FyClock *c = opaque;
    pthread_mutex_lock(&c->lock);
    if (c->running)
        c->ns = clock_now_locked(c);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* Resume from the loaded guest time: rebase on this host's clock. If the
 * destination is already running (not the normal flow), the clock jumps to
 * the loaded value and goes on from there. */
static int clock_post_load(void *opaque, int version_id, FyError **errp)
{
    FyClock *c = opaque;
    pthread_mutex_lock(&c->lock);
    c->offset = (int64_t)(c->ns - fy_host_ns());
    pthread_mutex_unlock(&c->lock);
    return 0;
}

const VMStateDescription vmstate_clock = {
    .name = "clock",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = clock_pre_save,
    .post_load = clock_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT64(ns, FyClock),
        VMSTATE_END_OF_LIST()
    },
};
