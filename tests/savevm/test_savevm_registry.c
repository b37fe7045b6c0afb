/*
 * test_savevm_registry.c: the SaveStateEntry registry -- instance ids,
 * duplicates, section ids, and the save order (priority, then registration),
 * asserted by the order in which sections appear in the written stream.
 */
#include "savevm-test.h"

typedef struct Tiny {
    uint8_t v;
} Tiny;

#define TINY_VMSD(var, nm, prio)                                               \
    static const VMStateDescription var = {                                    \
        .name = nm,                                                            \
        .version_id = 1,                                                       \
        .minimum_version_id = 1,                                               \
        .priority = prio,                                                      \
        .fields = (const VMStateField[]){                                      \
            VMSTATE_UINT8(v, Tiny),                                            \
            VMSTATE_END_OF_LIST(),                                             \
        },                                                                     \
    }

TINY_VMSD(vmsd_tiny, "tiny", MIG_PRI_DEFAULT);
TINY_VMSD(vmsd_iommu, "iommu", MIG_PRI_IOMMU);
TINY_VMSD(vmsd_pcibus, "pcibus", MIG_PRI_PCI_BUS);
TINY_VMSD(vmsd_gic, "gic", MIG_PRI_GICV3);

typedef struct Seen {
    char idstr[256];
    uint32_t instance, section_id;
} Seen;

/* Walk the FULL sections of a stream written from Tiny devices only
 * (header, 14-byte minimal configuration for a 4-byte machine type). */
static int walk_full_sections(const Buf *b, Seen *seen, int max)
{
    size_t p = 8 + 1 + 4 + 4; /* magic, version, 0x07, len, "test" */
    int n = 0;
    while (p < b->len && b->d[p] == QEMU_VM_SECTION_FULL && n < max) {
        const uint8_t *d = b->d + p;
        seen[n].section_id = (uint32_t)d[1] << 24 | d[2] << 16 | d[3] << 8 | d[4];
        uint8_t len = d[5];
        memcpy(seen[n].idstr, d + 6, len);
        seen[n].idstr[len] = 0;
        const uint8_t *q = d + 6 + len;
        seen[n].instance = (uint32_t)q[0] << 24 | q[1] << 16 | q[2] << 8 | q[3];
        p += 6 + len + 8 + 1 + 5; /* header, the uint8 body, footer */
        n++;
    }
    if (p >= b->len || b->d[p] != QEMU_VM_EOF)
        return -1;
    return n;
}

static Buf save_to_buf(FySaveState *s)
{
    Buf b;
    FyError *err = NULL;
    MemOut m = mem_out();
    if (fy_savevm_save_all(s, m.f, &err) < 0)
        T_FAIL("save: %s", fy_error_msg(err));
    fy_error_free(err);
    mem_out_finish(&m, &b);
    return b;
}

static void test_instance_ids(void)
{
    FySaveState *s = fy_savevm_new("test");
    Tiny t[8] = { { 0 } };
    FyError *err = NULL;

    T_EQ_INT(fy_register_vmstate(s, "x", FY_INSTANCE_ANY, &vmsd_tiny, &t[0], &err), 0);
    T_EQ_INT(fy_savevm_last_instance_id(s), 0);
    T_EQ_INT(fy_register_vmstate(s, "x", FY_INSTANCE_ANY, &vmsd_tiny, &t[1], &err), 0);
    T_EQ_INT(fy_savevm_last_instance_id(s), 1);
    T_EQ_INT(fy_register_vmstate(s, "x", 5, &vmsd_tiny, &t[2], &err), 0);
    T_EQ_INT(fy_savevm_last_instance_id(s), 5);
    /* ANY is one more than the highest, not the first gap. */
    T_EQ_INT(fy_register_vmstate(s, "x", FY_INSTANCE_ANY, &vmsd_tiny, &t[3], &err), 0);
    T_EQ_INT(fy_savevm_last_instance_id(s), 6);
    /* Instance ids are per idstr; "xx" is not "x". */
    T_EQ_INT(fy_register_vmstate(s, "xx", FY_INSTANCE_ANY, &vmsd_tiny, &t[4], &err), 0);
    T_EQ_INT(fy_savevm_last_instance_id(s), 0);
    T_EQ_INT(fy_register_savevm_live(s, "y", FY_INSTANCE_ANY, 1, &blob_handlers,
                                     &t[5], &err), 0);
    T_EQ_INT(fy_savevm_last_instance_id(s), 0);
    T_ASSERT(err == NULL);

    /* Unregistering the highest lets ANY reuse its number. */
    fy_unregister_savevm(s, "x", 6);
    T_EQ_INT(fy_savevm_entry_count(s), 5);
    T_EQ_INT(fy_register_vmstate(s, "x", FY_INSTANCE_ANY, &vmsd_tiny, &t[6], &err), 0);
    T_EQ_INT(fy_savevm_last_instance_id(s), 6);

    /* ANY removes every instance. */
    fy_unregister_savevm(s, "x", FY_INSTANCE_ANY);
    T_EQ_INT(fy_savevm_entry_count(s), 2);
    fy_savevm_free(s);
}

