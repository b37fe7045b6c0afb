/*
 * fuzz_analyze: libFuzzer target for `ferry analyze`.
 *
 * Build and run (clang):
 *   CC=clang meson setup build-fuzz -Dfuzz=true
 *   ninja -C build-fuzz tests/analyze/fuzz-analyze tests/analyze/gen-analyze-seeds
 *   build-fuzz/tests/analyze/gen-analyze-seeds SEEDS
 *   build-fuzz/tests/analyze/fuzz-analyze CORPUS SEEDS \
 *       -dict=tests/analyze/fuzz-analyze.dict -timeout=10 -rss_limit_mb=2048
 *
 * The first byte of an input says how the rest is read:
 *   bit 0  as a file (the description is looked for at the end first) or
 *          as a pipe
 *   bit 1  --check          bit 2  -m (page contents kept and printed)
 *   bit 3  --desc with the description of tests/fixtures/qemu-pc.mig
 *   bit 4  --desc with the description of tests/fixtures/qemu-q35.mig
 * Bits 3 and 4 let small inputs (device sections cut out of the real
 * streams, see gen_analyze_seeds.c) be decoded with real QEMU device
 * layouts, without carrying 300 KB of description each.
 */
#include "analyze/analyze-test.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *descs[2];
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const names[2] = { "qemu-pc.mig", "qemu-q35.mig" };
    const char *src = getenv("FERRY_SRC") ? getenv("FERRY_SRC") : FERRY_SRC_DIR;
    for (int i = 0; i < 2; i++) {
        char path[4096], err[512];
        snprintf(path, sizeof(path), "%s/tests/fixtures/%s", src, names[i]);
        descs[i] = an_desc_load_file(path, err, sizeof(err));
        if (!descs[i])
            fprintf(stderr, "fuzz-analyze: %s (bits 3/4 will run without it)\n", err);
    }
    devnull = fopen("/dev/null", "w");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    AnOpts o = { .dump = AN_DUMP_STATE, .quiet = true, .check = (mode & 2) != 0,
                 .dump_memory = (mode & 4) != 0 };
    if (mode & 8)
        o.desc_override = descs[0];
    else if (mode & 16)
        o.desc_override = descs[1];
    An *a = analyze_mem(data + 1, size - 1, mode & 1, &o);
    an_print_state(a, devnull);
    an_print_summary(a, devnull);
    json_t *t = an_state_tree(a);
    json_decref(t);
    an_free(a);
    return 0;
}
