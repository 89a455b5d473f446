/* Multi-stream sessions (see session.h): opening and accepting N authenticated streams, and a
 * send lock per stream so that any thread can send on any stream. */
#include "engine/transport/session.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "engine/transport/handshake.h"
#include "engine/transport/tls.h"

struct sstream {
    struct gw_conn *c;
    pthread_mutex_t send_mu;      /* one record at a time on c */
    uint64_t features;
    struct gw_hs_source_state hs; /* source: between the halves of the handshake */
};

struct gw_session {
    unsigned n;
    int timeout_ms;
    Godwit__V1__MigHello *hello;  /* destination: stream 0's */
    uint8_t id[GW_WIRE_SESSION_ID_SIZE];
    struct sstream *st;
};

static struct gw_session *session_new(unsigned n, int timeout_ms)
{
    struct gw_session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->st = calloc(n, sizeof *s->st);
    if (!s->st) { free(s); return NULL; }
    s->n = n;
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : GW_SESSION_DEFAULT_TIMEOUT_MS;
    for (unsigned i = 0; i < n; i++) pthread_mutex_init(&s->st[i].send_mu, NULL);
    return s;
}

unsigned gw_session_streams(const struct gw_session *s) { return s->n; }
uint64_t gw_session_features(const struct gw_session *s, unsigned i) { return s->st[i].features; }
const Godwit__V1__MigHello *gw_session_hello(const struct gw_session *s) { return s->hello; }
struct gw_conn *gw_session_conn(struct gw_session *s, unsigned i) { return s->st[i].c; }
int gw_session_timeout_ms(const struct gw_session *s) { return s->timeout_ms; }
void gw_session_id(const struct gw_session *s, uint8_t out[GW_WIRE_SESSION_ID_SIZE])
{
    memcpy(out, s->id, GW_WIRE_SESSION_ID_SIZE);
}

int gw_session_send(struct gw_session *s, unsigned i, enum gw_wire_type type, const void *payload,
                    size_t len, struct gw_err *err)
{
    pthread_mutex_lock(&s->st[i].send_mu);
    int r = gw_conn_send_record(s->st[i].c, type, payload, len, err);
    pthread_mutex_unlock(&s->st[i].send_mu);
    return r;
}

int gw_session_sendv(struct gw_session *s, unsigned i, enum gw_wire_type type, struct iovec *iov, int iovcnt,
                     struct gw_err *err)
{
    pthread_mutex_lock(&s->st[i].send_mu);
    int r = gw_conn_send_recordv(s->st[i].c, type, iov, iovcnt, err);
    pthread_mutex_unlock(&s->st[i].send_mu);
    return r;
}

int gw_session_locked(struct gw_session *s, unsigned i, int (*fn)(void *ctx, struct gw_conn *c, struct gw_err *err),
                      void *ctx, struct gw_err *err)
{
    pthread_mutex_lock(&s->st[i].send_mu);
    int r = fn(ctx, s->st[i].c, err);
    pthread_mutex_unlock(&s->st[i].send_mu);
    return r;
}

int gw_session_send_msg(struct gw_session *s, unsigned i, enum gw_wire_type type, const ProtobufCMessage *m,
                        struct gw_err *err)
{
    uint8_t *b;
    size_t n;
    int r = gw_wire_pack_msg(m, &b, &n);
    if (r) return gw_err_set(err, r, "out of memory for a %s record", gw_wire_type_name(type));
    r = gw_session_send(s, i, type, b, n, err);
    free(b);
    return r;
}

void gw_session_send_error(struct gw_session *s, unsigned i, int code, const char *msg)
{
    pthread_mutex_lock(&s->st[i].send_mu);
    gw_conn_send_error(s->st[i].c, code, msg);
    pthread_mutex_unlock(&s->st[i].send_mu);
}

uint64_t gw_session_bytes_sent(struct gw_session *s, unsigned i)
{
    pthread_mutex_lock(&s->st[i].send_mu);
    uint64_t b = s->st[i].c->bytes_sent;
    pthread_mutex_unlock(&s->st[i].send_mu);
    return b;
}

