/*
 * test_analyze_fixtures: the real QEMU 7.2 streams in tests/fixtures/
 * (analyze-test.h lists them; scripts/make-qemu-fixtures.sh makes them).
 *
 * For each: every section decodes (no undecoded section, every device of
 * the description present and decoded field by field), --check passes, the
 * pc.ram it extracts equals the guest memory QEMU dumped with pmemsave; the
 * same stream read as a pipe (description only at the end) decodes to the
 * same state; and a few decoded values are what QEMU's devices hold. Then
 * what each stream is there for: XBZRLE pages, a postcopy migration's
 * commands and package, zlib pages and a uuid, x-ignore-shared.
 */
#include "analyze/analyze-test.h"

static void test_every_fixture(void)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tests/fixtures", src_dir());
    for (size_t i = 0; i < N_QEMU_FIXTURES; i++)
        check_qemu_fixture(dir, &qemu_fixtures[i]);
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
    for (size_t i = 0; i < N_QEMU_FIXTURES; i++) {
        char name[64], path[4096];
        size_t len;
        if (qemu_fixtures[i].desc_from)
            continue; /* no description of its own to wait for */
        snprintf(name, sizeof(name), "%s.mig", qemu_fixtures[i].name);
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

/* A real postcopy migration's main channel: the return path opened, the
 * advise, PINGs, a discard of the pages dirtied since they were sent, the
 * package (LISTEN, the devices, RUN; no EOF inside, as QEMU 7.2 sends it),
 * then the pages the destination faulted on and asked for; no description.
 * Without --desc every device is reported undecoded, with the reason, and
 * the stream still checks; with the same VM's description all of it
 * decodes (test_every_fixture) and the RAM equals the guest's. */
static void test_real_postcopy(void)
{
    char path[4096], dpath[4096], err[512];
    json_t *desc = an_desc_load_file(fixture(dpath, sizeof(dpath), "qemu-xbzrle.mig"),
                                     err, sizeof(err));
    T_ASSERT(desc != NULL);
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true,
                 .desc_override = desc };
    An *a = analyze_file(fixture(path, sizeof(path), "qemu-postcopy.mig"), &o);
    T_ASSERT(!a->failed);
    if (a->failed)
        printf("# %s\n", a->err);
    T_EQ_INT(a->cmd_count[1], 1);   /* OPEN_RETURN_PATH */
    T_EQ_INT(a->cmd_count[3], 1);   /* POSTCOPY_ADVISE */
    T_EQ_INT(a->cmd_count[4], 1);   /* POSTCOPY_LISTEN, in the package */
    T_EQ_INT(a->cmd_count[5], 1);   /* POSTCOPY_RUN, in the package */
    T_EQ_INT(a->cmd_count[7], 1);   /* PACKAGED */
    T_ASSERT(a->cmd_count[6] >= 1); /* POSTCOPY_RAM_DISCARD */
    T_ASSERT(a->cmd_count[2] >= 2); /* PING */
    T_ASSERT(a->discard_ranges >= 1);
    T_ASSERT(a->postcopy);
    T_ASSERT(a->downtime_off < a->postcopy_off && a->postcopy_off < a->eof_off);
    T_ASSERT(a->stream_vmdesc == NULL);
    /* the 64 pages the guest kept writing came again after the switch */
    T_ASSERT(a->ram.resent >= 64);
    AnSection *cpu = find_section(a, "cpu", 0);
    T_ASSERT(cpu && cpu->value && cpu->downtime_bytes == cpu->bytes);
    an_free(a);

    o.desc_override = NULL;
    a = analyze_file(path, &o);
    T_ASSERT(!a->failed);
    T_EQ_INT(count_kind(a, SEC_DEVICE), 0);
    T_EQ_INT(count_kind(a, SEC_OPAQUE), a->nsecs - 1);
    AnSection *s = find_section(a, "cpu", 0);
    T_ASSERT(s && s->why && strstr(s->why, "pass --desc FILE"));
    an_free(a);
    json_decref(desc);
}

/* compress (QEMU < 9.1): zlib pages, pc.bios and the pattern among them;
 * validate-uuid: the configuration section's uuid subsection. */
static void test_real_compress_and_uuid(void)
{
    char path[4096];
    An *a = analyze_file(fixture(path, sizeof(path), "qemu-compress.mig"), NULL);
    T_ASSERT(!a->failed);
    T_ASSERT(a->ram.compressed >= 46 + 16);
    json_t *uuid = json_object_get(json_object_get(a->config, "configuration/uuid"), "uuid");
    T_EQ_STR(json_string_value(uuid), "12 34 56 78 9a bc de f0 11 22 33 44 55 66 77 88");
    an_free(a);
}

/* x-ignore-shared: the capability in the configuration, each block's GPA
 * in MEM_SIZE, and the shared RAM ("ram", the memfd backend) not sent. */
static void test_real_shared(void)
{
    char path[4096];
    An *a = analyze_file(fixture(path, sizeof(path), "qemu-shared.mig"), NULL);
    T_ASSERT(!a->failed);
    T_ASSERT(a->cap_ignore_shared);
    json_t *caps = json_object_get(json_object_get(a->config, "configuration/capabilities"),
                                   "capabilities");
    T_EQ_STR(json_string_value(json_array_get(caps, 0)), "x-ignore-shared");
    bool ram = false, bios = false;
    for (int i = 0; i < a->ram.nblocks; i++) {
        AnBlock *b = a->ram.blocks[i];
        T_ASSERT(b->has_mr_addr);
        if (!strcmp(b->name, "ram")) {
            ram = true;
            T_EQ_INT(b->length, 32 << 20);
            T_EQ_INT(b->mr_addr, 0);
            T_EQ_INT(b->zero + b->normal, 0);
        }
        if (!strcmp(b->name, "pc.bios")) {
            bios = true;
            T_EQ_INT(b->mr_addr, 0xfffc0000u);  /* 256 KiB below 4 GiB */
            T_ASSERT(b->normal > 0);
        }
    }
    T_ASSERT(ram && bios);
    an_free(a);
}

int main(void)
{
    T_RUN(test_every_fixture);
    T_RUN(test_machine_types);
    T_RUN(test_decoded_values);
    T_RUN(test_real_xbzrle);
    T_RUN(test_real_postcopy);
    T_RUN(test_real_compress_and_uuid);
    T_RUN(test_real_shared);
    T_RUN(test_pipe_same_state);
    T_RUN(test_desc_from_elsewhere);
    return t_done();
}
