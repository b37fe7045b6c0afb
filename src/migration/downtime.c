/*
 * downtime.c: the switchover decision that keeps downtime-limit, and the
 * measured downtime split into its parts.
 *
 * QEMU switches over when the RAM left fits in bandwidth x downtime-limit.
 * That leaves out everything else the pause costs, which is why its
 * measured downtime often exceeds the limit. Here the estimate is
 *
 *   expected = fixed + (pending + extra) / bandwidth
 *   fixed    = stop + final sync + destination tail + destination start
 *   extra    = device state + what the guest dirties during sync and stop
 *
 * and the switchover waits until expected <= downtime-limit, i.e. until
 * pending <= threshold = bandwidth x (limit - fixed) - extra. When the fixed
 * costs alone exceed the limit, the threshold is 0: the migration switches
 * only once nothing is left to send (it cannot do better), and says so
 * ("within-limit": false).
 *
 * bandwidth: the median of the last 8 busy windows of 100 ms (busy: the
 * sender had more RAM to send than it sent; a window in which it ran out
 * measures the guest, not the link); before the first busy window, the
 * highest of the last 8; never less than the median of the last 8 windows
 * busy or not (they too carried what they sent). avail-switchover-bandwidth
 * replaces it. The final
 * pass runs without max-bandwidth and with the vCPUs stopped (more CPU for
 * the sender), so this is usually conservative.
 * Costs are learnt from each switchover of this FyMigration: the new value
 * counts at least half (max(new, (old + new) / 2)): a slower run is believed
 * at once, a faster one only gradually. Before the first: stop 1 ms, start
 * 1 ms, destination tail 1 ms, 64 KiB of device state (the reference VM
 * measures about 0.3 ms, 0.5 ms, 0.4 ms and 1 KiB).
 *
 * Measured parts (microseconds, reported in ms):
 *   stop              vm stop requested -> vCPUs stopped
 *   paused            pause-before-switchover (waiting for migrate-continue)
 *   final-ram         the final dirty sync and the last RAM pages
 *   device-state      the non-iterative devices' sections
 *   destination-load  devices written -> the destination answered the PING
 *                     sent after them (it has loaded everything); without a
 *                     return path "transfer": the stream's last bytes out
 *   start             that PONG -> its SHUT(0), sent after it started the
 *                     vCPUs
 */
#include <string.h>

#include "migration/converge.h"

#define DEFAULT_FIXED_MS 1.0
#define DEFAULT_DEVICE_BYTES (64.0 * 1024)

void fy_downtime_model_init(FyDowntimeModel *d)
{
    memset(d, 0, sizeof(*d));
    d->stop_ms = d->start_ms = d->dest_ms = DEFAULT_FIXED_MS;
    d->device_bytes = DEFAULT_DEVICE_BYTES;
    d->sync_ms = 1.0;
}

void fy_downtime_model_new_run(FyDowntimeModel *d)
{
    d->busy_next = d->busy_count = d->any_next = d->any_count = 0;
    d->dirty_bpms = 0;
    d->sync_ms = 1.0;
    d->bw_used = 0;
    d->expected_ms = 0;
    d->unreachable = false;
}

static void push(double *ring, int *next, int *count, double v)
{
    ring[*next] = v;
    *next = (*next + 1) % 8;
    if (*count < 8)
        (*count)++;
}

