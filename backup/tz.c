/* Time zones from the system tz database (see tz.h). */
#include "backup/tz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/util.h"

int64_t gw_days_from_civil(int64_t y, int mo, int d)
{
    /* Howard Hinnant's algorithm: eras of 400 years, March-based years. */
    y -= mo <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void gw_civil_from_days(int64_t z, int64_t *y, int *mo, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *mo = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*mo <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int fail(char *err, size_t errlen, int rc, const char *name, const char *why)
{
    snprintf(err, errlen, "time zone %s: %s", name, why);
    return rc;
}

/* ---- POSIX TZ strings (the TZif footer) ---- */

static const char *p_name(const char *p)
{
    if (*p == '<') {
        const char *e = strchr(p, '>');
        return e && e - p >= 4 ? e + 1 : NULL;
    }
    const char *s = p;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) p++;
    return p - s >= 3 ? p : NULL;
}

static const char *p_num(const char *p, int min, int max, int *out)
{
    if (*p < '0' || *p > '9') return NULL;
    int v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        if (v > max) return NULL;
    }
    if (v < min) return NULL;
    *out = v;
    return p;
}

/* [+-]hh[:mm[:ss]], hours up to max_h; seconds into *out. */
static const char *p_time(const char *p, int max_h, int32_t *out)
{
    int sign = 1, h = 0, m = 0, s = 0;
    if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
    if (!(p = p_num(p, 0, max_h, &h))) return NULL;
    if (*p == ':' && !(p = p_num(p + 1, 0, 59, &m))) return NULL;
    if (*p == ':' && !(p = p_num(p + 1, 0, 59, &s))) return NULL;
    *out = sign * (h * 3600 + m * 60 + s);
    return p;
}

static const char *p_rule(const char *p, struct gw_tz_rule *r)
{
    memset(r, 0, sizeof *r);
    r->secs = 2 * 3600;
    if (*p == 'M') {
        r->kind = 'M';
        if (!(p = p_num(p + 1, 1, 12, &r->month)) || *p != '.') return NULL;
        if (!(p = p_num(p + 1, 1, 5, &r->week)) || *p != '.') return NULL;
        if (!(p = p_num(p + 1, 0, 6, &r->wday))) return NULL;
    } else if (*p == 'J') {
        r->kind = 'J';
        if (!(p = p_num(p + 1, 1, 365, &r->day))) return NULL;
    } else {
        r->kind = 'n';
        if (!(p = p_num(p, 0, 365, &r->day))) return NULL;
    }
    if (*p == '/' && !(p = p_time(p + 1, 167, &r->secs))) return NULL;
    return p;
}

static int parse_posix(struct gw_tz *tz, const char *p)
{
    int32_t off;
    if (!(p = p_name(p)) || !(p = p_time(p, 24, &off))) return -1;
    tz->std_off = -off;
    tz->has_rule = 1;
    if (!*p) return 0;
    if (!(p = p_name(p))) return -1;
    tz->rule_dst = 1;
    tz->dst_off = tz->std_off + 3600;
    if (*p && *p != ',') {
        if (!(p = p_time(p, 24, &off))) return -1;
        tz->dst_off = -off;
    }
    if (*p != ',' || !(p = p_rule(p + 1, &tz->start))) return -1;
    if (*p != ',' || !(p = p_rule(p + 1, &tz->end))) return -1;
    return *p ? -1 : 0;
}

/* Local midnight (as if UTC) of the rule's day in year y, plus its time of day. */
static int64_t rule_local(const struct gw_tz_rule *r, int64_t y)
{
    int64_t days;
    if (r->kind == 'J') days = gw_days_from_civil(y, 1, 1) + r->day - 1 + (is_leap(y) && r->day >= 60);
    else if (r->kind == 'n') days = gw_days_from_civil(y, 1, 1) + r->day;
    else {
        int64_t first = gw_days_from_civil(y, r->month, 1);
        int wd1 = (int)(((first % 7) + 11) % 7);  /* 1970-01-01 was a Thursday (4) */
        int64_t d = first + ((r->wday - wd1 + 7) % 7) + 7 * (r->week - 1);
        static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int len = mdays[r->month - 1] + (r->month == 2 && is_leap(y));
        while (d >= first + len) d -= 7;  /* week 5 = the last such weekday */
        days = d;
    }
    return days * 86400 + r->secs;
}

