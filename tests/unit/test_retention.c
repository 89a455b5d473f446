/* Unit tests for retention (backup/retention.h) and time zones (backup/tz.h) with fixed
 * timestamps, and prune on a directory store (which backups it removes from the index). */
#include "backup/prune.h"
#include "backup/retention.h"
#include "backup/tz.h"
#include "storage/store.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    return gw_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60;
}

static struct gw_tz *zone(const char *name)
{
    struct gw_tz *tz = NULL;
    char err[256];
    int r = gw_tz_load(name, &tz, err, sizeof err);
    if (r) fprintf(stderr, "  %s\n", err);
    return tz;
}

static int kept(const enum gw_keep_reason *m, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n; i++) c += m[i] != GW_KEEP_NONE;
    return c;
}

GW_TEST(civil_days_round_trip)
{
    CHECK_EQ(gw_days_from_civil(1970, 1, 1), 0);
    CHECK_EQ(gw_days_from_civil(2000, 3, 1), 11017);
    for (int64_t d = -800000; d < 800000; d += 997) {
        int64_t y;
        int mo, dd;
        gw_civil_from_days(d, &y, &mo, &dd);
        CHECK_EQ(gw_days_from_civil(y, mo, dd), d);
    }
}

GW_TEST(tz_offsets_and_dst)
{
    struct gw_tz *b = zone("Europe/Berlin");
    REQUIRE(b);
    CHECK_EQ(gw_tz_offset(b, utc(2026, 1, 15, 12, 0)), 3600);
    CHECK_EQ(gw_tz_offset(b, utc(2026, 7, 15, 12, 0)), 7200);
    /* 2026-03-29 01:00 UTC the clocks go 02:00 -> 03:00 */
    CHECK_EQ(gw_tz_offset(b, utc(2026, 3, 29, 0, 59)), 3600);
    CHECK_EQ(gw_tz_offset(b, utc(2026, 3, 29, 1, 0)), 7200);
    int64_t out[2];
    CHECK_EQ(gw_tz_from_local(b, 2026, 3, 29, 2, 30, 0, out), 0);            /* the gap */
    CHECK_EQ(gw_tz_from_local(b, 2026, 10, 25, 2, 30, 0, out), 2);           /* the overlap */
    CHECK_EQ(out[0], utc(2026, 10, 25, 0, 30));
    CHECK_EQ(out[1], utc(2026, 10, 25, 1, 30));
    CHECK_EQ(gw_tz_from_local(b, 2026, 6, 1, 2, 30, 0, out), 1);
    CHECK_EQ(out[0], utc(2026, 6, 1, 0, 30));
    /* Far beyond the table: the footer rule (last Sunday of March 2090 is the 26th). */
    CHECK_EQ(gw_tz_offset(b, utc(2090, 3, 26, 0, 59)), 3600);
    CHECK_EQ(gw_tz_offset(b, utc(2090, 3, 26, 1, 0)), 7200);
    CHECK_EQ(gw_tz_offset(b, utc(2090, 10, 29, 0, 59)), 7200);
    CHECK_EQ(gw_tz_offset(b, utc(2090, 10, 29, 1, 0)), 3600);
    struct tm tm;
    gw_tz_local(b, utc(2026, 12, 31, 23, 30), &tm);
    CHECK_EQ(tm.tm_year, 127);
    CHECK_EQ(tm.tm_mon, 0);
    CHECK_EQ(tm.tm_mday, 1);
    CHECK_EQ(tm.tm_hour, 0);
    CHECK_EQ(tm.tm_wday, 5);   /* 2027-01-01 is a Friday */
    gw_tz_free(b);

    struct gw_tz *s = zone("Australia/Sydney");   /* southern: DST across the new year */
    REQUIRE(s);
    CHECK_EQ(gw_tz_offset(s, utc(2090, 1, 10, 0, 0)), 11 * 3600);
    CHECK_EQ(gw_tz_offset(s, utc(2090, 7, 10, 0, 0)), 10 * 3600);
    gw_tz_free(s);
    struct gw_tz *ny = zone("America/New_York");
    REQUIRE(ny);
    CHECK_EQ(gw_tz_offset(ny, utc(2026, 3, 8, 6, 59)), -5 * 3600);
    CHECK_EQ(gw_tz_offset(ny, utc(2026, 3, 8, 7, 0)), -4 * 3600);
    gw_tz_free(ny);
}

