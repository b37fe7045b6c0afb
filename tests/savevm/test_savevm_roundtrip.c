/*
 * test_savevm_roundtrip.c: whole VMs saved and loaded -- every device's
 * state on the destination equals the source's; hooks, setup/cleanup,
 * inactive entries, pending sums, the rate limit, a postcopy-shaped stream
 * with a PACKAGED command, and a stream over a real socket pair.
 */
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "savevm-test.h"

typedef struct HookLog {
    int sections;
    int full_before_devices_begin;
    int devices_begin;
    int non_full_at_begin;
    char order[64][40];
    int n;
    int commands[16];
    int ncmd;
    FySaveState *s;      /* for PACKAGED */
    const FyLoadHooks *self;
    FyLoadResult *res;
} HookLog;

static void log_section(void *opaque, const char *idstr, int instance_id,
                        uint8_t type)
{
    HookLog *h = opaque;
    if (h->n < 64)
        snprintf(h->order[h->n++], sizeof(h->order[0]), "%c:%s:%d",
                 "?SPEF"[type <= 4 ? type : 0], idstr, instance_id);
    h->sections++;
    if (type == QEMU_VM_SECTION_FULL && !h->devices_begin)
        h->full_before_devices_begin++;
}

static void log_devices_begin(void *opaque)
{
    HookLog *h = opaque;
    h->devices_begin++;
    h->non_full_at_begin = h->sections;
}

static void test_roundtrip_whole_vm(void)
{
    Vm src, dst;
    Buf b;
    char *msg = NULL;
    HookLog h = { 0 };
    FyLoadHooks hooks = { .opaque = &h, .section_loaded = log_section,
                          .devices_begin = log_devices_begin };
    FyLoadResult res;

    vm_init(&src, "pc-q35-7.2", 7);
    vm_init(&dst, "pc-q35-7.2", 0);
    T_EQ_INT(vm_save(&src, &b, &msg), 0);
    if (msg)
        T_FAIL("save: %s", msg);
    free(msg);
    T_EQ_INT(src.iter.setups, 1);
    T_EQ_INT(src.iter.iterates, 6); /* 40 values, 7 per round */
    T_EQ_INT(src.iter.completes, 1);
    T_EQ_INT(src.iter.cleanups, 1);

    T_EQ_INT(load_buf(dst.s, b.d, b.len, &hooks, &res, &msg), 0);
    if (msg)
        T_FAIL("load: %s", msg);
    free(msg);
    vm_assert_equal(&src, &dst);
    T_EQ_INT(dst.iter.load_setups, 1);
    T_EQ_INT(dst.iter.load_cleanups, 1);
    T_EQ_INT(dst.blob.loaded_version, 2);

    /* START, 6 PART, END, then 5 FULL; devices_begin once, before them. */
    T_EQ_INT(h.sections, 13);
    T_EQ_INT(h.devices_begin, 1);
    T_EQ_INT(h.non_full_at_begin, 8);
    T_EQ_INT(h.full_before_devices_begin, 0);
    T_EQ_STR(h.order[0], "S:iter:0");
    T_EQ_STR(h.order[1], "P:iter:0");
    T_EQ_STR(h.order[7], "E:iter:0");
    T_EQ_STR(h.order[8], "F:cpu:0");
    T_EQ_STR(h.order[9], "F:allkinds:0");
    T_EQ_STR(h.order[10], "F:cpu:1");
    T_EQ_STR(h.order[11], "F:allkinds:1");
    T_EQ_STR(h.order[12], "F:blob:0");

    /* The description came back, and EOF is where it should be. */
    T_ASSERT(res.vmdesc != NULL);
    T_EQ_INT(json_array_size(json_object_get(res.vmdesc, "devices")), 5);
    T_EQ_INT(b.d[res.eof_offset], QEMU_VM_EOF);
    T_EQ_INT(b.d[res.eof_offset + 1], QEMU_VM_VMDESCRIPTION);
    uint32_t jlen = (uint32_t)b.d[res.eof_offset + 2] << 24 |
                    b.d[res.eof_offset + 3] << 16 |
                    b.d[res.eof_offset + 4] << 8 | b.d[res.eof_offset + 5];
    T_EQ_INT(res.eof_offset + 6 + jlen, b.len);
    T_ASSERT(!res.stopped_by_hook);
    json_decref(res.vmdesc);

    /* Loading the same stream twice works: per-load state is reset. */
    dst.iter.loads = 0;
    T_EQ_INT(load_buf(dst.s, b.d, b.len, NULL, NULL, NULL), 0);
    T_EQ_INT(dst.iter.load_setups, 2);
    T_EQ_INT(dst.iter.load_cleanups, 2);
    vm_assert_equal(&src, &dst);

    buf_free(&b);
    vm_free(&src);
    vm_free(&dst);
}

