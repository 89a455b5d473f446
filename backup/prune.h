/* Pruning a VM's backups in a store by retention rules (retention.h). */
#ifndef GW_BACKUP_PRUNE_H
#define GW_BACKUP_PRUNE_H

#include <stdbool.h>
#include <stdint.h>

#include "backup/backup.h"
#include "backup/retention.h"

struct gw_tz;

/* The creation time (Unix seconds, UTC) an id "YYYYMMDD-HHMMSS-..." carries; -EINVAL if none. */
int gw_backup_id_time(const char *id, int64_t *t);

struct gw_prune_stats {
    uint64_t backups, kept, removed, failed;
};
/* Called once per backup, oldest first: what = the rule that keeps it ("keep-daily", ...),
 * "remove", or the reason a removal failed (rc < 0). */
typedef void (*gw_prune_report_fn)(void *ctx, const char *id, int64_t when, const char *what, int rc);

/* Applies keep to vm's backups (periods in tz; NULL = UTC) and, unless dry_run, deletes the
 * backups no rule keeps (index entry, then manifest; chunks stay for gc). A backup whose time
 * cannot be read is kept. Returns 0, or the first failure (-errno, reason in err); it goes on
 * past a failed removal so one bad backup does not stop the rest. */
int gw_backup_prune(struct gw_backup_target *t, const char *vm, const struct gw_keep *keep, const struct gw_tz *tz,
                    bool dry_run, gw_prune_report_fn report, void *ctx, struct gw_prune_stats *st, char *err,
                    size_t errlen);

#endif
