/* What a migration reports while it runs and when it ends: phases, bytes, pages by encoding,
 * rounds, rates and downtime. One writer (the migration thread), any number of readers
 * (status requests) through a copy taken under the owner's lock. */
#ifndef GW_PRECOPY_MIGRATION_PROGRESS_H
#define GW_PRECOPY_MIGRATION_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

enum gw_mig_phase {
    GW_MIG_NONE = 0,
    GW_MIG_SETUP,        /* connecting, authenticating, creating the VM on the far side */
    GW_MIG_PRECOPY,      /* rounds while the guest runs */
    GW_MIG_SWITCHOVER,   /* guest paused: last pages, state, digest, commit */
    GW_MIG_COMPLETED,    /* the destination runs the VM; the source has released it */
    GW_MIG_FAILED,       /* the VM runs on (source) / was discarded (destination) */
    GW_MIG_CANCELLED,    /* cancelled by request or time limit; the VM runs on the source */
    GW_MIG_IN_DOUBT,     /* link lost after GO: the source keeps the VM paused (see docs) */
    /* Post-copy (postcopy/, docs/postcopy.md): the VM runs on the destination while its
     * pages move; paused: the link or the other side failed, the VM is paused wherever it
     * is and nothing is lost; recover: reconnecting. */
    GW_MIG_POSTCOPY_ACTIVE,
    GW_MIG_POSTCOPY_PAUSED,
    GW_MIG_POSTCOPY_RECOVER,
};

/* Post-copy's figures (zero for a pre-copy migration). */
struct gw_mig_postcopy {
    bool used;                     /* this migration switched to post-copy */
    uint64_t pages_requested;      /* pages the destination asked for on the priority channel */
    uint64_t pages_remaining;      /* pages not yet at the destination */
    uint64_t pages_resent;         /* pages that crossed twice after the switchover (0) */
    uint64_t req_p50_us, req_p99_us, req_max_us;   /* request -> placed */
    uint64_t req_hist[32];         /* power-of-two histogram: bucket i = [2^i, 2^(i+1)) us */
    uint64_t blocked_ns;           /* sum of request latencies (time the guest waited) */
    uint64_t postcopy_ns;          /* from GO to the last page */
    uint64_t refused;              /* page requests refused (malformed, out of range, late) */
    bool digest_ok;                /* the destination proved its memory equal */
    uint64_t recoveries;           /* broken links resumed (postcopy/pc_resume.h) */
    uint64_t recovery_ns;          /* the last one: from the break noticed to pages flowing again */
    unsigned nvcpus;               /* destination: vcpu_blocked_ns[0..nvcpus) */
    uint64_t vcpu_blocked_ns[16];  /* per vCPU: time blocked on missing pages (GW_MAX_VCPUS) */
};

const char *gw_mig_phase_name(enum gw_mig_phase p);

struct gw_mig_progress {
    enum gw_mig_phase phase;
    uint64_t total_bytes;          /* guest RAM */
    uint64_t sent_bytes;           /* on the wire */
    uint64_t moved_bytes;          /* guest bytes sent (pages x 4 KiB), all rounds */
    uint64_t remaining_bytes;      /* dirty bytes at the last fetch */
    uint64_t pages_zero, pages_raw, pages_lz4;
    uint32_t round;
    uint64_t dirty_rate_bps;
    uint64_t throughput_bps;       /* wire bytes per second over the whole migration */
    uint64_t expected_downtime_ns;
    uint64_t measured_downtime_ns;
    uint64_t setup_ns;
    uint64_t total_ns;
    unsigned throttle_pct;
    char error[256];
    char note[128];                /* last convergence decision, for humans */
    struct gw_mig_postcopy pc;
};

#endif
