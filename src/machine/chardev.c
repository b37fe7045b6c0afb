/*
 * chardev.c: the UART's host side. See chardev.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "machine/chardev.h"

struct FyChardev {
    int fd;             /* -1 for "none" */
    bool is_socket;
    pthread_mutex_t lock;
    FyError *err;       /* (lock) first write error */
    char name[64];
};

static int chardev_connect_unix(const char *path, FyError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fy_error_setg(errp, "serial unix:%s: path too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "serial unix:%s: socket", path);
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fy_error_setg_errno(errp, errno, "serial unix:%s: connect", path);
        close(fd);
        return -1;
    }
    return fd;
}

FyChardev *fy_chardev_open(const char *spec, FyError **errp)
{
    int fd = -1;
    bool sock = false;
    if (strcmp(spec, "none") == 0 || spec[0] == '\0') {
        fd = -1;
    } else if (strcmp(spec, "stdio") == 0) {
        fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            fy_error_setg_errno(errp, errno, "serial stdio: dup of stdout");
            return NULL;
        }
    } else if (strncmp(spec, "file:", 5) == 0) {
        fd = open(spec + 5, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            fy_error_setg_errno(errp, errno, "serial file:%s: open", spec + 5);
            return NULL;
        }
    } else if (strncmp(spec, "unix:", 5) == 0) {
        fd = chardev_connect_unix(spec + 5, errp);
        if (fd < 0)
            return NULL;
        sock = true;
    } else {
        fy_error_setg(errp, "serial backend '%s': expected none, stdio, "
                      "file:PATH or unix:PATH", spec);
        return NULL;
    }
    FyChardev *c = calloc(1, sizeof(*c));
    if (!c) {
        if (fd >= 0)
            close(fd);
        fy_error_setg(errp, "serial: out of memory");
        return NULL;
    }
    c->fd = fd;
    c->is_socket = sock;
    pthread_mutex_init(&c->lock, NULL);
    snprintf(c->name, sizeof(c->name), "%.60s", spec);
    return c;
}

static void chardev_fail(FyChardev *c, int err)
{
    pthread_mutex_lock(&c->lock);
    fy_error_setg_errno(&c->err, err, "serial %s: write", c->name);
    pthread_mutex_unlock(&c->lock);
}

void fy_chardev_write(FyChardev *c, const void *buf, size_t len)
{
    if (c->fd < 0)
        return;
    pthread_mutex_lock(&c->lock);
    bool broken = c->err != NULL;
    pthread_mutex_unlock(&c->lock);
    if (broken)
        return;
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = c->is_socket ? send(c->fd, p, len, MSG_NOSIGNAL)
                                 : write(c->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            chardev_fail(c, n < 0 ? errno : EPIPE);
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

const FyError *fy_chardev_error(const FyChardev *c)
{
    FyChardev *w = (FyChardev *)c;
    pthread_mutex_lock(&w->lock);
    const FyError *e = w->err;
    pthread_mutex_unlock(&w->lock);
    return e;
}

void fy_chardev_shutdown(FyChardev *c)
{
    if (c && c->is_socket && c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
}

void fy_chardev_close(FyChardev *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    fy_error_free(c->err);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
