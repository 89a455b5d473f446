/* Host evacuation: EvacuateHost plans where each VM goes (cluster_plan.c) and starts a parent
 * job (kind EVACUATE) whose thread runs one child migration per VM within the caps: at most
 * max_outbound children at once, at most max_inbound into one destination, and each child
 * limited to bandwidth_budget / max_outbound so that all of them together stay within the
 * budget. Work over a cap waits (PENDING); it does not fail.
 *
 * Every step ends in a terminal state: MOVED, FAILED (with a reason) or CANCELLED; a child is
 * tried once and never retried, so the parent always ends. A stall detector aborts a child
 * whose remaining bytes have not fallen for stall_timeout_s (reason MIGRATION_NOT_CONVERGING)
 * unless it is in post-copy, which must finish.
 *
 * The host goes DRAINING when the job starts, MAINTENANCE when every VM moved; a cancel stops
 * scheduling, aborts the pre-copy children in flight (post-copy ones finish) and puts the host
 * back to ACTIVE in one step.
 *
 * Journal: the steps are part of the parent's Job record in SQLite, written at every step's
 * change. A daemon killed mid-evacuation resumes from it: a step that was running is settled
 * first (moved when the destination's registry record holds the VM, else back to PENDING when
 * the VM still runs here, untouched) so that no VM is migrated twice. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"

#define S(x) GODWIT__V1__EVACUATION_STEP__STATE__##x
#define SETTLE_MS (3 * GW_CLUSTER_HEARTBEAT_MS + 1000)   /* a resumed running step: registry wait */

struct step {
    char vm[GW_VM_NAME_MAX + 1];
    char dest_host[GW_CLUSTER_NAME_MAX + 1];
    char dest[256];
    uint64_t memory, est_bytes, est_ms, dirty;
    uint32_t priority;
    int state;
    char job_id[40];
    char error[256];
    char reason[40];
    char phase[32];
    uint64_t remaining, sent, min_remaining, progress_ns, started_ms, finished_ms;
    uint32_t round;                        /* the child's last pre-copy round seen */
    uint64_t downtime_ms, expected_downtime_ms;
    uint32_t iteration;                    /* the child's round, as shown */
    uint64_t last_sent, sent_ns;           /* when sent_bytes last grew */
    bool abort_sent, settling;
};

struct gw_evac {
    struct gw_daemon *d;
    struct gw_job *j;
    Godwit__V1__EvacuationPolicy pol;      /* scalars; pol.migration points at mig */
    Godwit__V1__MigrationPolicy mig;
    char request_id[64];
    char reason[40];
    size_t n;
    struct step *steps;
    Godwit__V1__EvacuationStep *msgs;      /* the proto view of steps, rebuilt by to_proto */
    Godwit__V1__EvacuationStep **ptrs;
    unsigned max_concurrent;               /* observed, for the benchmark's log line */
};

static const char *step_state_word(int s)
{
    switch (s) {
    case S(PENDING): return "pending";
    case S(RUNNING): return "running";
    case S(MOVED): return "moved";
    case S(FAILED): return "failed";
    case S(CANCELLED): return "cancelled";
    default: return "?";
    }
}

static bool step_final(int s)
{
    return s == S(MOVED) || s == S(FAILED) || s == S(CANCELLED);
}

static int evac_alloc(struct gw_daemon *d, struct gw_job *j, size_t n, struct gw_evac **out)
{
    struct gw_evac *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    e->steps = calloc(n + 1, sizeof *e->steps);
    e->msgs = calloc(n + 1, sizeof *e->msgs);
    e->ptrs = calloc(n + 1, sizeof *e->ptrs);
    if (!e->steps || !e->msgs || !e->ptrs) {
        free(e->steps); free(e->msgs); free(e->ptrs); free(e);
        return -ENOMEM;
    }
    e->d = d;
    e->j = j;
    e->n = n;
    godwit__v1__evacuation_policy__init(&e->pol);
    godwit__v1__migration_policy__init(&e->mig);
    *out = e;
    return 0;
}

void gw_evac_free(struct gw_job *j)
{
    struct gw_evac *e = j->evac;
    if (!e) return;
    free(e->steps);
    free(e->msgs);
    free(e->ptrs);
    free(e);
    j->evac = NULL;
}

