/* Instant restore's disk (see instant_disk.h).
 *
 * Locks: the device lock (dev->lock, L) before mu, never the other way. A request's ensure
 * runs under L (the device takes it) and takes mu; the fill thread reads a chunk holding
 * neither, then takes L, then mu. Chunk states change only under L and mu, so whoever holds L
 * sees them stand still; mu alone guards them for readers of the progress and dropping it
 * during a store read or an image write keeps those readers from waiting. */
#include "backup/instant_disk.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/device.h"
#include "storage/throttle.h"
#include "storage/chunk.h"

#define BACKOFF_MIN_MS 20u
#define BACKOFF_MAX_MS 500u

enum { CH_NONE = 0, CH_DONE };

struct gw_instant_disk {
    struct gw_backup_target *t;
    const Godwit__V1__BackupImage *im;
    struct gw_device *dev;        /* the virtio disk: its lock and its backend */
    struct gw_blk *blk;           /* dev's backend (owned by dev); used under dev->lock only */
    unsigned outage_ms;
    size_t enc_cap;
    pthread_mutex_t mu;
    pthread_cond_t stop_cv;       /* CLOCK_MONOTONIC: only stop ends a retry's or the pace's wait early */
    uint8_t *state;               /* per chunk */
    uint64_t outage_since;
    bool stop, flushed;
    struct gw_instant_disk_progress prog;
    uint64_t start_ns;
    pthread_t thr;
    bool started;
    uint8_t *enc, *raw;           /* the fill thread's buffers */
    uint8_t *req_enc, *req_raw;   /* the requests' buffers (requests are serial: device lock) */
    struct gw_bucket fill_rate;   /* the fill thread's pace (rate 0: unlimited) */
};

/* Under mu: an outage goes on; after outage_ms it is reported as stalled. */
static void unreachable_locked(struct gw_instant_disk *d, const char *why)
{
    uint64_t now = gw_now_ns();
    if (!d->outage_since) {
        d->outage_since = now;
        gw_warn("instant restore (disk): %s; retrying", why);
    }
    if (!d->prog.stalled && now - d->outage_since >= d->outage_ms * 1000000ull) {
        d->prog.stalled = true;
        snprintf(d->prog.error, sizeof d->prog.error, "the backup store is unreachable: %s", why);
    }
}

static void wait_ms(struct gw_instant_disk *d, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&d->stop_cv, &d->mu, &ts);
}

/* Under mu: the restore failed for good (the first reason stays). */
static void fail_locked(struct gw_instant_disk *d, const char *why)
{
    if (!d->prog.failed) {
        d->prog.failed = true;
        snprintf(d->prog.error, sizeof d->prog.error, "disk %s", why);
        gw_error("instant restore (disk) failed: %s", why);
    }
}

/* Under mu: reads chunk c into enc/raw (its length in *len), retrying while the store fails
 * (mu dropped while reading and waiting). 0, or -EIO when it is hostile or the restore stopped. */
static int fetch_chunk(struct gw_instant_disk *d, uint64_t c, uint8_t *enc, uint8_t *raw, size_t *len)
{
    unsigned backoff = 0;
    char why[512];
    for (;;) {
        if (d->stop || d->prog.failed) return -EIO;
        pthread_mutex_unlock(&d->mu);
        uint64_t nread = 0;
        int r = gw_backup_fetch_chunk(d->t, d->im, c, enc, d->enc_cap, raw, len, &nread, why, sizeof why);
        pthread_mutex_lock(&d->mu);
        if (r == GW_FETCH_OK) {
            d->outage_since = 0;
            if (d->prog.stalled) { d->prog.stalled = false; d->prog.error[0] = 0; }
            return 0;
        }
        if (r == GW_FETCH_BAD) { fail_locked(d, why); return -EIO; }
        unreachable_locked(d, why);
        backoff = backoff ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2) : BACKOFF_MIN_MS;
        wait_ms(d, backoff);
    }
}

