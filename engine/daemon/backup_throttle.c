/* What godwitd tells a backup's runner about throttling (docs/backups.md "Throttling").
 *
 * The host budget (config.h: backup_host_rate, backup_host_ops) is one token bucket that
 * every backup runner of this host maps from the same file in the daemon's state directory
 * and takes from under flock (storage/throttle.h). The daemon thus only names the file and the
 * budget: it does not divide the budget among running backups and re-divide it when one starts
 * or ends. A division would idle a share while its backup reads, hashes or finds its chunks
 * already stored, would need a control-socket round to every runner at each start and end
 * (and a runner that misses one keeps a stale share), whereas the shared bucket is
 * work-conserving, is right the moment a backup starts or ends, and a runner that dies holds
 * no share. One backup alone gets the whole budget; n of them split it by what they write. */
#include <stdio.h>

#include "engine/daemon/backup_jobs.h"

void gw_bkjob_throttle(const struct gw_daemon_config *cfg, const struct gw_bkjob *b,
                       Godwit__V1__RunnerBackupRequest *br, char *path, size_t cap)
{
    bool adaptive = b->thr.adaptive < 0 ? cfg->backup_adaptive != 0 : b->thr.adaptive != 0;
    br->rate = b->thr.rate;
    br->ops = b->thr.ops;
    /* Not adaptive: the backup's own limits as given ("fixed"), or none ("off"); the host
     * budget holds either way. */
    br->throttle = adaptive ? "adaptive" : b->thr.rate || b->thr.ops ? "fixed" : "off";
    if (!cfg->backup_host_rate && !cfg->backup_host_ops) return;
    if (snprintf(path, cap, "%s/backup-host.bucket", cfg->state_dir) >= (int)cap) return;
    br->host_throttle_path = path;
    br->host_rate = cfg->backup_host_rate;
    br->host_ops = cfg->backup_host_ops;
}
