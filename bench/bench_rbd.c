/* godwit-bench rbd: what the virtio disk gets from running a kick's requests together on RBD.
 *
 * 4 KiB random writes, then reads, over a 256 MiB image through the RBD block backend
 * (engine/vm/blk_rbd.c), each for --seconds: one request per submit (the baseline: a device
 * that serves requests one after the other) and 8 per submit (what the device does with a
 * kick that carries 8 requests, as the disk guest's batches do). It prints the operations per
 * second of both, their ratio, and the latency of a single request and of a batch (p50/p99).
 * --target rados:auto (the default) starts a throw-away cluster (scripts/ceph-cluster) and
 * stops it at the end; --target rbd:POOL/IMAGE[:conf=...] uses an existing image (at least
 * 256 MiB; its content is overwritten). --backup measures a backup's pause instead
 * (bench_rbd_backup.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/util.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/blk_rbd.h"

#define IMAGE (256ull << 20)
#define IO 4096u
#define BATCH 8u
#define MAX_SAMPLES 200000u

struct phase {
    double iops, p50_us, p99_us;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Runs batches of n distinct random 4 KiB I/Os for secs seconds. */
static int run_phase(struct gw_blk *b, bool write, unsigned n, uint64_t secs, uint8_t *buf, uint64_t *lat,
                     struct phase *out)
{
    uint64_t seed = 0x9E3779B97F4A7C15ull ^ (write ? 1 : 2) ^ n, ops = 0, nlat = 0;
    uint64_t t0 = gw_now_ns(), end = t0 + secs * 1000000000ull;
    struct iovec iov[BATCH];
    struct gw_blk_io ios[BATCH];
    while (gw_now_ns() < end && nlat < MAX_SAMPLES) {
        for (unsigned k = 0; k < n; k++) {
            /* Distinct blocks: the device never puts overlapping requests in one batch. */
            uint64_t blk = (rnd(&seed) % (IMAGE / IO / BATCH)) * BATCH + k;
            iov[k] = (struct iovec){.iov_base = buf + (size_t)k * IO, .iov_len = IO};
            ios[k] = (struct gw_blk_io){.write = write, .off = blk * IO, .len = IO, .iov = &iov[k], .niov = 1};
        }
        uint64_t t = gw_now_ns();
        int r = b->ops->submit(b, ios, n);
        for (unsigned k = 0; !r && k < n; k++) r = ios[k].rc;
        if (r) return r;
        lat[nlat++] = gw_now_ns() - t;
        ops += n;
    }
    double s = (gw_now_ns() - t0) / 1e9;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    out->iops = ops / s;
    out->p50_us = nlat ? lat[nlat / 2] / 1e3 : 0;
    out->p99_us = nlat ? lat[nlat * 99 / 100] / 1e3 : 0;
    return 0;
}

static int cluster(const char *verb, const char *conf, char *out, size_t cap)
{
    char script[1200];
    snprintf(script, sizeof script, "%s/scripts/ceph-cluster", GW_SOURCE_DIR);
    char *argv[] = {script, (char *)verb, (char *)conf, NULL};
    char *start[] = {script, "start", NULL};
    int r = gw_bench_run(strcmp(verb, "start") ? argv : start, out, cap);
    if (r == 0 && !strcmp(verb, "start")) {
        char *nl = out + strlen(out);
        while (nl > out && nl[-1] == '\n') *--nl = 0;
        char *last = strrchr(out, '\n');
        memmove(out, last ? last + 1 : out, strlen(last ? last + 1 : out) + 1);
    }
    return r;
}