/* Under L and mu, c not done: writes raw[0..len) as chunk c into the image (mu dropped while
 * writing) and marks c done; the last chunk flushes the image. 0 or -EIO. */
static int write_chunk(struct gw_instant_disk *d, uint64_t c, uint8_t *raw, size_t len)
{
    pthread_mutex_unlock(&d->mu);
    int w = gw_blk_rw(d->blk, true, raw, len, c * d->im->chunk_size);
    pthread_mutex_lock(&d->mu);
    if (w) {
        char why[GW_BLK_DESC_MAX + 160];
        snprintf(why, sizeof why, "writing chunk %llu into %s: %s", (unsigned long long)c, d->blk->desc, strerror(-w));
        fail_locked(d, why);
        return -EIO;
    }
    d->prog.bytes_written += len;
    return 0;
}

/* Under L and mu: c done (restored or overwritten). The last one flushes the image (a crash
 * after the fill must not lose what the backup put there). */
static void done_locked(struct gw_instant_disk *d, uint64_t c)
{
    d->state[c] = CH_DONE;
    d->prog.chunks_done++;
    if (d->prog.chunks_done < d->prog.chunks_total || d->flushed) return;
    d->flushed = true;
    pthread_mutex_unlock(&d->mu);
    int f = d->blk->ops->flush(d->blk);
    pthread_mutex_lock(&d->mu);
    if (f) {
        char why[GW_BLK_DESC_MAX + 160];
        snprintf(why, sizeof why, "flushing %s: %s", d->blk->desc, strerror(-f));
        fail_locked(d, why);
        return;
    }
    d->prog.complete = true;
    d->prog.fill_ns = gw_now_ns() - d->start_ns;
    gw_info("instant restore (disk) complete: %llu chunks (%llu on demand, %llu overwritten) in %.1f ms",
            (unsigned long long)d->prog.chunks_total, (unsigned long long)d->prog.chunks_demand,
            (unsigned long long)d->prog.chunks_overwritten, d->prog.fill_ns / 1e6);
}