static void test_duplicates_and_bad_input(void)
{
    FySaveState *s = fy_savevm_new("test");
    Tiny t[4] = { { 0 } };
    FyError *err = NULL;
    char longname[300];

    T_EQ_INT(fy_register_vmstate(s, "dev", 3, &vmsd_tiny, &t[0], &err), 0);
    T_EQ_INT(fy_register_vmstate(s, "dev", 3, &vmsd_tiny, &t[1], &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "'dev' instance 3 is already registered");
    T_EQ_INT(fy_savevm_last_instance_id(s), -1);
    fy_error_clear(&err);

    /* A handler entry collides with a vmsd entry of the same key. */
    T_EQ_INT(fy_register_savevm_live(s, "dev", 3, 1, &blob_handlers, &t[1], &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "already registered");
    fy_error_clear(&err);

    memset(longname, 'a', 256);
    longname[256] = 0;
    T_EQ_INT(fy_register_vmstate(s, longname, 0, &vmsd_tiny, &t[2], &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "1 to 255 bytes");
    fy_error_clear(&err);
    longname[255] = 0; /* 255 is fine */
    T_EQ_INT(fy_register_vmstate(s, longname, 0, &vmsd_tiny, &t[2], &err), 0);
    T_EQ_INT(fy_register_vmstate(s, "", 0, &vmsd_tiny, &t[3], &err), -1);
    fy_error_clear(&err);
    T_EQ_INT(fy_register_vmstate(s, "neg", -7, &vmsd_tiny, &t[3], &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "invalid instance id -7");
    fy_error_clear(&err);
    T_EQ_INT(fy_register_savevm_live(s, "h", 0, 1, NULL, NULL, &err), -1);
    fy_error_clear(&err);
    T_EQ_INT(fy_savevm_entry_count(s), 2);
    fy_savevm_free(s);

    /* Machine types must fit the configuration. */
    memset(longname, 'm', 200);
    longname[200] = 0;
    T_ASSERT(fy_savevm_new(longname) == NULL);
}

static void test_priority_then_registration_order(void)
{
    FySaveState *s = fy_savevm_new("test");
    Tiny t[8];
    FyError *err = NULL;
    static const struct {
        const char *id;
        const VMStateDescription *vmsd;
    } regs[] = {
        { "a", &vmsd_tiny }, { "b", &vmsd_iommu }, { "c", &vmsd_tiny },
        { "d", &vmsd_gic }, { "e", &vmsd_pcibus }, { "f", &vmsd_iommu },
        { "g", &vmsd_tiny },
    };
    for (int i = 0; i < 7; i++) {
        t[i].v = (uint8_t)i;
        fy_register_vmstate(s, regs[i].id, 0, regs[i].vmsd, &t[i], &err);
    }
    /* A handler entry has the default priority: after the others. */
    Blob blob = { .len = 0 };
    fy_register_savevm_live(s, "h", 0, 1, &blob_handlers, &blob, &err);
    T_ASSERT(err == NULL);
    fy_error_free(err);

    /* entry_info gives the save order... */
    const char *want = "debfacgh";
    uint32_t want_ids[] = { 3, 4, 1, 5, 0, 2, 6, 7 };
    T_EQ_INT(fy_savevm_entry_count(s), 8);
    for (int i = 0; i < 8; i++) {
        FySaveEntryInfo info;
        T_EQ_INT(fy_savevm_entry_info(s, i, &info), 0);
        T_ASSERT(info.idstr[0] == want[i]);
        T_EQ_INT(info.section_id, want_ids[i]);
        T_ASSERT((info.vmsd == NULL) == (want[i] == 'h'));
    }
    FySaveEntryInfo info;
    T_EQ_INT(fy_savevm_entry_info(s, 8, &info), -1);
    T_EQ_INT(fy_savevm_entry_info(s, -1, &info), -1);

    /* ...and the stream follows it, each section with its own id. The
     * handler "h" has a body of 4 + 0 bytes, so walk only the Tiny ones. */
    fy_unregister_savevm(s, "h", 0);
    Buf b = save_to_buf(s);
    Seen seen[8];
    int n = walk_full_sections(&b, seen, 8);
    T_EQ_INT(n, 7);
    for (int i = 0; i < n && i < 7; i++) {
        T_ASSERT(seen[i].idstr[0] == want[i] && seen[i].idstr[1] == 0);
        T_EQ_INT(seen[i].section_id, want_ids[i]);
        T_EQ_INT(seen[i].instance, 0);
    }
    buf_free(&b);
    fy_savevm_free(s);
}

static void test_section_ids_not_reused(void)
{
    FySaveState *s = fy_savevm_new("test");
    Tiny t[4] = { { 0 } };
    FyError *err = NULL;
    FySaveEntryInfo info;

    fy_register_vmstate(s, "p", 0, &vmsd_tiny, &t[0], &err);
    fy_register_vmstate(s, "q", 0, &vmsd_tiny, &t[1], &err);
    fy_unregister_savevm(s, "p", 0);
    fy_register_vmstate(s, "r", 0, &vmsd_tiny, &t[2], &err);
    T_ASSERT(err == NULL);
    T_EQ_INT(fy_savevm_entry_info(s, 0, &info), 0);
    T_EQ_STR(info.idstr, "q");
    T_EQ_INT(info.section_id, 1);
    T_EQ_INT(fy_savevm_entry_info(s, 1, &info), 0);
    T_EQ_STR(info.idstr, "r");
    T_EQ_INT(info.section_id, 2);
    T_ASSERT(info.opaque == &t[2]);
    T_EQ_INT(info.version_id, 1);

    /* Two VMs in one process number their sections independently. */
    FySaveState *s2 = fy_savevm_new("test");
    fy_register_vmstate(s2, "z", 0, &vmsd_tiny, &t[3], &err);
    T_EQ_INT(fy_savevm_entry_info(s2, 0, &info), 0);
    T_EQ_INT(info.section_id, 0);
    fy_savevm_free(s2);
    fy_savevm_free(s);
}

/* Instances of one idstr are told apart on load by their instance id: a
 * destination that registered them in the other order still gets each
 * device's own state. */
static void test_load_by_name_and_instance(void)
{
    FySaveState *src = fy_savevm_new("test"), *dst = fy_savevm_new("test");
    Tiny a = { 11 }, b = { 22 }, c = { 33 }, da = { 0 }, db = { 0 }, dc = { 0 };
    FyError *err = NULL;

    fy_register_vmstate(src, "x", 0, &vmsd_tiny, &a, &err);
    fy_register_vmstate(src, "x", 1, &vmsd_tiny, &b, &err);
    fy_register_vmstate(src, "y", 0, &vmsd_iommu, &c, &err);
    fy_register_vmstate(dst, "y", 0, &vmsd_iommu, &dc, &err);
    fy_register_vmstate(dst, "x", 1, &vmsd_tiny, &db, &err);
    fy_register_vmstate(dst, "x", 0, &vmsd_tiny, &da, &err);
    T_ASSERT(err == NULL);
    Buf buf = save_to_buf(src);
    char *msg = NULL;
    T_EQ_INT(load_buf(dst, buf.d, buf.len, NULL, NULL, &msg), 0);
    if (msg)
        T_FAIL("%s", msg);
    free(msg);
    T_EQ_INT(da.v, 11);
    T_EQ_INT(db.v, 22);
    T_EQ_INT(dc.v, 33);
    buf_free(&buf);
    fy_savevm_free(src);
    fy_savevm_free(dst);
}

int main(void)
{
    T_RUN(test_instance_ids);
    T_RUN(test_duplicates_and_bad_input);
    T_RUN(test_priority_then_registration_order);
    T_RUN(test_section_ids_not_reused);
    T_RUN(test_load_by_name_and_instance);
    return t_done();
}
