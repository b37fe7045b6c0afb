/*
 * test_analyze_hostile: hostile and broken input never crashes the analyzer.
 *
 * Thousands of mutations (fixed seed, so a failure reproduces) of a small
 * stream with nearly every record kind and of a real QEMU stream: flipped
 * bytes, "interesting" values at random places, big be32/be64 values, cut,
 * inserted, deleted and duplicated chunks. Each is read as a file and as a
 * pipe, plain, with --check, extracting and with -m, and the state, summary
 * and a diff against the original are printed. Under ASan/UBSan any bad
 * access fails the test; otherwise the checks are that a failure always
 * comes as "stream offset N: ..." and that nothing is left half done.
 * Then descriptions built to hurt (huge counts, deep nesting, absurd sizes)
 * and RAM block names built to escape the -x directory.
 */
#include "analyze/analyze-test.h"

static uint64_t seed = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return (uint32_t)(seed >> 11);
}

static uint8_t *mutate(const uint8_t *src, size_t len, size_t *out_len)
{
    size_t cap = len + 4096;
    uint8_t *d = malloc(cap);
    memcpy(d, src, len);
    size_t n = len;
    int ops = 1 + (int)(rnd() % 4);
    static const uint8_t interesting[] = { 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
                                           0x06, 0x07, 0x08, 0x7e, 0x80, 0xff,
                                           0x30, 0x10, 0x40, 0x20 };
    for (int k = 0; k < ops && n > 0; k++) {
        size_t at = rnd() % n;
        switch (rnd() % 8) {
        case 0:
            d[at] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1:
            d[at] = interesting[rnd() % sizeof(interesting)];
            break;
        case 2: { /* a big number */
            static const uint8_t big[][4] = { { 0xff, 0xff, 0xff, 0xff },
                                              { 0x7f, 0xff, 0xff, 0xff },
                                              { 0x80, 0x00, 0x00, 0x00 },
                                              { 0x00, 0x01, 0x00, 0x00 } };
            const uint8_t *b = big[rnd() % 4];
            for (int i = 0; i < 4 && at + (size_t)i < n; i++)
                d[at + (size_t)i] = b[i];
            break;
        }
        case 3:
            n = at;
            break;
        case 4: { /* insert random bytes */
            size_t m = 1 + rnd() % 64;
            if (n + m > cap)
                break;
            memmove(d + at + m, d + at, n - at);
            for (size_t i = 0; i < m; i++)
                d[at + i] = (uint8_t)rnd();
            n += m;
            break;
        }
        case 5: { /* delete */
            size_t m = 1 + rnd() % 64;
            if (at + m > n)
                m = n - at;
            memmove(d + at, d + at + m, n - at - m);
            n -= m;
            break;
        }
        case 6: { /* duplicate a chunk */
            size_t m = 1 + rnd() % 256;
            if (at + m > n || n + m > cap)
                break;
            memmove(d + at + m, d + at, n - at);
            n += m;
            break;
        }
        default: /* random byte */
            d[at] = (uint8_t)rnd();
            break;
        }
    }
    *out_len = n;
    return d;
}

static FILE *devnull;

static void exercise(const uint8_t *d, size_t n, int mode, json_t *orig_tree)
{
    AnOpts o = { .dump = AN_DUMP_STATE, .quiet = true };
    char *dir = NULL;
    switch (mode % 4) {
    case 1:
        o.check = true;
        break;
    case 2:
        dir = make_tmpdir();
        o.extract_dir = dir;
        break;
    case 3:
        o.dump_memory = true;
        break;
    }
    An *a = analyze_mem(d, n, (mode / 4) % 2, &o);
    if (a->failed) {
        if (strncmp(a->err, "stream offset ", 14) && strncmp(a->err, "memfd", 5)) {
            T_FAIL("error without an offset: %s", a->err);
        }
    }
    an_print_state(a, devnull);
    an_print_summary(a, devnull);
    if (orig_tree) {
        json_t *t = an_state_tree(a);
        json_decref(t);
    }
    an_free(a);
    if (dir) {
        rm_rf(dir);
        free(dir);
    }
}