static void step_to_proto(const struct step *s, Godwit__V1__EvacuationStep *m)
{
    godwit__v1__evacuation_step__init(m);
    m->vm = (char *)s->vm;
    m->destination_host = (char *)s->dest_host;
    m->destination = (char *)s->dest;
    m->memory_bytes = s->memory;
    m->estimated_bytes = s->est_bytes;
    m->estimated_ms = s->est_ms;
    m->priority = s->priority;
    m->state = s->state;
    m->job_id = (char *)s->job_id;
    m->error = (char *)s->error;
    m->reason = (char *)s->reason;
    m->phase = (char *)s->phase;
    m->remaining_bytes = s->remaining;
    m->sent_bytes = s->sent;
    m->dirty_rate_bytes_per_s = s->dirty;
    m->started_unix_ms = s->started_ms;
    m->finished_unix_ms = s->finished_ms;
    m->actual_ms = s->finished_ms > s->started_ms && s->started_ms ? s->finished_ms - s->started_ms : 0;
    m->round = s->iteration;
    m->downtime_ms = s->downtime_ms;
    m->expected_downtime_ms = s->expected_downtime_ms;
}

void gw_evac_to_proto(const struct gw_job *j, Godwit__V1__Job *out)
{
    struct gw_evac *e = j->evac;
    for (size_t i = 0; i < e->n; i++) {
        step_to_proto(&e->steps[i], &e->msgs[i]);
        e->ptrs[i] = &e->msgs[i];
    }
    out->n_steps = e->n;
    out->steps = e->ptrs;
    out->request_id = e->request_id;
    out->reason = e->reason;
    e->pol.migration = &e->mig;
    out->evacuation = &e->pol;
}

void gw_evac_policy(const struct gw_daemon *d, const Godwit__V1__EvacuationPolicy *p,
                    Godwit__V1__EvacuationPolicy *out, Godwit__V1__MigrationPolicy *mig)
{
    godwit__v1__evacuation_policy__init(out);
    godwit__v1__migration_policy__init(mig);
    if (p) {
        out->max_outbound = p->max_outbound;
        out->max_inbound = p->max_inbound;
        out->bandwidth_budget_bytes_per_s = p->bandwidth_budget_bytes_per_s;
        out->stall_timeout_s = p->stall_timeout_s;
        if (p->migration) {
            *mig = *p->migration;
            mig->base.unknown_fields = NULL;
            mig->base.n_unknown_fields = 0;
        }
    }
    if (!out->max_outbound) out->max_outbound = d->cfg.max_migrations;
    if (out->max_outbound > 64) out->max_outbound = 64;
    if (!out->max_inbound) out->max_inbound = 1;
    if (!out->stall_timeout_s) out->stall_timeout_s = GW_EVAC_STALL_S_DEFAULT;
    if (!mig->mode) {
        /* The ladder (cluster.h): an operator who names a mode gets exactly that mode. */
        mig->mode = GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID;
        mig->auto_converge = true;
        if (!mig->hybrid_ms_per_gib) mig->hybrid_ms_per_gib = GW_EVAC_HYBRID_MS_PER_GIB_DEFAULT;
    }
    if (out->bandwidth_budget_bytes_per_s) {
        uint64_t share = out->bandwidth_budget_bytes_per_s / out->max_outbound;
        if (!mig->bandwidth_limit_bytes_per_s || mig->bandwidth_limit_bytes_per_s > share)
            mig->bandwidth_limit_bytes_per_s = share ? share : 1;
    }
}

static void take_policy(struct gw_evac *e, const Godwit__V1__EvacuationPolicy *p)
{
    gw_evac_policy(e->d, p, &e->pol, &e->mig);
}

