/*
 * config.c: the machine configuration, its defaults and the parsers the
 * command line uses (sizes, dirty rates, workload and tracker names).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/machine.h"

static const char *const workload_names[] = {
    [FY_WORKLOAD_IDLE] = "idle",
    [FY_WORKLOAD_SWEEP] = "sweep",
    [FY_WORKLOAD_RANDOM] = "random",
    [FY_WORKLOAD_HOTSPOT] = "hotspot",
};

static const char *const track_names[] = {
    [FY_DIRTY_BITMAP] = "bitmap",
    [FY_DIRTY_UFFD_WP] = "uffd-wp",
};

void fy_machine_config_init(FyMachineConfig *c)
{
    memset(c, 0, sizeof(*c));
    c->nr_ram = 1;
    strcpy(c->ram[0].idstr, "pc.ram");
    c->ram[0].size = 64ull << 20;
    c->ram[0].fd = -1;
    c->vcpus = 1;
    c->workload = FY_WORKLOAD_SWEEP;
    c->seed = 1;
    strcpy(c->serial, "none");
    c->serial_every = 1ull << 24;
    c->dirty_track = FY_DIRTY_BITMAP;
    c->timer_period_ns = 1000000;
}

int fy_machine_config_add_ram(FyMachineConfig *c, const char *idstr,
                              uint64_t size, FyError **errp)
{
    size_t len = strlen(idstr);
    if (len == 0 || len >= sizeof(c->ram[0].idstr)) {
        fy_error_setg(errp, "RAM block id '%s': must be 1..%zu characters", idstr,
                      sizeof(c->ram[0].idstr) - 1);
        return -1;
    }
    if (c->nr_ram >= FY_MACHINE_MAX_RAM) {
        fy_error_setg(errp, "RAM block '%s': at most %d blocks", idstr,
                      FY_MACHINE_MAX_RAM);
        return -1;
    }
    for (int i = 0; i < c->nr_ram; i++) {
        if (strcmp(c->ram[i].idstr, idstr) == 0) {
            fy_error_setg(errp, "RAM block '%s' is already configured", idstr);
            return -1;
        }
    }
    if (size == 0 || size % FY_TARGET_PAGE_SIZE) {
        fy_error_setg(errp, "RAM block '%s': size %" PRIu64
                      " is not a non-zero multiple of %u", idstr, size,
                      FY_TARGET_PAGE_SIZE);
        return -1;
    }
    FyMachineRamConfig *r = &c->ram[c->nr_ram++];
    memcpy(r->idstr, idstr, len + 1);
    r->size = size;
    r->fd = -1;
    return 0;
}

/* Number, optional binary suffix; *end is left after the suffix. */
static int parse_scaled(const char *s, uint64_t *out, const char **end)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno)
        return -1;
    int shift = 0;
    switch (toupper((unsigned char)*e)) {
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    case 'T': shift = 40; break;
    default: break;
    }
    if (shift) {
        e++;
        if (e[0] == 'i' && e[1] == 'B')
            e += 2;
        else if (e[0] == 'B')
            e++;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    *end = e;
    return 0;
}

int fy_parse_size(const char *s, uint64_t *out, FyError **errp)
{
    const char *e;
    uint64_t v;
    if (parse_scaled(s, &v, &e) < 0 || (*e == 'B' ? e[1] : *e) != '\0') {
        fy_error_setg(errp, "size '%s': expected a number with an optional "
                      "K, M, G or T suffix", s);
        return -1;
    }
    *out = v;
    return 0;
}

int fy_parse_dirty_rate(const char *s, uint64_t *pages_per_sec, FyError **errp)
{
    const char *e;
    uint64_t v;
    if (parse_scaled(s, &v, &e) == 0) {
        if (strcmp(e, "p") == 0 || strcmp(e, "pages") == 0) {
            *pages_per_sec = v;
            return 0;
        }
        if (strcmp(e, "") == 0 || strcmp(e, "B") == 0) {
            *pages_per_sec = (v + FY_TARGET_PAGE_SIZE - 1) / FY_TARGET_PAGE_SIZE;
            return 0;
        }
    }
    fy_error_setg(errp, "dirty rate '%s': expected bytes per second (e.g. 64M) "
                  "or pages per second (e.g. 5000p)", s);
    return -1;
}

int fy_workload_parse(const char *name, FyWorkload *out, FyError **errp)
{
    for (size_t i = 0; i < sizeof(workload_names) / sizeof(workload_names[0]); i++) {
        if (strcmp(name, workload_names[i]) == 0) {
            *out = (FyWorkload)i;
            return 0;
        }
    }
    fy_error_setg(errp, "unknown workload '%s' (idle, sweep, random, hotspot)", name);
    return -1;
}

const char *fy_workload_name(FyWorkload w)
{
    if ((unsigned)w < sizeof(workload_names) / sizeof(workload_names[0]))
        return workload_names[w];
    return "?";
}

int fy_dirty_track_parse(const char *name, FyDirtyTrack *out, FyError **errp)
{
    for (size_t i = 0; i < sizeof(track_names) / sizeof(track_names[0]); i++) {
        if (strcmp(name, track_names[i]) == 0) {
            *out = (FyDirtyTrack)i;
            return 0;
        }
    }
    fy_error_setg(errp, "unknown dirty tracking '%s' (bitmap, uffd-wp)", name);
    return -1;
}

const char *fy_dirty_track_name(FyDirtyTrack t)
{
    if ((unsigned)t < sizeof(track_names) / sizeof(track_names[0]))
        return track_names[t];
    return "?";
}
