/* The page pump (see pump.h). One mutex guards the lane queues, counters and the first error;
 * batches are large (4 MiB of pages by default), so the lock is taken a few hundred times per
 * second, not per page. Each lane has its own condition variable, so queueing a batch wakes
 * only the worker that encodes it. Raw pages are not copied: a batch is handed to the sink as
 * iovecs that point at the guest pages (only descriptors and lz4 blocks are built in the
 * lane's scratch buffer). */
#include "engine/pump/pump.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"

#define QCAP 8u

enum item_kind { IT_PAGES, IT_BARRIER };

struct item {
    enum item_kind kind;
    uint32_t n;             /* IT_PAGES: pages in pfns */
    uint64_t *pfns;         /* batch entries, owned by the slot */
    uint64_t tag;           /* IT_BARRIER */
    uint32_t flags;
};

struct lane {
    struct gw_pump *p;
    unsigned idx;
    pthread_t th;
    bool started;
    pthread_cond_t work;    /* signalled when this lane gets an item or must stop */
    struct item q[QCAP];    /* guarded by p->mu */
    unsigned head, count;
    uint64_t enq, done;     /* items queued / finished, for waiting on a ticket */
    uint64_t *pend;         /* the caller's batch being filled (caller only, under mu) */
    uint32_t npend;
    /* Worker only: */
    struct gw_page_encoder enc;
    uint8_t *out;           /* gw_page_batch_scratch_bound(batch) bytes */
    struct iovec *iov;      /* batch + 2: the header slot, the table, the pages */
    /* Published under p->mu after each item: */
    struct gw_codec_stats st;
};

struct gw_pump {
    const uint8_t *mem;
    uint64_t mem_size;
    unsigned n, batch;
    const struct gw_page_sink_ops *sink;
    void *sink_ctx;
    pthread_mutex_t mu;
    pthread_cond_t done;
    bool stop;
    int err;
    char errmsg[256];
    uint64_t link_bps;
    struct lane *lanes;
};

/* Records the first error, wakes everyone and (wake_sink) lets the sink unblock its lanes. */
static void fail_locked_how(struct gw_pump *p, const struct gw_err *e, bool wake_sink)
{
    if (p->err) return;
    p->err = e->code ? e->code : -EIO;
    snprintf(p->errmsg, sizeof p->errmsg, "%s", e->msg);
    for (unsigned i = 0; i < p->n; i++) pthread_cond_signal(&p->lanes[i].work);
    pthread_cond_broadcast(&p->done);
    /* The sink's abort only wakes threads (shutdown on sockets): safe under our lock. */
    if (wake_sink && p->sink->abort) p->sink->abort(p->sink_ctx);
}

static void fail_locked(struct gw_pump *p, const struct gw_err *e)
{
    fail_locked_how(p, e, true);
}

static int process(struct lane *t, struct item *it, struct gw_err *e)
{
    struct gw_pump *p = t->p;
    if (it->kind == IT_BARRIER)
        return p->sink->barrier ? p->sink->barrier(p->sink_ctx, t->idx, it->tag, it->flags, e) : 0;
    if (p->sink->claim && (it->n = p->sink->claim(p->sink_ctx, t->idx, it->pfns, it->n)) == 0) return 0;
    size_t len;
    int cnt;
    /* iov[0] is the sink's header slot. */
    int r = gw_page_encode_batch_iov(&t->enc, p->mem, p->mem_size, it->pfns, it->n, t->out,
                                     gw_page_batch_scratch_bound(p->batch), t->iov + 1, &cnt, &len);
    if (r) return gw_err_set(e, r, "lane %u: encoding a batch failed", t->idx);
    return p->sink->write_batch(p->sink_ctx, t->idx, t->iov, cnt + 1, len, it->pfns, it->n, e);
}

static void *lane_main(void *arg)
{
    struct lane *t = arg;
    struct gw_pump *p = t->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && t->count == 0) pthread_cond_wait(&t->work, &p->mu);
        if (t->count == 0) break;
        struct item *it = &t->q[t->head];
        bool skip = p->err != 0; /* after a failure, drain without sending */
        gw_page_encoder_set_link_rate(&t->enc, p->link_bps / p->n);
        pthread_mutex_unlock(&p->mu);
        struct gw_err e = {0};
        int r = skip ? 0 : process(t, it, &e);
        pthread_mutex_lock(&p->mu);
        if (r) fail_locked(p, &e);
        t->st = t->enc.st;
        t->head = (t->head + 1) % QCAP;
        t->count--;
        t->done++;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Queues an item on lane t, waiting for room. Returns the ticket (t->enq after it), or 0 when
 * the pump has failed. Called with p->mu held. */
