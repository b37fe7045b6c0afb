/*
 * analyze-test.h: helpers shared by the tests of `ferry analyze`.
 *
 * - files: read a whole file, gunzip one, find the fixtures and the ferry
 *   binary (FERRY_SRC / FERRY_BUILD, set by meson);
 * - run: the ferry program as a child, stdout/stderr captured, exit code;
 * - analyze in process: an An over a file or bytes, with options;
 * - Sb: a byte builder for hand-made streams, written from the format facts
 *   (shared/reference/qemu-wire-format.md), not by the code under test;
 * - the fixture checks (every section decoded, RAM equal to QEMU's pmemsave)
 *   used for the committed fixtures and for freshly made ones.
 */
#ifndef FERRY_TESTS_ANALYZE_TEST_H
#define FERRY_TESTS_ANALYZE_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "t.h"
#include "tools/analyze-int.h"

/* ---------------------------------------------------------------- files */

static inline const char *src_dir(void)
{
    const char *s = getenv("FERRY_SRC");
    return s ? s : ".";
}

static inline const char *ferry_bin(char *buf, size_t len)
{
    const char *b = getenv("FERRY_BUILD");
    snprintf(buf, len, "%s/src/tools/ferry", b ? b : ".");
    return buf;
}

static inline const char *fixture(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/tests/fixtures/%s", src_dir(), name);
    return buf;
}

static inline uint8_t *read_file(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *d = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            d = realloc(d, cap);
        }
        size_t r = fread(d + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    *len = n;
    return d;
}

static inline int write_file(const char *path, const void *d, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(d, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static inline uint8_t *read_gz(const char *path, size_t *len)
{
    *len = 0;
    gzFile g = gzopen(path, "rb");
    if (!g)
        return NULL;
    uint8_t *d = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 20;
            d = realloc(d, cap);
        }
        int r = gzread(g, d + n, (unsigned)(cap - n));
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    gzclose(g);
    *len = n;
    return d;
}

static inline char *make_tmpdir(void)
{
    char *t = strdup("/tmp/ferry-analyze-test-XXXXXX");
    if (!mkdtemp(t)) {
        free(t);
        return NULL;
    }
    return t;
}

static inline void rm_rf(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
}

/* ---------------------------------------------------------------- run */

typedef struct Run {
    int status;     /* exit code, or 128 + signal */
    char *out, *err;
    size_t out_len, err_len;
} Run;

static inline char *slurp_fd(int fd, size_t *len)
{
    char *d = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 1 >= cap) {
            cap = cap ? cap * 2 : 1 << 16;
            d = realloc(d, cap);
        }
        ssize_t r = read(fd, d + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    d[n] = '\0';
    *len = n;
    return d;
}

/* Run `sh -c cmd` with stdout and stderr to temp files. */
static inline Run run_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    Run r = { 0 };
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
    waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    rewind(o);
    rewind(e);
    r.out = slurp_fd(fileno(o), &r.out_len);
    r.err = slurp_fd(fileno(e), &r.err_len);
    fclose(o);
    fclose(e);
    return r;
}

static inline void run_free(Run *r)
{
    free(r->out);
    free(r->err);
}

/* ---------------------------------------------------------------- in process */

static inline An *analyze_file(const char *path, const AnOpts *o)
{
    AnOpts d = { .dump = AN_DUMP_NONE, .quiet = true };
    An *a = an_new(o ? o : &d);
    if (an_open(a, path) == 0)
        an_run(a);
    return a;
}

static inline An *analyze_mem(const void *data, size_t len, bool seekable,
                              const AnOpts *o)
{
    AnOpts d = { .dump = AN_DUMP_NONE, .quiet = true };
    An *a = an_new(o ? o : &d);
    if (an_open_mem(a, data, len, seekable) == 0)
        an_run(a);
    return a;
}

