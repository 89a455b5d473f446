/* Jobs: every long operation (a migration today; backups and evacuations later) is a job
 * with an id, a state machine
 *
 *     QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED      (QUEUED -> CANCELLED too)
 *
 * progress, and a final summary kept in the database's history. Watchers (WatchJob calls)
 * get one JobEvent per state change or progress tick; the event carrying a final state is
 * the last, then their call ends with OK. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/daemon/metrics.h"

#define SAVE_EVERY_NS (2000ull * 1000 * 1000)

bool gw_job_final(int state)
{
    return state == GODWIT__V1__JOB__STATE__SUCCEEDED || state == GODWIT__V1__JOB__STATE__FAILED ||
           state == GODWIT__V1__JOB__STATE__CANCELLED;
}

struct gw_job *gw_job_find(struct gw_daemon *d, const char *id)
{
    for (struct gw_job *j = d->jobs; j; j = j->next)
        if (!strcmp(j->id, id)) return j;
    return NULL;
}

void gw_job_to_proto(const struct gw_job *j, Godwit__V1__Job *out)
{
    /* The caller's out is filled with pointers into j (policy, progress, strings). */
    godwit__v1__job__init(out);
    out->id = (char *)j->id;
    out->kind = j->kind;
    out->state = j->state;
    out->vm = (char *)j->vm;
    out->destination = (char *)j->destination;
    out->policy = (Godwit__V1__MigrationPolicy *)&j->policy;
    out->progress = (Godwit__V1__JobProgress *)&j->progress;
    out->error = (char *)j->error;
    out->created_unix_ms = j->created_ms;
    out->started_unix_ms = j->started_ms;
    out->finished_unix_ms = j->finished_ms;
    out->request_id = (char *)j->request_id;
    if (j->evac) gw_evac_to_proto(j, out);
    if (j->bk) gw_bkjob_to_proto(j, out);
}

static void job_init_messages(struct gw_job *j)
{
    godwit__v1__migration_policy__init(&j->policy);
    godwit__v1__job_progress__init(&j->progress);
    godwit__v1__pages_by_encoding__init(&j->pages);
    j->progress.pages = &j->pages;
    j->progress.phase = j->phase;
    j->progress.postcopy_vcpu_blocked_ms = j->vcpu_blocked_ms;
}

/* Drops the oldest finished jobs beyond what we keep in memory (lock held). */
static void trim(struct gw_daemon *d)
{
    unsigned n = 0;
    for (struct gw_job **p = &d->jobs; *p;) {
        struct gw_job *j = *p;
        if (++n > GW_JOBS_IN_MEMORY && gw_job_final(j->state) && !j->has_thread && !j->watchers) {
            *p = j->next;
            gw_evac_free(j);
            gw_bkjob_free(j);
            free(j);
            continue;
        }
        p = &j->next;
    }
}

int gw_job_new(struct gw_daemon *d, int kind, const char *vm, struct gw_job **out)
{
    struct gw_job *j = calloc(1, sizeof *j);
    if (!j) return -ENOMEM;
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) { free(j); return -EIO; }
    snprintf(j->id, sizeof j->id, "job-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    job_init_messages(j);
    j->kind = kind;
    j->state = GODWIT__V1__JOB__STATE__QUEUED;
    snprintf(j->vm, sizeof j->vm, "%s", vm);
    snprintf(j->phase, sizeof j->phase, "queued");
    j->created_ms = gw_unix_ms();
    j->d = d;
    j->next = d->jobs;
    d->jobs = j;
    trim(d);
    *out = j;
    return 0;
}

void gw_job_persist(struct gw_job *j)
{
    Godwit__V1__Job pj;
    gw_job_to_proto(j, &pj);
    if (gw_db_put_job(j->d->db, &pj)) gw_error("job=%s: cannot save it", j->id);
    j->last_saved_ns = gw_now_ns();
}

/* Sends the current job as an event to every watcher; ends their calls on a final state. */
static void notify(struct gw_job *j, const char *msg)
{
    Godwit__V1__JobEvent ev = GODWIT__V1__JOB_EVENT__INIT;
    Godwit__V1__Job pj;
    gw_job_to_proto(j, &pj);
    ev.job = &pj;
    ev.seq = ++j->seq;
    ev.unix_ms = gw_unix_ms();
    ev.message = (char *)(msg ? msg : "");
    bool final = gw_job_final(j->state);
    for (struct gw_job_watcher **p = &j->watchers; *p;) {
        struct gw_job_watcher *w = *p;
        int r = gw_grpc_call_send(w->call, &ev.base);
        if (r == 0 && !final) { p = &w->next; continue; }
        /* Gone (-ECANCELED), too slow to read (-ENOBUFS) or done: drop the watcher. */
        if (r == 0) gw_grpc_call_finish(w->call, GW_GRPC_OK, NULL);
        else if (r == -ENOBUFS) gw_grpc_call_finish(w->call, GW_GRPC_RESOURCE_EXHAUSTED, "watcher too slow");
        gw_grpc_call_unref(w->call);
        *p = w->next;
        free(w);
    }
    pthread_cond_broadcast(&j->d->cond);
}