void gw_evac_load(struct gw_job *j, const Godwit__V1__Job *pj)
{
    struct gw_evac *e;
    size_t n = pj->n_steps > GW_EVAC_MAX_VMS ? GW_EVAC_MAX_VMS : pj->n_steps;
    if (evac_alloc(j->d, j, n, &e)) return;
    take_policy(e, pj->evacuation);
    snprintf(e->request_id, sizeof e->request_id, "%s", pj->request_id);
    snprintf(e->reason, sizeof e->reason, "%s", pj->reason);
    for (size_t i = 0; i < n; i++) {
        const Godwit__V1__EvacuationStep *m = pj->steps[i];
        struct step *s = &e->steps[i];
        snprintf(s->vm, sizeof s->vm, "%s", m->vm);
        snprintf(s->dest_host, sizeof s->dest_host, "%s", m->destination_host);
        snprintf(s->dest, sizeof s->dest, "%s", m->destination);
        s->memory = m->memory_bytes;
        s->est_bytes = m->estimated_bytes;
        s->est_ms = m->estimated_ms;
        s->priority = m->priority;
        s->state = (m->state >= S(PENDING) && m->state <= S(CANCELLED)) ? (int)m->state : S(FAILED);
        snprintf(s->job_id, sizeof s->job_id, "%s", m->job_id);
        snprintf(s->error, sizeof s->error, "%s", m->error);
        snprintf(s->reason, sizeof s->reason, "%s", m->reason);
        snprintf(s->phase, sizeof s->phase, "%s", m->phase);
        s->remaining = m->remaining_bytes;
        s->sent = m->sent_bytes;
        s->started_ms = m->started_unix_ms;
        s->finished_ms = m->finished_unix_ms;
        s->iteration = m->round;
        s->downtime_ms = m->downtime_ms;
        s->settling = s->state == S(RUNNING);   /* its child's fate is settled first */
    }
    j->evac = e;
}

/* ---- the job's thread ------------------------------------------------------------------- */

static void step_end(struct step *s, int state, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void step_end(struct step *s, int state, const char *reason, const char *fmt, ...)
{
    s->state = state;
    s->finished_ms = gw_unix_ms();
    if (reason && !s->reason[0]) snprintf(s->reason, sizeof s->reason, "%s", reason);
    if (fmt && !s->error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->error, sizeof s->error, fmt, ap);
        va_end(ap);
    }
    snprintf(s->phase, sizeof s->phase, "%s", step_state_word(state));
}

bool gw_cluster_vm_busy(struct gw_daemon *d, const struct gw_vm_rec *r, char *why, size_t whylen)
{
    for (struct gw_job *o = d->jobs; o; o = o->next) {
        if (gw_job_final(o->state) || o->kind == GODWIT__V1__JOB__KIND__EVACUATE || strcmp(o->vm, r->name)) continue;
        const ProtobufCEnumValue *k = protobuf_c_enum_descriptor_get_value(&godwit__v1__job__kind__descriptor, o->kind);
        snprintf(why, whylen, "VM %s has a %s job in progress (%s)", r->name, k ? k->name : "other", o->id);
        return true;
    }
    if (r->busy || r->state == GODWIT__V1__VM__STATE__MIGRATING) {
        snprintf(why, whylen, "an operation on VM %s is in progress", r->name);
        return true;
    }
    return false;
}

int gw_cluster_migrate(struct gw_daemon *d, const char *vm, const char *dest, const Godwit__V1__MigrationPolicy *p,
                       bool set_origin, struct gw_job **out, const char **reason, char *why, size_t whylen)
{
    struct gw_vm_rec *rec = gw_vm_find(d, vm);
    if (rec && gw_cluster_vm_busy(d, rec, why, whylen)) {
        *reason = "VM_BUSY";
        return -EBUSY;
    }
    if (!rec || rec->state != GODWIT__V1__VM__STATE__RUNNING || !rec->proc.pid) {
        *reason = "VM_NOT_RUNNING";
        snprintf(why, whylen, "VM %s is not running here", vm);
        return -ESRCH;
    }
    struct gw_job *c;
    if (d->stopping || gw_job_new(d, GODWIT__V1__JOB__KIND__MIGRATE, vm, &c)) {
        *reason = "INTERNAL";
        snprintf(why, whylen, "cannot create the migration job");
        return -ENOMEM;
    }
    snprintf(c->destination, sizeof c->destination, "%s", dest);
    gw_job_set_policy(c, p);
    if (!c->policy.mode) c->policy.mode = GODWIT__V1__MIGRATION_POLICY__MODE__PRECOPY;
    if (set_origin) snprintf(rec->origin_host, sizeof rec->origin_host, "%.63s", d->cfg.hostname);
    gw_job_set_state(c, GODWIT__V1__JOB__STATE__QUEUED, set_origin ? "queued by evacuation" : "queued: return home");
    if (gw_migrate_start(d, c)) {
        snprintf(c->error, sizeof c->error, "cannot start the job thread");
        gw_job_set_state(c, GODWIT__V1__JOB__STATE__FAILED, c->error);
    }
    *out = c;
    return 0;
}

