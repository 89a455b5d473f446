/* godwitd's backup jobs (backup_jobs.c) and the backup API (service_backup.c).
 *
 * BACKUP: the VM's runner makes the backup (RunnerBackupRequest with progress_ms) and streams
 *   progress frames on the request's connection; the job turns them into JobProgress events.
 *   CancelJob hangs up, which stops the runner's backup (nothing is listed, the guest runs).
 *   The VM is marked busy meanwhile: no migration, stop or delete overlaps a backup.
 * VERIFY: the daemon reads the target itself (backup/backup.h: gw_backup_verify).
 * RESTORE (restore_job.c): a new VM record, its disk image made by the daemon, its runner
 *   started as `godwit-vm restore-backup` under the supervisor; the job follows the runner's
 *   progress frames and ends when that runner answers (restored and running) or exits. An
 *   instant restore's job follows the fill through the runner's status instead, the VM
 *   running meanwhile.
 * Targets come only from the daemon's config (config.h: [backup_target NAME]). */
#ifndef GW_DAEMON_BACKUP_JOBS_H
#define GW_DAEMON_BACKUP_JOBS_H

#include <stdint.h>

#include "engine/common/busy_spans.h"
#include "engine/common/limits.h"
#include "engine/daemon/config.h"
#include "godwit/v1/api.pb-c.h"
#include "godwit/v1/backup.pb-c.h"

struct gw_daemon;
struct gw_job;

#define GW_BKJOB_BAD_NAMES 16     /* bad chunk names a verify job keeps */
#define GW_BKJOB_ID_MAX (GW_LIMIT_BACKUP_ID_BUF - 1)   /* longest backup id */

/* A backup's own throttle (a policy's settings; the API's backups have none): per-backup
 * limits on top of the host budget (config.h backup_host_rate/ops), which holds for all. */
struct gw_bk_throttle {
    uint64_t rate;                /* bytes/s of store writes; 0 = none (adaptive: no ceiling) */
    uint64_t ops;                 /* store writes/s; 0 = none */
    int adaptive;                 /* -1: the daemon's backup_adaptive; 0 off; 1 on */
};

struct gw_bkjob {
    char target[GW_CFG_TARGET_NAME_MAX + 1];
    char backup_id[GW_BKJOB_ID_MAX + 1];
    char new_vm[64];
    char digest[33];
    uint64_t bad_chunks, bad_manifests;
    char bad_names[GW_BKJOB_BAD_NAMES][65];
    unsigned n_bad;
    char reason[40];              /* machine-readable reason of a failure (Job.reason) */
    char cpu_priority[32];        /* BACKUP: what its threads ran at; RESTORE: what the runner was given */
    uint64_t side_limit, side_peak;   /* BACKUP by write-protect: its side buffer (bytes) */
    /* The request (not persisted: a job is never resumed by a later daemon). */
    char parent[GW_BKJOB_ID_MAX + 1];
    char method[16];
    struct gw_bk_throttle thr;
    uint32_t restart_kind, max_restarts, backoff_ms;
    uint64_t exit_seq;            /* BACKUP: the runner's exit count when the job began */
    uint64_t last_event_ns;       /* VERIFY: the last progress event */
    /* RESTORE (restore_job.c): the request's choices and the disk the daemon made. */
    bool instant;
    char disk_pool[GW_CFG_STR];   /* "" = an image file under image_roots */
    char disk[512];               /* the new VM's disk ("" = none) */
    bool made_image;              /* disk is a file this job created: a failure removes it */
    /* Backing store of the Job.backup message. */
    Godwit__V1__BackupJobInfo pb;
    char *bad_ptrs[GW_BKJOB_BAD_NAMES];
};

/* Job <-> proto (lock held), and release with the job. */
void gw_bkjob_to_proto(const struct gw_job *j, Godwit__V1__Job *out);
void gw_bkjob_load(struct gw_job *j, const Godwit__V1__Job *pj);
void gw_bkjob_free(struct gw_job *j);

/* Fills spec from a configured target (strings point into t). */
void gw_bkjob_spec(const struct gw_backup_target_cfg *t, Godwit__V1__StoreSpec *spec);

