/* The runner's side of backups: a control request becomes one backup of this VM into the
 * named store (backup/backup.h). It runs to its end before the reply, so the control socket
 * is busy meanwhile; the guest keeps running throughout, also when the backup fails. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/runner/runner.h"
#include "engine/runner/runner_client.h"
#include "engine/vm/virtio_attach.h"
#include "storage/store.h"

/* The adaptive throttle's VM signal: this VM's disk plus the VMs it was told to watch (other
 * runners on this host, through their status). A watched VM that does not answer keeps its
 * last histogram, so the sum stays cumulative and the controller's differences stay sound. */
#define WATCH_MAX 8
struct lat_feed {
    struct gw_vm *vm;
    const char *socks[WATCH_MAX];
    struct gw_lat_hist last[WATCH_MAX];
    size_t n;
};

static int feed_latency(void *ctx, struct gw_lat_hist *out)
{
    struct lat_feed *f = ctx;
    if (gw_vm_disk_latency(f->vm, out)) memset(out, 0, sizeof *out);
    for (size_t k = 0; k < f->n; k++) {
        Godwit__V1__RunnerReply *rep = NULL;
        if (gw_runner_op(f->socks[k], GODWIT__V1__RUNNER_REQUEST__OP_STATUS, &rep, 200) == 0 && rep->status &&
            rep->status->n_disk_latency_buckets == GW_LAT_HIST_BUCKETS) {
            struct gw_lat_hist *h = &f->last[k];
            uint64_t count = 0;
            for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) count += rep->status->disk_latency_buckets[i];
            if (count >= h->count) {   /* a restarted VM would go backwards: keep the last */
                memcpy(h->b, rep->status->disk_latency_buckets, sizeof h->b);
                h->count = count;
            }
        }
        if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
        out->count += f->last[k].count;
        for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) out->b[i] += f->last[k].b[i];
    }
    return 0;
}

int gw_runner_backup(struct gw_runner *r, const Godwit__V1__RunnerBackupRequest *req, struct gw_backup_result *res,
                     char *err, size_t errlen)
{
    /* The run state (run_state.c) already refused a backup while a migration or a save owns
     * the VM, or after it left. */
    char why[256];
    if (gw_vm_fatal(r->vm, why, sizeof why)) { snprintf(err, errlen, "the VM has failed: %s", why); return -ESRCH; }
    if (!req->store) { snprintf(err, errlen, "backup needs a store"); return -EINVAL; }
    enum gw_backup_method method = GW_BACKUP_WP;
    if (req->method && *req->method) {
        if (!strcmp(req->method, "pause")) method = GW_BACKUP_PAUSE;
        else if (!strcmp(req->method, "dirty-log")) method = GW_BACKUP_DIRTY_LOG;
        else if (strcmp(req->method, "wp")) { snprintf(err, errlen, "backup method is wp, dirty-log or pause"); return -EINVAL; }
    }
    struct gw_throttle_cfg tc = {.rate = (double)req->rate, .ops = (double)req->ops,
                                 .host_path = req->host_throttle_path, .host_rate = (double)req->host_rate,
                                 .host_ops = (double)req->host_ops};
    if (gw_throttle_mode_parse(req->throttle, &tc.mode)) { snprintf(err, errlen, "throttle is adaptive, fixed or off"); return -EINVAL; }
    if (tc.mode == GW_THROTTLE_FIXED && !req->rate && !req->ops) { snprintf(err, errlen, "a fixed throttle needs a rate or ops limit"); return -EINVAL; }
#ifndef GODWIT_TEST_HOOKS
    if (req->test_store_delay_us) { snprintf(err, errlen, "store latency injection exists in test builds only"); return -EINVAL; }
#endif
    if (req->n_watch_controls > WATCH_MAX) { snprintf(err, errlen, "at most %u VMs to watch", WATCH_MAX); return -EINVAL; }
    struct lat_feed *feed = calloc(1, sizeof *feed);
    if (!feed) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    feed->vm = r->vm;
    for (size_t k = 0; k < req->n_watch_controls; k++) feed->socks[feed->n++] = req->watch_controls[k];
    feed_latency(feed, &(struct gw_lat_hist){0});   /* the watched VMs' starting points */
    tc.vm_latency = feed_latency;
    tc.vm_ctx = feed;
    struct gw_backup_target t;
    int rc = gw_backup_target_open(req->store, &t, err, errlen);
    if (rc) { free(feed); return rc; }
#ifdef GODWIT_TEST_HOOKS
    t.store->test_put_delay_ns = req->test_store_delay_us * 1000ull;
    t.store->test_put_delay_until_ns = gw_now_ns() + req->test_store_delay_ms * 1000000ull;
#endif
    /* The fleecing file lives beside the control socket: the runner's state directory when
     * the daemon started it (its VM directory), the test's own directory otherwise. */
    char dir[sizeof r->control_path];
    snprintf(dir, sizeof dir, "%s", r->control_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) *slash = 0;
    else snprintf(dir, sizeof dir, "%s", slash ? "/" : ".");
    struct gw_backup_params p = {.parent = req->parent, .method = method, .fleece_limit = req->fleece_limit,
                                 .fleece_dir = r->control_path[0] ? dir : NULL, .throttle = tc};
    rc = gw_backup_create(r->vm, &t, &p, res, err, errlen);
    gw_backup_target_close(&t);
    free(feed);
    return rc;
}
