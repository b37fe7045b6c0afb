/*
 * machine-test.h: helpers shared by the machine tests: small configs,
 * creating machines that must work, digests, RAM snapshots and page diffs.
 */
#ifndef FERRY_TESTS_MACHINE_TEST_H
#define FERRY_TESTS_MACHINE_TEST_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/channel.h"
#include "ferry/machine.h"
#include "ferry/stream.h"
#include "ferry/vmstate.h"
#include "t.h"

static inline FyMachineConfig mt_config(FyWorkload w, int vcpus, uint64_t ram_mib,
                                        uint64_t seed)
{
    FyMachineConfig c;
    fy_machine_config_init(&c);
    c.ram[0].size = ram_mib << 20;
    c.vcpus = vcpus;
    c.workload = w;
    c.seed = seed;
    return c;
}

static inline FyMachine *mt_new(const FyMachineConfig *c)
{
    FyError *err = NULL;
    FyMachine *m = fy_machine_new(c, &err);
    if (!m) {
        printf("# fy_machine_new: %s\n", fy_error_msg(err));
        fy_error_free(err);
    }
    return m;
}

static inline int mt_run_until(FyMachine *m, uint64_t steps)
{
    FyError *err = NULL;
    int r = fy_machine_run_until(m, steps, &err);
    if (r < 0) {
        printf("# run_until: %s\n", fy_error_msg(err));
        fy_error_free(err);
    }
    return r;
}

/* Digest of every block, "id=hex;id=hex;" into out. */
static inline void mt_digests(FyMachine *m, char *out, size_t len)
{
    FyRamList *l = fy_machine_ram_list(m);
    out[0] = '\0';
    for (int i = 0; i < l->count; i++) {
        char hex[FY_MACHINE_DIGEST_LEN];
        FyError *err = NULL;
        if (fy_machine_ram_digest(m, l->blocks[i]->idstr, hex, &err) < 0) {
            printf("# digest: %s\n", fy_error_msg(err));
            fy_error_free(err);
            strcpy(hex, "error");
        }
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s=%s;", l->blocks[i]->idstr, hex);
    }
}

static inline void mt_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline uint64_t mt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sleep until vCPU `cpu` has gone past `steps` (all vCPUs: cpu < 0), at
 * most 20 s: a loaded host may keep a vCPU thread off the CPU for longer
 * than any fixed sleep. Returns whether it did. */
static inline bool mt_wait_steps(FyMachine *m, int cpu, uint64_t steps)
{
    for (int i = 0; i < 2000; i++) {
        bool all = true;
        for (int c = cpu < 0 ? 0 : cpu;
             c < (cpu < 0 ? fy_machine_vcpu_count(m) : cpu + 1); c++)
            all = all && fy_machine_vcpu_steps(m, c) > steps;
        if (all)
            return true;
        mt_sleep_ms(10);
    }
    return false;
}

/* Copy of a block's contents (reading holes faults them in; fine in tests). */
static inline uint8_t *mt_snapshot(const FyRamBlock *b)
{
    uint8_t *s = malloc(b->used_length);
    if (s)
        memcpy(s, b->host, b->used_length);
    return s;
}

static inline unsigned long *mt_bitmap_new(const FyRamBlock *b)
{
    return calloc(FY_BITMAP_LONGS(b->used_length / FY_TARGET_PAGE_SIZE),
                  sizeof(unsigned long));
}

static inline bool mt_test_bit(const unsigned long *bm, uint64_t i)
{
    return bm[i / FY_BITS_PER_LONG] & (1ul << (i % FY_BITS_PER_LONG));
}

static inline uint64_t mt_count_bits(const unsigned long *bm, uint64_t nbits)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < FY_BITMAP_LONGS(nbits); i++)
        n += (uint64_t)__builtin_popcountl(bm[i]);
    return n;
}

/* vmstate_save_state into memory; returns a malloc'ed copy (length in *len),
 * or NULL with the error printed. */
static inline uint8_t *mt_save_vmsd(const VMStateDescription *vmsd, void *opaque,
                                    size_t *len)
{
    FyChannel *c = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c, false);
    FyError *err = NULL;
    uint8_t *copy = NULL;
    if (vmstate_save_state(f, vmsd, opaque, NULL, &err) == 0 && fy_stream_flush(f) == 0) {
        const uint8_t *d = fy_channel_mem_data(c, len);
        copy = malloc(*len ? *len : 1);
        memcpy(copy, d, *len);
    } else {
        printf("# save %s: %s\n", vmsd->name, err ? fy_error_msg(err) : "stream error");
    }
    fy_error_free(err);
    fy_stream_close(f, NULL);
    fy_channel_close(c, NULL);
    return copy;
}

/* vmstate_load_state from bytes; returns 0, or -1 with the message copied
 * into msg. */
static inline int mt_load_vmsd(const VMStateDescription *vmsd, void *opaque, int version,
                               const uint8_t *data, size_t len, char *msg, size_t msglen)
{
    FyChannel *c = fy_channel_mem_new(data, len);
    FyStream *f = fy_stream_new_input(c, true);
    FyError *err = NULL;
    int r = vmstate_load_state(f, vmsd, opaque, version, &err);
    if (msg)
        snprintf(msg, msglen, "%s", err ? fy_error_msg(err) : "");
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return r;
}

/* Byte builder for hand-made streams. */
typedef struct MtBuf {
    uint8_t d[512];
    size_t len;
} MtBuf;

static inline void mt_u8(MtBuf *b, uint8_t v) { b->d[b->len++] = v; }
static inline void mt_be32(MtBuf *b, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        mt_u8(b, (uint8_t)(v >> (8 * i)));
}
static inline void mt_be64(MtBuf *b, uint64_t v)
{
    mt_be32(b, (uint32_t)(v >> 32));
    mt_be32(b, (uint32_t)v);
}
static inline void mt_str(MtBuf *b, const char *s)
{
    mt_u8(b, (uint8_t)strlen(s));
    memcpy(b->d + b->len, s, strlen(s));
    b->len += strlen(s);
}

#endif
