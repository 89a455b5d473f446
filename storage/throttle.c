/* Backup throttling (see throttle.h). */
#include "storage/throttle.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/lat_windows.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "storage/store.h"

#define HOST_MAGIC 0x31545448574447ull   /* "GDWHTT1" */
#define SLEEP_SLICE_NS 20000000ull       /* a wait is cut so the controller keeps stepping */

void gw_bucket_init(struct gw_bucket *b, double rate, double burst, uint64_t now_ns)
{
    *b = (struct gw_bucket){.rate = rate, .burst = burst, .tokens = burst, .last_ns = now_ns};
}

static void refill(struct gw_bucket *b, uint64_t now_ns)
{
    if (now_ns > b->last_ns && b->rate > 0) {
        b->tokens += b->rate * (double)(now_ns - b->last_ns) / 1e9;
        if (b->tokens > b->burst) b->tokens = b->burst;
    }
    if (now_ns > b->last_ns) b->last_ns = now_ns;
}

void gw_bucket_set_rate(struct gw_bucket *b, double rate, double burst, uint64_t now_ns)
{
    refill(b, now_ns);
    b->rate = rate;
    b->burst = burst;
    if (b->tokens > burst) b->tokens = burst;
    if (rate <= 0) b->tokens = burst;   /* unlimited: no debt carried into a later limit */
}

uint64_t gw_bucket_take(struct gw_bucket *b, double n, uint64_t now_ns)
{
    if (b->rate <= 0) return 0;
    refill(b, now_ns);
    b->tokens -= n;
    if (b->tokens >= 0) return 0;
    return gw_u64_of_double(-b->tokens / b->rate * 1e9);
}

struct host_shared {
    uint64_t magic;
    struct gw_bucket bytes, ops;
};

/* A bucket shared through a file (the host's, or this host's share of the cluster's). */
struct shared {
    int fd;
    struct host_shared *m;
};

struct gw_throttle {
    struct gw_throttle_cfg cfg;
    struct gw_store *store;
    struct gw_bucket bytes, ops;
    struct gw_throttle_ctl_params cp;
    struct gw_throttle_ctl ctl;
    struct shared host, cluster;
    uint64_t first_ns, last_ns, interval_start, interval_bytes0, interval_ops0, lat_ns0, lat_n0;
    uint64_t lat_last_ns;     /* the store's mean write latency in the last interval with writes */
    double obj_bytes;         /* the mean size of a write in the last interval with writes */
    struct gw_lat_hist vm_ring[GW_THROTTLE_VM_WINDOW];   /* the VM's histogram at the last steps */
    unsigned vm_pos;          /* the oldest in vm_ring: the window's start */
    bool vm_ok;
    struct gw_throttle_stats st;
};

static double burst_of(double rate, double floor) { return rate * 0.1 > floor ? rate * 0.1 : floor; }

#define GW_THROTTLE_BURST_MIN (4u << 20)   /* a byte bucket's least burst (host and cluster buckets too) */

/* The byte bucket's burst: a tenth of a second at the rate, but at least 4 MiB, or one chunk in
 * adaptive mode. A bucket opened full let the adaptive backup's first 100 ms write 5 MiB (seven
 * objects at once, 50 MiB/s against a gentle start of 8), and the guest beside it saw 13 ms
 * where its p99 was 5 ms; in 18 runs of the contention bench, the guest's p99 in the backup's
 * first second was 1.8x its median alone, the largest step of the whole backup. A second of
 * such requests is the whole 1 % tail of a 100 s backup. */
#define GW_THROTTLE_ADAPTIVE_BURST (1u << 20)
static double bytes_burst(const struct gw_throttle *t, double rate)
{
    return burst_of(rate, t->cfg.mode == GW_THROTTLE_ADAPTIVE ? GW_THROTTLE_ADAPTIVE_BURST : GW_THROTTLE_BURST_MIN);
}

int gw_throttle_mode_parse(const char *s, enum gw_throttle_mode *out)
{
    if (!s || !*s || !strcmp(s, "adaptive")) *out = GW_THROTTLE_ADAPTIVE;
    else if (!strcmp(s, "fixed")) *out = GW_THROTTLE_FIXED;
    else if (!strcmp(s, "off")) *out = GW_THROTTLE_OFF;
    else return -EINVAL;
    return 0;
}


/* Maps the bucket file at path (created if missing) and sets its limits: the latest opener's
 * limits hold for everyone (they come from one host configuration, or the daemon's current
 * share). 0 or -errno with the reason in err; sh->fd -1 when nothing is held. */
