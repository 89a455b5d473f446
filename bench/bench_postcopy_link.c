/* `godwit-bench migrate --mode postcopy|hybrid` with a shaped link, a cut, or the priority
 * channel's baseline:
 *
 *   --link RATE              the two runners in network namespaces joined by a veth shaped
 *                            with tc tbf at RATE (1gbit, 500mbit...), made and removed here
 *   --cut-link-at MS --cut-link-for MS
 *                            the link goes down MS after post-copy starts, for MS, then comes
 *                            back: recovery_ms is from the link's return to post-copy active
 *                            again (the source reconnected and pages flow)
 *   --no-priority-channel    the same migration again in the same run with requested pages
 *                            answered behind the bulk push (one channel, as without QEMU's
 *                            preempt channel): fault latency with and without, and the ratio
 *   --vs-precopy             (--mode hybrid) the same work by pre-copy alone, given 1.5 x
 *                            (memory / link rate) to finish: whether it did, and where the VM
 *                            runs after; the hybrid's time against memory / link rate
 *
 * Fault latency is the destination's: from the request to the page placed. pause_ms is the
 * source's pause to GO plus the destination's GO to vCPUs running. The source runs
 * with a 500 ms link timeout so that a cut is noticed while the link is down. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_link.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"

struct pc_result {
    int status;
    char err[256];
    char phase[32];
    double total_ms, downtime_ms, postcopy_ms, blocktime_ms, recovery_ms;
    double dst_start_ms;      /* the destination's share of the pause: GO to vCPUs running */
    uint64_t p50, p99, max, requested, resent, verify_errors, recoveries;
    bool digest_ok;
    bool src_running;         /* the source runner's VM runs there after the migration */
    char vcpu_blocked[256];   /* the destination's per-vCPU blocked time, as JSON */
    char histogram[512];      /* the destination's request latency histogram, as JSON */
};

/* Copies the JSON array value of key in json into out ("" when absent or too long). */
static void json_array(const char *json, const char *key, char *out, size_t len)
{
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\":[", key);
    out[0] = 0;
    const char *v = strstr(json, pat);
    if (!v) return;
    v += strlen(pat) - 1;
    const char *e = strchr(v, ']');
    if (e && (size_t)(e - v + 1) < len) snprintf(out, len, "%.*s", (int)(e - v + 1), v);
}

