/* Unit tests for when a scheduled backup starts (engine/daemon/backup_sched.c,
 * gw_sched_next): its fire time plus a jitter inside the policy's start window, and that
 * window cut short of the next fire, so that a jitter wider than the schedule's interval
 * never makes one run stand for two fires. */
#include "backup/cron.h"
#include "engine/daemon/backup_sched.h"
#include "tests/lib/gw_test.h"

#include <stdio.h>
#include <string.h>

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    return gw_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60;
}

/* The runs a policy makes over a day when each one starts at its start and takes no time. */
static unsigned runs_in_a_day(const char *schedule, uint32_t jitter_s, const char *vm)
{
    struct gw_policy p = {.jitter_s = jitter_s, .created = utc(2026, 6, 1, 0, 0) - 1};
    snprintf(p.schedule, sizeof p.schedule, "%s", schedule);
    snprintf(p.vm, sizeof p.vm, "%s", vm);
    struct gw_cron c;
    char err[256];
    if (gw_cron_parse(schedule, &c, err, sizeof err)) return 0;
    unsigned runs = 0;
    for (;;) {
        int64_t start, fire;
        if (gw_sched_next(&p, &start, err, sizeof err)) return 0;
        if (start >= utc(2026, 6, 2, 0, 0)) break;
        /* The scheduler runs the latest fire up to the start, once. */
        if (gw_cron_missed(&c, NULL, p.last_fire ? p.last_fire : p.created, start, &fire)) return 0;
        p.last_fire = fire;
        runs++;
    }
    return runs;
}

GW_TEST(jitter_never_makes_one_run_of_two_fires)
{
    CHECK_EQ(runs_in_a_day("0 * * * *", 0, "web1"), 24u);
    CHECK_EQ(runs_in_a_day("0 * * * *", 3 * 3600, "web1"), 24u);
    CHECK_EQ(runs_in_a_day("0 * * * *", 86400, "db7"), 24u);
    CHECK_EQ(runs_in_a_day("*/5 * * * *", 3600, "web1"), 288u);
    CHECK_EQ(runs_in_a_day("0 */6 * * *", 86400, "web1"), 4u);
    CHECK_EQ(runs_in_a_day("0 2 * * *", 600, "web1"), 1u);
}

GW_TEST(start_lies_in_its_window)
{
    struct gw_policy p = {.jitter_s = 600, .created = utc(2026, 6, 1, 0, 0)};
    snprintf(p.schedule, sizeof p.schedule, "0 2 * * *");
    snprintf(p.vm, sizeof p.vm, "web1");
    int64_t start;
    char err[256];
    REQUIRE(gw_sched_next(&p, &start, err, sizeof err) == 0);
    CHECK(start >= utc(2026, 6, 1, 2, 0) && start < utc(2026, 6, 1, 2, 10));
    /* An hourly schedule with a day of jitter: before the next hour. */
    snprintf(p.schedule, sizeof p.schedule, "0 * * * *");
    p.jitter_s = 86400;
    REQUIRE(gw_sched_next(&p, &start, err, sizeof err) == 0);
    CHECK(start >= utc(2026, 6, 1, 1, 0) && start < utc(2026, 6, 1, 2, 0));
}