static int shared_open(struct shared *sh, const char *path, double rate, double ops, char *err, size_t errlen)
{
    sh->m = NULL;
    sh->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (sh->fd < 0 || ftruncate(sh->fd, 4096) < 0) {
        int e = errno;
        snprintf(err, errlen, "throttle file %s: %s", path, strerror(e));
        return -e;
    }
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, sh->fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        snprintf(err, errlen, "throttle file %s: %s", path, strerror(e));
        return -e;
    }
    sh->m = p;
    uint64_t now = gw_now_ns();
    flock(sh->fd, LOCK_EX);
    if (sh->m->magic != HOST_MAGIC) {
        gw_bucket_init(&sh->m->bytes, rate, burst_of(rate, GW_THROTTLE_BURST_MIN), now);
        gw_bucket_init(&sh->m->ops, ops, burst_of(ops, 4), now);
        sh->m->magic = HOST_MAGIC;
    } else {
        gw_bucket_set_rate(&sh->m->bytes, rate, burst_of(rate, GW_THROTTLE_BURST_MIN), now);
        gw_bucket_set_rate(&sh->m->ops, ops, burst_of(ops, 4), now);
    }
    flock(sh->fd, LOCK_UN);
    return 0;
}

static void shared_close(struct shared *sh)
{
    if (sh->m) munmap(sh->m, 4096);
    if (sh->fd >= 0) close(sh->fd);
    sh->m = NULL;
    sh->fd = -1;
}

/* Takes bytes and one write from sh; the ns to wait. */
static uint64_t shared_take(struct shared *sh, uint64_t bytes, uint64_t now)
{
    if (!sh->m) return 0;
    flock(sh->fd, LOCK_EX);
    uint64_t h1 = gw_bucket_take(&sh->m->bytes, (double)bytes, now), h2 = gw_bucket_take(&sh->m->ops, 1, now);
    flock(sh->fd, LOCK_UN);
    return h1 > h2 ? h1 : h2;
}

int gw_throttle_shared_set(const char *path, double rate, double ops, char *err, size_t errlen)
{
    struct shared sh;
    int r = shared_open(&sh, path, rate, ops, err, errlen);
    shared_close(&sh);
    return r;
}

int gw_throttle_open(const struct gw_throttle_cfg *cfg, struct gw_store *s, struct gw_throttle **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (cfg->rate < 0 || cfg->ops < 0 || cfg->host_rate < 0 || cfg->host_ops < 0 || cfg->cluster_rate < 0) {
        snprintf(err, errlen, "throttle rates must not be negative");
        return -EINVAL;
    }
    struct gw_throttle *t = calloc(1, sizeof *t);
    if (!t) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    t->cfg = *cfg;
    t->store = s;
    t->host.fd = t->cluster.fd = -1;
    uint64_t now = gw_now_ns();
    double rate = cfg->mode == GW_THROTTLE_OFF ? 0 : cfg->rate, ops = cfg->mode == GW_THROTTLE_OFF ? 0 : cfg->ops;
    gw_bucket_init(&t->bytes, rate, bytes_burst(t, rate), now);
    gw_bucket_init(&t->ops, ops, burst_of(ops, 4), now);
    gw_throttle_ctl_defaults(&t->cp);
    if (cfg->vm_target_pct) t->cp.vm_factor = cfg->vm_target_pct / 100.0;
    t->cp.max_rate = rate;
    if (rate > 0 && t->cp.min_rate > rate) t->cp.min_rate = rate;
    /* The VM's baseline: the median p99 of its last 0.5 s windows (lat_windows.h) when it has
     * enough of them (16 to 64: 8 to 32 s), else of windows measured just before the backup
     * starts writing. Not its whole history since boot, which mixes in whatever ran before,
     * other backups included; not one window, which may have caught a spike; and not four
     * if more can be had: four read up to a quarter above or below the guest's usual level
     * on their own, and a baseline read high lets the backup take that much more. */
    struct gw_lat_hist h0;
    uint64_t vm_base = 0, p99s[GW_THROTTLE_BASE_MAX] = {0};
    t->vm_ok = cfg->vm_latency && cfg->vm_latency(cfg->vm_ctx, &h0) == 0;
    int nhist = t->vm_ok && cfg->mode == GW_THROTTLE_ADAPTIVE && h0.count && cfg->vm_history
                    ? cfg->vm_history(cfg->vm_ctx, p99s, GW_THROTTLE_BASE_MAX)
                    : -ENODATA;
    if (nhist >= (int)GW_THROTTLE_HISTORY_MIN) {
        vm_base = gw_throttle_ctl_baseline(p99s, (unsigned)nhist);
        t->st.vm_base_windows = (unsigned)nhist;
        t->st.vm_base_from_history = vm_base > 0;
        if (vm_base) gw_debug("throttle: VM baseline %.2f ms, the median of its last %d windows", vm_base / 1e6, nhist);
    }
    if (!t->st.vm_base_from_history) memset(p99s, 0, sizeof p99s);
    for (unsigned w = 0; w < GW_THROTTLE_BASE_WINDOWS && t->vm_ok && cfg->mode == GW_THROTTLE_ADAPTIVE && h0.count &&
                         !t->st.vm_base_from_history;
         w++) {   /* no I/O so far: nothing to wait for */
        uint64_t ns = GW_THROTTLE_VM_WINDOW * GW_THROTTLE_INTERVAL_NS;
        nanosleep(&(struct timespec){.tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull)}, NULL);
        struct gw_lat_hist h1, d;
        t->vm_ok = cfg->vm_latency(cfg->vm_ctx, &h1) == 0;
        if (t->vm_ok) {
            gw_lat_hist_delta(&h1, &h0, &d);
            if (d.count >= t->cp.vm_min_requests) p99s[w] = gw_lat_hist_quantile(&d, 0.99);
            h0 = h1;
        }
    }
    if (t->vm_ok && !t->st.vm_base_from_history) {
        vm_base = gw_throttle_ctl_baseline(p99s, GW_THROTTLE_BASE_WINDOWS);
        t->st.vm_base_windows = GW_THROTTLE_BASE_WINDOWS;
    }
    for (unsigned i = 0; i < GW_THROTTLE_VM_WINDOW; i++) t->vm_ring[i] = h0;
    gw_throttle_ctl_init(&t->ctl, &t->cp, vm_base);
    if (cfg->mode == GW_THROTTLE_ADAPTIVE && t->ctl.rate != rate)   /* its gentle start */
        gw_bucket_set_rate(&t->bytes, t->ctl.rate, bytes_burst(t, t->ctl.rate), gw_now_ns());
    if (cfg->mode == GW_THROTTLE_ADAPTIVE && s)
        s->inflight_cap = gw_throttle_ctl_inflight(t->ctl.rate, 0, 0, s->max_inflight);
    t->st.min_rate = rate;
    if (cfg->host_path && *cfg->host_path && (cfg->host_rate > 0 || cfg->host_ops > 0)) {
        int r = shared_open(&t->host, cfg->host_path, cfg->host_rate, cfg->host_ops, err, errlen);
        if (r) { gw_throttle_close(t, NULL); return r; }
    }
    if (cfg->cluster_path && *cfg->cluster_path && cfg->cluster_rate > 0) {
        int r = shared_open(&t->cluster, cfg->cluster_path, cfg->cluster_rate, 0, err, errlen);
        if (r) { gw_throttle_close(t, NULL); return r; }
    }
    *out = t;
    return 0;
}

