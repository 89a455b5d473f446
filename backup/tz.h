/* Time zones for schedules and retention, without touching the process-wide TZ: a zone is
 * read once from the system tz database (a TZif file, RFC 8536) into a value that any thread
 * may query. Setting TZ and calling localtime_r would change every thread's idea of local time
 * (the daemon logs from several), so we read the file ourselves.
 *
 * What is used: the version 2+ (64-bit) transition table and, for instants after its last
 * transition, the POSIX TZ string in the file's footer ("CET-1CEST,M3.5.0,M10.5.0/3"), so dates
 * far ahead (slim tzdata files stop at the current rules) still get their DST changes.
 *
 * Bounds: the file is at most GW_TZ_MAX_FILE bytes; every count in its header is checked
 * against the file's length and the limits below before a byte is read; an index into the
 * type table is checked against the table; a footer that does not parse fails the load. */
#ifndef GW_BACKUP_TZ_H
#define GW_BACKUP_TZ_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define GW_TZ_MAX_FILE (256u << 10)
#define GW_TZ_MAX_TRANSITIONS 8192u
#define GW_TZ_MAX_TYPES 256u
#define GW_TZ_NAME_MAX 64u
#define GW_TZ_DIR "/usr/share/zoneinfo"

struct gw_tz_rule {             /* one end of DST in a POSIX TZ string */
    char kind;                  /* 'M' (month.week.day), 'J' (1..365, no Feb 29), 'n' (0..365) */
    int month, week, wday, day;
    int32_t secs;               /* local time of day of the change (may be < 0 or > 24 h) */
};

struct gw_tz {
    char name[GW_TZ_NAME_MAX + 1];
    int64_t *trans;             /* transition instants (UTC), ascending */
    uint8_t *idx;               /* type after each transition */
    int32_t *type_off;          /* UTC offset of each type, seconds east */
    size_t ntrans, ntypes;
    /* Footer rule for instants after the last transition. */
    int has_rule, rule_dst;
    int32_t std_off, dst_off;   /* seconds east of UTC */
    struct gw_tz_rule start, end;
};

/* Loads a zone by IANA name ("Europe/Berlin"; "UTC" needs no file). name: [A-Za-z0-9_+-] parts
 * separated by '/', at most GW_TZ_NAME_MAX characters, no "." or ".." parts. Returns 0 or
 * -errno (-EINVAL bad name, -ENOENT unknown zone, -EBADMSG bad file) with a reason in err.
 * Free with gw_tz_free. */
int gw_tz_load(const char *name, struct gw_tz **out, char *err, size_t errlen);
/* The same from a TZif image in memory (tests, fuzzing). */
int gw_tz_parse(const char *name, const uint8_t *buf, size_t len, struct gw_tz **out, char *err, size_t errlen);
void gw_tz_free(struct gw_tz *tz);

/* Seconds east of UTC at instant t (tz NULL: UTC). */
int32_t gw_tz_offset(const struct gw_tz *tz, int64_t t);
/* Broken-down local time of t (tm_isdst is not set). */
void gw_tz_local(const struct gw_tz *tz, int64_t t, struct tm *out);
/* The instants at which the local clock reads y-mo-d h:mi:s (mo 1..12). Returns how many (0 in
 * a DST gap, 2 in an overlap, else 1), earliest first in out[0..1]. */
int gw_tz_from_local(const struct gw_tz *tz, int y, int mo, int d, int h, int mi, int s, int64_t out[2]);

/* Days since 1970-01-01 of a proleptic Gregorian date (mo 1..12), and its inverse. */
int64_t gw_days_from_civil(int64_t y, int mo, int d);
void gw_civil_from_days(int64_t days, int64_t *y, int *mo, int *d);

#endif
