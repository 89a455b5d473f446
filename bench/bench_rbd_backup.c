/* `godwit-bench rbd --backup`: the pause of a backup of a VM whose disk is an RBD image.
 *
 *   godwit-bench rbd --backup [--target rados:auto] [--count N] [--json]
 *
 * The disk guest (guest/workload_disk.c: reads and writes every tick) runs on a 128 MiB RBD
 * image in a throw-away cluster (scripts/ceph-cluster), and is backed up --count times
 * (default 5; incrementals after the first) into a RADOS store in the same cluster, through
 * godwit-vm as an operator would. Each backup reports its pause and how long its RBD snapshot
 * took after the pause (disk_snap_ms): that creation is what the pause used to hold, so it is
 * the baseline, measured in the same run on the same backups. Prints pause p50/max, snapshot
 * p50, their ratio, the blocks fleeced (guest writes between the pause and the snapshot) and
 * the guest's longest wait for a copy-before-write. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"
#include "engine/vm/blk_rbd.h"

#define IMAGE_BYTES (128ull << 20)
#define MAX_COUNT 50u

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0;
}

static int start_cluster(const char *script, char *conf, size_t cap)
{
    char out[16384];
    char *argv[] = {(char *)script, "start", NULL};
    if (gw_bench_run(argv, out, sizeof out) != 0) return -EIO;
    char *nl = out + strlen(out);
    while (nl > out && nl[-1] == '\n') *--nl = 0;
    char *last = strrchr(out, '\n');
    snprintf(conf, cap, "%s", last ? last + 1 : out);
    return 0;
}

int gw_bench_rbd_backup(int argc, char **argv)
{
    static const struct option lo[] = {
        {"backup", 0, 0, 'b'}, {"target", 1, 0, 't'}, {"count", 1, 0, 'n'}, {"json", 0, 0, 'j'}, {0},
    };
    const char *target = "rados:auto";
    uint64_t count = 5;
    bool json = false;
    int c, idx;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        if (c == 'b') continue;
        if (c == 't') target = optarg;
        else if (c == 'j') json = true;
        else if (c != 'n' || gw_parse_u64(optarg, 1, MAX_COUNT, &count)) {
            fprintf(stderr, "usage: godwit-bench rbd --backup [--target rados:auto] [--count 1..%u] [--json]\n", MAX_COUNT);
            return 2;
        }
    }
    if (strcmp(target, "rados:auto")) { fprintf(stderr, "godwit-bench rbd --backup: --target rados:auto only\n"); return 2; }
    char vm_bin[4096];
    if (gw_bench_sibling("godwit-vm", vm_bin, sizeof vm_bin)) { fprintf(stderr, "godwit-bench: godwit-vm not found\n"); return 1; }
    char dir[] = "/tmp/godwit-bench-rbd-backup.XXXXXX";
    if (!mkdtemp(dir)) { perror("godwit-bench: mkdtemp"); return 1; }
    char script[1200], conf[1024] = "", spec[1400], sock[200], outp[200], err[512] = "", out[65536], line[8192];
    snprintf(script, sizeof script, "%s/scripts/ceph-cluster", GW_SOURCE_DIR);
    snprintf(sock, sizeof sock, "%s/disk.sock", dir);
    snprintf(outp, sizeof outp, "%s/disk.json", dir);
    double pause[MAX_COUNT], snap[MAX_COUNT], pause_max = 0, wait_max_us = 0;
    uint64_t fleeced = 0, disk_verify_errors = 0;
    unsigned n = 0;
    int status = 1;
    pid_t pid = -1;
    if (start_cluster(script, conf, sizeof conf)) { snprintf(err, sizeof err, "cannot start a Ceph cluster"); conf[0] = 0; goto out; }
    snprintf(spec, sizeof spec, "rbd:godwit/bench-backup:conf=%s", conf);
    if (gw_blk_rbd_create(spec, IMAGE_BYTES, err, sizeof err)) goto out;
    char *run_argv[] = {vm_bin, "run", "--name", "rbd-backup", "--memory", "64M", "--guest", "disk", "--disk", spec,
                        "--control", sock, "--json", NULL};
    pid = gw_bench_spawn(run_argv, outp);
    if (pid < 0 || gw_bench_wait_ready(vm_bin, sock, 120)) { snprintf(err, sizeof err, "the disk guest never became ready"); goto out; }
    sleep(1);
    char ns[64];
    snprintf(ns, sizeof ns, "rados:godwit/rbd-backup-%llu", (unsigned long long)(gw_wall_ns() / 1000) % 1000000000ull);
    for (; n < count; n++) {
        char *bk_argv[] = {vm_bin, "backup", "--control", sock, "--store", ns, "--ceph-conf", conf, "--json", NULL};
        gw_bench_run(bk_argv, out, sizeof out);
        gw_bench_last_json(out, line, sizeof line);
        bool ok = false;
        uint64_t fb = 0;
        double w = 0;
        gw_json_get_bool(line, "ok", &ok);
        if (!ok) { snprintf(err, sizeof err, "backup failed: %.300s", line); goto out; }
        gw_json_get_double(line, "pause_ms", &pause[n]);
        gw_json_get_double(line, "disk_snap_ms", &snap[n]);
        gw_json_get_u64(line, "fleece_blocks", &fb);
        gw_json_get_double(line, "guest_write_wait_max_us", &w);
        fleeced += fb;
        if (pause[n] > pause_max) pause_max = pause[n];
        if (w > wait_max_us) wait_max_us = w;
        usleep(300000);
    }
    status = 0;
out:
    if (pid > 0) {
        char *stop_argv[] = {vm_bin, "stop", "--control", sock, NULL};
        gw_bench_run(stop_argv, out, sizeof out);
        gw_bench_wait(pid);
        if (!gw_bench_read_file(outp, out, sizeof out)) {
            gw_bench_last_json(out, line, sizeof line);
            gw_json_get_u64(line, "disk_verify_errors", &disk_verify_errors);
        }
    }
    if (conf[0]) {
        char *stop_argv[] = {script, "stop", conf, NULL};
        gw_bench_run(stop_argv, out, sizeof out);
    }
    unlink(outp);
    unlink(sock);
    rmdir(dir);
    if (disk_verify_errors && !status) { status = 1; snprintf(err, sizeof err, "the disk guest found %llu bad blocks", (unsigned long long)disk_verify_errors); }
    double pause_p50 = median(pause, n), snap_p50 = median(snap, n);
    if (json) {
        printf("{\"bench\":\"rbd-backup\",\"status\":\"%s\",\"error\":", status ? "error" : "ok");
        gw_json_str(stdout, err);
        printf(",\"backups\":%u,\"disk_bytes\":%llu,\"pause_p50_ms\":%.3f,\"pause_max_ms\":%.3f,\"snapshot_p50_ms\":%.2f,"
               "\"pause_vs_snapshot\":%.3f,\"fleeced_blocks\":%llu,\"guest_write_wait_max_us\":%.0f,"
               "\"disk_verify_errors\":%llu,\"target_pause_ms\":5,\"target_met\":%s,"
               "\"baseline\":\"the RBD snapshot's creation in the same backups (what the pause held before)\"}\n",
               n, (unsigned long long)IMAGE_BYTES, pause_p50, pause_max, snap_p50, snap_p50 > 0 ? pause_p50 / snap_p50 : 0,
               (unsigned long long)fleeced, wait_max_us, (unsigned long long)disk_verify_errors,
               !status && pause_max <= 5 ? "true" : "false");
    } else if (!status) {
        printf("rbd backup: %u backups, pause p50 %.2f ms (max %.2f ms, target 5), RBD snapshot after it p50 %.1f ms "
               "(x%.3f); %llu blocks fleeced, guest write waited at most %.0f us\n",
               n, pause_p50, pause_max, snap_p50, snap_p50 > 0 ? pause_p50 / snap_p50 : 0, (unsigned long long)fleeced,
               wait_max_us);
    }
    if (status) fprintf(stderr, "godwit-bench rbd --backup: %s\n", err);
    return status;
}
