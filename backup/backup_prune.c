/* Pruning a VM's backups by retention rules (retention.h): list, decide, delete what no rule
 * keeps. Deleting removes the index entry and the manifest; the chunks go at the next garbage
 * collection (storage/gc.h), which is what makes deleting safe while other backups run. */
#include "backup/prune.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/tz.h"
#include "storage/manifest.h"
#include "storage/store.h"

/* Backup ids start with their creation time in UTC: "YYYYMMDD-HHMMSS-uuuuuu". */
int gw_backup_id_time(const char *id, int64_t *t)
{
    int v[6];
    const int at[6] = {0, 4, 6, 9, 11, 13}, len[6] = {4, 2, 2, 2, 2, 2};
    if (strlen(id) < 15 || id[8] != '-') return -EINVAL;
    for (int f = 0; f < 6; f++) {
        v[f] = 0;
        for (int i = 0; i < len[f]; i++) {
            char c = id[at[f] + i];
            if (c < '0' || c > '9') return -EINVAL;
            v[f] = v[f] * 10 + (c - '0');
        }
    }
    if (v[0] < 1970 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60) return -EINVAL;
    *t = gw_days_from_civil(v[0], v[1], v[2]) * 86400 + v[3] * 3600 + v[4] * 60 + v[5];
    return 0;
}

/* When an id does not carry its time, the manifest's own timestamp is used. */
static int backup_time(struct gw_backup_target *t, const char *vm, const char *id, int64_t *when)
{
    if (!gw_backup_id_time(id, when)) return 0;
    Godwit__V1__BackupManifest *m = NULL;
    char err[256];
    int r = gw_manifest_load(t->store, &t->keys, vm, id, &m, err, sizeof err);
    if (r) return r;
    *when = (int64_t)(m->created_unix_ns / 1000000000ull);
    godwit__v1__backup_manifest__free_unpacked(m, NULL);
    return 0;
}

int gw_backup_prune(struct gw_backup_target *t, const char *vm, const struct gw_keep *keep, const struct gw_tz *tz,
                    bool dry_run, gw_prune_report_fn report, void *ctx, struct gw_prune_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    int r = gw_keep_check(keep, err, errlen);
    if (r) return r;
    char (*ids)[GW_BACKUP_ID_BUF] = NULL;
    size_t n = 0;
    if ((r = gw_backup_list(t, vm, &ids, &n))) { snprintf(err, errlen, "%s", gw_store_error(t->store)); return r; }
    int64_t *times = calloc(n ? n : 1, sizeof *times);
    enum gw_keep_reason *mark = calloc(n ? n : 1, sizeof *mark);
    uint8_t *unreadable = calloc(n ? n : 1, 1);
    if (!times || !mark || !unreadable) { r = -ENOMEM; snprintf(err, errlen, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++)
        if (backup_time(t, vm, ids[i], &times[i])) unreadable[i] = 1;
    if ((r = gw_retention_apply(keep, tz, times, n, mark, err, errlen))) goto out;
    for (size_t i = 0; i < n; i++) {
        st->backups++;
        /* A backup whose time we cannot tell is never removed: the rules cannot judge it. */
        if (unreadable[i]) { st->kept++; if (report) report(ctx, ids[i], 0, "keep: time unknown (unreadable manifest)", 0); continue; }
        if (mark[i] != GW_KEEP_NONE) { st->kept++; if (report) report(ctx, ids[i], times[i], gw_keep_reason_name(mark[i]), 0); continue; }
        int dr = 0;
        char why[512] = "";
        if (!dry_run) dr = gw_backup_delete(t, vm, ids[i], why, sizeof why);
        if (dr && dr != -ENOENT) {
            st->failed++;
            if (report) report(ctx, ids[i], times[i], why, dr);
            if (!r) { r = dr; snprintf(err, errlen, "removing backup %s of VM %s: %s", ids[i], vm, why); }
            continue;
        }
        st->removed++;
        if (report) report(ctx, ids[i], times[i], "remove", 0);
    }
out:
    free(ids);
    free(times);
    free(mark);
    free(unreadable);
    return r;
}
