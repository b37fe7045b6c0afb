/*
 * fuzz_analyze: libFuzzer target for `ferry analyze` (built with
 * -Dfuzz=true: ninja -C build-fuzz tests/analyze/fuzz-analyze).
 *
 * The first byte picks how the input is read (file or pipe) and what is
 * asked (plain, --check, -m); the rest is the stream. Seeds: the streams in
 * tests/fixtures/ and the kitchen sink of analyze-test.h.
 */
#include "analyze/analyze-test.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    AnOpts o = { .dump = AN_DUMP_STATE, .quiet = true, .check = (mode & 2) != 0,
                 .dump_memory = (mode & 4) != 0 };
    An *a = analyze_mem(data + 1, size - 1, mode & 1, &o);
    an_print_state(a, devnull);
    an_print_summary(a, devnull);
    an_free(a);
    return 0;
}