/* Ends j (lock held): state, the ErrorInfo-style reason (NULL = keep) and the error text. */
void gw_bkjob_finish(struct gw_job *j, int state, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* RESTORE (restore_job.c): the job thread's body. */
void gw_bkjob_run_restore(struct gw_daemon *d, struct gw_job *j);

/* RESTORE: where the new VM name's disk image would go (lock not held): 0 with the path or
 * spec in out, or a gRPC code with an ErrorInfo reason and message (the API refuses before
 * making a job: an image that exists, a pool not in rbd_pools). */
int gw_bkjob_restore_disk_check(struct gw_daemon *d, const char *name, const char *pool, char *out,
                                size_t cap, const char **reason, char *msg, size_t msglen);

/* Starts the job's thread (lock held; j->bk filled, its VM marked busy for BACKUP). 0 or
 * -errno (the caller fails the job). */
int gw_bkjob_start(struct gw_daemon *d, struct gw_job *j);

/* A backup job of vm to t, after the API's checks of the VM (lock held; service_backup.c): 0
 * with *out launched, or a gRPC code with an ErrorInfo reason (NULL = none) and message.
 * thr: the backup's own throttle (NULL = none beyond the host's and the daemon's default). */
int gw_bkjob_backup(struct gw_daemon *d, const char *vm, const struct gw_backup_target_cfg *t, const char *parent,
                    const char *method, const char *rid, const struct gw_bk_throttle *thr, struct gw_job **out,
                    const char **reason, char *msg, size_t msglen);

/* The bucket files a backup's runner request names (their storage). */
#define GW_BK_WATCH_MAX 8          /* the runner's own limit on VMs to watch */

struct gw_bk_buckets {
    char host[GW_CFG_STR + 32];
    char cluster[GW_CFG_STR + GW_CFG_TARGET_NAME_MAX + 32];
    /* Control sockets of the host's other running VMs with a disk, whose block latency the
     * adaptive controller watches beside the backed-up VM's own (gw_bkjob_watch). */
    char watch[GW_BK_WATCH_MAX][108];
    char *watch_ptrs[GW_BK_WATCH_MAX];
    /* The host's other backups, running or lately ended, as the request carries them, and
     * this backup's own span in the daemon's record (gw_bkjob_spans_begin; 0: none). */
    Godwit__V1__BusySpan spans[GW_BUSY_SPANS];
    Godwit__V1__BusySpan *span_ptrs[GW_BUSY_SPANS];
    uint64_t span_id;
};

/* Fills br's watch_controls (pointing into bk) with up to GW_BK_WATCH_MAX other running VMs
 * of this host that have a disk, when br's throttle is adaptive: a backup backs off when any
 * VM's own I/O slows, not only the one it copies. Takes d->lock. */
void gw_bkjob_watch(struct gw_daemon *d, const char *vm, Godwit__V1__RunnerBackupRequest *br,
                    struct gw_bk_buckets *bk);

/* The throttle fields of a backup's runner request (backup_throttle.c): b's own settings, the
 * host budget (its shared bucket file is state_dir/backup-host.bucket) and this host's share
 * of target t's cluster budget (backup_budget.h; joined here). br points into bk. 0, or -errno
 * with the reason in err (the cluster budget could not be joined). Ended, after the runner's
 * answer, by gw_bkjob_throttle_end (also after a failure). */
int gw_bkjob_throttle(struct gw_daemon *d, const struct gw_backup_target_cfg *t, const struct gw_bkjob *b,
                      Godwit__V1__RunnerBackupRequest *br, struct gw_bk_buckets *bk, char *err, size_t errlen);
void gw_bkjob_throttle_end(struct gw_daemon *d, const struct gw_backup_target_cfg *t, struct gw_bk_buckets *bk);

/* Just before br goes to the runner: fills br's host_backups (pointing into bk) with this
 * host's other backup jobs (backups, verifies, restores: each reads or writes the store for its
 * whole run) that run or ended lately, and records this one's start in the host's record
 * (d->host_backups); gw_bkjob_throttle_end records its end. Takes d->lock. */
void gw_bkjob_spans_begin(struct gw_daemon *d, Godwit__V1__RunnerBackupRequest *br, struct gw_bk_buckets *bk);
/* A verify's or a restore's span in that record: opened when it starts (its id), closed when
 * it ends (0: nothing). Take d->lock. */
uint64_t gw_bkjob_span_open(struct gw_daemon *d);
void gw_bkjob_span_close(struct gw_daemon *d, uint64_t id);

#endif
