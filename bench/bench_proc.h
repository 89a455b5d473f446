/* Child processes for benchmarks: run a command and capture its standard output, or start
 * one in the background. Benchmarks drive real godwit-vm processes, as an operator would. */
#ifndef GW_BENCH_PROC_H
#define GW_BENCH_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Path of a sibling binary (same directory as this program) into out. */
int gw_bench_sibling(const char *name, char *out, size_t outlen);

/* Runs argv to completion; its stdout goes into out (NUL-terminated, truncated to outlen-1),
 * its stderr to ours. Returns the exit status (0..255) or -errno. */
int gw_bench_run(char *const argv[], char *out, size_t outlen);

/* Starts argv in the background with stdout into out_fd_path (a file). Returns the pid. */
pid_t gw_bench_spawn(char *const argv[], const char *stdout_path);
/* Waits for pid; returns its exit status or -errno. */
int gw_bench_wait(pid_t pid);
/* Whether pid has ended, without waiting: 1 (its exit status in *status), 0 (still running)
 * or -errno. */
int gw_bench_poll(pid_t pid, int *status);

/* Copies the last line of text that starts with '{' (a child's JSON result) into out,
 * without its newline, truncated to cap - 1 bytes; "" when there is none. */
void gw_bench_last_json(const char *text, char *out, size_t cap);

/* Polls `vm_bin status --control sock` until the guest reports ready, for at most secs
 * seconds. 0 or -ETIMEDOUT. */
int gw_bench_wait_ready(const char *vm_bin, const char *sock, unsigned secs);

/* Reads up to cap-1 bytes of path into buf (NUL-terminated). Returns 0 or -errno. */
int gw_bench_read_file(const char *path, char *buf, size_t cap);

#endif
