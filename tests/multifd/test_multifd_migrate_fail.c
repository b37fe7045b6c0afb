/*
 * test_multifd_migrate_fail: multifd settings that are refused, and side
 * channels that go wrong during a real migration. Every failure must end
 * both sides (no hang), with an error-desc on the destination that says
 * which channel and what, and a source that runs its VM again.
 *
 *   options      ranges, unsupported values, combinations (QEMU's rules)
 *   uri          multifd needs a socket, zero copy tcp, at fy_migrate time
 *   uuid         a source with another uuid: the handshake is refused
 *   channels     the source has more channels than the destination
 *   compression  the two sides disagree: the packet's flags are refused
 *   proxy        a man in the middle corrupts the first packet of a
 *                channel, turns a channel's magic into garbage, or cuts a
 *                channel in the middle of the stream
 *   cancel       cancelled while pages flow on the channels
 */
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "mfd-mig.h"

static const TvmBlockSpec blocks[] = {
    { "pc.ram", 16 << 20, true },
    { "vga.vram", 1 << 20, false },
    { NULL, 0, false },
};

static void test_options(void)
{
    TestVM *vm = tvm_new("vm", blocks);
    char e[512];
#define PARAM_ERR(js, msg) T_CONTAINS(mm_set_params(vm, js, e, sizeof(e)), msg)
    PARAM_ERR("{\"multifd-channels\": 0}", "between 1 and 255");
    PARAM_ERR("{\"multifd-channels\": 256}", "between 1 and 255");
    PARAM_ERR("{\"multifd-zlib-level\": 10}", "between 0 and 9");
    PARAM_ERR("{\"multifd-zstd-level\": 21}", "between 0 and 20");
    PARAM_ERR("{\"multifd-compression\": \"lz4\"}",
              "Parameter 'multifd-compression' does not accept value 'lz4'");
    PARAM_ERR("{\"multifd-compression\": \"qpl\"}",
              "multifd-compression 'qpl' is not supported by ferry");
    PARAM_ERR("{\"mode\": \"cpr-reboot\"}",
              "migration mode 'cpr-reboot' is not supported by ferry");
    /* Refused values leave everything as it was (all-or-nothing). */
    PARAM_ERR("{\"multifd-channels\": 8, \"multifd-zstd-level\": 99}",
              "between 0 and 20");
    json_t *q = fy_migration_query_parameters(vm->mig);
    T_EQ_INT(json_integer_value(json_object_get(q, "multifd-channels")), 2);
    T_EQ_STR(json_string_value(json_object_get(q, "multifd-compression")),
             "none");
    T_EQ_INT(json_integer_value(json_object_get(q, "multifd-zlib-level")), 1);
    T_EQ_INT(json_integer_value(json_object_get(q, "multifd-zstd-level")), 1);
    T_EQ_STR(json_string_value(json_object_get(q, "mode")), "normal");
    json_decref(q);
    T_EQ_STR(mm_set_params(vm, "{\"multifd-channels\": 8, \"multifd-"
                           "compression\": \"zstd\", \"multifd-zstd-level\": "
                           "3, \"mode\": \"cpr-transfer\"}", e, sizeof(e)), "");
    q = fy_migration_query_parameters(vm->mig);
    T_EQ_INT(json_integer_value(json_object_get(q, "multifd-channels")), 8);
    T_EQ_STR(json_string_value(json_object_get(q, "multifd-compression")),
             "zstd");
    T_EQ_STR(json_string_value(json_object_get(q, "mode")), "cpr-transfer");
    json_decref(q);

    /* zero-copy-send: multifd, no compression (QEMU's message). */
    T_CONTAINS(mm_set_cap(vm, "zero-copy-send", true, e, sizeof(e)),
               "Zero copy only available for non-compressed non-TLS multifd");
    T_EQ_STR(mm_set_cap(vm, "multifd", true, e, sizeof(e)), "");
    T_CONTAINS(mm_set_cap(vm, "zero-copy-send", true, e, sizeof(e)),
               "Zero copy only available");  /* zstd is set */
    T_EQ_STR(mm_set_params(vm, "{\"multifd-compression\": \"none\"}", e,
                           sizeof(e)), "");
    T_EQ_STR(mm_set_cap(vm, "zero-copy-send", true, e, sizeof(e)), "");
    PARAM_ERR("{\"multifd-compression\": \"zlib\"}", "Zero copy only");
    T_CONTAINS(mm_set_cap(vm, "multifd", false, e, sizeof(e)), "Zero copy");
    T_EQ_STR(mm_set_cap(vm, "zero-copy-send", false, e, sizeof(e)), "");
    T_CONTAINS(mm_set_cap(vm, "xbzrle", true, e, sizeof(e)), "xbzrle");
    T_CONTAINS(mm_set_cap(vm, "postcopy-ram", true, e, sizeof(e)),
               "ostcopy");
#undef PARAM_ERR
    tvm_free(vm);
}

