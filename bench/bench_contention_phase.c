/* Runs and reads one phase of the contention bench (see bench_contention_phase.h). */
#include "bench/bench_contention_phase.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"

static void quantiles(struct gw_cphase *ph)
{
    ph->requests = ph->d.count;
    ph->p50_us = gw_lat_hist_quantile(&ph->d, 0.5) / 1e3;
    ph->p99_us = gw_lat_hist_quantile(&ph->d, 0.99) / 1e3;
}

void gw_cphase_between(const struct gw_lat_hist *then, const struct gw_lat_hist *now, struct gw_cphase *ph)
{
    gw_lat_hist_delta(now, then, &ph->d);
    quantiles(ph);
}

void gw_cphase_hist_merge(const struct gw_lat_hist *x, const struct gw_lat_hist *y, struct gw_cphase *out)
{
    memset(out, 0, sizeof *out);
    gw_lat_hist_sum(&out->d, x);
    gw_lat_hist_sum(&out->d, y);
    quantiles(out);
}

void gw_cphase_merge(const struct gw_cphase *x, const struct gw_cphase *y, struct gw_cphase *out)
{
    memset(out, 0, sizeof *out);
    gw_cphase_add(out, x);
    gw_cphase_add(out, y);
}

void gw_cphase_add(struct gw_cphase *acc, const struct gw_cphase *x)
{
    gw_lat_hist_sum(&acc->d, &x->d);
    quantiles(acc);
    gw_disk_lat_windows_join(&acc->win, &x->win);
    acc->bytes += x->bytes;
    acc->elapsed_ms += x->elapsed_ms;
    acc->backoffs += x->backoffs;
    acc->wp_faults += x->wp_faults;
    if (x->vm_target_pct) acc->vm_target_pct = x->vm_target_pct;
    acc->mib_s = acc->elapsed_ms > 0 ? acc->bytes / 1048576.0 / (acc->elapsed_ms / 1000) : 0;
}

/* The disk guest alone for seconds, read window by window; ph->head gets the requests of the
 * first head_s seconds (head_s <= seconds; 0: not wanted). */
int gw_cphase_alone(const char *vm_bin, const char *dsock, uint64_t seconds, uint64_t head_s, struct gw_cphase *ph)
{
    struct gw_lat_hist h0, prev, now;
    if (gw_disk_lat_read(vm_bin, dsock, &h0)) return -EIO;
    prev = now = h0;
    for (uint64_t t = 0; t < seconds;) {
        uint64_t step = seconds - t < GW_DISK_LAT_WINDOW_S ? seconds - t : GW_DISK_LAT_WINDOW_S;
        if (t < head_s && head_s - t < step) step = head_s - t;
        sleep((unsigned)step);
        t += step;
        if (gw_disk_lat_read(vm_bin, dsock, &now)) return -EIO;
        gw_disk_lat_window_add(&ph->win, &prev, &now);
        if (t == head_s) gw_lat_hist_delta(&now, &h0, &ph->head);
        prev = now;
    }
    gw_cphase_between(&h0, &now, ph);
    return 0;
}

/* Runs argv (a backup) with its stdout into out_path, reading the disk guest's latency window
 * by window until it ends (how it went is in its JSON, read by the caller). 0, or -EIO when a
 * reading failed (err set). */
static int run_watched(const char *vm_bin, const char *dsock, char *const *argv, const char *out_path, struct gw_cphase *ph,
                       char *err, size_t errlen)
{
    struct gw_lat_hist h0, prev, now;
    if (gw_disk_lat_read(vm_bin, dsock, &h0)) { snprintf(err, errlen, "disk guest status unreadable"); return -EIO; }
    prev = now = h0;
    pid_t pid = gw_bench_spawn(argv, out_path);
    if (pid < 0) { snprintf(err, errlen, "cannot start the backup: %s", strerror((int)-pid)); return -EIO; }
    uint64_t window_ns = GW_DISK_LAT_WINDOW_S * 1000000000ull, window_end = gw_now_ns() + window_ns;
    int st, r, unread = 0;
    while ((r = gw_bench_poll(pid, &st)) == 0) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        if (gw_now_ns() < window_end) continue;
        window_end += window_ns;
        /* A failed reading ends the windows, not the backup: it is waited for either way. */
        if (unread || (unread = gw_disk_lat_read(vm_bin, dsock, &now))) continue;
        gw_disk_lat_window_add(&ph->win, &prev, &now);
        prev = now;
    }
    if (r < 0) gw_bench_wait(pid);
    if (unread || gw_disk_lat_read(vm_bin, dsock, &now)) { snprintf(err, errlen, "disk guest status unreadable"); return -EIO; }
    gw_disk_lat_window_add(&ph->win, &prev, &now);   /* the last, shorter window */
    gw_cphase_between(&h0, &now, ph);
    return 0;
}

/* One backup of the second VM with extra options; its throughput from its own figures. */
int gw_cphase_backup(const char *vm_bin, const char *dsock, const char *bsock, const char *out_path, char *const *store,
                     char *const *extra, struct gw_cphase *ph, char *err, size_t errlen)
{
    char *argv[24];
    int n = 0;
    const char *head[] = {vm_bin, "backup", "--control", bsock, "--json", "--parent", "none"};
    for (size_t i = 0; i < GW_ARRAY_SIZE(head); i++) argv[n++] = (char *)head[i];
    for (int i = 0; store[i]; i++) argv[n++] = store[i];
    for (int i = 0; extra[i]; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    if (run_watched(vm_bin, dsock, argv, out_path, ph, err, errlen)) return -EIO;
    static char out[65536];
    char line[8192];
    gw_bench_read_file(out_path, out, sizeof out);
    unlink(out_path);
    gw_bench_last_json(out, line, sizeof line);
    bool ok = false;
    gw_json_get_bool(line, "ok", &ok);
    if (!ok) { snprintf(err, errlen, "backup failed: %.300s", line); return -EIO; }
    gw_json_get_u64(line, "throttle_bytes", &ph->bytes);
    gw_json_get_double(line, "elapsed_ms", &ph->elapsed_ms);
    gw_json_get_u64(line, "throttle_backoffs", &ph->backoffs);
    gw_json_get_u64(line, "wp_faults", &ph->wp_faults);
    gw_json_get_u64(line, "throttle_vm_target_pct", &ph->vm_target_pct);
    ph->mib_s = ph->elapsed_ms > 0 ? ph->bytes / 1048576.0 / (ph->elapsed_ms / 1000) : 0;
    return 0;
}
