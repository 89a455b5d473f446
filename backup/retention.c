/* Retention rules (see retention.h). */
#include "backup/retention.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/tz.h"

const char *gw_keep_reason_name(enum gw_keep_reason r)
{
    static const char *const names[] = {"remove", "keep-last", "keep-hourly", "keep-daily", "keep-weekly",
                                        "keep-monthly", "keep-yearly"};
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

int gw_keep_check(const struct gw_keep *k, char *err, size_t errlen)
{
    const unsigned v[] = {k->last, k->hourly, k->daily, k->weekly, k->monthly, k->yearly};
    unsigned any = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (v[i] > GW_KEEP_MAX) { snprintf(err, errlen, "%s is at most %u", gw_keep_reason_name(i + 1), GW_KEEP_MAX); return -EINVAL; }
        any |= v[i];
    }
    if (!any) { snprintf(err, errlen, "no retention rule: give at least one --keep-* count"); return -EINVAL; }
    return 0;
}

/* The period a local time falls in, as one number (equal number = same period). */
static int64_t period(enum gw_keep_reason rule, const struct tm *tm)
{
    int64_t y = tm->tm_year + 1900;
    switch (rule) {
    case GW_KEEP_HOURLY: return ((y * 12 + tm->tm_mon) * 31 + tm->tm_mday) * 24 + tm->tm_hour;
    case GW_KEEP_DAILY: return (y * 12 + tm->tm_mon) * 31 + tm->tm_mday;
    case GW_KEEP_WEEKLY: {
        /* ISO 8601: the week belongs to the year of its Thursday. */
        int wday = (tm->tm_wday + 6) % 7;                       /* Monday = 0 */
        int64_t days = gw_days_from_civil(y, tm->tm_mon + 1, tm->tm_mday);
        int64_t thursday = days - wday + 3, ty;
        int mo, d;
        gw_civil_from_days(thursday, &ty, &mo, &d);
        int64_t week = (thursday - gw_days_from_civil(ty, 1, 1)) / 7;
        return ty * 60 + week;
    }
    case GW_KEEP_MONTHLY: return y * 12 + tm->tm_mon;
    case GW_KEEP_YEARLY: return y;
    default: return 0;
    }
}

struct item {
    int64_t t;
    size_t i;
    int64_t key;
};

static int newest_first(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    if (x->t != y->t) return x->t > y->t ? -1 : 1;
    return x->i > y->i ? -1 : x->i < y->i;
}

static int has(const int64_t *set, size_t n, int64_t key)
{
    for (size_t i = 0; i < n; i++)
        if (set[i] == key) return 1;
    return 0;
}

int gw_retention_apply(const struct gw_keep *k, const struct gw_tz *tz, const int64_t *times, size_t n,
                       enum gw_keep_reason *mark, char *err, size_t errlen)
{
    int r = gw_keep_check(k, err, errlen);
    if (r) return r;
    struct item *it = malloc((n ? n : 1) * sizeof *it);
    int64_t *kept = malloc((n ? n : 1) * sizeof *kept), *covered = malloc((n ? n : 1) * sizeof *covered);
    uint8_t *decided = calloc(n ? n : 1, 1);
    if (!it || !kept || !covered || !decided) { free(it); free(kept); free(covered); free(decided); return -ENOMEM; }
    for (size_t i = 0; i < n; i++) { it[i] = (struct item){.t = times[i], .i = i}; mark[i] = GW_KEEP_NONE; }
    qsort(it, n, sizeof *it, newest_first);
    for (size_t j = 0; j < n && j < k->last; j++) { mark[it[j].i] = GW_KEEP_LAST; decided[j] = 1; }
    const struct { enum gw_keep_reason rule; unsigned count; } rules[] = {
        {GW_KEEP_HOURLY, k->hourly}, {GW_KEEP_DAILY, k->daily}, {GW_KEEP_WEEKLY, k->weekly},
        {GW_KEEP_MONTHLY, k->monthly}, {GW_KEEP_YEARLY, k->yearly},
    };
    for (size_t q = 0; q < sizeof rules / sizeof rules[0]; q++) {
        if (!rules[q].count) continue;
        for (size_t j = 0; j < n; j++) {
            struct tm tm;
            gw_tz_local(tz, it[j].t, &tm);
            it[j].key = period(rules[q].rule, &tm);
        }
        /* Periods already holding a kept backup are covered; they use none of this rule's count.
         * (The sets stay small: at most one entry per backup; n is a VM's backup count.) */
        size_t nc = 0, nk = 0;
        for (size_t j = 0; j < n; j++)
            if (mark[it[j].i] != GW_KEEP_NONE && !has(covered, nc, it[j].key)) covered[nc++] = it[j].key;
        for (size_t j = 0; j < n && nk < rules[q].count; j++) {
            if (decided[j] || has(covered, nc, it[j].key)) continue;
            decided[j] = 1;
            if (has(kept, nk, it[j].key)) continue;      /* an older backup of a kept period: remove */
            kept[nk++] = it[j].key;
            mark[it[j].i] = rules[q].rule;
        }
    }
    free(it);
    free(kept);
    free(covered);
    free(decided);
    return 0;
}
