/*
 * run-hmp.c: the human monitor on stdin/stdout (`ferry run --monitor
 * stdio`), on its own thread.
 *
 * The thread polls stdin and a wake-up pipe, so run_hmp_stop() can end it
 * while it waits for input. Commands may block (a `migrate` without -d
 * waits for the migration, as QEMU's does), so whoever stops the monitor
 * first cancels what could keep it waiting. Output goes straight to fd 1
 * with write(2), never through stdio buffers that the guest console also
 * writes around.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run-int.h"

#define MAX_LINE 4096

struct RunHmp {
    FyMonitor *mon;
    int wake[2];
    pthread_t thread;
    char line[MAX_LINE];
    size_t len;
    bool overlong;
};

static void out(const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(STDOUT_FILENO, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void run_line(RunHmp *h)
{
    h->line[h->len] = '\0';
    if (h->overlong) {
        out("the command line is too long\n");
    } else {
        char *o = fy_hmp_execute(h->mon, h->line, true, NULL);
        if (o)
            out(o);
        free(o);
    }
    h->len = 0;
    h->overlong = false;
    out(fy_hmp_prompt());
}

static void feed(RunHmp *h, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            run_line(h);
        } else if (buf[i] == '\r') {
            continue;
        } else if (h->len + 1 < MAX_LINE) {
            h->line[h->len++] = buf[i];
        } else {
            h->overlong = true;
        }
    }
}

static void *hmp_thread(void *opaque)
{
    RunHmp *h = opaque;
    out(fy_hmp_banner());
    out(fy_hmp_prompt());
    for (;;) {
        struct pollfd p[2] = {
            { .fd = STDIN_FILENO, .events = POLLIN },
            { .fd = h->wake[0], .events = POLLIN },
        };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        char buf[1024];
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            break;   /* end of input: the monitor goes away, the VM runs on */
        feed(h, buf, (size_t)n);
    }
    return NULL;
}

RunHmp *run_hmp_start(FyMonitor *mon, FyError **errp)
{
    RunHmp *h = calloc(1, sizeof(*h));
    if (!h) {
        fy_error_setg(errp, "out of memory");
        return NULL;
    }
    h->mon = mon;
    if (pipe2(h->wake, O_CLOEXEC) < 0) {
        fy_error_setg_errno(errp, errno, "monitor: pipe");
        free(h);
        return NULL;
    }
    if (pthread_create(&h->thread, NULL, hmp_thread, h) != 0) {
        fy_error_setg(errp, "monitor: cannot start its thread");
        close(h->wake[0]);
        close(h->wake[1]);
        free(h);
        return NULL;
    }
    return h;
}

void run_hmp_stop(RunHmp *h)
{
    if (!h)
        return;
    char c = 1;
    if (write(h->wake[1], &c, 1) < 0) {
        /* the pipe is empty and ours: cannot fail in practice */
    }
    pthread_join(h->thread, NULL);
    close(h->wake[0]);
    close(h->wake[1]);
    free(h);
}