enum { SRC = 1, DST = 2, BOTH = 3 };

static void roundtrip_with(void (*tweak)(FySaveVMConfig *c), int which)
{
    Vm src, dst;
    Buf b;
    char *msg = NULL;

    vm_init(&src, "pc", 3);
    vm_init(&dst, "pc", 0);
    if (which & SRC)
        tweak(fy_savevm_config(src.s));
    if (which & DST)
        tweak(fy_savevm_config(dst.s));
    T_EQ_INT(vm_save(&src, &b, NULL), 0);
    T_EQ_INT(load_buf(dst.s, b.d, b.len, NULL, NULL, &msg), 0);
    if (msg)
        T_FAIL("load: %s", msg);
    free(msg);
    vm_assert_equal(&src, &dst);
    buf_free(&b);
    vm_free(&src);
    vm_free(&dst);
}

static void no_footer(FySaveVMConfig *c) { c->send_section_footer = false; }
static void no_config(FySaveVMConfig *c) { c->send_configuration = false; }
static void no_vmdesc(FySaveVMConfig *c) { c->send_vmdesc = false; }
static void all_subsections(FySaveVMConfig *c)
{
    c->target_page_bits = 16;
    c->cap_mapped_ram = true;
    c->cap_x_ignore_shared = true;
    c->validate_uuid = true;
    c->uuid[3] = 0x77;
}

static void test_roundtrip_config_variants(void)
{
    roundtrip_with(no_footer, BOTH);
    roundtrip_with(no_config, BOTH);
    roundtrip_with(no_vmdesc, BOTH);
    roundtrip_with(all_subsections, BOTH);
    /* A destination that sends no configuration still checks one it gets;
     * one that sends no description leaves the source's unread; a source
     * that sends none is fine for a destination that would. */
    roundtrip_with(no_config, DST);
    roundtrip_with(no_vmdesc, DST);
    roundtrip_with(no_vmdesc, SRC);
}

/* The destination registered its devices in another order (so its section
 * ids differ): loading goes by (idstr, instance). */