int gw_bench_rbd(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) if (!strcmp(argv[i], "--backup")) return gw_bench_rbd_backup(argc, argv);
    struct gw_bench_opts o = {.seconds = 3, .target = "rados:auto"};
    int rc = gw_bench_parse_opts("rbd", argc, argv, &o);
    if (rc) return rc;
    bool auto_cluster = !strcmp(o.target, "rados:auto");
    if (!auto_cluster && !gw_blk_is_rbd(o.target)) { fprintf(stderr, "godwit-bench rbd: --target rados:auto or rbd:POOL/IMAGE\n"); return 2; }
    char conf[1024] = "", spec[1400], err[512] = "";
    int status = 1;
    struct gw_blk *b = NULL;
    uint8_t *buf = malloc((size_t)BATCH * IO);
    uint64_t *lat = malloc(MAX_SAMPLES * sizeof *lat);
    struct phase ws, wb, rs, rb;
    if (!buf || !lat) { snprintf(err, sizeof err, "out of memory"); goto out; }
    for (unsigned i = 0; i < BATCH * IO; i++) buf[i] = (uint8_t)(i * 7 + 1);
    if (auto_cluster) {
        if (cluster("start", NULL, conf, sizeof conf)) { snprintf(err, sizeof err, "cannot start a Ceph cluster"); conf[0] = 0; goto out; }
        snprintf(spec, sizeof spec, "rbd:godwit/bench:conf=%s", conf);
        if (gw_blk_rbd_create(spec, IMAGE, err, sizeof err)) goto out;
    } else {
        snprintf(spec, sizeof spec, "%s", o.target);
    }
    if (gw_blk_open(spec, false, &b, err, sizeof err)) goto out;
    if (b->size < IMAGE) { snprintf(err, sizeof err, "%s is smaller than 256 MiB", b->desc); goto out; }
    int r = b->ops->lock(b, true);
    if (r) { snprintf(err, sizeof err, "%s: cannot take the lock: %s", b->desc, strerror(-r)); goto out; }
    if ((r = run_phase(b, true, 1, o.seconds, buf, lat, &ws)) || (r = run_phase(b, true, BATCH, o.seconds, buf, lat, &wb)) ||
        (r = run_phase(b, false, 1, o.seconds, buf, lat, &rs)) || (r = run_phase(b, false, BATCH, o.seconds, buf, lat, &rb))) {
        snprintf(err, sizeof err, "I/O failed: %s", strerror(-r));
        goto out;
    }
    status = 0;
    if (o.json) {
        printf("{\"io_bytes\":%u,\"batch\":%u,\"seconds\":%llu,"
               "\"serial_write_iops\":%.0f,\"batched_write_iops\":%.0f,\"write_ratio\":%.2f,"
               "\"serial_read_iops\":%.0f,\"batched_read_iops\":%.0f,\"read_ratio\":%.2f,"
               "\"serial_write_p50_us\":%.0f,\"serial_write_p99_us\":%.0f,\"batch_write_p50_us\":%.0f,\"batch_write_p99_us\":%.0f,"
               "\"serial_read_p50_us\":%.0f,\"serial_read_p99_us\":%.0f,\"batch_read_p50_us\":%.0f,\"batch_read_p99_us\":%.0f}\n",
               IO, BATCH, (unsigned long long)o.seconds, ws.iops, wb.iops, wb.iops / ws.iops, rs.iops, rb.iops,
               rb.iops / rs.iops, ws.p50_us, ws.p99_us, wb.p50_us, wb.p99_us, rs.p50_us, rs.p99_us, rb.p50_us, rb.p99_us);
    } else {
        printf("4 KiB random writes: %.0f/s one at a time, %.0f/s in batches of %u (x%.2f)\n", ws.iops, wb.iops, BATCH,
               wb.iops / ws.iops);
        printf("4 KiB random reads:  %.0f/s one at a time, %.0f/s in batches of %u (x%.2f)\n", rs.iops, rb.iops, BATCH,
               rb.iops / rs.iops);
    }
out:
    if (status) fprintf(stderr, "godwit-bench rbd: %s\n", err);
    gw_blk_close(b);
    char tmp[4096];
    if (auto_cluster && conf[0]) cluster("stop", conf, tmp, sizeof tmp);
    free(buf);
    free(lat);
    return status;
}