static uint64_t enqueue_locked(struct lane *t, const struct item *src)
{
    struct gw_pump *p = t->p;
    while (!p->err && t->count == QCAP) pthread_cond_wait(&p->done, &p->mu);
    if (p->err) return 0;
    struct item *it = &t->q[(t->head + t->count) % QCAP];
    uint64_t *keep = it->pfns;
    *it = *src;
    it->pfns = keep;
    if (src->kind == IT_PAGES) memcpy(keep, src->pfns, sizeof *keep * src->n);
    t->count++;
    pthread_cond_signal(&t->work);
    return ++t->enq;
}

static int wait_ticket_locked(struct lane *t, uint64_t ticket)
{
    struct gw_pump *p = t->p;
    while (!p->err && t->done < ticket) pthread_cond_wait(&p->done, &p->mu);
    return p->err;
}

static int flush_pending_locked(struct lane *t)
{
    if (!t->npend) return 0;
    struct item it = { .kind = IT_PAGES, .n = t->npend, .pfns = t->pend };
    t->npend = 0;
    return enqueue_locked(t, &it) ? 0 : t->p->err;
}

int gw_pump_pages(struct gw_pump *p, const uint64_t *pfns, size_t n)
{
    uint64_t npfn = p->mem_size / GW_PAGE_SIZE;
    int r = 0;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n && !(r = p->err); i++) {
        if (pfns[i] >= npfn) { r = -ERANGE; break; }
        struct lane *t = &p->lanes[gw_pump_lane(pfns[i], p->n)];
        t->pend[t->npend++] = pfns[i];
        if (t->npend == p->batch) r = flush_pending_locked(t);
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* Pending pages of every lane, then (with a barrier item) the barrier; waits for all. */
static int sync_lanes(struct gw_pump *p, const struct item *barrier)
{
    uint64_t tickets[GW_PUMP_MAX_LANES];
    int r = 0;
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->n && !r; i++) {
        struct lane *t = &p->lanes[i];
        if ((r = flush_pending_locked(t))) break;
        if (barrier) r = (tickets[i] = enqueue_locked(t, barrier)) ? 0 : p->err;
        else tickets[i] = t->enq;
    }
    for (unsigned i = 0; i < p->n && !r; i++) r = wait_ticket_locked(&p->lanes[i], tickets[i]);
    if (!r) r = p->err;
    pthread_mutex_unlock(&p->mu);
    return r;
}

int gw_pump_barrier(struct gw_pump *p, uint64_t tag, uint32_t flags)
{
    struct item it = { .kind = IT_BARRIER, .tag = tag, .flags = flags };
    return sync_lanes(p, &it);
}

int gw_pump_drain(struct gw_pump *p)
{
    return sync_lanes(p, NULL);
}

int gw_pump_flush(struct gw_pump *p)
{
    int r = gw_pump_drain(p);
    if (r || !p->sink->flush) return r;
    struct gw_err e = {0};
    if ((r = p->sink->flush(p->sink_ctx, &e))) gw_pump_fail(p, &e);
    return r;
}

int gw_pump_discard(struct gw_pump *p)
{
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->n; i++) {
        struct lane *t = &p->lanes[i];
        t->npend = 0;
        /* The head may be in the worker's hands: it finishes; the rest never starts. Their
         * tickets count as done so that no waiter waits for them. */
        if (t->count > 1) {
            t->done += t->count - 1;
            t->count = 1;
        }
    }
    pthread_cond_broadcast(&p->done);
    for (unsigned i = 0; i < p->n; i++)
        while (p->lanes[i].count) pthread_cond_wait(&p->done, &p->mu);
    int r = p->err;
    pthread_mutex_unlock(&p->mu);
    return r;
}

void gw_pump_set_link_rate(struct gw_pump *p, uint64_t bytes_per_s)
{
    pthread_mutex_lock(&p->mu);
    p->link_bps = bytes_per_s;
    pthread_mutex_unlock(&p->mu);
}

void gw_pump_stats(struct gw_pump *p, struct gw_codec_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < p->n; i++) gw_codec_stats_add(out, &p->lanes[i].st);
    pthread_mutex_unlock(&p->mu);
}

