/* The backup scheduler thread of godwitd (see backup_sched.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "backup/prune.h"
#include "backup/slots.h"
#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/backup_sched.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/daemon/labels.h"

#define SLOT_LEASE_S 60u            /* a crashed daemon's slots come free after this (rados) */

/* One scheduled backup under way: its job, and the slots and store it holds until it ends. */
struct run {
    char vm[64];
    char job[40];
    int64_t created;                /* its policy's identity (gw_policy.created) */
    struct gw_policy pol;
    struct gw_backup_target tg;
    struct gw_backup_slots slots;
    char cookie[96];                /* the slots' lease cookie */
    uint64_t retake_ns;             /* lost slots: the next try to take them again */
    bool slots_lost;
};

/* Time zones as the scheduler thread last loaded them: every policy is looked at four times a
 * second, and loading its zone file each time was most of what an idle daemon with 1,024
 * policies spent (docs/backups.md). Reloaded after TZ_CACHE_S, so a tzdata update is seen. */
#define TZ_CACHE_N 16u
#define TZ_CACHE_S 600
struct tz_entry {
    char name[GW_TZ_NAME_MAX + 1];
    struct gw_tz *tz;
    int64_t loaded_mono_s;
};

struct gw_sched {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;            /* CLOCK_MONOTONIC */
    bool stop;
    struct run *runs;               /* max_backups of them */
    unsigned n_runs;
    struct tz_entry tzc[TZ_CACHE_N];   /* the scheduler thread's only */
    unsigned tz_next;                  /* the entry the next new zone replaces */
};

int64_t gw_sched_now(const struct gw_daemon *d)
{
#ifdef GODWIT_TEST_HOOKS
    if (d->cfg.test_clock_file[0]) {
        char buf[32], *end;
        if (gw_read_small_file(d->cfg.test_clock_file, buf, sizeof buf) > 0) {
            long long v = strtoll(buf, &end, 10);
            if (end != buf && v > 0) return v;
        }
    }
#else
    (void)d;
#endif
    return (int64_t)time(NULL);
}

/* The policy's cron and zone (tz NULL = UTC; free it). */
static int compile(const struct gw_policy *p, struct gw_cron *c, struct gw_tz **tz, char *err, size_t errlen)
{
    *tz = NULL;
    int r = gw_cron_parse(p->schedule, c, err, errlen);
    if (!r && p->tz[0]) r = gw_tz_load(p->tz, tz, err, errlen);
    return r;
}

/* compile() for the scheduler thread: the zone from its cache (owned by it, not freed by the
 * caller). */
static int compile_cached(struct gw_sched *s, const struct gw_policy *p, struct gw_cron *c, const struct gw_tz **tz,
                          char *err, size_t errlen)
{
    *tz = NULL;
    int r = gw_cron_parse(p->schedule, c, err, errlen);
    if (r || !p->tz[0]) return r;
    int64_t now = (int64_t)(gw_now_ns() / 1000000000ull);
    for (unsigned i = 0; i < TZ_CACHE_N; i++) {
        struct tz_entry *e = &s->tzc[i];
        if (e->tz && !strcmp(e->name, p->tz) && now - e->loaded_mono_s < TZ_CACHE_S) { *tz = e->tz; return 0; }
    }
    struct gw_tz *fresh = NULL;
    if ((r = gw_tz_load(p->tz, &fresh, err, errlen))) return r;
    unsigned slot = s->tz_next;
    for (unsigned i = 0; i < TZ_CACHE_N; i++)   /* an expired entry of the same zone first */
        if (s->tzc[i].tz && !strcmp(s->tzc[i].name, p->tz)) slot = i;
    if (slot == s->tz_next) s->tz_next = (s->tz_next + 1) % TZ_CACHE_N;
    struct tz_entry *e = &s->tzc[slot];
    gw_tz_free(e->tz);
    snprintf(e->name, sizeof e->name, "%s", p->tz);
    e->tz = fresh;
    e->loaded_mono_s = now;
    *tz = fresh;
    return 0;
}

/* The first fire is the first after the policy was set; later ones follow its last run. */
static int64_t base_of(const struct gw_policy *p)
{
    return p->last_fire ? p->last_fire : p->created;
}

