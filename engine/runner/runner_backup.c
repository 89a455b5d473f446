/* The runner's side of backups: a control request becomes one backup of this VM into the
 * named store (backup/backup.h). It runs to its end before the reply, on the main thread;
 * meanwhile a thread of its own answers the control socket (status; stop, which stops the
 * backup first; busy_responder.h). The guest keeps running throughout, also when the backup
 * fails.
 *
 * A requester that asks for progress (RunnerBackupRequest.progress_ms: godwitd's backup jobs)
 * gets RunnerReply frames carrying only backup_progress on its connection before the final
 * reply. When any requester half-closes the connection (CancelJob) or goes away (the daemon
 * died, the CLI was interrupted), the throttle's next wait slice or the next progress step
 * (after each chunk or batch of chunks) sees it and the backup stops there, as any failed
 * backup does: nothing listed, the guest running. The last step comes just before the
 * manifest is written. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"
#include "engine/common/busy_spans.h"
#include "engine/common/cpu_prio.h"
#include "engine/common/lat_windows.h"
#include "backup/instant_restore.h"
#include "backup/backup_since.h"
#include "engine/common/limits.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/runner/frame.h"
#include "engine/runner/busy_responder.h"
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
    /* Not the guests' usual: this runner's last backup and the host's other backups (godwitd's
     * record), each with the store's settling after it. */
    struct { uint64_t from_ns, to_ns; } busy[1 + GW_BUSY_SPANS];
    unsigned nbusy;
};

/* After a backup the store is not yet itself: a 512 MiB backup at 400 MiB/s into one bluestore
 * OSD left the next 5 s of the guest beside it at 1.05-1.26x its p99 later on (its deferred
 * writes and RocksDB flushes; stop 24). Its windows and this long after are no baseline. */
#define BACKUP_SETTLE_NS 10000000000ull

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
        gw_lat_hist_sum(out, &f->last[k]);   /* its sum_ns stays 0: a status carries no sum */
    }
    return 0;
}

/* The recent past of the one disk among this VM's and the watched VMs' that has served
 * requests: its windows' p99s (throttle.h, vm_history). With several, -ENOTSUP: the p99 of
 * their sum is not any one's, and the throttle measures it. */
static int feed_history(void *ctx, uint64_t *p99_ns, unsigned max)
{
    struct lat_feed *f = ctx;
    uint32_t us[GW_LAT_WINDOWS];
    uint64_t ends[GW_LAT_WINDOWS];
    if (max > GW_LAT_WINDOWS) max = GW_LAT_WINDOWS;
    int n = -ENODATA;
    unsigned sources = 0;
    struct gw_lat_hist own;
    if (gw_vm_disk_latency(f->vm, &own) == 0 && own.count) {
        sources++;
        n = gw_vm_disk_latency_windows(f->vm, us, ends, GW_LAT_WINDOWS);
    }
    for (size_t k = 0; k < f->n && sources <= 1; k++) {
        Godwit__V1__RunnerReply *rep = NULL;
        if (gw_runner_op(f->socks[k], GODWIT__V1__RUNNER_REQUEST__OP_STATUS, &rep, 200) == 0 && rep->status &&
            rep->status->disk_requests && ++sources == 1) {
            const Godwit__V1__RunnerStatus *st = rep->status;
            /* Another runner's windows count only if they are ours in length; when each ended
             * is now less its age (one clock for the host). Without ages none is left out. */
            size_t have = st->n_disk_p99_windows_us;
            n = st->disk_window_ms == GW_LAT_WINDOW_MS ? (int)(have < GW_LAT_WINDOWS ? have : GW_LAT_WINDOWS) : -ENODATA;
            bool aged = st->n_disk_window_ages_ms == have;
            uint64_t now = gw_now_ns();
            for (int i = 0; i < n; i++) {
                size_t at = have - (size_t)n + (size_t)i;
                us[i] = st->disk_p99_windows_us[at];
                uint64_t age = aged ? st->disk_window_ages_ms[at] * 1000000ull : now;
                ends[i] = now > age ? now - age : 0;
            }
        }
        if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
    }
    if (sources != 1) return -ENOTSUP;
    for (unsigned b = 0; b < f->nbusy && n > 0; b++)
        n = (int)gw_lat_windows_drop(us, ends, (unsigned)n, f->busy[b].from_ns, f->busy[b].to_ns);
    int first = n > (int)max ? n - (int)max : 0;
    for (int i = first; i < n; i++) p99_ns[i - first] = (uint64_t)us[i] * 1000;
    return n - first;
}

struct open_ctx {
    const Godwit__V1__StoreSpec *spec;
    struct gw_backup_target *t;
    char *err;
    size_t errlen;
    struct gw_cpu_prio ran_at;   /* what the thread got, read back from the kernel */
};

static int open_target(void *arg)
{
    struct open_ctx *c = arg;
    gw_cpu_prio_current(&c->ran_at);
    return gw_backup_target_open(c->spec, c->t, c->err, c->errlen);
}