/* One controller step when an interval has passed (adaptive mode only). */
static void maybe_step(struct gw_throttle *t, uint64_t now)
{
    if (t->cfg.mode != GW_THROTTLE_ADAPTIVE || now - t->interval_start < GW_THROTTLE_INTERVAL_NS) return;
    struct gw_throttle_sample s = {.bytes = t->st.bytes - t->interval_bytes0, .interval_ns = now - t->interval_start};
    s.store_n = t->store->write_lat_n - t->lat_n0;
    s.store_lat_ns = s.store_n ? (t->store->write_lat_ns - t->lat_ns0) / s.store_n : 0;
    struct gw_lat_hist cur, d;
    if (t->vm_ok && t->cfg.vm_latency(t->cfg.vm_ctx, &cur) == 0) {
        /* The p99 over the last window (sliding by one interval), as the baseline was. */
        gw_lat_hist_delta(&cur, &t->vm_ring[t->vm_pos], &d);
        s.vm_n = d.count;
        s.vm_p99_ns = gw_lat_hist_quantile(&d, 0.99);
        unsigned newest = (t->vm_pos + GW_THROTTLE_VM_WINDOW - 1) % GW_THROTTLE_VM_WINDOW;
        gw_lat_hist_delta(&cur, &t->vm_ring[newest], &d);
        s.vm_last_p99_ns = d.count ? gw_lat_hist_quantile(&d, 0.99) : 1;   /* 1: given, and quiet */
        t->vm_ring[t->vm_pos] = cur;
        t->vm_pos = (t->vm_pos + 1) % GW_THROTTLE_VM_WINDOW;
    }
    if (t->cfg.pressure) t->cfg.pressure(t->cfg.pressure_ctx, &s.pressure, &s.need_rate);
    double before = t->ctl.rate;
    uint64_t falls = t->ctl.base_falls;
    double rate = gw_throttle_ctl_step(&t->ctl, &t->cp, &s);
    if (t->ctl.base_falls != falls) gw_info("backup throttle: %s", t->ctl.why);
    /* No more writes in flight than the limit needs (throttle_ctl.h). */
    if (s.store_n) t->lat_last_ns = s.store_lat_ns;
    uint64_t ops = t->st.ops - t->interval_ops0;
    if (ops) t->obj_bytes = (double)s.bytes / (double)ops;
    t->store->inflight_cap = gw_throttle_ctl_inflight(rate, t->lat_last_ns, t->obj_bytes, t->store->max_inflight);
    gw_debug("throttle: %.1f MiB/s achieved; store %.2f ms (%llu, base %.2f); VM p99 %.2f ms (%llu, base %.2f); "
             "buffer %.0f%% (needs %.1f MiB/s); limit %.1f MiB/s, %u in flight%s", s.interval_ns ? s.bytes / 1048576.0 * 1e9 / s.interval_ns : 0.0, s.store_lat_ns / 1e6,
             (unsigned long long)s.store_n, t->ctl.store_base_ns / 1e6, s.vm_p99_ns / 1e6, (unsigned long long)s.vm_n,
             t->ctl.vm_base_ns / 1e6, s.pressure * 100, s.need_rate / 1048576.0, rate / 1048576.0, t->store->inflight_cap, t->ctl.congested ? " (backed off)" : "");
    if (rate != before) gw_bucket_set_rate(&t->bytes, rate, bytes_burst(t, rate), now);
    if (rate > 0 && (t->st.min_rate <= 0 || rate < t->st.min_rate)) t->st.min_rate = rate;
    t->interval_start = now;
    t->interval_bytes0 = t->st.bytes;
    t->interval_ops0 = t->st.ops;
    t->lat_ns0 = t->store->write_lat_ns;
    t->lat_n0 = t->store->write_lat_n;
}

