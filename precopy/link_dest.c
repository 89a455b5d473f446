/* Destination side of the pre-copy link: one receiving thread per stream of the session runs
 * the page decoder, which hands pages to the direct placer (streams own disjoint pages, see
 * precopy_link.h), and reports END_OF_ROUND; control records on stream 0 become events for
 * the caller once every stream has applied all pages up to the last END_OF_ROUND. One mutex
 * guards the round bookkeeping, the event queue and the first error. */
#include "precopy/precopy_link.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/common/util.h"
#include "engine/pump/page_recv.h"
#include "engine/transport/rdma_mem.h"

/* How long a stream that saw the source hang up waits for stream 0 to say why. */
#define PEER_REASON_WAIT_S 1

struct rstream {
    struct gw_mig_receiver *rx;
    unsigned idx;
    struct gw_conn *c;           /* the session's stream idx; this thread is its only reader */
    pthread_t th;
    bool started;
    struct gw_rbuf buf;          /* thread only: control payloads */
    struct gw_page_recv pr;      /* thread only: page batch buffers */
    uint64_t *pfns;              /* thread only: the pages of the last batch, for placed */
    uint64_t round_pages;        /* thread only: pages since the last END_OF_ROUND */
    int64_t round_done;          /* under rx->mu: last round ended on this stream, -1 = none */
    bool final_seen;             /* under rx->mu; written only by this stream's thread */
    bool commit_seen;            /* thread only (stream 0): COMMIT arrived */
    struct gw_codec_stats st;    /* under rx->mu */
    uint64_t bytes_wire;         /* under rx->mu */
    struct gw_rdma_mr *rmr;      /* RDMA: guest memory registered on this stream for the source */
};

struct evnode {
    struct gw_mig_event ev;
    uint8_t *data;
    struct evnode *next;
};

/* Where the session is in the two-phase commit (migration.h). Moves forward only. */
enum commit_phase {
    PH_TRANSFER,     /* pages, rounds, state, digest */
    PH_COMMIT,       /* COMMIT arrived; the caller checks and answers */
    PH_ACKED,        /* READY sent; waiting for GO (a broken link now means: discard) */
    PH_GO,           /* GO arrived: the guest is ours */
    PH_RUNNING,      /* RUNNING sent: the source may hang up */
};

struct gw_mig_receiver {
    int timeout_ms;
    struct gw_session *ses;
    const Godwit__V1__MigHello *hello;   /* stream 0's, the session's */
    unsigned n;
    struct rstream *st;
    uint8_t *mem;
    uint64_t mem_size;
    bool fresh_memory;
    struct gw_placer_direct direct; /* set at start; written is ours, touched the caller's */
    struct gw_page_placer placer;
    gw_mig_placed_fn *placed;      /* set before start */
    void *placed_ctx;
    uint64_t t0;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct evnode *head, *tail;
    struct evnode *delivered;      /* the event the caller holds; freed on the next call */
    int64_t reported_round;
    uint64_t pages_total;
    enum commit_phase phase;
    uint64_t commit_rounds;
    bool closing;
    int err;
    char errmsg[256];
};

static void fail_locked(struct gw_mig_receiver *rx, const struct gw_err *e)
{
    if (rx->err || rx->closing) return;
    rx->err = e->code ? e->code : -EIO;
    snprintf(rx->errmsg, sizeof rx->errmsg, "%s", e->msg);
    if (rx->ses) gw_session_shutdown(rx->ses);
    pthread_cond_broadcast(&rx->cv);
}

static int push_locked(struct gw_mig_receiver *rx, const struct gw_mig_event *ev, const uint8_t *data, size_t len)
{
    struct evnode *n = calloc(1, sizeof *n);
    if (!n || (len && !(n->data = malloc(len)))) {
        free(n);
        return -ENOMEM;
    }
    n->ev = *ev;
    if (len) memcpy(n->data, data, len);
    n->ev.data = n->data;
    n->ev.len = len;
    if (rx->tail) rx->tail->next = n; else rx->head = n;
    rx->tail = n;
    pthread_cond_broadcast(&rx->cv);
    return 0;
}

static int64_t min_round_locked(struct gw_mig_receiver *rx, bool *all_final)
{
    int64_t m = INT64_MAX;
    *all_final = true;
    for (unsigned i = 0; i < rx->n; i++) {
        if (rx->st[i].round_done < m) m = rx->st[i].round_done;
        *all_final &= rx->st[i].final_seen;
    }
    return m;
}

