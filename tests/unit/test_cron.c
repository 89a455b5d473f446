/* Unit tests for cron schedules (backup/cron.h): fields, lists, ranges, steps, names, the
 * day-of-month/day-of-week rule, Feb 29, DST gaps and overlaps in Europe/Berlin, jitter,
 * catch-up after downtime, and hostile expressions refused with the field named. */
#include "backup/cron.h"
#include "backup/tz.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    return gw_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60;
}

static int64_t next(const char *expr, const struct gw_tz *tz, int64_t after)
{
    struct gw_cron c;
    char err[256];
    if (gw_cron_parse(expr, &c, err, sizeof err)) { fprintf(stderr, "  %s: %s\n", expr, err); return -1; }
    int64_t t = -1;
    if (gw_cron_next(&c, tz, after, &t)) return -2;
    return t;
}

static struct gw_tz *berlin(void)
{
    struct gw_tz *tz = NULL;
    char err[256];
    gw_tz_load("Europe/Berlin", &tz, err, sizeof err);
    return tz;
}

GW_TEST(cron_basic_fields)
{
    CHECK_EQ(next("0 2 * * *", NULL, utc(2026, 5, 1, 3, 0)), utc(2026, 5, 2, 2, 0));
    CHECK_EQ(next("0 2 * * *", NULL, utc(2026, 5, 1, 1, 59)), utc(2026, 5, 1, 2, 0));
    CHECK_EQ(next("*/15 * * * *", NULL, utc(2026, 5, 1, 10, 7)), utc(2026, 5, 1, 10, 15));
    CHECK_EQ(next("*/15 * * * *", NULL, utc(2026, 5, 1, 10, 15)), utc(2026, 5, 1, 10, 30));   /* strictly after */
    CHECK_EQ(next("*/15 * * * *", NULL, utc(2026, 5, 1, 10, 15) + 1), utc(2026, 5, 1, 10, 30));
    CHECK_EQ(next("5-50/20 * * * *", NULL, utc(2026, 5, 1, 10, 26)), utc(2026, 5, 1, 10, 45));
    CHECK_EQ(next("10/20 * * * *", NULL, utc(2026, 5, 1, 10, 51)), utc(2026, 5, 1, 11, 10));
    CHECK_EQ(next("1,3,58 * * * *", NULL, utc(2026, 5, 1, 10, 3)), utc(2026, 5, 1, 10, 58));
    /* Weekdays 9-17 every two hours; 2026-05-01 is a Friday. */
    CHECK_EQ(next("0 9-17/2 * * MON-FRI", NULL, utc(2026, 5, 1, 17, 30)), utc(2026, 5, 4, 9, 0));
    CHECK_EQ(next("0 9-17/2 * * mon-fri", NULL, utc(2026, 5, 4, 9, 0)), utc(2026, 5, 4, 11, 0));
    CHECK_EQ(next("0 0 * * 7", NULL, utc(2026, 5, 1, 0, 0)), utc(2026, 5, 3, 0, 0));   /* 7 = Sunday */
    CHECK_EQ(next("0 0 1 JAN,jul *", NULL, utc(2026, 1, 1, 0, 0)), utc(2026, 7, 1, 0, 0));
    CHECK_EQ(next("@monthly", NULL, utc(2026, 12, 15, 0, 0)), utc(2027, 1, 1, 0, 0));
    CHECK_EQ(next("@hourly", NULL, utc(2026, 12, 31, 23, 0)), utc(2027, 1, 1, 0, 0));
}

GW_TEST(cron_day_rules_and_feb29)
{
    /* Both day fields restricted: either matches. 2026-03-01 is a Sunday: Friday the 6th
     * comes before the 13th. */
    CHECK_EQ(next("0 0 13 * FRI", NULL, utc(2026, 3, 1, 0, 0)), utc(2026, 3, 6, 0, 0));
    /* One restricted: only that one. */
    CHECK_EQ(next("0 0 13 * *", NULL, utc(2026, 3, 1, 0, 0)), utc(2026, 3, 13, 0, 0));
    CHECK_EQ(next("0 0 * * FRI", NULL, utc(2026, 3, 7, 0, 0)), utc(2026, 3, 13, 0, 0));
    CHECK_EQ(next("0 0 29 2 *", NULL, utc(2026, 3, 1, 0, 0)), utc(2028, 2, 29, 0, 0));
    CHECK_EQ(next("0 0 29 2 *", NULL, utc(2096, 3, 1, 0, 0)), utc(2104, 2, 29, 0, 0));   /* 2100 is not a leap year */
    CHECK_EQ(next("0 0 31 * *", NULL, utc(2026, 4, 1, 0, 0)), utc(2026, 5, 31, 0, 0));
    CHECK_EQ(next("0 0 30 2 *", NULL, utc(2026, 1, 1, 0, 0)), -2);   /* never: -ERANGE */
}

