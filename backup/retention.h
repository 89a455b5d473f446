/* Retention: which backups a set of keep-rules keeps (Proxmox's semantics, our code).
 *
 * Backups are taken newest first. keep-last N keeps the N newest. Then each period rule in turn
 * (hourly, daily, weekly, monthly, yearly) walks the backups not yet decided, newest first, and
 * keeps the newest backup of each period until it has kept N periods; a later backup of a period
 * already kept is marked for removal by that rule, and a period that holds a backup some earlier
 * rule kept counts as covered (not kept again, not counted). A backup kept by any rule stays;
 * whatever no rule kept is removed. Periods are read in the given time zone from each backup's
 * own timestamp: a backup at 00:30 local time belongs to that local day whatever UTC says, and
 * weeks are ISO weeks (Monday first; the week-year at the turn of a year).
 *
 * The function is pure: timestamps in, a mark per backup out; no clock, no store. */
#ifndef GW_BACKUP_RETENTION_H
#define GW_BACKUP_RETENTION_H

#include <stddef.h>
#include <stdint.h>

struct gw_tz;

#define GW_KEEP_MAX 1000000u   /* largest count a rule accepts */

struct gw_keep {
    unsigned last, hourly, daily, weekly, monthly, yearly;
};

/* Why a backup is kept (a mark of 0 means: remove). */
enum gw_keep_reason {
    GW_KEEP_NONE = 0,
    GW_KEEP_LAST,
    GW_KEEP_HOURLY,
    GW_KEEP_DAILY,
    GW_KEEP_WEEKLY,
    GW_KEEP_MONTHLY,
    GW_KEEP_YEARLY,
};
const char *gw_keep_reason_name(enum gw_keep_reason r);   /* "keep-last", ..., "remove" */

/* -EINVAL with a reason when no rule is set (keeping nothing is never meant) or a count is over
 * GW_KEEP_MAX; else 0. */
int gw_keep_check(const struct gw_keep *k, char *err, size_t errlen);

/* Marks n backups taken at times[i] (Unix seconds, any order; equal times are ordered by index,
 * the later index counting as newer) into mark[i]. tz NULL = UTC. Returns 0, -EINVAL (see
 * gw_keep_check) or -ENOMEM. */
int gw_retention_apply(const struct gw_keep *k, const struct gw_tz *tz, const int64_t *times, size_t n,
                       enum gw_keep_reason *mark, char *err, size_t errlen);

#endif