struct progress_ctx {
    int fd;
    uint64_t every_ns, t0, last_ns;
    atomic_bool *stop_asked;   /* the busy responder's: a stop came for this runner */
};

/* The requester half-closed its side (a cancel) or went away. */
static bool hung_up(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR));
}

/* The throttle's question at every wait slice (storage/throttle.h): a backup held at 1 MiB/s
 * writes a batch of 16 chunks in 16 s, and the progress step comes only after it. */
static bool backup_cancelled(void *arg)
{
    const struct progress_ctx *c = arg;
    return atomic_load(c->stop_asked) || hung_up(c->fd);
}

static int send_progress(void *arg, const struct gw_backup_progress *p)
{
    struct progress_ctx *c = arg;
    if (backup_cancelled(c)) return -ECANCELED;   /* said once, after the backup */
    if (!c->every_ns) return 0;   /* no progress asked for: only the hang-up counts */
    uint64_t now = gw_now_ns();
    bool last = p->position >= p->total_bytes;
    if (!last && now - c->last_ns < c->every_ns) return 0;
    c->last_ns = now;
    Godwit__V1__JobProgress jp = GODWIT__V1__JOB_PROGRESS__INIT;
    jp.phase = "backup";
    jp.total_bytes = p->total_bytes;
    jp.remaining_bytes = p->total_bytes - (p->position < p->total_bytes ? p->position : p->total_bytes);
    jp.sent_bytes = p->bytes_written;
    jp.backup_bytes_read = p->bytes_read;
    jp.backup_bytes_written = p->bytes_written;
    jp.backup_bytes_deduplicated = p->bytes_deduplicated;
    jp.backup_chunks = p->chunks;
    jp.backup_chunks_total = p->chunks_total;
    uint64_t ms = (now - c->t0) / 1000000;
    jp.total_ms = ms;
    if (ms) {
        jp.throughput_bytes_per_s = p->position * 1000 / ms;
        if (jp.throughput_bytes_per_s) jp.eta_ms = jp.remaining_bytes * 1000 / jp.throughput_bytes_per_s;
    }
    Godwit__V1__RunnerReply rep = GODWIT__V1__RUNNER_REPLY__INIT;
    rep.ok = true;
    rep.backup_progress = &jp;
    int r = gw_frame_send(c->fd, &rep.base);
    if (r) gw_warn("backup: the requester went away (%s): stopping the backup", strerror(-r));
    return r ? -ECANCELED : 0;
}

int gw_runner_backup(struct gw_runner *r, const Godwit__V1__RunnerBackupRequest *req, int fd,
                     struct gw_backup_result *res, char *err, size_t errlen)
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
    struct gw_throttle_cfg tc = {.rate = (double)req->rate, .ops = (double)req->ops,
                                 .host_path = req->host_throttle_path, .host_rate = (double)req->host_rate,
                                 .host_ops = (double)req->host_ops, .cluster_path = req->cluster_throttle_path,
                                 .cluster_rate = (double)req->cluster_rate};
    if (gw_throttle_mode_parse(req->throttle, &tc.mode)) { snprintf(err, errlen, "throttle is adaptive, fixed or off"); return -EINVAL; }
    if (tc.mode == GW_THROTTLE_FIXED && !req->rate && !req->ops) { snprintf(err, errlen, "a fixed throttle needs a rate or ops limit"); return -EINVAL; }
#ifndef GODWIT_TEST_HOOKS
    if (req->test_store_delay_us) { snprintf(err, errlen, "store latency injection exists in test builds only"); return -EINVAL; }
