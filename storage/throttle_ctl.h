/* The adaptive backup throttle's controller: a pure function of its inputs (no clock, no I/O),
 * so it is tested with a fake clock and a scripted latency feed (tests/unit/test_throttle.c).
 *
 * Every interval (100 ms) the throttle hands it what it measured over that interval: the
 * store's mean write latency and the VM's own block-request p99 latency, and the bytes the
 * backup wrote. It returns the backup's new rate limit. The law is AIMD, as TCP's:
 *   - congested (either latency above its target): the rate halves, starting from what the
 *     backup actually achieved (a limit far above the achieved rate would take many halvings to
 *     bite). Back-off is thus felt within one interval, and is at 1/8 within 0.3 s.
 *   - not congested: after one quiet interval of hold, the rate grows by a quarter per interval
 *     (x9 per second), and once it is well above what the backup achieves (the store or the
 *     reader is the limit, not us) it lifts entirely (0 = unlimited, or the operator's cap), so
 *     the backup is back at >= 80 % of the free bandwidth within ~2 s after contention ends.
 * Targets: relative to a baseline (the lowest latency seen: before the backup for the VM, the
 * quietest interval for the store) times a factor, but never below an absolute floor (noise
 * of a few microseconds is not contention) and never above an absolute ceiling (Veeam
 * throttles at 30 ms of store latency; a VM's own I/O at 20 ms is hurt whatever its baseline). */
#ifndef GW_STORAGE_THROTTLE_CTL_H
#define GW_STORAGE_THROTTLE_CTL_H

#include <stdbool.h>
#include <stdint.h>

#define GW_THROTTLE_INTERVAL_NS 100000000ull   /* the controller's step */

struct gw_throttle_ctl_params {
    double max_rate;          /* bytes/s the operator allows (0 = no cap) */
    double min_rate;          /* never throttle below this (bytes/s; the backup must finish) */
    double store_factor;      /* store target = factor x baseline, clamped to [floor, ceiling] */
    uint64_t store_floor_ns, store_ceiling_ns;
    double vm_factor;         /* VM target = factor x baseline p99, clamped likewise */
    uint64_t vm_floor_ns, vm_ceiling_ns;
    uint64_t vm_min_requests; /* fewer VM requests in an interval say nothing */
};

/* Defaults: store 4x baseline in [20 ms, 30 ms] (a store write of one chunk is its own
 * load: only a clearly struggling store counts, Veeam stops new tasks at 20 ms); VM 1.5x
 * baseline p99 in [0.5 ms, 20 ms]. */
void gw_throttle_ctl_defaults(struct gw_throttle_ctl_params *p);

struct gw_throttle_ctl {
    double rate;              /* current limit, bytes/s; 0 = unlimited */
    uint64_t store_base_ns;   /* 0 until measured */
    uint64_t vm_base_ns;
    unsigned hold;            /* quiet intervals to wait before growing again */
    uint64_t backoffs, intervals;
    bool congested;           /* the last interval was */
    char why[96];             /* what the last back-off reacted to */
};

/* vm_baseline_ns: the VM's p99 before the backup (0: learn it from the quietest interval). */
void gw_throttle_ctl_init(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p, uint64_t vm_baseline_ns);

struct gw_throttle_sample {
    uint64_t bytes;           /* written by the backup over the interval */
    uint64_t interval_ns;     /* how long the interval really was (> 0) */
    uint64_t store_lat_ns;    /* mean store write latency; store_n writes completed */
    uint64_t store_n;
    uint64_t vm_p99_ns;       /* the VM's block-request p99; vm_n requests */
    uint64_t vm_n;
};

/* One step; returns the new limit in bytes/s (0 = unlimited). */
double gw_throttle_ctl_step(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p,
                            const struct gw_throttle_sample *s);

#endif