/* p's next start from its compiled schedule. */
static int next_start(const struct gw_policy *p, const struct gw_cron *c, const struct gw_tz *tz, int64_t *start,
                      char *err, size_t errlen)
{
    int64_t fire, after;
    if (gw_cron_next(c, tz, base_of(p), &fire)) {
        snprintf(err, errlen, "the schedule never fires");
        return -ERANGE;
    }
    /* The start window ends before the next fire: a start pushed past it would take that
     * fire's run too (the latest fire up to the start is the one run), and an hourly policy
     * with 3 h of jitter ran 11 times a day instead of 24. */
    unsigned window = p->jitter_s;
    if (window && !gw_cron_next(c, tz, fire, &after) && after - fire <= (int64_t)window)
        window = (unsigned)(after - fire - 1);
    *start = gw_cron_jitter(fire, window, p->vm);
    return 0;
}

int gw_sched_next(const struct gw_policy *p, int64_t *start, char *err, size_t errlen)
{
    struct gw_cron c;
    struct gw_tz *tz;
    int r = compile(p, &c, &tz, err, errlen);
    if (!r) r = next_start(p, &c, tz, start, err, errlen);
    gw_tz_free(tz);
    return r;
}

/* Prunes the VM's backups after a successful run (keep-rules set). */
static void prune(struct gw_daemon *d, struct run *ru)
{
    const struct gw_keep none = {0};
    if (!memcmp(&ru->pol.keep, &none, sizeof none)) return;
    struct gw_tz *tz = NULL;
    char err[512];
    struct gw_prune_stats st;
    int r = ru->pol.tz[0] ? gw_tz_load(ru->pol.tz, &tz, err, sizeof err) : 0;
    if (!r) r = gw_backup_prune(&ru->tg, ru->vm, &ru->pol.keep, tz, false, NULL, NULL, &st, err, sizeof err);
    gw_tz_free(tz);
    if (r) {
        gw_warn("vm=%s: pruning its backups in %s: %s", ru->vm, ru->pol.target, err);
        char why[300];
        snprintf(why, sizeof why, "prune: %.280s", err);
        gw_policy_record_run(d, ru->vm, ru->pol.label, ru->created, 0, NULL, why);
        return;
    }
    gw_info("vm=%s: pruned its backups in %s: %llu kept, %llu removed", ru->vm, ru->pol.target,
            (unsigned long long)st.kept, (unsigned long long)st.removed);
    (void)d;
}

/* A running backup whose slot leases were lost (Ceph out of reach for longer than a lease, or
 * the lock broken) takes slots again before its place can count as free to another host.
 * When the limits are full by then, it is cancelled: the limits hold, not the backup. A try
 * waits for Ceph, so one is made at most every 5 s. */
static void keep_slots(struct gw_daemon *d, struct run *ru)
{
    if (gw_backup_slots_held(&ru->slots)) return;
    uint64_t now = gw_now_ns();
    if (!ru->slots_lost) gw_warn("vm=%s: job %s: its backup slots were lost; taking them again", ru->vm, ru->job);
    ru->slots_lost = true;
    if (now < ru->retake_ns) return;
    ru->retake_ns = now + 5000000000ull;
    char err[512];
    gw_backup_slots_release(&ru->slots);   /* first: the same cookie must not unlock what is taken next */
    int r = gw_backup_slots_take(ru->tg.store, d->cfg.hostname, d->cfg.max_backups, d->cfg.cluster_max_backups,
                                 ru->cookie, SLOT_LEASE_S, &ru->slots, err, sizeof err);
    if (!r) {
        gw_info("vm=%s: job %s: backup slots taken again", ru->vm, ru->job);
        ru->slots_lost = false;
        return;
    }
    if (r != -EBUSY) return;   /* Ceph still out of reach: the next try */
    gw_warn("vm=%s: job %s: its backup slots were lost and %s: cancelling it", ru->vm, ru->job, err);
    pthread_mutex_lock(&d->lock);
    struct gw_job *j = gw_job_find(d, ru->job);
    if (j && !gw_job_final(j->state)) gw_migrate_cancel(d, j);
    pthread_mutex_unlock(&d->lock);
}

/* Ends the runs whose job has ended: slots back, prune after a success. Keeps the slots of
 * the others. */