static inline size_t count_kind(An *a, AnSecKind k)
{
    size_t n = 0;
    for (size_t i = 0; i < a->nsecs; i++)
        n += a->secs[i]->kind == k;
    return n;
}

static inline AnSection *find_section(An *a, const char *name, uint32_t inst)
{
    for (size_t i = 0; i < a->nsecs; i++)
        if (!strcmp(a->secs[i]->name, name) && a->secs[i]->instance == inst)
            return a->secs[i];
    return NULL;
}

/* ---------------------------------------------------------------- stream builder */

typedef struct Sb {
    uint8_t *d;
    size_t len, cap;
} Sb;

static inline void sb_raw(Sb *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
    }
    if (n)
        memcpy(b->d + b->len, p, n);
    b->len += n;
}
static inline void sb_u8(Sb *b, uint8_t v) { sb_raw(b, &v, 1); }
static inline void sb_be16(Sb *b, uint16_t v)
{
    uint8_t x[2] = { (uint8_t)(v >> 8), (uint8_t)v };
    sb_raw(b, x, 2);
}
static inline void sb_be32(Sb *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    sb_raw(b, x, 4);
}
static inline void sb_be64(Sb *b, uint64_t v)
{
    sb_be32(b, (uint32_t)(v >> 32));
    sb_be32(b, (uint32_t)v);
}
static inline void sb_str(Sb *b, const char *s)
{
    sb_u8(b, (uint8_t)strlen(s));
    sb_raw(b, s, strlen(s));
}
static inline void sb_free(Sb *b)
{
    free(b->d);
    memset(b, 0, sizeof(*b));
}
/* "QEVM", 3, configuration (be32 len + machine type) */
static inline void sb_header(Sb *b, const char *machine)
{
    sb_be32(b, 0x5145564d);
    sb_be32(b, 3);
    sb_u8(b, 0x07);
    sb_be32(b, (uint32_t)strlen(machine));
    sb_raw(b, machine, strlen(machine));
}
static inline void sb_start(Sb *b, uint8_t type, uint32_t id, const char *name,
                            uint32_t inst, uint32_t ver)
{
    sb_u8(b, type);
    sb_be32(b, id);
    sb_str(b, name);
    sb_be32(b, inst);
    sb_be32(b, ver);
}
static inline void sb_part(Sb *b, uint8_t type, uint32_t id)
{
    sb_u8(b, type);
    sb_be32(b, id);
}
static inline void sb_footer(Sb *b, uint32_t id)
{
    sb_u8(b, 0x7e);
    sb_be32(b, id);
}
/* EOF, then the description if json is not NULL */
static inline void sb_end(Sb *b, const char *json)
{
    sb_u8(b, 0x00);
    if (json) {
        sb_u8(b, 0x06);
        sb_be32(b, (uint32_t)strlen(json));
        sb_raw(b, json, strlen(json));
    }
}

/* ---------------------------------------------------------------- kitchen sink */

/* A small stream with one of nearly everything: configuration with
 * subsections, commands, a RAM section over four records with ZERO, PAGE,
 * CONTINUE, zlib-compressed, XBZRLE and MULTIFD_FLUSH records, a device with
 * every value kind, arrays, a struct with a subsection and a subsection of
 * its own, a PACKAGED command holding a device section, EOF, description.
 * exp_ram/exp_vga (64 KiB and 8 KiB) receive the RAM it leaves behind. */
