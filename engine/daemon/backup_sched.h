/* Backup policies and their scheduler in godwitd (docs/backups.md "Schedules").
 *
 * A policy (BackupPolicy in backup_api.proto) belongs to one VM: a cron expression in a time
 * zone, a start window, a target of the daemon's config, keep-rules. Policies live in the
 * daemon's database (db.h), so they survive restarts; backup_policy.c checks and serves them,
 * backup_sched.c runs them.
 *
 * The scheduler thread wakes every GW_SCHED_TICK_MS: a policy whose VM runs here and whose next
 * start (the first fire after its last run, plus its jitter) has come starts one backup through
 * the API's own path (gw_bkjob_backup), recording as its last run the latest fire time up to
 * now: runs missed while the daemon was down (or the VM was away) run once, never pile up. It
 * holds a host slot and a cluster slot of the target's store (backup/slots.h: max_backups,
 * cluster_max_backups) for the backup's length; when none is free the policy waits for the next
 * tick. After a backup succeeds it prunes the VM's backups in the target by the keep-rules. */
#ifndef GW_DAEMON_BACKUP_SCHED_H
#define GW_DAEMON_BACKUP_SCHED_H

#include <stdint.h>

#include "backup/cron.h"
#include "backup/retention.h"
#include "backup/tz.h"
#include "engine/common/limits.h"
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/config.h"
#include "godwit/v1/backup_api.pb-c.h"

struct gw_daemon;

#define GW_SCHED_TICK_MS 250u
#define GW_POLICY_MAX 1024u        /* policies one daemon keeps */
#define GW_POLICY_ROWS_MAX (4 * GW_POLICY_MAX)   /* and with label policies' run records */
#define GW_POLICY_KEY_MAX (64 + GW_LIMIT_LABEL_KEY_MAX + GW_LIMIT_LABEL_VALUE_MAX + 3)

/* A policy as the daemon keeps it (checked: every string fits and is well-formed). Three kinds
 * share the table (keyed by gw_policy_key): a VM's own policy (vm set, label ""), a label
 * policy (vm "", label "KEY=VALUE") and the run history of a label policy for one VM
 * (run_record: vm and label set, only created and the last_* fields meaningful). */
struct gw_policy {
    char vm[64];
    char label[GW_LIMIT_LABEL_KEY_MAX + GW_LIMIT_LABEL_VALUE_MAX + 2];
    struct gw_bk_throttle thr;     /* its backups' own throttle (adaptive -1: the daemon's) */
    bool run_record;
    char schedule[GW_CRON_MAX_LEN + 1];
    char tz[GW_TZ_NAME_MAX + 1];
    uint32_t jitter_s;
    char target[GW_CFG_TARGET_NAME_MAX + 1];
    char method[16];
    struct gw_keep keep;
    int64_t created, last_fire;
    char last_job[40];
    char last_error[256];
    bool invalid;                  /* stored, but no longer valid here (e.g. its target left the
                                    * config): shown with the reason in last_error, never run */
};

/* ---- backup_policy.c ---- */
/* Checks p (from the API) into out. 0, or -EINVAL with "field: why" in err. */
int gw_policy_from_pb(const struct gw_daemon *d, const Godwit__V1__BackupPolicy *p, struct gw_policy *out, char *err,
                      size_t errlen);
/* out's strings point into p. */
void gw_policy_to_pb(const struct gw_policy *p, Godwit__V1__BackupPolicy *out);
/* Its database key: "VM", "@KEY=VALUE" (a label policy) or "VM@KEY=VALUE" (a run record);
 * '@' occurs in neither a VM name nor a label. */
void gw_policy_key(const struct gw_policy *p, char *out, size_t cap);
/* The stored rows, run records included (malloc'd array, *n of them; free it). 0 or -errno. */
int gw_policy_load_all(struct gw_daemon *d, struct gw_policy **out, unsigned *n);
/* After a run of vm's backup by its own policy (label "") or by the label policy label: sets
 * the last_fire, last_job and last_error of vm's policy or of its run record for that label
 * policy, when that policy still exists with the same creation time (a policy set anew
 * meanwhile is left alone). */
void gw_policy_record_run(struct gw_daemon *d, const char *vm, const char *label, int64_t created, int64_t fire,
                          const char *job, const char *error);
int gw_service_register_policy(struct gw_daemon *d);
/* Migration: the source sends vm's policy (gw_policy_get: 0 or -ENOENT) in PrepareIncoming;
 * the destination stores it once it accepted the VM (gw_policy_adopt, checked like the API's,
 * its run history kept); the source drops its copy when the VM has moved (gw_policy_forget). */
int gw_policy_get(struct gw_daemon *d, const char *vm, struct gw_policy *out);
void gw_policy_adopt(struct gw_daemon *d, const char *vm, const Godwit__V1__BackupPolicy *p);
void gw_policy_forget(struct gw_daemon *d, const char *vm);
/* Drops vm's run records of label policies (its own policy stays): the VM is gone from here,
 * and its records would pile up past what the loader reads back. */
void gw_policy_forget_runs(struct gw_daemon *d, const char *vm);

/* ---- backup_sched.c ---- */
/* The scheduler's now (Unix seconds): the real clock, or in GODWIT_TEST_HOOKS builds with
 * test_clock_file set, the number in that file. */
int64_t gw_sched_now(const struct gw_daemon *d);
/* When p starts next (jitter included) into *start; 0 or -errno with why in err. */
int gw_sched_next(const struct gw_policy *p, int64_t *start, char *err, size_t errlen);
int gw_sched_start(struct gw_daemon *d);
void gw_sched_stop(struct gw_daemon *d);

#endif
