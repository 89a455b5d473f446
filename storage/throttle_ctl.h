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
 * Targets: relative to a baseline times a factor, but never below an absolute floor (noise
 * of a few microseconds is not contention) and never above an absolute ceiling (Veeam
 * throttles at 30 ms of store latency; a VM's own I/O at 20 ms is hurt whatever its baseline).
 * The store's baseline is its quietest interval. The VM's is its p99 over a window just before
 * the backup, and the VM signal is its p99 over the same length of window (the throttle keeps
 * it sliding: GW_THROTTLE_VM_WINDOW intervals), so that baseline and signal are one statistic:
 * a guest's p99 over one 100 ms interval (a few hundred requests) swings by 2-4x on its own,
 * and the lowest of many such swings, as a baseline, made every later interval look congested.
 * A measured VM baseline is kept; one learnt from quiet intervals (none measured) only falls.
 * It is the median of the guest's last 16-64 such windows, which its disk keeps
 * (engine/common/lat_windows.h; storage/throttle.h, vm_history), or, without that much of a
 * past, of GW_THROTTLE_BASE_WINDOWS windows in a row measured before the backup
 * (gw_throttle_ctl_baseline); never one: a single window that caught a spike (a 0.5 s p99 of
 * 4-5 ms where the guest's own 5 s p99 was 3.0-3.3 ms) set the target so high that the
 * controller never saw congestion, and the backup ran at 50 MiB/s with the guest's p99 at
 * 1.67x (2 December). Nor does the median help when the whole 2 s before the backup is
 * disturbed (the store still settling after an earlier backup's 512 MiB: four windows at
 * 9 ms where the guest's p99 was 3-4 ms before and after, and the backup ran at 51 MiB/s
 * with the guest at 1.96x): a measured baseline falls to the median of the last
 * GW_THROTTLE_BASE_WINDOWS windows during the backup when that is under GW_THROTTLE_BASE_FALL
 * of it (the same statistic, over as long; the backup can raise the guest's p99, not lower
 * it, so such a fall says the baseline was taken in a disturbance). Only a fall by more than
 * a third: at 0.8 the guest's own swings lowered sound baselines (a median of 2.6 ms after
 * a baseline of 3.4 ms), and every such fall makes the target stricter.
 *
 * The VM's window remembers a spike for its whole length; the last interval must be hot too,
 * or one spike would halve the rate once per interval of the window.
 *
 * Not ours: a guest whose p99 stays over its target for a whole window while the backup is held
 * at its floor (min_rate: next to nothing written) is slow for another reason (its own load,
 * its store aging, other tenants); halving further cannot help, and crawling only makes the
 * guest share the host with the backup for longer. The VM baseline is then taken again from
 * that window (what the guest has without us now) and the rate grows back; a VM slowed by our
 * writes is quiet at the floor and keeps its baseline. A re-taken baseline falls back towards
 * the one measured before the backup as the guest's quiet intervals allow.
 *
 * The knee: growing by a quarter per interval until the guest's p99 rises again found the
 * congestion point anew every ~0.3 s, and every such crossing is a spike in the guest's p99
 * (the guest's, not the window's: a whole phase's p99 is made of them). The limit at which
 * congestion came is remembered; after a back-off the rate grows fast only up to
 * GW_THROTTLE_KNEE_PLATEAU of it, then probes above by GW_THROTTLE_KNEE_PROBE per interval
 * (a crossing every ~0.8 s instead). A knee not met again for GW_THROTTLE_KNEE_FORGET
 * intervals is forgotten: the contention has gone, and growth is fast again (the recovery
 * target, >= 80 % of the free bandwidth within 5 s, still holds).
 *
 * Start: the limit begins at start_rate and grows as after a back-off (x1.25 per interval,
 * lifted once well above what the backup achieves: about 2 s to 200 MiB/s). An unlimited
 * start put a burst on the store before the first measurement could show it: 300 guest
 * requests at 20-40 ms on an RBD disk beside the store, which alone set a 10 s phase's p99.
 *
 * The backup must still finish: its copy-before-write buffer (guest pages or disk blocks
 * rewritten before the backup read them) fails the backup when full. The limit never goes
 * below need_rate (what finishing before the buffer fills takes, at the rate it has been
 * filling), except while the store is over its target (an absolute one: a store in trouble
 * hurts every VM on it, and then the backup gives way, even if it fails): spread evenly, the unavoidable load has the lowest peak (a backup that crawls
 * and then must rush hurts the guest's p99 most). As a backstop, with the buffer at
 * pressure_hold a congested interval holds the rate instead of halving it, and at
 * pressure_lift the limit is lifted: the guest's writes never wait either way, and a backup
 * that fails helps nobody. */
#ifndef GW_STORAGE_THROTTLE_CTL_H
#define GW_STORAGE_THROTTLE_CTL_H

#include <stdbool.h>
#include <stdint.h>

#define GW_THROTTLE_INTERVAL_NS 100000000ull   /* the controller's step */
#define GW_THROTTLE_VM_WINDOW 5u                /* intervals in the VM's p99 window (0.5 s) */
#define GW_THROTTLE_BASE_WINDOWS 4u             /* windows measured for the VM's baseline (2 s) */
#define GW_THROTTLE_BASE_MAX 64u                /* windows a baseline is the median of, at most */
#define GW_THROTTLE_HISTORY_MIN 16u             /* a VM's recent windows that make a baseline (8 s) */
#define GW_THROTTLE_BASE_FALL 0.6               /* a measured baseline falls to a median under this x it */
#define GW_THROTTLE_KNEE_PLATEAU 0.85           /* fast growth stops here, times the knee */
#define GW_THROTTLE_KNEE_PROBE 1.02             /* then growth per interval */
#define GW_THROTTLE_KNEE_FORGET 20u             /* quiet intervals that forget the knee (2 s) */

struct gw_throttle_ctl_params {
    double max_rate;          /* bytes/s the operator allows (0 = no cap) */
    double min_rate;          /* never throttle below this (bytes/s; the backup must finish) */
    double store_factor;      /* store target = factor x baseline, clamped to [floor, ceiling] */
    uint64_t store_floor_ns, store_ceiling_ns;
    double vm_factor;         /* VM target = factor x baseline p99, clamped likewise */
    uint64_t vm_floor_ns, vm_ceiling_ns;
    uint64_t vm_min_requests; /* fewer VM requests in an interval say nothing */
    double pressure_hold, pressure_lift;   /* copy-before-write buffer fractions (see above) */
    double start_rate;        /* the first limit (bytes/s; 0: unlimited from the start) */
};

/* Defaults: store 4x baseline in [20 ms, 30 ms] (a store write of one chunk is its own
 * load: only a clearly struggling store counts, Veeam stops new tasks at 20 ms); VM 1.1x
 * baseline p99 in [0.5 ms, 20 ms]. The guest-visible target is p99 within 1.2x of no backup
 * over the whole backup; a controller aiming at 1.2x in 0.5 s windows sits at that line and
 * crosses it about half the time, so it aims below by the window's own noise (a guest's 0.5 s
 * p99 swings 10-40 % with nothing written);
 * pressure hold at 0.8, lift at 0.9; start at 8 MiB/s. */
void gw_throttle_ctl_defaults(struct gw_throttle_ctl_params *p);

struct gw_throttle_ctl {
    double rate;              /* current limit, bytes/s; 0 = unlimited */
    double own;               /* the controller's own limit, before the floor of what finishing
                                 needs: it steps from this one (see gw_throttle_ctl_step) */
    uint64_t store_base_ns;   /* 0 until measured */
    uint64_t vm_base_ns;
    uint64_t vm_base0_ns;     /* the baseline given at init (0: none) */
    bool vm_base_measured;    /* given at init: kept */
    unsigned floor_hot;       /* intervals in a row hot by the VM only, at the floor */
    uint64_t rebases;         /* baselines taken again at the floor (see above) */
    uint64_t vm_wins[GW_THROTTLE_BASE_WINDOWS];   /* the VM's p99 over its last whole windows */
    unsigned vm_nwins;        /* windows seen (the ring's next slot: this mod the count) */
    uint64_t base_falls;      /* measured baselines lowered by those windows */
    unsigned hold;            /* quiet intervals to wait before growing again */
    double knee;              /* the limit at the last congestion (0: none remembered) */
    unsigned since_hot;       /* intervals since the last congestion */
    uint64_t backoffs, intervals;
    bool congested;           /* the last interval was */
    bool store_hot;           /* by the store's latency */
    char why[96];             /* what the last back-off reacted to */
};

/* The VM's baseline from the p99s of n windows in a row (0: a window with too few requests):
 * the median of the others (of an even count, the mean of the middle two; the first
 * GW_THROTTLE_BASE_MAX non-zero ones); 0 if none. */
uint64_t gw_throttle_ctl_baseline(const uint64_t *p99s, unsigned n);

/* vm_baseline_ns: the VM's p99 before the backup (0: learn it from the quietest interval). */
void gw_throttle_ctl_init(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p, uint64_t vm_baseline_ns);

struct gw_throttle_sample {
    uint64_t bytes;           /* written by the backup over the interval */
    uint64_t interval_ns;     /* how long the interval really was (> 0) */
    uint64_t store_lat_ns;    /* mean store write latency; store_n writes completed */
    uint64_t store_n;
    uint64_t vm_p99_ns;       /* the VM's block-request p99; vm_n requests */
    uint64_t vm_n;
    uint64_t vm_last_p99_ns;  /* when vm_p99_ns is over a window: the p99 of its last interval
                                 (0: not given); it must be over the target too */
    double pressure;          /* the backup's copy-before-write buffer, fraction full (0..1) */
    double need_rate;         /* bytes/s the backup needs to finish before that buffer fills */
};

/* One step; returns the new limit in bytes/s (0 = unlimited). */
double gw_throttle_ctl_step(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p,
                            const struct gw_throttle_sample *s);

/* Store writes in flight that a limit of rate bytes/s needs, by Little's law: rate x write
 * latency / object size, with half again to spare, at least 1, at most max. Every write queued
 * beyond that waits in the OSD in front of the guests' requests (16 x 1 MiB at ~700 MiB/s is
 * ~23 ms) without making the backup faster. Returns 0 (the store's own maximum) when rate is 0
 * (unlimited); 1 while lat_ns or obj_bytes is not known yet. */
unsigned gw_throttle_ctl_inflight(double rate, uint64_t lat_ns, double obj_bytes, unsigned max);

#endif