/* argv with the link's `ip netns exec NS` in front when there is a link. */
static void with_ns(struct gw_bench_link *l, unsigned end, char *const *argv, char **out)
{
    unsigned n = 0;
    if (l) { gw_bench_link_exec(l, end, out); n = 4; }
    for (unsigned i = 0; argv[i]; i++) out[n++] = argv[i];
    out[n] = NULL;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The source's status: phase and recoveries. */
static int src_status(const char *vm_bin, const char *sock, char *phase, size_t len, uint64_t *recoveries)
{
    char buf[8192];
    char *argv[] = {(char *)vm_bin, "status", "--control", (char *)sock, "--json", NULL};
    if (gw_bench_run(argv, buf, sizeof buf)) return -1;
    phase[0] = 0;
    *recoveries = 0;
    gw_json_get_str(buf, "phase", phase, len);
    gw_json_get_u64(buf, "postcopy_recoveries", recoveries);
    return 0;
}

/* Cuts the link cut_at_ms after post-copy starts, for cut_for_ms; measures the recovery. */
static void cut_link(struct gw_bench_link *l, const struct gw_bench_opts *o, const char *vm_bin, const char *sock,
                     struct pc_result *res)
{
    char ph[32] = "";
    uint64_t rec = 0;
    uint64_t end = gw_now_ns() + 120000000000ull;
    while (gw_now_ns() < end && (src_status(vm_bin, sock, ph, sizeof ph, &rec) || strcmp(ph, "postcopy-active"))) {
        if (!strcmp(ph, "completed") || !strcmp(ph, "failed")) return;
        sleep_ms(5);
    }
    sleep_ms(o->cut_at_ms);
    gw_bench_link_set(l, false);
    sleep_ms(o->cut_for_ms);
    gw_bench_link_set(l, true);
    uint64_t t_up = gw_now_ns();
    res->recovery_ms = -1;
    while (gw_now_ns() - t_up < 60000000000ull) {
        if (!src_status(vm_bin, sock, ph, sizeof ph, &rec) &&
            ((rec >= 1 && !strcmp(ph, "postcopy-active")) || !strcmp(ph, "completed"))) {
            res->recovery_ms = (gw_now_ns() - t_up) / 1e6;
            break;
        }
        sleep_ms(2);
    }
}

/* mode: the migration's (o->mode unless given); timeout_s: its --timeout (0 = none). */
static void run_once(const struct gw_bench_opts *o, struct gw_bench_link *l, bool no_priority, bool cut,
                     const char *mode, unsigned timeout_s, struct pc_result *res)
{
    if (!mode) mode = o->mode;
    memset(res, 0, sizeof *res);
    char vm_bin[4096];
    if (gw_bench_sibling("godwit-vm", vm_bin, sizeof vm_bin)) { res->status = 1; snprintf(res->err, sizeof res->err, "godwit-vm not found"); return; }
    char dir[] = "/tmp/godwit-bench-pcl.XXXXXX";
    if (!mkdtemp(dir)) { res->status = 1; snprintf(res->err, sizeof res->err, "mkdtemp failed"); return; }
    char secret[4200], src_sock[4200], dst_sock[4200], src_out[4200], dst_out[4200], mig_out[4200];
    char spec[200], mem_s[32], vc_s[24], streams_s[24], listen[64];
    snprintf(secret, sizeof secret, "%s/secret", dir);
    snprintf(src_sock, sizeof src_sock, "%s/src.sock", dir);
    snprintf(dst_sock, sizeof dst_sock, "%s/dst.sock", dir);
    snprintf(src_out, sizeof src_out, "%s/src.json", dir);
    snprintf(dst_out, sizeof dst_out, "%s/dst.json", dir);
    snprintf(mig_out, sizeof mig_out, "%s/mig.json", dir);
    snprintf(spec, sizeof spec, "dirtier:ws=%llu,rate=%llu,pattern=%s", (unsigned long long)o->ws,
             (unsigned long long)o->rate, o->pattern);
    snprintf(mem_s, sizeof mem_s, "%llu", (unsigned long long)o->memory);
    snprintf(vc_s, sizeof vc_s, "%llu", (unsigned long long)o->vcpus);
    snprintf(streams_s, sizeof streams_s, "%llu", (unsigned long long)(o->streams ? o->streams : 2));
    snprintf(listen, sizeof listen, "tcp:%s:0", l ? l->addr[1] : "127.0.0.1");
    FILE *sf = fopen(secret, "w");
    if (sf) { fprintf(sf, "bench-cluster-secret-of-at-least-32-bytes-%d\n", (int)getpid()); fclose(sf); }
    char *argv[40];
    with_ns(l, 1, (char *[]){vm_bin, "incoming", "--listen", listen, "--secret-file", secret, "--control", dst_sock,
                             "--seconds", "900", "--json", NULL}, argv);
    pid_t dst = gw_bench_spawn(argv, dst_out);
    with_ns(l, 0, (char *[]){vm_bin, "run", "--name", "bench", "--memory", mem_s, "--vcpus", vc_s, "--guest", spec,
                             "--control", src_sock, "--secret-file", secret, "--json", NULL}, argv);
    pid_t src = gw_bench_spawn(argv, src_out);
    char buf[65536], url[128] = "";
    bool ready = false;
    char *status_argv[] = {vm_bin, "status", "--control", src_sock, "--json", NULL};
    for (int i = 0; i < 1800 && (!ready || !url[0]); i++) {
        usleep(100000);
        if (!url[0] && gw_bench_read_file(dst_out, buf, sizeof buf) == 0) gw_json_get_str(buf, "listening", url, sizeof url);
        if (!ready && gw_bench_run(status_argv, buf, sizeof buf) == 0) gw_json_get_bool(buf, "guest_ready", &ready);
    }
    if (!ready || !url[0]) { res->status = 1; snprintf(res->err, sizeof res->err, "runners did not come up"); }
    if (!res->status) {
        sleep(1);
        char to_s[24];
        snprintf(to_s, sizeof to_s, "%u", timeout_s);
        char *mig[20] = {vm_bin, "migrate", "--control", src_sock, "--to", url, "--mode", (char *)mode, "--wait",
                         "--json", "--streams", streams_s};
        unsigned k = 12;
        if (strcmp(mode, "precopy")) { mig[k++] = "--link-timeout-ms"; mig[k++] = "500"; }
        if (no_priority) mig[k++] = "--no-priority-channel";
        if (timeout_s) { mig[k++] = "--timeout"; mig[k++] = to_s; }
        /* Against pre-copy, the hybrid switches as an operator facing such a guest would set
         * it: once the guest dirties faster than half the rate pre-copy moves memory. */
        if (o->vs_precopy && !strcmp(mode, "hybrid")) { mig[k++] = "--switch-dirty-pct"; mig[k++] = "50"; }
        mig[k] = NULL;
        pid_t mp = gw_bench_spawn(mig, mig_out);
        if (cut) cut_link(l, o, vm_bin, src_sock, res);
        int rc = gw_bench_wait(mp);
        /* Where the VM runs now: a failed pre-copy must leave it running here. */
        char st[32] = "";
        if (gw_bench_run(status_argv, buf, sizeof buf) == 0) gw_json_get_str(buf, "state", st, sizeof st);
        res->src_running = !strcmp(st, "running");
        if (rc) {
            char final[4096] = "";
            if (!gw_bench_read_file(mig_out, buf, sizeof buf)) gw_bench_last_json(buf, final, sizeof final);
            gw_json_get_str(final, "migration_error", res->err, sizeof res->err);
            if (!res->err[0]) snprintf(res->err, sizeof res->err, "migrate exited %d", rc);
            res->status = 1;
        }
    }
    /* The destination runs until told: the migration may outlast any fixed time. */
    char *stop[] = {vm_bin, "stop", "--control", dst_sock, NULL};
    gw_bench_run(stop, buf, sizeof buf);
    if (res->status) { kill(src, SIGTERM); kill(dst, SIGTERM); }
    gw_bench_wait(src);
    int dst_rc = gw_bench_wait(dst);
    char src_json[8192] = "", dst_json[8192] = "";
    if (!gw_bench_read_file(src_out, buf, sizeof buf)) gw_bench_last_json(buf, src_json, sizeof src_json);
    if (!gw_bench_read_file(dst_out, buf, sizeof buf)) gw_bench_last_json(buf, dst_json, sizeof dst_json);
    gw_json_get_str(src_json, "migration_phase", res->phase, sizeof res->phase);
    gw_json_get_double(src_json, "migration_total_ms", &res->total_ms);
    gw_json_get_double(src_json, "migration_downtime_ms", &res->downtime_ms);
    gw_json_get_u64(src_json, "postcopy_recoveries", &res->recoveries);
    gw_json_get_u64(dst_json, "postcopy_request_p50_us", &res->p50);
    gw_json_get_u64(dst_json, "postcopy_request_p99_us", &res->p99);
    gw_json_get_u64(dst_json, "postcopy_request_max_us", &res->max);
    gw_json_get_u64(dst_json, "postcopy_pages_requested", &res->requested);
    gw_json_get_u64(dst_json, "postcopy_pages_resent", &res->resent);
    gw_json_get_double(dst_json, "postcopy_ms", &res->postcopy_ms);
    gw_json_get_double(dst_json, "migration_downtime_ms", &res->dst_start_ms);
    gw_json_get_double(dst_json, "postcopy_blocked_ms", &res->blocktime_ms);
    gw_json_get_bool(dst_json, "postcopy_digest_ok", &res->digest_ok);
    json_array(dst_json, "postcopy_vcpu_blocked_ms", res->vcpu_blocked, sizeof res->vcpu_blocked);
    json_array(dst_json, "postcopy_request_histogram", res->histogram, sizeof res->histogram);
    bool have_verify = gw_json_get_u64(dst_json, "guest_verify_errors", &res->verify_errors) == 0;
    if (!res->status && strcmp(res->phase, "completed")) { res->status = 1; snprintf(res->err, sizeof res->err, "migration ended '%s'", res->phase); }
    if (!res->status && (dst_rc != 0 || !have_verify)) { res->status = 1; snprintf(res->err, sizeof res->err, "destination runner exited %d", dst_rc); }
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* best effort */ }
}

