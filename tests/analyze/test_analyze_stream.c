/*
 * test_analyze_stream: `ferry analyze` streams its input.
 *
 * gen-big-stream writes a valid stream as it makes it (a 1 GiB RAM block
 * sent in full, then XBZRLE and ZERO pages for part of it, a multifd flush,
 * a device, EOF, the description at the end). Piped into `ferry analyze`,
 * the stream never exists as a whole anywhere: the analyzer must check it,
 * count it and extract it while holding only a small, fixed part. The
 * test measures that as the peak RSS of the pipeline (wait4), which must
 * stay far below the stream's size, and checks that what came out is
 * right: the page counts, the device value decoded with a description that
 * came last, and every extracted page equal to what the stream left there.
 * No timing is asserted (the speed is measured by hand: docs/analyze.md).
 */
#include <sys/resource.h>

#include "analyze/analyze-test.h"

static char bin[4096], gen[4096];

/* Peak RSS allowed for the pipeline: the analyzer reads in 4 MiB chunks and
 * keeps 8 bytes of index per 4 KiB page (2 MiB for 1 GiB of RAM). ASan's
 * shadow memory and quarantine add their own. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_LIMIT_KIB (128 * 1024)
#else
#define RSS_LIMIT_KIB (64 * 1024)
#endif

typedef struct Piped {
    Run r;
    long maxrss_kib;
} Piped;

/* run_sh, and the peak RSS of the shell and everything it ran. */
static Piped run_measured(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    Piped p = { 0 };
    FILE *o = tmpfile(), *e = tmpfile();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fileno(o), 1);
        dup2(fileno(e), 2);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    struct rusage ru = { 0 };
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR)
        ;
    p.maxrss_kib = ru.ru_maxrss;
    p.r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    rewind(o);
    rewind(e);
    p.r.out = slurp_fd(fileno(o), &p.r.out_len);
    p.r.err = slurp_fd(fileno(e), &p.r.err_len);
    fclose(o);
    fclose(e);
    return p;
}

/* The summary's page line, as the stream was made. */
static void expect_counts(const char *out, uint64_t mib)
{
    uint64_t normal, zero, xbzrle;
    big_counts(mib, &normal, &zero, &xbzrle);
    char want[200];
    snprintf(want, sizeof(want), "pages: %llu zero, %llu normal (",
             (unsigned long long)zero, (unsigned long long)normal);
    T_CONTAINS(out, want);
    snprintf(want, sizeof(want), "), %llu xbzrle (", (unsigned long long)xbzrle);
    T_CONTAINS(out, want);
    T_CONTAINS(out, "1 multifd flushes");
}

/* 1 GiB through a pipe, --check and --summary: valid, counted, small. */
static void test_pipe_check_and_summary(void)
{
    const uint64_t mib = 1024;
    Piped c = run_measured("'%s' %llu | '%s' analyze --check -", gen,
                           (unsigned long long)mib, bin);
    T_EQ_INT(c.r.status, 0);
    T_CONTAINS(c.r.out, "-: OK: QEMU migration stream v3, ");
    printf("# --check of a %llu MiB stream from a pipe: peak RSS %ld KiB\n",
           (unsigned long long)mib, c.maxrss_kib);
    T_ASSERT(c.maxrss_kib > 0 && c.maxrss_kib < RSS_LIMIT_KIB);
    if (c.r.status)
        printf("# %s%s\n", c.r.out, c.r.err);
    run_free(&c.r);

    Piped s = run_measured("'%s' %llu | '%s' analyze --summary -", gen,
                           (unsigned long long)mib, bin);
    T_EQ_INT(s.r.status, 0);
    expect_counts(s.r.out, mib);
    T_CONTAINS(s.r.out, "RAM: 1 blocks, 1073741824 bytes");
    printf("# --summary of a %llu MiB stream from a pipe: peak RSS %ld KiB\n",
           (unsigned long long)mib, s.maxrss_kib);
    T_ASSERT(s.maxrss_kib > 0 && s.maxrss_kib < RSS_LIMIT_KIB);
    run_free(&s.r);
}