#define KS_DESC                                                                \
    "{\"page_size\": 4096, \"devices\": ["                                     \
    "{\"name\": \"dev\", \"instance_id\": 0, \"vmsd_name\": \"dev\", "         \
    "\"version\": 2, \"fields\": ["                                            \
    "{\"name\": \"a\", \"type\": \"uint32\", \"size\": 4}, "                   \
    "{\"name\": \"b\", \"type\": \"int16\", \"size\": 2}, "                    \
    "{\"name\": \"flag\", \"type\": \"bool\", \"size\": 1}, "                  \
    "{\"name\": \"regs\", \"array_len\": 3, \"type\": \"uint64\", \"size\": 8}, " \
    "{\"name\": \"buf\", \"type\": \"buffer\", \"size\": 5}, "                 \
    "{\"name\": \"ptr\", \"type\": \"nullptr\", \"size\": 1}, "                \
    "{\"name\": \"cap\", \"type\": \"capability\", \"size\": 0}, "             \
    "{\"name\": \"s\", \"type\": \"struct\", \"struct\": {\"vmsd_name\": "     \
    "\"inner\", \"version\": 1, \"fields\": [{\"name\": \"x\", \"type\": "     \
    "\"uint8\", \"size\": 1}], \"subsections\": [{\"vmsd_name\": "             \
    "\"inner/sub\", \"version\": 1, \"fields\": [{\"name\": \"y\", \"type\": " \
    "\"uint16\", \"size\": 2}]}]}, \"size\": 17}, "                            \
    "{\"name\": \"e\", \"type\": \"uint8 equal\", \"size\": 1}], "             \
    "\"subsections\": [{\"vmsd_name\": \"dev/extra\", \"version\": 1, "        \
    "\"fields\": [{\"name\": \"z\", \"type\": \"int32 equal\", \"size\": 4}]}]}, " \
    "{\"name\": \"pkg\", \"instance_id\": 0, \"vmsd_name\": \"pkg\", "         \
    "\"version\": 1, \"fields\": [{\"name\": \"v\", \"type\": \"uint8\", "     \
    "\"size\": 1}]}]}"

static inline void ks_page_pattern(uint8_t *p, unsigned seed)
{
    for (int i = 0; i < 4096; i++)
        p[i] = (uint8_t)(seed * 31 + (unsigned)i * 7 + (unsigned)(i >> 8));
}