uint64_t gw_session_bytes_recv(struct gw_session *s, unsigned i)
{
    return __atomic_load_n(&s->st[i].c->bytes_recv, __ATOMIC_RELAXED);
}

void gw_session_shutdown(struct gw_session *s)
{
    for (unsigned i = 0; i < s->n; i++) if (s->st[i].c) gw_conn_shutdown(s->st[i].c);
}

void gw_session_close(struct gw_session *s)
{
    if (!s) return;
    for (unsigned i = 0; i < s->n; i++) {
        gw_conn_close(s->st[i].c);
        pthread_mutex_destroy(&s->st[i].send_mu);
    }
    if (s->hello) godwit__v1__mig_hello__free_unpacked(s->hello, NULL);
    free(s->st);
    free(s);
}

/* ---- source ---- */

static struct gw_hs_params hs_params(const struct gw_session_cfg *cfg)
{
    return (struct gw_hs_params){ .secret = cfg->secret, .secret_len = cfg->secret_len, .features = cfg->features };
}

/* Connects stream i and sends its preamble (when there is one). */
static int stream_connect(struct gw_session *s, unsigned i, const struct gw_session_cfg *cfg, struct gw_err *err)
{
    struct sstream *t = &s->st[i];
    int r = gw_conn_connect(cfg->url, s->timeout_ms, &t->c, err);
    if (!r && (cfg->preamble || cfg->tls)) r = gw_sec_send_preamble(t->c, cfg->tls, i, s->n, cfg->token, err);
    return r;
}

/* Starts TLS on stream i (when asked) and sends its HELLO. */
static int stream_hello(struct gw_session *s, unsigned i, const struct gw_session_cfg *cfg,
                        const uint8_t session[GW_WIRE_SESSION_ID_SIZE], struct gw_err *err)
{
    struct sstream *t = &s->st[i];
    int r = cfg->tls ? gw_tls_wrap(&t->c, cfg->tls, i == 0, err) : 0;
    if (!r && cfg->attach) r = cfg->attach(cfg->attach_ctx, t->c, err);
    if (r) return r;
    Godwit__V1__MigHello h = GODWIT__V1__MIG_HELLO__INIT;
    h.config = i == 0 ? (Godwit__V1__VmConfig *)cfg->config : NULL;
    h.session_id.data = (uint8_t *)session;
    h.session_id.len = GW_WIRE_SESSION_ID_SIZE;
    h.stream_index = i;
    h.nstreams = s->n;
    h.mem_size = cfg->mem_size;
    struct gw_hs_params p = hs_params(cfg);
    return gw_hs_source_hello(t->c, &p, &h, &t->hs, err);
}

static int stream_finish(struct gw_session *s, unsigned i, const struct gw_session_cfg *cfg, struct gw_err *err)
{
    struct gw_hs_params p = hs_params(cfg);
    return gw_hs_source_finish(s->st[i].c, &p, &s->st[i].hs, &s->st[i].features, err);
}

int gw_session_connect(const struct gw_session_cfg *cfg, struct gw_session **out, struct gw_err *err)
{
    if (cfg->nstreams == 0 || cfg->nstreams > GW_WIRE_MAX_STREAMS)
        return gw_err_set(err, -EINVAL, "streams must be 1..%u", GW_WIRE_MAX_STREAMS);
    if (!cfg->url) return gw_err_set(err, -EINVAL, "no destination URL");
    struct gw_session *s = session_new(cfg->nstreams, cfg->timeout_ms);
    if (!s) return gw_err_set(err, -ENOMEM, "out of memory");
    uint8_t session[GW_WIRE_SESSION_ID_SIZE];
    int r = getrandom(session, sizeof session, 0) == (ssize_t)sizeof session ? 0 : -EIO;
    if (r) gw_err_set(err, r, "no random bytes for a session id");
    memcpy(s->id, session, sizeof session);
    /* An RDMA connect completes only when the destination accepts it, and its runner accepts
     * one stream at a time: there each stream is opened and authenticated in turn. */
    bool all_first = !strncmp(cfg->url, "tcp:", 4);
    for (unsigned i = 0; i < s->n && !r; i++) {
        r = stream_connect(s, i, cfg, err);
        if (!r && !all_first) r = stream_hello(s, i, cfg, session, err);
        if (!r && !all_first) r = stream_finish(s, i, cfg, err);
    }
    /* With preambles, all of them are out before the first TLS handshake (which needs the
     * destination runner that the last preamble starts). */
    for (unsigned i = 0; i < s->n && !r && all_first; i++) r = stream_hello(s, i, cfg, session, err);
    for (unsigned i = 0; i < s->n && !r && all_first; i++) r = stream_finish(s, i, cfg, err);
    if (r) {
        gw_session_close(s);
        return r;
    }
    *out = s;
    return 0;
}

