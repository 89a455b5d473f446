/* Source side of the pre-copy link (see precopy_link.h): a session (engine/transport) of N
 * streams, a page pump (engine/pump) with one lane per stream whose sink sends each lane's
 * batches and END_OF_ROUND records on its own stream, and pre-copy's control records and
 * two-phase commit on stream 0. Control records leave only once the pump is idle, so they
 * follow every page queued before them. A reader thread takes whatever the destination says
 * on stream 0, whenever it says it (the return path). */
#include "precopy/precopy_link.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/common/util.h"
#include "engine/pump/pump.h"
#include "engine/pump/rdma_batch.h"
#include "engine/transport/session.h"

/* Where the session is in the two-phase commit (precopy_link.h). Moves forward only. */
enum commit_phase {
    PH_TRANSFER,      /* pages, rounds, state, digest */
    PH_COMMIT_SENT,   /* "prepare" is out; waiting for READY (ACK) */
    PH_ACKED,         /* the destination is READY; the guest is still ours */
    PH_GO_SENT,       /* the guest is the destination's; waiting for RUNNING */
    PH_RUNNING,       /* the guest runs on the destination */
};

/* A record from the destination, waiting for the caller. */
struct reply {
    enum gw_wire_type type;
    uint8_t *data;            /* malloc'd payload */
    uint32_t len;
};

struct gw_mig_sender {
    struct gw_session *ses;
    struct gw_pump *pump;
    uint64_t mem_size;
    unsigned n;
    uint64_t t0;
    pthread_mutex_t mu;
    int err;                  /* under mu */
    char errmsg[256];
    enum commit_phase phase;  /* under mu */
    bool aborting;            /* under mu: gw_mig_sender_abort was called */
    uint64_t rounds;          /* of the COMMIT, echoed in GO */
    uint64_t sync_seq;        /* under mu: last SYNC sent */
    uint64_t round_pages[GW_WIRE_MAX_STREAMS]; /* lane i's worker only: pages this round */
    void (*sent)(void *ctx, const uint64_t *pfns, uint32_t n);   /* cfg's, on the lanes */
    void *sent_ctx;
    pthread_t reader;         /* stream 0's reader: the return path */
    bool reader_started;
    bool closing;             /* under mu */
    pthread_cond_t reply_cv;  /* a reply arrived or the session failed */
    struct reply replies[8];  /* under mu: answers not yet taken */
    unsigned reply_head, nreplies;
    int timeout_ms;
    /* RDMA WRITE of pages (every stream agreed GW_WIRE_F_RDMA_WRITE): */
    bool rdma;
    const uint8_t *mem;
    struct gw_rdma_mr *local[GW_WIRE_MAX_STREAMS];      /* guest memory on stream i */
    struct gw_rdma_batch rb[GW_WIRE_MAX_STREAMS];       /* lane i's worker only */
    struct gw_rdma_peer_region *regions;                /* set once by the reader, under mu */
    unsigned nregions;
    uint64_t *in_records;   /* pages sent in records since the last SYNC (rdma_batch.h) */
};

/* Takes the pump's first error as the session's when it has none yet. Called with s->mu
 * held; returns the session's error. */
static int adopt_pump_error_locked(struct gw_mig_sender *s)
{
    const char *msg;
    int r;
    if (!s->err && s->pump && (r = gw_pump_error(s->pump, &msg))) {
        s->err = r;
        snprintf(s->errmsg, sizeof s->errmsg, "%s", msg);
    }
    return s->err;
}

/* Records the first error and stops everything: the streams are shut down so that every
 * blocked thread returns promptly. Called with s->mu held. */
static void fail_locked(struct gw_mig_sender *s, const struct gw_err *e)
{
    if (adopt_pump_error_locked(s)) return;
    s->err = e->code ? e->code : -EIO;
    snprintf(s->errmsg, sizeof s->errmsg, "%s", e->msg);
    if (s->ses) gw_session_shutdown(s->ses);
    if (s->pump) gw_pump_fail(s->pump, e);
    pthread_cond_broadcast(&s->reply_cv);   /* a lane may wait for RDMA_REGIONS */
}

