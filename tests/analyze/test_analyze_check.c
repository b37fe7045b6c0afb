/*
 * test_analyze_check: --check on valid, truncated and corrupted streams.
 *
 * A valid stream passes. A stream cut anywhere fails, with a message that
 * starts "stream offset N" (N no further than the cut) and says what was
 * expected -- except a cut right after EOF, which is a valid stream without
 * a description. Corruptions at known places give the exact message and
 * offset, read from a file (description known first) and from a pipe (the
 * description comes last).
 */
#include "analyze/analyze-test.h"

static uint8_t *pc;
static size_t pc_len;
static An *good;  /* the valid fixture, analyzed, for offsets */

static An *check_mem(const uint8_t *d, size_t n, bool seekable)
{
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true };
    return analyze_mem(d, n, seekable, &o);
}

static void test_valid(void)
{
    An *a = check_mem(pc, pc_len, true);
    T_ASSERT(!a->failed);
    an_free(a);
    a = check_mem(pc, pc_len, false);
    T_ASSERT(!a->failed);
    an_free(a);
}

static void expect_truncated(size_t cut, bool seekable)
{
    An *a = check_mem(pc, cut, seekable);
    bool ok_expected = cut == good->eof_off + 1;
    if (ok_expected) {
        T_ASSERT(!a->failed);
    } else {
        T_ASSERT(a->failed);
        if (a->failed) {
            T_ASSERT(!strncmp(a->err, "stream offset ", 14));
            T_ASSERT(a->err_off <= cut);
            T_CONTAINS(a->err, "expected");
        } else {
            printf("# cut at %zu passed the check\n", cut);
        }
    }
    an_free(a);
}

/* Every cut in the first 4 KiB (header, configuration, MEM_SIZE, first
 * pages), around the switch to device state and EOF, and every 997th byte
 * elsewhere. */
static void test_truncated_everywhere(void)
{
    size_t dev = (size_t)good->secs[1]->first_off, eof = (size_t)good->eof_off;
    for (size_t cut = 0; cut < pc_len; cut++) {
        bool dense = cut < 4096 || (cut + 600 > dev && cut < dev + 3000) ||
                     (cut + 300 > eof && cut < eof + 300) || cut + 64 > pc_len;
        if (!dense && cut % 997)
            continue;
        expect_truncated(cut, false);
        if (cut % 7 == 0)
            expect_truncated(cut, true);
    }
}

static uint8_t *copy(void)
{
    uint8_t *d = malloc(pc_len);
    memcpy(d, pc, pc_len);
    return d;
}

static void expect_error(const uint8_t *d, size_t n, uint64_t off, const char *msg)
{
    for (int s = 0; s < 2; s++) {
        An *a = check_mem(d, n, s == 0);
        T_ASSERT(a->failed);
        T_EQ_INT(a->err_off, off);
        T_CONTAINS(a->err, msg);
        if (a->err_off != off || !strstr(a->err, msg))
            printf("# (%s) %s\n", s ? "pipe" : "file", a->err);
        an_free(a);
    }
}

static void test_bad_magic_and_version(void)
{
    uint8_t *d = copy();
    d[0] = 'X';
    expect_error(d, pc_len, 0, "expected magic 0x5145564d");
    memcpy(d, pc, 8);
    d[7] = 2;
    expect_error(d, pc_len, 4, "SaveVM v2 format is obsolete");
    free(d);
}

static void test_missing_footer(void)
{
    AnSection *cpu = find_section(good, "cpu", 0);
    T_ASSERT(cpu != NULL);
    if (!cpu)
        return;
    size_t footer = (size_t)(cpu->first_off + cpu->bytes - 5);
    T_EQ_INT(pc[footer], 0x7e);
    uint8_t *d = copy();
    d[footer] = 0x02;
    char msg[200];
    snprintf(msg, sizeof(msg), "section 'cpu' (id %u): expected section footer "
             "0x7e, found 0x02 (QEMU: \"Missing section footer for cpu\")", cpu->id);
    expect_error(d, pc_len, footer, msg);

    /* the footer's id */
    memcpy(d, pc, pc_len);
    d[footer + 4] ^= 0x40;
    snprintf(msg, sizeof(msg), "expected section id %u in the footer, found %u",
             cpu->id, cpu->id ^ 0x40);
    An *a = check_mem(d, pc_len, true);
    T_ASSERT(a->failed);
    T_EQ_INT(a->err_off, footer + 1);
    T_CONTAINS(a->err, msg);
    T_CONTAINS(a->err, "Mismatched section id in footer for cpu");
    an_free(a);
    free(d);
}

