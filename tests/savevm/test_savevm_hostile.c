/*
 * test_savevm_hostile.c: the loader against broken streams. A valid stream
 * with every kind of record (configuration with all subsections, commands,
 * START/PART/END, FULL vmsd and legacy sections, the VM description) is cut
 * at every offset and corrupted many times with a fixed seed: every load
 * either succeeds or fails with an error that carries a stream offset, and
 * load_setup/load_cleanup stay paired. Run under ASan/UBSan this also proves
 * no out-of-bounds access and no leak.
 */
#include <inttypes.h>

#include "savevm-test.h"

static void config_all(FySaveVMConfig *c)
{
    c->target_page_bits = 16;
    c->cap_x_ignore_shared = true;
    c->validate_uuid = true;
    memset(c->uuid, 0x5a, 16);
}

/* A stream with every record kind. */
static Buf rich_stream(void)
{
    Vm src;
    FyError *err = NULL;
    MemOut m = mem_out();
    Buf b;

    vm_init(&src, "pc-q35-7.2", 13);
    config_all(fy_savevm_config(src.s));
    src.iter.per_round = 9;
    fy_savevm_state_header(src.s, m.f, &err);
    fy_savevm_command_send(m.f, MIG_CMD_OPEN_RETURN_PATH, 0, NULL);
    fy_savevm_state_setup(src.s, m.f, &err);
    fy_savevm_state_iterate(src.s, m.f, &err);
    fy_savevm_send_ping(m.f, 7);
    fy_savevm_state_iterate(src.s, m.f, &err);
    fy_savevm_command_send(m.f, MIG_CMD_SWITCHOVER_START, 0, NULL);
    fy_savevm_state_complete_precopy(src.s, m.f, &err);
    if (err)
        T_FAIL("save: %s", fy_error_msg(err));
    fy_error_free(err);
    fy_savevm_state_cleanup(src.s);
    mem_out_finish(&m, &b);
    vm_free(&src);
    return b;
}

static bool has_offset_prefix(const char *m)
{
    return m && strncmp(m, "stream offset ", 14) == 0;
}

static void test_truncation_everywhere(void)
{
    Buf b = rich_stream();
    Vm dst;
    FyLoadResult res;
    char *m = NULL;

    vm_init(&dst, "pc-q35-7.2", 0);
    config_all(fy_savevm_config(dst.s));
    T_EQ_INT(load_buf(dst.s, b.d, b.len, NULL, &res, &m), 0);
    if (m)
        T_FAIL("full stream: %s", m);
    free(m);
    json_decref(res.vmdesc);
    size_t eof = (size_t)res.eof_offset;
    T_ASSERT(eof > 1000 && eof + 6 < b.len);

    int bad = 0;
    for (size_t cut = 0; cut < b.len; cut++) {
        res.vmdesc = NULL;
        int ret = load_buf(dst.s, b.d, cut, NULL, &res, &m);
        /* Cut right after EOF: no description, which is allowed. */
        int want = cut == eof + 1 ? 0 : -1;
        if (ret != want || (ret < 0 && !has_offset_prefix(m)) ||
            (ret == 0 && (m || res.vmdesc))) {
            if (bad++ < 5)
                T_FAIL("cut at %zu: ret %d, %s", cut, ret, m ? m : "(no error)");
        }
        /* The offset named is inside what was there. */
        if (m) {
            uint64_t off = strtoull(m + 14, NULL, 10);
            if (off > cut && bad++ < 5)
                T_FAIL("cut at %zu: offset %" PRIu64 " beyond the data: %s", cut,
                       off, m);
        }
        free(m);
        json_decref(res.vmdesc);
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(dst.iter.load_setups, dst.iter.load_cleanups);
    printf("# %zu truncations of a %zu byte stream (EOF at %zu)\n", b.len, b.len,
           eof);
    buf_free(&b);
    vm_free(&dst);
}

static uint32_t rnd(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*x >> 33);
}

/* One to four mutations: flip a bit, set a byte, put an extreme be32,
 * delete a range, duplicate a range. */
