/*
 * vcpu.c: the vCPU thread: run batches of steps, park on stop, pace, throttle,
 * and (vCPU 0) play the guest kernel's device work.
 *
 * Thread states (under m->lock):
 *
 *   PARKED --(running && steps < target)--> RUNNING
 *   RUNNING --(go cleared, or target reached)--> PARKED
 *   any --(quit)--> exit
 *
 * While RUNNING the thread holds no lock; it checks `go` every batch of at
 * most FY_VCPU_BATCH steps and sleeps (pacing, throttling, idle) only on
 * m->cond with a deadline, which stop() broadcasts, so a stop never waits
 * for a sleep to end.
 *
 * Batches and dirty logging: batch_seq is odd while a batch runs. The batch
 * publishes the odd value (seq_cst) before it reads soft_log (seq_cst), and
 * dirty_log_start sets soft_log (seq_cst) before it reads batch_seq: so
 * either the batch sees logging on, or dirty_log_start sees the batch in
 * flight and waits for it to end (fy_machine_quiesce_batches).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "machine/machine-int.h"

#define IDLE_STEPS_PER_SEC 256000ull
#define THROTTLE_SLICE_NS 10000000ull   /* run this long between throttle sleeps */
#define PACE_MAX_LAG_NS 100000000ull    /* further behind than this: rebase, no burst */

struct timespec fy_ns_to_timespec(uint64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
                           .tv_nsec = (long)(ns % 1000000000ull) };
    return ts;
}

bool fy_vcpu_sleep_until(FyVCpu *v, uint64_t deadline_ns)
{
    FyMachine *m = v->m;
    struct timespec ts = fy_ns_to_timespec(deadline_ns);
    pthread_mutex_lock(&m->lock);
    while (atomic_load(&m->go) && fy_host_ns() < deadline_ns)
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    bool go = atomic_load(&m->go);
    pthread_mutex_unlock(&m->lock);
    return go;
}

/* Steps per second this vCPU may run at; 0 = unlimited. */
static uint64_t vcpu_rate(const FyVCpu *v)
{
    const FyMachine *m = v->m;
    uint64_t rate = 0;
    if (m->cfg.dirty_rate) {
        rate = m->cfg.dirty_rate / (uint64_t)m->nvcpus;
        if (rate == 0)
            rate = 1;
    } else if (v->workload == FY_WORKLOAD_IDLE) {
        rate = IDLE_STEPS_PER_SEC;
    }
    uint64_t limit = atomic_load_explicit(&((FyVCpu *)v)->limit_pps, memory_order_relaxed);
    if (limit && v->workload != FY_WORKLOAD_IDLE && (!rate || limit < rate))
        rate = limit;
    return rate;
}

/* ---- vCPU 0: the guest kernel's device work ---- */

static void guest_boot(FyVCpu *v)
{
    FyMachine *m = v->m;
    uint64_t host = fy_host_ns();
    pthread_mutex_lock(&m->dev_lock);
    /* 115200 8N1, FIFO on and cleared, DTR|RTS|OUT2 */
    fy_serial_write(&m->serial, UART_LCR, 0x83, host);
    fy_serial_write(&m->serial, UART_RBR_THR, 1, host);
    fy_serial_write(&m->serial, UART_IER, 0, host);
    fy_serial_write(&m->serial, UART_LCR, 0x03, host);
    fy_serial_write(&m->serial, UART_IIR_FCR, 0xc7, host);
    fy_serial_write(&m->serial, UART_MCR, 0x0b, host);
    if (m->cfg.timer_period_ns)
        fy_timer_program(&m->timer, fy_clock_get_ns(&m->clock), m->cfg.timer_period_ns,
                         true);
    pthread_cond_signal(&m->dev_cond); /* the I/O thread has a new deadline */
    pthread_mutex_unlock(&m->dev_lock);
}

/* Feed the UART while it has room (THRE: FIFO empty, then up to 16 bytes),
 * and start a new progress line when one is due and the last is out. */
static void guest_console(FyVCpu *v)
{
    FyMachine *m = v->m;
    if (v->con_pos == v->con_len) {
        if (!m->cfg.serial_every || v->steps < v->con_next)
            return;
        uint64_t ns = fy_clock_get_ns(&m->clock);
        int n = snprintf((char *)v->con_buf, sizeof(v->con_buf),
                         "ferry guest: step %" PRIu64 " time %" PRIu64 ".%03" PRIu64 "s\n",
                         v->steps, (uint64_t)(ns / 1000000000u),
                         (uint64_t)(ns / 1000000u % 1000u));
        v->con_len = (uint8_t)(n < (int)sizeof(v->con_buf) ? n : (int)sizeof(v->con_buf) - 1);
        v->con_pos = 0;
        v->con_next = (v->steps / m->cfg.serial_every + 1) * m->cfg.serial_every;
    }
    pthread_mutex_lock(&m->dev_lock);
    if (fy_serial_read(&m->serial, UART_LSR) & UART_LSR_THRE) {
        uint64_t host = fy_host_ns();
        for (int i = 0; i < FY_UART_FIFO && v->con_pos < v->con_len; i++)
            fy_serial_write(&m->serial, UART_RBR_THR, v->con_buf[v->con_pos++], host);
        pthread_cond_signal(&m->dev_cond);
    }
    pthread_mutex_unlock(&m->dev_lock);
}