static inline void ks_build(Sb *b, uint8_t *exp_ram, uint8_t *exp_vga)
{
    uint8_t page[4096];
    memset(exp_ram, 0, 65536);
    memset(exp_vga, 0, 8192);

    sb_be32(b, 0x5145564d);
    sb_be32(b, 3);
    sb_u8(b, 0x07);
    sb_be32(b, 11);
    sb_raw(b, "kitchen-1.0", 11);
    sb_u8(b, 0x05); /* capabilities: none */
    sb_str(b, "configuration/capabilities");
    sb_be32(b, 1);
    sb_be32(b, 0);
    sb_u8(b, 0x05); /* uuid */
    sb_str(b, "configuration/uuid");
    sb_be32(b, 1);
    sb_raw(b, "0123456789abcdef", 16);

    sb_u8(b, 0x08); /* OPEN_RETURN_PATH */
    sb_be16(b, 1);
    sb_be16(b, 0);
    sb_u8(b, 0x08); /* PING 7 */
    sb_be16(b, 2);
    sb_be16(b, 4);
    sb_be32(b, 7);

    /* ram START: MEM_SIZE */
    sb_start(b, 0x01, 2, "ram", 0, 4);
    sb_be64(b, (65536 + 8192) | 0x04);
    sb_str(b, "pc.ram");
    sb_be64(b, 65536);
    sb_str(b, "vga");
    sb_be64(b, 8192);
    sb_be64(b, 0x10);
    sb_footer(b, 2);

    /* PART: PAGE 0, ZERO|CONT 1, PAGE|CONT 2, compressed vga 0, flush */
    sb_part(b, 0x02, 2);
    ks_page_pattern(page, 1);
    sb_be64(b, 0x0000 | 0x08);
    sb_str(b, "pc.ram");
    sb_raw(b, page, 4096);
    memcpy(exp_ram, page, 4096);
    sb_be64(b, 0x1000 | 0x02 | 0x20);
    sb_u8(b, 0);
    ks_page_pattern(page, 2);
    sb_be64(b, 0x2000 | 0x08 | 0x20);
    sb_raw(b, page, 4096);
    memcpy(exp_ram + 0x2000, page, 4096);
    ks_page_pattern(page, 3);
    {
        uint8_t z[8192];
        uLongf zl = sizeof(z);
        compress2(z, &zl, page, 4096, 6);
        sb_be64(b, 0x0000 | 0x100);
        sb_str(b, "vga");
        sb_be32(b, (uint32_t)zl);
        sb_raw(b, z, zl);
        memcpy(exp_vga, page, 4096);
    }
    sb_be64(b, 0x200); /* MULTIFD_FLUSH */
    sb_be64(b, 0x10);
    sb_footer(b, 2);

    /* PART: XBZRLE over page 0 and page 2 */
    sb_part(b, 0x02, 2);
    {
        /* zrun 100, nzrun 4 x 0xaa */
        static const uint8_t e1[] = { 100, 4, 0xaa, 0xaa, 0xaa, 0xaa };
        sb_be64(b, 0x0000 | 0x40);
        sb_str(b, "pc.ram");
        sb_u8(b, 1);
        sb_be16(b, sizeof(e1));
        sb_raw(b, e1, sizeof(e1));
        memset(exp_ram + 100, 0xaa, 4);
        /* zrun 1001 (two-byte ULEB128), nzrun 1 x 0x55, zrun 3, nzrun 2 */
        static const uint8_t e2[] = { 0xe9, 0x07, 1, 0x55, 3, 2, 0x66, 0x67 };
        sb_be64(b, 0x2000 | 0x40 | 0x20);
        sb_u8(b, 1);
        sb_be16(b, sizeof(e2));
        sb_raw(b, e2, sizeof(e2));
        exp_ram[0x2000 + 1001] = 0x55;
        exp_ram[0x2000 + 1005] = 0x66;
        exp_ram[0x2000 + 1006] = 0x67;
    }
    sb_be64(b, 0x10);
    sb_footer(b, 2);

    /* END: the last page, and page 2 zeroed again */
    sb_part(b, 0x03, 2);
    ks_page_pattern(page, 4);
    sb_be64(b, 0xf000 | 0x08);
    sb_str(b, "pc.ram");
    sb_raw(b, page, 4096);
    memcpy(exp_ram + 0xf000, page, 4096);
    sb_be64(b, 0x2000 | 0x02 | 0x20);
    sb_u8(b, 0);
    memset(exp_ram + 0x2000, 0, 4096);
    sb_be64(b, 0x10);
    sb_footer(b, 2);

    /* the device */
    sb_start(b, 0x04, 3, "dev", 0, 2);
    sb_be32(b, 0xdeadbeef);
    sb_be16(b, 0xfffe);            /* -2 */
    sb_u8(b, 1);
    sb_be64(b, 1);
    sb_be64(b, 2);
    sb_be64(b, 0x8000000000000000ull);
    sb_raw(b, "\x01\x02\x03\x04\x05", 5);
    sb_u8(b, 0x30);                 /* NULL pointer marker */
    sb_str(b, "x-ignore-shared");
    sb_u8(b, 9);                    /* s.x */
    sb_u8(b, 0x05);
    sb_str(b, "inner/sub");
    sb_be32(b, 1);
    sb_be16(b, 0x1234);             /* s.y */
    sb_u8(b, 0x80);                 /* e */
    sb_u8(b, 0x05);
    sb_str(b, "dev/extra");
    sb_be32(b, 1);
    sb_be32(b, 0xffffffff);         /* z = -1 */
    sb_footer(b, 3);

    /* PACKAGED: a nested stream with the pkg device and its own EOF */
    {
        Sb p = { 0 };
        sb_start(&p, 0x04, 4, "pkg", 0, 1);
        sb_u8(&p, 0x42);
        sb_footer(&p, 4);
        sb_u8(&p, 0x00);
        sb_u8(b, 0x08);
        sb_be16(b, 7);
        sb_be16(b, 4);
        sb_be32(b, (uint32_t)p.len);
        sb_raw(b, p.d, p.len);
        sb_free(&p);
    }
    sb_end(b, KS_DESC);
}