/* ---- destination ---- */

/* Whether two HELLOs announce the same session (the decoder checked the id's length). */
static bool same_session(const Godwit__V1__MigHello *a, const Godwit__V1__MigHello *b)
{
    return a->nstreams == b->nstreams && a->mem_size == b->mem_size &&
           !memcmp(a->session_id.data, b->session_id.data, GW_WIRE_SESSION_ID_SIZE);
}

static int accept_rest(struct gw_session *s, struct gw_listener *l, const struct gw_session_cfg *cfg,
                       const struct gw_hs_params *p, struct gw_err *err)
{
    for (unsigned got = 1; got < s->n; got++) {
        struct gw_conn *c;
        Godwit__V1__MigHello *h = NULL;
        uint64_t feat;
        int r = gw_listener_accept(l, s->timeout_ms, &c, err);
        if (r) return r;
        gw_conn_set_timeout(c, s->timeout_ms);
        if ((cfg->attach && (r = cfg->attach(cfg->attach_ctx, c, err))) ||
            (r = gw_hs_destination(c, p, &h, &feat, err))) {
            gw_conn_close(c);
            return r;
        }
        unsigned idx = h->stream_index;
        bool same = same_session(h, s->hello) && !s->st[idx].c;
        godwit__v1__mig_hello__free_unpacked(h, NULL);
        if (!same) {
            gw_conn_send_error(c, -EPROTO, "stream does not belong to this session");
            gw_conn_close(c);
            return gw_err_set(err, -EPROTO, "a connection for another session (or a duplicate stream %u) arrived", idx);
        }
        s->st[idx].c = c;
        s->st[idx].features = feat;
    }
    return 0;
}

int gw_session_accept_conn(struct gw_conn *c, struct gw_listener *l, const struct gw_session_cfg *cfg,
                           struct gw_session **out, struct gw_err *err)
{
    struct gw_hs_params p = hs_params(cfg);
    Godwit__V1__MigHello *hello = NULL;
    uint64_t feat;
    int timeout = cfg->timeout_ms > 0 ? cfg->timeout_ms : GW_SESSION_DEFAULT_TIMEOUT_MS;
    gw_conn_set_timeout(c, timeout);
    int r = cfg->attach ? cfg->attach(cfg->attach_ctx, c, err) : 0;
    if (!r) r = gw_hs_destination(c, &p, &hello, &feat, err);
    if (!r && hello->stream_index != 0)
        r = gw_err_set(err, -EPROTO, "first connection is stream %u, not 0", hello->stream_index);
    if (!r && hello->nstreams > 1 && !l)
        r = gw_err_set(err, -EINVAL, "session has %u streams but there is no listener for them", hello->nstreams);
    struct gw_session *s = r ? NULL : session_new(hello->nstreams, timeout);
    if (!r && !s) r = gw_err_set(err, -ENOMEM, "out of memory");
    if (r) {
        if (hello) godwit__v1__mig_hello__free_unpacked(hello, NULL);
        gw_conn_close(c);
        return r;
    }
    s->hello = hello;
    memcpy(s->id, hello->session_id.data, GW_WIRE_SESSION_ID_SIZE);
    s->st[0].c = c;
    s->st[0].features = feat;
    if ((r = accept_rest(s, l, cfg, &p, err))) {
        gw_session_close(s);
        return r;
    }
    *out = s;
    return 0;
}

