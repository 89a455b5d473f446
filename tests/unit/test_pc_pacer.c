/* Unit tests for the background push's pacing (postcopy/pc_pacer.c): no cap until a queue
 * shows, a cut below what the link carried, a slow creep back that stops short of it, a
 * probe after a calm spell, and noise (a late ACK on a busy host) that cannot drag the cap
 * down by more than 1/8 a time. */
#include "postcopy/pc_pacer.h"
#include "tests/lib/gw_test.h"

#define MS 1000000ull
#define GBIT (125000000ull)   /* 1 Gbit/s in bytes/s */

GW_TEST(no_cap_without_a_queue)
{
    struct gw_pc_pacer_state st = {0};
    for (uint64_t t = 1; t < 100; t++) CHECK_EQ(gw_pc_pacer_decide(&st, 50, GBIT, t * MS), 0);
    CHECK_EQ(st.cuts, 0);
}

GW_TEST(queue_cuts_below_the_rate_then_creeps_back)
{
    struct gw_pc_pacer_state st = {0};
    uint64_t cap = gw_pc_pacer_decide(&st, 2500, GBIT, 10 * MS);
    CHECK_EQ(cap, GBIT / 100 * GW_PC_PACER_CUT_PCT);
    CHECK_EQ(st.ceiling, GBIT);
    CHECK_EQ(st.cuts, 1);
    /* Within the hold, the queue draining: no second cut. */
    CHECK_EQ(gw_pc_pacer_decide(&st, 2000, GBIT / 100 * 85, 20 * MS), cap);
    CHECK_EQ(st.cuts, 1);
    /* No queue: up 1% a step, never above the top share of the ceiling. */
    uint64_t prev = cap, t = 100;
    for (int i = 0; i < 20; i++, t += 5) {   /* 100 ms: up to the top, before any probe */
        uint64_t c = gw_pc_pacer_decide(&st, 20, prev, t * MS);
        CHECK(c >= prev);
        CHECK(c <= GBIT / 100 * GW_PC_PACER_TOP_PCT);
        prev = c;
    }
    CHECK_EQ(prev, GBIT / 100 * GW_PC_PACER_TOP_PCT);
}

GW_TEST(calm_at_the_top_probes_higher)
{
    struct gw_pc_pacer_state st = {0};
    gw_pc_pacer_decide(&st, 2500, GBIT, 10 * MS);
    uint64_t t = 100;
    for (int i = 0; i < 50; i++, t += 5) gw_pc_pacer_decide(&st, 10, GBIT, t * MS);
    uint64_t before = st.ceiling;
    for (uint64_t end = t + GW_PC_PACER_PROBE_MS + 10; t < end; t += 5) gw_pc_pacer_decide(&st, 10, GBIT, t * MS);
    CHECK(st.ceiling > before);
}

GW_TEST(a_slow_reading_lowers_the_ceiling_by_an_eighth_at_most)
{
    struct gw_pc_pacer_state st = {0};
    gw_pc_pacer_decide(&st, 2500, GBIT, 10 * MS);
    /* A late ACK: delay seen while the lanes moved little (the host was busy). */
    gw_pc_pacer_decide(&st, 1500, GBIT / 10, 200 * MS);
    CHECK_EQ(st.ceiling, GBIT - GBIT / 8);
    CHECK_EQ(st.cuts, 2);
    /* A link that really slowed: a few cuts bring the cap under its rate. */
    uint64_t t = 300;
    for (int i = 0; i < 30; i++, t += GW_PC_PACER_HOLD_MS + 1) gw_pc_pacer_decide(&st, 1500, GBIT / 10, t * MS);
    CHECK(st.cap < GBIT / 10);
    CHECK(st.cap >= GW_PC_PACER_FLOOR);
}

GW_TEST(floor_keeps_the_push_moving)
{
    struct gw_pc_pacer_state st = {0};
    CHECK_EQ(gw_pc_pacer_decide(&st, 5000, 1000, 10 * MS), GW_PC_PACER_FLOOR);
}
