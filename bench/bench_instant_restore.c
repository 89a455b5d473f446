/* `godwit-bench backup --instant-restore --target dir:PATH|rados:auto --json`: how soon a VM
 * restored from a backup runs, and how fast its memory fills behind it.
 *
 * A running dirtier is backed up and stopped; then, in the same run on the same backup:
 *   baseline: the ordinary restore (every chunk read and placed, then the guest starts);
 *   instant:  restore-backup --instant (backup/instant_restore.h).
 * first_instruction_ms: from the request (just before godwit-vm is started) to the guest's
 * first instruction. For the instant restore that is when the runner first saw the guest
 * run (its heartbeat moved; an upper bound, sampled every millisecond); for the ordinary one,
 * when the vCPUs were started (all memory is in by then). Both clocks are CLOCK_MONOTONIC,
 * which the two processes share. fill_mib_s: the instant fill's data bytes over its time
 * while the guest runs. ratio_vs_ordinary = instant first instruction / ordinary. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"

#define FIRST_INSTRUCTION_TARGET_MS 1000.0

struct run {
    char vm_bin[4096], sock[4200], run_out[4200], spec[1200], conf[1024];
    char out[32768], err[512];
};

static int start_cluster(struct run *x)
{
    char script[1200];
    snprintf(script, sizeof script, "%s/scripts/ceph-cluster", GW_SOURCE_DIR);
    char *argv[] = {script, "start", "--size", "16G", NULL};
    if (gw_bench_run(argv, x->out, sizeof x->out) != 0) return -EIO;
    char *nl = x->out + strlen(x->out);
    while (nl > x->out && nl[-1] == '\n') *--nl = 0;
    char *last = strrchr(x->out, '\n');
    snprintf(x->conf, sizeof x->conf, "%s", last ? last + 1 : x->out);
    snprintf(x->spec, sizeof x->spec, "rados:godwit/bench-instant");
    return 0;
}

static void stop_cluster(struct run *x)
{
    char script[1200];
    snprintf(script, sizeof script, "%s/scripts/ceph-cluster", GW_SOURCE_DIR);
    char *argv[] = {script, "stop", x->conf, NULL};
    gw_bench_run(argv, x->out, sizeof x->out);
}

/* A running dirtier, backed up while it runs, then stopped. digest gets the backup's. */
static int make_backup(struct run *x, const struct gw_bench_opts *o, char *digest, size_t dlen)
{
    char gspec[200], mem_s[32];
    snprintf(gspec, sizeof gspec, "dirtier:ws=%llu,rate=%llu,pattern=%s", (unsigned long long)o->ws,
             (unsigned long long)o->rate, o->pattern);
    snprintf(mem_s, sizeof mem_s, "%llu", (unsigned long long)o->memory);
    char *run_argv[] = {x->vm_bin, "run", "--name", "bench", "--memory", mem_s, "--guest", gspec, "--control", x->sock,
                        "--json", NULL};
    pid_t pid = gw_bench_spawn(run_argv, x->run_out);
    if (pid < 0) { snprintf(x->err, sizeof x->err, "cannot start godwit-vm"); return -EIO; }
    bool ready = false;
    uint64_t deadline = gw_now_ns() + 180ull * 1000000000ull;
    char *status_argv[] = {x->vm_bin, "status", "--control", x->sock, "--json", NULL};
    while (!ready && gw_now_ns() < deadline) {
        usleep(100000);
        if (gw_bench_run(status_argv, x->out, sizeof x->out) == 0) gw_json_get_bool(x->out, "guest_ready", &ready);
    }
    int r = 0;
    if (!ready) { snprintf(x->err, sizeof x->err, "guest never became ready"); r = -ETIMEDOUT; }
    if (!r) {
        sleep(1);
        char *backup_argv[] = {x->vm_bin, "backup", "--control", x->sock, "--json", "--store", x->spec,
                               x->conf[0] ? "--ceph-conf" : NULL, x->conf, NULL};
        bool ok = false;
        gw_bench_run(backup_argv, x->out, sizeof x->out);
        gw_json_get_bool(x->out, "ok", &ok);
        if (!ok || gw_json_get_str(x->out, "memory_digest", digest, dlen)) {
            snprintf(x->err, sizeof x->err, "backup failed: %.300s", x->out);
            r = -EIO;
        }
    }
    char *stop_argv[] = {x->vm_bin, "stop", "--control", x->sock, NULL};
    gw_bench_run(stop_argv, x->out, sizeof x->out);
    gw_bench_wait(pid);
    unlink(x->run_out);
    return r;
}