int gw_session_accept(struct gw_listener *l, const struct gw_session_cfg *cfg, struct gw_session **out,
                      struct gw_err *err)
{
    struct gw_conn *c;
    int r = gw_listener_accept(l, cfg->timeout_ms > 0 ? cfg->timeout_ms : GW_SESSION_DEFAULT_TIMEOUT_MS, &c, err);
    return r ? r : gw_session_accept_conn(c, l, cfg, out, err);
}

/* Checks the HELLOs hs[0..n) of the handed-over conns: one session of exactly n streams, each
 * index once. Fills by[idx] with the position of stream idx. */
static int check_handover(Godwit__V1__MigHello *const *hs, unsigned n, unsigned *by, struct gw_err *err)
{
    bool seen[GW_WIRE_MAX_STREAMS] = {0};
    for (unsigned i = 0; i < n; i++) {
        unsigned idx = hs[i]->stream_index;
        if (hs[i]->nstreams != n)
            return gw_err_set(err, -EPROTO, "stream %u announces a session of %u streams, but %u were handed over",
                              idx, hs[i]->nstreams, n);
        if (!same_session(hs[i], hs[0]))
            return gw_err_set(err, -EPROTO, "streams of different sessions were handed over together");
        if (idx >= n || seen[idx])
            return gw_err_set(err, -EPROTO, "stream %u was handed over twice", idx);
        seen[idx] = true;
        by[idx] = i;
    }
    return 0;   /* n distinct indices below n: each of 0..n-1 once, stream 0 among them */
}

int gw_session_accept_conns(struct gw_conn **conns, unsigned n, const struct gw_session_cfg *cfg,
                            struct gw_session **out, struct gw_err *err)
{
    Godwit__V1__MigHello *hs[GW_WIRE_MAX_STREAMS] = {0};
    unsigned by[GW_WIRE_MAX_STREAMS];
    uint64_t feat[GW_WIRE_MAX_STREAMS] = {0};
    struct gw_hs_params p = hs_params(cfg);
    int timeout = cfg->timeout_ms > 0 ? cfg->timeout_ms : GW_SESSION_DEFAULT_TIMEOUT_MS;
    struct gw_session *s = NULL;
    int r = 0;
    if (n == 0 || n > GW_WIRE_MAX_STREAMS) {
        r = gw_err_set(err, -EINVAL, "%u connections handed over; a session has 1..%u streams", n, GW_WIRE_MAX_STREAMS);
        goto fail;
    }
    /* Every HELLO first: the source sends them all before it waits for any answer. */
    for (unsigned i = 0; i < n && !r; i++) {
        gw_conn_set_timeout(conns[i], timeout);
        if (cfg->attach) r = cfg->attach(cfg->attach_ctx, conns[i], err);
        if (!r) r = gw_hs_destination_hello(conns[i], &p, &hs[i], err);
    }
    if (!r && (r = check_handover(hs, n, by, err)))
        for (unsigned i = 0; i < n; i++) gw_conn_send_error(conns[i], r, err ? err->msg : "bad set of streams");
    /* Then the rest in stream order, the order in which the source finishes them. */
    for (unsigned idx = 0; idx < n && !r; idx++)
        r = gw_hs_destination_finish(conns[by[idx]], &p, hs[by[idx]], &feat[idx], err);
    if (!r && !(s = session_new(n, timeout))) r = gw_err_set(err, -ENOMEM, "out of memory");
    if (r) goto fail;
    s->hello = hs[by[0]];
    hs[by[0]] = NULL;
    memcpy(s->id, s->hello->session_id.data, GW_WIRE_SESSION_ID_SIZE);
    for (unsigned idx = 0; idx < n; idx++) {
        s->st[idx].c = conns[by[idx]];
        s->st[idx].features = feat[idx];
    }
    for (unsigned i = 0; i < n; i++) if (hs[i]) godwit__v1__mig_hello__free_unpacked(hs[i], NULL);
    *out = s;
    return 0;
fail:
    for (unsigned i = 0; i < n && i < GW_WIRE_MAX_STREAMS; i++)
        if (hs[i]) godwit__v1__mig_hello__free_unpacked(hs[i], NULL);
    for (unsigned i = 0; i < n; i++) gw_conn_close(conns[i]);
    return r;
}