static int session_error(struct gw_mig_sender *s)
{
    pthread_mutex_lock(&s->mu);
    int r = adopt_pump_error_locked(s);
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* A call out of the commit order: fails the session (a confused source must not go on with
 * a commit) and returns -EINVAL. Called with s->mu held; returns the session's first error
 * when it had already failed, so a failed session keeps reporting its cause. */
static int misuse_locked(struct gw_mig_sender *s, const char *what)
{
    if (adopt_pump_error_locked(s)) return s->err;
    struct gw_err e;
    gw_err_set(&e, -EINVAL, "%s", what);
    fail_locked(s, &e);
    return -EINVAL;
}

/* ---- the pump's sink: lane i is stream i ---- */

/* RDMA: the destination's regions, once its RDMA_REGIONS arrived (it sends them as soon as
 * its memory is registered, before it reads any batch). NULL with e set when the session
 * failed or none came in time. */
static const struct gw_rdma_peer_region *await_regions(struct gw_mig_sender *s, unsigned *n, struct gw_err *e)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += s->timeout_ms / 1000;
    dl.tv_nsec += (long)(s->timeout_ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    int w = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->regions && !s->err && w != ETIMEDOUT) w = pthread_cond_timedwait(&s->reply_cv, &s->mu, &dl);
    const struct gw_rdma_peer_region *v = s->regions;
    *n = s->nregions;
    if (!v && s->err) gw_err_set(e, s->err, "%s", s->errmsg);
    else if (!v) gw_err_set(e, -ETIMEDOUT, "RDMA: the destination sent no RDMA_REGIONS within %d ms", s->timeout_ms);
    pthread_mutex_unlock(&s->mu);
    return v;
}

struct rdma_send {
    struct gw_rdma_batch *b;
    struct gw_rdma_target t;
    const struct iovec *iov;
    int iovcnt;
    uint32_t npages;
};

static int rdma_send_locked(void *ctx, struct gw_conn *c, struct gw_err *e)
{
    struct rdma_send *a = ctx;
    return gw_rdma_batch_send(a->b, c, &a->t, a->iov, a->iovcnt, a->npages, e);
}

static int sink_write_batch(void *ctx, unsigned lane, struct iovec *iov, int iovcnt, size_t len,
                            const uint64_t *pfns, uint32_t npages, struct gw_err *e)
{
    struct gw_mig_sender *s = ctx;
    (void)len;
    s->round_pages[lane] += npages;
    int r;
    if (s->rdma) {
        struct rdma_send a = { .b = &s->rb[lane], .iov = iov, .iovcnt = iovcnt, .npages = npages,
                               .t = { .mem = s->mem, .mem_size = s->mem_size, .local = s->local[lane],
                                      .stream = lane, .in_records = s->in_records } };
        if (!(a.t.regions = await_regions(s, &a.t.nregions, e))) return e->code;
        r = gw_session_locked(s->ses, lane, rdma_send_locked, &a, e);
    } else {
        r = gw_session_sendv(s->ses, lane, GW_WIRE_PAGE_BATCH, iov, iovcnt, e);
    }
    if (!r && s->sent) s->sent(s->sent_ctx, pfns, npages);
    return r;
}

/* The barrier of a round: END_OF_ROUND(round = tag, pages of this lane, final = flags). */
static int sink_barrier(void *ctx, unsigned lane, uint64_t tag, uint32_t flags, struct gw_err *e)
{
    struct gw_mig_sender *s = ctx;
    Godwit__V1__MigEndOfRound m = GODWIT__V1__MIG_END_OF_ROUND__INIT;
    m.round = tag;
    m.pages = s->round_pages[lane];
    m.final = flags != 0;
    uint8_t buf[64];
    size_t n = protobuf_c_message_pack(&m.base, buf); /* three varints: < 32 bytes */
    s->round_pages[lane] = 0;
    return gw_session_send(s->ses, lane, GW_WIRE_END_OF_ROUND, buf, n, e);
}

static void sink_abort(void *ctx)
{
    struct gw_mig_sender *s = ctx;
    gw_session_shutdown(s->ses);
}