static void fuzz_corpus(const uint8_t *src, size_t len, int rounds)
{
    An *base = analyze_mem(src, len, true, NULL);
    T_ASSERT(!base->failed);
    json_t *tree = an_state_tree(base);
    for (int r = 0; r < rounds; r++) {
        size_t n;
        uint8_t *d = mutate(src, len, &n);
        exercise(d, n, r, tree);
        free(d);
    }
    json_decref(tree);
    an_free(base);
}

static void test_mutated_kitchen_sink(void)
{
    static uint8_t exp_ram[65536], exp_vga[8192];
    Sb b = { 0 };
    ks_build(&b, exp_ram, exp_vga);
    fuzz_corpus(b.d, b.len, 3000);
    sb_free(&b);
}

static void test_mutated_qemu_stream(void)
{
    char path[4096];
    size_t len;
    uint8_t *d = read_file(fixture(path, sizeof(path), "qemu-xbzrle.mig"), &len);
    T_ASSERT(d != NULL);
    if (d)
        fuzz_corpus(d, len, 120);
    free(d);
}

/* Random bytes after a valid header. */
static void test_garbage(void)
{
    uint8_t buf[4096];
    for (int r = 0; r < 500; r++) {
        size_t n = 8 + rnd() % (sizeof(buf) - 8);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rnd();
        if (r % 2) {
            memcpy(buf, "QEVM\0\0\0\3", 8);
        }
        exercise(buf, n, r, NULL);
    }
}

/* A device section of 64 bytes, decoded with the description given. */
static void expect_desc_budget(const char *desc, bool should_fail, const char *msg,
                               uint64_t budget);
static void expect_desc(const char *desc, bool should_fail, const char *msg)
{
    expect_desc_budget(desc, should_fail, msg, 0);
}

static void expect_desc_budget(const char *desc, bool should_fail, const char *msg,
                               uint64_t budget)
{
    Sb b = { 0 };
    sb_header(&b, "m");
    sb_start(&b, 0x04, 3, "dev", 0, 1);
    for (int i = 0; i < 64; i++)
        sb_u8(&b, (uint8_t)i);
    sb_footer(&b, 3);
    sb_end(&b, desc);
    for (int s = 0; s < 2; s++) {
        AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true,
                     .value_budget = budget };
        An *a = analyze_mem(b.d, b.len, s, &o);
        T_EQ_INT(a->failed, should_fail);
        if (msg)
            T_CONTAINS(a->err, msg);
        if (a->failed && strncmp(a->err, "stream offset ", 14))
            T_FAIL("error without an offset: %s", a->err);
        an_print_state(a, devnull);
        an_free(a);
    }
    sb_free(&b);
}

