/*
 * test_ram_prefault.c: the destination populates fresh RAM ahead of the
 * precopy loader (src/ram/ram-prefault.c). The prefault must never change
 * what lands in RAM, must not allocate memory for zero pages or sparse
 * data, and must stop at most a window past the end of a run of data.
 */
#include <sys/stat.h>

#include "t.h"
#include "testvm.h"

#define MiB (1ull << 20)
#define BLOCK (32 * MiB)

static const TvmBlockSpec blocks[] = {
    { "pc.ram", BLOCK, true },      /* memfd, MAP_SHARED */
    { "anon.ram", 8 * MiB, false }, /* private anonymous */
    { NULL, 0, false },
};

static FyChannel *save_to_mem(TestVM *src)
{
    FyChannel *c = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c, false);
    FyError *err = NULL;
    FyRamOptions o = { .detect_zero = true };
    fy_ram_set_options(fy_migration_ram_state(src->mig), &o);
    if (fy_savevm_save_all(src->ss, f, &err) < 0)
        T_FAIL("save: %s", fy_error_msg(err));
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return c;
}

/* Load len bytes of c into dst; returns 0 or -1 (error message in msg). */
static int load_len(TestVM *dst, FyChannel *c, size_t len, char *msg,
                    size_t msglen)
{
    size_t all;
    const uint8_t *data = fy_channel_mem_data(c, &all);
    FyChannel *in = fy_channel_mem_new(data, len < all ? len : all);
    FyStream *f = fy_stream_new_input(in, true);
    FyError *err = NULL;
    FyRamOptions o = { .detect_zero = true };
    fy_ram_set_options(fy_migration_ram_state(dst->mig), &o);
    int r = fy_loadvm_state(dst->ss, f, NULL, NULL, &err);
    snprintf(msg, msglen, "%s", err ? fy_error_msg(err) : "");
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return r;
}

static int load_all(TestVM *dst, FyChannel *c)
{
    char msg[1024];
    int r = load_len(dst, c, SIZE_MAX, msg, sizeof(msg));
    if (r < 0)
        T_FAIL("load: %s", msg);
    return r;
}

/* Bytes the memfd behind block i really holds. */
static uint64_t allocated(TestVM *vm, int i)
{
    struct stat st;
    if (fstat(vm->blocks[i].fd, &st) < 0)
        return UINT64_MAX;
    return (uint64_t)st.st_blocks * 512;
}

/* Pages of a private block that are resident. */
static uint64_t resident(TestVM *vm, int i)
{
    static unsigned char vec[8 * MiB / 4096];
    uint64_t pages = vm->blocks[i].used_length / FY_TARGET_PAGE_SIZE;
    if (pages > sizeof(vec) || mincore(vm->blocks[i].host,
                                       vm->blocks[i].used_length, vec) < 0)
        return UINT64_MAX;
    uint64_t n = 0;
    for (uint64_t p = 0; p < pages; p++)
        n += vec[p] & 1;
    return n * FY_TARGET_PAGE_SIZE;
}

/* Never-zero words from a xorshift, written into [from, to) of block i. */
static void fill_random(TestVM *vm, int i, uint64_t from, uint64_t to,
                        uint64_t seed)
{
    uint64_t x = seed | 1;
    for (uint64_t off = from; off < to; off += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(vm->blocks[i].host + off, &x, 8);
    }
}

/* A dense run of data, then zeros: equal RAM, and the memfd holds the data
 * plus at most the prefault's lead and window (6 MiB), not the zeros. */
static void test_dense_then_zero(void)
{
    TestVM *src = tvm_new("src", blocks), *dst = tvm_new("dst", blocks);
    fill_random(src, 0, 0, 12 * MiB, 1);
    fill_random(src, 1, 0, 8 * MiB, 2);
    FyChannel *c = save_to_mem(src);
    T_EQ_INT(load_all(dst, c), 0);
    /* Before comparing: a read of a memfd hole allocates a page. */
    uint64_t a = allocated(dst, 0);
    T_ASSERT(a >= 12 * MiB);
    T_ASSERT(a <= 18 * MiB + 64 * 1024);
    T_EQ_INT(resident(dst, 1), 8 * MiB);
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));

    /* Loading again over populated RAM: nothing fresh, still equal. */
    fill_random(src, 0, 0, 12 * MiB, 3);
    fy_channel_close(c, NULL);
    c = save_to_mem(src);
    T_EQ_INT(load_all(dst, c), 0);
    T_ASSERT(tvm_ram_equal(src, dst));
    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

/* A zero-only stream allocates nothing at all. */
static void test_zero_only_allocates_nothing(void)
{
    TestVM *src = tvm_new("src", blocks), *dst = tvm_new("dst", blocks);
    FyChannel *c = save_to_mem(src);
    T_EQ_INT(load_all(dst, c), 0);
    T_EQ_INT(allocated(dst, 0), 0);
    T_EQ_INT(resident(dst, 1), 0);
    T_ASSERT(tvm_ram_equal(src, dst));
    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

/* Short runs of data between zero pages (every 3rd page zero) never reach
 * the run length that starts a prefault: exactly the data is allocated. */
static void test_sparse_allocates_only_data(void)
{
    TestVM *src = tvm_new("src", blocks), *dst = tvm_new("dst", blocks);
    tvm_fill(src, 5);
    FyChannel *c = save_to_mem(src);
    T_EQ_INT(load_all(dst, c), 0);
    uint64_t pages = BLOCK / FY_TARGET_PAGE_SIZE;
    uint64_t data_pages = pages - (pages + 2) / 3;
    T_EQ_INT(allocated(dst, 0), data_pages * FY_TARGET_PAGE_SIZE);
    T_ASSERT(tvm_ram_equal(src, dst));
    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

/* A stream cut in the middle of a dense run fails cleanly, the worker is
 * stopped with windows still queued, and a full load afterwards works. */
static void test_truncated_stream(void)
{
    TestVM *src = tvm_new("src", blocks), *dst = tvm_new("dst", blocks);
    fill_random(src, 0, 0, BLOCK, 9);
    FyChannel *c = save_to_mem(src);
    size_t len;
    fy_channel_mem_data(c, &len);
    char msg[1024];
    for (int i = 1; i <= 3; i++) {
        T_ASSERT(load_len(dst, c, len * (size_t)i / 5, msg, sizeof(msg)) < 0);
        T_ASSERT(msg[0] != '\0');
    }
    T_EQ_INT(load_all(dst, c), 0);
    T_ASSERT(tvm_ram_equal(src, dst));
    T_EQ_INT(allocated(dst, 0), BLOCK);
    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

int main(void)
{
    T_RUN(test_dense_then_zero);
    T_RUN(test_zero_only_allocates_nothing);
    T_RUN(test_sparse_allocates_only_data);
    T_RUN(test_truncated_stream);
    return t_done();
}
