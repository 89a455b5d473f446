/* Unit tests for the background push's pacing (postcopy/pc_pacer.c): no cap until a queue
 * shows on two readings in a row (a first reading in slow start teaches nothing), a cut
 * below what the link carried with a deeper drain just after it, a slow creep back that
 * stops short of it and is no faster with faster readings, a probe after a calm spell, and
 * noise (a late ACK on a busy host) that cannot drag the cap down by more than 1/8 a time. */
#include "postcopy/pc_pacer.h"
#include "tests/lib/gw_test.h"

#define MS 1000000ull
#define GBIT (125000000ull)   /* 1 Gbit/s in bytes/s */

/* A queue on two readings in a row, 1 ms apart, at rate: the first cut, at t ms. */
static uint64_t first_cut(struct gw_pc_pacer_state *st, uint32_t queue_us, uint64_t rate, uint64_t t)
{
    CHECK_EQ(gw_pc_pacer_decide(st, queue_us, rate, (t - 1) * MS), 0);
    return gw_pc_pacer_decide(st, queue_us, rate, t * MS);
}

GW_TEST(no_cap_without_a_queue)
{
    struct gw_pc_pacer_state st = {0};
    for (uint64_t t = 1; t < 100; t++) CHECK_EQ(gw_pc_pacer_decide(&st, 50, GBIT, t * MS), 0);
    CHECK_EQ(st.cuts, 0);
}

GW_TEST(queue_cuts_below_the_rate_then_creeps_back)
{
    struct gw_pc_pacer_state st = {0};
    uint64_t cap = GBIT / 100 * GW_PC_PACER_CUT_PCT;
    /* A 2.5 ms queue: drained within GW_PC_PACER_DRAIN_MS by 25 points more. */
    uint64_t drain = first_cut(&st, 2500, GBIT, 10);
    CHECK_EQ(drain, GBIT / 100 * (GW_PC_PACER_CUT_PCT - 25));
    CHECK_EQ(st.cap, cap);
    CHECK_EQ(st.ceiling, GBIT);
    CHECK_EQ(st.cuts, 1);
    /* Draining, queue or not, then the cut's cap. */
    CHECK_EQ(gw_pc_pacer_decide(&st, 2000, GBIT / 2, 12 * MS), drain);
    CHECK_EQ(gw_pc_pacer_decide(&st, 100, GBIT / 2, 15 * MS), drain);
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
    first_cut(&st, 2500, GBIT, 10);
    uint64_t t = 100;
    for (int i = 0; i < 50; i++, t += 5) gw_pc_pacer_decide(&st, 10, GBIT, t * MS);
    uint64_t before = st.ceiling;
    for (uint64_t end = t + GW_PC_PACER_PROBE_MS + 10; t < end; t += 5) gw_pc_pacer_decide(&st, 10, GBIT, t * MS);
    CHECK(st.ceiling > before);
}

GW_TEST(a_slow_reading_lowers_the_ceiling_by_an_eighth_at_most)
{
    struct gw_pc_pacer_state st = {0};
    first_cut(&st, 2500, GBIT, 10);
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
    CHECK_EQ(first_cut(&st, 5000, 1000, 10), GW_PC_PACER_FLOOR);
    CHECK_EQ(gw_pc_pacer_decide(&st, 5000, 1000, 30 * MS), GW_PC_PACER_FLOOR);
}

GW_TEST(slow_start_reading_is_not_learnt)
{
    /* The push's first reading: a queue, but the lanes were still ramping up (a third of
     * the link). No cut on it; the next reading, the link full, sets the ceiling. */
    struct gw_pc_pacer_state st = {0};
    CHECK_EQ(gw_pc_pacer_decide(&st, 1100, GBIT / 3, 1 * MS), 0);
    CHECK_EQ(st.cuts, 0);
    /* A reading without a queue in between starts over. */
    CHECK_EQ(gw_pc_pacer_decide(&st, 100, GBIT / 2, 2 * MS), 0);
    CHECK_EQ(gw_pc_pacer_decide(&st, 1100, GBIT / 2, 3 * MS), 0);
    CHECK(gw_pc_pacer_decide(&st, 1100, GBIT, 4 * MS) > 0);
    CHECK_EQ(st.ceiling, GBIT);
    CHECK_EQ(st.cap, GBIT / 100 * GW_PC_PACER_CUT_PCT);
    /* After the first cut, one reading is enough (a ceiling is known). */
    CHECK(gw_pc_pacer_decide(&st, 1100, GBIT, 100 * MS) > 0);
    CHECK_EQ(st.cuts, 2);
}

GW_TEST(fast_readings_do_not_creep_faster)
{
    struct gw_pc_pacer_state st = {0};
    first_cut(&st, 400, GBIT, 10);
    uint64_t cap = st.cap, t;
    /* 1 ms readings without a queue for 50 ms after the drain: one step per 5 ms. */
    for (t = 30; t < 80; t++) gw_pc_pacer_decide(&st, 50, GBIT, t * MS);
    CHECK(st.cap > cap);
    uint64_t want = cap;
    for (int i = 0; i < 10; i++) want += want / 100;
    CHECK(st.cap <= want);
}
