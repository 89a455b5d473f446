/* Backup, verify and restore jobs of godwitd (see backup_jobs.h for what each does). Each job
 * has a detached thread of its own, like a migration: it holds no lock across a runner call,
 * a store access or a spawn, and publishes progress and the outcome under the lock. */
#include "engine/daemon/backup_jobs.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/backup.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/runner/runner_client.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define PROGRESS_MS 500
#define FRAME_TIMEOUT_MS 120000      /* a runner silent this long during a backup is wedged */
#define EXIT_WAIT_MS 3000            /* after a hang-up: the time the supervisor gets to reap it */

#define S(x) GODWIT__V1__JOB__STATE__##x

void gw_bkjob_to_proto(const struct gw_job *j, Godwit__V1__Job *out)
{
    struct gw_bkjob *b = j->bk;   /* its pb is the job's own backing store */
    godwit__v1__backup_job_info__init(&b->pb);
    b->pb.target = b->target;
    b->pb.backup_id = b->backup_id;
    b->pb.new_vm = b->new_vm;
    b->pb.bad_chunks = b->bad_chunks;
    b->pb.bad_manifests = b->bad_manifests;
    b->pb.memory_digest = b->digest;
    for (unsigned i = 0; i < b->n_bad; i++) b->bad_ptrs[i] = b->bad_names[i];
    b->pb.n_bad_chunk_names = b->n_bad;
    b->pb.bad_chunk_names = b->bad_ptrs;
    b->pb.disk = b->disk;
    b->pb.instant = b->instant;
    b->pb.cpu_priority = b->cpu_priority;
    b->pb.side_limit = b->side_limit;
    b->pb.side_peak_bytes = b->side_peak;
    out->backup = &b->pb;
    out->reason = b->reason;
}

void gw_bkjob_load(struct gw_job *j, const Godwit__V1__Job *pj)
{
    const Godwit__V1__BackupJobInfo *i = pj->backup;
    struct gw_bkjob *b = calloc(1, sizeof *b);
    if (!b) return;
    snprintf(b->target, sizeof b->target, "%s", i->target);
    snprintf(b->backup_id, sizeof b->backup_id, "%s", i->backup_id);
    snprintf(b->new_vm, sizeof b->new_vm, "%s", i->new_vm);
    snprintf(b->digest, sizeof b->digest, "%s", i->memory_digest);
    snprintf(b->reason, sizeof b->reason, "%s", pj->reason);
    snprintf(b->disk, sizeof b->disk, "%s", i->disk);
    b->instant = i->instant;
    snprintf(b->cpu_priority, sizeof b->cpu_priority, "%s", i->cpu_priority);
    b->side_limit = i->side_limit;
    b->side_peak = i->side_peak_bytes;
    b->bad_chunks = i->bad_chunks;
    b->bad_manifests = i->bad_manifests;
    for (size_t k = 0; k < i->n_bad_chunk_names && k < GW_BKJOB_BAD_NAMES; k++)
        snprintf(b->bad_names[b->n_bad++], sizeof b->bad_names[0], "%s", i->bad_chunk_names[k]);
    j->bk = b;
}

void gw_bkjob_free(struct gw_job *j)
{
    free(j->bk);
    j->bk = NULL;
}

void gw_bkjob_spec(const struct gw_backup_target_cfg *t, Godwit__V1__StoreSpec *spec)
{
    godwit__v1__store_spec__init(spec);
    spec->target = (char *)t->store;
    spec->ceph_conf = (char *)t->ceph_conf;
    spec->ceph_id = (char *)t->ceph_id;
    spec->keyring = (char *)t->keyring;
    spec->key_file = (char *)t->key_file;
    spec->osd_op_timeout_s = t->osd_op_timeout_s;
    spec->mon_op_timeout_s = t->mon_op_timeout_s;
    spec->max_inflight = t->inflight;
}

/* Ends j (lock held): state, error and reason. */
static void finish(struct gw_job *j, int state, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void finish(struct gw_job *j, int state, const char *reason, const char *fmt, ...)
{
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->error, sizeof j->error, fmt, ap);
        va_end(ap);
    }
    if (reason) snprintf(j->bk->reason, sizeof j->bk->reason, "%s", reason);
    gw_job_set_state(j, state, state == S(SUCCEEDED) ? "completed" : j->error);
}

