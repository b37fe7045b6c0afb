/*
 * test_analyze_fixtures: the real QEMU 7.2 streams in tests/fixtures/.
 *
 * For each: every section decodes (no undecoded section, every device of
 * the description present and decoded field by field); the pc.ram it
 * extracts equals the guest memory QEMU dumped with pmemsave; the same
 * stream read as a pipe (description only at the end) decodes to the same
 * state; and a few decoded values are what QEMU's devices hold.
 */
#include "analyze/analyze-test.h"

static const char *const fixtures[] = { "qemu-pc", "qemu-q35", "qemu-xbzrle" };

static void test_every_section_decoded(void)
{
    for (size_t i = 0; i < 3; i++) {
        char name[64], path[4096];
        snprintf(name, sizeof(name), "%s.mig", fixtures[i]);
        fixture(path, sizeof(path), name);
        An *a = analyze_file(path, NULL);
        check_all_decoded(path, a);
        T_ASSERT(a->saw_eof);
        T_EQ_INT(a->footers, 1);
        T_ASSERT(a->has_config);
        T_EQ_INT(a->ram.ps, 4096);
        T_EQ_INT(a->ram.total, fixtures[i][5] == 'x' ? 34086912 : 34349056);
        an_free(a);
    }
}

static void test_machine_types(void)
{
    char path[4096];
    An *a = analyze_file(fixture(path, sizeof(path), "qemu-pc.mig"), NULL);
    T_EQ_STR(a->machine, "pc-i440fx-7.2");
    T_ASSERT(find_section(a, "0000:00:02.0/e1000", 0) != NULL);
    an_free(a);
    a = analyze_file(fixture(path, sizeof(path), "qemu-q35.mig"), NULL);
    T_EQ_STR(a->machine, "pc-q35-7.2");
    T_ASSERT(find_section(a, "0000:00:01.0/virtio-net", 0) != NULL);
    T_ASSERT(find_section(a, "0000:00:04.0/ehci", 0) != NULL);
    an_free(a);
}

/* A paused pc guest sits at the reset vector: eip 0xfff0, cs base
 * 0xffff0000 -- what QEMU's x86 CPU holds after reset. */
static void test_decoded_values(void)
{
    char path[4096];
    An *a = analyze_file(fixture(path, sizeof(path), "qemu-pc.mig"), NULL);
    AnSection *cpu = find_section(a, "cpu", 0);
    T_ASSERT(cpu && cpu->value);
    if (cpu && cpu->value) {
        T_EQ_STR(json_string_value(json_object_get(cpu->value, "env.eip")),
                 "0x000000000000fff0");
        json_t *regs = json_object_get(cpu->value, "env.regs");
        T_EQ_INT(json_array_size(regs), 16);
        json_t *segs = json_object_get(cpu->value, "env.segs");
        T_EQ_INT(json_array_size(segs), 6);
        json_t *cs = json_array_get(segs, 1);
        T_EQ_STR(json_string_value(json_object_get(cs, "base")), "0x00000000ffff0000");
        T_EQ_STR(json_string_value(json_object_get(cs, "selector")), "0x0000f000");
    }
    /* subsections decode under their own names */
    bool found_sub = false;
    for (size_t i = 0; i < a->nsecs; i++) {
        const char *k;
        json_t *v;
        if (!a->secs[i]->value)
            continue;
        json_object_foreach(a->secs[i]->value, k, v)
            if (strchr(k, '/') && json_is_object(v))
                found_sub = true;
    }
    T_ASSERT(found_sub);
    an_free(a);
}

static void test_ram_equals_pmemsave(void)
{
    for (size_t i = 0; i < 3; i++) {
        char n1[64], n2[64], mig[4096], pm[4096];
        snprintf(n1, sizeof(n1), "%s.mig", fixtures[i]);
        snprintf(n2, sizeof(n2), "%s.pmem.gz", fixtures[i]);
        check_ram_equals_pmem(fixture(mig, sizeof(mig), n1),
                              fixture(pm, sizeof(pm), n2), i < 2);
    }
}

