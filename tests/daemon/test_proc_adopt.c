/* Unit test for gw_proc_adopt (engine/daemon/proc.c): a restarted daemon takes over a runner
 * by pid only when the process is this user's and its command line names the runner and its
 * socket; another user's process at that pid with the same command line is not adopted. */
#include "engine/daemon/proc.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* A process whose command line holds both needles, running as uid (or as we are: -1). */
static pid_t impostor(uid_t uid)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* A group of its own, ended whole (sh's sleep too), and no hold on our output, which
         * a test runner waits on. */
        setpgid(0, 0);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { dup2(null, 1); dup2(null, 2); }
        if (uid != (uid_t)-1 && (setgid(uid) || setuid(uid))) _exit(126);
        execl("/bin/sh", "sh", "-c", "sleep 30", "godwit-vm-test", "/state/vms/x/control.sock", (char *)NULL);
        _exit(127);
    }
    usleep(200 * 1000);   /* exec done: the command line is the new one */
    return pid;
}

static void end(pid_t pid)
{
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

GW_TEST(adopts_only_this_users_process)
{
    if (geteuid() != 0) { gw_test_skip("needs root to start another user's process"); return; }
    struct gw_proc p;
    pid_t mine = impostor((uid_t)-1);
    REQUIRE(mine > 0);
    CHECK_EQ(gw_proc_adopt(mine, "godwit-vm-test", "/state/vms/x/control.sock", &p), 0);
    close(p.pidfd);
    CHECK_EQ(gw_proc_adopt(mine, "godwit-vm-test", "/state/vms/y/control.sock", &p), -ESRCH);
    end(mine);
    pid_t theirs = impostor(65534);
    REQUIRE(theirs > 0);
    CHECK_EQ(gw_proc_adopt(theirs, "godwit-vm-test", "/state/vms/x/control.sock", &p), -ESRCH);
    end(theirs);
}