int gw_bench_migrate_postcopy_link(int argc, char **argv)
{
    struct gw_bench_opts o = {.memory = 256ull << 20, .ws = 128ull << 20, .rate = 32ull << 20, .seconds = 2,
                              .vcpus = 1, .pattern = "random", .downtime_ms = 50, .compress = "auto",
                              .mode = "postcopy"};
    if (gw_bench_parse_opts("migrate", argc, argv, &o)) return 2;
    if (o.vs_precopy && (strcmp(o.mode, "hybrid") || !o.link)) {
        fprintf(stderr, "godwit-bench migrate: --vs-precopy goes with --mode hybrid and --link RATE\n");
        return 2;
    }
    if (strcmp(o.mode, "postcopy") && strcmp(o.mode, "hybrid")) {
        fprintf(stderr, "godwit-bench migrate: --link, --cut-link-* and --no-priority-channel go with --mode postcopy|hybrid\n");
        return 2;
    }
    uint64_t bps = 0;
    if (o.link && gw_bench_parse_rate(o.link, &bps)) { fprintf(stderr, "godwit-bench migrate: bad --link '%s'\n", o.link); return 2; }
    bool cut = o.cut_for_ms > 0;
    if (cut && !o.link) { fprintf(stderr, "godwit-bench migrate: --cut-link-for needs --link RATE\n"); return 2; }
    struct gw_bench_link link, *l = NULL;
    char err[512] = "";
    if (o.link) {
        if (gw_bench_link_open(&link, bps, err, sizeof err)) {
            printf("{\"bench\":\"migrate\",\"status\":\"error\",\"error\":");
            gw_json_str(stdout, err);
            printf("}\n");
            return 1;
        }
        l = &link;
    }
    /* a: the run asked for (with its cut); the baseline compares fault latency without a cut
     * on both sides: p (priority channel) against b (none). */
    struct pc_result a, p = {0}, b = {0};
    run_once(&o, l, false, cut, NULL, 0, &a);
    if (o.no_priority) {
        if (cut) run_once(&o, l, false, false, NULL, 0, &p);
        else p = a;
        run_once(&o, l, true, false, NULL, 0, &b);
    }
    /* Pre-copy alone with the time the hybrid is allowed: 1.5 x memory / link rate. */
    double ideal_ms = bps ? (double)o.memory * 8 / (double)bps * 1000 : 0;
    struct pc_result pre = {0};
    unsigned pre_timeout_s = (unsigned)(ideal_ms * 1.5 / 1000 + 0.999);
    if (o.vs_precopy) run_once(&o, l, false, false, "precopy", pre_timeout_s ? pre_timeout_s : 1, &pre);
    if (l) gw_bench_link_close(l);
    int status = a.status || p.status || b.status;
    const char *e = a.status ? a.err : p.status ? p.err : b.err;
    double p50_ratio = p.p50 ? (double)b.p50 / (double)p.p50 : 0, p99_ratio = p.p99 ? (double)b.p99 / (double)p.p99 : 0;
    printf("{\"bench\":\"migrate\",\"status\":\"%s\",\"error\":", status ? "error" : "ok");
    gw_json_str(stdout, status ? e : "");
    printf(",\"mode\":\"%s\",\"link_bps\":%llu,\"memory_bytes\":%llu,\"ws_bytes\":%llu,\"rate_bytes_per_s\":%llu,"
           "\"vcpus\":%llu,\"total_ms\":%.1f,\"downtime_ms\":%.3f,\"pause_ms\":%.3f,\"postcopy_ms\":%.1f,\"fault_p50_us\":%llu,"
           "\"fault_p99_us\":%llu,\"fault_max_us\":%llu,\"pages_requested\":%llu,\"pages_resent_after_switchover\":%llu,"
           "\"blocktime_ms\":%.3f,\"vcpu_blocktime_ms\":%s,\"fault_histogram_us\":%s,\"memory_digest_equal\":%s,\"guest_verify_errors\":%llu",
           o.mode, (unsigned long long)bps, (unsigned long long)o.memory, (unsigned long long)o.ws,
           (unsigned long long)o.rate, (unsigned long long)o.vcpus, a.total_ms, a.downtime_ms,
           a.downtime_ms + a.dst_start_ms, a.postcopy_ms,
           (unsigned long long)a.p50, (unsigned long long)a.p99, (unsigned long long)a.max,
           (unsigned long long)a.requested, (unsigned long long)a.resent, a.blocktime_ms,
           a.vcpu_blocked[0] ? a.vcpu_blocked : "[]", a.histogram[0] ? a.histogram : "[]", a.digest_ok ? "true" : "false", (unsigned long long)a.verify_errors);
    if (cut)
        printf(",\"cut_link_at_ms\":%llu,\"cut_link_for_ms\":%llu,\"recoveries\":%llu,\"recovery_ms\":%.1f",
               (unsigned long long)o.cut_at_ms, (unsigned long long)o.cut_for_ms, (unsigned long long)a.recoveries,
               a.recovery_ms);
    if (o.no_priority)
        printf(",\"baseline\":\"no priority channel (answers behind the push), same link and work, same run\","
               "\"pri_fault_p50_us\":%llu,\"pri_fault_p99_us\":%llu,\"pri_pages_requested\":%llu,"
               "\"nopri_fault_p50_us\":%llu,\"nopri_fault_p99_us\":%llu,\"nopri_fault_max_us\":%llu,"
               "\"nopri_pages_requested\":%llu,\"nopri_total_ms\":%.1f,\"nopri_digest_equal\":%s,"
               "\"p50_ratio\":%.2f,\"p99_ratio\":%.2f",
               (unsigned long long)p.p50, (unsigned long long)p.p99, (unsigned long long)p.requested,
               (unsigned long long)b.p50, (unsigned long long)b.p99, (unsigned long long)b.max,
               (unsigned long long)b.requested, b.total_ms, b.digest_ok ? "true" : "false", p50_ratio, p99_ratio);
    if (o.vs_precopy) {
        /* Pre-copy is expected to fail here: that it did, and left the VM running at the
         * source, is the outcome measured; anything else is reported as such. */
        bool pre_finished = !strcmp(pre.phase, "completed");
        printf(",\"ideal_ms\":%.1f,\"hybrid_over_ideal\":%.3f,\"hybrid_bound_ok\":%s,\"precopy_timeout_s\":%u,"
               "\"precopy_phase\":\"%s\",\"precopy_finished\":%s,\"precopy_vm_on_source\":%s,\"precopy_error\":",
               ideal_ms, ideal_ms > 0 ? a.total_ms / ideal_ms : 0, a.total_ms <= 1.5 * ideal_ms ? "true" : "false",
               pre_timeout_s, pre.phase, pre_finished ? "true" : "false", pre.src_running ? "true" : "false");
        gw_json_str(stdout, pre.err);
    }
    printf("}\n");
    return status;
}
