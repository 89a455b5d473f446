/* Unit tests for hybrid's switch decision (postcopy/hybrid_policy.c): each condition fires on
 * its own figures and not on others, and the first match wins. */
#include "postcopy/hybrid_policy.h"
#include "tests/lib/gw_test.h"

#define MS 1000000ull
#define MIB (1ull << 20)

/* 1 GiB guest, pre-copy has moved 1 GiB in 1 s (1 GiB/s); the round found `dirty` bytes
 * dirty in `round_ms`. */
static enum gw_hybrid_decision decide(const struct gw_hybrid_policy *p, uint64_t dirty, uint64_t round_ms,
                                      uint64_t elapsed_ms, unsigned *slow)
{
    struct gw_hybrid_round r = {.dirty_bytes = dirty, .round_ns = round_ms * MS, .moved_bytes = 1ull << 30,
                                .elapsed_ns = elapsed_ms * MS};
    return gw_hybrid_decide(p, &r, slow, NULL);
}

GW_TEST(fits_the_downtime_limit)
{
    struct gw_hybrid_policy p = {.downtime_limit_ns = 50 * MS, .mem_size = 1ull << 30};
    unsigned slow = 0;
    CHECK_EQ(decide(&p, 10 * MIB, 100, 1000, &slow), GW_HYBRID_FITS);   /* 10 MiB at 1 GiB/s: ~10 ms */
    CHECK_EQ(slow, 0);
}

GW_TEST(dirty_rate_above_its_share)
{
    struct gw_hybrid_policy p = {.downtime_limit_ns = 1 * MS, .dirty_rate_pct = 50, .mem_size = 1ull << 30};
    unsigned slow = 0;
    /* 300 MiB dirtied in 500 ms = 600 MiB/s > 50 % of 1 GiB/s. */
    CHECK_EQ(decide(&p, 300 * MIB, 500, 1000, &slow), GW_HYBRID_DIRTY_RATE);
    /* 100 MiB in 500 ms = 200 MiB/s: below; one slow round, go on. */
    slow = 0;
    CHECK_EQ(decide(&p, 100 * MIB, 500, 1000, &slow), GW_HYBRID_GO_ON);
    CHECK_EQ(slow, 1);
    /* Off: the same heavy round only counts as slow. */
    p.dirty_rate_pct = 0;
    slow = 0;
    CHECK_EQ(decide(&p, 300 * MIB, 500, 1000, &slow), GW_HYBRID_GO_ON);
}

GW_TEST(time_per_gib)
{
    /* 2 GiB guest, 1 s per GiB: pre-copy may run 2 s. */
    struct gw_hybrid_policy p = {.downtime_limit_ns = 1 * MS, .ns_per_gib = 1000 * MS, .mem_size = 2ull << 30};
    unsigned slow = 0;
    CHECK_EQ(decide(&p, 100 * MIB, 500, 1500, &slow), GW_HYBRID_GO_ON);
    slow = 0;
    CHECK_EQ(decide(&p, 100 * MIB, 500, 2100, &slow), GW_HYBRID_TIME_PER_GIB);
}

GW_TEST(not_converging_after_slow_rounds)
{
    struct gw_hybrid_policy p = {.downtime_limit_ns = 1 * MS, .mem_size = 1ull << 30};
    unsigned slow = 0;
    CHECK_EQ(decide(&p, 100 * MIB, 500, 1000, &slow), GW_HYBRID_GO_ON);
    CHECK_EQ(decide(&p, 100 * MIB, 500, 1000, &slow), GW_HYBRID_NOT_CONVERGING);
    /* A round that fits resets the count. */
    CHECK_EQ(decide(&p, 0, 500, 1000, &slow), GW_HYBRID_FITS);
    CHECK_EQ(slow, 0);
}

GW_TEST(nothing_moved_yet_never_fits)
{
    struct gw_hybrid_policy p = {.downtime_limit_ns = 50 * MS, .dirty_rate_pct = 50, .mem_size = 1ull << 30};
    struct gw_hybrid_round r = {.dirty_bytes = MIB, .round_ns = 100 * MS, .moved_bytes = 0, .elapsed_ns = 100 * MS};
    unsigned slow = 0;
    struct gw_hybrid_eval ev;
    CHECK_EQ(gw_hybrid_decide(&p, &r, &slow, &ev), GW_HYBRID_GO_ON);   /* no rate: no projection, no share */
    CHECK(ev.projected_ns == UINT64_MAX);
}
