/* `godwit-bench vm`: runs the dirtier for a few seconds in-process and reports how much the
 * guest wrote and verified. Baseline: the requested write rate; the ratio says how much of
 * it the guest achieved (1.0 = on target; below means the VM host or PVM held it back). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_opts.h"
#include "engine/common/util.h"
#include "engine/vm/vm.h"

int gw_bench_vm(int argc, char **argv)
{
    struct gw_bench_opts o = {.memory = 256ull << 20, .ws = 64ull << 20, .rate = 32ull << 20, .seconds = 3,
                              .vcpus = 1, .pattern = "random"};
    if (gw_bench_parse_opts("vm", argc, argv, &o)) return 2;
    uint64_t memory = o.memory, ws = o.ws, rate = o.rate, seconds = o.seconds, vcpus = o.vcpus;
    const char *pattern = o.pattern;
    bool json = o.json;
    char spec[160], err[512];
    snprintf(spec, sizeof spec, "dirtier:ws=%llu,rate=%llu,pattern=%s", (unsigned long long)ws,
             (unsigned long long)rate, pattern);
    struct gw_vm_config cfg = {.name = "bench", .memory_bytes = memory, .vcpus = (unsigned)vcpus,
                               .guest_spec = spec, .console_fd = -1};
    struct gw_vm *vm;
    int r = gw_vm_create(&cfg, &vm, err, sizeof err);
    if (r) { fprintf(stderr, "godwit-bench vm: %s\n", err); return r == -EINVAL ? 2 : 1; }
    uint64_t t0 = gw_now_ns();
    r = gw_vm_boot(vm, err, sizeof err);
    if (!r) r = gw_vm_start(vm);
    if (!r) r = gw_vm_wait_ready(vm, 120000);
    uint64_t ready_ns = gw_now_ns() - t0;
    struct gw_guest_totals before, after;
    gw_vm_guest_totals(vm, &before);
    uint64_t t1 = gw_now_ns();
    if (!r) gw_vm_wait(vm, (int)(seconds * 1000));
    gw_vm_pause(vm);
    double secs = (gw_now_ns() - t1) / 1e9;
    gw_vm_guest_totals(vm, &after);
    char fatal[256] = "";
    int f = gw_vm_fatal(vm, fatal, sizeof fatal);
    uint64_t written = after.bytes_written - before.bytes_written;
    double rate_mib = written / 1048576.0 / secs;
    double ratio = rate ? (written / secs) / (double)rate : 0;
    if (json) {
        printf("{\"bench\":\"vm\",\"status\":\"%s\",\"error\":\"%s\",\"memory_bytes\":%llu,\"ws_bytes\":%llu,"
               "\"vcpus\":%llu,\"seconds\":%.2f,\"fill_ms\":%.1f,\"guest_pages_written\":%llu,"
               "\"guest_pages_verified\":%llu,\"guest_verify_errors\":%llu,\"guest_ticks\":%llu,"
               "\"write_mib_s\":%.1f,\"baseline\":\"requested rate\",\"ratio_vs_baseline\":%.3f,\"vcpu_exits\":%llu}\n",
               (r || f) ? "error" : "ok", r ? strerror(-r) : fatal, (unsigned long long)memory,
               (unsigned long long)ws, (unsigned long long)vcpus, secs, ready_ns / 1e6,
               (unsigned long long)after.pages_written, (unsigned long long)after.pages_verified,
               (unsigned long long)after.verify_errors, (unsigned long long)after.ticks, rate_mib, ratio,
               (unsigned long long)after.vcpu_exits);
    } else {
        printf("vm bench: fill %.0f ms, wrote %.1f MiB/s (%.0f%% of the requested rate), verified %llu pages, "
               "%llu verify errors\n", ready_ns / 1e6, rate_mib, ratio * 100,
               (unsigned long long)after.pages_verified, (unsigned long long)after.verify_errors);
    }
    gw_vm_destroy(vm);
    return (r || f || after.verify_errors) ? 1 : 0;
}