static int on_end_of_round(struct rstream *t, const uint8_t *p, size_t len, struct gw_err *e)
{
    struct gw_mig_receiver *rx = t->rx;
    int r;
    Godwit__V1__MigEndOfRound *m = gw_wire_unpack_end_of_round(p, len, &r);
    if (!m) return gw_err_set(e, r, "stream %u: malformed END_OF_ROUND", t->idx);
    uint64_t round = m->round, pages = m->pages;
    bool final = m->final;
    godwit__v1__mig_end_of_round__free_unpacked(m, NULL);
    if (final && t->idx != 0) {
        /* Nothing but the end of the session follows on this stream; stream 0's timeout
         * still catches a source that goes silent, so this one may wait without one. */
        gw_conn_set_timeout(t->c, 0);
    }
    if (pages != t->round_pages)
        return gw_err_set(e, -EBADMSG, "stream %u: round %llu: source sent %llu pages, %llu arrived",
                          t->idx, (unsigned long long)round, (unsigned long long)pages,
                          (unsigned long long)t->round_pages);
    pthread_mutex_lock(&rx->mu);
    if (round > INT64_MAX || (int64_t)round <= t->round_done) {
        pthread_mutex_unlock(&rx->mu);
        return gw_err_set(e, -EBADMSG, "stream %u: round %llu does not follow round %lld", t->idx,
                          (unsigned long long)round, (long long)t->round_done);
    }
    t->round_done = (int64_t)round;
    t->final_seen |= final;
    t->round_pages = 0;
    rx->pages_total += pages;
    bool all_final;
    int64_t mr = min_round_locked(rx, &all_final);
    r = 0;
    if (mr > rx->reported_round) {
        rx->reported_round = mr;
        struct gw_mig_event ev = { .type = GW_MIG_EV_ROUND, .round = (uint64_t)mr,
                                   .pages = rx->pages_total, .final = all_final };
        r = push_locked(rx, &ev, NULL, 0);
    }
    pthread_cond_broadcast(&rx->cv);
    pthread_mutex_unlock(&rx->mu);
    return r ? gw_err_set(e, r, "out of memory") : 0;
}

/* Checks COMMIT and GO against the commit phase and moves it on. Called with rx->mu held,
 * once every stream has caught up with stream 0. */
static int commit_step_locked(struct gw_mig_receiver *rx, const struct gw_mig_event *ev, bool all_final,
                              struct gw_err *e)
{
    if (ev->type == GW_MIG_EV_COMMIT) {
        /* COMMIT seals the memory the caller will check: every stream must be done. */
        if (!all_final) return gw_err_set(e, -EPROTO, "unexpected record COMMIT before the final round");
        rx->phase = PH_COMMIT;
        rx->commit_rounds = ev->round;
    } else if (ev->type == GW_MIG_EV_GO) {
        /* acked is set before ACK leaves, so a GO that follows our ACK never sees less. */
        if (rx->phase != PH_ACKED) return gw_err_set(e, -EPROTO, "unexpected record GO before ACK");
        if (ev->round != rx->commit_rounds)
            return gw_err_set(e, -EBADMSG, "GO for %llu rounds, COMMIT had %llu",
                              (unsigned long long)ev->round, (unsigned long long)rx->commit_rounds);
        rx->phase = PH_GO;
    }
    return 0;
}

