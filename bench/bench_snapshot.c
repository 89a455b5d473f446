/* `godwit-bench snapshot`: suspend a running dirtier VM to a file and restore it in a new
 * process, as an operator would with godwit-vm; report save and restore throughput, whether
 * the restored memory equals the saved memory, and the guest's own verification.
 * Baseline: writing the same number of bytes sequentially to a file in the same directory
 * (write + fsync), i.e. what the disk allows; ratio = save throughput / baseline. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"

/* Sequential write of len bytes + fsync: the disk's own speed for this file system. */
static double baseline_write_mib_s(const char *dir, uint64_t len)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/baseline.bin", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return 0;
    size_t chunk = 4 << 20;
    uint8_t *buf = malloc(chunk);
    if (!buf) { close(fd); return 0; }
    for (size_t i = 0; i < chunk; i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
    uint64_t t0 = gw_now_ns(), done = 0;
    while (done < len) {
        size_t n = len - done < chunk ? (size_t)(len - done) : chunk;
        if (gw_write_full(fd, buf, n)) break;
        done += n;
    }
    fsync(fd);
    double s = (gw_now_ns() - t0) / 1e9;
    close(fd);
    unlink(path);
    free(buf);
    return s > 0 ? done / 1048576.0 / s : 0;
}

int gw_bench_snapshot(int argc, char **argv)
{
    struct gw_bench_opts o = {.memory = 1ull << 30, .ws = 512ull << 20, .rate = 32ull << 20, .seconds = 2,
                              .vcpus = 1, .pattern = "random"};
    if (gw_bench_parse_opts("snapshot", argc, argv, &o)) return 2;
    uint64_t memory = o.memory, ws = o.ws, rate = o.rate, vcpus = o.vcpus, seconds = o.seconds;
    const char *pattern = o.pattern, *dir_opt = o.dir;
    bool json = o.json;
    char vm_bin[4096];
    if (gw_bench_sibling("godwit-vm", vm_bin, sizeof vm_bin)) {
        fprintf(stderr, "godwit-bench: godwit-vm not found next to godwit-bench\n");
        return 1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/godwit-bench.XXXXXX", dir_opt ? dir_opt : "/tmp");
    if (!mkdtemp(dir)) { perror("godwit-bench: mkdtemp"); return 1; }
    char sock[4200], snap[4200], run_out[4200], spec[200], mem_s[32], vc_s[8], secs_s[16];
    snprintf(sock, sizeof sock, "%s/vm.sock", dir);
    snprintf(snap, sizeof snap, "%s/vm.snap", dir);
    snprintf(run_out, sizeof run_out, "%s/run.json", dir);
    snprintf(spec, sizeof spec, "dirtier:ws=%llu,rate=%llu,pattern=%s", (unsigned long long)ws,
             (unsigned long long)rate, pattern);
    snprintf(mem_s, sizeof mem_s, "%llu", (unsigned long long)memory);
    snprintf(vc_s, sizeof vc_s, "%llu", (unsigned long long)vcpus);
    snprintf(secs_s, sizeof secs_s, "%llu", (unsigned long long)seconds);

    char *run_argv[] = {vm_bin, "run", "--name", "bench", "--memory", mem_s, "--vcpus", vc_s, "--guest", spec,
                        "--control", sock, "--json", NULL};
    pid_t pid = gw_bench_spawn(run_argv, run_out);
    char out[8192], err[256] = "";
    bool ready = false;
    uint64_t deadline = gw_now_ns() + 180ull * 1000000000ull;
    char *status_argv[] = {vm_bin, "status", "--control", sock, "--json", NULL};
    while (!ready && gw_now_ns() < deadline) {
        usleep(100000);
        if (gw_bench_run(status_argv, out, sizeof out) == 0) gw_json_get_bool(out, "guest_ready", &ready);
    }
    int status = 0;
    uint64_t save_ns = 0, save_bytes = 0;
    char save_digest[40] = "", restore_digest[40] = "";
    double restore_mib_s = 0;
    uint64_t verify_errors = 0, pages_before = 0, pages_after = 0;
    if (!ready) { snprintf(err, sizeof err, "guest never became ready"); status = 1; }
    if (!status) {
        sleep(1); /* let the guest dirty memory while running */
        char *save_argv[] = {vm_bin, "save", "--control", sock, "--file", snap, "--stop", "--json", NULL};
        if (gw_bench_run(save_argv, out, sizeof out) != 0 || gw_json_get_u64(out, "save_ns", &save_ns) ||
            gw_json_get_u64(out, "save_data_bytes", &save_bytes) ||
            gw_json_get_str(out, "memory_digest", save_digest, sizeof save_digest)) {
            snprintf(err, sizeof err, "save failed");
            status = 1;
        }
        gw_json_get_u64(out, "guest_pages_written", &pages_before);
    }
    if (pid > 0) {
        if (status) kill(pid, SIGTERM);
        gw_bench_wait(pid);
    }
    if (!status) {
        char *restore_argv[] = {vm_bin, "restore", "--file", snap, "--seconds", secs_s, "--json", NULL};
        int rc = gw_bench_run(restore_argv, out, sizeof out);
        if (gw_json_get_double(out, "restore_mib_s", &restore_mib_s) ||
            gw_json_get_str(out, "memory_digest", restore_digest, sizeof restore_digest) ||
            gw_json_get_u64(out, "guest_verify_errors", &verify_errors)) {
            snprintf(err, sizeof err, "restore failed (exit %d)", rc);
            status = 1;
        }
        gw_json_get_u64(out, "guest_pages_written", &pages_after);
        if (!status && rc != 0) { snprintf(err, sizeof err, "restored guest failed (exit %d)", rc); status = 1; }
    }
    double save_mib_s = save_ns ? save_bytes / 1048576.0 / (save_ns / 1e9) : 0;
    double base = status ? 0 : baseline_write_mib_s(dir, save_bytes ? save_bytes : ws);
    bool equal = save_digest[0] && !strcmp(save_digest, restore_digest);
    bool ran_on = pages_after > pages_before;
    if (json) {
        printf("{\"bench\":\"snapshot\",\"status\":\"%s\",\"error\":\"%s\",\"memory_bytes\":%llu,\"ws_bytes\":%llu,"
               "\"saved_data_bytes\":%llu,\"save_ms\":%.1f,\"save_mib_s\":%.1f,\"restore_mib_s\":%.1f,"
               "\"memory_digest_equal\":%s,\"guest_verify_errors\":%llu,\"guest_ran_on\":%s,"
               "\"baseline\":\"sequential write+fsync in the same directory\",\"baseline_mib_s\":%.1f,"
               "\"ratio_vs_baseline\":%.3f}\n",
               status ? "error" : "ok", err, (unsigned long long)memory, (unsigned long long)ws,
               (unsigned long long)save_bytes, save_ns / 1e6, save_mib_s, restore_mib_s, equal ? "true" : "false",
               (unsigned long long)verify_errors, ran_on ? "true" : "false", base, base > 0 ? save_mib_s / base : 0);
    } else {
        printf("snapshot bench: saved %.0f MiB at %.0f MiB/s (disk baseline %.0f MiB/s), restored at %.0f MiB/s, "
               "digest %s, %llu verify errors%s%s\n", save_bytes / 1048576.0, save_mib_s, base, restore_mib_s,
               equal ? "equal" : "DIFFERENT", (unsigned long long)verify_errors, status ? ", error: " : "", err);
    }
    unlink(snap);
    unlink(run_out);
    unlink(sock);
    rmdir(dir);
    return status || !equal || verify_errors ? 1 : 0;
}