static void *fill_main(void *arg)
{
    struct gw_instant_disk *d = arg;
    pthread_mutex_lock(&d->mu);
    for (uint64_t c = 0; c < d->im->n_chunks && !d->stop && !d->prog.failed; c++) {
        if (d->state[c] != CH_NONE) continue;
        size_t len = 0;
        if (fetch_chunk(d, c, d->enc, d->raw, &len)) break;
        /* L, then mu again: a request may have restored or overwritten c while we read it. */
        pthread_mutex_unlock(&d->mu);
        pthread_mutex_lock(&d->dev->lock);
        pthread_mutex_lock(&d->mu);
        int r = 0;
        if (d->state[c] == CH_NONE && !d->stop && !d->prog.failed && !(r = write_chunk(d, c, d->raw, len)))
            done_locked(d, c);
        pthread_mutex_unlock(&d->dev->lock);
        if (r) break;
        /* The debt of this chunk is waited out before the next (the guest's requests go on). */
        uint64_t ns = d->fill_rate.rate > 0 ? gw_bucket_take(&d->fill_rate, (double)d->im->chunk_size, gw_now_ns()) : 0;
        if (ns && !d->stop) wait_ms(d, (unsigned)(ns / 1000000) + 1);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* The device's question before a request (gw_blk_fill), under L. */
static int ensure(void *ctx, uint64_t off, uint64_t len, bool write)
{
    struct gw_instant_disk *d = ctx;
    uint64_t cs = d->im->chunk_size;
    if (!len) return 0;
    int r = 0;
    pthread_mutex_lock(&d->mu);
    for (uint64_t c = off / cs; c <= (off + len - 1) / cs && c < d->im->n_chunks; c++) {
        if (d->prog.failed || d->stop) { r = -EIO; break; }
        if (d->state[c] == CH_DONE) continue;
        uint64_t lo = c * cs, hi = lo + cs < d->im->size ? lo + cs : d->im->size;
        if (write && off <= lo && off + len >= hi) {
            d->prog.chunks_overwritten++;   /* the guest's bytes replace the block whole */
            done_locked(d, c);
            continue;
        }
        size_t n = 0;
        if ((r = fetch_chunk(d, c, d->req_enc, d->req_raw, &n)) || (r = write_chunk(d, c, d->req_raw, n))) break;
        d->prog.chunks_demand++;
        done_locked(d, c);
    }
    pthread_mutex_unlock(&d->mu);
    return r;
}

struct gw_blk_fill gw_instant_disk_fill(struct gw_instant_disk *d)
{
    return (struct gw_blk_fill){.ensure = ensure, .ctx = d};
}

int gw_instant_disk_start(struct gw_backup_target *t, const Godwit__V1__BackupImage *im, struct gw_device *dev,
                          unsigned outage_ms, double fill_rate, struct gw_instant_disk **out, char *err,
                          size_t errlen)
{
    struct gw_instant_disk *d = calloc(1, sizeof *d);
    if (!d) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    d->t = t;
    d->im = im;
    d->dev = dev;
    d->outage_ms = outage_ms;
    d->start_ns = gw_now_ns();
    /* One chunk of burst: the fill starts at once and keeps the rate from then on. */
    gw_bucket_init(&d->fill_rate, fill_rate, (double)im->chunk_size, d->start_ns);
    d->enc_cap = gw_chunk_encoded_cap(im->chunk_size);
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    int r = 0;
    d->blk = gw_virtio_blk_backend(dev);
    if (!d->blk || d->blk->read_only) {
        snprintf(err, errlen, "the VM has no disk to restore into");
        r = -ENODEV;
    } else if (d->blk->size != im->size) {
        snprintf(err, errlen, "disk %s is %llu bytes, the backup's disk %llu", d->blk->desc,
                 (unsigned long long)d->blk->size, (unsigned long long)im->size);
        r = -EINVAL;
    }
    if (r) { gw_instant_disk_free(d); return r; }
    d->state = calloc(im->n_chunks ? im->n_chunks : 1, 1);
    d->enc = malloc(d->enc_cap);
    d->req_enc = malloc(d->enc_cap);
    d->raw = malloc(im->chunk_size);
    d->req_raw = malloc(im->chunk_size);
    if (!d->state || !d->enc || !d->req_enc || !d->raw || !d->req_raw) {
        snprintf(err, errlen, "out of memory");
        gw_instant_disk_free(d);
        return -ENOMEM;
    }
    for (uint64_t c = 0; c < im->n_chunks; c++) {
        if (im->chunks[c].len == 32) d->prog.chunks_total++;
        else d->state[c] = CH_DONE;   /* a hole of the new image already */
    }
    if (!d->prog.chunks_total) { d->prog.complete = true; d->prog.fill_ns = 1; }
    r = -pthread_create(&d->thr, NULL, fill_main, d);
    if (r) { snprintf(err, errlen, "cannot start the disk fill: %s", strerror(-r)); gw_instant_disk_free(d); return r; }
    d->started = true;
    *out = d;
    return 0;
}

void gw_instant_disk_progress(struct gw_instant_disk *d, struct gw_instant_disk_progress *out)
{
    pthread_mutex_lock(&d->mu);
    *out = d->prog;
    pthread_mutex_unlock(&d->mu);
}

void gw_instant_disk_stop(struct gw_instant_disk *d)
{
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_broadcast(&d->stop_cv);
    pthread_mutex_unlock(&d->mu);
}

void gw_instant_disk_free(struct gw_instant_disk *d)
{
    if (!d) return;
    gw_instant_disk_stop(d);
    if (d->started) pthread_join(d->thr, NULL);
    free(d->state);
    free(d->enc);
    free(d->req_enc);
    free(d->raw);
    free(d->req_raw);
    pthread_cond_destroy(&d->stop_cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
