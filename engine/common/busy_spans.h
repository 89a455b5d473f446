/* Spans of time, on the host's monotonic clock, that were not its guests' usual: the backup
 * jobs (backups, verifies, restores) that ran, or run, on this host. godwitd keeps the host's
 * recent ones and hands them to each backup it starts, as ages; that backup's adaptive
 * throttle leaves them (and the store's settling after them) out of the guests' recent past
 * (lat_windows.h, gw_lat_windows_drop).
 * A baseline read beside another backup reads high, and lets the new backup take that much
 * more: with two nightly backups per host (K = 2) each one's past held the other.
 *
 * A runner remembers its own last backup; only the daemon knows the others, also those of VMs
 * without a disk, which no backup watches. Not thread-safe: the owner locks. */
#ifndef GW_COMMON_BUSY_SPANS_H
#define GW_COMMON_BUSY_SPANS_H

#include <stdbool.h>
#include <stdint.h>

#define GW_BUSY_SPANS 16u

struct gw_busy_span {
    uint64_t from_ns, to_ns;   /* to_ns 0: still running */
    uint64_t id;               /* 0: an empty slot */
};

struct gw_busy_spans {
    struct gw_busy_span s[GW_BUSY_SPANS];
    uint64_t last_id;
};

/* A span as the ages of its ends at one moment (ms), as a request carries it. */
struct gw_busy_age {
    uint64_t started_age_ms, ended_age_ms;   /* ended_age_ms 0 while it runs */
    bool running;
};

/* A span begins at now_ns; its id, for gw_busy_spans_end. It takes an empty slot, else the one
 * that ended longest ago, else (all running) the one that began first. */
uint64_t gw_busy_spans_begin(struct gw_busy_spans *b, uint64_t now_ns);

/* Span id ended at now_ns (nothing when it was replaced meanwhile). */
void gw_busy_spans_end(struct gw_busy_spans *b, uint64_t id, uint64_t now_ns);

/* The spans still running or ended within horizon_ns of now_ns, as ages at now_ns, oldest start
 * first: at most max (the newest); their number. */
unsigned gw_busy_spans_ages(const struct gw_busy_spans *b, uint64_t now_ns, uint64_t horizon_ns,
                            struct gw_busy_age *out, unsigned max);

/* Back from ages read at now_ns to [*from_ns, *to_ns] on this clock; a running span ends at
 * now_ns. Ages come from another process: one past the clock's start reads as its start, and
 * an end older than the start as the start. */
void gw_busy_span_of_ages(uint64_t now_ns, const struct gw_busy_age *a, uint64_t *from_ns, uint64_t *to_ns);

#endif
