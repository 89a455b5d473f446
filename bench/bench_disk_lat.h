/* The disk guest's request latency as the contention bench reads it (bench_disk_lat.c): its
 * runner's histogram, read with `godwit-vm status`, and a phase cut into windows of a few
 * seconds, each with its own p99.
 *
 * A phase's p99 cannot tell a guest that was slow all through it from one that was slow for
 * 20 s of it; the windows can. They also show whether the guest alone has such spells, which
 * the backup cannot be blamed for. */
#ifndef GW_BENCH_DISK_LAT_H
#define GW_BENCH_DISK_LAT_H

#include <stdint.h>
#include <stdio.h>

#include "engine/common/lat_hist.h"

#define GW_DISK_LAT_WINDOW_S 5u        /* the length of one window, seconds */
#define GW_DISK_LAT_WINDOWS_MAX 512u   /* windows kept per phase (42 min); later ones are dropped */

struct gw_disk_lat_windows {
    unsigned n;                         /* windows kept, at most GW_DISK_LAT_WINDOWS_MAX */
    unsigned dropped;                   /* windows past the cap, not kept */
    uint32_t p99_us[GW_DISK_LAT_WINDOWS_MAX];
};

/* The disk guest's histogram from `vm_bin status --control sock --json` into h. 0, -EIO (the
 * status did not run or failed), -ENOENT (no disk histogram in it) or -EBADMSG (a bucket out
 * of range, listed twice, or without a count). Safe to call from one thread at a time. */
int gw_disk_lat_read(const char *vm_bin, const char *sock, struct gw_lat_hist *h);

/* Appends the window between two readings, from then to now, to w. A window with no request
 * is kept as 0 us. */
void gw_disk_lat_window_add(struct gw_disk_lat_windows *w, const struct gw_lat_hist *then, const struct gw_lat_hist *now);

/* Appends every window of src to w (two phases read as one). */
void gw_disk_lat_windows_join(struct gw_disk_lat_windows *w, const struct gw_disk_lat_windows *src);

/* The median window p99, us (0 when w is empty; empty windows are not counted). */
double gw_disk_lat_windows_median(const struct gw_disk_lat_windows *w);

/* How many windows have a p99 above us. */
unsigned gw_disk_lat_windows_over(const struct gw_disk_lat_windows *w, double us);

/* Prints the windows' p99s as a JSON array of integers (us). */
void gw_disk_lat_windows_json(FILE *f, const struct gw_disk_lat_windows *w);

#endif
