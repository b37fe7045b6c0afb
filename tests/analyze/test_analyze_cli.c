/*
 * test_analyze_cli: `ferry analyze` as users and scripts run it.
 *
 * - Its JSON is byte-identical to QEMU's analyze-migration.py on the same
 *   fixtures (-d state, -d desc, -m): the hashes of the script's output are
 *   in tests/fixtures/analyze-migration-py.sha256; the script's -f and -x
 *   spellings work.
 * - -x DIR writes the blocks, desc.json and state.json; a pipe (-) gives the
 *   same output as the file; --check, --summary, --diff and --desc do what
 *   the docs say, with the exit codes they say; broken input exits 1 with
 *   the offset, never with a signal.
 */
#include "analyze/analyze-test.h"

static char bin[4096];

static char *fx(const char *name)
{
    static char bufs[8][4096];
    static int n;
    char *b = bufs[n++ % 8];
    return (char *)fixture(b, 4096, name);
}

static void test_same_bytes_as_analyze_migration_py(void)
{
    size_t len;
    char path[4096];
    char *txt = (char *)read_file(fixture(path, sizeof(path),
                                          "analyze-migration-py.sha256"), &len);
    T_ASSERT(txt != NULL);
    if (!txt)
        return;
    txt = realloc(txt, len + 1);
    txt[len] = '\0';
    int checked = 0;
    for (char *line = strtok(txt, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char sha[65], name[256], args[256] = "";
        if (sscanf(line, "%64s %255s %255[^\n]", sha, name, args) < 2)
            continue;
        /* the script's spelling: -f FILE */
        Run r = run_sh("'%s' analyze %s -f '%s' | sha256sum", bin, args, fx(name));
        T_EQ_INT(r.status, 0);
        T_ASSERT(!strncmp(r.out, sha, 64));
        if (strncmp(r.out, sha, 64))
            printf("# %s %s: %.64s, analyze-migration.py: %s\n", name, args, r.out, sha);
        run_free(&r);
        checked++;
    }
    T_EQ_INT(checked, 6);
    free(txt);
}

static void test_extract(void)
{
    char *dir = make_tmpdir();
    Run r = run_sh("'%s' analyze -x '%s/out' '%s'", bin, dir, fx("qemu-pc.mig"));
    T_EQ_INT(r.status, 0);
    T_CONTAINS(r.out, "/out/pc.ram\n");
    T_CONTAINS(r.out, "/out/rom@etc/acpi/tables\n");
    T_CONTAINS(r.out, "/out/0000:00:02.0/e1000.rom\n");
    T_CONTAINS(r.out, "/out/desc.json\n");
    T_CONTAINS(r.out, "/out/state.json\n");
    run_free(&r);
    /* desc.json and state.json are -d desc and -d state, without the newline */
    Run d = run_sh("'%s' analyze -d desc '%s'", bin, fx("qemu-pc.mig"));
    Run s = run_sh("'%s' analyze '%s'", bin, fx("qemu-pc.mig"));
    char p[4200];
    size_t n;
    snprintf(p, sizeof(p), "%s/out/desc.json", dir);
    uint8_t *f = read_file(p, &n);
    T_ASSERT(f && n + 1 == d.out_len && !memcmp(f, d.out, n));
    free(f);
    snprintf(p, sizeof(p), "%s/out/state.json", dir);
    f = read_file(p, &n);
    T_ASSERT(f && n + 1 == s.out_len && !memcmp(f, s.out, n));
    free(f);
    snprintf(p, sizeof(p), "%s/out/pc.ram", dir);
    struct stat st;
    T_ASSERT(stat(p, &st) == 0 && st.st_size == 32 << 20);
    run_free(&d);
    run_free(&s);

    /* analyze-migration.py's way: -x with no directory writes into "." */
    r = run_sh("cd '%s' && '%s' analyze -x -f '%s'", dir, bin, fx("qemu-q35.mig"));
    T_EQ_INT(r.status, 0);
    snprintf(p, sizeof(p), "%s/pc.ram", dir);
    T_ASSERT(access(p, F_OK) == 0);
    snprintf(p, sizeof(p), "%s/0000:00:01.0/virtio-net-pci.rom", dir);
    T_ASSERT(access(p, F_OK) == 0);
    snprintf(p, sizeof(p), "%s/state.json", dir);
    T_ASSERT(access(p, F_OK) == 0);
    run_free(&r);
    rm_rf(dir);
    free(dir);
}

static void test_pipe(void)
{
    const char *names[] = { "qemu-pc.mig", "qemu-xbzrle.mig" };
    for (int i = 0; i < 2; i++) {
        Run f = run_sh("'%s' analyze '%s' | sha256sum", bin, fx(names[i]));
        Run p = run_sh("cat '%s' | '%s' analyze - | sha256sum", fx(names[i]), bin);
        T_EQ_INT(p.status, 0);
        T_EQ_STR(p.out, f.out);
        run_free(&f);
        run_free(&p);
        Run c = run_sh("cat '%s' | '%s' analyze --check -", fx(names[i]), bin);
        T_EQ_INT(c.status, 0);
        T_CONTAINS(c.out, "-: OK: QEMU migration stream v3");
        run_free(&c);
    }
}

/* A stream without its description, read from a pipe: says what it could
 * not decode and why, does not fail; --desc supplies one. */
static void test_undecoded_and_desc(void)
{
    char path[4096];
    size_t len;
    uint8_t *d = read_file(fixture(path, sizeof(path), "qemu-pc.mig"), &len);
    An *a = analyze_mem(d, len, true, NULL);
    char *dir = make_tmpdir(), cut[4200];
    snprintf(cut, sizeof(cut), "%s/nodesc.mig", dir);
    T_EQ_INT(write_file(cut, d, (size_t)a->eof_off + 1), 0);
    an_free(a);
    free(d);

    Run r = run_sh("cat '%s' | '%s' analyze -", cut, bin);
    T_EQ_INT(r.status, 0);
    T_CONTAINS(r.out, "\"cpu (5)\": \"undecoded: ");
    T_CONTAINS(r.out, "pass --desc FILE");
    T_CONTAINS(r.err, "31 sections not decoded");
    run_free(&r);

    Run g = run_sh("cat '%s' | '%s' analyze --desc '%s' - | sha256sum", cut, bin,
                   fx("qemu-pc.mig"));
    Run w = run_sh("'%s' analyze '%s' | sha256sum", bin, fx("qemu-pc.mig"));
    T_EQ_INT(g.status, 0);
    T_EQ_STR(g.out, w.out);
    run_free(&g);
    run_free(&w);
    rm_rf(dir);
    free(dir);
}

static void test_check(void)
{
    Run r = run_sh("'%s' analyze --check '%s'", bin, fx("qemu-xbzrle.mig"));
    T_EQ_INT(r.status, 0);
    T_CONTAINS(r.out, "OK: QEMU migration stream v3, 1198255 bytes");
    T_CONTAINS(r.out, "xbzrle)");
    run_free(&r);

    /* the cpu section's footer broken */
    char path[4096];
    size_t len;
    uint8_t *d = read_file(fixture(path, sizeof(path), "qemu-pc.mig"), &len);
    An *a = analyze_mem(d, len, true, NULL);
    AnSection *cpu = find_section(a, "cpu", 0);
    size_t footer = (size_t)(cpu->first_off + cpu->bytes - 5);
    d[footer] = 0x02;
    char *dir = make_tmpdir(), bad[4200], want[300];
    snprintf(bad, sizeof(bad), "%s/bad.mig", dir);
    T_EQ_INT(write_file(bad, d, len), 0);
    snprintf(want, sizeof(want), "bad.mig: stream offset %zu: section 'cpu' (id 5): "
             "expected section footer 0x7e, found 0x02", footer);
    r = run_sh("'%s' analyze --check '%s'", bin, bad);
    T_EQ_INT(r.status, 1);
    T_CONTAINS(r.out, want);
    run_free(&r);
    r = run_sh("cat '%s' | '%s' analyze --check -", bad, bin);
    T_EQ_INT(r.status, 1);
    T_CONTAINS(r.out, want + 7);
    run_free(&r);

    /* printing a broken stream: what it could read, then the error */
    r = run_sh("'%s' analyze '%s'", bin, bad);
    T_EQ_INT(r.status, 1);
    T_CONTAINS(r.out, "\"ram (2)\"");
    T_CONTAINS(r.err, want + 7);
    run_free(&r);

    /* truncated */
    r = run_sh("head -c 500000 '%s' | '%s' analyze --check -", fx("qemu-pc.mig"), bin);
    T_EQ_INT(r.status, 1);
    T_CONTAINS(r.out, "-: stream offset ");
    T_CONTAINS(r.out, "found end of stream");
    run_free(&r);
    an_free(a);
    free(d);
    rm_rf(dir);
    free(dir);
}

static void test_summary(void)
{
    Run r = run_sh("'%s' analyze --summary '%s'", bin, fx("qemu-xbzrle.mig"));
    T_EQ_INT(r.status, 0);
    T_CONTAINS(r.out, "machine pc-i440fx-7.2, page size 4096");
    T_CONTAINS(r.out, "sections (in stream order)");
    T_CONTAINS(r.out, "RAM: 6 blocks, 34086912 bytes");
    T_CONTAINS(r.out, " xbzrle (");
    T_CONTAINS(r.out, "passes (");
    T_CONTAINS(r.out, "RAM XBZRLE deltas");
    T_CONTAINS(r.out, "where the time would go");
    T_CONTAINS(r.out, "stop-and-copy");
    T_CONTAINS(r.out, "largest while stopped");
    run_free(&r);
}

static void test_diff(void)
{
    Run r = run_sh("'%s' analyze --diff '%s' '%s'", bin, fx("qemu-pc.mig"),
                   fx("qemu-pc.mig"));
    T_EQ_INT(r.status, 0);
    T_EQ_INT(r.out_len, 0);
    run_free(&r);

    r = run_sh("'%s' analyze --diff '%s' '%s'", bin, fx("qemu-pc.mig"), fx("qemu-q35.mig"));
    T_EQ_INT(r.status, 1);
    T_CONTAINS(r.out, "configuration.machine: pc-i440fx-7.2 vs pc-q35-7.2\n");
    T_CONTAINS(r.out, "0000:00:02.0/e1000[0]: only in A\n");
    T_CONTAINS(r.out, "0000:00:1f.0/ICH9LPC[0]: only in B\n");
    T_CONTAINS(r.out, "ram.block '0000:00:02.0/e1000.rom': only in A");
    run_free(&r);

    /* one register changed: exactly one line */
    char path[4096];
    size_t len;
    uint8_t *d = read_file(fixture(path, sizeof(path), "qemu-pc.mig"), &len);
    An *a = analyze_mem(d, len, true, NULL);
    AnSection *cpu = find_section(a, "cpu", 0);
    /* header: type, be32 id, u8 3 "cpu", be32 instance, be32 version */
    size_t regs = (size_t)cpu->first_off + 1 + 4 + 1 + 3 + 4 + 4;
    d[regs + 3 * 8 + 7] = 0x11;
    char *dir = make_tmpdir(), b[4200];
    snprintf(b, sizeof(b), "%s/b.mig", dir);
    T_EQ_INT(write_file(b, d, len), 0);
    r = run_sh("'%s' analyze --diff '%s' '%s'", bin, fx("qemu-pc.mig"), b);
    T_EQ_INT(r.status, 1);
    T_EQ_STR(r.out, "cpu[0].env.regs[3]: 0x0000000000000000 vs 0x0000000000000011\n");
    run_free(&r);
    /* B from a pipe */
    r = run_sh("cat '%s' | '%s' analyze --diff '%s' -", b, bin, fx("qemu-pc.mig"));
    T_EQ_INT(r.status, 1);
    T_EQ_STR(r.out, "cpu[0].env.regs[3]: 0x0000000000000000 vs 0x0000000000000011\n");
    run_free(&r);
    an_free(a);
    free(d);
    rm_rf(dir);
    free(dir);
}

/* The long spellings the issue and --help name give what the short ones do. */
static void test_long_options(void)
{
    Run a = run_sh("'%s' analyze -m '%s' | sha256sum", bin, fx("qemu-pc.mig"));
    Run b = run_sh("'%s' analyze --memory '%s' | sha256sum", bin, fx("qemu-pc.mig"));
    T_EQ_INT(b.status, 0);
    T_EQ_STR(b.out, a.out);
    run_free(&a);
    run_free(&b);
    a = run_sh("'%s' analyze -d desc '%s' | sha256sum", bin, fx("qemu-q35.mig"));
    b = run_sh("'%s' analyze --dump=desc '%s' | sha256sum", bin, fx("qemu-q35.mig"));
    T_EQ_STR(b.out, a.out);
    run_free(&a);
    run_free(&b);
    char *dir = make_tmpdir();
    Run r = run_sh("'%s' analyze --extract '%s/x' '%s' && '%s' analyze -q -x '%s/y' '%s' "
                   "&& cmp '%s/x/pc.ram' '%s/y/pc.ram' && cmp '%s/x/state.json' '%s/y/state.json'",
                   bin, dir, fx("qemu-q35.mig"), bin, dir, fx("qemu-q35.mig"),
                   dir, dir, dir, dir);
    T_EQ_INT(r.status, 0);
    T_CONTAINS(r.out, "/x/pc.ram\n");
    run_free(&r);
    rm_rf(dir);
    free(dir);
}

/* The broken-stream session of docs/analyze.md, on the qemu-pc fixture:
 * four bytes lost after the cpu's env.regs, and the stream cut at 600000.
 * The messages there are these, to the byte. */
static void test_docs_session(void)
{
    char path[4096];
    size_t len;
    uint8_t *d = read_file(fixture(path, sizeof(path), "qemu-pc.mig"), &len);
    An *a = analyze_mem(d, len, true, NULL);
    AnSection *cpu = find_section(a, "cpu", 0);
    T_ASSERT(cpu && len > 600000);
    if (!cpu || len <= 600000) {
        an_free(a);
        free(d);
        return;
    }
    /* header: type, be32 id, u8 3 "cpu", be32 instance, be32 version; then
     * env.regs, 16 x uint64 */
    size_t gap = (size_t)cpu->first_off + 17 + 128;
    char *dir = make_tmpdir(), vm[4200], cut[4200];
    snprintf(vm, sizeof(vm), "%s/vm.mig", dir);
    snprintf(cut, sizeof(cut), "%s/cut.mig", dir);
    uint8_t *bad = malloc(len);
    memcpy(bad, d, gap);
    memcpy(bad + gap, d + gap + 4, len - gap - 4);
    T_EQ_INT(write_file(vm, bad, len - 4), 0);
    T_EQ_INT(write_file(cut, d, 600000), 0);
    free(bad);
    an_free(a);
    free(d);

    Run r = run_sh("cd '%s' && '%s' analyze --check vm.mig", dir, bin);
    T_EQ_INT(r.status, 1);
    T_EQ_STR(r.out, "vm.mig: stream offset 593733: section 'cpu' (id 5): expected "
             "subsection 'cpu/poll_control_msr' (0x05), found 0x75\n");
    run_free(&r);
    r = run_sh("cd '%s' && '%s' analyze --check cut.mig", dir, bin);
    T_EQ_INT(r.status, 1);
    T_EQ_STR(r.out, "cut.mig: stream offset 600000: section 'vmmouse' (id 26): expected "
             "section footer 0x7e with id 26, found end of stream (2593 bytes after "
             "the section header)\n");
    run_free(&r);
    r = run_sh("cd '%s' && '%s' analyze --check --desc '%s' cut.mig", dir, bin,
               fx("qemu-pc.mig"));
    T_EQ_INT(r.status, 1);
    T_EQ_STR(r.out, "cut.mig: stream offset 599999: section 'vmmouse' (id 26): field "
             "'queue[647]' (uint32): expected 4 bytes, found fewer before the end of "
             "the stream\n");
    run_free(&r);
    rm_rf(dir);
    free(dir);
}

static void test_bad_input_and_usage(void)
{
    char *dir = make_tmpdir(), p[4200];
    snprintf(p, sizeof(p), "%s/junk", dir);
    uint8_t junk[5000];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 131 + 7);
    memcpy(junk, "QEVM\0\0\0\3", 8);
    write_file(p, junk, sizeof(junk));
    const char *modes[] = { "", "--check", "--summary", "-m", "-d desc" };
    for (int i = 0; i < 5; i++) {
        Run r = run_sh("'%s' analyze %s '%s'", bin, modes[i], p);
        T_EQ_INT(r.status, 1);
        run_free(&r);
    }
    Run r = run_sh("'%s' analyze", bin);
    T_EQ_INT(r.status, 2);
    T_CONTAINS(r.err, "usage: ferry analyze");
    run_free(&r);
    r = run_sh("'%s' analyze --bogus x", bin);
    T_EQ_INT(r.status, 2);
    run_free(&r);
    r = run_sh("'%s' analyze -d foo x", bin);
    T_EQ_INT(r.status, 2);
    run_free(&r);
    r = run_sh("'%s' analyze /nonexistent/x.mig", bin);
    T_EQ_INT(r.status, 2);
    T_CONTAINS(r.err, "No such file");
    run_free(&r);
    r = run_sh("'%s' analyze --help", bin);
    T_EQ_INT(r.status, 0);
    T_CONTAINS(r.out, "--diff A B");
    run_free(&r);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    ferry_bin(bin, sizeof(bin));
    if (access(bin, X_OK) != 0) {
        printf("# no ferry binary at %s\n", bin);
        return 1;
    }
    T_RUN(test_same_bytes_as_analyze_migration_py);
    T_RUN(test_extract);
    T_RUN(test_pipe);
    T_RUN(test_undecoded_and_desc);
    T_RUN(test_check);
    T_RUN(test_summary);
    T_RUN(test_diff);
    T_RUN(test_bad_input_and_usage);
    T_RUN(test_long_options);
    T_RUN(test_docs_session);
    return t_done();
}
