/* Source side of a migration session: N streams, each a connection with its own queue,
 * sender thread and page encoder. The caller (the pre-copy engine) fills per-stream batches
 * and queues them; threads encode from guest memory and send. Raw pages are not copied: a
 * batch goes out as one sendmsg whose iovecs point at the guest pages (only descriptors and
 * lz4 blocks are built in a per-stream scratch buffer). One mutex guards the queues,
 * counters and the first error; batches are large (4 MiB of pages by default), so the lock
 * is taken a few hundred times per second, not per page. Each stream has its own condition
 * variable, so queueing a batch wakes only the thread that sends it. */
#include "engine/transport/migration.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "engine/common/util.h"
#include "engine/transport/handshake.h"
#include "engine/transport/tls.h"

#define QCAP 8u
#define CHUNK_SHIFT 9 /* 2 MiB of pages per partition chunk */

enum item_kind { IT_PAGES, IT_EOR, IT_RECORD };

struct item {
    enum item_kind kind;
    uint32_t n;             /* IT_PAGES: pages in pfns */
    uint64_t *pfns;         /* batch_pages entries, owned by the slot */
    enum gw_wire_type type; /* IT_RECORD */
    uint8_t *payload;       /* IT_RECORD: malloc'd, freed by the thread */
    size_t len;
    uint64_t round;         /* IT_EOR */
    bool final;
};

struct stream {
    struct gw_mig_sender *s;
    unsigned idx;
    struct gw_conn *c;
    struct gw_hs_source_state hs;   /* between the halves of the handshake */
    pthread_t th;
    bool started, cv_init;
    pthread_cond_t work;    /* signalled when this stream gets an item or must stop */
    struct item q[QCAP];    /* guarded by s->mu */
    unsigned head, count;
    uint64_t enq, done;     /* items queued / finished, for waiting on a ticket */
    uint64_t *pend;         /* the caller's batch being filled */
    uint32_t npend;
    /* Sender thread only: */
    struct gw_page_encoder enc;
    uint8_t *out;           /* gw_page_batch_scratch_bound(batch) bytes */
    struct iovec *iov;      /* batch + 2: the header slot, the table, the pages */
    uint64_t round_pages;
    /* Published under s->mu after each item: */
    struct gw_codec_stats st;
    uint64_t bytes_wire;
};

/* Where the session is in the two-phase commit (migration.h). Moves forward only. */
enum commit_phase {
    PH_TRANSFER,      /* pages, rounds, state, digest */
    PH_COMMIT_SENT,   /* "prepare" is out; waiting for READY (ACK) */
    PH_ACKED,         /* the destination is READY; the guest is still ours */
    PH_GO_SENT,       /* the guest is the destination's; waiting for RUNNING */
    PH_RUNNING,       /* the guest runs on the destination */
};

struct gw_mig_sender {
    const uint8_t *mem;
    uint64_t mem_size;
    unsigned n, batch;
    uint64_t t0;
    pthread_mutex_t mu;
    pthread_cond_t done;
    bool stop;
    int err;
    char errmsg[256];
    uint64_t link_bps;
    enum commit_phase phase;  /* under mu */
    bool aborting;            /* under mu: gw_mig_sender_abort was called */
    uint64_t rounds;          /* of the COMMIT, echoed in GO */
    uint64_t sync_seq;        /* under mu: last SYNC sent */
    struct stream *st;
};

/* Shuts every stream down and wakes its thread and any waiting caller. */
static void stop_streams_locked(struct gw_mig_sender *s)
{
    for (unsigned i = 0; i < s->n; i++) {
        if (s->st[i].c) gw_conn_shutdown(s->st[i].c);
        if (s->st[i].cv_init) pthread_cond_signal(&s->st[i].work);
    }
    pthread_cond_broadcast(&s->done);
}

/* Records the first error and wakes everyone; the other streams are shut down so their
 * threads stop promptly. Called with s->mu held. */