/* A control record on stream 0: wait until all streams caught up, then hand it over. */
static int on_control(struct rstream *t, const struct gw_wire_header *h, const uint8_t *p,
                      struct gw_err *e)
{
    struct gw_mig_receiver *rx = t->rx;
    struct gw_mig_event ev = { .type = 0 };
    const uint8_t *data = NULL;
    size_t len = 0;
    int r = 0;
    if (t->idx != 0)
        return gw_err_set(e, -EPROTO, "stream %u: %s is only allowed on stream 0", t->idx,
                          gw_wire_type_name(h->type));
    switch (h->type) {
    case GW_WIRE_SWITCHOVER: {
        Godwit__V1__MigSwitchover *m = godwit__v1__mig_switchover__unpack(NULL, h->length, p);
        if (!m) return gw_err_set(e, -EBADMSG, "malformed SWITCHOVER");
        ev = (struct gw_mig_event){ .type = GW_MIG_EV_SWITCHOVER, .round = m->round };
        godwit__v1__mig_switchover__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_COMMIT: {
        Godwit__V1__MigCommit *m = godwit__v1__mig_commit__unpack(NULL, h->length, p);
        if (!m) return gw_err_set(e, -EBADMSG, "malformed COMMIT");
        ev = (struct gw_mig_event){ .type = GW_MIG_EV_COMMIT, .round = m->rounds };
        godwit__v1__mig_commit__free_unpacked(m, NULL);
        t->commit_seen = true;
        break;
    }
    case GW_WIRE_GO: {
        Godwit__V1__MigGo *m = godwit__v1__mig_go__unpack(NULL, h->length, p);
        if (!m) return gw_err_set(e, -EBADMSG, "malformed GO");
        ev = (struct gw_mig_event){ .type = GW_MIG_EV_GO, .round = m->rounds };
        godwit__v1__mig_go__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_DIGEST: {
        Godwit__V1__MigDigest *m = gw_wire_unpack_digest(p, h->length, &r);
        if (!m) return gw_err_set(e, r, "malformed DIGEST");
        bool size_ok = m->mem_size == rx->mem_size;
        ev = (struct gw_mig_event){ .type = GW_MIG_EV_DIGEST };
        memcpy(ev.digest.b, m->xxh3_128.data, GW_DIGEST_SIZE);
        godwit__v1__mig_digest__free_unpacked(m, NULL);
        if (!size_ok) return gw_err_set(e, -EBADMSG, "DIGEST covers a different memory size");
        break;
    }
    case GW_WIRE_SYNC: {
        Godwit__V1__MigSync *m = godwit__v1__mig_sync__unpack(NULL, h->length, p);
        if (!m) return gw_err_set(e, -EBADMSG, "malformed SYNC");
        ev = (struct gw_mig_event){ .type = GW_MIG_EV_SYNC, .round = m->seq };
        godwit__v1__mig_sync__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_STATE:
        ev = (struct gw_mig_event){ .type = GW_MIG_EV_STATE };
        data = p;
        len = h->length;
        break;
    default:
        return gw_err_set(e, -EPROTO, "unexpected record %s", gw_wire_type_name(h->type));
    }
    pthread_mutex_lock(&rx->mu);
    bool all_final;
    while (!rx->err && !rx->closing && min_round_locked(rx, &all_final) < t->round_done)
        pthread_cond_wait(&rx->cv, &rx->mu);
    min_round_locked(rx, &all_final);
    r = rx->err ? gw_err_set(e, rx->err, "session failed") : commit_step_locked(rx, &ev, all_final, e);
    if (!r && (r = push_locked(rx, &ev, data, len))) gw_err_set(e, r, "out of memory");
    pthread_mutex_unlock(&rx->mu);
    return r;
}

/* Page batches go through the decoder to the placer (page_recv.h). */
static int on_page_batch(struct rstream *t, const struct gw_wire_header *h, struct gw_err *e)
{
    struct gw_mig_receiver *rx = t->rx;
    struct gw_codec_stats st = {0};
    uint32_t n = 0;
    int r = gw_page_recv_batch(t->c, h, &rx->placer, &t->pr, &st, &n, e);
    if (r) return r;
    if (rx->placed) {
        if (!t->pfns && !(t->pfns = malloc(GW_WIRE_MAX_BATCH_PAGES * sizeof *t->pfns)))
            return gw_err_set(e, -ENOMEM, "out of memory");
        for (uint32_t i = 0; i < n; i++) t->pfns[i] = t->pr.descs[i].pfn;
        rx->placed(rx->placed_ctx, t->pfns, t->pr.placed_from, n);
    }
    t->round_pages += n;
    pthread_mutex_lock(&rx->mu);
    gw_codec_stats_add(&t->st, &st);
    t->bytes_wire = t->c->bytes_recv;
    pthread_mutex_unlock(&rx->mu);
    return 0;
}

/* One record whose header h was just read: checks its place in the session, then reads
 * and handles its payload. */
static int handle(struct rstream *t, const struct gw_wire_header *h, struct gw_err *e)
{
    int r;
    /* After COMMIT the memory is sealed: only the source's GO or ERROR may follow; after a
     * final round a stream carries no more pages or rounds. */
    if (t->commit_seen && h->type != GW_WIRE_GO && h->type != GW_WIRE_ERROR)
        return gw_err_set(e, -EPROTO, "stream %u: unexpected record %s after COMMIT", t->idx,
                          gw_wire_type_name(h->type));
    if (t->final_seen && (h->type == GW_WIRE_PAGE_BATCH || h->type == GW_WIRE_END_OF_ROUND))
        return gw_err_set(e, -EPROTO, "stream %u: unexpected record %s after the final round",
                          t->idx, gw_wire_type_name(h->type));
    if (h->type == GW_WIRE_PAGE_BATCH) return on_page_batch(t, h, e);
    /* Control payloads are small (STATE at most GW_WIRE_MAX_PAYLOAD) and read whole. */
    if (h->length > t->buf.cap) {
        uint8_t *nb = realloc(t->buf.data, h->length);
        if (!nb) return gw_err_set(e, -ENOMEM, "out of memory for a %u-byte record", h->length);
        t->buf.data = nb;
        t->buf.cap = h->length;
    }
    struct iovec v = { t->buf.data, h->length };
    if ((r = gw_conn_recv_payload(t->c, &v, 1, e))) return r;
    const uint8_t *p = t->buf.data;
    switch (h->type) {
    case GW_WIRE_END_OF_ROUND:
        return on_end_of_round(t, p, h->length, e);
    case GW_WIRE_ERROR: {
        Godwit__V1__MigError *m = gw_wire_unpack_error(p, h->length, &r);
        gw_err_set(e, -EPROTO, "source aborted the migration: %s", m ? m->message : "(malformed ERROR)");
        if (m) godwit__v1__mig_error__free_unpacked(m, NULL);
        return -EPROTO;
    }
    default:
        return on_control(t, h, p, e);
    }
}

static void *rstream_main(void *arg)
{
    struct rstream *t = arg;
    struct gw_mig_receiver *rx = t->rx;
    for (;;) {
        struct gw_wire_header h;
        struct gw_err e = {0};
        int r = gw_conn_recv_header(t->c, &h, &e);
        if (!r) r = handle(t, &h, &e);
        if (!r) continue;
        pthread_mutex_lock(&rx->mu);
        /* The source hangs up once it has our RUNNING: that end is the normal one, and after
         * it nothing can change the outcome any more. Before, a hang-up is a failure the
         * caller must see: before GO it means "discard this copy". */
        if (rx->phase != PH_RUNNING && r == -ESHUTDOWN && t->idx != 0) {
            /* A source that aborts sends ERROR on stream 0, then closes every stream: give
             * stream 0 a moment to report that reason instead of this bare hang-up. */
            struct timespec dl;
            clock_gettime(CLOCK_MONOTONIC, &dl);
            dl.tv_sec += PEER_REASON_WAIT_S;
            while (!rx->err && !rx->closing && rx->phase != PH_RUNNING &&
                   pthread_cond_timedwait(&rx->cv, &rx->mu, &dl) != ETIMEDOUT) {}
        }
        if (rx->phase != PH_RUNNING) {
            if (r == -ESHUTDOWN)
                gw_err_set(&e, -EPIPE, "stream %u: the connection to the source ended %s", t->idx,
                           rx->phase < PH_COMMIT ? "before COMMIT"
                           : rx->phase < PH_GO   ? "after COMMIT, before GO (discard this copy)"
                                                 : "after GO, before RUNNING was sent");
            fail_locked(rx, &e);
        }
        pthread_mutex_unlock(&rx->mu);
        break;
    }
    return NULL;
}

/* A receiver over an accepted session (taken even on error). */
static int rx_new(struct gw_session *ses, const struct gw_mig_receiver_cfg *cfg, struct gw_mig_receiver **out,
                  struct gw_err *err)
{
    struct gw_mig_receiver *rx = calloc(1, sizeof *rx);
    if (rx) rx->st = calloc(gw_session_streams(ses), sizeof *rx->st);
    if (!rx || !rx->st) {
        free(rx);
        gw_session_close(ses);
        return gw_err_set(err, -ENOMEM, "out of memory");
    }
    rx->ses = ses;
    rx->hello = gw_session_hello(ses);
    rx->n = gw_session_streams(ses);
    for (unsigned i = 0; i < rx->n; i++) rx->st[i].c = gw_session_conn(ses, i);
    rx->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : GW_MIG_DEFAULT_TIMEOUT_MS;
    rx->direct.touched = cfg->touched;
    rx->fresh_memory = cfg->fresh_memory;
    rx->reported_round = -1;
    rx->t0 = gw_now_ns();
    pthread_mutex_init(&rx->mu, NULL);
    pthread_condattr_t ca;   /* deadlines on the monotonic clock: a clock step changes nothing */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rx->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = rx;
    return 0;
}

static struct gw_session_cfg session_cfg(const struct gw_mig_receiver_cfg *cfg)
{
    return (struct gw_session_cfg){ .secret = cfg->secret, .secret_len = cfg->secret_len,
                                    .features = GW_WIRE_F_ALL, .timeout_ms = cfg->timeout_ms,
                                    .attach = cfg->attach, .attach_ctx = cfg->attach_ctx };
}

int gw_mig_receiver_accept_conn(struct gw_conn *c, struct gw_listener *l,
                                const struct gw_mig_receiver_cfg *cfg,
                                struct gw_mig_receiver **out, struct gw_err *err)
{
    struct gw_session_cfg sc = session_cfg(cfg);
    struct gw_session *ses;
    int r = gw_session_accept_conn(c, l, &sc, &ses, err);
    return r ? r : rx_new(ses, cfg, out, err);
}

int gw_mig_receiver_accept_conns(struct gw_conn **conns, unsigned n, const struct gw_mig_receiver_cfg *cfg,
                                 struct gw_mig_receiver **out, struct gw_err *err)
{
    struct gw_session_cfg sc = session_cfg(cfg);
    struct gw_session *ses;
    int r = gw_session_accept_conns(conns, n, &sc, &ses, err);
    return r ? r : rx_new(ses, cfg, out, err);
}

int gw_mig_receiver_accept(struct gw_listener *l, const struct gw_mig_receiver_cfg *cfg,
                           struct gw_mig_receiver **out, struct gw_err *err)
{
    struct gw_session_cfg sc = session_cfg(cfg);
    struct gw_session *ses;
    int r = gw_session_accept(l, &sc, &ses, err);
    return r ? r : rx_new(ses, cfg, out, err);
}

const Godwit__V1__MigHello *gw_mig_receiver_hello(const struct gw_mig_receiver *rx) { return rx->hello; }

void gw_mig_receiver_on_placed(struct gw_mig_receiver *rx, gw_mig_placed_fn *fn, void *ctx)
{
    rx->placed = fn;
    rx->placed_ctx = ctx;
}

/* When every stream agreed RDMA WRITE: registers guest memory on each stream's connection
 * for the source's writes, lets each stream's decoder accept pages written in place, and
 * sends the regions (one per stream, all of guest memory) on stream 0 before any thread
 * reads a batch. A session without RDMA is left as it is. */
static int offer_rdma(struct gw_mig_receiver *rx, struct gw_err *err)
{
    for (unsigned i = 0; i < rx->n; i++)
        if (!(gw_session_features(rx->ses, i) & GW_WIRE_F_RDMA_WRITE)) return 0;
    struct gw_rdma_peer_region v[GW_WIRE_MAX_STREAMS];
    for (unsigned i = 0; i < rx->n; i++) {
        int r = gw_rdma_mem_register(rx->st[i].c, rx->mem, rx->mem_size, true, &rx->st[i].rmr, &v[i].r, err);
        if (r) return r;
        v[i].stream = i;
        v[i].guest_off = 0;
        rx->st[i].pr.remote_writes = true;
    }
    uint8_t *b;
    size_t len;
    int r = gw_rdma_regions_pack(v, rx->n, &b, &len);
    if (r) return gw_err_set(err, r, "cannot pack RDMA_REGIONS");
    r = gw_session_send(rx->ses, 0, GW_WIRE_RDMA_REGIONS, b, len, err);
    free(b);
    return r;
}

int gw_mig_receiver_start(struct gw_mig_receiver *rx, uint8_t *mem, uint64_t mem_size, struct gw_err *err)
{
    return gw_mig_receiver_start_memfd(rx, mem, -1, mem_size, err);
}

int gw_mig_receiver_start_memfd(struct gw_mig_receiver *rx, uint8_t *mem, int memfd, uint64_t mem_size,
                                struct gw_err *err)
{
    if (mem_size != rx->hello->mem_size)
        return gw_err_set(err, -EINVAL, "guest memory is %llu bytes, the source sends %llu",
                          (unsigned long long)mem_size, (unsigned long long)rx->hello->mem_size);
    rx->mem = mem;
    rx->mem_size = mem_size;
    rx->direct.mem = mem;
    rx->direct.mem_size = mem_size;
    if (rx->fresh_memory && !rx->direct.written) {
        /* One bit per page: 32 KiB per GiB of guest memory. */
        rx->direct.written = calloc((mem_size / GW_PAGE_SIZE + 63) / 64, sizeof(uint64_t));
        if (!rx->direct.written) return gw_err_set(err, -ENOMEM, "out of memory for the written-pages bitmap");
    }
    rx->placer = memfd >= 0 ? gw_placer_direct_fd(&rx->direct, memfd) : gw_placer_direct(&rx->direct);
    int r = offer_rdma(rx, err);
    if (r) return r;
    /* Every stream's bookkeeping is set before any thread runs: threads read each other's. */
    for (unsigned i = 0; i < rx->n; i++) {
        rx->st[i].rx = rx;
        rx->st[i].idx = i;
        rx->st[i].round_done = -1;
    }
    for (unsigned i = 0; i < rx->n; i++) {
        struct rstream *t = &rx->st[i];
        r = pthread_create(&t->th, NULL, rstream_main, t);
        if (r) {
            struct gw_err e;
            gw_err_set(&e, -r, "cannot start receiver thread %u", i);
            pthread_mutex_lock(&rx->mu);
            fail_locked(rx, &e);
            pthread_mutex_unlock(&rx->mu);
            return gw_err_set(err, -r, "%s", e.msg);
        }
        t->started = true;
        char name[16];
        snprintf(name, sizeof name, "mig-recv%u", i % 100u);
        pthread_setname_np(t->th, name);
    }
    return 0;
}

int gw_mig_receiver_next(struct gw_mig_receiver *rx, struct gw_mig_event *ev, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);   /* rx->cv's clock */
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    }
    int r = 0;
    pthread_mutex_lock(&rx->mu);
    if (rx->delivered) {
        free(rx->delivered->data);
        free(rx->delivered);
        rx->delivered = NULL;
    }
    /* Events that arrived before a failure are still delivered, then the failure. */
    while (!rx->head && !rx->err && r != ETIMEDOUT)
        r = timeout_ms < 0 ? pthread_cond_wait(&rx->cv, &rx->mu) : pthread_cond_timedwait(&rx->cv, &rx->mu, &dl);
    if (rx->head) {
        struct evnode *n = rx->head;
        rx->head = n->next;
        if (!rx->head) rx->tail = NULL;
        rx->delivered = n;
        *ev = n->ev;
        r = 0;
    } else {
        r = rx->err ? rx->err : -ETIMEDOUT;
    }
    pthread_mutex_unlock(&rx->mu);
    return r;
}

/* Sends the caller's answer (ACK or RUNNING) on stream 0 if the session is in phase `need`,
 * moving it to `next` first: the source may answer (GO) or hang up (after RUNNING) as soon
 * as the record is out, and the receiving thread must already see the new phase then. */
static int answer(struct gw_mig_receiver *rx, enum gw_wire_type type, enum gw_wire_type acked,
                  enum commit_phase need, enum commit_phase next)
{
    /* MigAck and MigRunning are both { uint32 acked_type = 1; }: a few bytes. */
    uint8_t buf[16];
    size_t n;
    if (type == GW_WIRE_ACK) {
        Godwit__V1__MigAck m = GODWIT__V1__MIG_ACK__INIT;
        m.acked_type = acked;
        n = protobuf_c_message_pack(&m.base, buf);
    } else {
        Godwit__V1__MigRunning m = GODWIT__V1__MIG_RUNNING__INIT;
        m.acked_type = acked;
        n = protobuf_c_message_pack(&m.base, buf);
    }
    struct gw_err e = {0};
    pthread_mutex_lock(&rx->mu);
    int r = rx->err;
    if (!r && rx->phase != need) {
        r = -EINVAL;
        gw_err_set(&e, r, "%s before the %s event", gw_wire_type_name(type), gw_wire_type_name(acked));
        fail_locked(rx, &e);
    }
    if (!r) rx->phase = next;
    pthread_cond_broadcast(&rx->cv); /* a stream waiting for the source's reason re-checks */
    pthread_mutex_unlock(&rx->mu);
    if (!r && (r = gw_session_send(rx->ses, 0, type, buf, n, &e))) {
        pthread_mutex_lock(&rx->mu);
        fail_locked(rx, &e);
        pthread_mutex_unlock(&rx->mu);
    }
    return r;
}

int gw_mig_receiver_synced(struct gw_mig_receiver *rx, uint64_t seq)
{
    Godwit__V1__MigSync m = GODWIT__V1__MIG_SYNC__INIT;
    m.seq = seq;
    uint8_t buf[16];
    size_t n = protobuf_c_message_pack(&m.base, buf);
    struct gw_err e = {0};
    pthread_mutex_lock(&rx->mu);
    int r = rx->err;
    if (!r && rx->phase != PH_TRANSFER) {
        r = -EINVAL;
        gw_err_set(&e, r, "SYNCED after COMMIT");
        fail_locked(rx, &e);
    }
    pthread_mutex_unlock(&rx->mu);
    if (!r && (r = gw_session_send(rx->ses, 0, GW_WIRE_SYNCED, buf, n, &e))) {
        pthread_mutex_lock(&rx->mu);
        fail_locked(rx, &e);
        pthread_mutex_unlock(&rx->mu);
    }
    return r;
}

int gw_mig_receiver_ack(struct gw_mig_receiver *rx)
{
    return answer(rx, GW_WIRE_ACK, GW_WIRE_COMMIT, PH_COMMIT, PH_ACKED);
}

int gw_mig_receiver_running(struct gw_mig_receiver *rx)
{
    return answer(rx, GW_WIRE_RUNNING, GW_WIRE_GO, PH_GO, PH_RUNNING);
}

void gw_mig_receiver_abort(struct gw_mig_receiver *rx, int code, const char *why)
{
    gw_session_send_error(rx->ses, 0, code, why);
    struct gw_err e = { .code = code ? code : -ECANCELED };
    snprintf(e.msg, sizeof e.msg, "aborted: %s", why);
    pthread_mutex_lock(&rx->mu);
    fail_locked(rx, &e);
    pthread_mutex_unlock(&rx->mu);
}

void gw_mig_receiver_stats(struct gw_mig_receiver *rx, struct gw_mig_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&rx->mu);
    for (unsigned i = 0; i < rx->n; i++) {
        gw_codec_stats_add(&out->codec, &rx->st[i].st);
        out->bytes_wire += rx->st[i].bytes_wire;
    }
    pthread_mutex_unlock(&rx->mu);
    out->elapsed_ns = gw_now_ns() - rx->t0;
    double sec = out->elapsed_ns ? (double)out->elapsed_ns / 1e9 : 1e-9;
    out->wire_mib_s = (double)out->bytes_wire / (1 << 20) / sec;
    out->pages_mib_s = (double)out->codec.bytes_out / (1 << 20) / sec;
}

