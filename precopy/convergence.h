/* Convergence control for pre-copy: after each round, given what the round moved and how
 * many pages the guest dirtied meanwhile, decide whether to go on, switch over, slow the
 * guest down (auto-converge) or give up. Pure logic, no I/O, so it is unit-tested with made-up
 * rounds.
 *
 * The downtime limit is a ceiling, not a target: once the remaining dirty data fits the limit
 * at the measured bandwidth we still keep going while rounds shrink the dirty set quickly,
 * so a guest that can move with a 2 ms pause is not paused for 50. */
#ifndef GW_PRECOPY_CONVERGENCE_H
#define GW_PRECOPY_CONVERGENCE_H

#include <stdbool.h>
#include <stdint.h>

struct gw_conv_policy {
    uint64_t downtime_limit_ns;   /* default 50 ms */
    uint64_t bandwidth_limit_bps; /* 0 = unlimited (enforced by the sender loop) */
    uint64_t timeout_ns;          /* total time before the migration is cancelled; 0 = none */
    bool auto_converge;
    uint32_t max_rounds;          /* 0 = no limit */
};

/* Defaults for anything left 0 (downtime 50 ms, timeout 10 min). */
void gw_conv_policy_defaults(struct gw_conv_policy *p);

enum gw_conv_decision { GW_CONV_CONTINUE = 0, GW_CONV_SWITCHOVER = 1, GW_CONV_CANCEL = 2 };

struct gw_conv_state {
    /* inputs accumulated from rounds */
    uint64_t moved_bytes;         /* guest bytes sent in all rounds so far */
    uint64_t moved_ns;            /* time spent sending them */
    uint64_t prev_dirty_pages;    /* dirty set at the previous decision (UINT64_MAX: none yet) */
    unsigned not_shrinking;       /* consecutive rounds whose dirty set did not shrink by 10 % */
    /* outputs */
    uint64_t bandwidth_bps;       /* moved_bytes / moved_ns */
    uint64_t dirty_rate_bps;      /* dirtied bytes per second in the last round */
    uint64_t expected_downtime_ns;
    unsigned throttle_pct;        /* vCPU throttle auto-converge asks for (0 = none) */
    char reason[128];             /* why the last decision was taken */
};

void gw_conv_init(struct gw_conv_state *s);

/* Records a finished round: bytes of guest memory it sent and how long that took. */
void gw_conv_round_sent(struct gw_conv_state *s, uint64_t bytes, uint64_t ns);

/* Decides after a round. dirty_pages: the dirty set just fetched; round_ns: time the guest
 * had to dirty them (since the previous fetch); round: the round just finished (0-based);
 * elapsed_ns: since the migration started. */
enum gw_conv_decision gw_conv_decide(struct gw_conv_state *s, const struct gw_conv_policy *p,
                                     uint64_t dirty_pages, uint64_t round_ns, uint32_t round,
                                     uint64_t elapsed_ns);

#endif