static void test_hostile_descriptions(void)
{
#define DEV(fields) "{\"page_size\": 4096, \"devices\": [{\"name\": \"dev\", " \
                    "\"instance_id\": 0, \"version\": 1, \"fields\": " fields "}]}"
    expect_desc_budget(DEV("[{\"name\": \"a\", \"type\": \"uint8\", \"size\": 0, "
                           "\"array_len\": 100000}]"), true, "refusing it as hostile",
                       5000);
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"uint8\", \"size\": 0, "
                    "\"array_len\": 16777216}]"), true, "array_len is not a count");
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"buffer\", \"size\": 1099511627776}]"),
                true, "is not believable");
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"buffer\", \"size\": 1000}]"),
                true, "expected 1000 bytes");
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"uint8\", \"size\": -5}]"),
                true, "gives no size");
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"uint8\", \"size\": 1, "
                    "\"array_len\": -1}]"), true, "array_len is not a count");
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"struct\", \"size\": 1}]"),
                true, "has no fields for this struct");
    expect_desc(DEV("[7]"), true, "has no name or type");
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"int64\", \"size\": 64}]"),
                false, NULL);
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"int32\", \"size\": 60}, "
                    "{\"name\": \"b\", \"type\": \"bool\", \"size\": 4}]"), false, NULL);
    expect_desc(DEV("[{\"name\": \"a\", \"type\": \"uint8\", \"size\": 1}], "
                    "\"subsections\": [{\"vmsd_name\": \"dev/x\", \"fields\": []}]"),
                true, "expected subsection 'dev/x' (0x05), found 0x01");
    expect_desc("{\"page_size\": 3000, \"devices\": []}", true, "not a power of two");
    expect_desc("{\"page_size\": 4096, \"devices\": {}}", true, "no devices list");
    expect_desc("{\"page_size\": 4096, \"devices\": [{\"name\": \"dev\"}]}", true,
                "no name or instance_id");
    expect_desc("[1, 2]", true, "not a JSON object");
    expect_desc("{\"page_size\": 4096, \"devices\": [", true, "not valid JSON");
    /* nested structs, deeper than any device */
    char deep[8192];
    size_t o = (size_t)snprintf(deep, sizeof(deep), "{\"page_size\": 4096, \"devices\": "
                         "[{\"name\": \"dev\", \"instance_id\": 0, \"fields\": ");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(deep + o, sizeof(deep) - o, "[{\"name\": \"s\", "
                              "\"type\": \"struct\", \"struct\": {\"fields\": ");
    o += (size_t)snprintf(deep + o, sizeof(deep) - o, "[]");
    for (int i = 0; i < 100; i++)
        o += (size_t)snprintf(deep + o, sizeof(deep) - o, "}}]");
    snprintf(deep + o, sizeof(deep) - o, "}]}");
    expect_desc(deep, true, "nests more than 64 levels");
#undef DEV
}

/* Block names are paths only after checking: nothing lands outside DIR. */
static void test_extract_names_stay_inside(void)
{
    static const char *const names[] = { "../escape", "/abs/x", "a/./b", "a//c", ".." };
    Sb b = { 0 };
    sb_header(&b, "m");
    sb_start(&b, 0x01, 2, "ram", 0, 4);
    sb_be64(&b, 5 * 4096 | 0x04);
    for (int i = 0; i < 5; i++) {
        sb_str(&b, names[i]);
        sb_be64(&b, 4096);
    }
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_end(&b, "{\"page_size\": 4096, \"devices\": []}");
    char *top = make_tmpdir();
    char dir[4200], path[4300];
    snprintf(dir, sizeof(dir), "%s/x", top);
    mkdir(dir, 0755);
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .extract_dir = dir };
    An *a = analyze_mem(b.d, b.len, false, &o);
    /* ".." alone becomes "%2e%2e", already a directory: that one fails */
    T_ASSERT(a->failed);
    T_CONTAINS(a->err, "cannot create");
    an_free(a);
    snprintf(path, sizeof(path), "%s/escape", top);
    T_ASSERT(access(path, F_OK) != 0);
    snprintf(path, sizeof(path), "%s/%%2e%%2e/escape", dir);
    T_ASSERT(access(path, F_OK) == 0);
    snprintf(path, sizeof(path), "%s/abs/x", dir);
    T_ASSERT(access(path, F_OK) == 0);
    snprintf(path, sizeof(path), "%s/a/b", dir);
    T_ASSERT(access(path, F_OK) == 0);
    snprintf(path, sizeof(path), "%s/a/c", dir);
    T_ASSERT(access(path, F_OK) == 0);
    rm_rf(top);
    free(top);
    sb_free(&b);
}

int main(void)
{
    devnull = fopen("/dev/null", "w");
    T_RUN(test_mutated_kitchen_sink);
    T_RUN(test_mutated_qemu_stream);
    T_RUN(test_garbage);
    T_RUN(test_hostile_descriptions);
    T_RUN(test_extract_names_stay_inside);
    fclose(devnull);
    return t_done();
}
