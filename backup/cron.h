/* Backup schedules: 5-field cron expressions in a time zone (tz.h), the next time one fires, and
 * a start window (jitter) that spreads many VMs' backups over a window instead of one instant.
 *
 *   minute hour day-of-month month day-of-week      e.g. "0 2 * * *", "*\/15 9-17 * * MON-FRI"
 *
 * Each field: '*', N, N-M, a list of those separated by ',', each with an optional "/STEP"
 * ("*\/15", "5-50/5", "10/20" = from 10 to the end by 20). Months take JAN..DEC, days of the
 * week SUN..SAT (0 or 7 = Sunday). When both day fields are restricted a day matches if either
 * does (as in Vixie cron). Macros: @hourly @daily @midnight @weekly @monthly @yearly @annually.
 * Parsing is bounded: at most GW_CRON_MAX_LEN characters, every number range-checked (no
 * overflow), errors name the field and the problem.
 *
 * Daylight saving time, in local time of the zone:
 *   - a local time that happens twice (the clocks go back) fires once, at its first occurrence;
 *   - a local time that does not exist (the clocks go forward) fires at the moment the gap ends,
 *     once, however many of its minutes the expression names.
 * So a daily backup at 02:30 runs every day exactly once, in Europe/Berlin as in UTC. */
#ifndef GW_BACKUP_CRON_H
#define GW_BACKUP_CRON_H

#include <stddef.h>
#include <stdint.h>

struct gw_tz;

#define GW_CRON_MAX_LEN 256u
#define GW_CRON_MAX_JITTER_S (24u * 3600u)

struct gw_cron {
    uint64_t minutes;        /* bit m: minute m (0..59) */
    uint32_t hours;          /* bit h (0..23) */
    uint32_t mdays;          /* bit d (1..31) */
    uint16_t months;         /* bit m (1..12) */
    uint8_t wdays;           /* bit w (0..6, Sunday = 0) */
    uint8_t mday_star, wday_star;
};

/* Parses expr into c. 0, or -EINVAL with the reason in err. */
int gw_cron_parse(const char *expr, struct gw_cron *c, char *err, size_t errlen);

/* The first time after `after` (Unix seconds) at which c fires in tz (NULL = UTC), into *next
 * (a whole minute). -ERANGE when it never fires within 400 years (e.g. "0 0 30 2 *"). */
int gw_cron_next(const struct gw_cron *c, const struct gw_tz *tz, int64_t after, int64_t *next);

/* A start inside [fire, fire + window_s), the same for the same key and fire time (a restart
 * computes the same instant), spread uniformly across keys. window_s 0: fire itself. */
int64_t gw_cron_jitter(int64_t fire, unsigned window_s, const char *key);

/* Catch-up after downtime: the latest fire time in (last_run, now], into *missed; 0 if there is
 * one (the caller runs the job once, not once per missed time), -ENOENT if none. Costs about
 * log2(now - last_run) gw_cron_next calls however many fires were missed. */
int gw_cron_missed(const struct gw_cron *c, const struct gw_tz *tz, int64_t last_run, int64_t now, int64_t *missed);

#endif