/* ---------------------------------------------------------------- device-only streams */

/* A stream cut out of a real one `d` (analyzed as `a`, from a file): its
 * header and configuration, the device sections secs[from..to) (each one
 * FULL record, in stream order) and EOF; no RAM, no description. Read with
 * the original's description (--desc), it decodes those devices exactly as
 * the original did: small inputs that reach deep into real device
 * layouts, for mutation and fuzzing. NULL if a section is not one record. */
static inline uint8_t *devices_only(const uint8_t *d, An *a, size_t from, size_t to,
                                    size_t *out_len)
{
    size_t head = (size_t)a->secs[0]->first_off, n = head;
    for (size_t i = from; i < to; i++) {
        AnSection *s = a->secs[i];
        if (s->kind != SEC_DEVICE || s->count[AN_ST_FULL] != 1 || s->count[AN_ST_START])
            return NULL;
        n += (size_t)s->bytes;
    }
    uint8_t *o = malloc(n + 1);
    memcpy(o, d, head);
    size_t at = head;
    for (size_t i = from; i < to; i++) {
        memcpy(o + at, d + a->secs[i]->first_off, (size_t)a->secs[i]->bytes);
        at += (size_t)a->secs[i]->bytes;
    }
    o[at++] = 0x00;
    *out_len = at;
    return o;
}

/* ---------------------------------------------------------------- fixture checks */

/* The 64 KiB the fixture script loads at 1 MiB (its LCG). */
static inline void fixture_pattern(uint8_t *out)
{
    uint32_t x = 12345;
    for (int i = 0; i < 65536; i++) {
        x = x * 1103515245u + 12345u;
        out[i] = (uint8_t)(x >> 24);
    }
}

/* Every section decoded; every device of the description present. */
static inline void check_all_decoded(const char *path, An *a)
{
    T_ASSERT(!a->failed);
    if (a->failed)
        printf("# %s: %s\n", path, a->err);
    T_ASSERT(a->vmdesc != NULL);
    T_EQ_INT(count_kind(a, SEC_OPAQUE), 0);
    T_EQ_INT(count_kind(a, SEC_RAM), 1);
    for (size_t i = 0; i < a->nsecs; i++) {
        AnSection *s = a->secs[i];
        if (s->kind == SEC_OPAQUE)
            printf("# %s: undecoded '%s': %s\n", path, s->label, s->why ? s->why : "");
        if (s->kind == SEC_DEVICE)
            T_ASSERT(json_is_object(s->value));
    }
    json_t *devs = json_object_get(a->vmdesc, "devices");
    size_t i;
    json_t *d;
    json_array_foreach(devs, i, d) {
        const char *n = json_string_value(json_object_get(d, "name"));
        uint32_t inst = (uint32_t)json_integer_value(json_object_get(d, "instance_id"));
        AnSection *s = find_section(a, n, inst);
        T_ASSERT(s && s->kind == SEC_DEVICE && s->value);
    }
    T_EQ_INT(a->nsecs, json_array_size(devs) + 1);
}

/* Extract pc.ram and compare with the pmemsave of the same guest over the
 * guest-physical ranges that are pc.ram: [0, 640 KiB) and [1 MiB, 32 MiB)
 * (in between, the PC's VGA window and BIOS shadows map other memory).
 * desc: the description to decode with (--desc), NULL for the stream's. */
