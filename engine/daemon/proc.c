/* Runner processes: spawn, adopt, signal, reap (see proc.h). */
#include "engine/daemon/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int gw_proc_spawn(char *const argv[], const char *out_path, const char *log_path, const int *pass_fds,
                  unsigned npass, struct gw_proc *p)
{
    /* Each fd to pass is first copied above the child's fds 3..3+npass: a dup2 onto itself
     * would keep close-on-exec, and one fd's target could be another's source. The copies
     * are close-on-exec; only the dup2 targets reach the child. */
    int tmp[GW_PROC_MAX_PASS_FDS];
    if (npass > GW_PROC_MAX_PASS_FDS) return -EINVAL;
    for (unsigned i = 0; i < npass; i++) {
        if ((tmp[i] = fcntl(pass_fds[i], F_DUPFD_CLOEXEC, 3 + GW_PROC_MAX_PASS_FDS)) < 0) {
            int e = -errno;
            while (i-- > 0) close(tmp[i]);
            return e;
        }
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    for (unsigned i = 0; i < npass; i++) posix_spawn_file_actions_adddup2(&fa, tmp[i], 3 + (int)i);
    /* The daemon ignores SIGPIPE and blocks SIGTERM/SIGINT for its signalfd: neither may
     * leak into the runner, which sets up its own. */
    sigset_t none, defs;
    sigemptyset(&none);
    sigemptyset(&defs);
    sigaddset(&defs, SIGPIPE);
    sigaddset(&defs, SIGTERM);
    sigaddset(&defs, SIGINT);
    sigaddset(&defs, SIGHUP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defs);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int r = posix_spawn(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    for (unsigned i = 0; i < npass; i++) close(tmp[i]);
    if (r) return -r;
    /* An exited but unreaped child still has a pidfd: no race with an early exit. */
    int pfd = pidfd_open_(pid);
    if (pfd < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -e;
    }
    fcntl(pfd, F_SETFD, FD_CLOEXEC);
    *p = (struct gw_proc){.pid = pid, .pidfd = pfd, .child = true};
    return 0;
}

/* Reads /proc/pid/cmdline with its NULs turned into spaces. */
static int read_cmdline(pid_t pid, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0) return -ESRCH;  /* a zombie has an empty command line */
    for (ssize_t i = 0; i < n; i++)
        if (!buf[i]) buf[i] = ' ';
    buf[n] = 0;
    return 0;
}

int gw_proc_adopt(pid_t pid, const char *needle1, const char *needle2, struct gw_proc *p)
{
    if (pid <= 1) return -ESRCH;
    /* Open the pidfd first, then check the command line: if the pid was reused between
     * the two, the check fails; if it passes, the pidfd refers to the right process. */
    int pfd = pidfd_open_(pid);
    if (pfd < 0) return -ESRCH;
    fcntl(pfd, F_SETFD, FD_CLOEXEC);
    char cmd[4096], dir[32];
    struct stat st;
    snprintf(dir, sizeof dir, "/proc/%d", (int)pid);
    /* Ours only: a process another user started at the recorded pid, whose command line
     * names our runner and socket, would otherwise pass for the VM (and its restart policy
     * would never fire). */
    if (stat(dir, &st) || st.st_uid != geteuid() || read_cmdline(pid, cmd, sizeof cmd) || !strstr(cmd, needle1) ||
        !strstr(cmd, needle2)) {
        close(pfd);
        return -ESRCH;
    }
    *p = (struct gw_proc){.pid = pid, .pidfd = pfd, .child = false};
    return 0;
}

int gw_proc_signal(const struct gw_proc *p, int sig)
{
    if (p->pidfd < 0) return -ESRCH;
    return syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) ? -errno : 0;
}

bool gw_proc_exited(const struct gw_proc *p)
{
    if (p->pidfd < 0) return true;
    struct pollfd pf = {.fd = p->pidfd, .events = POLLIN};
    return poll(&pf, 1, 0) > 0;
}

void gw_proc_reap(struct gw_proc *p, int *code, char *why, size_t len)
{
    *code = -1;
    snprintf(why, len, "exited");
    if (p->child) {
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            if (WIFEXITED(st)) {
                *code = WEXITSTATUS(st);
                snprintf(why, len, "exited with code %d", *code);
            } else if (WIFSIGNALED(st)) {
                *code = 128 + WTERMSIG(st);
                snprintf(why, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
            }
        }
    }
    if (p->pidfd >= 0) close(p->pidfd);
    *p = (struct gw_proc){.pidfd = -1};
}
