/*
 * test_multifd_handover: local handover of RAM by file descriptor
 * (migration mode cpr-transfer) between two VMs in one process, over a
 * real unix socket with real SCM_RIGHTS.
 *
 *   live        a running source hands its memfds over; no page crosses
 *               the stream, the destination's blocks then ARE the source's
 *               memory (same inode, a write on one side shows on the
 *               other), device state equal; also with multifd on
 *   refused     tcp, file and exec URIs, a block that is not a shared
 *               memfd, a destination whose mode is normal, a destination
 *               whose block has another size, a peer that hangs up at
 *               once: each fails with a message that says why, and the
 *               source runs on
 *   rollback    the handover succeeds but the load fails later: the
 *               destination gives the source's memory back (fresh memfds)
 *               so it can never write into it
 */
#include <sys/socket.h>
#include <sys/un.h>

#include "mfd-mig.h"

static const TvmBlockSpec memfds[] = {
    { "pc.ram", 32 << 20, true },
    { "vga.vram", 4 << 20, true },
    { NULL, 0, false },
};

static const TvmBlockSpec memfds_small[] = {
    { "pc.ram", 16 << 20, true },
    { "vga.vram", 4 << 20, true },
    { NULL, 0, false },
};

static ino_t inode_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

static void set_mode(TestVM *vm, const char *mode)
{
    char js[128], e[512];
    snprintf(js, sizeof(js), "{\"mode\": \"%s\"}", mode);
    T_EQ_STR(mm_set_params(vm, js, e, sizeof(e)), "");
}

static void run_live(bool multifd)
{
    TestVM *src = tvm_new("src", memfds), *dst = tvm_new("dst", memfds);
    char e[512], uri[160];
    tvm_fill(src, 5);
    set_mode(src, "cpr-transfer");
    set_mode(dst, "cpr-transfer");
    if (multifd)
        T_ASSERT(mm_both(src, dst, "multifd", NULL));
    T_EQ_STR(mm_set_cap(src, "return-path", true, e, sizeof(e)), "");
    T_EQ_STR(mm_set_cap(dst, "return-path", true, e, sizeof(e)), "");
    tvm_run(src, true);
    /* Until the guest has written (a loaded host can keep its thread off
     * the CPU for longer than a fixed sleep). */
    for (int i = 0; i < 1000 && atomic_load(&src->writes) == 0; i++)
        tvm_sleep_ms(10);
    mm_unix_uri(uri, sizeof(uri));
    FyMigStatus s, d;
    tvm_migrate(src, dst, uri, uri, &s, &d);
    T_EQ_STR(fy_mig_status_name(s), "completed");
    T_EQ_STR(fy_mig_status_name(d), "completed");
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));
    T_ASSERT(atomic_load(&src->writes) > 0);
    /* No page travelled: the stream is the block list and the devices. */
    T_EQ_INT(mm_ram_int(src, "normal"), 0);
    T_EQ_INT(mm_ram_int(src, "duplicate"), 0);
    T_ASSERT(mm_ram_int(src, "transferred") < 64 * 1024);
    /* The destination maps the source's memory. */
    for (int i = 0; i < 2; i++) {
        T_ASSERT(inode_of(src->blocks[i].fd) != 0);
        T_EQ_INT(inode_of(src->blocks[i].fd), inode_of(dst->blocks[i].fd));
    }
    uint8_t *sp = src->blocks[0].host + 12345 * 64;
    uint8_t *dp = dst->blocks[0].host + 12345 * 64;
    *sp = (uint8_t)(*sp + 1);
    T_EQ_INT(*dp, *sp);
    tvm_free(src);
    tvm_free(dst);
}

static void test_live(void) { run_live(false); }
static void test_live_with_multifd(void) { run_live(true); }

static void test_refused_transports(void)
{
    TestVM *vm = tvm_new("vm", memfds);
    FyError *err = NULL;
    set_mode(vm, "cpr-transfer");
    const char *uris[] = { "tcp:127.0.0.1:4444", "file:/tmp/ferry-ho.mig",
                           "exec:cat > /dev/null" };
    for (int i = 0; i < 3; i++) {
        T_EQ_INT(fy_migrate(vm->mig, uris[i], false, &err), -1);
        T_CONTAINS(fy_error_msg(err), "migration mode 'cpr-transfer' hands "
                   "RAM over as file descriptors, which only a unix socket "
                   "carries");
        T_CONTAINS(fy_error_msg(err), uris[i]);
        fy_error_clear(&err);
    }
    T_EQ_INT(fy_migrate_incoming(vm->mig, "tcp:127.0.0.1:0", &err), -1);
    T_CONTAINS(fy_error_msg(err), "only a unix socket");
    fy_error_clear(&err);
    T_EQ_INT((int)fy_migration_status(vm->mig), MIGRATION_STATUS_NONE);
    tvm_free(vm);

    /* A private (non-memfd) block cannot be handed over. */
    vm = tvm_new("vm", NULL);
    set_mode(vm, "cpr-transfer");
    T_EQ_INT(fy_migrate(vm->mig, "unix:/tmp/ferry-nothing.sock", false, &err),
             -1);
    T_CONTAINS(fy_error_msg(err), "RAM block 'vga.vram' is not a shared "
               "memfd, so it cannot be handed over");
    fy_error_clear(&err);
    tvm_free(vm);
}