static void reap(struct gw_daemon *d, struct gw_sched *s)
{
    for (unsigned i = 0; i < s->n_runs;) {
        struct run *ru = &s->runs[i];
        pthread_mutex_lock(&d->lock);
        struct gw_job *j = gw_job_find(d, ru->job);
        bool done = !j || gw_job_final(j->state);
        bool ok = j && j->state == GODWIT__V1__JOB__STATE__SUCCEEDED;
        char error[256] = "";
        if (done && !ok) snprintf(error, sizeof error, "job %s: %.200s", ru->job, j ? j->error : "gone");
        pthread_mutex_unlock(&d->lock);
        if (!done) { keep_slots(d, ru); i++; continue; }
        gw_backup_slots_release(&ru->slots);
        if (ok) prune(d, ru);
        else {
            gw_warn("vm=%s: scheduled backup failed: %s", ru->vm, error);
            gw_policy_record_run(d, ru->vm, ru->pol.label, ru->created, 0, NULL, error);
        }
        gw_backup_target_close(&ru->tg);
        s->runs[i] = s->runs[--s->n_runs];
    }
}

static bool running(const struct gw_sched *s, const char *vm)
{
    for (unsigned i = 0; i < s->n_runs; i++)
        if (!strcmp(s->runs[i].vm, vm)) return true;
    return false;
}

/* Starts p's backup if it is due, its VM runs here and a slot is free. */
static void maybe_start(struct gw_daemon *d, struct gw_sched *s, const struct gw_policy *p, int64_t now)
{
    char err[512];
    int64_t start, fire;
    struct gw_cron c;
    const struct gw_tz *tz;
    if (compile_cached(s, p, &c, &tz, err, sizeof err)) return;
    int r = next_start(p, &c, tz, &start, err, sizeof err);
    /* The cheap checks first: a policy whose VM is away waits here every tick, for as long as
     * it stays away. */
    bool here = false;
    if (!r && start <= now) {
        pthread_mutex_lock(&d->lock);
        struct gw_vm_rec *rec = gw_vm_find(d, p->vm);
        here = rec && rec->state == GODWIT__V1__VM__STATE__RUNNING && rec->ready && !rec->busy && !rec->incoming &&
               !rec->migrating_out;
        pthread_mutex_unlock(&d->lock);
    }
    /* Not due, not (yet) running here, or busy: wait (the missed run stays one), as when no
     * host slot is free. The latest fire up to now: a run for it covers every fire missed
     * before (run once). */
    bool go = here && s->n_runs < d->cfg.max_backups && !gw_cron_missed(&c, tz, base_of(p), now, &fire);
    if (!go) return;
    const struct gw_backup_target_cfg *t = gw_config_backup_target(&d->cfg, p->target);
    if (!t) return;
    struct run ru = {.created = p->created, .pol = *p};
    snprintf(ru.vm, sizeof ru.vm, "%s", p->vm);
    Godwit__V1__StoreSpec spec;
    gw_bkjob_spec(t, &spec);
    if ((r = gw_backup_target_open(&spec, &ru.tg, err, sizeof err))) {
        gw_warn("vm=%s: scheduled backup waits: target %s: %s", p->vm, t->name, err);
        return;
    }
    snprintf(ru.cookie, sizeof ru.cookie, "sched-%s-%lld", p->vm, (long long)fire);
    r = gw_backup_slots_take(ru.tg.store, d->cfg.hostname, d->cfg.max_backups, d->cfg.cluster_max_backups, ru.cookie,
                             SLOT_LEASE_S, &ru.slots, err, sizeof err);
    if (r) {
        if (r != -EBUSY) gw_warn("vm=%s: scheduled backup waits: slots: %s", p->vm, err);
        gw_backup_target_close(&ru.tg);
        return;
    }
    struct gw_job *j = NULL;
    const char *reason = NULL;   /* the API's ErrorInfo reason; err says the same in words */
    pthread_mutex_lock(&d->lock);
    int code = gw_bkjob_backup(d, p->vm, t, "", p->method, "", &p->thr, &j, &reason, err, sizeof err);
    if (!code) snprintf(ru.job, sizeof ru.job, "%s", j->id);
    pthread_mutex_unlock(&d->lock);
    gw_db_flush(d->db);
    if (code) {
        gw_backup_slots_release(&ru.slots);
        gw_backup_target_close(&ru.tg);
        /* The VM changed state since the look above (busy, migrating, stopped), or the daemon
         * is stopping: the next tick (or daemon) decides again; the fire is not used up. */
        if (code == GW_GRPC_FAILED_PRECONDITION || code == GW_GRPC_UNAVAILABLE) return;
        gw_warn("vm=%s: scheduled backup not started: %s", p->vm, err);
        gw_policy_record_run(d, p->vm, p->label, p->created, fire, NULL, err);
        return;
    }
    gw_info("vm=%s: scheduled backup (fire %lld) started as job %s", p->vm, (long long)fire, ru.job);
    gw_policy_record_run(d, p->vm, p->label, p->created, fire, ru.job, NULL);
    s->runs[s->n_runs++] = ru;
}