/* -x from a pipe: every page of the extracted block is the page's final
 * contents (XBZRLE decoded against the pass-1 page, ZERO over data), and
 * the device, decoded once the description came last, is in state.json. */
static void test_pipe_extract(void)
{
    const uint64_t mib = 128;
    char *dir = make_tmpdir();
    Piped x = run_measured("'%s' %llu | '%s' analyze -q -x '%s' -", gen,
                           (unsigned long long)mib, bin, dir);
    T_EQ_INT(x.r.status, 0);
    printf("# -x of a %llu MiB stream from a pipe: peak RSS %ld KiB\n",
           (unsigned long long)mib, x.maxrss_kib);
    T_ASSERT(x.maxrss_kib > 0 && x.maxrss_kib < RSS_LIMIT_KIB);
    run_free(&x.r);

    char path[4200];
    snprintf(path, sizeof(path), "%s/pc.ram", dir);
    int fd = open(path, O_RDONLY);
    T_ASSERT(fd >= 0);
    uint64_t bad = 0, first_bad = 0, pages = 0;
    static uint8_t got[1 << 20];
    uint8_t want[4096];
    for (uint64_t off = 0; fd >= 0 && off < mib << 20; off += sizeof(got)) {
        if (pread(fd, got, sizeof(got), (off_t)off) != (ssize_t)sizeof(got)) {
            T_FAIL("short read of the extracted pc.ram");
            break;
        }
        for (size_t i = 0; i < sizeof(got); i += 4096, pages++) {
            uint64_t pg = (off + i) / 4096;
            big_page_final(want, pg);
            if (memcmp(got + i, want, 4096) && bad++ == 0)
                first_bad = pg;
        }
    }
    if (fd >= 0)
        close(fd);
    T_EQ_INT(pages, mib << 8);
    T_EQ_INT(bad, 0);
    if (bad)
        printf("# %llu pages differ, the first is page %llu\n",
               (unsigned long long)bad, (unsigned long long)first_bad);

    size_t n;
    snprintf(path, sizeof(path), "%s/state.json", dir);
    char *state = (char *)read_file(path, &n);
    T_ASSERT(state != NULL);
    if (state) {
        state = realloc(state, n + 1);
        state[n] = '\0';
        T_CONTAINS(state, "\"dev (3)\": {\n        \"v\": \"0x00c0ffee\"\n    }");
    }
    free(state);
    rm_rf(dir);
    free(dir);
}

/* The same stream as a file (the description is read from its end first)
 * gives the same summary as through the pipe. */
static void test_file_same_as_pipe(void)
{
    char *dir = make_tmpdir();
    Run g = run_sh("'%s' 64 > '%s/big.mig'", gen, dir);
    T_EQ_INT(g.status, 0);
    run_free(&g);
    Run f = run_sh("'%s' analyze --summary '%s/big.mig' | tail -n +3", bin, dir);
    Run p = run_sh("cat '%s/big.mig' | '%s' analyze --summary - | tail -n +3", dir, bin);
    T_EQ_INT(f.status, 0);
    T_EQ_INT(p.status, 0);
    expect_counts(f.out, 64);
    T_EQ_STR(f.out, p.out);
    run_free(&f);
    run_free(&p);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    ferry_bin(bin, sizeof(bin));
    const char *b = getenv("FERRY_BUILD");
    snprintf(gen, sizeof(gen), "%s/tests/analyze/gen-big-stream", b ? b : ".");
    if (access(bin, X_OK) != 0 || access(gen, X_OK) != 0) {
        printf("# no ferry or gen-big-stream binary (%s, %s)\n", bin, gen);
        return 1;
    }
    T_RUN(test_pipe_check_and_summary);
    T_RUN(test_pipe_extract);
    T_RUN(test_file_same_as_pipe);
    return t_done();
}
