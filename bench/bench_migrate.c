/* `godwit-bench migrate`: two runners on loopback, a running dirtier migrated from one to the
 * other through the runners' own interfaces (as the daemon drives them). Prints status,
 * total/downtime/set-up times, rounds, bytes on the wire, throughput (guest memory moved per
 * second of total time), whether the destination proved memory equal (the digest check it
 * makes before it accepts the VM), and the guest's own verify errors after the move.
 * Baseline: QEMU 7.2 on this box moves an idle 1 GiB guest with 512 MiB of random data at
 * ~0.3 GiB/s (the figure the migration issue names); ratio = throughput / 307.2 MiB/s. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"

#define QEMU_BASELINE_MIB_S 307.2

int gw_bench_migrate(int argc, char **argv)
{
    struct gw_bench_opts o = {.memory = 1ull << 30, .ws = 512ull << 20, .rate = 64ull << 20, .seconds = 2,
                              .vcpus = 1, .pattern = "random", .downtime_ms = 50, .compress = "auto"};
    if (gw_bench_parse_opts("migrate", argc, argv, &o)) return 2;
    uint64_t memory = o.memory, ws = o.ws, rate = o.rate, streams = o.streams, downtime_ms = o.downtime_ms,
             vcpus = o.vcpus;
    const char *pattern = o.pattern, *compress = o.compress;
    bool json = o.json;
    char vm_bin[4096];
    if (gw_bench_sibling("godwit-vm", vm_bin, sizeof vm_bin)) { fprintf(stderr, "godwit-bench: godwit-vm not found\n"); return 1; }
    char dir[] = "/tmp/godwit-bench-mig.XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    char secret[4200], src_sock[4200], dst_sock[4200], src_out[4200], dst_out[4200], spec[200], mem_s[32], vc_s[8],
        streams_s[8], dt_s[16];
    snprintf(secret, sizeof secret, "%s/secret", dir);
    snprintf(src_sock, sizeof src_sock, "%s/src.sock", dir);
    snprintf(dst_sock, sizeof dst_sock, "%s/dst.sock", dir);
    snprintf(src_out, sizeof src_out, "%s/src.json", dir);
    snprintf(dst_out, sizeof dst_out, "%s/dst.json", dir);
    snprintf(spec, sizeof spec, "%s:ws=%llu,rate=%llu,pattern=%s", rate ? "dirtier" : "idle", (unsigned long long)ws,
             (unsigned long long)rate, pattern);
    snprintf(mem_s, sizeof mem_s, "%llu", (unsigned long long)memory);
    snprintf(vc_s, sizeof vc_s, "%llu", (unsigned long long)vcpus);
    snprintf(streams_s, sizeof streams_s, "%llu", (unsigned long long)streams);
    snprintf(dt_s, sizeof dt_s, "%llu", (unsigned long long)downtime_ms);
    FILE *sf = fopen(secret, "w");
    if (!sf) { perror("secret"); return 1; }
    fprintf(sf, "bench-cluster-secret-%d\n", (int)getpid());
    fclose(sf);

    char *dst_argv[] = {vm_bin, "incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", secret, "--control",
                        dst_sock, "--seconds", "2", "--json", NULL};
    pid_t dst = gw_bench_spawn(dst_argv, dst_out);
    char *src_argv[] = {vm_bin, "run", "--name", "bench", "--memory", mem_s, "--vcpus", vc_s, "--guest", spec,
                        "--control", src_sock, "--secret-file", secret, "--json", NULL};
    pid_t src = gw_bench_spawn(src_argv, src_out);

    char buf[65536], url[128] = "", err[256] = "";
    int status = 0;
    bool ready = false;
    char *status_argv[] = {vm_bin, "status", "--control", src_sock, "--json", NULL};
    for (int i = 0; i < 1800 && (!ready || !url[0]); i++) {
        usleep(100000);
        if (!url[0] && gw_bench_read_file(dst_out, buf, sizeof buf) == 0) gw_json_get_str(buf, "listening", url, sizeof url);
        if (!ready && gw_bench_run(status_argv, buf, sizeof buf) == 0) gw_json_get_bool(buf, "guest_ready", &ready);
    }
    if (!ready || !url[0]) { snprintf(err, sizeof err, "runners did not come up"); status = 1; }
    char final[4096] = "";
    if (!status) {
        sleep(1);
        char *mig_argv[] = {vm_bin, "migrate", "--control", src_sock, "--to", url, "--compress", (char *)compress,
                            "--downtime-ms", dt_s, "--wait", "--json", streams ? "--streams" : NULL, streams_s, NULL};
        int rc = gw_bench_run(mig_argv, buf, sizeof buf);
        snprintf(final, sizeof final, "%s", gw_bench_last_json(buf));
        if (rc) { gw_json_get_str(final, "migration_error", err, sizeof err); if (!err[0]) snprintf(err, sizeof err, "migrate exited %d", rc); status = 1; }
    }
    if (status) { kill(src, SIGTERM); kill(dst, SIGTERM); }
    gw_bench_wait(src);
    int dst_rc = gw_bench_wait(dst);
    char src_json[8192] = "", dst_json[8192] = "";
    if (!gw_bench_read_file(src_out, buf, sizeof buf)) snprintf(src_json, sizeof src_json, "%s", gw_bench_last_json(buf));
    if (!gw_bench_read_file(dst_out, buf, sizeof buf)) snprintf(dst_json, sizeof dst_json, "%s", gw_bench_last_json(buf));
    double total_ms = 0, downtime = 0, setup_ms = 0;
    uint64_t rounds = 0, wire = 0, verify_errors = 0, zero = 0, raw = 0, lz4 = 0;
    char phase[32] = "";
    gw_json_get_str(src_json, "migration_phase", phase, sizeof phase);
    gw_json_get_double(src_json, "migration_total_ms", &total_ms);
    gw_json_get_double(src_json, "migration_downtime_ms", &downtime);
    gw_json_get_double(src_json, "migration_setup_ms", &setup_ms);
    gw_json_get_u64(src_json, "migration_rounds", &rounds);
    gw_json_get_u64(src_json, "migration_wire_bytes", &wire);
    gw_json_get_u64(src_json, "migration_pages_zero", &zero);
    gw_json_get_u64(src_json, "migration_pages_raw", &raw);
    gw_json_get_u64(src_json, "migration_pages_lz4", &lz4);
    bool have_verify = gw_json_get_u64(dst_json, "guest_verify_errors", &verify_errors) == 0;
    bool completed = !strcmp(phase, "completed");
    if (!status && !completed) { snprintf(err, sizeof err, "migration ended '%s'", phase); status = 1; }
    if (!status && (dst_rc != 0 || !have_verify)) { snprintf(err, sizeof err, "destination runner exited %d", dst_rc); status = 1; }
    double tput = total_ms > 0 ? (memory / 1048576.0) / (total_ms / 1000.0) : 0;
    if (json) {
        printf("{\"bench\":\"migrate\",\"status\":\"%s\",\"error\":", status ? "error" : "ok");
        gw_json_str(stdout, err);
        printf(",\"memory_bytes\":%llu,\"ws_bytes\":%llu,\"rate_bytes_per_s\":%llu,\"pattern\":\"%s\",\"compress\":\"%s\","
               "\"streams\":%llu,\"total_ms\":%.1f,\"downtime_ms\":%.3f,\"setup_ms\":%.1f,\"rounds\":%llu,"
               "\"transferred_bytes\":%llu,\"pages_zero\":%llu,\"pages_raw\":%llu,\"pages_lz4\":%llu,"
               "\"throughput_mib_s\":%.1f,\"memory_digest_equal\":%s,\"guest_verify_errors\":%llu,"
               "\"baseline\":\"QEMU 7.2 on this box, ~0.3 GiB/s\",\"ratio_vs_baseline\":%.2f}\n",
               (unsigned long long)memory, (unsigned long long)ws, (unsigned long long)rate, pattern, compress,
               (unsigned long long)streams, total_ms, downtime, setup_ms, (unsigned long long)rounds,
               (unsigned long long)wire, (unsigned long long)zero, (unsigned long long)raw, (unsigned long long)lz4,
               tput, completed ? "true" : "false", (unsigned long long)verify_errors, tput / QEMU_BASELINE_MIB_S);
    } else {
        printf("migrate bench: %s in %.0f ms (downtime %.2f ms, %llu rounds, %.0f MiB on the wire), %.0f MiB/s of guest "
               "memory (%.1fx QEMU 7.2), verify errors %llu%s%s\n", phase, total_ms, downtime,
               (unsigned long long)rounds, wire / 1048576.0, tput, tput / QEMU_BASELINE_MIB_S,
               (unsigned long long)verify_errors, status ? ", error: " : "", err);
    }
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* best effort */ }
    return status;
}
