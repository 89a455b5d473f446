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
 * no share. One backup alone gets the whole budget; n of them split it by what they write.
 * A target's cluster budget (backup_budget.h) is a second bucket of the same kind, whose rate
 * the daemon keeps at this host's share. */
#include <stdio.h>
#include <string.h>

#include "engine/common/util.h"
#include "engine/daemon/backup_budget.h"
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/daemon.h"

int gw_bkjob_throttle(struct gw_daemon *d, const struct gw_backup_target_cfg *t, const struct gw_bkjob *b,
                      Godwit__V1__RunnerBackupRequest *br, struct gw_bk_buckets *bk, char *err, size_t errlen)
{
    const struct gw_daemon_config *cfg = &d->cfg;
    bool adaptive = b->thr.adaptive < 0 ? cfg->backup_adaptive != 0 : b->thr.adaptive != 0;
    br->rate = b->thr.rate;
    br->ops = b->thr.ops;
    /* Not adaptive: the backup's own limits as given ("fixed"), or none ("off"); the host
     * budget holds either way. */
    br->throttle = adaptive ? "adaptive" : b->thr.rate || b->thr.ops ? "fixed" : "off";
    if (adaptive) br->vm_latency_target_pct = cfg->backup_vm_latency_target;
    if ((cfg->backup_host_rate || cfg->backup_host_ops) &&
        snprintf(bk->host, sizeof bk->host, "%s/backup-host.bucket", cfg->state_dir) < (int)sizeof bk->host) {
        br->host_throttle_path = bk->host;
        br->host_rate = cfg->backup_host_rate;
        br->host_ops = cfg->backup_host_ops;
    }
    /* The target's cluster budget: this host's share (backup_budget.h). */
    uint64_t share = 0;
    int r = gw_budget_join(d, t, bk->cluster, sizeof bk->cluster, &share, err, errlen);
    if (r) return r;
    if (bk->cluster[0]) {
        br->cluster_throttle_path = bk->cluster;
        br->cluster_rate = share;
    }
    return 0;
}

void gw_bkjob_watch(struct gw_daemon *d, const char *vm, Godwit__V1__RunnerBackupRequest *br,
                    struct gw_bk_buckets *bk)
{
    if (!br->throttle || strcmp(br->throttle, "adaptive")) return;
    size_t n = 0;
    pthread_mutex_lock(&d->lock);
    for (struct gw_vm_rec *r = d->vms; r && n < GW_BK_WATCH_MAX; r = r->next) {
        if (!strcmp(r->name, vm) || r->state != GODWIT__V1__VM__STATE__RUNNING || !r->proc.pid || !r->disk[0] ||
            r->incoming)
            continue;
        snprintf(bk->watch[n], sizeof bk->watch[n], "%s", r->control);
        bk->watch_ptrs[n] = bk->watch[n];
        n++;
    }
    pthread_mutex_unlock(&d->lock);
    br->watch_controls = bk->watch_ptrs;
    br->n_watch_controls = n;
}

/* Spans that ended longer ago than this are not passed on. A guest's 64 windows (32 s) follow
 * one another only while its disk is busy: an idle disk cuts none, so its oldest window may be
 * much older than 32 s. Hence an hour, not a minute; the record holds 16 spans at most anyway. */
#define HOST_BACKUP_HORIZON_NS 3600000000000ull

uint64_t gw_bkjob_span_open(struct gw_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    uint64_t id = gw_busy_spans_begin(&d->host_backups, gw_now_ns());
    pthread_mutex_unlock(&d->lock);
    return id;
}

void gw_bkjob_span_close(struct gw_daemon *d, uint64_t id)
{
    if (!id) return;
    pthread_mutex_lock(&d->lock);
    gw_busy_spans_end(&d->host_backups, id, gw_now_ns());
    pthread_mutex_unlock(&d->lock);
}

void gw_bkjob_spans_begin(struct gw_daemon *d, Godwit__V1__RunnerBackupRequest *br, struct gw_bk_buckets *bk)
{
    struct gw_busy_age ages[GW_BUSY_SPANS];
    pthread_mutex_lock(&d->lock);
    uint64_t now = gw_now_ns();
    unsigned n = gw_busy_spans_ages(&d->host_backups, now, HOST_BACKUP_HORIZON_NS, ages, GW_BUSY_SPANS);
    bk->span_id = gw_busy_spans_begin(&d->host_backups, now);
    pthread_mutex_unlock(&d->lock);
    for (unsigned i = 0; i < n; i++) {
        godwit__v1__busy_span__init(&bk->spans[i]);
        bk->spans[i].started_age_ms = ages[i].started_age_ms;
        bk->spans[i].ended_age_ms = ages[i].ended_age_ms;
        bk->spans[i].running = ages[i].running;
        bk->span_ptrs[i] = &bk->spans[i];
    }
    br->host_backups = bk->span_ptrs;
    br->n_host_backups = n;
}

void gw_bkjob_throttle_end(struct gw_daemon *d, const struct gw_backup_target_cfg *t, struct gw_bk_buckets *bk)
{
    if (bk->cluster[0]) gw_budget_leave(d, t);
    bk->cluster[0] = 0;
    gw_bkjob_span_close(d, bk->span_id);
    bk->span_id = 0;
}