static void test_uri_refused(void)
{
    TestVM *vm = tvm_new("vm", blocks);
    char e[512];
    FyError *err = NULL;
    T_EQ_STR(mm_set_cap(vm, "multifd", true, e, sizeof(e)), "");
    T_EQ_INT(fy_migrate(vm->mig, "exec:cat > /dev/null", false, &err), -1);
    T_CONTAINS(fy_error_msg(err), "multifd needs a tcp: or unix: URI");
    fy_error_clear(&err);
    T_EQ_INT(fy_migrate_incoming(vm->mig, "file:/tmp/ferry-nothing", &err), -1);
    T_CONTAINS(fy_error_msg(err), "multifd needs a tcp: or unix: URI");
    fy_error_clear(&err);
    T_EQ_STR(mm_set_cap(vm, "zero-copy-send", true, e, sizeof(e)), "");
    T_EQ_INT(fy_migrate(vm->mig, "unix:/tmp/ferry-nothing.sock", false, &err),
             -1);
    T_CONTAINS(fy_error_msg(err), "zero-copy-send needs a tcp: URI");
    fy_error_clear(&err);
    T_EQ_INT((int)fy_migration_status(vm->mig), MIGRATION_STATUS_NONE);
    tvm_free(vm);
}

/* ---- a failing migration ---- */

typedef struct Pair {
    TestVM *src, *dst;
    FyMigStatus s, d;
    char src_err[1024], dst_err[1024];
} Pair;

static void pair_new(Pair *p, const char *params_src, const char *params_dst)
{
    memset(p, 0, sizeof(*p));
    p->src = tvm_new("src", blocks);
    p->dst = tvm_new("dst", blocks);
    tvm_fill(p->src, 77);
    char e[512];
    T_EQ_STR(mm_set_cap(p->src, "multifd", true, e, sizeof(e)), "");
    T_EQ_STR(mm_set_cap(p->dst, "multifd", true, e, sizeof(e)), "");
    T_EQ_STR(mm_set_cap(p->src, "return-path", true, e, sizeof(e)), "");
    T_EQ_STR(mm_set_cap(p->dst, "return-path", true, e, sizeof(e)), "");
    /* Unlimited unless params_src says otherwise (test_cancel's 4 MB/s). */
    T_EQ_STR(mm_set_params(p->src, "{\"max-bandwidth\": 0}", e, sizeof(e)), "");
    if (params_src)
        T_EQ_STR(mm_set_params(p->src, params_src, e, sizeof(e)), "");
    if (params_dst)
        T_EQ_STR(mm_set_params(p->dst, params_dst, e, sizeof(e)), "");
    tvm_run(p->src, true);
}

/* Migrate src -> out_uri, dst listening on in_uri; both must fail. */
static void pair_fail(Pair *p, const char *in_uri, const char *out_uri)
{
    FyError *err = NULL;
    if (fy_migrate_incoming(p->dst->mig, in_uri, &err) < 0)
        T_FAIL("incoming: %s", fy_error_msg(err));
    fy_error_clear(&err);
    if (fy_migrate(p->src->mig, out_uri, false, &err) < 0)
        T_FAIL("migrate: %s", fy_error_msg(err));
    fy_error_clear(&err);
    p->s = fy_migration_wait(p->src->mig, 60000);
    p->d = fy_migration_wait(p->dst->mig, 60000);
    tvm_query_str(p->src, "error-desc", p->src_err, sizeof(p->src_err));
    tvm_query_str(p->dst, "error-desc", p->dst_err, sizeof(p->dst_err));
    printf("# src: %s\n# dst: %s\n", p->src_err, p->dst_err);
    T_EQ_STR(fy_mig_status_name(p->s), "failed");
    T_EQ_STR(fy_mig_status_name(p->d), "failed");
    T_ASSERT(tvm_is_running(p->src));  /* the source goes on */
    T_ASSERT(!tvm_is_running(p->dst));
}

static void pair_free(Pair *p)
{
    tvm_free(p->src);
    tvm_free(p->dst);
}

static void test_uuid_mismatch(void)
{
    Pair p;
    pair_new(&p, NULL, NULL);
    fy_savevm_config(p.src->ss)->uuid[15] = 0x42;
    char uri[160];
    mm_unix_uri(uri, sizeof(uri));
    pair_fail(&p, uri, uri);
    T_CONTAINS(p.dst_err, "multifd handshake: received uuid "
               "'00000000-0000-0000-0000-000000000042' and expected uuid "
               "'00000000-0000-0000-0000-000000000000'");
    pair_free(&p);
}