void gw_job_set_policy(struct gw_job *j, const Godwit__V1__MigrationPolicy *p)
{
    /* Scalars only: a plain copy, minus fields this version does not know (they belong to
     * the unpacked message, not to the job). */
    j->policy = *p;
    j->policy.base.unknown_fields = NULL;
    j->policy.base.n_unknown_fields = 0;
}

void gw_job_take_progress(struct gw_job *j, const Godwit__V1__JobProgress *p)
{
    j->progress.total_bytes = p->total_bytes;
    j->progress.sent_bytes = p->sent_bytes;
    j->progress.remaining_bytes = p->remaining_bytes;
    j->progress.round = p->round;
    j->progress.dirty_rate_bytes_per_s = p->dirty_rate_bytes_per_s;
    j->progress.throughput_bytes_per_s = p->throughput_bytes_per_s;
    j->progress.expected_downtime_ms = p->expected_downtime_ms;
    j->progress.measured_downtime_ms = p->measured_downtime_ms;
    j->progress.setup_ms = p->setup_ms;
    j->progress.total_ms = p->total_ms;
    if (p->pages) { j->pages.zero = p->pages->zero; j->pages.raw = p->pages->raw; j->pages.lz4 = p->pages->lz4; }
    if (p->phase && p->phase[0]) snprintf(j->phase, sizeof j->phase, "%s", p->phase);
    /* Post-copy's figures (the histogram stays with the runner's status). */
    j->progress.postcopy_pages_requested = p->postcopy_pages_requested;
    j->progress.postcopy_pages_remaining = p->postcopy_pages_remaining;
    j->progress.postcopy_pages_resent = p->postcopy_pages_resent;
    j->progress.postcopy_request_p50_us = p->postcopy_request_p50_us;
    j->progress.postcopy_request_p99_us = p->postcopy_request_p99_us;
    j->progress.postcopy_request_max_us = p->postcopy_request_max_us;
    j->progress.postcopy_blocked_ms = p->postcopy_blocked_ms;
    j->progress.postcopy_ms = p->postcopy_ms;
    j->progress.postcopy_pages_refused = p->postcopy_pages_refused;
    j->progress.backup_bytes_read = p->backup_bytes_read;
    j->progress.backup_bytes_written = p->backup_bytes_written;
    j->progress.backup_bytes_deduplicated = p->backup_bytes_deduplicated;
    j->progress.backup_chunks = p->backup_chunks;
    j->progress.backup_chunks_total = p->backup_chunks_total;
    j->progress.eta_ms = p->eta_ms;
    j->progress.postcopy_recoveries = p->postcopy_recoveries;
    j->progress.postcopy_recovery_ms = p->postcopy_recovery_ms;
    size_t nv = p->n_postcopy_vcpu_blocked_ms < 16 ? p->n_postcopy_vcpu_blocked_ms : 16;
    for (size_t i = 0; i < nv; i++) j->vcpu_blocked_ms[i] = p->postcopy_vcpu_blocked_ms[i];
    j->progress.n_postcopy_vcpu_blocked_ms = nv;
}

void gw_job_set_state(struct gw_job *j, int state, const char *msg)
{
    if (gw_job_final(j->state)) return;   /* final states are final */
    j->state = state;
    uint64_t now = gw_unix_ms();
    if (state == GODWIT__V1__JOB__STATE__RUNNING && !j->started_ms) j->started_ms = now;
    if (gw_job_final(state)) {
        j->finished_ms = now;
        if (state == GODWIT__V1__JOB__STATE__SUCCEEDED) snprintf(j->phase, sizeof j->phase, "completed");
        else if (state == GODWIT__V1__JOB__STATE__CANCELLED) snprintf(j->phase, sizeof j->phase, "cancelled");
        else snprintf(j->phase, sizeof j->phase, "failed");
        if (j->started_ms) j->progress.total_ms = now - j->started_ms;
        gw_metrics_job_done(j->d, j);
        gw_cluster_job_done(j->d, j);
        gw_info("job=%s vm=%s: %s%s%s", j->id, j->vm,
                state == GODWIT__V1__JOB__STATE__SUCCEEDED ? "succeeded"
                : state == GODWIT__V1__JOB__STATE__CANCELLED ? "cancelled" : "failed",
                j->error[0] ? ": " : "", j->error);
    }
    gw_job_persist(j);
    notify(j, msg);
}

void gw_job_progress(struct gw_job *j, const char *msg)
{
    notify(j, msg);
}

