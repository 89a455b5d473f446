/* A latency histogram with fixed memory and ~19% resolution: four buckets per power of two
 * of nanoseconds (an HDR histogram cut down to what a p50/p99 needs). Used for the virtio
 * disk's per-request latency (exported in the runner's status), by the backup throttle's
 * controller (latency over the last interval: the difference of two copies) and by the
 * contention benchmark, and for post-copy's page requests. Not thread-safe (the owner
 * serialises updates and copies), except through gw_lat_hist_add_shared/_load. */
#ifndef GW_COMMON_LAT_HIST_H
#define GW_COMMON_LAT_HIST_H

#include <stdint.h>

#define GW_LAT_HIST_BUCKETS 256u   /* 64 powers of two x 4 */

struct gw_lat_hist {
    uint64_t count, sum_ns;
    uint64_t b[GW_LAT_HIST_BUCKETS];
};

/* Counts one sample of ns nanoseconds. */
void gw_lat_hist_add(struct gw_lat_hist *h, uint64_t ns);

/* The same for a histogram that several threads add to at once (relaxed atomic adds); a
 * reader takes a copy with gw_lat_hist_load and asks the copy. */
void gw_lat_hist_add_shared(struct gw_lat_hist *h, uint64_t ns);
void gw_lat_hist_load(const struct gw_lat_hist *h, struct gw_lat_hist *out);

/* acc += x: the samples of both (two guests' disks, or two phases read as one). */
void gw_lat_hist_sum(struct gw_lat_hist *acc, const struct gw_lat_hist *x);

/* out = now - before (both copies of one histogram, before taken earlier): the samples
 * counted in between. */
void gw_lat_hist_delta(const struct gw_lat_hist *now, const struct gw_lat_hist *before, struct gw_lat_hist *out);

/* The q-quantile (0 < q <= 1) in nanoseconds; 0 when the histogram is empty. Interpolated in
 * the bucket holding it by the quantile's rank among that bucket's samples (as if they were
 * spread evenly over it): a bucket is a fifth of its value wide, and its middle alone made
 * every quantile jump by ~20 % steps, so that a ratio of two p99s read 1.0, 1.18 or 1.64 and
 * nothing in between, and a 1.2x target sat exactly on one step. */
uint64_t gw_lat_hist_quantile(const struct gw_lat_hist *h, double q);
/* The same, but the end of that bucket: a bound the q-quantile does not exceed (at most a
 * quarter of its power of two above it), for a figure checked against a target. */
uint64_t gw_lat_hist_quantile_bound(const struct gw_lat_hist *h, double q);

#endif
