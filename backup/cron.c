/* Cron expressions and their next fire time in a time zone (see cron.h). */
#include "backup/cron.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdbool.h>
#include <strings.h>
#include <xxhash.h>

#include "backup/tz.h"

struct field {
    const char *name;
    int min, max;
    const char *const *names;   /* 3-letter names for min.. (NULL: numbers only) */
};

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const wday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL}, {"hour", 0, 23, NULL}, {"day of month", 1, 31, NULL},
    {"month", 1, 12, month_names}, {"day of week", 0, 7, wday_names},
};

static int bad(char *err, size_t errlen, int f, const char *what, const char *tok)
{
    snprintf(err, errlen, "cron field %d (%s): %s '%.32s'", f + 1, fields[f].name, what, tok);
    return -EINVAL;
}

/* A number or a name of field f at *p; advances *p. */
static int value(int f, const char **p, int *out)
{
    const char *s = *p;
    if (*s >= '0' && *s <= '9') {
        long v = 0;
        while (*s >= '0' && *s <= '9') {
            v = v * 10 + (*s++ - '0');
            if (v > 1000) return -1;   /* no overflow, whatever the length */
        }
        *p = s;
        *out = (int)v;
        return 0;
    }
    for (int i = 0; fields[f].names && fields[f].names[i]; i++)
        if (!strncasecmp(s, fields[f].names[i], 3) && !((s[3] >= 'A' && s[3] <= 'Z') || (s[3] >= 'a' && s[3] <= 'z'))) {
            *p = s + 3;
            *out = fields[f].min + i;
            return 0;
        }
    return -1;
}

/* One field (a NUL-terminated token) into the bit set *bits. */
static int parse_field(int f, const char *tok, uint64_t *bits, int *star, char *err, size_t errlen)
{
    const struct field *fd = &fields[f];
    *bits = 0;
    *star = !strcmp(tok, "*");
    const char *p = tok;
    for (;;) {
        int lo, hi, step = 1;
        if (*p == '*') { lo = fd->min; hi = fd->max; p++; }
        else {
            if (value(f, &p, &lo)) return bad(err, errlen, f, "not a number or name in", tok);
            hi = lo;
            if (*p == '-') {
                p++;
                if (value(f, &p, &hi)) return bad(err, errlen, f, "bad end of range in", tok);
            } else if (*p == '/') {
                hi = fd->max;   /* "10/20": from 10 to the end */
            }
        }
        if (lo < fd->min || hi > fd->max || lo > fd->max || hi < fd->min) {
            char why[64];
            snprintf(why, sizeof why, "value out of range %d-%d in", fd->min, fd->max);
            return bad(err, errlen, f, why, tok);
        }
        if (lo > hi) return bad(err, errlen, f, "range runs backwards in", tok);
        if (*p == '/') {
            p++;
            if (*p < '0' || *p > '9' || value(f, &p, &step) || step < 1 || step > fd->max - fd->min + 1)
                return bad(err, errlen, f, "bad step in", tok);
        }
        for (int v = lo; v <= hi; v += step) *bits |= 1ull << (f == 4 && v == 7 ? 0 : v);
        if (*p == 0) return 0;
        if (*p != ',' || p[1] == 0) return bad(err, errlen, f, "unexpected character in", tok);
        p++;
    }
}

static const struct { const char *name, *expr; } macros[] = {
    {"@hourly", "0 * * * *"}, {"@daily", "0 0 * * *"}, {"@midnight", "0 0 * * *"}, {"@weekly", "0 0 * * 0"},
    {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"},
};

int gw_cron_parse(const char *expr, struct gw_cron *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (!expr) { snprintf(err, errlen, "no cron expression"); return -EINVAL; }
    size_t len = strnlen(expr, GW_CRON_MAX_LEN + 1);
    if (len > GW_CRON_MAX_LEN) { snprintf(err, errlen, "cron expression longer than %u characters", GW_CRON_MAX_LEN); return -EINVAL; }
    if (expr[0] == '@') {
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
            if (!strcmp(expr, macros[i].name)) return gw_cron_parse(macros[i].expr, c, err, errlen);
        snprintf(err, errlen, "unknown cron macro '%.32s' (@hourly @daily @weekly @monthly @yearly)", expr);
        return -EINVAL;
    }
    char buf[GW_CRON_MAX_LEN + 1], *tok[6];
    memcpy(buf, expr, len + 1);
    int n = 0;
    for (char *p = buf; *p;) {
        while (*p == ' ' || *p == '\t') *p++ = 0;
        if (!*p) break;
        if (n == 5) { snprintf(err, errlen, "cron expression has more than 5 fields"); return -EINVAL; }
        tok[n++] = p;
        while (*p && *p != ' ' && *p != '\t') {
            if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) { snprintf(err, errlen, "cron expression holds a control or non-ASCII byte"); return -EINVAL; }
            p++;
        }
    }
    if (n != 5) { snprintf(err, errlen, "cron expression has %d fields, want 5 (minute hour day-of-month month day-of-week)", n); return -EINVAL; }
    uint64_t bits[5];
    int star[5], r;
    for (int f = 0; f < 5; f++)
        if ((r = parse_field(f, tok[f], &bits[f], &star[f], err, errlen))) return r;
    c->minutes = bits[0];
    c->hours = (uint32_t)bits[1];
    c->mdays = (uint32_t)bits[2];
    c->months = (uint16_t)bits[3];
    c->wdays = (uint8_t)bits[4];
    c->mday_star = (uint8_t)star[2];
    c->wday_star = (uint8_t)star[4];
    return 0;
}

