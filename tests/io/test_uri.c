/*
 * test_uri.c: every URI form parses to the right fields, and every kind of
 * mistake is refused with a message that names the URI and the reason.
 */
#include <string.h>

#include "ferry/uri.h"
#include "t.h"

static void test_tcp_forms(void)
{
    FyUri u;
    FyError *err = NULL;

    T_EQ_INT(fy_uri_parse("tcp:127.0.0.1:4444", &u, &err), 0);
    T_EQ_INT(u.kind, FY_URI_TCP);
    T_EQ_STR(u.host, "127.0.0.1");
    T_EQ_STR(u.port, "4444");
    fy_uri_clear(&u);

    T_EQ_INT(fy_uri_parse("tcp:[::1]:4444", &u, &err), 0);
    T_EQ_STR(u.host, "::1");
    T_EQ_STR(u.port, "4444");
    fy_uri_clear(&u);

    T_EQ_INT(fy_uri_parse("tcp:[fe80::1%lo]:65535", &u, &err), 0);
    T_EQ_STR(u.host, "fe80::1%lo");
    T_EQ_STR(u.port, "65535");
    fy_uri_clear(&u);

    T_EQ_INT(fy_uri_parse("tcp:localhost:0", &u, &err), 0);
    T_EQ_STR(u.host, "localhost");
    T_EQ_STR(u.port, "0");
    fy_uri_clear(&u);

    /* An empty host means every address (listen) or this host (connect). */
    T_EQ_INT(fy_uri_parse("tcp::4444", &u, &err), 0);
    T_EQ_STR(u.host, "");
    T_EQ_STR(u.port, "4444");
    fy_uri_clear(&u);

    /* Leading zeros are normalised away. */
    T_EQ_INT(fy_uri_parse("tcp:h:00080", &u, &err), 0);
    T_EQ_STR(u.port, "80");
    fy_uri_clear(&u);
    T_ASSERT(err == NULL);
}

static void test_other_forms(void)
{
    FyUri u;
    FyError *err = NULL;

    T_EQ_INT(fy_uri_parse("unix:/tmp/ferry.sock", &u, &err), 0);
    T_EQ_INT(u.kind, FY_URI_UNIX);
    T_EQ_STR(u.path, "/tmp/ferry.sock");
    fy_uri_clear(&u);

    /* The command is the whole rest, colons and all. */
    T_EQ_INT(fy_uri_parse("exec:ssh host:22 'cat > /tmp/x'", &u, &err), 0);
    T_EQ_INT(u.kind, FY_URI_EXEC);
    T_EQ_STR(u.command, "ssh host:22 'cat > /tmp/x'");
    fy_uri_clear(&u);

    T_EQ_INT(fy_uri_parse("fd:7", &u, &err), 0);
    T_EQ_INT(u.kind, FY_URI_FD);
    T_EQ_INT(u.fd, 7);
    fy_uri_clear(&u);

    T_EQ_INT(fy_uri_parse("file:/tmp/x", &u, &err), 0);
    T_EQ_INT(u.kind, FY_URI_FILE);
    T_EQ_STR(u.path, "/tmp/x");
    T_EQ_INT(u.offset, 0);
    fy_uri_clear(&u);

    T_EQ_INT(fy_uri_parse("file:/tmp/x,offset=4096", &u, &err), 0);
    T_EQ_STR(u.path, "/tmp/x");
    T_EQ_INT(u.offset, 4096);
    fy_uri_clear(&u);

    T_EQ_INT(fy_uri_parse("file:/tmp/x,offset=0x1000", &u, &err), 0);
    T_EQ_INT(u.offset, 0x1000);
    fy_uri_clear(&u);

    /* 010 is ten, not octal eight. */
    T_EQ_INT(fy_uri_parse("file:/tmp/x,offset=010", &u, &err), 0);
    T_EQ_INT(u.offset, 10);
    fy_uri_clear(&u);

    /* As in QEMU, only ",offset=" is special; other commas are the path. */
    T_EQ_INT(fy_uri_parse("file:/tmp/a,b", &u, &err), 0);
    T_EQ_STR(u.path, "/tmp/a,b");
    fy_uri_clear(&u);
    T_ASSERT(err == NULL);

    T_EQ_STR(fy_uri_kind_name(FY_URI_TCP), "tcp");
    T_EQ_STR(fy_uri_kind_name(FY_URI_UNIX), "unix");
    T_EQ_STR(fy_uri_kind_name(FY_URI_EXEC), "exec");
    T_EQ_STR(fy_uri_kind_name(FY_URI_FD), "fd");
    T_EQ_STR(fy_uri_kind_name(FY_URI_FILE), "file");
    T_EQ_STR(fy_uri_kind_name((FyUriKind)99), "unknown");
}