const char *gw_mig_receiver_error(struct gw_mig_receiver *rx)
{
    pthread_mutex_lock(&rx->mu);
    const char *m = rx->errmsg;
    pthread_mutex_unlock(&rx->mu);
    return m;
}

struct gw_session *gw_mig_receiver_take_session(struct gw_mig_receiver *rx)
{
    pthread_mutex_lock(&rx->mu);
    bool started = rx->mem != NULL;
    struct gw_session *s = started ? NULL : rx->ses;
    if (s) rx->ses = NULL;
    pthread_mutex_unlock(&rx->mu);
    return s;
}

void gw_mig_receiver_close(struct gw_mig_receiver *rx)
{
    if (!rx) return;
    pthread_mutex_lock(&rx->mu);
    rx->closing = true;
    if (rx->ses) gw_session_shutdown(rx->ses);
    pthread_cond_broadcast(&rx->cv);
    pthread_mutex_unlock(&rx->mu);
    for (unsigned i = 0; rx->st && i < rx->n; i++) {
        struct rstream *t = &rx->st[i];
        if (t->started) pthread_join(t->th, NULL);
        gw_rbuf_free(&t->buf);
        gw_page_recv_free(&t->pr);
        free(t->pfns);
        gw_rdma_mem_deregister(t->rmr);   /* before its connection closes */
    }
    for (struct evnode *n = rx->head, *next; n; n = next) {
        next = n->next;
        free(n->data);
        free(n);
    }
    if (rx->delivered) {
        free(rx->delivered->data);
        free(rx->delivered);
    }
    gw_session_close(rx->ses);
    pthread_cond_destroy(&rx->cv);
    pthread_mutex_destroy(&rx->mu);
    free(rx->direct.written);
    free(rx->st);
    free(rx);
}