static double median(const double *ring, int n)
{
    double s[8];
    memcpy(s, ring, (size_t)n * sizeof(double));
    for (int i = 1; i < n; i++) {          /* insertion sort of <= 8 */
        double v = s[i];
        int j = i;
        for (; j > 0 && s[j - 1] > v; j--)
            s[j] = s[j - 1];
        s[j] = v;
    }
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double bandwidth(FyDowntimeModel *d, double bw, bool busy,
                        double sw_bw)
{
    push(d->any_bw, &d->any_next, &d->any_count, bw);
    if (busy)
        push(d->busy_bw, &d->busy_next, &d->busy_count, bw);
    if (sw_bw > 0)
        return sw_bw;
    if (d->busy_count) {
        /* A window in which the sender ran out still proves the link carried
         * that much, so the recent windows' median is a floor: without it a
         * lifted max-bandwidth would be remembered until the next busy
         * window, which a sender that keeps up never has. */
        double b = median(d->busy_bw, d->busy_count);
        double a = median(d->any_bw, d->any_count);
        return a > b ? a : b;
    }
    double est = 0;
    for (int i = 0; i < d->any_count; i++) {
        if (d->any_bw[i] > est)
            est = d->any_bw[i];
    }
    return est;
}

static double fixed_ms(const FyDowntimeModel *d)
{
    return d->stop_ms + d->sync_ms + d->dest_ms + d->start_ms;
}

static double extra_bytes(const FyDowntimeModel *d)
{
    return d->device_bytes + d->dirty_bpms * (d->sync_ms + d->stop_ms);
}

uint64_t fy_downtime_estimate(const FyDowntimeModel *d, double bw,
                              uint64_t pending)
{
    if (bw <= 0)
        return 0;
    return (uint64_t)(fixed_ms(d) + ((double)pending + extra_bytes(d)) / bw +
                      0.5);
}

uint64_t fy_downtime_window(FyDowntimeModel *d, double bw, bool busy,
                            double sw_bw, uint64_t pending, uint64_t limit_ms)
{
    double est = bandwidth(d, bw, busy, sw_bw);
    double fixed = fixed_ms(d), extra = extra_bytes(d);

    d->bw_used = est;
    d->expected_ms = fy_downtime_estimate(d, est, pending);
    if (est <= 0)
        return 0;
    double room = est * ((double)limit_ms - fixed) - extra;
    d->unreachable = room <= 0;
    return room > 0 ? (uint64_t)room : 0;
}

static double blend(double old, double now)
{
    double mid = (old + now) / 2;
    return now > mid ? now : mid;
}

static double span_ms(uint64_t a_us, uint64_t b_us)
{
    return b_us > a_us ? (double)(b_us - a_us) / 1000.0 : 0.0;
}

void fy_downtime_learn(FyDowntimeModel *d, const FyDowntimeParts *p)
{
    if (!p->valid)
        return;
    d->stop_ms = blend(d->stop_ms, span_ms(p->t_stop, p->t_stopped));
    d->device_bytes = blend(d->device_bytes, (double)p->device_bytes);
    if (p->rp && p->t_pong) {
        d->dest_ms = blend(d->dest_ms, span_ms(p->t_sent, p->t_pong));
        d->start_ms = blend(d->start_ms, span_ms(p->t_pong, p->t_end));
    }
}

json_t *fy_downtime_parts_json(const FyDowntimeParts *p)
{
    json_t *o = json_object();
    if (!o || !p->valid)
        return o;
    json_object_set_new(o, "stop", json_real(span_ms(p->t_stop, p->t_stopped)));
    /* A gap under 1 ms between stopped and begin is the switchover's own
     * bookkeeping, not a pause: it goes to final-ram so the parts add up
     * to the total. */
    bool paused = p->t_begin > p->t_stopped + 1000;
    if (paused)
        json_object_set_new(o, "paused",
                            json_real(span_ms(p->t_stopped, p->t_begin)));
    json_object_set_new(o, "final-ram",
                        json_real(span_ms(paused ? p->t_begin : p->t_stopped,
                                          p->t_ram)));
    json_object_set_new(o, "device-state", json_real(span_ms(p->t_ram, p->t_dev)));
    if (p->rp && p->t_pong) {
        json_object_set_new(o, "destination-load",
                            json_real(span_ms(p->t_dev, p->t_pong)));
        json_object_set_new(o, "start", json_real(span_ms(p->t_pong, p->t_end)));
    } else {
        json_object_set_new(o, "transfer", json_real(span_ms(p->t_dev, p->t_end)));
    }
    json_object_set_new(o, "total", json_real(span_ms(p->t_stop, p->t_end)));
    json_object_set_new(o, "final-ram-bytes", json_integer((json_int_t)p->ram_bytes));
    json_object_set_new(o, "device-bytes", json_integer((json_int_t)p->device_bytes));
    json_object_set_new(o, "expected", json_integer((json_int_t)p->expected));
    json_object_set_new(o, "limit", json_integer((json_int_t)p->limit));
    return o;
}
