/*
 * iothread.c: the machine's I/O thread (QEMU's main loop, for our two
 * devices): it expires ferry-timer on the guest clock and moves the UART's
 * transmitted characters to the backend.
 *
 * It does device work only while dev_running, checked under dev_lock, so
 * once stop has cleared dev_running (under that lock) device state no
 * longer changes. Backend writes happen outside the lock: a slow reader
 * delays only the output, never the vCPUs or a stop.
 */
#include "machine/machine-int.h"

#define IO_MAX_SLEEP_NS 100000000ull  /* wake at least this often */
#define IO_MIN_SLEEP_NS 500000ull     /* batch characters: at most ~2000 wakes/s */

void *fy_iothread(void *arg)
{
    FyMachine *m = arg;
    uint8_t out[64];
    pthread_mutex_lock(&m->dev_lock);
    while (!m->io_quit) {
        if (!m->dev_running) {
            pthread_cond_wait(&m->dev_cond, &m->dev_lock);
            continue;
        }
        uint64_t host = fy_host_ns();
        uint64_t guest = fy_clock_get_ns(&m->clock);
        fy_timer_run(&m->timer, guest);
        size_t n = fy_serial_transmit(&m->serial, host, out, sizeof(out));
        if (n) {
            pthread_mutex_unlock(&m->dev_lock);
            fy_chardev_write(m->chr, out, n);
            pthread_mutex_lock(&m->dev_lock);
            continue;
        }
        uint64_t deadline = host + IO_MAX_SLEEP_NS;
        uint64_t sd = fy_serial_deadline(&m->serial);
        uint64_t td = fy_timer_deadline(&m->timer);
        if (sd < deadline)
            deadline = sd;
        if (td != UINT64_MAX && td > guest && host + (td - guest) < deadline)
            deadline = host + (td - guest);
        if (deadline < host + IO_MIN_SLEEP_NS)
            deadline = host + IO_MIN_SLEEP_NS;
        struct timespec ts = fy_ns_to_timespec(deadline);
        pthread_cond_timedwait(&m->dev_cond, &m->dev_lock, &ts);
    }
    pthread_mutex_unlock(&m->dev_lock);
    return NULL;
}