/* Starts s's child migration (lock held). */
static void submit(struct gw_evac *e, struct step *s)
{
    struct gw_daemon *d = e->d;
    struct gw_job *c;
    const char *reason = NULL;
    char why[200];
    if (gw_cluster_migrate(d, s->vm, s->dest, &e->mig, true, &c, &reason, why, sizeof why)) {
        step_end(s, S(FAILED), reason, "%s", why);
        return;
    }
    snprintf(s->job_id, sizeof s->job_id, "%s", c->id);
    s->state = S(RUNNING);
    s->started_ms = gw_unix_ms();
    s->progress_ns = gw_now_ns();
    s->min_remaining = UINT64_MAX;
    snprintf(s->phase, sizeof s->phase, "queued");
    gw_info("job=%s vm=%s: evacuation to %s (%s) as job %s", e->j->id, s->vm, s->dest_host, s->dest, c->id);
}

/* Follows s's child (lock held). Returns true when s changed in a way worth journaling. */
static bool follow(struct gw_evac *e, struct step *s, bool cancelling)
{
    struct gw_job *c = gw_job_find(e->d, s->job_id);
    if (!c) {
        step_end(s, S(FAILED), "INTERNAL", "migration job %s is gone", s->job_id);
        return true;
    }
    snprintf(s->phase, sizeof s->phase, "%s", c->phase);
    s->remaining = c->progress.remaining_bytes;
    s->sent = c->progress.sent_bytes;
    if (c->progress.dirty_rate_bytes_per_s) s->dirty = c->progress.dirty_rate_bytes_per_s;
    s->downtime_ms = c->progress.measured_downtime_ms;
    s->iteration = c->progress.round;
    s->expected_downtime_ms = c->progress.expected_downtime_ms;
    if (gw_job_final(c->state)) {
        /* Moved only once the child let the VM go here (its runner left, the record is
         * gone): "maintenance" means empty. */
        if (c->state == GODWIT__V1__JOB__STATE__SUCCEEDED && c->has_thread) return false;
        if (c->state == GODWIT__V1__JOB__STATE__SUCCEEDED) {
            step_end(s, S(MOVED), NULL, NULL);
            /* The step's time is the migration's (what the estimate predicts), not the
             * runner's exit after it. */
            if (c->finished_ms > s->started_ms) s->finished_ms = c->finished_ms;
        } else if (s->abort_sent && s->reason[0]) {
            step_end(s, S(FAILED), NULL, NULL);   /* the stall detector's reason stands */
        } else if (c->state == GODWIT__V1__JOB__STATE__CANCELLED) {
            step_end(s, S(CANCELLED), "CANCELLED", "%s", c->error);
        } else {
            step_end(s, S(FAILED), strstr(c->error, "timed out") ? "MIGRATION_TIMEOUT" : "MIGRATION_FAILED",
                     "%s", c->error);
        }
        return true;
    }
    bool postcopy = strstr(s->phase, "postcopy") != NULL;
    if (cancelling && !s->abort_sent && !postcopy) {
        gw_migrate_cancel(e->d, c);
        s->abort_sent = true;
        return false;
    }
    /* Stall detector, from the first progress report on (a child queued behind
     * max_migrations or setting up is not stalling). Not converging: the runner reports the
     * remaining (dirty) bytes and the bytes sent at each round's end, and a round ends without
     * a new minimum stall_timeout_s after the last one. Judged at round boundaries only, so
     * that one long round of a converging VM is not taken for a stall. Stuck: no round ended
     * for 10 x stall_timeout_s (a link or a peer that hangs; rounds are far shorter). */
    uint64_t now = gw_now_ns(), limit = (uint64_t)e->pol.stall_timeout_s * 1000000000ull;
    if (c->state != GODWIT__V1__JOB__STATE__RUNNING || !c->progress.total_bytes) {
        s->progress_ns = s->sent_ns = now;
        return false;
    }
    if (s->sent > s->last_sent || !s->sent_ns) { s->last_sent = s->sent; s->sent_ns = now; }
    bool boundary = c->progress.round != s->round;
    s->round = c->progress.round;
    const char *why = NULL;
    if (boundary && s->round >= 1) {
        if (s->remaining < s->min_remaining) { s->min_remaining = s->remaining; s->progress_ns = now; }
        else if (now - s->progress_ns > limit) why = "remaining bytes not falling";
    }
    if (!why && now - s->sent_ns > 10 * limit) why = "no round ended";
    if (why && !s->abort_sent && !postcopy) {
        snprintf(s->reason, sizeof s->reason, "MIGRATION_NOT_CONVERGING");
        snprintf(s->error, sizeof s->error, "stalled: %s for %u s (%llu MiB left at round %u, dirty rate %llu MiB/s)",
                 why, e->pol.stall_timeout_s, (unsigned long long)(s->remaining >> 20), s->round,
                 (unsigned long long)(s->dirty >> 20));
        gw_warn("job=%s vm=%s: %s", e->j->id, s->vm, s->error);
        gw_migrate_cancel(e->d, c);
        s->abort_sent = true;
        return true;
    }
    return false;
}