static const struct gw_page_sink_ops session_sink = {
    .write_batch = sink_write_batch, .barrier = sink_barrier, .abort = sink_abort,
};

int gw_mig_send_pages(struct gw_mig_sender *s, const uint64_t *pfns, size_t n)
{
    pthread_mutex_lock(&s->mu);
    int r = s->phase != PH_TRANSFER ? misuse_locked(s, "pages queued after COMMIT") : adopt_pump_error_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (r) return r;
    r = gw_pump_pages(s->pump, pfns, n);
    return r == -ERANGE ? r : r ? session_error(s) : 0;
}

int gw_mig_send_end_of_round(struct gw_mig_sender *s, uint64_t round, bool final,
                             struct gw_mig_stats *st)
{
    pthread_mutex_lock(&s->mu);
    int r = s->phase != PH_TRANSFER ? misuse_locked(s, "END_OF_ROUND after COMMIT") : adopt_pump_error_locked(s);
    pthread_mutex_unlock(&s->mu);
    if (!r && gw_pump_barrier(s->pump, round, final)) r = session_error(s);
    if (st) gw_mig_sender_stats(s, st);
    return r;
}

/* Sends a control record on stream 0 (taking payload) once everything queued before it is
 * sent. Only GO and ERROR may follow COMMIT; GO has its own phase check. */
static int send_control(struct gw_mig_sender *s, enum gw_wire_type type, uint8_t *payload, size_t len)
{
    pthread_mutex_lock(&s->mu);
    int r = adopt_pump_error_locked(s);
    if (!r && s->phase != PH_TRANSFER && type != GW_WIRE_GO && type != GW_WIRE_ERROR) {
        char m[64];
        snprintf(m, sizeof m, "%s sent after COMMIT", gw_wire_type_name(type));
        r = misuse_locked(s, m);
    }
    pthread_mutex_unlock(&s->mu);
    if (!r && gw_pump_drain(s->pump)) r = session_error(s);
    struct gw_err e = {0};
    if (!r && (r = gw_session_send(s->ses, 0, type, payload, len, &e))) {
        pthread_mutex_lock(&s->mu);
        fail_locked(s, &e);
        pthread_mutex_unlock(&s->mu);
    }
    free(payload);
    return r;
}

static int send_msg(struct gw_mig_sender *s, enum gw_wire_type type, const ProtobufCMessage *m)
{
    uint8_t *b;
    size_t n;
    int r = gw_wire_pack_msg(m, &b, &n);
    return r ? r : send_control(s, type, b, n);
}

int gw_mig_send_switchover(struct gw_mig_sender *s, uint64_t round)
{
    Godwit__V1__MigSwitchover m = GODWIT__V1__MIG_SWITCHOVER__INIT;
    m.round = round;
    return send_msg(s, GW_WIRE_SWITCHOVER, &m.base);
}

int gw_mig_send_state(struct gw_mig_sender *s, const void *state, size_t len)
{
    if (len > GW_WIRE_MAX_PAYLOAD) return -EMSGSIZE;
    uint8_t *b = malloc(len ? len : 1);
    if (!b) return -ENOMEM;
    memcpy(b, state, len);
    return send_control(s, GW_WIRE_STATE, b, len);
}

int gw_mig_send_digest(struct gw_mig_sender *s, const struct gw_digest *d)
{
    Godwit__V1__MigDigest m = GODWIT__V1__MIG_DIGEST__INIT;
    m.xxh3_128.data = (uint8_t *)d->b;
    m.xxh3_128.len = GW_DIGEST_SIZE;
    m.mem_size = s->mem_size;
    return send_msg(s, GW_WIRE_DIGEST, &m.base);
}

int gw_mig_send_commit(struct gw_mig_sender *s, uint64_t rounds)
{
    Godwit__V1__MigCommit m = GODWIT__V1__MIG_COMMIT__INIT;
    m.rounds = rounds;
    int r = send_msg(s, GW_WIRE_COMMIT, &m.base); /* refused when not in PH_TRANSFER */
    if (!r) {
        pthread_mutex_lock(&s->mu);
        s->phase = PH_COMMIT_SENT;
        s->rounds = rounds;
        pthread_mutex_unlock(&s->mu);
    }
    return r;
}

