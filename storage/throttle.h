/* Backup throttling: token buckets (bytes/s and writes/s) per backup and per host, and the
 * adaptive mode (the default) in which a controller (throttle_ctl.h) sets the per-backup rate
 * from the store's write latency and the VM's own block-request latency, so that backups take
 * only what the guests and the store leave free.
 *
 * Applied where chunks become store writes (chunk_sink.c calls gw_throttle_take before every
 * put): reading and hashing cost no store bandwidth; what reaches the store is what the guests
 * on the same store feel. The take blocks the backup's thread only (never a guest's).
 *
 * Per host: one token bucket shared by every backup on the host, kept in a small file that
 * each runner maps (host_path, updated under flock). A fixed share per runner would waste the
 * budget of a backup that finished, stalls on its reads or writes only unchanged chunks; a
 * shared bucket lets the running backups take what the others leave, needs no daemon
 * bookkeeping, and a runner that dies holds nothing (there are only tokens, no reservations). */
#ifndef GW_STORAGE_THROTTLE_H
#define GW_STORAGE_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/common/lat_hist.h"
#include "storage/throttle_ctl.h"

struct gw_store;

/* A token bucket with an explicit clock (pure: unit-tested with a fake one). Taking more than
 * is there leaves a debt that the caller waits out, so the long-run rate is exact whatever
 * the sizes taken. rate 0 = unlimited. */
struct gw_bucket {
    double rate, burst, tokens;
    uint64_t last_ns;
};
void gw_bucket_init(struct gw_bucket *b, double rate, double burst, uint64_t now_ns);
/* Changes the rate from now on (tokens earned so far at the old rate are kept). */
void gw_bucket_set_rate(struct gw_bucket *b, double rate, double burst, uint64_t now_ns);
/* Takes n tokens; returns the ns to wait before going on (0: at once). */
uint64_t gw_bucket_take(struct gw_bucket *b, double n, uint64_t now_ns);

enum gw_throttle_mode { GW_THROTTLE_ADAPTIVE = 0, GW_THROTTLE_FIXED, GW_THROTTLE_OFF };

struct gw_throttle_cfg {
    enum gw_throttle_mode mode;
    double rate;              /* bytes/s for this backup (0: none; adaptive: its ceiling) */
    double ops;               /* store writes/s for this backup (0: none) */
    const char *host_path;    /* the host-wide bucket's file (NULL: no host limit) */
    double host_rate, host_ops;
    /* This host's share of the cluster's budget for the store (its file: NULL = none), kept up
     * to date by godwitd (engine/daemon/backup_budget.c) through gw_throttle_shared_set. */
    const char *cluster_path;
    double cluster_rate;
    /* Adaptive: the VMs' p99 target in percent of their baseline (0: GW_LIMIT_VM_LAT_PCT_DEFAULT;
     * else GW_LIMIT_VM_LAT_PCT_MIN..MAX, engine/common/limits.h). */
    unsigned vm_target_pct;
    /* The VM's block-request latency histogram (cumulative); NULL or -errno: no VM signal. */
    int (*vm_latency)(void *ctx, struct gw_lat_hist *out);
    void *vm_ctx;
    /* The same VMs' recent past: the p99s (ns) of their last 0.5 s windows, oldest first
     * (engine/common/lat_windows.h), into p99_ns[0..max); their number, or -errno when there is
     * none to give (several disks: their p99s do not add up to the p99 of their sum). NULL: none.
     * With GW_THROTTLE_HISTORY_MIN windows or more the VM baseline is their median, taken at
     * once; otherwise it is measured over the 2 s before the first write. */
    int (*vm_history)(void *ctx, uint64_t *p99_ns, unsigned max);
    /* The backup's copy-before-write buffer: how full it is (0..1) and the store rate (bytes/s)
     * the backup needs to finish before it fills (0: unknown). NULL: no buffer. Called from
     * the backup's writing thread. */
    void (*pressure)(void *ctx, double *full, double *need_rate);
    void *pressure_ctx;
    /* Asked before and during every wait (each slice of it): true ends the wait and
     * gw_throttle_take returns -ECANCELED, so that a backup held at a slow rate stops within
     * a slice (20 ms) of being cancelled, not after the batch of chunks it is writing. */
    bool (*cancelled)(void *ctx);
    void *cancel_ctx;
};

struct gw_throttle_stats {
    uint64_t bytes, ops, wait_ns, backoffs, intervals;
    uint64_t elapsed_ns;      /* first take to last */
    double min_rate, end_rate;/* bytes/s the adaptive limit reached (0: unlimited) */
    uint64_t vm_base_ns, store_base_ns;   /* the baselines at the end */
    uint64_t vm_base0_ns;     /* the VM baseline it started from (0: none) */
    unsigned vm_base_windows; /* the windows the first VM baseline was the median of */
    bool vm_base_from_history;/* ... the VM's recent past (vm_history), not measured here */
    unsigned vm_target_pct;   /* adaptive: the VMs' p99 target held, percent of baseline (0: not adaptive) */
    char why[96];             /* what the last back-off reacted to */
};

struct gw_throttle;

/* s: the store whose write latency is watched (borrowed). Adaptive, with VMs that have done
 * block I/O: takes their baseline p99 from their recent past (vm_history), or, without
 * enough of it, measures it over GW_THROTTLE_BASE_WINDOWS windows of GW_THROTTLE_VM_WINDOW
 * intervals (this call then sleeps that long, 2 s). 0 or -errno with a reason in err. */
int gw_throttle_open(const struct gw_throttle_cfg *cfg, struct gw_store *s, struct gw_throttle **out, char *err,
                     size_t errlen);
/* Accounts one store write of bytes, and waits as the limits say. NULL t: no throttle.
 * 0, or -ECANCELED when cfg.cancelled said so (the write must not be made). */
int gw_throttle_take(struct gw_throttle *t, uint64_t bytes);
/* Frees t; st (may be NULL) gets its counters. */
void gw_throttle_close(struct gw_throttle *t, struct gw_throttle_stats *st);

/* Sets the limits of the shared bucket in the file at path (created if missing), as a runner
 * that opens it does: every backup mapping it is held to them from its next write on. 0 or
 * -errno with the reason in err. */
int gw_throttle_shared_set(const char *path, double rate, double ops, char *err, size_t errlen);

/* Parses "adaptive", "fixed", "off". 0 or -EINVAL. */
int gw_throttle_mode_parse(const char *s, enum gw_throttle_mode *out);

#endif