/* A step that was running when the previous daemon died (lock held; dropped to read the
 * registry). Settled as moved when the destination holds the VM, else pending again when
 * the VM runs here untouched; else wait. Returns true once settled. */
static bool settle(struct gw_evac *e, struct step *s, uint64_t resumed_ns)
{
    struct gw_daemon *d = e->d;
    char vm[sizeof s->vm], dest_host[sizeof s->dest_host];
    memcpy(vm, s->vm, sizeof vm);
    memcpy(dest_host, s->dest_host, sizeof dest_host);
    pthread_mutex_unlock(&d->lock);
    Godwit__V1__ClusterHost **hosts;
    size_t n;
    bool there = false;
    if (!gw_cluster_hosts(d, &hosts, &n)) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(hosts[i]->name, dest_host)) continue;
            for (size_t k = 0; k < hosts[i]->n_vms; k++)
                there |= !strcmp(hosts[i]->vms[k]->name, vm) &&
                         hosts[i]->vms[k]->state == GODWIT__V1__VM__STATE__RUNNING;
        }
        gw_cluster_hosts_free(hosts, n);
    }
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, vm);
    if (there) {
        step_end(s, S(MOVED), NULL, NULL);
        gw_info("job=%s vm=%s: found on %s after the restart: moved", e->j->id, vm, dest_host);
    } else if (rec && rec->state == GODWIT__V1__VM__STATE__RUNNING && !rec->busy && rec->proc.pid &&
               gw_now_ns() - resumed_ns > (uint64_t)SETTLE_MS * 1000000) {
        /* Not on the destination after several heartbeats, and running here untouched: the
         * interrupted attempt did not take it. */
        s->state = S(PENDING);
        s->job_id[0] = 0;
        gw_info("job=%s vm=%s: still here after the restart: queued again", e->j->id, vm);
    } else if (!rec && gw_now_ns() - resumed_ns > (uint64_t)SETTLE_MS * 1000000) {
        step_end(s, S(FAILED), "IN_DOUBT", "VM %s is neither here nor on %s after the restart", vm, dest_host);
    } else {
        return false;
    }
    s->settling = false;
    return true;
}

