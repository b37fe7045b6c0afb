/*
 * channel-exec.c: `exec:COMMAND`, a shell command whose stdin (outgoing) or
 * stdout (incoming) carries the stream. Closing waits for the command, and
 * a failed command is a failed migration: its exit status is the error.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ferry/channel.h"

extern char **environ;
extern const FyChannelOps fy_channel_fd_ops;

typedef struct {
    pid_t pid;
    char *cmd;
} ExecChannel;

static int exec_shutdown(FyChannel *c, FyShutdownHow how, FyError **errp)
{
    /* A pipe cannot be shut down; ending the command wakes the other side. */
    ExecChannel *e = c->priv;
    if (e->pid > 0)
        kill(e->pid, SIGTERM);
    return 0;
}

static int exec_close(FyChannel *c, FyError **errp)
{
    ExecChannel *e = c->priv;
    close(c->rfd >= 0 ? c->rfd : c->wfd);
    int status = 0, r = 0;
    while (waitpid(e->pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        fy_error_setg(errp, "%s: command exited with status %d", c->name,
                      WEXITSTATUS(status));
        r = -1;
    } else if (WIFSIGNALED(status)) {
        fy_error_setg(errp, "%s: command killed by signal %d", c->name, WTERMSIG(status));
        r = -1;
    }
    free(e->cmd);
    free(e);
    return r;
}

static ssize_t exec_readv(FyChannel *c, const struct iovec *iov, int iovcnt,
                          int *fds, size_t *nfds, FyError **errp)
{
    return fy_channel_fd_ops.readv(c, iov, iovcnt, NULL, NULL, errp);
}

static ssize_t exec_writev(FyChannel *c, const struct iovec *iov, int iovcnt,
                           const int *fds, size_t nfds, FyError **errp)
{
    /* A command that exits early closes the pipe: EPIPE, not a signal. */
    return fy_channel_fd_ops.writev(c, iov, iovcnt, fds, nfds, errp);
}

static const FyChannelOps exec_ops = {
    .readv = exec_readv,
    .writev = exec_writev,
    .shutdown = exec_shutdown,
    .set_blocking = NULL,
    .close = exec_close,
};

FyChannel *fy_channel_exec_new(const char *cmd, bool for_write, FyError **errp)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fy_error_setg_errno(errp, errno, "exec:%s: pipe", cmd);
        return NULL;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (for_write)
        posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    else
        posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char *argv[] = { "sh", "-c", (char *)cmd, NULL };
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) {
        fy_error_setg_errno(errp, rc, "exec:%s: spawn", cmd);
        close(p[0]);
        close(p[1]);
        return NULL;
    }
    close(for_write ? p[0] : p[1]);
    FyChannel *c = fy_channel_alloc(&exec_ops, "exec:%s", cmd);
    ExecChannel *e = calloc(1, sizeof(*e));
    if (!c || !e) {
        free(e);
        fy_channel_close(c, NULL);
        fy_error_setg(errp, "exec:%s: out of memory", cmd);
        return NULL;
    }
    e->pid = pid;
    c->priv = e;
    if (for_write)
        c->wfd = p[1];
    else
        c->rfd = p[0];
    /* writev on a pipe: MSG_NOSIGNAL is unavailable, so ignore SIGPIPE for
     * the process (a library may not install handlers, but a pipe write in
     * a migration must fail with EPIPE, never kill the VM). */
    signal(SIGPIPE, SIG_IGN);
    return c;
}
