/*
 * test_vmstate_hostile.c: the loader against broken and malicious streams.
 *
 * A valid all-kinds stream is cut at every byte offset and corrupted at
 * random (fixed seed, so a failure reproduces); random garbage is fed in.
 * Under ASan/UBSan this shows the loader never reads or writes out of
 * bounds, never leaks, and always fails with an error that says where.
 */
#include <stdio.h>

#include "allkinds.h"
#include "vmstate-test.h"

/* A small deterministic PRNG (xorshift32): the same corruptions every run. */
static uint32_t rnd(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static int load_fresh(const uint8_t *data, size_t len, FyError **errp)
{
    AllKinds d;
    allkinds_init(&d);
    int ret = load_bytes(&vmstate_allkinds, &d, 2, data, len, NULL, errp);
    allkinds_free(&d);
    return ret;
}

static void test_truncated_everywhere(void)
{
    AllKinds s;
    FyError *err = NULL;
    Bytes b;
    int ok = 0, failed = 0;

    allkinds_init(&s);
    allkinds_fill(&s, 5);
    T_EQ_INT(save_bytes(&vmstate_allkinds, &s, NULL, &b, &err), 0);
    T_ASSERT(b.len > 200);

    for (size_t cut = 0; cut < b.len; cut++) {
        int ret = load_fresh(b.data, cut, &err);
        if (ret == 0) {
            /* Only a cut just before a subsection looks complete: nothing in
             * the format marks the end of a device (the section footer
             * does, one layer up). */
            ok++;
            if (b.data[cut] != 0x05)
                T_FAIL("truncation at %zu of %zu loaded successfully", cut, b.len);
            continue;
        }
        failed++;
        const char *m = fy_error_msg(err);
        if (!err || strncmp(m, "device 'allkinds'", 17) != 0 ||
            !strstr(m, "(stream offset ")) {
            T_FAIL("cut at %zu: bad error \"%s\"", cut, err ? m : "(none)");
        }
        fy_error_clear(&err);
    }
    /* allkinds/extra, allkinds/extra/deep, allkinds/always */
    T_EQ_INT(ok, 3);
    T_EQ_INT(failed, (int)b.len - 3);
    allkinds_free(&s);
    bytes_free(&b);
}

static void test_random_corruption(void)
{
    AllKinds s;
    FyError *err = NULL;
    Bytes b;
    uint32_t seed = 0x5eed1234;
    int failures = 0, successes = 0;

    allkinds_init(&s);
    allkinds_fill(&s, 6);
    T_EQ_INT(save_bytes(&vmstate_allkinds, &s, NULL, &b, &err), 0);
    uint8_t *buf = malloc(b.len + 64);

    for (int iter = 0; iter < 4000; iter++) {
        size_t len = b.len;
        memcpy(buf, b.data, b.len);
        int flips = 1 + (int)(rnd(&seed) % 4);
        for (int k = 0; k < flips; k++) {
            size_t pos = rnd(&seed) % len;
            switch (rnd(&seed) % 4) {
            case 0: buf[pos] ^= (uint8_t)(1u << (rnd(&seed) % 8)); break;
            case 1: buf[pos] = (uint8_t)rnd(&seed); break;
            case 2: buf[pos] = 0xff; break;
            default: buf[pos] = 0x05; break; /* fake subsection starts */
            }
        }
        if (rnd(&seed) % 8 == 0)
            len = rnd(&seed) % (b.len + 1);
        else if (rnd(&seed) % 8 == 0) {
            for (int k = 0; k < 32; k++)
                buf[len + k] = (uint8_t)rnd(&seed);
            len += 32;
        }
        if (load_fresh(buf, len, &err) == 0) {
            successes++;
            continue;
        }
        failures++;
        if (!err || !strstr(fy_error_msg(err), "(stream offset ")) {
            T_FAIL("iteration %d: error without an offset: \"%s\"", iter,
                   fy_error_msg(err));
            break;
        }
        fy_error_clear(&err);
    }
    /* Most corruptions are caught (a flipped value byte is not corruption
     * the format can see, so some loads succeed). */
    T_ASSERT(failures > 1000);
    T_ASSERT(successes > 0);
    printf("# %d corrupted streams refused, %d loaded\n", failures, successes);
    free(buf);
    allkinds_free(&s);
    bytes_free(&b);
}

static void test_random_garbage(void)
{
    uint32_t seed = 0xabcdef01;
    uint8_t buf[512];
    FyError *err = NULL;
    int failures = 0;

    for (int iter = 0; iter < 3000; iter++) {
        size_t len = rnd(&seed) % sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rnd(&seed);
        if (load_fresh(buf, len, &err) < 0) {
            failures++;
            T_ASSERT(err != NULL);
            fy_error_clear(&err);
        }
    }
    T_EQ_INT(failures, 3000);
}

int main(void)
{
    T_RUN(test_truncated_everywhere);
    T_RUN(test_random_corruption);
    T_RUN(test_random_garbage);
    return t_done();
}
