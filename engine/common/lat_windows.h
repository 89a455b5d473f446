/* The recent past of a latency histogram, cut into windows of GW_LAT_WINDOW_NS: the p99 of each
 * window, the last GW_LAT_WINDOWS of them. Kept by the virtio disk beside its histogram and
 * exported in the runner's status, so that a backup that starts can take the guest's usual p99
 * from the last half minute at once instead of measuring it over the 2 s before its first write:
 * four 0.5 s windows (a few thousand requests) read up to a quarter above or below the
 * guest's usual level on their own, and a baseline read high lets the adaptive throttle take
 * that much more (the misses of 2 December, docs/backup-contention.md). The window is the
 * throttle's own VM window (storage/throttle.h), so that history and signal are one statistic.
 *
 * Cut on the owner's updates (gw_lat_windows_note), not on a timer: an idle disk cuts nothing.
 * A window with fewer than GW_LAT_WINDOW_MIN_REQUESTS requests, or one that lasted more than
 * twice its length (the disk was idle, so its p99 is not comparable), is left out. Not
 * thread-safe: the owner serialises notes and reads (the disk's device lock).
 *
 * Each window keeps when it ended (CLOCK_MONOTONIC, the host's clock for every process on it),
 * so that a reader can leave out the windows of a time it knows was not the guest's usual:
 * a backup's own earlier run and the store's settling after it (gw_lat_windows_drop). */
#ifndef GW_COMMON_LAT_WINDOWS_H
#define GW_COMMON_LAT_WINDOWS_H

#include <stdint.h>

#include "engine/common/lat_hist.h"

#define GW_LAT_WINDOW_NS 500000000ull   /* 0.5 s */
#define GW_LAT_WINDOW_MS ((unsigned)(GW_LAT_WINDOW_NS / 1000000u))   /* as the status says it */
#define GW_LAT_WINDOWS 64u               /* 32 s of history */
#define GW_LAT_WINDOW_MIN_REQUESTS 5u

struct gw_lat_windows {
    struct gw_lat_hist at_cut;           /* the histogram when the current window began */
    uint64_t cut_ns;                     /* 0: no window begun yet */
    uint32_t p99_us[GW_LAT_WINDOWS];     /* a ring: the newest at (head - 1) */
    uint64_t end_ns[GW_LAT_WINDOWS];     /* when each ended (its cut) */
    unsigned head, n;
};

/* now: the owner's histogram (cumulative) at now_ns. Ends the current window when it has
 * lasted GW_LAT_WINDOW_NS. */
void gw_lat_windows_note(struct gw_lat_windows *w, const struct gw_lat_hist *now, uint64_t now_ns);

/* Copies the p99s (us) of the last min(max, kept) windows into out, and when each ended into
 * end_ns (NULL: not wanted), oldest first; their number. */
unsigned gw_lat_windows_recent(const struct gw_lat_windows *w, uint32_t *out, uint64_t *end_ns, unsigned max);

/* Leaves out of n windows (p99s and ends as gw_lat_windows_recent gives them) those that may
 * have overlapped [from_ns, to_ns]: a window kept lasted at most twice GW_LAT_WINDOW_NS, so one
 * that ended within that of from_ns is taken to overlap. Keeps the order; the number left. */
unsigned gw_lat_windows_drop(uint32_t *p99_us, uint64_t *end_ns, unsigned n, uint64_t from_ns, uint64_t to_ns);

#endif