GW_TEST(tz_hostile)
{
    struct gw_tz *tz = NULL;
    char err[256];
    CHECK_EQ(gw_tz_load("../../etc/passwd", &tz, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_tz_load("/etc/localtime", &tz, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_tz_load("Europe//Berlin", &tz, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_tz_load("Nowhere/Atlantis", &tz, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "unknown zone"));
    CHECK(tz == NULL);
    /* A real file cut at every length, and with header counts pushed past the data. */
    FILE *f = fopen(GW_TZ_DIR "/Europe/Berlin", "rb");
    REQUIRE(f);
    uint8_t buf[8192];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t cut = 0; cut < len; cut += 7) {
        int r = gw_tz_parse("cut", buf, cut, &tz, err, sizeof err);
        if (!r) gw_tz_free(tz);
        else CHECK_EQ(r, -EBADMSG);
    }
    uint8_t bad[8192];
    for (int field = 0; field < 6; field++) {
        memcpy(bad, buf, len);
        bad[20 + 4 * field] = 0x7f;   /* a count in the billions */
        CHECK_EQ(gw_tz_parse("big", bad, len, &tz, err, sizeof err), -EBADMSG);
    }
    srand(7);
    for (int i = 0; i < 2000; i++) {
        memcpy(bad, buf, len);
        for (int k = 0; k < 4; k++) bad[rand() % len] = (uint8_t)rand();
        if (!gw_tz_parse("flip", bad, len, &tz, err, sizeof err)) {
            (void)gw_tz_offset(tz, utc(2030, 1, 1, 0, 0));
            gw_tz_free(tz);
        }
    }
}

GW_TEST(keep_last_only)
{
    int64_t t[10];
    enum gw_keep_reason m[10];
    char err[256];
    for (int i = 0; i < 10; i++) t[i] = utc(2026, 5, 1, 0, 0) + i * 600;
    struct gw_keep k = {.last = 3};
    CHECK_EQ(gw_retention_apply(&k, NULL, t, 10, m, err, sizeof err), 0);
    CHECK_EQ(kept(m, 10), 3);
    CHECK_EQ(m[9], GW_KEEP_LAST);
    CHECK_EQ(m[7], GW_KEEP_LAST);
    CHECK_EQ(m[6], GW_KEEP_NONE);
    struct gw_keep none = {0};
    CHECK_EQ(gw_retention_apply(&none, NULL, t, 10, m, err, sizeof err), -EINVAL);
    struct gw_keep huge = {.daily = GW_KEEP_MAX + 1};
    CHECK_EQ(gw_retention_apply(&huge, NULL, t, 10, m, err, sizeof err), -EINVAL);
}

GW_TEST(keep_daily_newest_of_each_day)
{
    /* Four backups a day (00:10, 06:10, 12:10, 18:10 UTC) for 10 days, given in shuffled order. */
    int64_t t[40];
    enum gw_keep_reason m[40];
    char err[256];
    for (int i = 0; i < 40; i++) {
        int j = (i * 17) % 40;
        t[i] = utc(2026, 5, 1 + j / 4, 6 * (j % 4), 10);
    }
    struct gw_keep k = {.daily = 3};
    CHECK_EQ(gw_retention_apply(&k, NULL, t, 40, m, err, sizeof err), 0);
    CHECK_EQ(kept(m, 40), 3);
    for (int i = 0; i < 40; i++) {
        bool want = t[i] == utc(2026, 5, 10, 18, 10) || t[i] == utc(2026, 5, 9, 18, 10) || t[i] == utc(2026, 5, 8, 18, 10);
        CHECK_EQ(m[i] == GW_KEEP_DAILY, want);
    }
    /* keep-last 2 covers the newest day: daily then keeps days 9, 8 and 7. */
    struct gw_keep k2 = {.last = 2, .daily = 3};
    CHECK_EQ(gw_retention_apply(&k2, NULL, t, 40, m, err, sizeof err), 0);
    CHECK_EQ(kept(m, 40), 5);
    for (int i = 0; i < 40; i++) {
        if (t[i] == utc(2026, 5, 10, 18, 10) || t[i] == utc(2026, 5, 10, 12, 10)) CHECK_EQ(m[i], GW_KEEP_LAST);
        if (t[i] == utc(2026, 5, 7, 18, 10)) CHECK_EQ(m[i], GW_KEEP_DAILY);
        if (t[i] == utc(2026, 5, 6, 18, 10)) CHECK_EQ(m[i], GW_KEEP_NONE);
    }
}

GW_TEST(keep_daily_in_a_time_zone)
{
    /* 22:30 and 23:30 UTC on May 1 are 00:30 and 01:30 on May 2 in Berlin (UTC+2). */
    int64_t t[3] = {utc(2026, 5, 1, 12, 0), utc(2026, 5, 1, 22, 30), utc(2026, 5, 1, 23, 30)};
    enum gw_keep_reason m[3];
    char err[256];
    struct gw_keep k = {.daily = 5};
    CHECK_EQ(gw_retention_apply(&k, NULL, t, 3, m, err, sizeof err), 0);
    CHECK_EQ(m[0], GW_KEEP_NONE);   /* UTC: one day, the newest (23:30) is kept */
    CHECK_EQ(m[1], GW_KEEP_NONE);
    CHECK_EQ(m[2], GW_KEEP_DAILY);
    struct gw_tz *b = zone("Europe/Berlin");
    REQUIRE(b);
    CHECK_EQ(gw_retention_apply(&k, b, t, 3, m, err, sizeof err), 0);
    CHECK_EQ(m[0], GW_KEEP_DAILY);  /* Berlin: May 1 (14:00) and May 2 (00:30, 01:30) */
    CHECK_EQ(m[1], GW_KEEP_NONE);
    CHECK_EQ(m[2], GW_KEEP_DAILY);
    /* Hourly across the autumn overlap: 02:30 CEST and 02:30 CET are two different hours. */
    int64_t o[2] = {utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)};
    struct gw_keep h = {.hourly = 5};
    CHECK_EQ(gw_retention_apply(&h, b, o, 2, m, err, sizeof err), 0);
    CHECK_EQ(kept(m, 2), 1);   /* same local hour label 02: one period (the wall clock reads 02 both times) */
    gw_tz_free(b);
}

GW_TEST(keep_weekly_monthly_yearly)
{
    char err[256];
    enum gw_keep_reason m[8];
    /* ISO weeks: Thu 2020-12-31 and Sun 2021-01-03 are both week 53 of 2020; Mon 2021-01-04 is
     * week 1 of 2021. */
    int64_t w[3] = {utc(2020, 12, 31, 12, 0), utc(2021, 1, 3, 12, 0), utc(2021, 1, 4, 12, 0)};
    struct gw_keep kw = {.weekly = 10};
    CHECK_EQ(gw_retention_apply(&kw, NULL, w, 3, m, err, sizeof err), 0);
    CHECK_EQ(m[0], GW_KEEP_NONE);
    CHECK_EQ(m[1], GW_KEEP_WEEKLY);
    CHECK_EQ(m[2], GW_KEEP_WEEKLY);
    /* Monthly 2 and yearly 2 over backups on the 1st and 15th of each month of 2025-2026. */
    int64_t t[48];
    enum gw_keep_reason mm[48];
    for (int i = 0; i < 48; i++) t[i] = utc(2025 + i / 24, 1 + (i / 2) % 12, i % 2 ? 15 : 1, 3, 0);
    struct gw_keep k = {.monthly = 2, .yearly = 2};
    CHECK_EQ(gw_retention_apply(&k, NULL, t, 48, mm, err, sizeof err), 0);
    CHECK_EQ(kept(mm, 48), 3);
    CHECK_EQ(mm[47], GW_KEEP_MONTHLY);   /* 2026-12-15 */
    CHECK_EQ(mm[45], GW_KEEP_MONTHLY);   /* 2026-11-15 */
    CHECK_EQ(mm[23], GW_KEEP_YEARLY);    /* 2025-12-15 (2026 is covered by the monthly keeps) */
    /* Equal timestamps: the later index is the newer. */
    int64_t same[2] = {utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 0)};
    struct gw_keep one = {.last = 1};
    CHECK_EQ(gw_retention_apply(&one, NULL, same, 2, m, err, sizeof err), 0);
    CHECK_EQ(m[0], GW_KEEP_NONE);
    CHECK_EQ(m[1], GW_KEEP_LAST);
}

