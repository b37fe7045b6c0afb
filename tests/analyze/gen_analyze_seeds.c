/*
 * gen_analyze_seeds: seed inputs for fuzz_analyze (see its header for the
 * mode byte that starts each one).
 *
 *   gen-analyze-seeds OUTDIR
 *
 * Writes: the kitchen sink of analyze-test.h (every record kind) read four
 * ways; every device section of the real QEMU fixtures cut out on its own
 * and in runs (decoded with the fixture's description, mode bits 3/4);
 * and a small complete stream whose description lists only its devices.
 */
#include "analyze/analyze-test.h"

static int nseeds;

static void put(const char *dir, const char *name, uint8_t mode,
                const uint8_t *d, size_t n)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/%s-%02x", dir, name, mode);
    uint8_t *b = malloc(n + 1);
    b[0] = mode;
    memcpy(b + 1, d, n);
    if (write_file(path, b, n + 1) < 0)
        fprintf(stderr, "cannot write %s\n", path);
    else
        nseeds++;
    free(b);
}

/* Sections [from, to) of a fixture and EOF, with a description that lists
 * just them: a complete small stream. */
static void small_complete(const char *dir, const char *name, const uint8_t *d,
                           An *a, size_t from, size_t to)
{
    size_t n;
    uint8_t *dev = devices_only(d, a, from, to, &n);
    if (!dev)
        return;
    json_t *desc = json_deep_copy(a->vmdesc), *keep = json_array();
    json_t *devs = json_object_get(desc, "devices");
    for (size_t i = from; i < to; i++)
        json_array_append(keep, an_find_device(a, a->secs[i]->name, a->secs[i]->instance));
    json_array_clear(devs);
    json_array_extend(devs, keep);
    char *js = json_dumps(desc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    Sb b = { 0 };
    sb_raw(&b, dev, n);
    sb_u8(&b, 0x06);
    sb_be32(&b, (uint32_t)strlen(js));
    sb_raw(&b, js, strlen(js));
    put(dir, name, 0x01, b.d, b.len);
    put(dir, name, 0x00, b.d, b.len);
    sb_free(&b);
    free(js);
    json_decref(keep);
    json_decref(desc);
    free(dev);
}

static void from_fixture(const char *dir, const char *fx, uint8_t desc_bit)
{
    char path[4096], name[300];
    int base = (int)(strchr(fx, '.') ? strchr(fx, '.') - fx : (long)strlen(fx));
    size_t len;
    uint8_t *d = read_file(fixture(path, sizeof(path), fx), &len);
    if (!d) {
        fprintf(stderr, "cannot read %s\n", path);
        return;
    }
    An *a = analyze_file(path, NULL);
    if (a->failed) {
        fprintf(stderr, "%s: %s\n", path, a->err);
        goto out;
    }
    /* each device alone, then runs of eight */
    for (size_t i = 1; i < a->nsecs; i++) {
        size_t n;
        uint8_t *s = devices_only(d, a, i, i + 1, &n);
        if (!s || n > 64 * 1024) { /* the fuzzer's -max_len */
            free(s);
            continue;
        }
        snprintf(name, sizeof(name), "%.*s-dev%03zu", base, fx, i);
        put(dir, name, desc_bit | 1, s, n);
        free(s);
    }
    for (size_t i = 1; i < a->nsecs; i += 8) {
        size_t n, to = i + 8 < a->nsecs ? i + 8 : a->nsecs;
        uint8_t *s = devices_only(d, a, i, to, &n);
        if (!s || n > 64 * 1024) {
            free(s);
            continue;
        }
        snprintf(name, sizeof(name), "%.*s-run%03zu", base, fx, i);
        put(dir, name, desc_bit, s, n);
        put(dir, name, desc_bit | 2, s, n);
        free(s);
    }
    snprintf(name, sizeof(name), "%.*s-small", base, fx);
    small_complete(dir, name, d, a, 1, a->nsecs < 5 ? a->nsecs : 5);
out:
    an_free(a);
    free(d);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen-analyze-seeds OUTDIR\n");
        return 2;
    }
    mkdir(argv[1], 0755);
    static uint8_t ram[65536], vga[8192];
    Sb b = { 0 };
    ks_build(&b, ram, vga);
    for (uint8_t m = 0; m < 8; m++)
        if (m != 2 && m != 6)
            put(argv[1], "kitchen-sink", m, b.d, b.len);
    sb_free(&b);
    from_fixture(argv[1], "qemu-pc.mig", 0x08);
    from_fixture(argv[1], "qemu-q35.mig", 0x10);
    printf("%d seeds in %s\n", nseeds, argv[1]);
    return nseeds ? 0 : 1;
}