static void test_more_channels_than_destination(void)
{
    Pair p;
    pair_new(&p, "{\"multifd-channels\": 4}", "{\"multifd-channels\": 2}");
    char uri[160];
    mm_unix_uri(uri, sizeof(uri));
    pair_fail(&p, uri, uri);
    T_CONTAINS(p.dst_err, "field 'id' = ");
    T_CONTAINS(p.dst_err, "but there are only 2 channels");
    pair_free(&p);
}

static void test_compression_mismatch(void)
{
    Pair p;
    pair_new(&p, "{\"multifd-compression\": \"zstd\"}", NULL);
    char uri[160];
    mm_unix_uri(uri, sizeof(uri));
    pair_fail(&p, uri, uri);
    T_CONTAINS(p.dst_err, "multifd channel");
    T_CONTAINS(p.dst_err, "flags");
    pair_free(&p);
}

/* ---- a man in the middle ---- */

enum { PX_CORRUPT_PACKET, PX_BAD_MAGIC, PX_CUT_CHANNEL };

typedef struct Proxy Proxy;
typedef struct Pump {
    Proxy *px;
    int from, to;
    bool upstream;  /* source -> destination */
    int conn;       /* connection number, in accept order */
    pthread_t th;
} Pump;

struct Proxy {
    int lfd;
    char path[108], target[108];
    int mode;
    pthread_t acceptor;
    atomic_bool quit;
    int npumps;
    Pump pumps[32];
    int nmultifd;   /* multifd connections seen (acceptor thread only) */
};

/* Forward bytes; on the upstream side of a multifd connection do the
 * mischief the mode says. */
static void *pump_main(void *opaque)
{
    Pump *pu = opaque;
    Proxy *px = pu->px;
    uint8_t buf[65536];
    uint64_t off = 0;
    bool multifd = false;
    for (;;) {
        ssize_t n = read(pu->from, buf, sizeof(buf));
        if (n <= 0)
            break;
        if (pu->upstream && off == 0 && n >= 4)
            multifd = buf[0] == 0x11 && buf[1] == 0x22 && buf[2] == 0x33 &&
                      buf[3] == 0x44;
        if (pu->upstream && multifd) {
            /* The first packet header starts after the 64-byte handshake. */
            uint64_t at = FY_MULTIFD_INIT_LEN;
            if (px->mode == PX_CORRUPT_PACKET && pu->conn == 2 &&
                at >= off && at < off + (uint64_t)n)
                buf[at - off] ^= 0xff;
            if (px->mode == PX_BAD_MAGIC && pu->conn == 2 && off == 0)
                buf[0] = 0x99;
            if (px->mode == PX_CUT_CHANNEL && pu->conn == 2 &&
                off + (uint64_t)n > 200000) {
                break;
            }
        }
        off += (uint64_t)n;
        for (ssize_t d = 0; d < n;) {
            ssize_t w = send(pu->to, buf + d, (size_t)(n - d), MSG_NOSIGNAL);
            if (w <= 0)
                goto out;
            d += w;
        }
    }
out:
    shutdown(pu->to, SHUT_RDWR);
    shutdown(pu->from, SHUT_RDWR);
    return NULL;
}