/* Parsing uri must fail with a message containing want (and the URI). */
static void refused(const char *uri, const char *want)
{
    FyUri u;
    FyError *err = NULL;
    int r = fy_uri_parse(uri, &u, &err);
    if (r != -1 || !err) {
        T_FAIL("'%s' was accepted", uri ? uri : "(null)");
        if (r == 0)
            fy_uri_clear(&u);
        fy_error_free(err);
        return;
    }
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "invalid migration URI '%s': ",
             uri ? uri : "");
    T_CONTAINS(fy_error_msg(err), prefix);
    T_CONTAINS(fy_error_msg(err), want);
    /* Nothing is left to free after a failure. */
    T_ASSERT(u.path == NULL && u.command == NULL);
    fy_error_free(err);
}

static void test_errors(void)
{
    {
        FyUri u;
        FyError *err = NULL;
        T_EQ_INT(fy_uri_parse("tcp:foo", &u, &err), -1);
        T_EQ_STR(fy_error_msg(err), "invalid migration URI 'tcp:foo': missing port");
        fy_error_free(err);
    }
    refused("tcp:foo:", "missing port");
    refused("tcp:", "missing port");
    refused("tcp:foo:65536", "bad port '65536'");
    refused("tcp:foo:12a", "bad port '12a'");
    refused("tcp:foo:-1", "bad port '-1'");
    refused("tcp:foo: 80", "bad port ' 80'");
    refused("tcp:foo:80,ipv4", "bad port '80,ipv4'");
    refused("tcp:::1:4444", "must be in brackets");
    refused("tcp:[::1:4444", "missing ']'");
    refused("tcp:[::1]4444", "expected ':PORT' after ']'");
    refused("tcp:[::1]", "missing port");
    refused("tcp:[]:4444", "empty IPv6 address");
    char longhost[400];
    memset(longhost, 'h', sizeof(longhost));
    memcpy(longhost, "tcp:", 4);
    memcpy(longhost + 300, ":80", 4);
    refused(longhost, "host name longer than 255 bytes");

    refused("unix:", "empty socket path");
    char longpath[200] = "unix:/";
    memset(longpath + 6, 'p', 150);
    longpath[156] = 0;
    refused(longpath, "longer than the 107 a unix socket allows");

    refused("exec:", "empty command");

    refused("fd:", "missing file descriptor number");
    refused("fd:abc", "bad file descriptor number 'abc'");
    refused("fd:-1", "bad file descriptor number '-1'");
    refused("fd:3x", "bad file descriptor number '3x'");
    refused("fd:99999999999", "bad file descriptor number '99999999999'");

    refused("file:", "empty file path");
    refused("file:,offset=4", "empty file path");
    refused("file:/x,offset=", "bad offset ''");
    refused("file:/x,offset=abc", "bad offset 'abc'");
    refused("file:/x,offset=0x", "bad offset '0x'");
    refused("file:/x,offset=-5", "bad offset '-5'");
    refused("file:/x,offset=12k", "bad offset '12k'");
    refused("file:/x,offset=99999999999999999999", "bad offset");
    refused("file:/x,offset=0xffffffffffffffff", "bad offset"); /* > INT64_MAX */

    refused("rdma:1.2.3.4:5", "unknown transport 'rdma'");
    refused("TCP:1.2.3.4:5", "unknown transport 'TCP'");
    refused("/tmp/x", "missing transport prefix");
    refused("", "empty");
    refused(NULL, "empty");
}

/* The entry points that take a URI refuse a bad one the same way. */
static void test_entry_points_refuse(void)
{
    FyError *err = NULL;
    T_ASSERT(fy_channel_open_outgoing("tcp:foo", &err) == NULL);
    T_EQ_STR(fy_error_msg(err), "invalid migration URI 'tcp:foo': missing port");
    fy_error_clear(&err);
    T_ASSERT(fy_listener_new("bogus:1", &err) == NULL);
    T_CONTAINS(fy_error_msg(err), "unknown transport 'bogus'");
    fy_error_clear(&err);
}

int main(void)
{
    T_RUN(test_tcp_forms);
    T_RUN(test_other_forms);
    T_RUN(test_errors);
    T_RUN(test_entry_points_refuse);
    return t_done();
}