static int32_t rule_offset(const struct gw_tz *tz, int64_t t)
{
    if (!tz->rule_dst) return tz->std_off;
    int64_t y;
    int mo, d;
    gw_civil_from_days((t + tz->std_off) / 86400 - ((t + tz->std_off) % 86400 < 0), &y, &mo, &d);
    int64_t start = rule_local(&tz->start, y) - tz->std_off;   /* the change happens in std time */
    int64_t end = rule_local(&tz->end, y) - tz->dst_off;       /* and back in dst time */
    int dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
    return dst ? tz->dst_off : tz->std_off;
}

/* ---- TZif ---- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
static int64_t be64(const uint8_t *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

int gw_tz_parse(const char *name, const uint8_t *buf, size_t len, struct gw_tz **out, char *err, size_t errlen)
{
    *out = NULL;
    if (len < 44 || memcmp(buf, "TZif", 4)) return fail(err, errlen, -EBADMSG, name, "not a TZif file");
    if (buf[4] < '2') return fail(err, errlen, -EBADMSG, name, "TZif version 1 (no 64-bit data) is not supported");
    /* Skip the version 1 block: its counts are checked like the second's. */
    size_t off = 0;
    uint32_t c[6];
    for (int pass = 0; pass < 2; pass++) {
        if (len - off < 44 || memcmp(buf + off, "TZif", 4)) return fail(err, errlen, -EBADMSG, name, "truncated header");
        for (int i = 0; i < 6; i++) c[i] = be32(buf + off + 20 + 4 * i);
        uint32_t isut = c[0], isstd = c[1], leap = c[2], timecnt = c[3], typecnt = c[4], charcnt = c[5];
        if (timecnt > GW_TZ_MAX_TRANSITIONS || typecnt == 0 || typecnt > GW_TZ_MAX_TYPES || charcnt > 1024 ||
            leap > 1024 || (isut && isut != typecnt) || (isstd && isstd != typecnt))
            return fail(err, errlen, -EBADMSG, name, "counts out of range");
        size_t tsz = pass ? 8 : 4;
        size_t body = timecnt * tsz + timecnt + typecnt * 6 + charcnt + leap * (tsz + 4) + isstd + isut;
        if (len - off - 44 < body) return fail(err, errlen, -EBADMSG, name, "truncated data");
        if (pass == 0) { off += 44 + body; continue; }
        const uint8_t *p = buf + off + 44;
        struct gw_tz *tz = calloc(1, sizeof *tz);
        if (!tz) return -ENOMEM;
        snprintf(tz->name, sizeof tz->name, "%s", name);
        tz->ntrans = timecnt;
        tz->ntypes = typecnt;
        tz->trans = malloc((timecnt ? timecnt : 1) * sizeof *tz->trans);
        tz->idx = malloc(timecnt ? timecnt : 1);
        tz->type_off = malloc(typecnt * sizeof *tz->type_off);
        if (!tz->trans || !tz->idx || !tz->type_off) { gw_tz_free(tz); return -ENOMEM; }
        for (uint32_t i = 0; i < timecnt; i++) {
            tz->trans[i] = be64(p + 8 * i);
            if (i && tz->trans[i] <= tz->trans[i - 1]) { gw_tz_free(tz); return fail(err, errlen, -EBADMSG, name, "transitions out of order"); }
        }
        p += 8 * timecnt;
        for (uint32_t i = 0; i < timecnt; i++) {
            if (p[i] >= typecnt) { gw_tz_free(tz); return fail(err, errlen, -EBADMSG, name, "transition names a missing type"); }
            tz->idx[i] = p[i];
        }
        p += timecnt;
        for (uint32_t i = 0; i < typecnt; i++) {
            int32_t o = (int32_t)be32(p + 6 * i);
            if (o < -25 * 3600 || o > 26 * 3600) { gw_tz_free(tz); return fail(err, errlen, -EBADMSG, name, "UTC offset out of range"); }
            tz->type_off[i] = o;
        }
        off += 44 + body;
        /* Footer: "\n<POSIX TZ>\n"; empty means "no rule". */
        if (off < len && buf[off] == '\n') {
            const uint8_t *nl = memchr(buf + off + 1, '\n', len - off - 1);
            size_t flen = nl ? (size_t)(nl - buf - off - 1) : 0;
            if (!nl || flen > 128) { gw_tz_free(tz); return fail(err, errlen, -EBADMSG, name, "bad footer"); }
            char foot[130];
            memcpy(foot, buf + off + 1, flen);
            foot[flen] = 0;
            if (flen && parse_posix(tz, foot)) { gw_tz_free(tz); return fail(err, errlen, -EBADMSG, name, "footer rule does not parse"); }
        }
        *out = tz;
        return 0;
    }
    return -EBADMSG;
}