static bool cancelled(const struct gw_throttle *t)
{
    return t->cfg.cancelled && t->cfg.cancelled(t->cfg.cancel_ctx);
}

int gw_throttle_take(struct gw_throttle *t, uint64_t bytes)
{
    if (!t) return 0;
    if (cancelled(t)) return -ECANCELED;
    uint64_t now = gw_now_ns();
    if (!t->first_ns) {
        t->first_ns = t->interval_start = now;
        t->lat_ns0 = t->store->write_lat_ns;
        t->lat_n0 = t->store->write_lat_n;
    }
    maybe_step(t, now);
    uint64_t wait = gw_bucket_take(&t->bytes, (double)bytes, now), w2 = gw_bucket_take(&t->ops, 1, now);
    if (w2 > wait) wait = w2;
    uint64_t h = shared_take(&t->host, bytes, now), c = shared_take(&t->cluster, bytes, now);
    if (h > wait) wait = h;
    if (c > wait) wait = c;
    t->st.bytes += bytes;
    t->st.ops++;
    t->st.wait_ns += wait;
    uint64_t end = now + wait;
    while (now < end) {
        uint64_t slice = end - now < SLEEP_SLICE_NS ? end - now : SLEEP_SLICE_NS;
        struct timespec ts = {.tv_sec = (time_t)(slice / 1000000000ull), .tv_nsec = (long)(slice % 1000000000ull)};
        nanosleep(&ts, NULL);
        if (cancelled(t)) return -ECANCELED;
        now = gw_now_ns();
        maybe_step(t, now);
    }
    t->last_ns = now;
    return 0;
}

/* The disk's history and the throttle's VM signal are one statistic. */
_Static_assert(GW_LAT_WINDOW_NS == GW_THROTTLE_VM_WINDOW * GW_THROTTLE_INTERVAL_NS, "window lengths differ");

void gw_throttle_close(struct gw_throttle *t, struct gw_throttle_stats *st)
{
    if (!t) return;
    if (st) {
        *st = t->st;
        st->elapsed_ns = t->last_ns > t->first_ns ? t->last_ns - t->first_ns : 0;
        st->backoffs = t->ctl.backoffs;
        st->intervals = t->ctl.intervals;
        st->end_rate = t->cfg.mode == GW_THROTTLE_ADAPTIVE ? t->ctl.rate : t->bytes.rate;
        st->vm_base_ns = t->ctl.vm_base_ns;
        st->vm_base0_ns = t->ctl.vm_base0_ns;
        if (t->cfg.mode == GW_THROTTLE_ADAPTIVE) st->vm_target_pct = (unsigned)(t->cp.vm_factor * 100 + 0.5);
        st->store_base_ns = t->ctl.store_base_ns;
        snprintf(st->why, sizeof st->why, "%s", t->ctl.why);
    }
    if (t->cfg.mode == GW_THROTTLE_ADAPTIVE && t->store) t->store->inflight_cap = 0;
    shared_close(&t->host);
    shared_close(&t->cluster);
    free(t);
}
