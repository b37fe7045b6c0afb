/*
 * channel-exec.c: "exec:COMMAND": the stream goes to a shell command's stdin
 * (outgoing) or comes from its stdout (incoming).
 *
 * The child's end is one side of a socketpair rather than a pipe: commands
 * cannot tell the difference, and it lets shutdown(2) wake a reader or
 * writer blocked in another thread (cancel), and sends use MSG_NOSIGNAL.
 * The child runs in its own process group so the whole pipeline
 * (`exec:gzip | ssh ...`) can be killed at once.
 *
 * Lifecycle:
 *   spawned --close--> our end closed, wait for the child; a non-zero exit
 *                      or a death by signal is the close error
 *   spawned --shutdown--> our end shut down (our blocked reader or writer
 *                      wakes, the child sees EOF/EPIPE) --close--> wait a
 *                      little for the child to finish on its own, then
 *                      SIGTERM and at last SIGKILL the group; a death by
 *                      our signal is no error
 * An exec channel has no return path: only one direction exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/io-int.h"

extern char **environ;

#define EXEC_GRACE_MS 200 /* after a shutdown: to finish on its own */
#define EXEC_TERM_MS 1000 /* then after SIGTERM, before SIGKILL */

static int spawn_child(const char *cmd, int child_fd, bool child_reads,
                       pid_t *pid, FyError **errp)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dfl;
    int r;

    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* The child gets our end as stdin (we write) or stdout (we read); for
     * reading, its stdin is /dev/null so it never competes for ours. */
    posix_spawn_file_actions_adddup2(&fa, child_fd, child_reads ? 0 : 1);
    if (!child_reads)
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    /* A thread that blocks or ignores SIGPIPE must not pass that on. */
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                             POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

    char *argv[] = { "sh", "-c", (char *)cmd, NULL };
    r = posix_spawn(pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (r != 0) {
        fy_error_setg_errno(errp, r, "exec:%s: spawn /bin/sh", cmd);
        return -1;
    }
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pid_t wait_child(pid_t pid, int *status, int options)
{
    pid_t r;
    do
        r = waitpid(pid, status, options);
    while (r < 0 && errno == EINTR);
    return r;
}

/* Wait up to ms for the child; 0 if it is still running. */
static pid_t wait_child_for(pid_t pid, int *status, int ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        pid_t r = wait_child(pid, status, WNOHANG);
        if (r != 0 || now_ms() >= end)
            return r;
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

/* After a shutdown (a cancel) the child may never finish: it may ignore
 * its stdin, or its own output may be stuck. Give it a moment to end on
 * the EOF it was given, then SIGTERM the group, then SIGKILL. */
static pid_t reap_after_shutdown(FdChan *fc, int *status)
{
    pid_t r = wait_child_for(fc->pid, status, EXEC_GRACE_MS);
    if (r != 0)
        return r;
    fc->killed = true;
    kill(-fc->pid, SIGTERM);
    r = wait_child_for(fc->pid, status, EXEC_TERM_MS);
    if (r != 0)
        return r;
    kill(-fc->pid, SIGKILL);
    return wait_child(fc->pid, status, 0);
}

static int exec_close(FyChannel *c, FyError **errp)
{
    FdChan *fc = c->priv;
    pid_t pid = fc->pid;
    bool shut = fc->shut_read || fc->shut_write;
    int status = 0;
    char *name = c->name;

    /* Closing our end first: the child sees EOF (or EPIPE) and can finish. */
    int fd = c->rfd >= 0 ? c->rfd : c->wfd;
    close(fd);
    c->rfd = c->wfd = -1;

    pid_t r = shut ? reap_after_shutdown(fc, &status) : wait_child(pid, &status, 0);
    int wait_errno = errno;
    bool killed = fc->killed;
    free(fc);
    c->priv = NULL;
    if (r < 0) {
        if (wait_errno == ECHILD) /* someone else reaped it: nothing to say */
            return 0;
        fy_error_setg_errno(errp, wait_errno, "%s: waiting for the command", name);
        return -1;
    }
    if (killed)
        return 0; /* we ended it, after a shutdown: not the command's fault */
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        fy_error_setg(errp, "%s: command exited with status %d", name,
                      WEXITSTATUS(status));
        return -1;
    }
    if (WIFSIGNALED(status) && !shut) {
        fy_error_setg(errp, "%s: command killed by signal %d (%s)", name,
                      WTERMSIG(status), strsignal(WTERMSIG(status)));
        return -1;
    }
    return 0;
}

static const FyChannelOps exec_ops = {
    .readv = fy_fd_readv,
    .writev = fy_fd_writev,
    .shutdown = fy_fd_shutdown,
    .set_blocking = fy_fd_set_blocking,
    .close = exec_close,
};

FyChannel *fy_channel_exec_new(const char *cmd, bool for_write, FyError **errp)
{
    int sv[2];
    if (!cmd || !*cmd) {
        fy_error_setg(errp, "exec: empty command");
        return NULL;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fy_error_setg_errno(errp, errno, "exec:%s: socketpair", cmd);
        return NULL;
    }
    /* One-way: the child's read side (or ours) has nothing to say back. */
    shutdown(sv[0], for_write ? SHUT_RD : SHUT_WR);
    shutdown(sv[1], for_write ? SHUT_WR : SHUT_RD);

    pid_t pid;
    if (spawn_child(cmd, sv[1], for_write, &pid, errp) < 0) {
        close(sv[0]);
        close(sv[1]);
        return NULL;
    }
    close(sv[1]);
    FyChannel *c = fy_fd_channel_new(for_write ? -1 : sv[0], for_write ? sv[0] : -1,
                                     errp, "exec:%s", cmd);
    if (!c) {
        close(sv[0]);
        kill(-pid, SIGKILL);
        wait_child(pid, &(int){ 0 }, 0);
        return NULL;
    }
    FdChan *fc = c->priv;
    fc->pid = pid;
    c->ops = &exec_ops;
    /* A socket underneath, but not a duplex one, and no fd passing. */
    c->features &= ~(unsigned)(FY_CHANNEL_FEATURE_DUPLEX | FY_CHANNEL_FEATURE_FD_PASS);
    return c;
}