static void fail_locked(struct gw_mig_sender *s, const struct gw_err *e)
{
    if (s->err) return;
    s->err = e->code ? e->code : -EIO;
    snprintf(s->errmsg, sizeof s->errmsg, "%s", e->msg);
    stop_streams_locked(s);
}

/* A call out of the commit order: fails the session (a confused source must not go on with
 * a commit) and returns -EINVAL. Called with s->mu held; returns the session's first error
 * when it had already failed, so a failed session keeps reporting its cause. */
static int misuse_locked(struct gw_mig_sender *s, const char *what)
{
    if (s->err) return s->err;
    struct gw_err e;
    gw_err_set(&e, -EINVAL, "%s", what);
    fail_locked(s, &e);
    return -EINVAL;
}

static int send_eor(struct stream *t, const struct item *it, struct gw_err *e)
{
    Godwit__V1__MigEndOfRound m = GODWIT__V1__MIG_END_OF_ROUND__INIT;
    m.round = it->round;
    m.pages = t->round_pages;
    m.final = it->final;
    uint8_t buf[64];
    size_t n = protobuf_c_message_pack(&m.base, buf); /* three varints: < 32 bytes */
    t->round_pages = 0;
    return gw_conn_send_record(t->c, GW_WIRE_END_OF_ROUND, buf, n, e);
}

static int process(struct stream *t, struct item *it, struct gw_err *e)
{
    struct gw_mig_sender *s = t->s;
    int r;
    switch (it->kind) {
    case IT_PAGES: {
        size_t len;
        int cnt;
        /* iov[0] is the record header's slot. */
        r = gw_page_encode_batch_iov(&t->enc, s->mem, s->mem_size, it->pfns, it->n, t->out,
                                     gw_page_batch_scratch_bound(s->batch), t->iov + 1, &cnt, &len);
        if (r) return gw_err_set(e, r, "stream %u: encoding a batch failed", t->idx);
        t->round_pages += it->n;
        return gw_conn_send_recordv(t->c, GW_WIRE_PAGE_BATCH, t->iov, cnt + 1, e);
    }
    case IT_EOR:
        return send_eor(t, it, e);
    case IT_RECORD:
        r = gw_conn_send_record(t->c, it->type, it->payload, it->len, e);
        free(it->payload);
        it->payload = NULL;
        return r;
    }
    return -EINVAL;
}

static void *stream_main(void *arg)
{
    struct stream *t = arg;
    struct gw_mig_sender *s = t->s;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && t->count == 0) pthread_cond_wait(&t->work, &s->mu);
        if (t->count == 0) break;
        struct item *it = &t->q[t->head];
        bool skip = s->err != 0; /* after a failure, drain without sending */
        gw_page_encoder_set_link_rate(&t->enc, s->link_bps / s->n);
        pthread_mutex_unlock(&s->mu);
        struct gw_err e = {0};
        int r = skip ? 0 : process(t, it, &e);
        if (skip && it->kind == IT_RECORD) { free(it->payload); it->payload = NULL; }
        pthread_mutex_lock(&s->mu);
        if (r) fail_locked(s, &e);
        t->st = t->enc.st;
        t->bytes_wire = t->c->bytes_sent;
        t->head = (t->head + 1) % QCAP;
        t->count--;
        t->done++;
        pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queues an item on stream t, waiting for room. Returns the ticket (t->enq after it), or 0
 * when the session has failed. Called with s->mu held; fill copies the item in. */
static uint64_t enqueue_locked(struct stream *t, const struct item *src)
{
    struct gw_mig_sender *s = t->s;
    while (!s->err && t->count == QCAP) pthread_cond_wait(&s->done, &s->mu);
    if (s->err) return 0;
    struct item *it = &t->q[(t->head + t->count) % QCAP];
    uint64_t *keep = it->pfns;
    *it = *src;
    it->pfns = keep;
    if (src->kind == IT_PAGES) memcpy(keep, src->pfns, sizeof *keep * src->n);
    t->count++;
    pthread_cond_signal(&t->work);
    return ++t->enq;
}