static void finish(struct gw_evac *e, bool cancelled)
{
    struct gw_daemon *d = e->d;
    struct gw_job *j = e->j;
    size_t moved = 0, failed = 0;
    const struct step *first_fail = NULL;
    for (size_t i = 0; i < e->n; i++) {
        moved += e->steps[i].state == S(MOVED);
        if (e->steps[i].state == S(FAILED)) { failed++; if (!first_fail) first_fail = &e->steps[i]; }
    }
    if (cancelled) {
        gw_cluster_set_state(d, GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE);
        snprintf(j->error, sizeof j->error, "cancelled: %zu of %zu VMs moved, the rest stay on %s", moved, e->n,
                 d->cfg.hostname);
        snprintf(e->reason, sizeof e->reason, "CANCELLED");
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__CANCELLED, j->error);
        return;
    }
    if (!failed && moved == e->n) {
        gw_cluster_set_state(d, GODWIT__V1__CLUSTER_HOST__STATE__MAINTENANCE);
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__SUCCEEDED, "host drained: maintenance");
        return;
    }
    /* The host stays draining: the operator decides (cancel, retry, or exit maintenance). */
    snprintf(j->error, sizeof j->error, "%zu of %zu VMs could not move; first: %s: %s", failed, e->n,
             first_fail ? first_fail->vm : "?", first_fail ? first_fail->error : "?");
    snprintf(e->reason, sizeof e->reason, "%s", first_fail && first_fail->reason[0] ? first_fail->reason
                                                                                   : "MIGRATION_FAILED");
    gw_job_set_state(j, GODWIT__V1__JOB__STATE__FAILED, j->error);
}

static void *evac_main(void *arg)
{
    struct gw_evac *e = arg;
    struct gw_daemon *d = e->d;
    struct gw_job *j = e->j;
    uint64_t resumed_ns = gw_now_ns();
    pthread_mutex_lock(&d->lock);
    if (j->state == GODWIT__V1__JOB__STATE__QUEUED) gw_job_set_state(j, GODWIT__V1__JOB__STATE__RUNNING, "evacuating");
    bool cancelling = false;
    for (;;) {
        if (d->stopping) goto out;   /* the journal holds the rest: the next daemon resumes */
        bool changed = false, all_final = true;
        if (j->cancel && !cancelling) {
            cancelling = true;
            changed = true;
            gw_info("job=%s: evacuation cancelled: no more VMs leave", j->id);
            for (size_t i = 0; i < e->n; i++)
                if (e->steps[i].state == S(PENDING))
                    step_end(&e->steps[i], S(CANCELLED), "CANCELLED", "evacuation cancelled before it moved");
        }
        unsigned running = 0;
        for (size_t i = 0; i < e->n; i++) {
            struct step *s = &e->steps[i];
            if (s->state == S(RUNNING) && s->settling) changed |= settle(e, s, resumed_ns);
            else if (s->state == S(RUNNING)) changed |= follow(e, s, cancelling);
            if (s->state == S(RUNNING)) running++;
        }
        /* Schedule in plan order within the caps; a step over a cap waits, later ones whose
         * destination has room may pass it. */
        for (size_t i = 0; i < e->n && !cancelling && running < e->pol.max_outbound; i++) {
            struct step *s = &e->steps[i];
            if (s->state != S(PENDING)) continue;
            unsigned inbound = 0;
            for (size_t k = 0; k < e->n; k++)
                inbound += e->steps[k].state == S(RUNNING) && !strcmp(e->steps[k].dest_host, s->dest_host);
            if (inbound >= e->pol.max_inbound) continue;
            submit(e, s);
            changed = true;
            if (s->state == S(RUNNING)) running++;
        }
        if (running > e->max_concurrent) e->max_concurrent = running;
        for (size_t i = 0; i < e->n; i++) all_final &= step_final(e->steps[i].state);
        if (changed) gw_job_persist(j);
        gw_job_progress(j, NULL);
        if (all_final) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += GW_EVAC_POLL_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    }
    gw_info("job=%s: evacuation over, at most %u migrations at once (cap %u)", j->id, e->max_concurrent,
            e->pol.max_outbound);
    finish(e, cancelling);
out:
    j->has_thread = false;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

static int start_thread(struct gw_job *j)
{
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &at, evac_main, j->evac);
    pthread_attr_destroy(&at);
    if (r) return -r;
    j->thread = t;
    j->has_thread = true;
    return 0;
}

