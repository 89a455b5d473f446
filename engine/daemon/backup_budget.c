/* The cluster-wide backup budgets of godwitd's targets (see backup_budget.h). */
#include "engine/daemon/backup_budget.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/backup.h"
#include "engine/common/log.h"
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "storage/lease.h"
#include "storage/throttle.h"

#define BUDGET_LEASE "backup-budget"
#define BUDGET_LEASE_S 10u           /* a crashed host's share expires after this (rados) */
#define BUDGET_TICK_MS 1000          /* how soon shares follow hosts coming and going */

/* One target's budget on this host (index: the target's in the config). */
struct tb {
    unsigned users;                  /* this host's backups into it now */
    struct gw_backup_target tg;      /* open while users > 0 */
    struct gw_lease *lease;          /* this host's share, held while users > 0 */
    uint64_t share;                  /* bytes/s, the bucket file's rate */
    unsigned hosts;
};

struct gw_budget {
    pthread_t thread;
    pthread_mutex_t mu;              /* the table; held across store calls (short, bounded) */
    pthread_cond_t cond;             /* CLOCK_MONOTONIC */
    bool stop;
    struct tb t[GW_CFG_MAX_BACKUP_TARGETS];
};

static void path_of(const struct gw_daemon *d, const struct gw_backup_target_cfg *t, char *out, size_t cap)
{
    snprintf(out, cap, "%s/backup-%s.cluster.bucket", d->cfg.state_dir, t->name);
}

static int count_one(const char *cookie, void *ctx)
{
    (void)cookie;
    (*(unsigned *)ctx)++;
    return 0;
}

uint64_t gw_budget_share(uint64_t rate, unsigned holders)
{
    /* Holders beyond a cluster's hosts are not hosts (anyone who can write the store can add
     * lock holders), and a share of 0 would read as "unlimited" (throttle.h). */
    if (holders > GW_CLUSTER_MAX_HOSTS) holders = GW_CLUSTER_MAX_HOSTS;
    uint64_t share = rate / (holders ? holders : 1);
    return share ? share : 1;
}

/* This host's share of t from the lease's live holders, into its bucket file (mu held). A
 * failed look keeps the last share: it errs on the side of the last known division. */
static void redivide(struct gw_daemon *d, const struct gw_backup_target_cfg *t, struct tb *b)
{
    unsigned n = 0;
    if (gw_lease_holders(b->tg.store, BUDGET_LEASE, count_one, &n) < 0 || !n) {
        if (!b->share) n = 1;        /* the first look failed: assume alone until the next */
        else return;
    }
    uint64_t share = gw_budget_share(t->cluster_rate, n);
    if (share == b->share && n == b->hosts) return;
    char path[GW_BUDGET_PATH_MAX], err[256];
    path_of(d, t, path, sizeof path);
    if (gw_throttle_shared_set(path, (double)share, 0, err, sizeof err)) {
        gw_warn("backup budget of %s: %s", t->name, err);
        return;
    }
    gw_info("backup budget of %s: %u host(s) back up into it, this host's share %llu KiB/s", t->name, n,
            (unsigned long long)(share >> 10));
    b->share = share;
    b->hosts = n;
}

/* Renews nothing itself (the lease's keeper thread does); re-takes a lost lease. */
static void *budget_main(void *arg)
{
    struct gw_daemon *d = arg;
    struct gw_budget *g = d->budget;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        for (unsigned i = 0; i < d->cfg.n_backup_targets; i++) {
            struct tb *b = &g->t[i];
            const struct gw_backup_target_cfg *t = &d->cfg.backup_targets[i];
            if (!b->users) continue;
            if (!b->lease || !gw_lease_valid(b->lease, 0)) {
                char err[256];
                gw_lease_release(b->lease);
                b->lease = NULL;
                if (gw_lease_acquire(b->tg.store, BUDGET_LEASE, d->cfg.hostname, false, BUDGET_LEASE_S, true, &b->lease,
                                     err, sizeof err))
                    gw_warn("backup budget of %s: its lease was lost and cannot be taken again: %s", t->name, err);
            }
            redivide(d, t, b);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += BUDGET_TICK_MS / 1000;
        if (!g->stop) pthread_cond_timedwait(&g->cond, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int gw_budget_start(struct gw_daemon *d)
{
    struct gw_budget *g = calloc(1, sizeof *g);
    if (!g) return -ENOMEM;
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    d->budget = g;
    int r = pthread_create(&g->thread, NULL, budget_main, d);
    if (r) {
        d->budget = NULL;
        pthread_cond_destroy(&g->cond);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return -r;
    }
    return 0;
}

static void drop(struct tb *b)
{
    gw_lease_release(b->lease);
    b->lease = NULL;
    gw_backup_target_close(&b->tg);
    b->users = 0;
    b->share = 0;
    b->hosts = 0;
}

void gw_budget_stop(struct gw_daemon *d)
{
    struct gw_budget *g = d->budget;
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    for (unsigned i = 0; i < GW_CFG_MAX_BACKUP_TARGETS; i++)
        if (g->t[i].users) drop(&g->t[i]);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->mu);
    free(g);
    d->budget = NULL;
}

int gw_budget_join(struct gw_daemon *d, const struct gw_backup_target_cfg *t, char *path, size_t cap, uint64_t *rate,
                   char *err, size_t errlen)
{
    path[0] = 0;
    *rate = 0;
    struct gw_budget *g = d->budget;
    if (!t->cluster_rate || !g) return 0;
    size_t i = (size_t)(t - d->cfg.backup_targets);   /* t is one of the config's */
    if (i >= d->cfg.n_backup_targets || cap < GW_BUDGET_PATH_MAX) { snprintf(err, errlen, "bad target"); return -EINVAL; }
    struct tb *b = &g->t[i];
    int r = 0;
    pthread_mutex_lock(&g->mu);
    if (!b->users) {
        Godwit__V1__StoreSpec spec;
        gw_bkjob_spec(t, &spec);
        r = gw_backup_target_open(&spec, &b->tg, err, errlen);
        if (!r && (r = gw_lease_acquire(b->tg.store, BUDGET_LEASE, d->cfg.hostname, false, BUDGET_LEASE_S, true,
                                        &b->lease, err, errlen)))
            gw_backup_target_close(&b->tg);
        if (!r) redivide(d, t, b);   /* with this host counted: its share before its first write */
    }
    if (!r) {
        b->users++;
        *rate = b->share;
        path_of(d, t, path, cap);
    }
    pthread_mutex_unlock(&g->mu);
    return r;
}

void gw_budget_leave(struct gw_daemon *d, const struct gw_backup_target_cfg *t)
{
    struct gw_budget *g = d->budget;
    if (!t->cluster_rate || !g) return;
    size_t i = (size_t)(t - d->cfg.backup_targets);
    if (i >= d->cfg.n_backup_targets) return;
    pthread_mutex_lock(&g->mu);
    struct tb *b = &g->t[i];
    if (b->users && !--b->users) drop(b);   /* the others' shares grow at their next look */
    pthread_mutex_unlock(&g->mu);
}