/* The guest looks at its timer now and then: busier workloads less often,
 * so expiries are left pending (and migrate in a subsection) some of the
 * time. */
static void guest_timer(FyVCpu *v)
{
    static const uint64_t ack_every[] = {
        [FY_WORKLOAD_IDLE] = 1, [FY_WORKLOAD_SWEEP] = 8,
        [FY_WORKLOAD_RANDOM] = 32, [FY_WORKLOAD_HOTSPOT] = 128,
    };
    uint64_t every = v->workload < 4 ? ack_every[v->workload] : 1;
    if (++v->acks < every)
        return;
    v->acks = 0;
    pthread_mutex_lock(&v->m->dev_lock);
    v->ticks += fy_timer_ack(&v->m->timer);
    pthread_mutex_unlock(&v->m->dev_lock);
}

/* ---- the run loop ---- */

typedef struct Pace {
    uint64_t rate, base_ns, steps;
} Pace;

static void vcpu_pace(FyVCpu *v, Pace *p, uint64_t n)
{
    p->steps += n;
    uint64_t due = p->base_ns + (uint64_t)((double)p->steps * 1e9 / (double)p->rate);
    uint64_t now = fy_host_ns();
    if (due > now) {
        fy_vcpu_sleep_until(v, due);
        atomic_fetch_add_explicit(&v->stat_pace_ns, fy_host_ns() - now,
                                  memory_order_relaxed);
    } else if (now - due > PACE_MAX_LAG_NS) {
        p->base_ns = now;
        p->steps = 0;
    }
}

static void vcpu_throttle(FyVCpu *v, uint64_t *slice_start)
{
    int pct = atomic_load_explicit(&v->m->throttle_pct, memory_order_relaxed);
    uint64_t now = fy_host_ns();
    if (pct <= 0) {
        *slice_start = now;
        return;
    }
    uint64_t ran = now - *slice_start;
    if (ran < THROTTLE_SLICE_NS)
        return;
    uint64_t sleep = ran * (uint64_t)pct / (uint64_t)(100 - pct);
    fy_vcpu_sleep_until(v, now + sleep);
    uint64_t after = fy_host_ns();
    atomic_fetch_add_explicit(&v->stat_throttle_ns, after - now, memory_order_relaxed);
    *slice_start = after;
}

static void vcpu_run(FyVCpu *v, uint64_t target)
{
    FyMachine *m = v->m;
    uint64_t t0 = fy_host_ns(), slice_start = t0;
    Pace pace = { 0 };
    uint64_t seq = atomic_load_explicit(&v->batch_seq, memory_order_relaxed);

    while (atomic_load_explicit(&m->go, memory_order_relaxed) && v->steps < target) {
        uint64_t rate = vcpu_rate(v);
        if (rate != pace.rate) {
            pace = (Pace){ .rate = rate, .base_ns = fy_host_ns() };
        }
        uint64_t n = FY_VCPU_BATCH;
        if (rate && rate / 1000 < n)
            n = rate / 1000 ? rate / 1000 : 1;   /* about a millisecond per batch */
        if (target - v->steps < n)
            n = target - v->steps;
        if (v->index == 0 && v->steps == 0)
            guest_boot(v);

        atomic_store(&v->batch_seq, ++seq);     /* odd: in a batch */
        bool mark = atomic_load(&m->soft_log);
        uint64_t stores = fy_workload_run(v, &m->gmap, n, mark);
        v->steps += n;
        atomic_store_explicit(&v->batch_seq, ++seq, memory_order_release);

        atomic_store_explicit(&v->steps_pub, v->steps, memory_order_relaxed);
        atomic_fetch_add_explicit(&v->stat_stores, stores, memory_order_relaxed);
        if (v->index == 0) {
            guest_console(v);
            guest_timer(v);
        }
        if (rate)
            vcpu_pace(v, &pace, n);
        vcpu_throttle(v, &slice_start);
    }
    atomic_fetch_add_explicit(&v->stat_run_ns, fy_host_ns() - t0, memory_order_relaxed);
}

void *fy_vcpu_thread(void *arg)
{
    FyVCpu *v = arg;
    FyMachine *m = v->m;
    pthread_mutex_lock(&m->lock);
    for (;;) {
        while (!m->quit && !(m->running && v->steps < v->target)) {
            if (!v->parked) {
                v->parked = true;
                pthread_cond_broadcast(&m->parked_cond);
            }
            pthread_cond_wait(&m->cond, &m->lock);
        }
        if (m->quit)
            break;
        v->parked = false;
        uint64_t target = v->target;
        pthread_mutex_unlock(&m->lock);
        vcpu_run(v, target);
        pthread_mutex_lock(&m->lock);
    }
    v->parked = true;
    pthread_cond_broadcast(&m->parked_cond);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}