/* The xbzrle fixture's later passes are XBZRLE pages of the 64 pages the
 * guest keeps writing; the pages must come out as pmemsave saw them. */
static void test_real_xbzrle(void)
{
    char path[4096];
    An *a = analyze_file(fixture(path, sizeof(path), "qemu-xbzrle.mig"), NULL);
    T_ASSERT(!a->failed);
    T_ASSERT(a->ram.xbzrle > 0);
    T_ASSERT(a->ram.passes >= 3);
    T_ASSERT(a->ram.resent >= a->ram.xbzrle);
    AnBlock *pcram = NULL;
    for (int i = 0; i < a->ram.nblocks; i++)
        if (!strcmp(a->ram.blocks[i]->name, "pc.ram"))
            pcram = a->ram.blocks[i];
    T_ASSERT(pcram && pcram->xbzrle == a->ram.xbzrle);
    an_free(a);
}

/* Read as a pipe, the description arrives last: device sections are kept
 * and decoded once it has come, to the same state as from the file. */
static void test_pipe_same_state(void)
{
    for (size_t i = 0; i < 3; i++) {
        char name[64], path[4096];
        size_t len;
        snprintf(name, sizeof(name), "%s.mig", fixtures[i]);
        uint8_t *data = read_file(fixture(path, sizeof(path), name), &len);
        T_ASSERT(data);
        if (!data)
            continue;
        An *f = analyze_mem(data, len, true, NULL);
        An *p = analyze_mem(data, len, false, NULL);
        T_ASSERT(!f->failed && !p->failed);
        T_ASSERT(f->vmdesc_early);
        T_ASSERT(!p->vmdesc_early);
        check_all_decoded(name, p);
        json_t *sf = an_state_tree(f), *sp = an_state_tree(p);
        T_ASSERT(json_equal(sf, sp));
        T_EQ_INT(f->ram.normal, p->ram.normal);
        T_EQ_INT(f->ram.xbzrle, p->ram.xbzrle);
        json_decref(sf);
        json_decref(sp);
        an_free(f);
        an_free(p);
        free(data);
    }
}

/* With the description given by --desc, a stream that has none decodes. */
static void test_desc_from_elsewhere(void)
{
    char path[4096];
    size_t len;
    uint8_t *data = read_file(fixture(path, sizeof(path), "qemu-pc.mig"), &len);
    An *full = analyze_mem(data, len, true, NULL);
    T_ASSERT(!full->failed && full->saw_eof);
    size_t cut = (size_t)full->eof_off + 1; /* EOF kept, description dropped */

    An *bare = analyze_mem(data, cut, false, NULL);
    T_ASSERT(!bare->failed);
    T_EQ_INT(count_kind(bare, SEC_DEVICE), 0);
    T_EQ_INT(count_kind(bare, SEC_OPAQUE), full->nsecs - 1);
    T_ASSERT(bare->secs[1]->why && strstr(bare->secs[1]->why, "--desc"));

    char err[512];
    json_t *desc = an_desc_load_file(path, err, sizeof(err));
    T_ASSERT(desc != NULL);
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .desc_override = desc };
    An *given = analyze_mem(data, cut, false, &o);
    T_ASSERT(!given->failed);
    T_EQ_INT(count_kind(given, SEC_OPAQUE), 0);
    json_t *a = an_state_tree(full), *b = an_state_tree(given);
    T_ASSERT(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    json_decref(desc);
    an_free(full);
    an_free(bare);
    an_free(given);
    free(data);
}

int main(void)
{
    T_RUN(test_every_section_decoded);
    T_RUN(test_machine_types);
    T_RUN(test_decoded_values);
    T_RUN(test_ram_equals_pmemsave);
    T_RUN(test_real_xbzrle);
    T_RUN(test_pipe_same_state);
    T_RUN(test_desc_from_elsewhere);
    return t_done();
}