GW_TEST(id_time)
{
    int64_t t;
    CHECK_EQ(gw_backup_id_time("20260501-223000-123456", &t), 0);
    CHECK_EQ(t, utc(2026, 5, 1, 22, 30));
    CHECK_EQ(gw_backup_id_time("2026050-223000", &t), -EINVAL);
    CHECK_EQ(gw_backup_id_time("20261301-223000", &t), -EINVAL);
    CHECK_EQ(gw_backup_id_time("abc", &t), -EINVAL);
}

static int count_ids(const char *key, const char *val, void *ctx)
{
    (void)key;
    (void)val;
    (*(int *)ctx)++;
    return 0;
}

GW_TEST(prune_dir_store)
{
    char dir[] = "/tmp/gw-prune-XXXXXX";
    REQUIRE(mkdtemp(dir));
    char spec[300], err[512];
    snprintf(spec, sizeof spec, "dir:%s/store", dir);
    struct gw_store_params p = {.spec = spec};
    struct gw_backup_target t = {0};
    REQUIRE(gw_store_open(&p, &t.store, err, sizeof err) == 0);
    struct gw_store *s = t.store;
    /* Two backups a day for five days (ids carry their times), and one id without a time. */
    for (int d = 1; d <= 5; d++)
        for (int h = 6; h <= 18; h += 12) {
            char id[64], obj[128];
            snprintf(id, sizeof id, "202605%02d-%02d0000-000000", d, h);
            snprintf(obj, sizeof obj, "m.web1.%s", id);
            CHECK_EQ(s->ops->put(s, obj, "x", 1), 0);
            CHECK_EQ(s->ops->index_set(s, "b.web1", id, "v"), 0);
        }
    CHECK_EQ(s->ops->put(s, "m.web1.odd", "not a manifest", 14), 0);
    CHECK_EQ(s->ops->index_set(s, "b.web1", "odd", "v"), 0);
    CHECK_EQ(s->ops->wait(s), 0);
    struct gw_keep k = {.last = 1, .daily = 2};
    struct gw_prune_stats st;
    CHECK_EQ(gw_backup_prune(&t, "web1", &k, NULL, true, NULL, NULL, &st, err, sizeof err), 0);
    CHECK_EQ(st.backups, 11);
    CHECK_EQ(st.removed, 7);     /* a dry run counts, removes nothing */
    int n = 0;
    s->ops->index_list(s, "b.web1", count_ids, &n);
    CHECK_EQ(n, 11);
    CHECK_EQ(gw_backup_prune(&t, "web1", &k, NULL, false, NULL, NULL, &st, err, sizeof err), 0);
    CHECK_EQ(st.kept, 4);        /* 05 18:00 (last), 04 18:00, 03 18:00 (daily), "odd" (time unknown) */
    CHECK_EQ(st.kept + st.removed, 11);
    n = 0;
    s->ops->index_list(s, "b.web1", count_ids, &n);
    CHECK_EQ(n, 4);
    CHECK_EQ(s->ops->stat(s, "m.web1.20260505-060000-000000", NULL), 0);
    CHECK_EQ(s->ops->stat(s, "m.web1.20260504-180000-000000", NULL), 1);
    CHECK_EQ(s->ops->stat(s, "m.web1.odd", NULL), 1);
    gw_store_close(s);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
}