/* A field that runs past its section: a device section one byte short. */
static void test_device_too_short(void)
{
    AnSection *s = find_section(good, "i8254", 0);
    T_ASSERT(s != NULL);
    if (!s)
        return;
    /* drop the section's last body byte: the decoder reads the footer's 0x7e
     * as data and then finds the footer one byte late */
    size_t footer = (size_t)(s->first_off + s->bytes - 5);
    uint8_t *d = malloc(pc_len);
    memcpy(d, pc, footer - 1);
    memcpy(d + footer - 1, pc + footer, pc_len - footer);
    An *a = check_mem(d, pc_len - 1, true);
    T_ASSERT(a->failed);
    T_CONTAINS(a->err, "section 'i8254'");
    T_CONTAINS(a->err, "expected");
    T_ASSERT(a->err_off >= s->first_off && a->err_off <= footer + 5);
    an_free(a);
    free(d);
}

static void test_unknown_section_type(void)
{
    AnSection *s = find_section(good, "timer", 0);
    uint8_t *d = copy();
    d[s->first_off] = 0x09;
    expect_error(d, pc_len, s->first_off, "expected a section type (0x00-0x04, "
                 "0x08), found 0x09 (QEMU: \"Unknown savevm section type 9\")");
    d[s->first_off] = 0x06;
    expect_error(d, pc_len, s->first_off, "found the VM description marker 0x06 "
                 "before EOF");
    free(d);
}

/* The first page record that names pc.ram (after MEM_SIZE), renamed. */
static void test_unknown_ramblock(void)
{
    const char *needle = "\x06pc.ram";
    size_t hits = 0, at = 0;
    for (size_t i = 0; i + 7 <= pc_len && hits < 2; i++) {
        if (!memcmp(pc + i, needle, 7)) {
            hits++;
            at = i;
        }
    }
    T_EQ_INT(hits, 2);
    uint8_t *d = copy();
    d[at + 5] = 'X';
    expect_error(d, pc_len, at, "found 'pc.rXm' (QEMU: \"Can't find block pc.rXm\")");
    /* in MEM_SIZE instead: every later record then names an unknown block */
    free(d);
}

static void test_trailing_bytes_and_bad_description(void)
{
    uint8_t *d = malloc(pc_len + 3);
    memcpy(d, pc, pc_len);
    memcpy(d + pc_len, "abc", 3);
    An *a = check_mem(d, pc_len + 3, false);
    T_ASSERT(a->failed);
    T_EQ_INT(a->err_off, pc_len);
    T_CONTAINS(a->err, "expected the end of the stream after the VM description, "
               "found 3 more bytes");
    an_free(a);

    /* the description's JSON broken */
    memcpy(d, pc, pc_len);
    size_t json = (size_t)good->vmdesc_off + 5;
    d[json + 1] = '}';
    a = check_mem(d, pc_len, true);
    T_ASSERT(a->failed);
    T_CONTAINS(a->err, "is not valid JSON");
    an_free(a);
    /* ... and without --check it still reads the stream, devices undecoded */
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true };
    a = analyze_mem(d, pc_len, true, &o);
    T_ASSERT(!a->failed);
    T_ASSERT(a->vmdesc_problem != NULL);
    T_EQ_INT(count_kind(a, SEC_OPAQUE), good->nsecs - 1);
    an_free(a);
    free(d);
}

int main(void)
{
    char path[4096];
    pc = read_file(fixture(path, sizeof(path), "qemu-pc.mig"), &pc_len);
    if (!pc) {
        printf("# cannot read %s\n", path);
        return 1;
    }
    good = analyze_mem(pc, pc_len, true, NULL);
    if (good->failed || !good->saw_eof) {
        printf("# %s\n", good->err);
        return 1;
    }
    T_RUN(test_valid);
    T_RUN(test_truncated_everywhere);
    T_RUN(test_bad_magic_and_version);
    T_RUN(test_missing_footer);
    T_RUN(test_device_too_short);
    T_RUN(test_unknown_section_type);
    T_RUN(test_unknown_ramblock);
    T_RUN(test_trailing_bytes_and_bad_description);
    an_free(good);
    free(pc);
    return t_done();
}