static void test_roundtrip_other_registration_order(void)
{
    Vm src;
    Buf b;
    char *msg = NULL;
    FyError *err = NULL;

    vm_init(&src, "pc", 11);
    T_EQ_INT(vm_save(&src, &b, NULL), 0);

    FySaveState *d = fy_savevm_new("pc");
    Cpu cpu[2];
    AllKinds ak[2];
    Blob blob = { 0 };
    Iter it;
    iter_init(&it, 0, 1);
    allkinds_init(&ak[0]);
    allkinds_init(&ak[1]);
    memset(cpu, 0, sizeof(cpu));
    fy_register_savevm_live(d, "blob", 0, 2, &blob_handlers, &blob, &err);
    fy_register_vmstate(d, "allkinds", 1, &vmstate_allkinds, &ak[1], &err);
    fy_register_vmstate(d, "cpu", 1, &vmstate_cpu, &cpu[1], &err);
    fy_register_vmstate(d, "allkinds", 0, &vmstate_allkinds, &ak[0], &err);
    fy_register_vmstate(d, "cpu", 0, &vmstate_cpu, &cpu[0], &err);
    fy_register_savevm_live(d, "iter", 0, 1, &iter_handlers, &it, &err);
    T_ASSERT(err == NULL);
    T_EQ_INT(load_buf(d, b.d, b.len, NULL, NULL, &msg), 0);
    if (msg)
        T_FAIL("load: %s", msg);
    free(msg);
    for (int i = 0; i < 2; i++) {
        T_ASSERT(json_same(vmstate_to_json(&vmstate_cpu, &src.cpu[i]),
                           vmstate_to_json(&vmstate_cpu, &cpu[i])));
        T_ASSERT(json_same(vmstate_to_json(&vmstate_allkinds, &src.ak[i]),
                           vmstate_to_json(&vmstate_allkinds, &ak[i])));
        allkinds_free(&ak[i]);
    }
    T_EQ_MEM(it.vals, src.iter.vals, sizeof(it.vals));
    T_EQ_MEM(blob.data, src.blob.data, src.blob.len);
    fy_savevm_free(d);
    buf_free(&b);
    vm_free(&src);
}

/* is_active false: no sections at all; is_active_iterate false: START and
 * END but no PART. */
static void test_inactive_entries(void)
{
    Vm src, dst;
    Buf b;
    HookLog h = { 0 };
    FyLoadHooks hooks = { .opaque = &h, .section_loaded = log_section };

    vm_init(&src, "pc", 5);
    vm_init(&dst, "pc", 0);
    src.iter.iterate_active = false;
    T_EQ_INT(vm_save(&src, &b, NULL), 0);
    T_EQ_INT(src.iter.iterates, 0);
    T_EQ_INT(load_buf(dst.s, b.d, b.len, &hooks, NULL, NULL), 0);
    T_EQ_STR(h.order[0], "S:iter:0");
    T_EQ_STR(h.order[1], "E:iter:0");
    T_EQ_INT(h.sections, 7);
    vm_assert_equal(&src, &dst);
    buf_free(&b);
    vm_free(&dst);

    memset(&h, 0, sizeof(h));
    vm_init(&dst, "pc", 0);
    src.iter.active = false;
    src.iter.setups = src.iter.completes = 0;
    T_EQ_INT(vm_save(&src, &b, NULL), 0);
    T_EQ_INT(src.iter.setups + src.iter.iterates + src.iter.completes, 0);
    T_EQ_INT(load_buf(dst.s, b.d, b.len, &hooks, NULL, NULL), 0);
    T_EQ_STR(h.order[0], "F:cpu:0");
    T_EQ_INT(h.sections, 5);
    T_EQ_INT(dst.iter.loads, 0);
    buf_free(&b);
    vm_free(&src);
    vm_free(&dst);
}

static void test_pending(void)
{
    FySaveState *s = fy_savevm_new("pc");
    Iter a, c;
    uint64_t must = 99, can = 99;

    iter_init(&a, 10, 1);
    iter_init(&c, 3, 1);
    fy_register_savevm_live(s, "a", 0, 1, &iter_handlers, &a, NULL);
    fy_register_savevm_live(s, "c", 0, 1, &iter_handlers, &c, NULL);
    fy_savevm_state_pending_estimate(s, &must, &can);
    T_EQ_INT(must, (10 + 3) * 12);
    T_EQ_INT(can, 2);
    c.active = false;
    fy_savevm_state_pending_exact(s, &must, &can);
    T_EQ_INT(must, 10 * 12);
    T_EQ_INT(can, 1);
    fy_savevm_free(s);
}