static int day_matches(const struct gw_cron *c, int64_t days, int mo, int d)
{
    if (!(c->months >> mo & 1)) return 0;
    int wd = (int)(((days % 7) + 11) % 7);   /* 1970-01-01 was a Thursday */
    int dm = c->mdays >> d & 1, ww = c->wdays >> wd & 1;
    if (c->mday_star && c->wday_star) return 1;
    if (c->mday_star) return ww;
    if (c->wday_star) return dm;
    return dm || ww;   /* both restricted: either (Vixie cron) */
}

/* The instant a DST gap containing local time l ends: the first instant whose local time is
 * at or past l (local time only moves forward around a gap). */
static int64_t gap_end(const struct gw_tz *tz, int64_t l)
{
    int64_t lo = l - 26 * 3600, hi = l + 26 * 3600;   /* offsets lie within -25..+26 h */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (mid + gw_tz_offset(tz, mid) >= l) hi = mid;
        else lo = mid;
    }
    return (hi + 59) / 60 * 60;
}

int gw_cron_next(const struct gw_cron *c, const struct gw_tz *tz, int64_t after, int64_t *next)
{
    struct tm tm;
    gw_tz_local(tz, after, &tm);
    int64_t day0 = gw_days_from_civil(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday) - 1;   /* a day early: offsets */
    for (int64_t days = day0; days < day0 + 146097 + 2; days++) {
        int64_t y;
        int mo, d;
        gw_civil_from_days(days, &y, &mo, &d);
        if (!day_matches(c, days, mo, d)) continue;
        for (int h = 0; h < 24; h++) {
            if (!(c->hours >> h & 1)) continue;
            for (int m = 0; m < 60; m++) {
                if (!(c->minutes >> m & 1)) continue;
                int64_t at[2];
                int n = gw_tz_from_local(tz, (int)y, mo, d, h, m, 0, at);
                int64_t t = n ? at[0] : gap_end(tz, days * 86400 + h * 3600 + m * 60);
                if (t > after) { *next = t; return 0; }
            }
        }
    }
    return -ERANGE;
}

int64_t gw_cron_jitter(int64_t fire, unsigned window_s, const char *key)
{
    if (!window_s) return fire;
    if (window_s > GW_CRON_MAX_JITTER_S) window_s = GW_CRON_MAX_JITTER_S;
    uint64_t h = XXH64(key ? key : "", key ? strlen(key) : 0, (uint64_t)fire);
    return fire + (int64_t)(h % window_s);
}

int gw_cron_missed(const struct gw_cron *c, const struct gw_tz *tz, int64_t last_run, int64_t now, int64_t *missed)
{
    if (now <= last_run) return -ENOENT;
    /* The latest fire in (last_run, now] without walking every fire in between (a minutely
     * schedule idle for a year has half a million, and each step is a gw_cron_next). First a
     * window just before now that holds a fire, widened fourfold from an hour; then a binary
     * search in it for the largest x whose next fire is still at or before now: that fire is
     * the latest (next is non-decreasing in x), found in ~log2(window) calls. */
    const int64_t far = (int64_t)1 << 40;   /* 35,000 years: an older last_run reads as that old */
    if (last_run < now - far) last_run = now - far;
    int64_t span = now - last_run, w = 3600, lo;
    for (;; w *= 4) {
        lo = w >= span ? last_run : now - w;
        int64_t t;
        if (gw_cron_next(c, tz, lo, &t) == 0 && t <= now) break;
        if (w >= span) return -ENOENT;
    }
    int64_t hi = now;   /* next(now) > now */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2, t;
        if (gw_cron_next(c, tz, mid, &t) == 0 && t <= now) lo = mid;
        else hi = mid;
    }
    return gw_cron_next(c, tz, lo, missed) ? -ENOENT : 0;
}
