/* The runner's side of backups: a control request becomes one backup of this VM into the
 * named store (backup/backup.h). It runs to its end before the reply, so the control socket
 * is busy meanwhile; the guest keeps running throughout, also when the backup fails. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backup/backup.h"
#include "backup/instant_restore.h"
#include "engine/common/log.h"
#include "engine/runner/runner.h"

int gw_runner_backup(struct gw_runner *r, const Godwit__V1__RunnerBackupRequest *req, struct gw_backup_result *res,
                     char *err, size_t errlen)
{
    /* The run state (run_state.c) already refused a backup while a migration or a save owns
     * the VM, or after it left. */
    char why[256];
    if (gw_vm_fatal(r->vm, why, sizeof why)) { snprintf(err, errlen, "the VM has failed: %s", why); return -ESRCH; }
    if (r->instant && !gw_instant_restore_finished(r->instant)) {
        snprintf(err, errlen, "the VM's memory is still being restored from its backup");
        return -EBUSY;
    }
    if (!req->store) { snprintf(err, errlen, "backup needs a store"); return -EINVAL; }
    enum gw_backup_method method = GW_BACKUP_WP;
    if (req->method && *req->method) {
        if (!strcmp(req->method, "pause")) method = GW_BACKUP_PAUSE;
        else if (!strcmp(req->method, "dirty-log")) method = GW_BACKUP_DIRTY_LOG;
        else if (strcmp(req->method, "wp")) { snprintf(err, errlen, "backup method is wp, dirty-log or pause"); return -EINVAL; }
    }
    struct gw_backup_target t;
    int rc = gw_backup_target_open(req->store, &t, err, errlen);
    if (rc) return rc;
    struct gw_backup_params p = {.parent = req->parent, .method = method};
    rc = gw_backup_create(r->vm, &t, &p, res, err, errlen);
    gw_backup_target_close(&t);
    return rc;
}