static inline void check_ram_equals_pmem_desc(const char *mig, const char *pmem_gz,
                                              bool has_pattern, json_t *desc)
{
    char *dir = make_tmpdir();
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .extract_dir = dir,
                 .desc_override = desc };
    An *a = analyze_file(mig, &o);
    T_ASSERT(!a->failed);
    if (a->failed)
        printf("# %s: %s\n", mig, a->err);
    an_free(a);
    char path[4200];
    snprintf(path, sizeof(path), "%s/pc.ram", dir);
    size_t rl = 0, pl = 0;
    uint8_t *ram = read_file(path, &rl), *pm = read_gz(pmem_gz, &pl);
    T_ASSERT(ram && pm);
    T_EQ_INT(rl, 32 << 20);
    T_EQ_INT(pl, 32 << 20);
    if (ram && pm && rl == pl && rl == 32 << 20) {
        T_ASSERT(memcmp(ram, pm, 0xa0000) == 0);
        T_ASSERT(memcmp(ram + 0x100000, pm + 0x100000, rl - 0x100000) == 0);
        T_EQ_MEM(ram + 0x100000, pm + 0x100000, rl - 0x100000);
        if (has_pattern) {
            uint8_t pat[65536];
            fixture_pattern(pat);
            T_EQ_MEM(ram + 0x100000, pat, sizeof(pat));
        }
    }
    free(ram);
    free(pm);
    rm_rf(dir);
    free(dir);
}

static inline void check_ram_equals_pmem(const char *mig, const char *pmem_gz,
                                         bool has_pattern)
{
    check_ram_equals_pmem_desc(mig, pmem_gz, has_pattern, NULL);
}

/* The real QEMU 7.2 streams: tests/fixtures/ (scripts/make-qemu-fixtures.sh
 * makes them; test_analyze_qemu_live makes them afresh). */
typedef struct QemuFixture {
    const char *name;        /* NAME.mig */
    const char *desc_from;   /* decode with this stream's description */
    bool pmem;               /* NAME.pmem.gz holds the guest's RAM */
    bool pattern;            /* the 64 KiB pattern at 1 MiB */
    uint64_t ram_total;      /* MEM_SIZE */
    const char *machine;
} QemuFixture;

static const QemuFixture qemu_fixtures[] = {
    { "qemu-pc", NULL, true, true, 34349056, "pc-i440fx-7.2" },
    { "qemu-q35", NULL, true, true, 34349056, "pc-q35-7.2" },
    { "qemu-xbzrle", NULL, true, false, 34086912, "pc-i440fx-7.2" },
    { "qemu-postcopy", "qemu-xbzrle", true, false, 34086912, "pc-i440fx-7.2" },
    { "qemu-compress", NULL, true, true, 34086912, "pc-i440fx-7.2" },
    { "qemu-shared", NULL, false, false, 34086912, "pc-i440fx-7.2" },
};
#define N_QEMU_FIXTURES (sizeof(qemu_fixtures) / sizeof(qemu_fixtures[0]))

/* The description a fixture is decoded with (new ref), NULL for its own. */
static inline json_t *fixture_desc(const char *dir, const QemuFixture *f)
{
    if (!f->desc_from)
        return NULL;
    char path[4200], err[512];
    snprintf(path, sizeof(path), "%s/%s.mig", dir, f->desc_from);
    json_t *d = an_desc_load_file(path, err, sizeof(err));
    if (!d)
        printf("# %s\n", err);
    return d;
}

/* What every real stream must give: every section decoded (with the
 * description it needs), --check passes, the machine and RAM size QEMU
 * had, and pc.ram equal to QEMU's pmemsave of the guest. */