void gw_job_save_progress(struct gw_daemon *d, struct gw_job *j)
{
    pthread_mutex_lock(&d->lock);
    if (gw_job_final(j->state) || gw_now_ns() - j->last_saved_ns < SAVE_EVERY_NS) {
        pthread_mutex_unlock(&d->lock);
        return;
    }
    /* Final states are written under the lock by gw_job_set_state, on this same thread,
     * after this write has returned: an older snapshot can never overwrite a newer one. */
    Godwit__V1__Job pj;
    gw_job_to_proto(j, &pj);
    size_t len = protobuf_c_message_get_packed_size(&pj.base);
    uint8_t *buf = malloc(len ? len : 1);
    char id[sizeof j->id], vm[sizeof j->vm];
    int state = j->state;
    uint64_t created = j->created_ms;
    memcpy(id, j->id, sizeof id);
    memcpy(vm, j->vm, sizeof vm);
    if (buf) protobuf_c_message_pack(&pj.base, buf);
    j->last_saved_ns = gw_now_ns();
    pthread_mutex_unlock(&d->lock);
    if (buf && gw_db_put_job_packed(d->db, id, vm, state, created, buf, len)) gw_error("job=%s: cannot save it", id);
    free(buf);
}

int gw_job_watch(struct gw_job *j, struct gw_grpc_call *call)
{
    Godwit__V1__JobEvent ev = GODWIT__V1__JOB_EVENT__INIT;
    Godwit__V1__Job pj;
    gw_job_to_proto(j, &pj);
    ev.job = &pj;
    ev.seq = j->seq;
    ev.unix_ms = gw_unix_ms();
    ev.message = "current state";
    int r = gw_grpc_call_send(call, &ev.base);
    if (r) return r;
    if (gw_job_final(j->state)) return 1;   /* nothing more will come: the caller ends it */
    struct gw_job_watcher *w = calloc(1, sizeof *w);
    if (!w) return -ENOMEM;
    gw_grpc_call_ref(call);
    w->call = call;
    w->next = j->watchers;
    j->watchers = w;
    return 0;
}

static void load_one(void *arg, const Godwit__V1__Job *pj)
{
    struct gw_daemon *d = arg;
    struct gw_job *j = calloc(1, sizeof *j);
    if (!j) return;
    job_init_messages(j);
    snprintf(j->id, sizeof j->id, "%s", pj->id);
    j->kind = pj->kind;
    j->state = pj->state;
    snprintf(j->vm, sizeof j->vm, "%s", pj->vm);
    snprintf(j->destination, sizeof j->destination, "%s", pj->destination);
    if (pj->policy) gw_job_set_policy(j, pj->policy);
    if (pj->progress) gw_job_take_progress(j, pj->progress);
    snprintf(j->error, sizeof j->error, "%s", pj->error);
    j->created_ms = pj->created_unix_ms;
    j->started_ms = pj->started_unix_ms;
    j->finished_ms = pj->finished_unix_ms;
    snprintf(j->request_id, sizeof j->request_id, "%s", pj->request_id);
    j->d = d;
    if (j->kind == GODWIT__V1__JOB__KIND__EVACUATE) gw_evac_load(j, pj);
    if (pj->backup) gw_bkjob_load(j, pj);
    j->next = d->jobs;   /* loaded oldest first: the list ends newest first */
    d->jobs = j;
}

int gw_jobs_load(struct gw_daemon *d)
{
    gw_db_prune_jobs(d->db, GW_JOBS_IN_DB);
    /* A job still open in the database lost its thread with the previous daemon. It stays
     * open until re-attach has seen the runners: a migration that went on without us, or
     * ended, settles it with its real outcome (gw_owner_settle_jobs ends the rest). */
    return gw_db_load_jobs(d->db, GW_JOBS_IN_MEMORY, load_one, d);
}

void gw_jobs_shutdown(struct gw_daemon *d)
{
    /* Job threads see d->stopping and return, leaving their job as it is in the database
     * (the next daemon marks it interrupted). Watchers' calls are ended now. */
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    /* Job threads are detached; each clears has_thread under the lock as its last act. */
    for (;;) {
        bool any = false;
        for (struct gw_job *j = d->jobs; j; j = j->next)
            any |= j->has_thread;
        if (!any) break;
        pthread_cond_wait(&d->cond, &d->lock);
    }
    for (struct gw_job *j = d->jobs; j; j = j->next) {
        while (j->watchers) {
            struct gw_job_watcher *w = j->watchers;
            j->watchers = w->next;
            gw_grpc_call_finish(w->call, GW_GRPC_UNAVAILABLE, "daemon shutting down");
            gw_grpc_call_unref(w->call);
            free(w);
        }
    }
    while (d->jobs) {
        struct gw_job *j = d->jobs;
        d->jobs = j->next;
        gw_evac_free(j);
        gw_bkjob_free(j);
        free(j);
    }
    pthread_mutex_unlock(&d->lock);
}