static void mutate(Buf *c, uint64_t *x)
{
    int n = 1 + (int)(rnd(x) % 4);
    for (int k = 0; k < n && c->len > 8; k++) {
        size_t at = rnd(x) % c->len;
        switch (rnd(x) % 6) {
        case 0:
            c->d[at] ^= (uint8_t)(1u << (rnd(x) % 8));
            break;
        case 1:
            c->d[at] = (uint8_t)rnd(x);
            break;
        case 2: {
            static const uint32_t extremes[] = { 0, 1, 0x7f, 0xff, 0x7fffffff,
                                                 0x80000000, 0xffffffff, 0x10000 };
            uint32_t v = extremes[rnd(x) % 8];
            for (int i = 0; i < 4 && at + (size_t)i < c->len; i++)
                c->d[at + (size_t)i] = (uint8_t)(v >> (24 - 8 * i));
            break;
        }
        case 3: {
            size_t len = 1 + rnd(x) % 32;
            if (at + len > c->len)
                len = c->len - at;
            memmove(c->d + at, c->d + at + len, c->len - at - len);
            c->len -= len;
            break;
        }
        case 4: {
            size_t len = 1 + rnd(x) % 64;
            if (at + len > c->len)
                len = c->len - at;
            Buf t = { 0 };
            buf_raw(&t, c->d, at + len);
            buf_raw(&t, c->d + at, c->len - at);
            buf_free(c);
            *c = t;
            break;
        }
        default:
            /* aim at record boundaries: a section type byte */
            c->d[at] = (uint8_t)(rnd(x) % 10);
            break;
        }
    }
}

static void test_corruption_fixed_seed(void)
{
    Buf b = rich_stream();
    Vm dst;
    uint64_t x = 0x5eedf00dull;
    int ok = 0, failed = 0, bad = 0;
    const int rounds = 10000;

    vm_init(&dst, "pc-q35-7.2", 0);
    config_all(fy_savevm_config(dst.s));
    for (int r = 0; r < rounds; r++) {
        Buf c = { 0 };
        FyLoadResult res;
        char *m = NULL;
        buf_raw(&c, b.d, b.len);
        mutate(&c, &x);
        int ret = load_buf(dst.s, c.d, c.len, NULL, &res, &m);
        if (ret == 0) {
            ok++;
            json_decref(res.vmdesc);
        } else {
            failed++;
            if (!has_offset_prefix(m) && bad++ < 5)
                T_FAIL("round %d: error without an offset: %s", r, m ? m : "(none)");
        }
        free(m);
        buf_free(&c);
        /* AllKinds owns two loader-allocated buffers; free and re-init so a
         * later failure cannot leave them half set up for the next round. */
        for (int i = 0; i < 2; i++) {
            allkinds_free(&dst.ak[i]);
            allkinds_init(&dst.ak[i]);
        }
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(ok + failed, rounds);
    T_ASSERT(failed > rounds / 2);
    /* Streams refused in the header never get to setup; the rest pair. */
    T_ASSERT(dst.iter.load_setups > rounds / 2);
    T_EQ_INT(dst.iter.load_cleanups, dst.iter.load_setups);
    printf("# %d corrupted streams: %d loaded, %d refused\n", rounds, ok, failed);
    buf_free(&b);
    vm_free(&dst);
}

/* Streams made only of many tiny records: each consumes bytes, nothing
 * piles up. */
static void test_many_records(void)
{
    Vm dst;
    Buf b = { 0 };
    vm_init(&dst, "pc", 0);

    buf_header(&b, "pc");
    for (int i = 0; i < 20000; i++) {
        buf_u8(&b, QEMU_VM_COMMAND);
        buf_be16(&b, MIG_CMD_PING);
        buf_be16(&b, 4);
        buf_be32(&b, (uint32_t)i);
    }
    buf_u8(&b, QEMU_VM_EOF);
    char *m = NULL;
    T_EQ_INT(load_buf(dst.s, b.d, b.len, NULL, NULL, &m), 0);
    free(m);

    /* Thousands of START sections re-announcing ids. */
    buf_free(&b);
    buf_header(&b, "pc");
    for (uint32_t i = 0; i < 5000; i++) {
        buf_u8(&b, QEMU_VM_SECTION_START);
        buf_be32(&b, i);
        buf_str(&b, "iter");
        buf_be32(&b, 0);
        buf_be32(&b, 1);
        if (i == 0)
            buf_be32(&b, 2);
        buf_be32(&b, ITER_EOS);
        buf_footer(&b, i);
    }
    buf_u8(&b, QEMU_VM_SECTION_PART);
    buf_be32(&b, 4999);
    buf_be32(&b, 1);
    buf_be64(&b, 77);
    buf_be32(&b, ITER_EOS);
    buf_footer(&b, 4999);
    buf_u8(&b, QEMU_VM_SECTION_PART); /* an id that was re-announced away */
    buf_be32(&b, 4998);
    buf_u8(&b, QEMU_VM_EOF);
    T_EQ_INT(load_buf(dst.s, b.d, b.len, NULL, NULL, &m), -1);
    T_CONTAINS(m, "Unknown section id 4998");
    T_EQ_INT(dst.iter.vals[1], 77);
    free(m);
    buf_free(&b);
    vm_free(&dst);
}

int main(void)
{
    T_RUN(test_truncation_everywhere);
    T_RUN(test_corruption_fixed_seed);
    T_RUN(test_many_records);
    return t_done();
}
