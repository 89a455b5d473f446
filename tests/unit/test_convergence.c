/* Convergence control with made-up rounds: a quiet guest switches as soon as it fits, a
 * shrinking dirty set gets more rounds even under the limit, a guest that outruns the link
 * is throttled in steps and then cancelled at the time limit, max_rounds cancels. */
#include "precopy/convergence.h"
#include "tests/lib/gw_test.h"

#define MS 1000000ull
#define GBPS (1000ull * 1000 * 1000)

static struct gw_conv_policy policy(uint64_t downtime_ms)
{
    struct gw_conv_policy p = {.downtime_limit_ns = downtime_ms * MS};
    gw_conv_policy_defaults(&p);
    return p;
}

GW_TEST(idle_guest_switches_at_once)
{
    struct gw_conv_state s;
    struct gw_conv_policy p = policy(50);
    gw_conv_init(&s);
    gw_conv_round_sent(&s, 512ull << 20, 400 * MS);
    CHECK_EQ(gw_conv_decide(&s, &p, 0, 400 * MS, 0, 400 * MS), GW_CONV_SWITCHOVER);
    CHECK(s.bandwidth_bps > 1000ull * 1000 * 1000);
}

GW_TEST(shrinking_set_keeps_going_under_the_limit)
{
    struct gw_conv_state s;
    struct gw_conv_policy p = policy(50);
    gw_conv_init(&s);
    gw_conv_round_sent(&s, 1ull << 30, 1000 * MS); /* ~1 GiB/s */
    /* 10 MiB dirty after 1 GiB sent: fits 50 ms, but the set shrank 100x: go on. */
    CHECK_EQ(gw_conv_decide(&s, &p, 2560, 1000 * MS, 0, 1000 * MS), GW_CONV_CONTINUE);
    /* and when the next round barely shrinks it, switch. */
    CHECK_EQ(gw_conv_decide(&s, &p, 2000, 10 * MS, 1, 1010 * MS), GW_CONV_SWITCHOVER);
    /* A set that fits and halves: continue rather than pause for 10 ms. */
    gw_conv_init(&s);
    gw_conv_round_sent(&s, 1ull << 30, 1000 * MS);
    CHECK_EQ(gw_conv_decide(&s, &p, 100000, 1000 * MS, 0, 1000 * MS), GW_CONV_CONTINUE); /* 390 MiB: too big */
    CHECK_EQ(gw_conv_decide(&s, &p, 2560, 400 * MS, 1, 1400 * MS), GW_CONV_CONTINUE);    /* fits, shrank 40x */
    CHECK_EQ(gw_conv_decide(&s, &p, 2000, 10 * MS, 2, 1410 * MS), GW_CONV_SWITCHOVER);   /* fits, stalls */
}

GW_TEST(tiny_remainder_switches)
{
    struct gw_conv_state s;
    struct gw_conv_policy p = policy(50);
    gw_conv_init(&s);
    gw_conv_round_sent(&s, 1ull << 30, 1000 * MS);
    CHECK_EQ(gw_conv_decide(&s, &p, 100000, 1000 * MS, 0, 1000 * MS), GW_CONV_CONTINUE);
    CHECK_EQ(gw_conv_decide(&s, &p, 10, 100 * MS, 1, 1100 * MS), GW_CONV_SWITCHOVER);
    CHECK(s.expected_downtime_ns < 2 * MS);
}

GW_TEST(hot_guest_is_throttled_then_cancelled)
{
    struct gw_conv_state s;
    struct gw_conv_policy p = policy(5);
    p.auto_converge = true;
    p.timeout_ns = 10000 * MS;
    gw_conv_init(&s);
    gw_conv_round_sent(&s, 100ull << 20, 1000 * MS); /* 100 MiB/s link */
    uint64_t t = 1000 * MS;
    unsigned last = 0;
    for (uint32_t r = 0; r < 20; r++) {
        t += 500 * MS;
        enum gw_conv_decision d = gw_conv_decide(&s, &p, 50000, 500 * MS, r, t);
        if (t >= p.timeout_ns) { CHECK_EQ(d, GW_CONV_CANCEL); break; }
        CHECK_EQ(d, GW_CONV_CONTINUE);
        CHECK(s.throttle_pct >= last);
        last = s.throttle_pct;
    }
    CHECK(last >= 60);
    CHECK(s.dirty_rate_bps > 300ull << 20);
}

GW_TEST(without_auto_converge_no_throttle)
{
    struct gw_conv_state s;
    struct gw_conv_policy p = policy(5);
    gw_conv_init(&s);
    gw_conv_round_sent(&s, 100ull << 20, 1000 * MS);
    for (uint32_t r = 0; r < 5; r++) gw_conv_decide(&s, &p, 50000, 500 * MS, r, (r + 2) * 500 * MS);
    CHECK_EQ(s.throttle_pct, 0);
}

GW_TEST(max_rounds_cancels)
{
    struct gw_conv_state s;
    struct gw_conv_policy p = policy(5);
    p.max_rounds = 3;
    gw_conv_init(&s);
    gw_conv_round_sent(&s, 100ull << 20, 1000 * MS);
    CHECK_EQ(gw_conv_decide(&s, &p, 50000, 500 * MS, 0, MS), GW_CONV_CONTINUE);
    CHECK_EQ(gw_conv_decide(&s, &p, 50000, 500 * MS, 1, MS), GW_CONV_CONTINUE);
    CHECK_EQ(gw_conv_decide(&s, &p, 50000, 500 * MS, 2, MS), GW_CONV_CANCEL);
}