int gw_mig_send_go(struct gw_mig_sender *s)
{
    pthread_mutex_lock(&s->mu);
    int r = adopt_pump_error_locked(s);
    if (!r && s->aborting) r = -ECANCELED; /* an abort is on its way: never both */
    if (!r && s->phase != PH_ACKED) r = misuse_locked(s, "GO before the destination's ACK");
    /* From the moment GO may leave, the guest is the destination's: set the phase first so
     * that an abort from here on does not send an ERROR that could not take it back. */
    if (!r) s->phase = PH_GO_SENT;
    pthread_mutex_unlock(&s->mu);
    if (r) return r;
    Godwit__V1__MigGo m = GODWIT__V1__MIG_GO__INIT;
    m.rounds = s->rounds;
    return send_msg(s, GW_WIRE_GO, &m.base);
}

/* ---- the return path: stream 0's reader ----
 * The destination may speak at any time: answers (SYNCED, ACK, RUNNING), its ERROR, or the
 * end of its connection when it dies. A thread reads stream 0 all along; answers are queued
 * for the caller's wait, an ERROR or a broken link fails the session at once (so a dead
 * destination is noticed within moments even while the source only paces its queueing). */

/* Fails the session from the reader, worded after where the commit stands. */
static void reader_fail(struct gw_mig_sender *s, int code, const char *what)
{
    struct gw_err e;
    pthread_mutex_lock(&s->mu);
    if (s->phase == PH_RUNNING) {           /* the source may hang up now: not an error */
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (s->phase == PH_COMMIT_SENT) gw_err_set(&e, code, "waiting for ACK: %s", what);
    else if (s->phase >= PH_GO_SENT)
        gw_err_set(&e, code, "waiting for RUNNING: %s (outcome in doubt: keep the guest paused)", what);
    else gw_err_set(&e, code, "%s", what);
    fail_locked(s, &e);
    pthread_cond_broadcast(&s->reply_cv);
    pthread_mutex_unlock(&s->mu);
}

/* The destination's RDMA_REGIONS: checked against this session, kept for the lanes. Only
 * once, and only when RDMA WRITE was agreed. */
static int take_regions(struct gw_mig_sender *s, const uint8_t *p, size_t len, struct gw_err *e)
{
    if (!s->rdma) return gw_err_set(e, -EPROTO, "RDMA_REGIONS on a session without RDMA WRITE");
    struct gw_rdma_peer_region *v = malloc(GW_WIRE_MAX_RDMA_REGIONS * sizeof *v);
    unsigned n = 0;
    if (!v) return gw_err_set(e, -ENOMEM, "out of memory");
    int r = gw_rdma_regions_unpack(p, len, s->n, s->mem_size, v, &n, e);
    pthread_mutex_lock(&s->mu);
    if (!r && s->regions) r = gw_err_set(e, -EPROTO, "a second RDMA_REGIONS");
    if (!r) {
        s->regions = v;
        s->nregions = n;
        v = NULL;
        pthread_cond_broadcast(&s->reply_cv);
    }
    pthread_mutex_unlock(&s->mu);
    free(v);
    return r;
}

static void *reader_main(void *arg)
{
    struct gw_mig_sender *s = arg;
    struct gw_conn *c = gw_session_conn(s->ses, 0);
    for (;;) {
        struct gw_wire_header h;
        struct gw_err e = {0};
        uint64_t before = c->bytes_recv;
        int r = gw_conn_recv_header(c, &h, &e);
        /* A quiet destination (it only answers requests) is fine: wait on, as long as no
         * byte of a header was consumed. */
        if (r == -ETIMEDOUT && c->bytes_recv == before) {
            pthread_mutex_lock(&s->mu);
            bool stop = s->closing || s->err;
            pthread_mutex_unlock(&s->mu);
            if (stop) break;
            continue;
        }
        struct reply rp = { .type = (enum gw_wire_type)h.type, .len = r ? 0 : h.length };
        if (!r && !(rp.data = malloc(h.length ? h.length : 1)))
            r = gw_err_set(&e, -ENOMEM, "out of memory for a %u-byte record", h.length);
        if (!r) {
            struct iovec v = { rp.data, h.length };
            r = h.length ? gw_conn_recv_payload(c, &v, 1, &e) : 0;
        }
        if (r) {
            free(rp.data);
            pthread_mutex_lock(&s->mu);
            bool quiet = s->closing || s->err;
            pthread_mutex_unlock(&s->mu);
            if (!quiet) reader_fail(s, r, e.msg);
            break;
        }
        if (rp.type == GW_WIRE_RDMA_REGIONS) {
            r = take_regions(s, rp.data, rp.len, &e);
            free(rp.data);
            if (r) {
                reader_fail(s, r, e.msg);
                break;
            }
            continue;
        }
        if (rp.type == GW_WIRE_ERROR) {
            int rr;
            Godwit__V1__MigError *m = gw_wire_unpack_error(rp.data, rp.len, &rr);
            char msg[200];
            pthread_mutex_lock(&s->mu);
            bool started = s->phase >= PH_GO_SENT;
            pthread_mutex_unlock(&s->mu);
            snprintf(msg, sizeof msg, "%s: %s", started ? "destination did not start the guest"
                                                        : "destination refused the migration",
                     m ? m->message : "(malformed ERROR)");
            if (m) godwit__v1__mig_error__free_unpacked(m, NULL);
            free(rp.data);
            struct gw_err pe;
            gw_err_set(&pe, -EPROTO, "%s", msg);
            pthread_mutex_lock(&s->mu);
            fail_locked(s, &pe);
            pthread_cond_broadcast(&s->reply_cv);
            pthread_mutex_unlock(&s->mu);
            break;
        }
        pthread_mutex_lock(&s->mu);
        bool full = s->nreplies == GW_ARRAY_SIZE(s->replies);
        if (!full) s->replies[(s->reply_head + s->nreplies++) % GW_ARRAY_SIZE(s->replies)] = rp;
        pthread_cond_broadcast(&s->reply_cv);
        pthread_mutex_unlock(&s->mu);
        if (full) {
            free(rp.data);
            reader_fail(s, -EPROTO, "the destination sent records nobody asked for");
            break;
        }
        /* Nothing follows RUNNING: the destination may hang up at once, which is no
         * failure; the caller takes the RUNNING from the queue. */
        if (rp.type == GW_WIRE_RUNNING) break;
    }
    return NULL;
}

/* Waits up to timeout_ms for the next record from the destination into *rp (the caller
 * frees rp->data). Returns 0, the session's error, or -ETIMEDOUT. */
static int next_reply(struct gw_mig_sender *s, struct reply *rp, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    int r = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->nreplies && !adopt_pump_error_locked(s) && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&s->reply_cv, &s->mu, &dl);
    if (s->nreplies) {
        *rp = s->replies[s->reply_head];
        s->reply_head = (s->reply_head + 1) % GW_ARRAY_SIZE(s->replies);
        s->nreplies--;
        r = 0;
    } else {
        r = s->err ? s->err : -ETIMEDOUT;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

/* Waits for the destination's answer: `want` in phase `need` moves the session to `next`. */
static int await_reply(struct gw_mig_sender *s, enum gw_wire_type want, enum commit_phase need,
                       enum commit_phase next, int timeout_ms)
{
    struct gw_err e = {0};
    const char *wname = gw_wire_type_name(want);
    pthread_mutex_lock(&s->mu);
    int r = adopt_pump_error_locked(s);
    if (!r && s->phase != need) {
        char m[80];
        snprintf(m, sizeof m, "waiting for %s without having sent %s", wname,
                 want == GW_WIRE_ACK ? "COMMIT" : "GO");
        r = misuse_locked(s, m);
    }
    pthread_mutex_unlock(&s->mu);
    if (r) return r;
    struct reply rp = {0};
    r = next_reply(s, &rp, timeout_ms);
    if (r == -ETIMEDOUT)
        gw_err_set(&e, r, "waiting for %s: no answer within %d ms%s", wname, timeout_ms,
                   want == GW_WIRE_RUNNING ? " (outcome in doubt: keep the guest paused)" : "");
    else if (!r && rp.type != want)
        r = gw_err_set(&e, -EPROTO, "unexpected record %s while waiting for %s", gw_wire_type_name(rp.type), wname);
    free(rp.data);
    pthread_mutex_lock(&s->mu);
    if (r) fail_locked(s, &e);   /* keeps the first error: the reader's, when it failed */
    else s->phase = next;
    pthread_mutex_unlock(&s->mu);
    return r ? session_error(s) : 0;
}

int gw_mig_sender_sync(struct gw_mig_sender *s, int timeout_ms)
{
    pthread_mutex_lock(&s->mu);
    int r = adopt_pump_error_locked(s);
    uint64_t seq = ++s->sync_seq;
    if (!r && s->phase != PH_TRANSFER) r = misuse_locked(s, "SYNC after COMMIT");
    pthread_mutex_unlock(&s->mu);
    if (r) return r;
    Godwit__V1__MigSync m = GODWIT__V1__MIG_SYNC__INIT;
    m.seq = seq;
    if ((r = send_msg(s, GW_WIRE_SYNC, &m.base))) return r;
    struct gw_err e = {0};
    struct reply rp = {0};
    r = next_reply(s, &rp, timeout_ms);
    if (r == -ETIMEDOUT) {
        gw_err_set(&e, r, "waiting for SYNCED: no answer within %d ms", timeout_ms);
    } else if (!r && rp.type != GW_WIRE_SYNCED) {
        r = gw_err_set(&e, -EPROTO, "unexpected record %s while waiting for SYNCED", gw_wire_type_name(rp.type));
    } else if (!r) {
        Godwit__V1__MigSync *sm = godwit__v1__mig_sync__unpack(NULL, rp.len, rp.data);
        if (!sm || sm->seq != seq)
            r = gw_err_set(&e, -EPROTO, "SYNCED for the wrong request");
        if (sm) godwit__v1__mig_sync__free_unpacked(sm, NULL);
    }
    free(rp.data);
    if (r) {
        pthread_mutex_lock(&s->mu);
        fail_locked(s, &e);
        pthread_mutex_unlock(&s->mu);
        return session_error(s);
    }
    /* The destination applied every record sent so far, and the lanes are idle (SYNC went
     * after them and this thread queues nothing meanwhile): no older copy of any page waits
     * there any more, so every raw page may go by RDMA WRITE again. */
    if (s->in_records) memset(s->in_records, 0, (s->mem_size / GW_PAGE_SIZE + 63) / 64 * sizeof(uint64_t));
    return 0;
}

int gw_mig_sender_wait_ack(struct gw_mig_sender *s, int timeout_ms)
{
    return await_reply(s, GW_WIRE_ACK, PH_COMMIT_SENT, PH_ACKED, timeout_ms);
}

int gw_mig_sender_wait_running(struct gw_mig_sender *s, int timeout_ms)
{
    return await_reply(s, GW_WIRE_RUNNING, PH_GO_SENT, PH_RUNNING, timeout_ms);
}

void gw_mig_sender_set_link_rate(struct gw_mig_sender *s, uint64_t bytes_per_s)
{
    gw_pump_set_link_rate(s->pump, bytes_per_s);
}

void gw_mig_sender_stats(struct gw_mig_sender *s, struct gw_mig_stats *out)
{
    memset(out, 0, sizeof *out);
    gw_pump_stats(s->pump, &out->codec);
    for (unsigned i = 0; i < s->n; i++) {
        out->bytes_wire += gw_session_bytes_sent(s->ses, i);
        out->rdma_bytes += __atomic_load_n(&s->rb[i].pages_written, __ATOMIC_RELAXED) * GW_PAGE_SIZE;
    }
    out->elapsed_ns = gw_now_ns() - s->t0;
    double sec = out->elapsed_ns ? (double)out->elapsed_ns / 1e9 : 1e-9;
    out->wire_mib_s = (double)out->bytes_wire / (1 << 20) / sec;
    out->pages_mib_s = (double)out->codec.bytes_in / (1 << 20) / sec;
}

int gw_mig_sender_failed(struct gw_mig_sender *s)
{
    pthread_mutex_lock(&s->mu);
    int r = adopt_pump_error_locked(s);
    pthread_mutex_unlock(&s->mu);
    return r;
}

const char *gw_mig_sender_error(struct gw_mig_sender *s)
{
    pthread_mutex_lock(&s->mu);
    adopt_pump_error_locked(s);
    const char *m = s->errmsg; /* written once, before err is set; stable afterwards */
    pthread_mutex_unlock(&s->mu);
    return m;
}

void gw_mig_sender_abort(struct gw_mig_sender *s, int code, const char *why)
{
    pthread_mutex_lock(&s->mu);
    bool failed = adopt_pump_error_locked(s) != 0, gone = s->phase >= PH_GO_SENT;
    s->aborting = true; /* decided under the lock: a GO racing with us is refused */
    pthread_mutex_unlock(&s->mu);
    /* A failed session's streams are shut down; the ERROR would not get through. After GO
     * the guest is the destination's: an ERROR cannot call it back, so none is sent. */
    if (!failed && !gone) {
        /* Nothing queued goes out any more: only the batches already on their way, then
         * the ERROR. */
        gw_pump_discard(s->pump);
        Godwit__V1__MigError m = GODWIT__V1__MIG_ERROR__INIT;
        m.code = code;
        m.message = (char *)why;
        send_msg(s, GW_WIRE_ERROR, &m.base);
    }
    struct gw_err e = { .code = code ? code : -ECANCELED };
    snprintf(e.msg, sizeof e.msg, "aborted: %s", why);
    pthread_mutex_lock(&s->mu);
    fail_locked(s, &e);
    pthread_mutex_unlock(&s->mu);
}

void gw_mig_sender_cancel(struct gw_mig_sender *s, int code, const char *why)
{
    pthread_mutex_lock(&s->mu);
    bool skip = adopt_pump_error_locked(s) || s->aborting || s->phase >= PH_GO_SENT;
    s->aborting = true; /* from here a GO is refused: the cancel wins or GO was already out */
    pthread_mutex_unlock(&s->mu);
    if (skip) return;
    struct gw_err e = { .code = code ? code : -ECANCELED };
    snprintf(e.msg, sizeof e.msg, "aborted: %s", why);
    /* The lanes drop what is queued and finish only the batch in their hands; then the
     * ERROR says why; then every stream is shut so that the caller's thread, wherever it
     * waits, returns at once. */
    gw_pump_stop(s->pump, &e);
    gw_pump_discard(s->pump);
    gw_session_send_error(s->ses, 0, e.code, why);
    pthread_mutex_lock(&s->mu);
    if (!s->err) {
        s->err = e.code;
        snprintf(s->errmsg, sizeof s->errmsg, "%s", e.msg);
    }
    gw_session_shutdown(s->ses);
    pthread_mutex_unlock(&s->mu);
}

void gw_mig_sender_close(struct gw_mig_sender *s)
{
    if (!s) return;
    /* The pump first: its lanes use the session until they stop. */
    gw_pump_close(s->pump);
    if (s->reader_started) {
        pthread_mutex_lock(&s->mu);
        s->closing = true;
        pthread_mutex_unlock(&s->mu);
        gw_session_shutdown(s->ses);
        pthread_join(s->reader, NULL);
    }
    for (unsigned i = 0; i < s->n; i++) {
        gw_rdma_mem_deregister(s->local[i]);   /* before its connection closes */
        gw_rdma_batch_free(&s->rb[i]);
    }
    free(s->regions);
    free(s->in_records);
    gw_session_close(s->ses);
    for (unsigned i = 0; i < s->nreplies; i++)
        free(s->replies[(s->reply_head + i) % GW_ARRAY_SIZE(s->replies)].data);
    pthread_cond_destroy(&s->reply_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int gw_mig_sender_open(const struct gw_mig_sender_cfg *cfg, struct gw_mig_sender **out,
                       struct gw_err *err)
{
    if (cfg->nstreams == 0 || cfg->nstreams > GW_WIRE_MAX_STREAMS)
        return gw_err_set(err, -EINVAL, "streams must be 1..%u", GW_WIRE_MAX_STREAMS);
    if (!cfg->mem || cfg->mem_size == 0 || cfg->mem_size % GW_PAGE_SIZE)
        return gw_err_set(err, -EINVAL, "guest memory must be a non-empty multiple of 4096 bytes");
    if (cfg->batch_pages > GW_WIRE_MAX_BATCH_PAGES)
        return gw_err_set(err, -EINVAL, "batch must be at most %u pages", GW_WIRE_MAX_BATCH_PAGES);
    struct gw_mig_sender *s = calloc(1, sizeof *s);
    if (!s) return gw_err_set(err, -ENOMEM, "out of memory");
    s->mem_size = cfg->mem_size;
    s->n = cfg->nstreams;
    s->sent = cfg->sent;
    s->sent_ctx = cfg->sent_ctx;
    s->mem = cfg->mem;
    s->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : GW_MIG_DEFAULT_TIMEOUT_MS;
    s->t0 = gw_now_ns();
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->reply_cv, &ca);
    pthread_condattr_destroy(&ca);
    struct gw_session_cfg sc = {
        .url = cfg->url, .nstreams = cfg->nstreams, .secret = cfg->secret, .secret_len = cfg->secret_len,
        .mem_size = cfg->mem_size, .config = cfg->config,
        .features = (cfg->codec == GW_CODEC_NONE ? 0 : GW_WIRE_F_LZ4) | GW_WIRE_F_RDMA_WRITE,
        .timeout_ms = cfg->timeout_ms, .preamble = cfg->preamble, .tls = cfg->tls, .token = cfg->token,
        .attach = cfg->attach, .attach_ctx = cfg->attach_ctx,
    };
    int r = gw_session_connect(&sc, &s->ses, err);
    if (r) {
        gw_mig_sender_close(s);
        return r;
    }
    /* RDMA WRITE where every stream agreed to it (the handshake offers it only on connections
     * with verbs): guest memory is registered for local reads on each stream's connection. */
    s->rdma = true;
    for (unsigned i = 0; i < s->n; i++) s->rdma &= (gw_session_features(s->ses, i) & GW_WIRE_F_RDMA_WRITE) != 0;
    if (s->rdma && !(s->in_records = calloc((cfg->mem_size / GW_PAGE_SIZE + 63) / 64, sizeof(uint64_t)))) {
        gw_mig_sender_close(s);
        return gw_err_set(err, -ENOMEM, "out of memory for the RDMA page bitmap");
    }
    for (unsigned i = 0; s->rdma && i < s->n; i++) {
        if ((r = gw_rdma_mem_register(gw_session_conn(s->ses, i), (void *)cfg->mem, cfg->mem_size, false,
                                      &s->local[i], NULL, err))) {
            gw_mig_sender_close(s);
            return r;
        }
    }
    /* lz4 only where every stream agreed to it: one encoder setting for all lanes. */
    enum gw_codec_mode codec = cfg->codec;
    for (unsigned i = 0; i < s->n; i++)
        if (!(gw_session_features(s->ses, i) & GW_WIRE_F_LZ4)) codec = GW_CODEC_NONE;
    struct gw_pump_cfg pc = {
        .mem = cfg->mem, .mem_size = cfg->mem_size, .nlanes = s->n, .batch_pages = cfg->batch_pages,
        .codec = codec, .lz4_accel = cfg->lz4_accel, .sink = &session_sink, .sink_ctx = s,
    };
    if ((r = gw_pump_open(&pc, &s->pump, err))) {
        gw_mig_sender_close(s);
        return r;
    }
    if ((r = pthread_create(&s->reader, NULL, reader_main, s))) {
        gw_mig_sender_close(s);
        return gw_err_set(err, -r, "cannot start the reader of stream 0");
    }
    s->reader_started = true;
    pthread_setname_np(s->reader, "mig-return");
    *out = s;
    return 0;
}