static void expect_both_fail(TestVM *src, TestVM *dst, char *se, char *de,
                             size_t len)
{
    char uri[160], e[256];
    /* With a return path the source hears of a load that fails late. */
    T_EQ_STR(mm_set_cap(src, "return-path", true, e, sizeof(e)), "");
    T_EQ_STR(mm_set_cap(dst, "return-path", true, e, sizeof(e)), "");
    mm_unix_uri(uri, sizeof(uri));
    FyMigStatus s, d;
    tvm_migrate(src, dst, uri, uri, &s, &d);
    T_EQ_STR(fy_mig_status_name(s), "failed");
    T_EQ_STR(fy_mig_status_name(d), "failed");
    tvm_query_str(src, "error-desc", se, len);
    tvm_query_str(dst, "error-desc", de, len);
    T_ASSERT(tvm_is_running(src));
}

static void test_destination_not_in_cpr_transfer(void)
{
    TestVM *src = tvm_new("src", memfds), *dst = tvm_new("dst", memfds);
    char se[1024], de[1024];
    set_mode(src, "cpr-transfer");
    tvm_run(src, false);
    expect_both_fail(src, dst, se, de, sizeof(se));
    T_CONTAINS(se, "the destination closed the handover channel without an "
               "answer (is its migration mode cpr-transfer?)");
    T_CONTAINS(de, "0x4659484f"); /* FYHO where QEVM was expected */
    /* Nothing was mapped over the destination. */
    T_ASSERT(inode_of(src->blocks[0].fd) != inode_of(dst->blocks[0].fd));
    tvm_free(src);
    tvm_free(dst);
}

/* A peer that accepts and hangs up at once, before, during or after our
 * writes (the order is the kernel's): whichever comes first, the source
 * fails with the hint, never a bare "Broken pipe", and runs on. */
static void test_destination_hangs_up(void)
{
    for (int round = 0; round < 3; round++) {
        TestVM *src = tvm_new("src", memfds);
        set_mode(src, "cpr-transfer");
        tvm_run(src, false);
        char path[108], uri[160], se[1024];
        tvm_path(path, sizeof(path), "hangup");
        snprintf(uri, sizeof(uri), "unix:%s", path);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
        unlink(path);
        T_EQ_INT(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
        T_EQ_INT(listen(l, 4), 0);
        FyError *err = NULL;
        T_EQ_INT(fy_migrate(src->mig, uri, false, &err), 0);
        fy_error_clear(&err);
        if (round > 0)  /* let the source write first, or not */
            tvm_sleep_ms(round * 20);
        int c = accept(l, NULL, NULL);
        T_ASSERT(c >= 0);
        close(c);
        T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 60000)),
                 "failed");
        tvm_query_str(src, "error-desc", se, sizeof(se));
        printf("# round %d: %s\n", round, se);
        T_CONTAINS(se, "handing RAM over: ");
        T_CONTAINS(se, "the destination closed the handover channel "
                   "without an answer (is its migration mode cpr-transfer?)");
        T_ASSERT(tvm_is_running(src));
        close(l);
        unlink(path);
        tvm_free(src);
    }
}

static void test_block_size_mismatch(void)
{
    TestVM *src = tvm_new("src", memfds), *dst = tvm_new("dst", memfds_small);
    char se[1024], de[1024];
    set_mode(src, "cpr-transfer");
    set_mode(dst, "cpr-transfer");
    tvm_run(src, false);
    expect_both_fail(src, dst, se, de, sizeof(se));
    T_CONTAINS(se, "the destination refused the RAM handover");
    T_CONTAINS(se, "RAM block 'pc.ram' is 0x2000000 bytes there, 0x1000000 "
               "here");
    T_CONTAINS(de, "handover: block record 0: RAM block 'pc.ram'");
    T_ASSERT(inode_of(src->blocks[1].fd) != inode_of(dst->blocks[1].fd));
    tvm_free(src);
    tvm_free(dst);
}

static void test_rollback_after_failed_load(void)
{
    TestVM *src = tvm_new("src", memfds), *dst = tvm_new("dst", memfds);
    char se[1024], de[1024];
    TestDev extra = { .counter = 3 };
    FyError *err = NULL;
    T_EQ_INT(fy_register_vmstate(src->ss, "extradev", 0,
                                 &vmstate_testdev_plain, &extra, &err), 0);
    tvm_fill(src, 8);
    set_mode(src, "cpr-transfer");
    set_mode(dst, "cpr-transfer");
    tvm_run(src, false);
    expect_both_fail(src, dst, se, de, sizeof(se));
    T_CONTAINS(de, "extradev");
    /* The destination let go of the source's memory. */
    for (int i = 0; i < 2; i++)
        T_ASSERT(inode_of(src->blocks[i].fd) != inode_of(dst->blocks[i].fd));
    uint8_t *sp = src->blocks[0].host + 4096 * 7;
    uint8_t before = dst->blocks[0].host[4096 * 7];
    *sp = (uint8_t)(*sp + 1);
    T_EQ_INT(dst->blocks[0].host[4096 * 7], before);
    T_EQ_INT(dst->blocks[0].host[4096 * 7], 0); /* a fresh, empty memfd */
    tvm_free(src);
    tvm_free(dst);
}

int main(void)
{
    T_RUN(test_live);
    T_RUN(test_live_with_multifd);
    T_RUN(test_refused_transports);
    T_RUN(test_destination_not_in_cpr_transfer);
    T_RUN(test_destination_hangs_up);
    T_RUN(test_block_size_mismatch);
    T_RUN(test_rollback_after_failed_load);
    return t_done();
}