GW_TEST(cron_dst_berlin)
{
    struct gw_tz *b = berlin();
    REQUIRE(b);
    /* Winter: 02:30 CET is 01:30 UTC; summer: 00:30 UTC. */
    CHECK_EQ(next("30 2 * * *", b, utc(2026, 1, 10, 12, 0)), utc(2026, 1, 11, 1, 30));
    CHECK_EQ(next("30 2 * * *", b, utc(2026, 7, 10, 12, 0)), utc(2026, 7, 11, 0, 30));
    /* 2026-03-29: 02:00-03:00 does not exist; 02:30 fires once when the gap ends (01:00 UTC =
     * 03:00 CEST), then 02:30 CEST the next day. */
    int64_t t = next("30 2 * * *", b, utc(2026, 3, 28, 12, 0));
    CHECK_EQ(t, utc(2026, 3, 29, 1, 0));
    CHECK_EQ(next("30 2 * * *", b, t), utc(2026, 3, 30, 0, 30));
    /* Every quarter hour of the missing hour: one firing, not four. */
    t = next("*/15 2 * * *", b, utc(2026, 3, 28, 12, 0));
    CHECK_EQ(t, utc(2026, 3, 29, 1, 0));
    CHECK_EQ(next("*/15 2 * * *", b, t), utc(2026, 3, 30, 0, 0));
    /* 2026-10-25: 02:00-03:00 happens twice; 02:30 fires at the first (00:30 UTC) only. */
    t = next("30 2 * * *", b, utc(2026, 10, 24, 12, 0));
    CHECK_EQ(t, utc(2026, 10, 25, 0, 30));
    CHECK_EQ(next("30 2 * * *", b, t), utc(2026, 10, 26, 1, 30));
    /* A daily job runs exactly once a day over a whole year, through both changes. */
    struct gw_cron c;
    char err[256];
    REQUIRE(gw_cron_parse("30 2 * * *", &c, err, sizeof err) == 0);
    int64_t at = utc(2026, 1, 1, 0, 0);
    int n = 0;
    for (; at < utc(2027, 1, 1, 0, 0); n++) {
        int64_t nx;
        REQUIRE(gw_cron_next(&c, b, at, &nx) == 0);
        CHECK(nx - at >= 22 * 3600 || n == 0);   /* never two firings in one day */
        at = nx;
    }
    CHECK_EQ(n, 366);   /* 2026-01-01 .. 2027-01-01 inclusive of the first of 2027 */
    /* Far ahead (footer rule): the spring gap of 2090 (March 26). */
    CHECK_EQ(next("30 2 * * *", b, utc(2090, 3, 25, 12, 0)), utc(2090, 3, 26, 1, 0));
    gw_tz_free(b);
}

GW_TEST(cron_jitter_and_catch_up)
{
    int64_t fire = utc(2026, 5, 1, 2, 0);
    CHECK_EQ(gw_cron_jitter(fire, 0, "web1"), fire);
    int64_t a = gw_cron_jitter(fire, 1800, "web1");
    CHECK_EQ(gw_cron_jitter(fire, 1800, "web1"), a);            /* stable across restarts */
    CHECK(a >= fire && a < fire + 1800);
    int distinct = 0, lo = 0, hi = 0;
    int64_t prev = -1;
    for (int i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "vm%d", i);
        int64_t j = gw_cron_jitter(fire, 1800, key);
        CHECK(j >= fire && j < fire + 1800);
        distinct += j != prev;
        prev = j;
        if (j < fire + 900) lo++; else hi++;
    }
    CHECK(distinct > 150);
    CHECK(lo > 60 && hi > 60);                                   /* spread across the window */
    struct gw_cron c;
    char err[256];
    REQUIRE(gw_cron_parse("0 2 * * *", &c, err, sizeof err) == 0);
    int64_t missed;
    CHECK_EQ(gw_cron_missed(&c, NULL, utc(2026, 5, 1, 2, 0), utc(2026, 5, 4, 10, 0), &missed), 0);
    CHECK_EQ(missed, utc(2026, 5, 4, 2, 0));                    /* three missed: run once */
    CHECK_EQ(gw_cron_missed(&c, NULL, utc(2026, 5, 4, 2, 0), utc(2026, 5, 4, 10, 0), &missed), -ENOENT);
}

/* The latest fire in (last_run, now] by walking every fire: the oracle for gw_cron_missed. */
static int walk_missed(const struct gw_cron *c, const struct gw_tz *tz, int64_t last_run, int64_t now, int64_t *out)
{
    int64_t t = last_run, nx;
    int r = -ENOENT;
    while (!gw_cron_next(c, tz, t, &nx) && nx <= now) { *out = t = nx; r = 0; }
    return r;
}

