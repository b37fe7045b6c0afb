/*
 * cpu.c: a vCPU's architectural state: reset and VMState "cpu". See cpu.h.
 */
#include <inttypes.h>
#include <string.h>

#include "machine/cpu.h"

uint64_t fy_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void fy_cpu_reset(FyVCpu *v, const FyMachineConfig *c, uint32_t index,
                  uint64_t slice_start, uint64_t slice_pages)
{
    v->index = index;
    v->workload = (uint32_t)c->workload;
    v->slice_start = slice_start;
    v->slice_pages = slice_pages;
    v->steps = 0;
    uint64_t sm = c->seed ^ (0xA0761D6478BD642Full * (index + 1));
    v->rng[0] = fy_splitmix64(&sm);
    v->rng[1] = fy_splitmix64(&sm);
    if ((v->rng[0] | v->rng[1]) == 0)
        v->rng[1] = 1;
    v->pos = 0;
    /* The hot set: 1/16 of the slice, placed by the seed. */
    v->hot_pages = slice_pages / 16 ? slice_pages / 16 : (slice_pages ? 1 : 0);
    v->hot_start = slice_start;
    if (slice_pages > v->hot_pages)
        v->hot_start += fy_splitmix64(&sm) % (slice_pages - v->hot_pages + 1);
    memset(v->regs, 0, sizeof(v->regs));
    v->ticks = 0;
    v->con_next = c->serial_every;
    v->con_len = v->con_pos = 0;
    memset(v->con_buf, 0, sizeof(v->con_buf));
    atomic_store(&v->steps_pub, 0);
}

/* Hostile stream: everything the vCPU will index with must be inside its
 * slice (the slice itself is checked equal to ours by the _EQUAL fields). */
static int cpu_post_load(void *opaque, int version_id, FyError **errp)
{
    FyVCpu *v = opaque;
    if (v->slice_pages && v->pos >= v->slice_pages) {
        fy_error_setg(errp, "cpu %u: position %" PRIu64 " outside its slice of %"
                      PRIu64 " pages", v->index, v->pos, v->slice_pages);
        return -1;
    }
    if (v->hot_start < v->slice_start || v->hot_pages > v->slice_pages ||
        v->hot_start - v->slice_start > v->slice_pages - v->hot_pages ||
        (v->slice_pages && v->hot_pages == 0)) {
        fy_error_setg(errp, "cpu %u: hot set [%" PRIu64 ", +%" PRIu64 ") outside "
                      "its slice [%" PRIu64 ", +%" PRIu64 ")", v->index, v->hot_start,
                      v->hot_pages, v->slice_start, v->slice_pages);
        return -1;
    }
    if ((v->rng[0] | v->rng[1]) == 0) {
        fy_error_setg(errp, "cpu %u: PRNG state is all zero", v->index);
        return -1;
    }
    if (v->con_pos > v->con_len) {
        fy_error_setg(errp, "cpu %u: console position %u past its line of %u bytes",
                      v->index, v->con_pos, v->con_len);
        return -1;
    }
    atomic_store(&v->steps_pub, v->steps);
    return 0;
}

const VMStateDescription vmstate_cpu = {
    .name = "cpu",
    .version_id = 1,
    .minimum_version_id = 1,
    .post_load = cpu_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32_EQUAL(index, FyVCpu, "vCPU instances are out of order"),
        VMSTATE_UINT32_EQUAL(workload, FyVCpu,
                             "source and destination run different workloads"),
        VMSTATE_UINT64_EQUAL(slice_start, FyVCpu,
                             "RAM, working set or vCPU count differ"),
        VMSTATE_UINT64_EQUAL(slice_pages, FyVCpu,
                             "RAM, working set or vCPU count differ"),
        VMSTATE_UINT64(steps, FyVCpu),
        VMSTATE_UINT64_ARRAY(rng, FyVCpu, 2),
        VMSTATE_UINT64(pos, FyVCpu),
        VMSTATE_UINT64(hot_start, FyVCpu),
        VMSTATE_UINT64(hot_pages, FyVCpu),
        VMSTATE_UINT64_ARRAY(regs, FyVCpu, FY_CPU_NREGS),
        VMSTATE_UINT64(ticks, FyVCpu),
        VMSTATE_UINT64(con_next, FyVCpu),
        VMSTATE_UINT8(con_pos, FyVCpu),
        VMSTATE_UINT8(con_len, FyVCpu),
        VMSTATE_VARRAY_UINT8(con_buf, FyVCpu, con_len, vmstate_info_uint8, uint8_t),
        VMSTATE_END_OF_LIST()
    },
};
