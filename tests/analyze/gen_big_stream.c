/*
 * gen_big_stream: write a valid migration stream of any size to stdout, as
 * it is made (constant memory), to measure `ferry analyze` on multi-GiB
 * input and to feed the streaming test (test_analyze_stream).
 *
 *   gen-big-stream MIB > big.mig       a RAM block of MIB MiB (see
 *                                      big_stream_write in analyze-test.h)
 *   gen-big-stream MIB 1 > big.mig     pass 1 only: every page once
 *
 * The stream is MIB MiB of pages, then 1/16 of them again as XBZRLE deltas
 * and 1/7 as ZERO pages, a device, EOF and a description: about
 * MIB * 1.004 MiB in all.
 */
#include "analyze/analyze-test.h"

int main(int argc, char **argv)
{
    char *end = NULL;
    unsigned long long mib = argc >= 2 ? strtoull(argv[1], &end, 10) : 0;
    bool one_pass = argc == 3 && !strcmp(argv[2], "1");
    if (argc < 2 || argc > 3 || (argc == 3 && !one_pass) || !end || *end ||
        mib == 0 || mib > (1ull << 20)) {
        fprintf(stderr, "usage: gen-big-stream MIB [1]  (MIB: 1 .. 1048576)\n");
        return 2;
    }
    static char buf[1 << 20];
    setvbuf(stdout, buf, _IOFBF, sizeof(buf));
    uint64_t n = big_stream_write(stdout, mib, one_pass);
    if (n == 0) {
        fprintf(stderr, "gen-big-stream: write error: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