void gw_bkjob_finish(struct gw_job *j, int state, const char *reason, const char *fmt, ...)
{
    if (!fmt) { finish(j, state, reason, NULL); return; }
    char msg[sizeof j->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    finish(j, state, reason, "%s", msg);
}

/* ---- BACKUP ----------------------------------------------------------------------------- */

static int on_progress(void *arg, const Godwit__V1__JobProgress *p)
{
    struct gw_job *j = arg;
    struct gw_daemon *d = j->d;
    pthread_mutex_lock(&d->lock);
    bool stop = j->cancel || d->stopping;
    if (!stop) {
        gw_job_take_progress(j, p);
        gw_job_progress(j, NULL);
    }
    pthread_mutex_unlock(&d->lock);
    if (!stop) gw_job_save_progress(d, j);
    return stop;
}

static void run_backup(struct gw_daemon *d, struct gw_job *j)
{
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, j->vm);   /* alive: busy */
    const struct gw_backup_target_cfg *t = gw_config_backup_target(&d->cfg, j->bk->target);
    char sock[sizeof rec->control];
    memcpy(sock, rec->control, sizeof sock);
    snprintf(j->phase, sizeof j->phase, "backup");
    j->progress.total_bytes = rec->memory_bytes;
    gw_job_set_state(j, S(RUNNING), "backup started");
    pthread_mutex_unlock(&d->lock);

    Godwit__V1__StoreSpec spec;
    gw_bkjob_spec(t, &spec);
    Godwit__V1__RunnerBackupRequest br = GODWIT__V1__RUNNER_BACKUP_REQUEST__INIT;
    br.store = &spec;
    br.parent = j->bk->parent;
    br.method = j->bk->method;
    br.progress_ms = PROGRESS_MS;
    br.cpu_priority = d->cfg.backup_cpu_priority;   /* checked when the daemon started */
    br.side_limit = d->cfg.backup_side_limit;
    struct gw_bk_buckets bks = {0};
    char terr[256];
    int tr = gw_bkjob_throttle(d, t, j->bk, &br, &bks, terr, sizeof terr);
    if (!tr) {
        gw_bkjob_watch(d, j->vm, &br, &bks);
        gw_bkjob_spans_begin(d, &br, &bks);
    }
    Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
    req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_BACKUP;
    req.backup = &br;
    Godwit__V1__RunnerReply *rep = NULL;
    int r = tr ? 0 : gw_runner_call_stream(sock, &req, on_progress, j, &rep, FRAME_TIMEOUT_MS);
    gw_bkjob_throttle_end(d, t, &bks);

    pthread_mutex_lock(&d->lock);
    if (tr) {
        finish(j, S(FAILED), "BUDGET_UNAVAILABLE", "the target's cluster budget: %s", terr);
    } else if (r) {
        /* The runner hung up or went silent. If it died, the supervisor reaps it within
         * moments: wait for that, so that the reason names the exit. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += EXIT_WAIT_MS / 1000;
        while (rec->exit_seq == j->bk->exit_seq && !d->stopping && r != -EAGAIN)
            if (pthread_cond_timedwait(&d->cond, &d->lock, &ts)) break;
        if (rec->exit_seq != j->bk->exit_seq)
            finish(j, S(FAILED), "RUNNER_EXITED", "the VM's runner ended during the backup (%s); nothing was listed",
                   rec->exit_why[0] ? rec->exit_why : "exited");
        else if (r == -EAGAIN)
            finish(j, S(FAILED), "RUNNER_TIMEOUT", "the VM's runner sent nothing for %d s during the backup",
                   FRAME_TIMEOUT_MS / 1000);
        else
            finish(j, S(FAILED), "RUNNER_UNREACHABLE", "the VM's runner: %s", strerror(-r));
    } else if (!rep->ok && (j->cancel || d->stopping)) {
        finish(j, j->cancel ? S(CANCELLED) : S(FAILED), j->cancel ? "CANCELLED" : "DAEMON_STOPPING",
               j->cancel ? "cancelled: the runner stopped the backup; nothing was listed"
                         : "the daemon stopped during the backup; nothing was listed");
    } else if (!rep->ok) {
        finish(j, S(FAILED), "BACKUP_FAILED", "%s", rep->error);
    } else if (!rep->backup) {
        finish(j, S(FAILED), "BACKUP_FAILED", "the runner's reply carries no backup");
    } else {
        const Godwit__V1__RunnerBackupResult *b = rep->backup;
        snprintf(j->bk->backup_id, sizeof j->bk->backup_id, "%s", b->id);
        snprintf(j->bk->digest, sizeof j->bk->digest, "%s", b->memory_digest);
        snprintf(j->bk->cpu_priority, sizeof j->bk->cpu_priority, "%s", b->cpu_priority);
        j->bk->side_limit = b->wp_side_limit;
        j->bk->side_peak = b->wp_side_peak_bytes;
        j->progress.total_bytes = b->memory_bytes + b->disk_bytes;
        j->progress.remaining_bytes = 0;
        j->progress.eta_ms = 0;
        j->progress.sent_bytes = j->progress.backup_bytes_written = b->new_bytes;
        j->progress.backup_chunks = j->progress.backup_chunks_total = b->chunks;
        j->progress.backup_bytes_read = b->bytes_read;
        j->progress.measured_downtime_ms = b->pause_ns / 1000000;
        gw_info("job=%s vm=%s: backup %s to %s: %llu chunks, %llu new (%llu KiB)", j->id, j->vm, b->id,
                j->bk->target, (unsigned long long)b->chunks, (unsigned long long)b->new_chunks,
                (unsigned long long)(b->new_bytes >> 10));
        finish(j, S(SUCCEEDED), NULL, NULL);
    }
    rec->busy = false;   /* the supervisor may restart a runner that died meanwhile */
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
}

/* ---- VERIFY ----------------------------------------------------------------------------- */

static void on_bad(void *ctx, const char *chunk, const char *reason, const char *const *backups, size_t nb)
{
    struct gw_job *j = ctx;
    (void)backups;
    (void)nb;
    gw_warn("job=%s vm=%s: bad chunk %s: %s", j->id, j->vm, *chunk ? chunk : "(manifest)", reason);
    pthread_mutex_lock(&j->d->lock);
    if (*chunk && j->bk->n_bad < GW_BKJOB_BAD_NAMES)
        snprintf(j->bk->bad_names[j->bk->n_bad++], sizeof j->bk->bad_names[0], "%.64s", chunk);
    pthread_mutex_unlock(&j->d->lock);
}

/* After each batch of reads (lock not held): progress, and whether to stop. */
static int on_verify_progress(void *ctx, const struct gw_verify_stats *st)
{
    struct gw_job *j = ctx;
    struct gw_daemon *d = j->d;
    pthread_mutex_lock(&d->lock);
    bool stop = j->cancel || d->stopping;
    uint64_t ms = st->elapsed_ns / 1000000;
    j->progress.total_bytes = st->total_raw_bytes;
    j->progress.remaining_bytes = st->total_raw_bytes - st->raw_bytes_checked;
    j->progress.backup_bytes_read = st->bytes_read;
    j->progress.backup_chunks = st->unique_chunks;
    j->progress.backup_chunks_total = st->total_unique;
    j->progress.total_ms = ms;
    if (ms) j->progress.throughput_bytes_per_s = st->raw_bytes_checked * 1000 / ms;
    j->progress.eta_ms = j->progress.throughput_bytes_per_s
                             ? j->progress.remaining_bytes * 1000 / j->progress.throughput_bytes_per_s : 0;
    uint64_t now = gw_now_ns();
    bool tick = now - j->bk->last_event_ns >= (uint64_t)PROGRESS_MS * 1000000;
    if (tick && !stop) { j->bk->last_event_ns = now; gw_job_progress(j, NULL); }
    pthread_mutex_unlock(&d->lock);
    if (tick && !stop) gw_job_save_progress(d, j);
    return stop;
}

static void run_verify(struct gw_daemon *d, struct gw_job *j)
{
    pthread_mutex_lock(&d->lock);
    const struct gw_backup_target_cfg *t = gw_config_backup_target(&d->cfg, j->bk->target);
    snprintf(j->phase, sizeof j->phase, "verify");
    gw_job_set_state(j, S(RUNNING), "verify started");
    pthread_mutex_unlock(&d->lock);

    Godwit__V1__StoreSpec spec;
    gw_bkjob_spec(t, &spec);
    struct gw_backup_target tg;
    struct gw_verify_stats st = {0};
    char err[512] = "";
    int r = gw_backup_target_open(&spec, &tg, err, sizeof err);
    if (!r) {
        r = gw_backup_verify_ex(&tg, j->vm, j->bk->backup_id[0] ? j->bk->backup_id : NULL, on_bad, on_verify_progress, j,
                                &st, err, sizeof err);
        gw_backup_target_close(&tg);
    }
    pthread_mutex_lock(&d->lock);
    j->bk->bad_chunks = st.bad_chunks;
    j->bk->bad_manifests = st.bad_manifests;
    j->progress.total_bytes = st.total_raw_bytes;
    j->progress.remaining_bytes = st.total_raw_bytes - st.raw_bytes_checked;
    j->progress.backup_bytes_read = st.bytes_read;
    j->progress.backup_chunks = st.unique_chunks;
    j->progress.backup_chunks_total = st.total_unique;
    j->progress.eta_ms = 0;
    uint64_t ms = st.elapsed_ns / 1000000;
    if (ms) j->progress.throughput_bytes_per_s = st.raw_bytes_checked * 1000 / ms;
    if (r == -ECANCELED && j->cancel)
        finish(j, S(CANCELLED), "CANCELLED", "cancelled after %llu of %llu chunks",
               (unsigned long long)st.unique_chunks, (unsigned long long)st.total_unique);
    else if (r)
        finish(j, S(FAILED), r == -ENOENT ? "BACKUP_NOT_FOUND" : "STORE_FAILED", "%s", err);
    else if (j->cancel)
        finish(j, S(CANCELLED), "CANCELLED", "cancelled (the verify had finished: %llu bad chunks)",
               (unsigned long long)st.bad_chunks);
    else if (st.bad_chunks || st.bad_manifests)
        finish(j, S(FAILED), "BACKUP_CORRUPT", "verify found %llu bad chunks and %llu bad manifests in %llu backups",
               (unsigned long long)st.bad_chunks, (unsigned long long)st.bad_manifests, (unsigned long long)st.backups);
    else {
        gw_info("job=%s vm=%s: verified %llu backups, %llu chunks, 0 bad", j->id, j->vm,
                (unsigned long long)st.backups, (unsigned long long)st.unique_chunks);
        finish(j, S(SUCCEEDED), NULL, NULL);
    }
    pthread_mutex_unlock(&d->lock);
}

static void *job_main(void *arg)
{
    struct gw_job *j = arg;
    struct gw_daemon *d = j->d;
    /* A verify reads a whole backup and a restore all of one: for the host's guests beside
     * them that is no more their usual latency than a backup is (backup_throttle.c). A
     * backup records its own span, just before its runner starts. */
    uint64_t span = j->kind == GODWIT__V1__JOB__KIND__BACKUP ? 0 : gw_bkjob_span_open(d);
    if (j->kind == GODWIT__V1__JOB__KIND__BACKUP) run_backup(d, j);
    else if (j->kind == GODWIT__V1__JOB__KIND__VERIFY) run_verify(d, j);
    else gw_bkjob_run_restore(d, j);
    gw_bkjob_span_close(d, span);
    pthread_mutex_lock(&d->lock);
    j->has_thread = false;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    gw_db_flush(d->db);
    return NULL;
}

int gw_bkjob_start(struct gw_daemon *d, struct gw_job *j)
{
    (void)d;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&j->thread, &at, job_main, j);
    pthread_attr_destroy(&at);
    if (r) return -r;
    j->has_thread = true;
    return 0;
}