/* Over the rate limit, iterate sends nothing and says "not done". */
static void test_iterate_rate_limit(void)
{
    FySaveState *s = fy_savevm_new("pc");
    Iter a;
    MemOut m = mem_out();
    Buf b;

    iter_init(&a, 10, 1);
    fy_register_savevm_live(s, "a", 0, 1, &iter_handlers, &a, NULL);
    fy_stream_set_rate_limit(m.f, 1); /* a budget of 0 bytes per window */
    T_EQ_INT(fy_savevm_state_iterate(s, m.f, NULL), 0);
    T_EQ_INT(a.iterates, 0);
    fy_stream_set_rate_limit(m.f, 0);
    T_EQ_INT(fy_savevm_state_iterate(s, m.f, NULL), 0); /* 1 of 10 sent */
    T_EQ_INT(a.iterates, 1);
    mem_out_finish(&m, &b);
    T_EQ_INT(b.len, 5 + 12 + 4 + 5);
    buf_free(&b);
    fy_savevm_free(s);
}

/* ---- postcopy-shaped: START/PART, PACKAGED{LISTEN, FULL..., PING, RUN},
 * then PART/END in postcopy and EOF ---- */

static bool iter_has_postcopy(void *opaque) { return true; }

static const SaveVMHandlers iter_pc_handlers = {
    .save_setup = iter_save_setup,
    .save_live_iterate = iter_save_iterate,
    .save_live_complete_precopy = iter_save_complete,
    .save_live_complete_postcopy = iter_save_complete,
    .has_postcopy = iter_has_postcopy,
    .load_setup = iter_load_setup,
    .load_state = iter_load,
    .load_cleanup = iter_load_cleanup,
};

static int pc_command(void *opaque, FyStream *f, uint16_t cmd,
                      const uint8_t *payload, uint16_t len, FyError **errp)
{
    HookLog *h = opaque;
    if (h->ncmd < 16)
        h->commands[h->ncmd++] = cmd;
    if (cmd == MIG_CMD_POSTCOPY_RUN)
        return 1;
    if (cmd != MIG_CMD_PACKAGED)
        return 0;
    uint32_t n = (uint32_t)payload[0] << 24 | payload[1] << 16 |
                 payload[2] << 8 | payload[3];
    uint8_t *pkg = malloc(n ? n : 1);
    if (fy_get_buffer(f, pkg, n) != n) {
        free(pkg);
        fy_error_setg(errp, "package truncated");
        return -1;
    }
    FyStream *nested = mem_in(pkg, n);
    int ret = fy_loadvm_state_main(h->s, nested, h->self, h->res, errp);
    fy_stream_close(nested, NULL);
    free(pkg);
    return ret;
}