/* A VM here that carries labels, for the label policies. */
struct here {
    char name[64];
    char labels[GW_LIMIT_LABELS_BUF];
    bool taken;                     /* by its own policy or an earlier label policy */
};

/* The label policies of v (in their selectors' order) for the VMs here that carry their
 * label and have no policy of their own: a VM's own policy wins, and a VM that several label
 * policies select follows the first. Each VM's run of a label policy keeps its own history
 * (its run record), so its missed runs run once and a slow VM does not hold the others up. */
static void run_label_policies(struct gw_daemon *d, struct gw_sched *s, const struct gw_policy *v, unsigned n,
                               int64_t now)
{
    unsigned nh = 0, cap = 0;
    pthread_mutex_lock(&d->lock);   /* copied: maybe_start takes the lock itself */
    for (struct gw_vm_rec *r = d->vms; r; r = r->next) cap += r->labels[0] != 0;
    struct here *h = cap ? calloc(cap, sizeof *h) : NULL;
    for (struct gw_vm_rec *r = d->vms; h && r; r = r->next) {
        if (!r->labels[0]) continue;
        snprintf(h[nh].name, sizeof h[nh].name, "%s", r->name);
        snprintf(h[nh].labels, sizeof h[nh].labels, "%s", r->labels);
        nh++;
    }
    pthread_mutex_unlock(&d->lock);
    if (!h) return;
    for (unsigned k = 0; k < nh; k++)
        for (unsigned i = 0; i < n && !h[k].taken; i++)
            h[k].taken = !v[i].label[0] && !strcmp(v[i].vm, h[k].name);
    for (unsigned i = 0; i < n; i++) {
        const struct gw_policy *lp = &v[i];
        if (!lp->label[0] || lp->run_record) continue;
        for (unsigned k = 0; k < nh; k++) {
            if (h[k].taken || !gw_labels_match(h[k].labels, lp->label)) continue;
            h[k].taken = true;
            if (lp->invalid || running(s, h[k].name)) continue;
            struct gw_policy e = *lp;   /* this VM's run of it, with its own history */
            snprintf(e.vm, sizeof e.vm, "%s", h[k].name);
            e.last_fire = 0;
            for (unsigned r = 0; r < n; r++)
                if (v[r].run_record && v[r].created == lp->created && !strcmp(v[r].vm, e.vm) &&
                    !strcmp(v[r].label, lp->label))
                    e.last_fire = v[r].last_fire;
            maybe_start(d, s, &e, now);
        }
    }
    free(h);
}

static void *sched_main(void *arg)
{
    struct gw_daemon *d = arg;
    struct gw_sched *s = d->sched;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        reap(d, s);
        struct gw_policy *v = NULL;
        unsigned n = 0;
        if (!gw_policy_load_all(d, &v, &n)) {
            int64_t now = gw_sched_now(d);
            bool labels = false;
            for (unsigned i = 0; i < n; i++) {
                labels |= v[i].label[0] != 0;
                if (!v[i].invalid && !v[i].label[0] && !running(s, v[i].vm)) maybe_start(d, s, &v[i], now);
            }
            if (labels) run_label_policies(d, s, v, n, now);
            free(v);
        }
        pthread_mutex_lock(&s->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)GW_SCHED_TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        if (!s->stop) pthread_cond_timedwait(&s->cond, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int gw_sched_start(struct gw_daemon *d)
{
    struct gw_sched *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->runs = calloc(d->cfg.max_backups ? d->cfg.max_backups : 1, sizeof *s->runs);
    if (!s->runs) { free(s); return -ENOMEM; }
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    d->sched = s;
    int r = pthread_create(&s->thread, NULL, sched_main, d);
    if (r) {
        d->sched = NULL;
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->mu);
        free(s->runs);
        free(s);
        return -r;
    }
    return 0;
}

/* Stops the thread; runs under way keep their jobs (the job shutdown ends them), their slots
 * and stores are released here. */
void gw_sched_stop(struct gw_daemon *d)
{
    struct gw_sched *s = d->sched;
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    for (unsigned i = 0; i < s->n_runs; i++) {
        gw_backup_slots_release(&s->runs[i].slots);
        gw_backup_target_close(&s->runs[i].tg);
    }
    for (unsigned i = 0; i < TZ_CACHE_N; i++) gw_tz_free(s->tzc[i].tz);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s->runs);
    free(s);
    d->sched = NULL;
}
