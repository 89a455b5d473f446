/* `godwit-bench migrate`: two runners on loopback, a running dirtier migrated from one to the
 * other through the runners' own interfaces (as the daemon drives them). Prints status,
 * total/downtime/set-up times, rounds, the guest bytes actually moved (pages sent in any
 * encoding, every round) and the bytes on the wire, wire_mib_s (wire bytes over the transfer
 * time: total minus set-up), whether the destination proved memory equal (the digest check
 * it makes before it accepts the VM), the guest's own verify errors after the move, and each
 * runner's peak resident memory beyond guest RAM while it migrates (src/dst_overhead_mib).
 * Baseline, measured in the same run right after the migration: a plain loopback TCP blast of
 * the same wire bytes over the same number of streams (bench_wire.c);
 * limit_ratio = wire_mib_s / limit_mib_s. The blast's receiver reuses one buffer; a real
 * destination must also place the bytes in fresh memory, so the bench measures that too
 * (place_floor_ms: the same data bytes pwritten once into a new memfd, bench_fresh.h) and
 * prints limit_ratio_ceiling = limit_ms / place_floor_ms (at most 1): the best limit_ratio
 * this host allows a destination that did nothing but place the bytes. Compare with other systems by total_ms on the same
 * work (an idle guest: --rate 0); --qemu SCRIPT runs QEMU on it in the same run
 * (bench_qemu.h) and prints speedup_vs_qemu = QEMU's total time / ours. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_fresh.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "bench/bench_qemu.h"
#include "engine/common/json.h"
#include "engine/common/util.h"
#include "precopy/precopy_source.h"
#include "engine/transport/tls.h"

/* Samples the runners' private resident memory every few milliseconds while they migrate. */
#define RSS_SAMPLE_US 5000

struct rss_sampler {
    pid_t pid[2];               /* source, destination */
    uint64_t base[2];           /* before the migration */
    uint64_t peak[2];
    atomic_bool stop;
    pthread_t th;
};

static void *rss_main(void *arg)
{
    struct rss_sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        for (int i = 0; i < 2; i++) {
            uint64_t b;
            if (!gw_bench_rss_private(s->pid[i], &b) && b > s->peak[i]) s->peak[i] = b;
        }
        usleep(RSS_SAMPLE_US);
    }
    return NULL;
}

