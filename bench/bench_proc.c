/* Child processes for benchmarks (see bench_proc.h). */
#include "bench/bench_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/common/json.h"
#include "engine/common/util.h"

int gw_bench_sibling(const char *name, char *out, size_t outlen)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) return -errno;
    self[n] = 0;
    if ((size_t)snprintf(out, outlen, "%s/%s", dirname(self), name) >= outlen) return -ENAMETOOLONG;
    return access(out, X_OK) ? -errno : 0;
}

static int status_of(int st)
{
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int gw_bench_run(char *const argv[], char *out, size_t outlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -errno;
    pid_t pid = fork();
    if (pid < 0) { close(p[0]); close(p[1]); return -errno; }
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    for (;;) {
        char tmp[4096];
        ssize_t n = read(p[0], tmp, sizeof tmp);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        size_t take = (size_t)n;
        if (len + take > outlen - 1) take = outlen - 1 - len;
        memcpy(out + len, tmp, take);
        len += take;
    }
    out[len] = 0;
    close(p[0]);
    return gw_bench_wait(pid);
}

pid_t gw_bench_spawn(char *const argv[], const char *stdout_path)
{
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
        int fd = open(stdout_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, STDOUT_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int gw_bench_wait(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -errno;
    return status_of(st);
}

int gw_bench_poll(pid_t pid, int *status)
{
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) < 0)
        if (errno != EINTR) return -errno;
    if (r == 0) return 0;
    *status = status_of(st);
    return 1;
}

int gw_bench_rss_private(pid_t pid, uint64_t *bytes)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -errno;
    unsigned long long rss = 0, shmem = 0, v;
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &v) == 1) { rss = v; seen |= 1; }
        else if (sscanf(line, "RssShmem: %llu kB", &v) == 1) { shmem = v; seen |= 2; }
    }
    fclose(f);
    if (seen != 3) return -ENOENT; /* a zombie has no memory lines */
    *bytes = (rss > shmem ? rss - shmem : 0) * 1024ull;
    return 0;
}

int gw_bench_read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) return -errno;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
    return 0;
}

void gw_bench_last_json(const char *text, char *out, size_t cap)
{
    const char *best = "";
    for (const char *p = text; (p = strchr(p, '{')); p++)
        if (p == text || p[-1] == '\n') best = p;
    size_t len = strcspn(best, "\n");
    if (len >= cap) len = cap - 1;
    memcpy(out, best, len);
    out[len] = 0;
}

int gw_bench_wait_ready(const char *vm_bin, const char *sock, unsigned secs)
{
    char *argv[] = {(char *)vm_bin, "status", "--control", (char *)sock, "--json", NULL};
    char out[16384];
    uint64_t deadline = gw_now_ns() + secs * 1000000000ull;
    while (gw_now_ns() < deadline) {
        usleep(100000);
        bool ready = false;
        if (gw_bench_run(argv, out, sizeof out) == 0 && !gw_json_get_bool(out, "guest_ready", &ready) && ready) return 0;
    }
    return -ETIMEDOUT;
}