static inline void check_qemu_fixture(const char *dir, const QemuFixture *f)
{
    char mig[4200], pm[4200];
    snprintf(mig, sizeof(mig), "%s/%s.mig", dir, f->name);
    snprintf(pm, sizeof(pm), "%s/%s.pmem.gz", dir, f->name);
    json_t *desc = fixture_desc(dir, f);
    T_ASSERT(!f->desc_from || desc);
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .desc_override = desc };
    An *a = analyze_file(mig, &o);
    check_all_decoded(mig, a);
    T_ASSERT(a->saw_eof);
    T_EQ_INT(a->footers, 1);
    T_ASSERT(a->has_config);
    T_EQ_STR(a->machine, f->machine);
    T_EQ_INT(a->ram.ps, 4096);
    T_EQ_INT(a->ram.total, f->ram_total);
    an_free(a);
    o.check = true;
    a = analyze_file(mig, &o);
    T_ASSERT(!a->failed);
    if (a->failed)
        printf("# --check %s: %s\n", mig, a->err);
    an_free(a);
    if (f->pmem)
        check_ram_equals_pmem_desc(mig, pm, f->pattern, desc);
    json_decref(desc);
}

/* ---------------------------------------------------------------- big streams */

/* A stream of any size, written as it is made (constant memory), for the
 * streaming tests and for measuring: one RAM block "pc.ram" of `mib` MiB,
 * sent in two passes of PART sections of 256 pages each, as QEMU does it.
 * Pass 1 sends every page as PAGE (contents big_page()); then a
 * MULTIFD_FLUSH; pass 2 sends every 7th page (pg % 7 == 3) as ZERO and
 * every 16th (pg % 16 == 5, when not zeroed) as an XBZRLE delta that
 * changes 8 bytes; then the END section, a device "dev" (a uint32), EOF and
 * the description. big_page_final() is what each page holds at the end. */
#define BIG_PER_SECTION 256

static inline void big_page(uint8_t *p, uint64_t pg)
{
    uint64_t *w = (uint64_t *)(void *)p;
    for (int i = 0; i < 512; i++)
        w[i] = pg * 0x9e3779b97f4a7c15ull + (uint64_t)i;
}

static inline bool big_zeroed(uint64_t pg) { return pg % 7 == 3; }
static inline bool big_patched(uint64_t pg) { return !big_zeroed(pg) && pg % 16 == 5; }
static inline size_t big_patch_off(uint64_t pg) { return (size_t)(pg % 500) * 8; }

static inline void big_page_final(uint8_t *p, uint64_t pg)
{
    if (big_zeroed(pg)) {
        memset(p, 0, 4096);
        return;
    }
    big_page(p, pg);
    if (big_patched(pg))
        memset(p + big_patch_off(pg), 0xa5, 8);
}

typedef struct BigOut {
    FILE *f;
    uint64_t bytes;
    bool err;
} BigOut;

static inline void big_raw(BigOut *o, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, o->f) != n)
        o->err = true;
    o->bytes += n;
}

static inline void big_be(BigOut *o, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    big_raw(o, b, (size_t)n);
}

static inline void big_u8(BigOut *o, uint8_t v) { big_raw(o, &v, 1); }

static inline void big_str(BigOut *o, const char *s)
{
    big_u8(o, (uint8_t)strlen(s));
    big_raw(o, s, strlen(s));
}

static inline void big_footer(BigOut *o, uint32_t id)
{
    big_u8(o, 0x7e);
    big_be(o, id, 4);
}

/* One pass over the pages for which want(pg) holds; `last` makes its final
 * section an END (0x03) record. */