size_t gw_evac_last_moved(struct gw_daemon *d, struct gw_evac_moved *out, size_t cap)
{
    for (struct gw_job *j = d->jobs; j; j = j->next) {
        if (!j->evac || !gw_job_final(j->state)) continue;
        size_t n = 0;
        for (size_t i = 0; i < j->evac->n && n < cap; i++) {
            const struct step *s = &j->evac->steps[i];
            if (s->state != S(MOVED)) continue;
            snprintf(out[n].vm, sizeof out[n].vm, "%s", s->vm);
            snprintf(out[n].dest, sizeof out[n].dest, "%s", s->dest);
            n++;
        }
        return n;   /* the newest one only */
    }
    return 0;
}

void gw_evac_count_states(struct gw_daemon *d, unsigned counts[6])
{
    for (struct gw_job *j = d->jobs; j; j = j->next) {
        if (!j->evac) continue;
        for (size_t i = 0; i < j->evac->n; i++)
            if (j->evac->steps[i].state >= 0 && j->evac->steps[i].state < 6) counts[j->evac->steps[i].state]++;
        return;
    }
}

struct gw_job *gw_evac_by_request(struct gw_daemon *d, const char *request_id)
{
    if (!request_id || !request_id[0]) return NULL;
    for (struct gw_job *j = d->jobs; j; j = j->next)
        if (j->evac && !strcmp(j->evac->request_id, request_id)) return j;
    return NULL;
}

int gw_evac_start(struct gw_daemon *d, const Godwit__V1__EvacuationPolicy *p, const char *request_id,
                  const struct gw_plan_in *in, const struct gw_plan_step *steps, struct gw_job **out)
{
    if (in->n_vms > GW_EVAC_MAX_VMS) return -E2BIG;
    struct gw_job *j;
    int r = gw_job_new(d, GODWIT__V1__JOB__KIND__EVACUATE, "", &j);
    if (r) return r;
    struct gw_evac *e;
    if ((r = evac_alloc(d, j, in->n_vms, &e))) {
        snprintf(j->error, sizeof j->error, "out of memory");
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__FAILED, j->error);
        return r;
    }
    take_policy(e, p);
    snprintf(e->request_id, sizeof e->request_id, "%s", request_id ? request_id : "");
    for (size_t i = 0; i < in->n_vms; i++) {
        const struct gw_plan_vm *v = &in->vms[steps[i].vm];
        const Godwit__V1__ClusterHost *h = in->hosts[steps[i].host];
        struct step *s = &e->steps[i];
        snprintf(s->vm, sizeof s->vm, "%s", v->name);
        snprintf(s->dest_host, sizeof s->dest_host, "%s", h->name);
        snprintf(s->dest, sizeof s->dest, "%s", h->api_address);
        s->memory = v->memory_bytes;
        s->priority = v->priority;
        s->dirty = v->dirty_rate;
        s->est_bytes = steps[i].est_bytes;
        s->est_ms = steps[i].est_ms;
        s->state = S(PENDING);
        snprintf(s->phase, sizeof s->phase, "pending");
    }
    j->evac = e;
    snprintf(j->destination, sizeof j->destination, "%s", d->cfg.hostname);   /* the host being drained */
    gw_cluster_set_state(d, GODWIT__V1__CLUSTER_HOST__STATE__DRAINING);
    gw_info("job=%s: evacuating %s: %zu VMs, at most %u at once, %u per destination", j->id, d->cfg.hostname,
            e->n, e->pol.max_outbound, e->pol.max_inbound);
    gw_job_set_state(j, GODWIT__V1__JOB__STATE__QUEUED, "evacuation planned");
    if ((r = start_thread(j))) {
        snprintf(j->error, sizeof j->error, "cannot start the job thread");
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__FAILED, j->error);
        gw_cluster_set_state(d, GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE);
        return r;
    }
    *out = j;
    return 0;
}

void gw_evac_resume_all(struct gw_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    for (struct gw_job *j = d->jobs; j; j = j->next) {
        if (!j->evac || gw_job_final(j->state) || j->has_thread) continue;
        gw_info("job=%s: resuming the evacuation from its journal", j->id);
        if (start_thread(j)) {
            snprintf(j->error, sizeof j->error, "cannot resume: no thread");
            gw_job_set_state(j, GODWIT__V1__JOB__STATE__FAILED, j->error);
        }
    }
    pthread_mutex_unlock(&d->lock);
}