int gw_bench_migrate(int argc, char **argv)
{
    struct gw_bench_opts o = {.memory = 1ull << 30, .ws = 512ull << 20, .rate = 64ull << 20, .seconds = 2,
                              .vcpus = 1, .pattern = "random", .downtime_ms = 50, .compress = "auto",
                              .mode = "precopy"};
    if (gw_bench_parse_opts("migrate", argc, argv, &o)) return 2;
    if (o.tls && !strcmp(o.tls, "both")) return gw_bench_migrate_tls_both(argc, argv, (unsigned)o.pairs);
    if (o.link || o.cut_for_ms || o.no_priority || o.vs_precopy) return gw_bench_migrate_postcopy_link(argc, argv);
    bool tls = !o.tls || strcmp(o.tls, "off");
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
    fprintf(sf, "bench-cluster-secret-of-at-least-32-bytes-%d\n", (int)getpid());
    fclose(sf);

    char *dst_argv[] = {vm_bin, "incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", secret, "--control",
                        dst_sock, "--seconds", "2", "--json", "--tls", tls ? "on" : "off", NULL};
    pid_t dst = gw_bench_spawn(dst_argv, dst_out);
    char ring_s[24];
    snprintf(ring_s, sizeof ring_s, "%llu", (unsigned long long)o.dirty_ring);
    char *src_argv[] = {vm_bin, "run", "--name", "bench", "--memory", mem_s, "--vcpus", vc_s, "--guest", spec,
                        "--control", src_sock, "--secret-file", secret, "--json",
                        o.dirty_ring ? "--dirty-ring" : NULL, ring_s, NULL};
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
    struct rss_sampler rss = {.pid = {src, dst}};
    bool sampling = false;
    double fresh_us = 0;   /* what a new page costs now: the destination's pages are new */
    if (!status) {
        sleep(1);
        if (gw_bench_fresh_page_us(GW_BENCH_FRESH_SAMPLE, &fresh_us)) fresh_us = 0;
        for (int i = 0; i < 2; i++) gw_bench_rss_private(rss.pid[i], &rss.base[i]);
        sampling = pthread_create(&rss.th, NULL, rss_main, &rss) == 0;
        char *mig_argv[] = {vm_bin, "migrate", "--control", src_sock, "--to", url, "--compress", (char *)compress,
                            "--downtime-ms", dt_s, "--wait", "--json", "--tls", tls ? "on" : "off",
                            "--mode", (char *)o.mode, streams ? "--streams" : NULL, streams_s, NULL};
        int rc = gw_bench_run(mig_argv, buf, sizeof buf);
        atomic_store(&rss.stop, true);
        if (sampling) pthread_join(rss.th, NULL);
        gw_bench_last_json(buf, final, sizeof final);
        if (rc) { gw_json_get_str(final, "migration_error", err, sizeof err); if (!err[0]) snprintf(err, sizeof err, "migrate exited %d", rc); status = 1; }
    }
    if (status) { kill(src, SIGTERM); kill(dst, SIGTERM); }
    gw_bench_wait(src);
    int dst_rc = gw_bench_wait(dst);
    char src_json[8192] = "", dst_json[8192] = "";
    if (!gw_bench_read_file(src_out, buf, sizeof buf)) gw_bench_last_json(buf, src_json, sizeof src_json);
    if (!gw_bench_read_file(dst_out, buf, sizeof buf)) gw_bench_last_json(buf, dst_json, sizeof dst_json);
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
    /* Post-copy's figures, as the destination measured them (0 for pre-copy). */
    uint64_t pc_p50 = 0, pc_p99 = 0, pc_max = 0, pc_req = 0, pc_resent = 0;
    double pc_ms = 0, pc_block = 0;
    gw_json_get_u64(dst_json, "postcopy_request_p50_us", &pc_p50);
    gw_json_get_u64(dst_json, "postcopy_request_p99_us", &pc_p99);
    gw_json_get_u64(dst_json, "postcopy_request_max_us", &pc_max);
    gw_json_get_u64(dst_json, "postcopy_pages_requested", &pc_req);
    gw_json_get_u64(dst_json, "postcopy_pages_resent", &pc_resent);
    gw_json_get_double(dst_json, "postcopy_ms", &pc_ms);
    gw_json_get_double(dst_json, "postcopy_blocked_ms", &pc_block);
    bool completed = !strcmp(phase, "completed");
    if (!status && !completed) { snprintf(err, sizeof err, "migration ended '%s'", phase); status = 1; }
    if (!status && (dst_rc != 0 || !have_verify)) { snprintf(err, sizeof err, "destination runner exited %d", dst_rc); status = 1; }
    unsigned nstreams = streams ? (unsigned)streams : gw_precopy_default_streams();
    uint64_t moved = (zero + raw + lz4) * 4096ull, data = (raw + lz4) * 4096ull;
    double transfer_ms = total_ms - setup_ms;
    double wire_mib_s = transfer_ms > 0 ? wire / 1048576.0 / (transfer_ms / 1000.0) : 0;
    double limit_mib_s = 0, limit_ms = 0;
    if (!status && wire && gw_bench_wire_limit(wire, nstreams, &limit_mib_s, &limit_ms)) {
        snprintf(err, sizeof err, "the loopback limit could not be measured");
        status = 1;
    }
    double limit_ratio = limit_mib_s > 0 ? wire_mib_s / limit_mib_s : 0;
    /* The destination's own floor on the same bytes, same run (after the runners have gone):
     * the blast above only receives into a reused buffer, a destination must also place every
     * byte in fresh memory, and on some hosts that alone takes longer than the blast. */
    double place_ms = 0;
    if (!status && data && gw_bench_place_floor_ms(data, &place_ms)) place_ms = 0;
    double limit_ceiling = place_ms > limit_ms ? limit_ms / place_ms : 1.0;
    /* QEMU on the same work, after ours (the runners have gone): --qemu only, it takes a
     * minute (a TCG Linux guest boots first). */
    char qemu_json[300] = "";
    if (!status && o.qemu) {
        struct gw_bench_qemu q;
        if (gw_bench_qemu_baseline(o.qemu, memory, ws, rate, pattern, &q, err, sizeof err)) {
            status = 1;
        } else {
            snprintf(qemu_json, sizeof qemu_json, ",\"qemu_status\":\"%s\",\"qemu_total_ms\":%.1f,\"qemu_downtime_ms\":%.1f,"
                     "\"qemu_transferred_mib\":%.1f,\"speedup_vs_qemu\":%.2f", q.status, q.total_ms, q.downtime_ms,
                     q.transferred_mib, total_ms > 0 ? q.total_ms / total_ms : 0);
            if (!json) printf("QEMU on the same work: %s in %.0f ms (%.2f x Godwit's time)\n", q.status, q.total_ms,
                              total_ms > 0 ? q.total_ms / total_ms : 0);
        }
    }
    /* Peak resident memory beyond guest RAM during the migration, everything counted (the
     * binary and its libraries too); src_idle_mib is the source's before it started. */
    double src_over = rss.peak[0] / 1048576.0, dst_over = rss.peak[1] / 1048576.0;
    if (json) {
        printf("{\"bench\":\"migrate\",\"status\":\"%s\",\"error\":", status ? "error" : "ok");
        gw_json_str(stdout, err);
        printf(",\"memory_bytes\":%llu,\"ws_bytes\":%llu,\"rate_bytes_per_s\":%llu,\"pattern\":\"%s\",\"compress\":\"%s\","
               "\"streams\":%u,\"total_ms\":%.1f,\"downtime_ms\":%.3f,\"setup_ms\":%.1f,\"transfer_ms\":%.1f,"
               "\"rounds\":%llu,\"moved_bytes\":%llu,\"data_bytes\":%llu,\"transferred_bytes\":%llu,"
               "\"pages_zero\":%llu,\"pages_raw\":%llu,\"pages_lz4\":%llu,\"wire_mib_s\":%.1f,"
               "\"memory_digest_equal\":%s,\"guest_verify_errors\":%llu,\"src_overhead_mib\":%.1f,"
               "\"dst_overhead_mib\":%.1f,\"src_idle_mib\":%.1f,\"baseline\":\"plain TCP, same bytes and streams, same run\","
               "\"limit_ms\":%.1f,\"limit_mib_s\":%.1f,\"limit_ratio\":%.2f,\"tls\":\"%s\",\"tls_kernel\":%s,"
               "\"mode\":\"%s\",\"fault_p50_us\":%llu,\"fault_p99_us\":%llu,\"fault_max_us\":%llu,"
               "\"pages_requested\":%llu,\"pages_resent_after_switchover\":%llu,\"postcopy_ms\":%.1f,"
               "\"blocktime_ms\":%.3f,\"fresh_page_us\":%.2f,\"place_floor_ms\":%.1f,\"limit_ratio_ceiling\":%.2f%s}\n",
               (unsigned long long)memory, (unsigned long long)ws, (unsigned long long)rate, pattern, compress,
               nstreams, total_ms, downtime, setup_ms, transfer_ms, (unsigned long long)rounds,
               (unsigned long long)moved, (unsigned long long)data, (unsigned long long)wire,
               (unsigned long long)zero, (unsigned long long)raw, (unsigned long long)lz4, wire_mib_s,
               completed ? "true" : "false", (unsigned long long)verify_errors, src_over, dst_over,
               rss.base[0] / 1048576.0, limit_ms, limit_mib_s, limit_ratio, tls ? "on" : "off",
               tls && gw_tls_kernel_available() ? "true" : "false", o.mode, (unsigned long long)pc_p50,
               (unsigned long long)pc_p99, (unsigned long long)pc_max, (unsigned long long)pc_req,
               (unsigned long long)pc_resent, pc_ms, pc_block, fresh_us, place_ms, limit_ceiling, qemu_json);
    } else {
        printf("migrate bench: %s in %.0f ms (downtime %.2f ms, %llu rounds), %.0f MiB of guest memory moved, "
               "%.0f MiB on the wire at %.0f MiB/s (%.2f of plain TCP's %.0f MiB/s), overhead src %.1f MiB "
               "dst %.1f MiB, verify errors %llu, a fresh page %.2f us, placing the bytes alone %.0f ms (limit ratio "
               "at most %.2f)%s%s\n", phase, total_ms, downtime, (unsigned long long)rounds,
               moved / 1048576.0, wire / 1048576.0, wire_mib_s, limit_ratio, limit_mib_s, src_over, dst_over,
               (unsigned long long)verify_errors, fresh_us, place_ms, limit_ceiling, status ? ", error: " : "", err);
    }
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* best effort */ }
    return status;
}