static inline void big_pass(BigOut *o, uint64_t npages, int pass, bool last)
{
    uint8_t page[4096];
    uint64_t pg = 0;
    while (pg < npages) {
        uint64_t sent = 0;
        bool first = true;
        big_u8(o, 0x02);
        big_be(o, 2, 4);
        for (; pg < npages && sent < BIG_PER_SECTION; pg++) {
            uint64_t flags = first ? 0 : 0x20;
            if (pass == 1) {
                big_be(o, pg * 4096 | 0x08 | flags, 8);
                if (first)
                    big_str(o, "pc.ram");
                big_page(page, pg);
                big_raw(o, page, 4096);
            } else if (big_zeroed(pg)) {
                big_be(o, pg * 4096 | 0x02 | flags, 8);
                if (first)
                    big_str(o, "pc.ram");
                big_u8(o, 0);
            } else if (big_patched(pg)) {
                size_t off = big_patch_off(pg);
                uint8_t enc[16];
                size_t n = 0;
                if (off < 0x80) {
                    enc[n++] = (uint8_t)off;
                } else {
                    enc[n++] = (uint8_t)(0x80 | (off & 0x7f));
                    enc[n++] = (uint8_t)(off >> 7);
                }
                enc[n++] = 8;
                memset(enc + n, 0xa5, 8);
                n += 8;
                big_be(o, pg * 4096 | 0x40 | flags, 8);
                if (first)
                    big_str(o, "pc.ram");
                big_u8(o, 1);
                big_be(o, n, 2);
                big_raw(o, enc, n);
            } else {
                continue;
            }
            first = false;
            sent++;
        }
        if (pass == 1 && pg >= npages)
            big_be(o, 0x200, 8); /* MULTIFD_FLUSH at the end of the pass */
        big_be(o, 0x10, 8);
        big_footer(o, 2);
    }
    if (last) {
        /* the stop-and-copy RAM section: nothing left to send */
        big_u8(o, 0x03);
        big_be(o, 2, 4);
        big_be(o, 0x10, 8);
        big_footer(o, 2);
    }
}

#define BIG_DESC                                                              \
    "{\"page_size\": 4096, \"devices\": [{\"name\": \"dev\", \"instance_id\": " \
    "0, \"vmsd_name\": \"dev\", \"version\": 1, \"fields\": [{\"name\": "    \
    "\"v\", \"type\": \"uint32\", \"size\": 4}]}]}"

/* Write the whole stream; returns its length, or 0 on a write error.
 * one_pass: pass 1 only (every page once, as a paused guest's stream). */
static inline uint64_t big_stream_write(FILE *f, uint64_t mib, bool one_pass)
{
    BigOut o = { .f = f };
    uint64_t npages = mib << 8;
    big_be(&o, 0x5145564d, 4);
    big_be(&o, 3, 4);
    big_u8(&o, 0x07);
    big_be(&o, 3, 4);
    big_raw(&o, "big", 3);
    /* ram START: MEM_SIZE */
    big_u8(&o, 0x01);
    big_be(&o, 2, 4);
    big_str(&o, "ram");
    big_be(&o, 0, 4);
    big_be(&o, 4, 4);
    big_be(&o, (npages * 4096) | 0x04, 8);
    big_str(&o, "pc.ram");
    big_be(&o, npages * 4096, 8);
    big_be(&o, 0x10, 8);
    big_footer(&o, 2);
    big_pass(&o, npages, 1, one_pass);
    if (!one_pass)
        big_pass(&o, npages, 2, true);
    /* the device, EOF, the description */
    big_u8(&o, 0x04);
    big_be(&o, 3, 4);
    big_str(&o, "dev");
    big_be(&o, 0, 4);
    big_be(&o, 1, 4);
    big_be(&o, 0xc0ffee, 4);
    big_footer(&o, 3);
    big_u8(&o, 0x00);
    big_u8(&o, 0x06);
    big_be(&o, strlen(BIG_DESC), 4);
    big_raw(&o, BIG_DESC, strlen(BIG_DESC));
    if (fflush(f) != 0)
        o.err = true;
    return o.err ? 0 : o.bytes;
}

/* Pages of each kind big_stream_write sends for `mib` MiB. */
static inline void big_counts(uint64_t mib, uint64_t *normal, uint64_t *zero,
                              uint64_t *xbzrle)
{
    uint64_t npages = mib << 8;
    *normal = npages;
    *zero = *xbzrle = 0;
    for (uint64_t pg = 0; pg < npages; pg++) {
        *zero += big_zeroed(pg);
        *xbzrle += big_patched(pg);
    }
}

#endif
