/*
 * test_channel.c: every transport over real descriptors, sockets and
 * processes: fd (pipes), file with and without an offset, unix and tcp
 * (IPv4, IPv6, names) with a thread as the peer, exec both ways and its
 * exit status, fd passing, shutdown waking blocked threads, listeners,
 * non-blocking mode, and error messages that carry the channel name and
 * strerror. Every test leaves the descriptor count as it found it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ferry/uri.h"
#include "t.h"

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

static char *tmp_path(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "/tmp/ferry-io-%d-%s", (int)getpid(), tag);
    return buf;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void fill_pattern(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)((i * 131 + seed) ^ (i >> 11));
}

/* ---- fd ---- */

static void test_fd_pipe(void)
{
    int p[2];
    FyError *err = NULL;
    T_EQ_INT(pipe2(p, O_CLOEXEC), 0);
    FyChannel *w = fy_channel_fd_new(p[1], "pipe-w", &err);
    FyChannel *r = fy_channel_fd_new(p[0], "pipe-r", &err);
    T_ASSERT(w && r);
    T_EQ_STR(w->name, "pipe-w");
    T_ASSERT(!(w->features & FY_CHANNEL_FEATURE_SHUTDOWN));

    uint8_t out[1000], in[1000];
    fill_pattern(out, sizeof(out), 1);
    T_EQ_INT(fy_channel_write_all(w, out, sizeof(out), &err), 0);
    T_EQ_INT(fy_channel_read_all(r, in, sizeof(in), &err), 0);
    T_EQ_MEM(in, out, sizeof(out));

    /* A short stream: how much arrived is part of the error. */
    T_EQ_INT(fy_channel_write_all(w, "abc", 3, &err), 0);
    T_EQ_INT(fy_channel_close(w, &err), 0);
    T_EQ_INT(fy_channel_read_all(r, in, 8, &err), -1);
    T_EQ_STR(fy_error_msg(err), "pipe-r: end of stream after 3 of 8 bytes");
    fy_error_clear(&err);
    /* A clean end before the first byte is 1, not an error. */
    T_EQ_INT(fy_channel_read_all(r, in, 8, &err), 1);
    T_ASSERT(err == NULL);
    /* Reading with room for fds on a channel that cannot pass them. */
    size_t nfds = 4;
    int fds[4];
    struct iovec iov = { in, 8 };
    T_EQ_INT(fy_channel_readv_fds(r, &iov, 1, fds, &nfds, &err), 0);
    T_EQ_INT(nfds, 0);
    T_EQ_INT(fy_channel_close(r, &err), 0);

    T_ASSERT(fy_channel_fd_new(-1, "fd:-1", &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "fd:-1: invalid file descriptor -1");
    fy_error_clear(&err);
    T_ASSERT(fy_channel_fd_new(999, "fd:999", &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "fd:999: file descriptor 999: Bad file descriptor");
    fy_error_clear(&err);
    T_ASSERT(fy_channel_close(NULL, &err) == 0);
}

/* A pipe whose reader is gone: an EPIPE error with the name, and no
 * SIGPIPE (whose default action would kill this test). */
static void test_pipe_broken_no_sigpipe(void)
{
    int p[2];
    FyError *err = NULL;
    T_EQ_INT(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    FyChannel *w = fy_channel_fd_new(p[1], "pipe-w", &err);
    T_EQ_INT(fy_channel_write_all(w, "x", 1, &err), -1);
    T_EQ_STR(fy_error_msg(err), "pipe-w: write: Broken pipe");
    fy_error_clear(&err);
    sigset_t pending;
    sigpending(&pending);
    T_ASSERT(!sigismember(&pending, SIGPIPE));
    fy_channel_close(w, NULL);
}

/* ---- file ---- */

static void slurp(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, cap) : -1;
    *len = n > 0 ? (size_t)n : 0;
    if (fd >= 0)
        close(fd);
}

static void test_file(void)
{
    char path[128];
    tmp_path(path, sizeof(path), "file");
    FyError *err = NULL;
    uint8_t data[70000], back[80000];
    fill_pattern(data, sizeof(data), 2);

    FyChannel *c = fy_channel_file_open(path, true, 0, &err);
    T_ASSERT(c != NULL);
    T_ASSERT(c->features & FY_CHANNEL_FEATURE_SEEKABLE);
    T_EQ_INT(fy_channel_write_all(c, data, sizeof(data), &err), 0);
    /* Write-only: reading says so, with the name. */
    struct iovec iov = { back, 1 };
    T_EQ_INT(fy_channel_readv(c, &iov, 1, &err), -1);
    char want[200];
    snprintf(want, sizeof(want), "file:%s: read: channel is write-only", path);
    T_EQ_STR(fy_error_msg(err), want);
    fy_error_clear(&err);
    T_EQ_INT(fy_channel_close(c, &err), 0);

    c = fy_channel_file_open(path, false, 0, &err);
    T_EQ_INT(fy_channel_read_all(c, back, sizeof(data), &err), 0);
    T_EQ_MEM(back, data, sizeof(data));
    T_EQ_INT(fy_channel_read_all(c, back, 1, &err), 1);
    fy_channel_close(c, NULL);

    /* Without an offset an old, longer file is truncated. */
    c = fy_channel_file_open(path, true, 0, &err);
    fy_channel_write_all(c, "short", 5, &err);
    fy_channel_close(c, NULL);
    size_t len;
    slurp(path, back, sizeof(back), &len);
    T_EQ_INT(len, 5);
    unlink(path);
    T_ASSERT(err == NULL);
}

static void test_file_offset(void)
{
    char path[128], uri[200];
    tmp_path(path, sizeof(path), "offset");
    FyError *err = NULL;
    uint8_t head[100], back[200];
    memset(head, 'H', sizeof(head));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    T_EQ_INT(write(fd, head, sizeof(head)), sizeof(head));
    close(fd);

    /* Through the URI, as a migration would: the bytes before the offset
     * are kept, the stream starts at it, and the old tail is cut. */
    snprintf(uri, sizeof(uri), "file:%s,offset=50", path);
    FyChannel *c = fy_channel_open_outgoing(uri, &err);
    T_ASSERT(c != NULL);
    T_EQ_INT(fy_channel_write_all(c, "STREAM", 6, &err), 0);
    T_EQ_INT(fy_channel_close(c, &err), 0);
    size_t len;
    slurp(path, back, sizeof(back), &len);
    T_EQ_INT(len, 56);
    T_EQ_MEM(back, head, 50);
    T_EQ_MEM(back + 50, "STREAM", 6);

    FyListener *l = fy_listener_new(uri, &err);
    T_ASSERT(l != NULL);
    T_EQ_STR(fy_listener_address(l), uri);
    c = fy_listener_accept(l, -1, &err);
    T_ASSERT(c != NULL);
    uint8_t in[6];
    T_EQ_INT(fy_channel_read_all(c, in, 6, &err), 0);
    T_EQ_MEM(in, "STREAM", 6);
    T_EQ_INT(fy_channel_read_all(c, in, 1, &err), 1);
    fy_channel_close(c, NULL);
    /* The one channel is yielded once. */
    T_ASSERT(fy_listener_accept(l, -1, &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "already accepted");
    fy_error_clear(&err);
    fy_listener_free(l);

    /* An offset past the end is an error at open, not an empty stream. */
    T_ASSERT(fy_channel_file_open(path, false, 57, &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "offset 57 is past the end of the file (56 bytes)");
    fy_error_clear(&err);
    /* Writing past the end is fine: the gap reads as zeros. */
    c = fy_channel_file_open(path, true, 60, &err);
    T_EQ_INT(fy_channel_write_all(c, "Z", 1, &err), 0);
    fy_channel_close(c, NULL);
    slurp(path, back, sizeof(back), &len);
    T_EQ_INT(len, 61);
    T_EQ_MEM(back + 56, "\0\0\0\0Z", 5);
    unlink(path);

    T_ASSERT(fy_channel_file_open("/nonexistent/dir/x", true, 0, &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "file:/nonexistent/dir/x: open for writing: "
                                "No such file or directory");
    fy_error_clear(&err);
    T_ASSERT(fy_listener_new("file:/nonexistent/x", &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "file:/nonexistent/x: open for reading: "
                                "No such file or directory");
    fy_error_clear(&err);
}

/* ---- sockets: a thread plays the peer ---- */

typedef struct {
    char uri[200];
    size_t len;       /* bytes to send after the greeting */
    unsigned seed;
    int result;       /* 0 when everything matched */
    char error[300];
} Peer;

/* Connect, say "ping", expect "pong", then send len patterned bytes. */
static void *peer_client(void *opaque)
{
    Peer *p = opaque;
    FyError *err = NULL;
    p->result = -1;
    FyChannel *c = fy_channel_open_outgoing(p->uri, &err);
    if (!c)
        goto out;
    char buf[4];
    if (fy_channel_write_all(c, "ping", 4, &err) < 0 ||
        fy_channel_read_all(c, buf, 4, &err) != 0)
        goto out;
    if (memcmp(buf, "pong", 4)) {
        fy_error_setg(&err, "bad reply");
        goto out;
    }
    uint8_t *data = malloc(p->len + 1);
    fill_pattern(data, p->len, p->seed);
    int r = fy_channel_write_all(c, data, p->len, &err);
    free(data);
    if (r == 0)
        p->result = 0;
out:
    if (err)
        snprintf(p->error, sizeof(p->error), "%s", fy_error_msg(err));
    fy_error_free(err);
    fy_channel_close(c, NULL);
    return NULL;
}

/* The server side of peer_client over an accepted channel. */
static void serve(FyChannel *c, Peer *p)
{
    FyError *err = NULL;
    char buf[4];
    T_EQ_INT(fy_channel_read_all(c, buf, 4, &err), 0);
    T_EQ_MEM(buf, "ping", 4);
    T_EQ_INT(fy_channel_write_all(c, "pong", 4, &err), 0);
    uint8_t *got = malloc(p->len + 1), *want = malloc(p->len + 1);
    fill_pattern(want, p->len, p->seed);
    T_EQ_INT(fy_channel_read_all(c, got, p->len, &err), 0);
    T_EQ_MEM(got, want, p->len);
    T_EQ_INT(fy_channel_read_all(c, got, 1, &err), 1); /* then EOF */
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    fy_error_free(err);
    free(got);
    free(want);
}

/* Listen on uri, run peer_client against the reported address. */
static void socket_roundtrip(const char *uri, const char *addr_prefix, size_t len)
{
    FyError *err = NULL;
    FyListener *l = fy_listener_new(uri, &err);
    if (!l) {
        T_FAIL("listen on %s: %s", uri, fy_error_msg(err));
        fy_error_free(err);
        return;
    }
    const char *addr = fy_listener_address(l);
    T_CONTAINS(addr, addr_prefix);
    Peer p = { .len = len, .seed = 7 };
    snprintf(p.uri, sizeof(p.uri), "%s", addr);
    pthread_t t;
    pthread_create(&t, NULL, peer_client, &p);
    FyChannel *c = fy_listener_accept(l, 10000, &err);
    T_ASSERT(c != NULL);
    if (c) {
        T_EQ_STR(c->name, addr);
        T_ASSERT(c->features & FY_CHANNEL_FEATURE_SHUTDOWN);
        T_ASSERT(c->features & FY_CHANNEL_FEATURE_DUPLEX);
        serve(c, &p);
    }
    pthread_join(t, NULL);
    if (p.result)
        T_FAIL("peer: %s", p.error);
    fy_channel_close(c, NULL);
    fy_listener_free(l);
    fy_error_free(err);
}

static void test_unix(void)
{
    char path[100], uri[160];
    tmp_path(path, sizeof(path), "sock");
    snprintf(uri, sizeof(uri), "unix:%s", path);

    /* A stale socket file from an earlier run does not stop us. */
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    T_EQ_INT(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(s);
    struct stat st;
    T_EQ_INT(stat(path, &st), 0);

    socket_roundtrip(uri, uri, 3 << 20);
    /* The listener removes its socket file. */
    T_ASSERT(stat(path, &st) < 0 && errno == ENOENT);

    /* An accepted unix channel passes descriptors. */
    FyError *err = NULL;
    FyListener *l = fy_listener_new(uri, &err);
    FyChannel *out = fy_channel_open_outgoing(uri, &err);
    FyChannel *in = fy_listener_accept(l, 1000, &err);
    T_ASSERT(out && in);
    T_ASSERT(in->features & FY_CHANNEL_FEATURE_FD_PASS);
    T_ASSERT(out->features & FY_CHANNEL_FEATURE_FD_PASS);
    fy_channel_close(out, NULL);
    fy_channel_close(in, NULL);
    fy_listener_free(l);

    /* A file that is not a socket is never deleted to make room. */
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    close(fd);
    T_ASSERT(fy_listener_new(uri, &err) == NULL);
    char want[200];
    snprintf(want, sizeof(want), "%s: listen: Address already in use", uri);
    T_EQ_STR(fy_error_msg(err), want);
    fy_error_clear(&err);
    T_EQ_INT(stat(path, &st), 0);
    unlink(path);

    /* Nobody there. */
    T_ASSERT(fy_channel_open_outgoing("unix:/nonexistent/ferry.sock", &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "unix:/nonexistent/ferry.sock: connect: No such "
                                "file or directory");
    fy_error_clear(&err);
}

static void test_tcp_ipv4(void)
{
    socket_roundtrip("tcp:127.0.0.1:0", "tcp:127.0.0.1:", 8 << 20);

    /* Port 0 gets a real port, reported in the address. */
    FyError *err = NULL;
    FyListener *l = fy_listener_new("tcp:127.0.0.1:0", &err);
    FyUri u;
    T_EQ_INT(fy_uri_parse(fy_listener_address(l), &u, &err), 0);
    T_EQ_STR(u.host, "127.0.0.1");
    T_ASSERT(strcmp(u.port, "0") != 0);
    fy_uri_clear(&u);
    /* Once the listener is gone, the port refuses. */
    char addr[100];
    snprintf(addr, sizeof(addr), "%s", fy_listener_address(l));
    fy_listener_free(l);
    T_ASSERT(fy_channel_open_outgoing(addr, &err) == NULL);
    char want[160];
    snprintf(want, sizeof(want), "%s: connect: Connection refused", addr);
    T_EQ_STR(fy_error_msg(err), want);
    fy_error_clear(&err);
}

static void test_tcp_ipv6(void)
{
    if (access("/proc/net/if_inet6", F_OK) != 0) {
        printf("# no IPv6 on this machine: skipped\n");
        return;
    }
    socket_roundtrip("tcp:[::1]:0", "tcp:[::1]:", 1 << 20);
}

static void test_tcp_names(void)
{
    /* localhost may be ::1, 127.0.0.1 or both: both ends agree anyway. */
    FyError *err = NULL;
    FyListener *l = fy_listener_new("tcp:localhost:0", &err);
    T_ASSERT(l != NULL);
    FyUri u;
    fy_uri_parse(fy_listener_address(l), &u, NULL);
    char uri[100];
    snprintf(uri, sizeof(uri), "tcp:localhost:%s", u.port);
    fy_uri_clear(&u);
    Peer p = { .len = 1000, .seed = 3 };
    snprintf(p.uri, sizeof(p.uri), "%s", uri);
    pthread_t t;
    pthread_create(&t, NULL, peer_client, &p);
    FyChannel *c = fy_listener_accept(l, 10000, &err);
    T_ASSERT(c != NULL);
    if (c)
        serve(c, &p);
    pthread_join(t, NULL);
    if (p.result)
        T_FAIL("peer: %s", p.error);
    fy_channel_close(c, NULL);
    fy_listener_free(l);

    /* "tcp::PORT" listens on every address. */
    l = fy_listener_new("tcp::0", &err);
    T_ASSERT(l != NULL);
    fy_uri_parse(fy_listener_address(l), &u, NULL);
    snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%s", u.port);
    fy_uri_clear(&u);
    FyChannel *out = fy_channel_open_outgoing(uri, &err);
    c = fy_listener_accept(l, 10000, &err);
    T_ASSERT(out && c);
    fy_channel_close(out, NULL);
    fy_channel_close(c, NULL);
    fy_listener_free(l);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    fy_error_free(err);
}

/* ---- exec ---- */

static void test_exec_both_ways(void)
{
    char path[128], uri[200];
    tmp_path(path, sizeof(path), "exec");
    FyError *err = NULL;
    static uint8_t data[1 << 20], back[1 << 20];
    fill_pattern(data, sizeof(data), 9);

    snprintf(uri, sizeof(uri), "exec:cat > %s", path);
    FyChannel *c = fy_channel_open_outgoing(uri, &err);
    T_ASSERT(c != NULL);
    T_EQ_STR(c->name, uri);
    T_ASSERT(!(c->features & FY_CHANNEL_FEATURE_DUPLEX));
    T_ASSERT(!(c->features & FY_CHANNEL_FEATURE_FD_PASS));
    T_EQ_INT(fy_channel_write_all(c, data, sizeof(data), &err), 0);
    T_EQ_INT(fy_channel_close(c, &err), 0); /* waits for cat to finish */
    struct stat st;
    T_EQ_INT(stat(path, &st), 0);
    T_EQ_INT(st.st_size, sizeof(data));

    snprintf(uri, sizeof(uri), "exec:cat %s", path);
    FyListener *l = fy_listener_new(uri, &err);
    T_ASSERT(l != NULL);
    c = fy_listener_accept(l, -1, &err);
    T_ASSERT(c != NULL);
    T_EQ_INT(fy_channel_read_all(c, back, sizeof(back), &err), 0);
    T_EQ_MEM(back, data, sizeof(data));
    T_EQ_INT(fy_channel_read_all(c, back, 1, &err), 1);
    T_EQ_INT(fy_channel_close(c, &err), 0);
    T_ASSERT(fy_listener_accept(l, -1, &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "already accepted");
    fy_error_clear(&err);
    fy_listener_free(l);
    unlink(path);
}

static void test_exec_exit_status(void)
{
    FyError *err = NULL;
    uint8_t buf[16];

    FyChannel *c = fy_channel_exec_new("echo hi; exit 3", false, &err);
    T_EQ_INT(fy_channel_read_all(c, buf, 3, &err), 0);
    T_EQ_MEM(buf, "hi\n", 3);
    T_EQ_INT(fy_channel_read_all(c, buf, 1, &err), 1);
    T_EQ_INT(fy_channel_close(c, &err), -1);
    T_EQ_STR(fy_error_msg(err), "exec:echo hi; exit 3: command exited with status 3");
    fy_error_clear(&err);

    /* The writer learns of a dead command by EPIPE, then its status. */
    c = fy_channel_exec_new("exit 4", true, &err);
    static uint8_t junk[1 << 16];
    int r = 0;
    for (int i = 0; i < 1000 && r == 0; i++)
        r = fy_channel_write_all(c, junk, sizeof(junk), &err);
    T_EQ_INT(r, -1);
    T_EQ_STR(fy_error_msg(err), "exec:exit 4: write: Broken pipe");
    fy_error_clear(&err);
    T_EQ_INT(fy_channel_close(c, &err), -1);
    T_EQ_STR(fy_error_msg(err), "exec:exit 4: command exited with status 4");
    fy_error_clear(&err);

    c = fy_channel_exec_new("no-such-command-for-ferry 2>/dev/null", false, &err);
    T_EQ_INT(fy_channel_read_all(c, buf, 1, &err), 1);
    T_EQ_INT(fy_channel_close(c, &err), -1);
    T_CONTAINS(fy_error_msg(err), "command exited with status 127");
    fy_error_clear(&err);

    c = fy_channel_exec_new("kill -9 $$", false, &err);
    T_EQ_INT(fy_channel_read_all(c, buf, 1, &err), 1);
    T_EQ_INT(fy_channel_close(c, &err), -1);
    T_EQ_STR(fy_error_msg(err), "exec:kill -9 $$: command killed by signal 9 (Killed)");
    fy_error_clear(&err);

    T_ASSERT(fy_channel_exec_new("", true, &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "empty command");
    fy_error_clear(&err);
}

/* ---- shutdown wakes blocked threads ---- */

typedef struct {
    FyChannel *c;
    int r;
    bool write;
    FyError *err;
    atomic_bool started;
} Blocked;

static void *blocked_io(void *opaque)
{
    Blocked *b = opaque;
    atomic_store(&b->started, true);
    if (b->write) {
        static uint8_t big[1 << 20];
        b->r = 0;
        for (int i = 0; i < 512 && b->r == 0; i++) /* far beyond any buffer */
            b->r = fy_channel_write_all(b->c, big, sizeof(big), &b->err);
    } else {
        uint8_t buf[8];
        b->r = fy_channel_read_all(b->c, buf, sizeof(buf), &b->err);
    }
    return NULL;
}

/* Start a thread blocked in c, shut c down, expect it back quickly. */
static void shutdown_wakes(FyChannel *c, bool write, FyShutdownHow how,
                           int want_r, const char *want_msg)
{
    Blocked b = { .c = c, .write = write };
    pthread_t t;
    pthread_create(&t, NULL, blocked_io, &b);
    while (!atomic_load(&b.started))
        usleep(1000);
    usleep(50000); /* let it block */
    uint64_t t0 = now_ms();
    T_EQ_INT(fy_channel_shutdown(c, how, NULL), 0);
    pthread_join(t, NULL);
    T_ASSERT(now_ms() - t0 < 5000);
    T_EQ_INT(b.r, want_r);
    if (want_msg)
        T_CONTAINS(b.err ? fy_error_msg(b.err) : NULL, want_msg);
    fy_error_free(b.err);
}

static void test_shutdown_wakes(void)
{
    FyError *err = NULL;
    FyChannel *a, *b;

    /* A reader on a tcp connection. */
    FyListener *l = fy_listener_new("tcp:127.0.0.1:0", &err);
    FyChannel *out = fy_channel_open_outgoing(fy_listener_address(l), &err);
    FyChannel *in = fy_listener_accept(l, 1000, &err);
    T_ASSERT(in && out);
    shutdown_wakes(in, false, FY_SHUTDOWN_BOTH, 1, NULL);
    fy_channel_close(in, NULL);
    fy_channel_close(out, NULL);
    fy_listener_free(l);

    /* A writer stuck on a full socketpair. */
    T_EQ_INT(fy_channel_socketpair(&a, &b, &err), 0);
    shutdown_wakes(a, true, FY_SHUTDOWN_BOTH, -1, "socketpair:0: write: Broken pipe");
    fy_channel_close(a, NULL);
    fy_channel_close(b, NULL);

    /* A reader of a command that never writes: shutdown wakes it, and
     * close then ends the command instead of waiting 30 s for it. */
    FyChannel *e = fy_channel_exec_new("sleep 30", false, &err);
    shutdown_wakes(e, false, FY_SHUTDOWN_BOTH, 1, NULL);
    uint64_t t0 = now_ms();
    T_EQ_INT(fy_channel_close(e, &err), 0);
    T_ASSERT(now_ms() - t0 < 5000);

    /* A writer into a command that never reads. */
    e = fy_channel_exec_new("sleep 30", true, &err);
    shutdown_wakes(e, true, FY_SHUTDOWN_WRITE, -1, "exec:sleep 30: write: Broken pipe");
    T_EQ_INT(fy_channel_close(e, &err), 0);

    /* The memory channel behaves the same way, minus the threads. */
    FyChannel *m = fy_channel_mem_new("abc", 3);
    T_EQ_INT(fy_channel_shutdown(m, FY_SHUTDOWN_BOTH, &err), 0);
    uint8_t buf[3];
    T_EQ_INT(fy_channel_read_all(m, buf, 3, &err), 1);
    T_EQ_INT(fy_channel_write_all(m, "x", 1, &err), -1);
    T_EQ_STR(fy_error_msg(err), "memory: write: Broken pipe");
    fy_error_clear(&err);
    fy_channel_close(m, NULL);
    T_ASSERT(err == NULL);
}

typedef struct {
    FyListener *l;
    FyChannel *c;
    FyError *err;
} Acceptor;

static void *acceptor(void *opaque)
{
    Acceptor *a = opaque;
    a->c = fy_listener_accept(a->l, -1, &a->err);
    return NULL;
}

static void test_listener_shutdown(void)
{
    FyError *err = NULL;
    char path[128], uri[160];
    tmp_path(path, sizeof(path), "lsock");
    snprintf(uri, sizeof(uri), "unix:%s", path);
    const char *uris[] = { "tcp:127.0.0.1:0", uri };
    for (int i = 0; i < 2; i++) {
        Acceptor a = { .l = fy_listener_new(uris[i], &err) };
        T_ASSERT(a.l != NULL);
        /* A timeout says so. */
        T_ASSERT(fy_listener_accept(a.l, 20, &err) == NULL);
        T_CONTAINS(fy_error_msg(err), "no connection within 20 ms");
        fy_error_clear(&err);
        pthread_t t;
        pthread_create(&t, NULL, acceptor, &a);
        usleep(50000);
        fy_listener_shutdown(a.l);
        pthread_join(t, NULL);
        T_ASSERT(a.c == NULL);
        T_CONTAINS(fy_error_msg(a.err), "accept: cancelled");
        T_CONTAINS(fy_error_msg(a.err), fy_listener_address(a.l));
        fy_error_free(a.err);
        /* And every accept after it. */
        T_ASSERT(fy_listener_accept(a.l, -1, &err) == NULL);
        T_CONTAINS(fy_error_msg(err), "cancelled");
        fy_error_clear(&err);
        fy_listener_free(a.l);
    }

    /* One-shot kinds: cancelled before the accept, the channel is closed
     * with the listener (no leak, no zombie). */
    FyListener *l = fy_listener_new("exec:echo never read", &err);
    fy_listener_shutdown(l);
    T_ASSERT(fy_listener_accept(l, -1, &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "exec:echo never read: accept: cancelled");
    fy_error_clear(&err);
    fy_listener_free(l);
}

/* ---- fd passing ---- */

static void test_fd_passing(void)
{
    FyError *err = NULL;
    FyChannel *a, *b;
    T_EQ_INT(fy_channel_socketpair(&a, &b, &err), 0);
    T_ASSERT(a->features & FY_CHANNEL_FEATURE_FD_PASS);
    int p[2];
    T_EQ_INT(pipe2(p, O_CLOEXEC), 0);

    struct iovec iov = { "abc", 3 };
    T_EQ_INT(fy_channel_writev_fds(a, &iov, 1, p, 2, &err), 3);
    char buf[8] = { 0 };
    int fds[4] = { -1, -1, -1, -1 };
    size_t nfds = 4;
    struct iovec riov = { buf, sizeof(buf) };
    T_EQ_INT(fy_channel_readv_fds(b, &riov, 1, fds, &nfds, &err), 3);
    T_EQ_MEM(buf, "abc", 3);
    T_EQ_INT(nfds, 2);
    /* The received descriptors are the same pipe: write one end, read
     * the original. */
    T_EQ_INT(write(fds[1], "Z", 1), 1);
    T_EQ_INT(read(p[0], buf, 1), 1);
    T_EQ_INT(buf[0], 'Z');
    T_ASSERT(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    close(fds[0]);
    close(fds[1]);

    /* 16 at most per message. */
    int many[17];
    for (int i = 0; i < 17; i++)
        many[i] = p[0];
    T_EQ_INT(fy_channel_writev_fds(a, &iov, 1, many, 17, &err), -1);
    T_EQ_STR(fy_error_msg(err), "socketpair:0: write: 17 file descriptors in one "
                                "message (at most 16)");
    fy_error_clear(&err);
    T_EQ_INT(fy_channel_writev_fds(a, &iov, 1, many, 16, &err), 3);
    nfds = 16;
    int got[16];
    T_EQ_INT(fy_channel_readv_fds(b, &riov, 1, got, &nfds, &err), 3);
    T_EQ_INT(nfds, 16);
    for (size_t i = 0; i < nfds; i++)
        close(got[i]);

    /* More than the reader has room for: an error, and none leak. */
    int before = count_fds();
    T_EQ_INT(fy_channel_writev_fds(a, &iov, 1, p, 2, &err), 3);
    nfds = 1;
    T_EQ_INT(fy_channel_readv_fds(b, &riov, 1, got, &nfds, &err), -1);
    T_EQ_INT(nfds, 0);
    T_CONTAINS(fy_error_msg(err), "socketpair:1: read: peer sent more file "
                                  "descriptors than expected");
    fy_error_clear(&err);
    T_EQ_INT(count_fds(), before);

    /* Channels that cannot carry descriptors refuse to send them. */
    FyChannel *m = fy_channel_mem_new(NULL, 0);
    T_EQ_INT(fy_channel_writev_fds(m, &iov, 1, p, 1, &err), -1);
    T_EQ_STR(fy_error_msg(err), "memory: channel cannot pass file descriptors");
    fy_error_clear(&err);
    fy_channel_close(m, NULL);

    close(p[0]);
    close(p[1]);
    fy_channel_close(a, NULL);
    fy_channel_close(b, NULL);
}

/* ---- non-blocking ---- */

typedef struct {
    FyChannel *c;
    size_t len;
    int r;
} Reader;

static void *reader_thread(void *opaque)
{
    Reader *rd = opaque;
    uint8_t *buf = malloc(rd->len), *want = malloc(rd->len);
    fill_pattern(want, rd->len, 5);
    rd->r = fy_channel_read_all(rd->c, buf, rd->len, NULL);
    if (rd->r == 0 && memcmp(buf, want, rd->len))
        rd->r = 99;
    free(buf);
    free(want);
    return NULL;
}

static void test_nonblocking(void)
{
    FyError *err = NULL;
    FyChannel *a, *b;
    T_EQ_INT(fy_channel_socketpair(&a, &b, &err), 0);
    T_ASSERT(a->blocking);
    T_EQ_INT(fy_channel_set_blocking(b, false, &err), 0);
    T_ASSERT(!b->blocking);
    T_ASSERT(fcntl(b->rfd, F_GETFL) & O_NONBLOCK);

    uint8_t buf[16];
    struct iovec iov = { buf, sizeof(buf) };
    T_EQ_INT(fy_channel_readv(b, &iov, 1, &err), FY_IO_AGAIN);
    T_EQ_INT(fy_channel_wait(b, false, 10, &err), 0); /* nothing yet */
    T_EQ_INT(fy_channel_write_all(a, "hello", 5, &err), 0);
    T_EQ_INT(fy_channel_wait(b, false, 1000, &err), 1);
    T_EQ_INT(fy_channel_readv(b, &iov, 1, &err), 5);
    T_EQ_MEM(buf, "hello", 5);
    T_EQ_INT(fy_channel_set_blocking(b, true, &err), 0);
    T_ASSERT(!(fcntl(b->rfd, F_GETFL) & O_NONBLOCK));

    /* write_all on a non-blocking channel rides out EAGAIN and short
     * writes; the bytes arrive whole and in order. */
    T_EQ_INT(fy_channel_set_blocking(a, false, &err), 0);
    Reader rd = { b, 16 << 20, -1 };
    pthread_t t;
    pthread_create(&t, NULL, reader_thread, &rd);
    uint8_t *data = malloc(rd.len);
    fill_pattern(data, rd.len, 5);
    /* As several iovecs, so a short write resumes mid-vector. */
    struct iovec v[5];
    size_t cuts[] = { 0, 1, 4096, 1 << 20, 9 << 20, rd.len };
    for (int i = 0; i < 5; i++)
        v[i] = (struct iovec){ data + cuts[i], cuts[i + 1] - cuts[i] };
    T_EQ_INT(fy_channel_writev_all(a, v, 5, &err), 0);
    pthread_join(t, NULL);
    T_EQ_INT(rd.r, 0);
    free(data);
    fy_channel_close(a, NULL);
    fy_channel_close(b, NULL);
    T_ASSERT(err == NULL);
}

/* fd: hands the channel a duplicate, for outgoing and incoming alike. */
static void test_fd_uri(void)
{
    FyError *err = NULL;
    int sv[2];
    T_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char out_uri[32], in_uri[32];
    snprintf(out_uri, sizeof(out_uri), "fd:%d", sv[0]);
    snprintf(in_uri, sizeof(in_uri), "fd:%d", sv[1]);
    FyChannel *out = fy_channel_open_outgoing(out_uri, &err);
    FyListener *l = fy_listener_new(in_uri, &err);
    FyChannel *in = l ? fy_listener_accept(l, -1, &err) : NULL;
    T_ASSERT(out && in);
    T_EQ_STR(out->name, out_uri);
    T_ASSERT(out->features & FY_CHANNEL_FEATURE_DUPLEX);
    T_EQ_INT(fy_channel_write_all(out, "fd!", 3, &err), 0);
    char buf[3];
    T_EQ_INT(fy_channel_read_all(in, buf, 3, &err), 0);
    T_EQ_MEM(buf, "fd!", 3);
    fy_channel_close(out, NULL);
    fy_channel_close(in, NULL);
    fy_listener_free(l);
    T_EQ_INT(close(sv[0]), 0); /* still ours */
    T_EQ_INT(close(sv[1]), 0);

    T_ASSERT(fy_channel_open_outgoing("fd:987", &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "fd:987: file descriptor 987: Bad file descriptor");
    fy_error_clear(&err);
    T_ASSERT(fy_listener_new("fd:987", &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "Bad file descriptor");
    fy_error_clear(&err);
}

int main(void)
{
    int fds = count_fds();
    T_RUN(test_fd_pipe);
    T_RUN(test_pipe_broken_no_sigpipe);
    T_RUN(test_file);
    T_RUN(test_file_offset);
    T_RUN(test_unix);
    T_RUN(test_tcp_ipv4);
    T_RUN(test_tcp_ipv6);
    T_RUN(test_tcp_names);
    T_RUN(test_exec_both_ways);
    T_RUN(test_exec_exit_status);
    T_RUN(test_shutdown_wakes);
    T_RUN(test_listener_shutdown);
    T_RUN(test_fd_passing);
    T_RUN(test_nonblocking);
    T_RUN(test_fd_uri);
    if (count_fds() != fds)
        printf("# %d descriptors leaked\n", count_fds() - fds);
    T_EQ_INT(count_fds(), fds);
    return t_done();
}