GW_TEST(cron_missed_is_the_latest_fire_however_long_ago)
{
    struct gw_cron c;
    char err[256];
    int64_t missed;
    /* Two years of a minutely schedule: the latest minute, not a fire 600,000 steps in. */
    REQUIRE(gw_cron_parse("* * * * *", &c, err, sizeof err) == 0);
    CHECK_EQ(gw_cron_missed(&c, NULL, utc(2024, 1, 1, 0, 0), utc(2026, 1, 1, 0, 0) + 30, &missed), 0);
    CHECK_EQ(missed, utc(2026, 1, 1, 0, 0));
    CHECK_EQ(gw_cron_missed(&c, NULL, utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 0) + 59, &missed), -ENOENT);
    /* Every minute of the 1st, asked on the 20th: 23:59 on the 1st. */
    REQUIRE(gw_cron_parse("* * 1 * *", &c, err, sizeof err) == 0);
    CHECK_EQ(gw_cron_missed(&c, NULL, utc(2025, 11, 3, 0, 0), utc(2026, 5, 20, 9, 0), &missed), 0);
    CHECK_EQ(missed, utc(2026, 5, 1, 23, 59));
    /* Feb 29 at noon, asked years later, and nothing between two of them. */
    REQUIRE(gw_cron_parse("0 12 29 2 *", &c, err, sizeof err) == 0);
    CHECK_EQ(gw_cron_missed(&c, NULL, utc(2017, 1, 1, 0, 0), utc(2026, 12, 2, 0, 0), &missed), 0);
    CHECK_EQ(missed, utc(2024, 2, 29, 12, 0));
    CHECK_EQ(gw_cron_missed(&c, NULL, utc(2024, 2, 29, 12, 0), utc(2027, 12, 2, 0, 0), &missed), -ENOENT);
    /* An absurd last run reads as long ago, not as a wrap. */
    CHECK_EQ(gw_cron_missed(&c, NULL, INT64_MIN, utc(2026, 12, 2, 0, 0), &missed), 0);
    CHECK_EQ(missed, utc(2024, 2, 29, 12, 0));
    /* Against the walk over every fire, in Berlin across both DST changes of 2026. */
    struct gw_tz *tz = berlin();
    REQUIRE(tz != NULL);
    static const char *const exprs[] = {"30 2 * * *", "*/7 1-3 * * *", "0 2 * * 0", "15 */5 * * *", "0,30 2 29-31 3,10 *"};
    uint64_t seed = 42;
    for (unsigned e = 0; e < sizeof exprs / sizeof *exprs; e++) {
        REQUIRE(gw_cron_parse(exprs[e], &c, err, sizeof err) == 0);
        for (int k = 0; k < 40; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            int64_t from = utc(2026, 3, 25, 0, 0) + (int64_t)(seed >> 33) % (220 * 86400);
            int64_t to = from + (int64_t)(seed >> 13) % (9 * 86400);
            int64_t want = 0, got = 0;
            int rw = walk_missed(&c, tz, from, to, &want), rg = gw_cron_missed(&c, tz, from, to, &got);
            CHECK_EQ(rg, rw);
            if (!rw) CHECK_EQ(got, want);
        }
    }
    gw_tz_free(tz);
}

GW_TEST(cron_hostile)
{
    static const char *const bad[] = {
        "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *", "* * * 13 *",
        "* * * * 8", "*/0 * * * *", "*/61 * * * *", "5-1 * * * *", "1- * * * *", "-5 * * * *", "1,,2 * * * *",
        "1, * * * *", "99999999999999999999 * * * *", "* * * JAN-XYZ *", "* * * * FRIDAY", "@reboot", "@",
        "1/ * * * *", "a * * * *", "* * * * *\x01", "\xc3\xa9 * * * *", "*/-1 * * * *", "**/2 * * * *",
    };
    struct gw_cron c;
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int r = gw_cron_parse(bad[i], &c, err, sizeof err);
        if (r != -EINVAL) fprintf(stderr, "  accepted '%s'\n", bad[i]);
        CHECK_EQ(r, -EINVAL);
        CHECK(err[0] != 0);
    }
    CHECK_EQ(gw_cron_parse("61 * * * *", &c, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "field 1 (minute)") && strstr(err, "0-59"));
    CHECK_EQ(gw_cron_parse("0 2 * * * 1", &c, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "more than 5"));
    char longx[400];
    memset(longx, '1', sizeof longx - 1);
    longx[sizeof longx - 1] = 0;
    CHECK_EQ(gw_cron_parse(longx, &c, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "longer"));
    CHECK_EQ(gw_cron_parse(NULL, &c, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_cron_parse("  0\t2 * *   *  ", &c, err, sizeof err), 0);   /* spacing is free */
}