void gw_pump_fail(struct gw_pump *p, const struct gw_err *e)
{
    pthread_mutex_lock(&p->mu);
    fail_locked(p, e);
    pthread_mutex_unlock(&p->mu);
}

void gw_pump_stop(struct gw_pump *p, const struct gw_err *e)
{
    pthread_mutex_lock(&p->mu);
    fail_locked_how(p, e, false);
    pthread_mutex_unlock(&p->mu);
}

int gw_pump_error(struct gw_pump *p, const char **msg)
{
    pthread_mutex_lock(&p->mu);
    int r = p->err;
    pthread_mutex_unlock(&p->mu);
    if (msg) *msg = p->errmsg; /* written once, before err is set; stable afterwards */
    return r;
}

void gw_pump_close(struct gw_pump *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    /* Work still queued means the caller gave up mid-way: do not wait for a slow sink. */
    for (unsigned i = 0; p->lanes && i < p->n; i++) {
        if (p->lanes[i].count) {
            struct gw_err e = { .code = -ECANCELED, .msg = "pump closed with pages queued" };
            fail_locked(p, &e);
        }
    }
    for (unsigned i = 0; p->lanes && i < p->n; i++) pthread_cond_signal(&p->lanes[i].work);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; p->lanes && i < p->n; i++) {
        struct lane *t = &p->lanes[i];
        if (t->started) pthread_join(t->th, NULL);
        pthread_cond_destroy(&t->work);
        for (unsigned k = 0; k < QCAP; k++) free(t->q[k].pfns);
        free(t->pend);
        free(t->out);
        free(t->iov);
    }
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->lanes);
    free(p);
}

int gw_pump_open(const struct gw_pump_cfg *cfg, struct gw_pump **out, struct gw_err *err)
{
    if (cfg->nlanes == 0 || cfg->nlanes > GW_PUMP_MAX_LANES)
        return gw_err_set(err, -EINVAL, "lanes must be 1..%u", GW_PUMP_MAX_LANES);
    if (!cfg->mem || cfg->mem_size == 0 || cfg->mem_size % GW_PAGE_SIZE)
        return gw_err_set(err, -EINVAL, "guest memory must be a non-empty multiple of 4096 bytes");
    if (cfg->batch_pages > GW_WIRE_MAX_BATCH_PAGES)
        return gw_err_set(err, -EINVAL, "batch must be at most %u pages", GW_WIRE_MAX_BATCH_PAGES);
    if (!cfg->sink || !cfg->sink->write_batch) return gw_err_set(err, -EINVAL, "the pump needs a sink");
    struct gw_pump *p = calloc(1, sizeof *p);
    if (!p) return gw_err_set(err, -ENOMEM, "out of memory");
    p->mem = cfg->mem;
    p->mem_size = cfg->mem_size;
    p->n = cfg->nlanes;
    p->batch = cfg->batch_pages ? cfg->batch_pages : GW_PUMP_DEFAULT_BATCH_PAGES;
    p->sink = cfg->sink;
    p->sink_ctx = cfg->sink_ctx;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->done, NULL);
    p->lanes = calloc(p->n, sizeof *p->lanes);
    bool ok = p->lanes != NULL;
    for (unsigned i = 0; ok && i < p->n; i++) {
        struct lane *t = &p->lanes[i];
        t->p = p;
        t->idx = i;
        pthread_cond_init(&t->work, NULL);
        t->pend = calloc(p->batch, sizeof *t->pend);
        t->out = malloc(gw_page_batch_scratch_bound(p->batch));
        t->iov = calloc(p->batch + 2, sizeof *t->iov);
        ok = t->pend && t->out && t->iov;
        for (unsigned k = 0; k < QCAP; k++) ok &= (t->q[k].pfns = calloc(p->batch, sizeof(uint64_t))) != NULL;
        gw_page_encoder_init(&t->enc, cfg->codec, cfg->lz4_accel);
    }
    if (!ok) {
        if (!p->lanes) p->n = 0;
        gw_pump_close(p);
        return gw_err_set(err, -ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < p->n; i++) {
        int r = pthread_create(&p->lanes[i].th, NULL, lane_main, &p->lanes[i]);
        if (r) {
            gw_pump_close(p);
            return gw_err_set(err, -r, "cannot start pump lane %u", i);
        }
        p->lanes[i].started = true;
        char name[16];   /* "pump0", ...: what top -H and a profile show for the lane */
        snprintf(name, sizeof name, "pump%u", i);
        pthread_setname_np(p->lanes[i].th, name);
    }
    *out = p;
    return 0;
}