static int wait_ticket_locked(struct stream *t, uint64_t ticket)
{
    struct gw_mig_sender *s = t->s;
    while (!s->err && t->done < ticket) pthread_cond_wait(&s->done, &s->mu);
    return s->err;
}

static int flush_locked(struct stream *t)
{
    if (!t->npend) return 0;
    struct item it = { .kind = IT_PAGES, .n = t->npend, .pfns = t->pend };
    t->npend = 0;
    return enqueue_locked(t, &it) ? 0 : t->s->err;
}

int gw_mig_send_pages(struct gw_mig_sender *s, const uint64_t *pfns, size_t n)
{
    uint64_t npfn = s->mem_size / GW_PAGE_SIZE;
    int r = 0;
    pthread_mutex_lock(&s->mu);
    if (s->phase != PH_TRANSFER) r = misuse_locked(s, "pages queued after COMMIT");
    for (size_t i = 0; !r && i < n && !(r = s->err); i++) {
        if (pfns[i] >= npfn) { r = -ERANGE; break; }
        struct stream *t = &s->st[(pfns[i] >> CHUNK_SHIFT) % s->n];
        t->pend[t->npend++] = pfns[i];
        if (t->npend == s->batch) r = flush_locked(t);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

int gw_mig_send_end_of_round(struct gw_mig_sender *s, uint64_t round, bool final,
                             struct gw_mig_stats *st)
{
    uint64_t tickets[GW_WIRE_MAX_STREAMS];
    int r = 0;
    pthread_mutex_lock(&s->mu);
    if (s->phase != PH_TRANSFER) r = misuse_locked(s, "END_OF_ROUND after COMMIT");
    for (unsigned i = 0; i < s->n && !r; i++) {
        struct item it = { .kind = IT_EOR, .round = round, .final = final };
        if (!(r = flush_locked(&s->st[i])))
            r = (tickets[i] = enqueue_locked(&s->st[i], &it)) ? 0 : s->err;
    }
    for (unsigned i = 0; i < s->n && !r; i++) r = wait_ticket_locked(&s->st[i], tickets[i]);
    pthread_mutex_unlock(&s->mu);
    if (st) gw_mig_sender_stats(s, st);
    return r;
}

/* Queues a control record on stream 0 (taking payload) and waits until it is sent. Only
 * GO and ERROR may follow COMMIT; GO has its own phase check. */
static int send_control(struct gw_mig_sender *s, enum gw_wire_type type, uint8_t *payload, size_t len)
{
    struct stream *t = &s->st[0];
    struct item it = { .kind = IT_RECORD, .type = type, .payload = payload, .len = len };
    pthread_mutex_lock(&s->mu);
    uint64_t ticket = 0;
    if (s->phase != PH_TRANSFER && type != GW_WIRE_GO && type != GW_WIRE_ERROR) {
        char m[64];
        snprintf(m, sizeof m, "%s sent after COMMIT", gw_wire_type_name(type));
        misuse_locked(s, m);
    } else {
        ticket = enqueue_locked(t, &it);
    }
    int r = ticket ? wait_ticket_locked(t, ticket) : s->err;
    pthread_mutex_unlock(&s->mu);
    if (!ticket) free(payload);
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
    int r = s->err;
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

/* Reads the destination's answer on stream 0: `want` in phase `need` moves the session to
 * `next`. Only the caller reads stream 0, so its receive timeout is ours to change. */
static int await_reply(struct gw_mig_sender *s, enum gw_wire_type want, enum commit_phase need,
                       enum commit_phase next, int timeout_ms)
{
    struct gw_conn *c = s->st[0].c;
    struct gw_rbuf b = {0};
    struct gw_wire_header h;
    struct gw_err e = {0};
    const char *wname = gw_wire_type_name(want);
    pthread_mutex_lock(&s->mu);
    int r = s->err;
    if (!r && s->phase != need) {
        char m[80];
        snprintf(m, sizeof m, "waiting for %s without having sent %s", wname,
                 want == GW_WIRE_ACK ? "COMMIT" : "GO");
        r = misuse_locked(s, m);
    }
    pthread_mutex_unlock(&s->mu);
    if (r) return r;
    gw_conn_set_timeout(c, timeout_ms);
    r = gw_conn_recv_record(c, &h, &b, &e);
    if (r) {
        struct gw_err t = e;
        gw_err_set(&e, r, "waiting for %s: %s%s", wname, t.msg,
                   want == GW_WIRE_RUNNING ? " (outcome in doubt: keep the guest paused)" : "");
    } else if (h.type == GW_WIRE_ERROR) {
        Godwit__V1__MigError *m = gw_wire_unpack_error(b.data, h.length, &r);
        r = gw_err_set(&e, -EPROTO, "%s: %s",
                       want == GW_WIRE_ACK ? "destination refused the migration"
                                           : "destination did not start the guest",
                       m ? m->message : "(malformed ERROR)");
        if (m) godwit__v1__mig_error__free_unpacked(m, NULL);
    } else if (h.type != want) {
        r = gw_err_set(&e, -EPROTO, "unexpected record %s while waiting for %s",
                       gw_wire_type_name(h.type), wname);
    }
    gw_rbuf_free(&b);
    pthread_mutex_lock(&s->mu);
    if (r) fail_locked(s, &e);
    else s->phase = next;
    pthread_mutex_unlock(&s->mu);
    return r;
}

int gw_mig_sender_sync(struct gw_mig_sender *s, int timeout_ms)
{
    pthread_mutex_lock(&s->mu);
    int r = s->err;
    uint64_t seq = ++s->sync_seq;
    if (!r && s->phase != PH_TRANSFER) r = misuse_locked(s, "SYNC after COMMIT");
    pthread_mutex_unlock(&s->mu);
    if (r) return r;
    Godwit__V1__MigSync m = GODWIT__V1__MIG_SYNC__INIT;
    m.seq = seq;
    if ((r = send_msg(s, GW_WIRE_SYNC, &m.base))) return r;
    struct gw_conn *c = s->st[0].c;
    struct gw_rbuf b = {0};
    struct gw_wire_header h;
    struct gw_err e = {0};
    gw_conn_set_timeout(c, timeout_ms);
    r = gw_conn_recv_record(c, &h, &b, &e);
    if (r) {
        struct gw_err t = e;
        gw_err_set(&e, r, "waiting for SYNCED: %s", t.msg);
    } else if (h.type == GW_WIRE_ERROR) {
        Godwit__V1__MigError *em = gw_wire_unpack_error(b.data, h.length, &r);
        r = gw_err_set(&e, -EPROTO, "destination refused the migration: %s", em ? em->message : "(malformed ERROR)");
        if (em) godwit__v1__mig_error__free_unpacked(em, NULL);
    } else if (h.type != GW_WIRE_SYNCED) {
        r = gw_err_set(&e, -EPROTO, "unexpected record %s while waiting for SYNCED", gw_wire_type_name(h.type));
    } else {
        Godwit__V1__MigSync *sm = godwit__v1__mig_sync__unpack(NULL, h.length, b.data);
        if (!sm || sm->seq != seq)
            r = gw_err_set(&e, -EPROTO, "SYNCED for the wrong request");
        if (sm) godwit__v1__mig_sync__free_unpacked(sm, NULL);
    }
    gw_rbuf_free(&b);
    if (r) {
        pthread_mutex_lock(&s->mu);
        fail_locked(s, &e);
        pthread_mutex_unlock(&s->mu);
    }
    return r;
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
    pthread_mutex_lock(&s->mu);
    s->link_bps = bytes_per_s;
    pthread_mutex_unlock(&s->mu);
}

void gw_mig_sender_stats(struct gw_mig_sender *s, struct gw_mig_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&s->mu);
    for (unsigned i = 0; i < s->n; i++) {
        gw_codec_stats_add(&out->codec, &s->st[i].st);
        out->bytes_wire += s->st[i].bytes_wire;
    }
    pthread_mutex_unlock(&s->mu);
    out->elapsed_ns = gw_now_ns() - s->t0;
    double sec = out->elapsed_ns ? (double)out->elapsed_ns / 1e9 : 1e-9;
    out->wire_mib_s = (double)out->bytes_wire / (1 << 20) / sec;
    out->pages_mib_s = (double)out->codec.bytes_in / (1 << 20) / sec;
}

const char *gw_mig_sender_error(struct gw_mig_sender *s)
{
    pthread_mutex_lock(&s->mu);
    const char *m = s->errmsg; /* written once, before err is set; stable afterwards */
    pthread_mutex_unlock(&s->mu);
    return m;
}

void gw_mig_sender_abort(struct gw_mig_sender *s, int code, const char *why)
{
    pthread_mutex_lock(&s->mu);
    bool failed = s->err != 0, gone = s->phase >= PH_GO_SENT;
    s->aborting = true; /* decided under the lock: a GO racing with us is refused */
    pthread_mutex_unlock(&s->mu);
    /* A failed session's stream 0 is shut down; the ERROR would not get through. After GO
     * the guest is the destination's: an ERROR cannot call it back, so none is sent. */
    if (!failed && !gone) {
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

void gw_mig_sender_close(struct gw_mig_sender *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    /* Work still queued means the caller gave up mid-round: do not wait for a slow peer. */
    for (unsigned i = 0; s->st && i < s->n; i++) {
        if (s->st[i].count) {
            struct gw_err e = { .code = -ECANCELED, .msg = "session closed with pages queued" };
            fail_locked(s, &e);
        }
    }
    for (unsigned i = 0; s->st && i < s->n; i++) if (s->st[i].cv_init) pthread_cond_signal(&s->st[i].work);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; s->st && i < s->n; i++) {
        struct stream *t = &s->st[i];
        if (t->started) pthread_join(t->th, NULL);
        if (t->cv_init) pthread_cond_destroy(&t->work);
        gw_conn_close(t->c);
        for (unsigned k = 0; k < QCAP; k++) free(t->q[k].pfns);
        free(t->pend);
        free(t->out);
        free(t->iov);
    }
    pthread_cond_destroy(&s->done);
    pthread_mutex_destroy(&s->mu);
    free(s->st);
    free(s);
}

static struct gw_hs_params hs_params(const struct gw_mig_sender_cfg *cfg)
{
    return (struct gw_hs_params){ .secret = cfg->secret, .secret_len = cfg->secret_len,
                                  .features = cfg->codec == GW_CODEC_NONE ? 0 : GW_WIRE_F_LZ4 };
}

/* Sets a stream up, connects it and sends its preamble (when there is one). */
static int stream_connect(struct gw_mig_sender *s, struct stream *t, const struct gw_mig_sender_cfg *cfg,
                          struct gw_err *err)
{
    t->s = s;
    pthread_cond_init(&t->work, NULL);
    t->cv_init = true;
    t->pend = calloc(s->batch, sizeof *t->pend);
    t->out = malloc(gw_page_batch_scratch_bound(s->batch));
    t->iov = calloc(s->batch + 2, sizeof *t->iov);
    bool ok = t->pend && t->out && t->iov;
    for (unsigned k = 0; k < QCAP; k++) ok &= (t->q[k].pfns = calloc(s->batch, sizeof(uint64_t))) != NULL;
    if (!ok) return gw_err_set(err, -ENOMEM, "out of memory");
    gw_page_encoder_init(&t->enc, cfg->codec, cfg->lz4_accel);
    int timeout = cfg->timeout_ms > 0 ? cfg->timeout_ms : GW_MIG_DEFAULT_TIMEOUT_MS;
    int r = gw_conn_connect(cfg->url, timeout, &t->c, err);
    if (!r && (cfg->preamble || cfg->tls)) r = gw_sec_send_preamble(t->c, cfg->tls, t->idx, s->n, cfg->token, err);
    return r;
}

/* Starts TLS on the stream (when asked) and sends its HELLO. */
static int stream_open(struct gw_mig_sender *s, struct stream *t, const struct gw_mig_sender_cfg *cfg,
                       const uint8_t session[GW_WIRE_SESSION_ID_SIZE], struct gw_err *err)
{
    int r = cfg->tls ? gw_tls_wrap(&t->c, cfg->tls, t->idx == 0, err) : 0;
    if (r) return r;
    Godwit__V1__MigHello h = GODWIT__V1__MIG_HELLO__INIT;
    h.config = t->idx == 0 ? (Godwit__V1__VmConfig *)cfg->config : NULL;
    h.session_id.data = (uint8_t *)session;
    h.session_id.len = GW_WIRE_SESSION_ID_SIZE;
    h.stream_index = t->idx;
    h.nstreams = s->n;
    h.mem_size = s->mem_size;
    struct gw_hs_params p = hs_params(cfg);
    return gw_hs_source_hello(t->c, &p, &h, &t->hs, err);
}

/* Finishes the stream's handshake and starts its thread. */
static int stream_start(struct stream *t, const struct gw_mig_sender_cfg *cfg, struct gw_err *err)
{
    struct gw_hs_params p = hs_params(cfg);
    uint64_t feat;
    int r = gw_hs_source_finish(t->c, &p, &t->hs, &feat, err);
    if (r) return r;
    if (cfg->codec != GW_CODEC_NONE && !(feat & GW_WIRE_F_LZ4)) t->enc.mode = GW_CODEC_NONE;
    if ((r = pthread_create(&t->th, NULL, stream_main, t)))
        return gw_err_set(err, -r, "cannot start sender thread %u", t->idx);
    t->started = true;
    return 0;
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
    s->mem = cfg->mem;
    s->mem_size = cfg->mem_size;
    s->n = cfg->nstreams;
    s->batch = cfg->batch_pages ? cfg->batch_pages : GW_MIG_DEFAULT_BATCH_PAGES;
    s->t0 = gw_now_ns();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->done, NULL);
    s->st = calloc(s->n, sizeof *s->st);
    if (!s->st) {
        gw_mig_sender_close(s);
        return gw_err_set(err, -ENOMEM, "out of memory");
    }
    uint8_t session[GW_WIRE_SESSION_ID_SIZE];
    int r = getrandom(session, sizeof session, 0) == (ssize_t)sizeof session ? 0 : -EIO;
    if (r) gw_err_set(err, r, "no random bytes for a session id");
    /* Over TCP every stream is connected and has said HELLO before any handshake is
     * finished: a destination daemon's migration port hands a session to a runner only once
     * all its streams are there. An RDMA connect completes only when the destination
     * accepts it, and its runner accepts one stream at a time: there each stream is opened
     * and authenticated in turn. */
    bool all_first = cfg->url && !strncmp(cfg->url, "tcp:", 4);
    for (unsigned i = 0; i < s->n && !r; i++) {
        s->st[i].idx = i;
        r = stream_connect(s, &s->st[i], cfg, err);
        if (!r && !all_first) r = stream_open(s, &s->st[i], cfg, session, err);
        if (!r && !all_first) r = stream_start(&s->st[i], cfg, err);
    }
    /* With preambles, all of them are out before the first TLS handshake (which needs the
     * destination runner that the last preamble starts). */
    for (unsigned i = 0; i < s->n && !r && all_first; i++) r = stream_open(s, &s->st[i], cfg, session, err);
    for (unsigned i = 0; i < s->n && !r && all_first; i++) r = stream_start(&s->st[i], cfg, err);
    if (r) {
        gw_mig_sender_close(s);
        return r;
    }
    *out = s;
    return 0;
}
