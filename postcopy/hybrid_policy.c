/* Hybrid's switch decision (see hybrid_policy.h). */
#include "postcopy/hybrid_policy.h"

#include "engine/common/util.h"

enum gw_hybrid_decision gw_hybrid_decide(const struct gw_hybrid_policy *p, const struct gw_hybrid_round *r,
                                         unsigned *slow, struct gw_hybrid_eval *ev)
{
    uint64_t limit = p->downtime_limit_ns ? p->downtime_limit_ns : 50000000ull;
    struct gw_hybrid_eval e = {0};
    e.rate_bps = r->elapsed_ns ? gw_u64_of_double((double)r->moved_bytes * 1e9 / (double)r->elapsed_ns) : 0;
    e.dirty_bps = r->round_ns ? gw_u64_of_double((double)r->dirty_bytes * 1e9 / (double)r->round_ns) : 0;
    e.projected_ns = e.rate_bps ? gw_u64_of_double((double)r->dirty_bytes * 1e9 / (double)e.rate_bps) : UINT64_MAX;
    if (ev) *ev = e;
    *slow = e.projected_ns > limit ? *slow + 1 : 0;
    if (e.projected_ns <= limit) return GW_HYBRID_FITS;
    if (p->dirty_rate_pct && e.rate_bps && (double)e.dirty_bps * 100.0 > (double)p->dirty_rate_pct * (double)e.rate_bps)
        return GW_HYBRID_DIRTY_RATE;
    if (p->ns_per_gib && (double)r->elapsed_ns > (double)p->ns_per_gib * ((double)p->mem_size / (double)(1ull << 30)))
        return GW_HYBRID_TIME_PER_GIB;
    if (*slow >= GW_HYBRID_SLOW_ROUNDS) return GW_HYBRID_NOT_CONVERGING;
    return GW_HYBRID_GO_ON;
}

const char *gw_hybrid_note(enum gw_hybrid_decision d)
{
    switch (d) {
    case GW_HYBRID_GO_ON: return "pre-copy round";
    case GW_HYBRID_FITS: return "fits the downtime limit: switch";
    case GW_HYBRID_DIRTY_RATE: return "dirty rate above its share of the link: switch to post-copy";
    case GW_HYBRID_TIME_PER_GIB: return "pre-copy ran its time per GiB: switch to post-copy";
    case GW_HYBRID_NOT_CONVERGING: return "not converging: switch to post-copy";
    }
    return "?";
}