static int unix_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *proxy_accept_main(void *opaque)
{
    Proxy *px = opaque;
    int conn = 0;
    while (!atomic_load(&px->quit) && px->npumps + 2 <= 32) {
        struct pollfd p = { .fd = px->lfd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0)
            continue;
        int a = accept4(px->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (a < 0)
            continue;
        int b = unix_connect(px->target);
        if (b < 0) {
            close(a);
            continue;
        }
        Pump *up = &px->pumps[px->npumps++];
        Pump *down = &px->pumps[px->npumps++];
        *up = (Pump){ px, a, b, true, conn, 0 };
        *down = (Pump){ px, b, a, false, conn, 0 };
        conn++;
        pthread_create(&up->th, NULL, pump_main, up);
        pthread_create(&down->th, NULL, pump_main, down);
    }
    return NULL;
}

static void proxy_start(Proxy *px, int mode, const char *target)
{
    memset(px, 0, sizeof(*px));
    px->mode = mode;
    snprintf(px->target, sizeof(px->target), "%s", target);
    tvm_path(px->path, sizeof(px->path), "proxy");
    px->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", px->path);
    unlink(px->path);
    T_EQ_INT(bind(px->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    T_EQ_INT(listen(px->lfd, 16), 0);
    pthread_create(&px->acceptor, NULL, proxy_accept_main, px);
}

static void proxy_stop(Proxy *px)
{
    atomic_store(&px->quit, true);
    pthread_join(px->acceptor, NULL);
    for (int i = 0; i < px->npumps; i++)
        shutdown(px->pumps[i].from, SHUT_RDWR);
    for (int i = 0; i < px->npumps; i++)
        pthread_join(px->pumps[i].th, NULL);
    for (int i = 0; i < px->npumps; i++)
        if (px->pumps[i].upstream) {
            close(px->pumps[i].from);
            close(px->pumps[i].to);
        }
    close(px->lfd);
    unlink(px->path);
}

static void run_proxy_case(int mode, const char *want1, const char *want2)
{
    Pair p;
    pair_new(&p, NULL, NULL);
    char dpath[108], in_uri[160], out_uri[160]; /* a sun_path */
    tvm_path(dpath, sizeof(dpath), "sock");
    snprintf(in_uri, sizeof(in_uri), "unix:%s", dpath);
    Proxy px;
    /* The destination must listen before the proxy forwards to it. */
    FyError *err = NULL;
    T_EQ_INT(fy_migrate_incoming(p.dst->mig, in_uri, &err), 0);
    fy_error_clear(&err);
    proxy_start(&px, mode, dpath);
    snprintf(out_uri, sizeof(out_uri), "unix:%s", px.path);
    T_EQ_INT(fy_migrate(p.src->mig, out_uri, false, &err), 0);
    fy_error_clear(&err);
    p.s = fy_migration_wait(p.src->mig, 60000);
    p.d = fy_migration_wait(p.dst->mig, 60000);
    tvm_query_str(p.src, "error-desc", p.src_err, sizeof(p.src_err));
    tvm_query_str(p.dst, "error-desc", p.dst_err, sizeof(p.dst_err));
    printf("# src: %s\n# dst: %s\n", p.src_err, p.dst_err);
    T_EQ_STR(fy_mig_status_name(p.s), "failed");
    T_EQ_STR(fy_mig_status_name(p.d), "failed");
    T_ASSERT(tvm_is_running(p.src));
    T_CONTAINS(p.dst_err, want1);
    T_CONTAINS(p.dst_err, want2);
    T_ASSERT(p.src_err[0]);
    proxy_stop(&px);
    pair_free(&p);
}

static void test_corrupt_packet(void)
{
    /* Connection 2 is the second multifd channel (0 is the main one). */
    run_proxy_case(PX_CORRUPT_PACKET, "multifd channel", "field 'magic'");
}

static void test_bad_channel_magic(void)
{
    run_proxy_case(PX_BAD_MAGIC, "starts with 0x99223344",
                   "neither a migration stream nor a multifd channel");
}

static void test_channel_cut(void)
{
    run_proxy_case(PX_CUT_CHANNEL, "multifd channel", "end of stream");
}

static void test_cancel(void)
{
    Pair p;
    pair_new(&p, "{\"max-bandwidth\": 4000000}", NULL);
    char uri[160];
    mm_unix_uri(uri, sizeof(uri));
    FyError *err = NULL;
    T_EQ_INT(fy_migrate_incoming(p.dst->mig, uri, &err), 0);
    T_EQ_INT(fy_migrate(p.src->mig, uri, false, &err), 0);
    fy_error_clear(&err);
    T_ASSERT(fy_migration_wait_for(p.src->mig, MIGRATION_STATUS_ACTIVE, 10000));
    for (int i = 0; i < 500 && mm_ram_int(p.src, "multifd-bytes") < 1000000; i++)
        tvm_sleep_ms(10);
    T_ASSERT(mm_ram_int(p.src, "multifd-bytes") >= 1000000);
    T_EQ_INT(fy_migrate_cancel(p.src->mig, &err), 0);
    p.s = fy_migration_wait(p.src->mig, 60000);
    p.d = fy_migration_wait(p.dst->mig, 60000);
    T_EQ_STR(fy_mig_status_name(p.s), "cancelled");
    T_EQ_STR(fy_mig_status_name(p.d), "failed");
    T_ASSERT(tvm_is_running(p.src));
    pair_free(&p);
}

int main(void)
{
    T_RUN(test_options);
    T_RUN(test_uri_refused);
    T_RUN(test_uuid_mismatch);
    T_RUN(test_more_channels_than_destination);
    T_RUN(test_compression_mismatch);
    T_RUN(test_corrupt_packet);
    T_RUN(test_bad_channel_magic);
    T_RUN(test_channel_cut);
    T_RUN(test_cancel);
    return t_done();
}