static void test_postcopy_package(void)
{
    Vm src, dst;
    FyError *err = NULL;
    MemOut m = mem_out(), pkg = mem_out();
    Buf b, p;

    vm_init(&src, "pc", 9);
    vm_init(&dst, "pc", 0);
    fy_unregister_savevm(src.s, "iter", 0);
    fy_unregister_savevm(dst.s, "iter", 0);
    fy_register_savevm_live(src.s, "iter", 0, 1, &iter_pc_handlers, &src.iter, &err);
    fy_register_savevm_live(dst.s, "iter", 0, 1, &iter_pc_handlers, &dst.iter, &err);
    src.iter.per_round = 5;
    /* an iterative entry without postcopy: it finishes at the switch */
    Iter late_src, late_dst;
    iter_init(&late_src, 5, 1);
    iter_init(&late_dst, 0, 1);
    fy_register_savevm_live(src.s, "late", 0, 1, &iter_handlers, &late_src, &err);
    fy_register_savevm_live(dst.s, "late", 0, 1, &iter_handlers, &late_dst, &err);

    /* source */
    T_EQ_INT(fy_savevm_state_header(src.s, m.f, &err), 0);
    fy_savevm_command_send(m.f, MIG_CMD_POSTCOPY_ADVISE, 0, NULL);
    T_EQ_INT(fy_savevm_state_setup(src.s, m.f, &err), 0);
    T_EQ_INT(fy_savevm_state_iterate(src.s, m.f, &err), 0);
    /* switch: iterable-only completion leaves postcopy entries alone */
    T_EQ_INT(fy_savevm_state_complete_iterable(src.s, m.f, true, &err), 0);
    T_EQ_INT(src.iter.completes, 0);
    T_EQ_INT(late_src.completes, 1);
    fy_savevm_command_send(pkg.f, MIG_CMD_POSTCOPY_LISTEN, 0, NULL);
    T_EQ_INT(fy_savevm_state_complete_devices(src.s, pkg.f, &err), 0);
    fy_savevm_send_ping(pkg.f, 0x42);
    fy_savevm_command_send(pkg.f, MIG_CMD_POSTCOPY_RUN, 0, NULL);
    mem_out_finish(&pkg, &p);
    fy_savevm_send_packaged(m.f, p.d, p.len);
    T_EQ_INT(fy_savevm_state_iterate_postcopy(src.s, m.f, &err), 0);
    T_EQ_INT(src.iter.iterates, 2);
    T_EQ_INT(late_src.iterates, 0); /* not iterated in postcopy */
    T_EQ_INT(fy_savevm_state_complete_postcopy(src.s, m.f, &err), 0);
    if (err)
        T_FAIL("save: %s", fy_error_msg(err));
    fy_error_clear(&err);
    fy_savevm_state_cleanup(src.s);
    mem_out_finish(&m, &b);

    /* destination: the main load stops at RUN inside the package... */
    HookLog h = { .s = dst.s };
    FyLoadResult res;
    FyLoadHooks hooks = { .opaque = &h, .command = pc_command,
                          .section_loaded = log_section };
    h.self = &hooks;
    h.res = &res;
    FyStream *f = mem_in(b.d, b.len);
    T_EQ_INT(fy_loadvm_state(dst.s, f, &hooks, &res, &err), 0);
    if (err)
        T_FAIL("load: %s", fy_error_msg(err));
    fy_error_clear(&err);
    T_ASSERT(res.stopped_by_hook);
    T_EQ_INT(dst.iter.load_cleanups, 0); /* still loading */
    T_EQ_INT(h.ncmd, 5);
    T_EQ_INT(h.commands[0], MIG_CMD_POSTCOPY_ADVISE);
    T_EQ_INT(h.commands[1], MIG_CMD_PACKAGED);
    T_EQ_INT(h.commands[2], MIG_CMD_POSTCOPY_LISTEN);
    T_EQ_INT(h.commands[3], MIG_CMD_PING);
    T_EQ_INT(h.commands[4], MIG_CMD_POSTCOPY_RUN);
    /* ...and the rest of the main stream (postcopy) loads to EOF. */
    res.stopped_by_hook = false;
    T_EQ_INT(fy_loadvm_state_main(dst.s, f, &hooks, &res, &err), 0);
    if (err)
        T_FAIL("load: %s", fy_error_msg(err));
    fy_error_clear(&err);
    T_EQ_INT(dst.iter.load_setups, 1);
    fy_loadvm_state_cleanup(dst.s);
    T_EQ_INT(dst.iter.load_cleanups, 1);
    T_EQ_INT(res.eof_offset + 1, b.len);
    vm_assert_equal(&src, &dst);
    T_EQ_INT(late_dst.count, 5);
    T_EQ_MEM(late_dst.vals, late_src.vals, sizeof(late_src.vals));
    fy_stream_close(f, NULL);

    buf_free(&b);
    buf_free(&p);
    vm_free(&src);
    vm_free(&dst);
}

/* ---- a real socket pair: the writer in a thread, the loader reading as
 * bytes arrive ---- */

typedef struct Writer {
    Vm *vm;
    FyChannel *c;
    int ret;
} Writer;

static void *writer_main(void *arg)
{
    Writer *w = arg;
    FyStream *f = fy_stream_new_output(w->c, true);
    w->ret = fy_savevm_save_all(w->vm->s, f, NULL);
    if (fy_stream_close(f, NULL) < 0)
        w->ret = -1;
    return NULL;
}

