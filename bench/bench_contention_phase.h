/* One phase of the contention bench (bench_backup_contention.c) and how it is measured: the
 * disk guest's request latency over the phase (a histogram and 5 s windows) while it runs
 * alone or beside a backup of the second VM. The sequence of phases, and what is compared
 * with what, are the bench's; this file only runs and reads one, and adds phases up. */
#ifndef GW_BENCH_CONTENTION_PHASE_H
#define GW_BENCH_CONTENTION_PHASE_H

#include <stddef.h>
#include <stdint.h>

#include "bench/bench_disk_lat.h"
#include "engine/common/lat_hist.h"

struct gw_cphase {
    double p50_us, p99_us, mib_s, elapsed_ms;
    uint64_t requests, backoffs, bytes;
    uint64_t wp_faults;     /* the backed-up VM's writes that faulted on write-protect */
    uint64_t vm_target_pct; /* adaptive: the guests' p99 target, percent of their baseline */
    struct gw_lat_hist d;   /* the guest's requests in the phase */
    struct gw_lat_hist head;   /* alone phases: the requests of their first head_s seconds */
    struct gw_disk_lat_windows win;   /* the phase's p99 window by window */
};

/* ph's requests and quantiles: those between two readings of the guest's histogram, then and now. */
void gw_cphase_between(const struct gw_lat_hist *then, const struct gw_lat_hist *now, struct gw_cphase *ph);

/* out (overwritten): the requests of x and y together, with their quantiles; no windows. */
void gw_cphase_hist_merge(const struct gw_lat_hist *x, const struct gw_lat_hist *y, struct gw_cphase *out);

/* out (overwritten): x and y read as one phase (requests and windows). */
void gw_cphase_merge(const struct gw_cphase *x, const struct gw_cphase *y, struct gw_cphase *out);

/* Adds x to acc: its requests, windows, bytes, time, back-offs and faults; acc's quantiles and
 * throughput are then those of everything added (several rounds read as one phase). */
void gw_cphase_add(struct gw_cphase *acc, const struct gw_cphase *x);

/* The disk guest (its runner's control socket dsock) alone for seconds, read window by window;
 * ph->head gets the requests of the first head_s seconds (head_s <= seconds; 0: not wanted).
 * 0, or -EIO when its status could not be read. */
int gw_cphase_alone(const char *vm_bin, const char *dsock, uint64_t seconds, uint64_t head_s, struct gw_cphase *ph);

/* One backup of the second VM (runner at bsock) into store (argv words, NULL-ended) with extra
 * options (NULL-ended), its stdout into out_path, the disk guest read window by window until it
 * ends; its throughput, back-offs and faults from the backup's own JSON. 0, or -EIO with err set
 * (the backup failed, or the guest's status was unreadable). */
int gw_cphase_backup(const char *vm_bin, const char *dsock, const char *bsock, const char *out_path, char *const *store,
                     char *const *extra, struct gw_cphase *ph, char *err, size_t errlen);

#endif