static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > GW_TZ_NAME_MAX || name[0] == '/' || name[n - 1] == '/') return 0;
    for (const char *p = name; *p; p++) {
        char ch = *p;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == '+' || ch == '-' || ch == '/'))
            return 0;
        if (ch == '/' && p[1] == '/') return 0;
    }
    return 1;   /* no '.' at all, so no "." or ".." parts */
}

int gw_tz_load(const char *name, struct gw_tz **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!name || !strcmp(name, "UTC") || !strcmp(name, "Etc/UTC")) {
        struct gw_tz *tz = calloc(1, sizeof *tz);
        if (!tz) return -ENOMEM;
        snprintf(tz->name, sizeof tz->name, "UTC");
        tz->has_rule = 1;
        *out = tz;
        return 0;
    }
    if (!name_ok(name)) return fail(err, errlen, -EINVAL, "", "want an IANA name such as Europe/Berlin");
    char path[256];
    snprintf(path, sizeof path, "%s/%s", GW_TZ_DIR, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ELOOP) fd = open(path, O_RDONLY | O_CLOEXEC);  /* links within the tz database */
    if (fd < 0) return fail(err, errlen, errno == ENOENT ? -ENOENT : -errno, name, errno == ENOENT ? "unknown zone" : strerror(errno));
    struct stat sb;
    int r = fstat(fd, &sb) < 0 ? -errno : 0;
    if (!r && (!S_ISREG(sb.st_mode) || sb.st_size > GW_TZ_MAX_FILE)) r = -EBADMSG;
    uint8_t *buf = r ? NULL : malloc(sb.st_size ? (size_t)sb.st_size : 1);
    if (!r && !buf) r = -ENOMEM;
    if (!r) r = gw_read_full(fd, buf, (size_t)sb.st_size);
    close(fd);
    if (r) { free(buf); return fail(err, errlen, r, name, r == -EBADMSG ? "not a regular file of a sane size" : strerror(-r)); }
    r = gw_tz_parse(name, buf, (size_t)sb.st_size, out, err, errlen);
    free(buf);
    return r;
}

void gw_tz_free(struct gw_tz *tz)
{
    if (!tz) return;
    free(tz->trans);
    free(tz->idx);
    free(tz->type_off);
    free(tz);
}

int32_t gw_tz_offset(const struct gw_tz *tz, int64_t t)
{
    if (!tz) return 0;
    if (tz->ntrans == 0) return tz->has_rule ? rule_offset(tz, t) : tz->type_off ? tz->type_off[0] : 0;
    if (t < tz->trans[0]) return tz->type_off[0];
    if (t >= tz->trans[tz->ntrans - 1] && tz->has_rule) return rule_offset(tz, t);
    size_t lo = 0, hi = tz->ntrans;   /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t) lo = mid;
        else hi = mid;
    }
    return tz->type_off[tz->idx[lo]];
}

void gw_tz_local(const struct gw_tz *tz, int64_t t, struct tm *out)
{
    int64_t l = t + gw_tz_offset(tz, t);
    int64_t days = l / 86400 - (l % 86400 < 0), secs = l - days * 86400, y;
    int mo, d;
    gw_civil_from_days(days, &y, &mo, &d);
    memset(out, 0, sizeof *out);
    out->tm_year = (int)(y - 1900);
    out->tm_mon = mo - 1;
    out->tm_mday = d;
    out->tm_hour = (int)(secs / 3600);
    out->tm_min = (int)(secs / 60 % 60);
    out->tm_sec = (int)(secs % 60);
    out->tm_wday = (int)(((days % 7) + 11) % 7);
    out->tm_yday = (int)(days - gw_days_from_civil(y, 1, 1));
}

int gw_tz_from_local(const struct gw_tz *tz, int y, int mo, int d, int h, int mi, int s, int64_t out[2])
{
    int64_t l = gw_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
    /* Offsets change rarely (months apart): the offsets a day either side are the only ones
     * that can apply to this local time. */
    int32_t cand[3] = {gw_tz_offset(tz, l - 86400), gw_tz_offset(tz, l), gw_tz_offset(tz, l + 86400)};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        int64_t u = l - cand[i];
        if (gw_tz_offset(tz, u) != cand[i]) continue;
        bool dup = false;
        for (int j = 0; j < n; j++) dup |= out[j] == u;
        if (!dup && n < 2) out[n++] = u;
    }
    if (n == 2 && out[1] < out[0]) { int64_t x = out[0]; out[0] = out[1]; out[1] = x; }
    return n;
}