static void test_roundtrip_socketpair(void)
{
    Vm src, dst;
    FyChannel *a, *b;
    FyError *err = NULL;
    pthread_t th;

    vm_init(&src, "pc-q35-7.2", 21);
    vm_init(&dst, "pc-q35-7.2", 0);
    T_EQ_INT(fy_channel_socketpair(&a, &b, &err), 0);
    Writer w = { &src, a, -1 };
    pthread_create(&th, NULL, writer_main, &w);
    FyStream *f = fy_stream_new_input(b, true);
    FyLoadResult res;
    int ret = fy_loadvm_state(dst.s, f, NULL, &res, &err);
    pthread_join(th, NULL);
    T_EQ_INT(ret, 0);
    if (err)
        T_FAIL("load: %s", fy_error_msg(err));
    fy_error_free(err);
    T_EQ_INT(w.ret, 0);
    T_ASSERT(res.vmdesc != NULL);
    json_decref(res.vmdesc);
    vm_assert_equal(&src, &dst);
    fy_stream_close(f, NULL);
    vm_free(&src);
    vm_free(&dst);
}

/* ---- save-side errors name the section ---- */

static int fail_setup(FyStream *f, void *opaque, FyError **errp)
{
    fy_error_setg(errp, "boom");
    return -1;
}

static int failing_pre_save(void *opaque, FyError **errp)
{
    fy_error_setg(errp, "device busy");
    return -1;
}

static const VMStateDescription vmstate_busy = {
    .name = "busy",
    .version_id = 1,
    .pre_save = failing_pre_save,
    .fields = (const VMStateField[]){ VMSTATE_END_OF_LIST() },
};

static void test_save_errors(void)
{
    FySaveState *s = fy_savevm_new("pc");
    SaveVMHandlers h = { .save_setup = fail_setup };
    FyError *err = NULL;
    MemOut m = mem_out();
    Buf b;

    fy_register_savevm_live(s, "bad", 4, 1, &h, NULL, NULL);
    T_EQ_INT(fy_savevm_save_all(s, m.f, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL,
               "section 'bad' instance 4 (id 0): save_setup: boom");
    fy_error_clear(&err);
    mem_out_finish(&m, &b);
    buf_free(&b);
    fy_unregister_savevm(s, "bad", 4);

    int dummy = 0;
    fy_register_vmstate(s, "busy", 0, &vmstate_busy, &dummy, NULL);
    m = mem_out();
    T_EQ_INT(fy_savevm_save_all(s, m.f, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "section 'busy' instance 0 (id 1)");
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "device busy");
    fy_error_clear(&err);
    mem_out_finish(&m, &b);
    buf_free(&b);
    fy_savevm_free(s);
}

/* A transport that fails: the error says so, with strerror. */
static void test_save_to_broken_pipe(void)
{
    Vm src;
    int fds[2];
    FyError *err = NULL;

    signal(SIGPIPE, SIG_IGN);
    T_EQ_INT(pipe(fds), 0);
    close(fds[0]);
    FyChannel *c = fy_channel_fd_new(fds[1], "pipe:test", &err);
    FyStream *f = fy_stream_new_output(c, true);
    vm_init(&src, "pc", 4);
    T_EQ_INT(fy_savevm_save_all(src.s, f, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "Broken pipe");
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "pipe:test");
    T_EQ_INT(src.iter.cleanups, 1);
    fy_error_clear(&err);
    T_EQ_INT(fy_stream_close(f, &err), -1);
    fy_error_free(err);
    vm_free(&src);
}

int main(void)
{
    T_RUN(test_roundtrip_whole_vm);
    T_RUN(test_roundtrip_config_variants);
    T_RUN(test_roundtrip_other_registration_order);
    T_RUN(test_inactive_entries);
    T_RUN(test_pending);
    T_RUN(test_iterate_rate_limit);
    T_RUN(test_postcopy_package);
    T_RUN(test_roundtrip_socketpair);
    T_RUN(test_save_errors);
    T_RUN(test_save_to_broken_pipe);
    return t_done();
}