/* One restore as a clone that runs secs seconds; *req_ns is when it was asked for. */
static int restore(struct run *x, bool instant, const char *secs, uint64_t *req_ns)
{
    char *argv[16];
    int n = 0;
    char *fixed[] = {x->vm_bin, "restore-backup", "--vm", "bench", "--name", "bench-clone", "--seconds", (char *)secs,
                     "--json", "--store", x->spec};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) argv[n++] = fixed[i];
    if (x->conf[0]) { argv[n++] = "--ceph-conf"; argv[n++] = x->conf; }
    if (instant) argv[n++] = "--instant";
    argv[n] = NULL;
    *req_ns = gw_now_ns();
    int rc = gw_bench_run(argv, x->out, sizeof x->out);
    if (rc) snprintf(x->err, sizeof x->err, "%s restore failed (exit %d)", instant ? "instant" : "ordinary", rc);
    return rc ? -EIO : 0;
}

int gw_bench_instant_restore(int argc, char **argv)
{
    struct gw_bench_opts o = {.memory = 1ull << 30, .ws = 512ull << 20, .rate = 32ull << 20, .seconds = 3,
                              .vcpus = 1, .pattern = "random", .target = "rados:auto"};
    if (gw_bench_parse_opts("backup --instant-restore", argc, argv, &o)) return 2;
    struct run *x = calloc(1, sizeof *x);
    if (!x) return 1;
    int status = 0;
    if (gw_bench_sibling("godwit-vm", x->vm_bin, sizeof x->vm_bin)) { fprintf(stderr, "godwit-bench: godwit-vm not found\n"); free(x); return 1; }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/godwit-bench-instant.XXXXXX", o.dir ? o.dir : "/tmp");
    if (!mkdtemp(dir)) { perror("godwit-bench: mkdtemp"); free(x); return 1; }
    snprintf(x->sock, sizeof x->sock, "%s/vm.sock", dir);
    snprintf(x->run_out, sizeof x->run_out, "%s/run.json", dir);
    bool auto_cluster = !strcmp(o.target, "rados:auto");
    if (auto_cluster) {
        if (start_cluster(x)) { snprintf(x->err, sizeof x->err, "cannot start a Ceph cluster"); status = 1; }
    } else if (!strncmp(o.target, "dir:", 4) || !strncmp(o.target, "rados:", 6)) {
        snprintf(x->spec, sizeof x->spec, "%s", o.target);
    } else {
        fprintf(stderr, "godwit-bench backup --instant-restore: --target dir:PATH or rados:auto\n");
        rmdir(dir);
        free(x);
        return 2;
    }
    char digest[40] = "", secs[16];
    snprintf(secs, sizeof secs, "%llu", (unsigned long long)o.seconds);
    if (!status && make_backup(x, &o, digest, sizeof digest)) status = 1;

    /* Baseline: the ordinary restore of the same backup. */
    uint64_t req = 0, started = 0, ord_verify_errors = 1;
    double ord_ms = 0, ord_mib_s = 0, ord_first_ms = 0;
    if (!status && !restore(x, false, secs, &req)) {
        if (gw_json_get_double(x->out, "restore_ms", &ord_ms) || gw_json_get_u64(x->out, "restore_start_mono_ns", &started) ||
            gw_json_get_u64(x->out, "guest_verify_errors", &ord_verify_errors))
            status = 1;
        gw_json_get_double(x->out, "restore_mib_s", &ord_mib_s);
        ord_first_ms = started > req ? (started - req) / 1e6 : 0;
    } else {
        status = 1;
    }
    /* Instant. */
    uint64_t first_run = 0, verify_errors = 1, faulted = 0, p50 = 0, p99 = 0, placed = 0;
    double fill_mib_s = 0, fill_ms = 0, first_ms = 0;
    bool digest_ok = false;
    char inst_digest[40] = "", phase[32] = "";
    if (!status && !restore(x, true, secs, &req)) {
        gw_json_get_str(x->out, "instant_phase", phase, sizeof phase);
        gw_json_get_str(x->out, "instant_memory_digest", inst_digest, sizeof inst_digest);
        gw_json_get_bool(x->out, "instant_digest_ok", &digest_ok);
        gw_json_get_u64(x->out, "instant_first_run_mono_ns", &first_run);
        gw_json_get_u64(x->out, "guest_verify_errors", &verify_errors);
        gw_json_get_u64(x->out, "instant_chunks_faulted", &faulted);
        gw_json_get_u64(x->out, "instant_fault_p50_us", &p50);
        gw_json_get_u64(x->out, "instant_fault_p99_us", &p99);
        gw_json_get_u64(x->out, "instant_bytes_placed", &placed);
        gw_json_get_double(x->out, "instant_fill_mib_s", &fill_mib_s);
        gw_json_get_double(x->out, "instant_fill_ms", &fill_ms);
        first_ms = first_run > req ? (first_run - req) / 1e6 : 0;
        if (strcmp(phase, "complete") || !first_run) {
            snprintf(x->err, sizeof x->err, "instant restore did not complete (phase %s)", phase);
            status = 1;
        }
    } else {
        status = 1;
    }
    bool equal = digest_ok && digest[0] && !strcmp(digest, inst_digest);
    if (o.json) {
        printf("{\"bench\":\"backup-instant-restore\",\"status\":\"%s\",\"error\":", status ? "error" : "ok");
        gw_json_str(stdout, x->err);
        printf(",\"target\":\"%s\",\"memory_bytes\":%llu,\"ws_bytes\":%llu,\"first_instruction_ms\":%.1f,"
               "\"first_instruction_target_ms\":%.0f,\"fill_ms\":%.1f,\"fill_mib_s\":%.1f,\"fill_bytes\":%llu,"
               "\"chunks_faulted\":%llu,\"fault_p50_us\":%llu,\"fault_p99_us\":%llu,\"memory_digest_equal\":%s,"
               "\"guest_verify_errors\":%llu,\"ordinary_first_instruction_ms\":%.1f,\"ordinary_restore_ms\":%.1f,"
               "\"ordinary_restore_mib_s\":%.1f,\"ordinary_guest_verify_errors\":%llu,\"ratio_vs_ordinary\":%.3f,"
               "\"baseline\":\"the ordinary restore of the same backup in the same run\"}\n",
               o.target, (unsigned long long)o.memory, (unsigned long long)o.ws, first_ms, FIRST_INSTRUCTION_TARGET_MS,
               fill_ms, fill_mib_s, (unsigned long long)placed, (unsigned long long)faulted, (unsigned long long)p50,
               (unsigned long long)p99, equal ? "true" : "false", (unsigned long long)verify_errors, ord_first_ms, ord_ms,
               ord_mib_s, (unsigned long long)ord_verify_errors, ord_first_ms > 0 ? first_ms / ord_first_ms : 0);
    } else {
        printf("instant restore (%s): first instruction after %.1f ms (ordinary restore: %.1f ms), fill %.0f MiB/s "
               "in %.0f ms, %llu chunks faulted (p99 %llu us), digest %s, %llu verify errors%s%s\n",
               o.target, first_ms, ord_first_ms, fill_mib_s, fill_ms, (unsigned long long)faulted,
               (unsigned long long)p99, equal ? "equal" : "DIFFERENT", (unsigned long long)verify_errors,
               status ? ", error: " : "", x->err);
    }
    if (auto_cluster && x->conf[0]) stop_cluster(x);
    unlink(x->sock);
    rmdir(dir);
    free(x);
    return status || !equal || verify_errors ? 1 : 0;
}
