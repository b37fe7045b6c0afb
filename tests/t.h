/*
 * t.h: the smallest TAP test harness that does the job.
 *
 * A test program is a list of `static void test_xxx(void)` functions run by
 * T_RUN(test_xxx) from main(), ending with `return t_done();`. Each function
 * prints one TAP line ("ok N name" or "not ok N name"); a failed check prints
 * where and why as a TAP comment and fails the current test but keeps going,
 * so one run shows every broken thing.
 */
#ifndef FERRY_TESTS_T_H
#define FERRY_TESTS_T_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_count, t_failed_total, t_cur_failed;

#define T_FAIL(...)                                                         \
    do {                                                                    \
        printf("# %s:%d: ", __FILE__, __LINE__);                            \
        printf(__VA_ARGS__);                                                \
        printf("\n");                                                       \
        t_cur_failed = 1;                                                   \
    } while (0)

#define T_ASSERT(c)                                                         \
    do { if (!(c)) T_FAIL("assertion failed: %s", #c); } while (0)

#define T_EQ_INT(a, b)                                                      \
    do {                                                                    \
        long long t_a_ = (long long)(a), t_b_ = (long long)(b);             \
        if (t_a_ != t_b_)                                                   \
            T_FAIL("%s == %lld, expected %s == %lld", #a, t_a_, #b, t_b_);  \
    } while (0)

#define T_EQ_STR(a, b)                                                      \
    do {                                                                    \
        const char *t_a_ = (a), *t_b_ = (b);                                \
        if (!t_a_ || !t_b_ || strcmp(t_a_, t_b_) != 0)                      \
            T_FAIL("%s == \"%s\", expected \"%s\"", #a,                     \
                   t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");         \
    } while (0)

/* Substring check, for error messages: they must say what and where. */
#define T_CONTAINS(hay, needle)                                             \
    do {                                                                    \
        const char *t_h_ = (hay), *t_n_ = (needle);                         \
        if (!t_h_ || !strstr(t_h_, t_n_))                                   \
            T_FAIL("%s = \"%s\" does not contain \"%s\"", #hay,             \
                   t_h_ ? t_h_ : "(null)", t_n_);                           \
    } while (0)

#define T_EQ_MEM(a, b, n)                                                   \
    do {                                                                    \
        const uint8_t *t_a_ = (const uint8_t *)(a);                         \
        const uint8_t *t_b_ = (const uint8_t *)(b);                         \
        size_t t_n_ = (n);                                                  \
        for (size_t t_i_ = 0; t_i_ < t_n_; t_i_++) {                        \
            if (t_a_[t_i_] != t_b_[t_i_]) {                                 \
                T_FAIL("%s and %s differ at byte %zu: 0x%02x vs 0x%02x",    \
                       #a, #b, t_i_, t_a_[t_i_], t_b_[t_i_]);               \
                break;                                                      \
            }                                                               \
        }                                                                   \
    } while (0)

#define T_RUN(fn)                                                           \
    do {                                                                    \
        t_cur_failed = 0;                                                   \
        fflush(stdout);                                                     \
        fn();                                                               \
        t_count++;                                                          \
        if (t_cur_failed)                                                   \
            t_failed_total++;                                               \
        printf("%s %d %s\n", t_cur_failed ? "not ok" : "ok", t_count, #fn); \
        fflush(stdout);                                                     \
    } while (0)

static inline int t_done(void)
{
    printf("1..%d\n", t_count);
    return t_failed_total ? 1 : 0;
}

#endif
