/* Runner processes as the daemon sees them: spawned in their own session (so that they
 * outlive a daemon restart and a terminal's signals), watched through a pidfd (pollable, and
 * immune to pid reuse), and re-adopted by a restarted daemon after checking that the pid
 * still runs the runner it recorded. */
#ifndef GW_DAEMON_PROC_H
#define GW_DAEMON_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct gw_proc {
    pid_t pid;       /* 0 = none */
    int pidfd;       /* readable once the process exited; -1 = none */
    bool child;      /* ours to reap (spawned by this daemon instance) */
};

/* Most fds handed to one child (a migration session's streams). */
#define GW_PROC_MAX_PASS_FDS 16u

/* Spawns argv[0] with stdin from /dev/null, stdout appended to out_path and stderr to
 * log_path, in a new session with default signal dispositions. pass_fds[0..npass) (npass <=
 * GW_PROC_MAX_PASS_FDS, else -EINVAL) are handed to the child as its fds 3, 4, ... in that
 * order (the caller keeps its own copies). 0 or -errno. */
int gw_proc_spawn(char *const argv[], const char *out_path, const char *log_path, const int *pass_fds,
                  unsigned npass, struct gw_proc *p);

/* Takes over a process started by an earlier daemon: pid must be alive and its command line
 * must contain both needles (the runner binary's name and its control socket path), and it
 * must be this user's (another user's process at that pid is not our runner).
 * 0, -ESRCH (gone or someone else), or -errno. */
int gw_proc_adopt(pid_t pid, const char *needle1, const char *needle2, struct gw_proc *p);

/* Sends sig through the pidfd. 0 or -errno (-ESRCH once it exited). */
int gw_proc_signal(const struct gw_proc *p, int sig);

/* True once the process has exited (the pidfd is readable). */
bool gw_proc_exited(const struct gw_proc *p);

/* After it exited: reaps a child and describes how it ended ("exited with code 4", "killed
 * by signal 9"; "exited" for an adopted process, whose status is not ours to see).
 * *code gets the exit code, 128+signal, or -1 when unknown. Closes the pidfd. */
void gw_proc_reap(struct gw_proc *p, int *code, char *why, size_t len);

#endif
