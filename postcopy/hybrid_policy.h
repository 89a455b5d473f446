/* Hybrid migration's switch from pre-copy to post-copy, decided after each pre-copy round from
 * what the round measured. The conditions (MigrationPolicy, docs/postcopy.md), first match wins:
 *   - FITS: a pre-copy switchover would fit the downtime limit (few pages left): switch now,
 *     post-copy has little to move;
 *   - DIRTY_RATE: the guest dirtied memory faster than dirty_rate_pct % of the rate pre-copy
 *     moves it (0 = off): pre-copy cannot catch up;
 *   - TIME_PER_GIB: pre-copy has run longer than ns_per_gib per GiB of guest memory (0 = off);
 *   - NOT_CONVERGING: the projected downtime stayed above the limit for GW_HYBRID_SLOW_ROUNDS
 *     rounds in a row.
 * (The round limit and the operator's word are the caller's.) Pure: no clock, no I/O. */
#ifndef GW_POSTCOPY_HYBRID_POLICY_H
#define GW_POSTCOPY_HYBRID_POLICY_H

#include <stdint.h>

#define GW_HYBRID_SLOW_ROUNDS 2u

struct gw_hybrid_policy {
    uint64_t downtime_limit_ns;    /* 0 = 50 ms */
    unsigned dirty_rate_pct;       /* 0 = off */
    uint64_t ns_per_gib;           /* 0 = off */
    uint64_t mem_size;             /* guest memory, bytes */
};

struct gw_hybrid_round {
    uint64_t dirty_bytes;          /* what the round's fetch found dirty */
    uint64_t round_ns;             /* since the previous fetch (or the start) */
    uint64_t moved_bytes;          /* guest bytes pre-copy has queued so far */
    uint64_t elapsed_ns;           /* since pre-copy started */
};

enum gw_hybrid_decision {
    GW_HYBRID_GO_ON = 0,
    GW_HYBRID_FITS,
    GW_HYBRID_DIRTY_RATE,
    GW_HYBRID_TIME_PER_GIB,
    GW_HYBRID_NOT_CONVERGING,
};

struct gw_hybrid_eval {
    uint64_t rate_bps;             /* moved over elapsed */
    uint64_t dirty_bps;            /* dirty over round_ns */
    uint64_t projected_ns;         /* dirty bytes over rate: a pre-copy switchover's cost */
};

/* *slow counts consecutive rounds whose projection was above the limit (the caller keeps it,
 * starting at 0). Fills *ev when not NULL. */
enum gw_hybrid_decision gw_hybrid_decide(const struct gw_hybrid_policy *p, const struct gw_hybrid_round *r,
                                         unsigned *slow, struct gw_hybrid_eval *ev);
/* A note for the operator ("pre-copy round", "dirty rate above ... : switch"...). */
const char *gw_hybrid_note(enum gw_hybrid_decision d);

#endif