#endif
    if (req->vm_latency_target_pct &&
        (req->vm_latency_target_pct < GW_LIMIT_VM_LAT_PCT_MIN || req->vm_latency_target_pct > GW_LIMIT_VM_LAT_PCT_MAX)) {
        snprintf(err, errlen, "the VM latency target is %u..%u %% of the VM's p99 before the backup", GW_LIMIT_VM_LAT_PCT_MIN,
                 GW_LIMIT_VM_LAT_PCT_MAX);
        return -EINVAL;
    }
    tc.vm_target_pct = req->vm_latency_target_pct;
    if (req->side_limit && (req->side_limit < GW_LIMIT_SIDE_MIN || req->side_limit > GW_LIMIT_SIDE_MAX)) {
        snprintf(err, errlen, "the side buffer limit is %llu MiB..%llu GiB", GW_LIMIT_SIDE_MIN >> 20, GW_LIMIT_SIDE_MAX >> 30);
        return -EINVAL;
    }
    if (req->n_watch_controls > WATCH_MAX) { snprintf(err, errlen, "at most %u VMs to watch", WATCH_MAX); return -EINVAL; }
    if (req->n_host_backups > GW_BUSY_SPANS) {
        snprintf(err, errlen, "at most %u other backups of the host", GW_BUSY_SPANS);
        return -EINVAL;
    }
    struct lat_feed *feed = calloc(1, sizeof *feed);
    if (!feed) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    feed->vm = r->vm;
    if (r->backup_to_ns) {
        feed->busy[feed->nbusy].from_ns = r->backup_from_ns;
        feed->busy[feed->nbusy++].to_ns = r->backup_to_ns + BACKUP_SETTLE_NS;
    }
    uint64_t now = gw_now_ns();
    for (size_t k = 0; k < req->n_host_backups; k++) {
        const Godwit__V1__BusySpan *hb = req->host_backups[k];
        struct gw_busy_age a = {.started_age_ms = hb->started_age_ms, .ended_age_ms = hb->ended_age_ms,
                                .running = hb->running};
        uint64_t from, to;
        gw_busy_span_of_ages(now, &a, &from, &to);
        feed->busy[feed->nbusy].from_ns = from;
        feed->busy[feed->nbusy++].to_ns = to + BACKUP_SETTLE_NS;
    }
    for (size_t k = 0; k < req->n_watch_controls; k++) feed->socks[feed->n++] = req->watch_controls[k];
    if (tc.mode == GW_THROTTLE_ADAPTIVE)
        gw_info("backup: the adaptive throttle watches the block latency of this VM and of %zu other VM%s; "
                "%zu other backup job%s of this host left out of their past", feed->n, feed->n == 1 ? "" : "s",
                req->n_host_backups, req->n_host_backups == 1 ? "" : "s");
    feed_latency(feed, &(struct gw_lat_hist){0});   /* the watched VMs' starting points */
    tc.vm_latency = feed_latency;
    tc.vm_history = feed_history;
    tc.vm_ctx = feed;
    struct gw_cpu_prio cpu;
    if (gw_cpu_prio_parse(req->cpu_priority && *req->cpu_priority ? req->cpu_priority : GW_BACKUP_CPU_DEFAULT, &cpu)) {
        snprintf(err, errlen, "cpu priority is idle, batch, batch:N, nice:N (N 1..19) or normal");
        free(feed);
        return -EINVAL;
    }
    /* Opened on a thread at the backup's priority: the store client's threads (librados')
     * are made there and inherit it; they serve this backup only. */
    struct gw_backup_target t;
    struct open_ctx oc = {.spec = req->store, .t = &t, .err = err, .errlen = errlen};
    int rc = gw_cpu_prio_run(&cpu, open_target, &oc);
    if (rc) { free(feed); return rc; }
#ifdef GODWIT_TEST_HOOKS
    t.store->test_put_delay_ns = req->test_store_delay_us * 1000ull;
    t.store->test_put_delay_until_ns = gw_now_ns() + req->test_store_delay_ms * 1000000ull;
#endif
    struct gw_busy_responder busy;
    struct progress_ctx pc = {.fd = fd, .every_ns = (uint64_t)req->progress_ms * 1000000, .t0 = gw_now_ns(),
                              .stop_asked = &busy.stop_asked};
    pc.last_ns = pc.t0;
    if (fd >= 0) { tc.cancelled = backup_cancelled; tc.cancel_ctx = &pc; }
    /* The fleecing file lives beside the control socket: the runner's state directory when
     * the daemon started it (its VM directory), the test's own directory otherwise. */
    char dir[sizeof r->control_path];
    snprintf(dir, sizeof dir, "%s", r->control_path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) *slash = 0;
    else snprintf(dir, sizeof dir, "%s", slash ? "/" : ".");
    struct gw_backup_params p = {.parent = req->parent, .method = method, .since = gw_backup_since_get(r->vm),
                                 .fleece_limit = req->fleece_limit, .side_limit = req->side_limit, .fleece_dir = r->control_path[0] ? dir : NULL,
                                 .throttle = tc, .cpu = cpu};
    /* Every chunk asks whether the requester is still there, progress or not: a CLI killed
     * (or interrupted) mid-backup stops it, instead of the backup running on to its end with
     * this runner's control socket unanswered all that time. */
    if (fd >= 0) { p.progress = send_progress; p.progress_ctx = &pc; }
    uint64_t began = gw_now_ns();
    /* The control socket answers (status, stop) while the backup runs: busy_responder.h. */
    int brc = gw_busy_responder_start(&busy, r, "a backup");
    if (brc) gw_warn("backup: the control socket will not answer until the backup ends: %s", strerror(-brc));
    rc = gw_backup_create(r->vm, &t, &p, res, err, errlen);
    gw_busy_responder_end(&busy);
    if (rc && r->stop) gw_info("backup: stopped, for the VM's stop");
    else if (rc && hung_up(fd)) gw_info("backup: stopped: its requester cancelled it or went away");
    r->backup_from_ns = began;
    r->backup_to_ns = gw_now_ns();
    if (!rc) {
        /* The backup's threads are made the way the store's were: this is what they got. */
        gw_cpu_prio_name(&oc.ran_at, res->cpu_priority, sizeof res->cpu_priority);
        res->pb.cpu_priority = res->cpu_priority;
    }
    gw_backup_target_close(&t);
    free(feed);
    return rc;
}
