/* An authenticated multi-stream session: N connections (streams) between one source and one
 * destination, each authenticated with the cluster secret (handshake.h), carrying typed
 * records (engine/codec/wire.h) in both directions. What the records mean is the user's
 * business (pre-copy today, post-copy and backups next): the session knows no rounds, no
 * phases and no commit.
 *
 * Threads: any thread may send on any stream at any time (a per-stream lock keeps records
 * whole), so either side can answer, request or abort whenever it needs to: that is the
 * return path. Each stream is read by exactly one thread, chosen by the user, with
 * gw_conn_recv_header / gw_conn_recv_payload / gw_conn_recv_record on gw_session_conn().
 *
 *     source:       gw_session_connect(&cfg, &s, &err);  all N streams, HELLO first on each
 *     destination:  gw_session_accept(listener, &dcfg, &s, &err)   (or _accept_conn(s) for
 *                   sockets accepted elsewhere); gw_session_hello(s) is stream 0's HELLO
 *     both:         gw_session_send(s, i, type, ...), readers on gw_session_conn(s, i),
 *                   gw_session_shutdown(s) to wake everyone, gw_session_close(s).
 *
 * The transport's security and framing live under struct gw_conn's ops (TCP, RDMA, TLS):
 * nothing here depends on which. */
#ifndef GW_TRANSPORT_SESSION_H
#define GW_TRANSPORT_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "engine/transport/conn.h"

struct gw_tls_ctx;

#define GW_SESSION_DEFAULT_TIMEOUT_MS 60000

struct gw_session_cfg {
    const char *url;                       /* source: "tcp:HOST:PORT" or "rdma:HOST:PORT" */
    unsigned nstreams;                     /* source: 1..GW_WIRE_MAX_STREAMS */
    const uint8_t *secret;                 /* cluster secret, caller-owned */
    size_t secret_len;
    uint64_t mem_size;                     /* source: announced in every HELLO */
    const Godwit__V1__VmConfig *config;    /* source: stream 0's HELLO; may be NULL */
    uint64_t features;                     /* GW_WIRE_F_* this side can use */
    int timeout_ms;                        /* connect, accept, each send/receive; 0 = default */
    /* Source: stream security (tls.h). preamble: every stream starts with one (what a
     * destination runner or migration port expects), carrying token (NULL = none); then TLS
     * when tls is set (a client context, caller-owned). Every preamble goes out before any
     * TLS handshake starts. Both unset: bare records (unit tests, RDMA). */
    bool preamble;
    struct gw_tls_ctx *tls;
    const uint8_t *token;
    /* Tests only, for the RDMA test double (tests/lib/rdma_loopback.h; no RDMA hardware runs
     * on the test host): called for every stream's connection before its HELLO, to give it
     * RDMA verbs (gw_conn.rdma). NULL in production, where only RDMA connections have verbs. */
    int (*attach)(void *ctx, struct gw_conn *c, struct gw_err *err);
    void *attach_ctx;
};

struct gw_session;

/* Source: connects cfg->nstreams streams to cfg->url and authenticates each. Over TCP every
 * stream says HELLO before any handshake is finished (a destination daemon hands a session
 * to a runner only once all its streams are there); over RDMA each is opened in turn. */
int gw_session_connect(const struct gw_session_cfg *cfg, struct gw_session **out, struct gw_err *err);

/* Destination: accepts stream 0 on l, authenticates it, then the other streams of the same
 * session (same id, nstreams, mem_size; each index once). l stays the caller's. */
int gw_session_accept(struct gw_listener *l, const struct gw_session_cfg *cfg, struct gw_session **out,
                      struct gw_err *err);
/* The same with stream 0 accepted elsewhere; c is taken even on error. l may be NULL when
 * the session has one stream. */
int gw_session_accept_conn(struct gw_conn *c, struct gw_listener *l, const struct gw_session_cfg *cfg,
                           struct gw_session **out, struct gw_err *err);
/* All n streams accepted elsewhere, not yet handshaken, in any order: every HELLO is read
 * first, then the handshakes finish in stream order. The streams must be exactly 0..n-1 of
 * one session with nstreams == n, else -EPROTO (and an ERROR to the source); n is
 * 1..GW_WIRE_MAX_STREAMS, else -EINVAL. Every conn is taken even on error. */
int gw_session_accept_conns(struct gw_conn **conns, unsigned n, const struct gw_session_cfg *cfg,
                            struct gw_session **out, struct gw_err *err);

unsigned gw_session_streams(const struct gw_session *s);
/* Features agreed on stream i (GW_WIRE_F_*). */
uint64_t gw_session_features(const struct gw_session *s, unsigned i);
/* Destination: stream 0's HELLO (config, mem_size, nstreams), owned by s. NULL on a source. */
const Godwit__V1__MigHello *gw_session_hello(const struct gw_session *s);
/* Stream i's connection, for its one reading thread. */
struct gw_conn *gw_session_conn(struct gw_session *s, unsigned i);
int gw_session_timeout_ms(const struct gw_session *s);
/* The session's random id (the source chose it; both HELLO and the handshake carry it). */
void gw_session_id(const struct gw_session *s, uint8_t out[GW_WIRE_SESSION_ID_SIZE]);

/* Sends one record on stream i, from any thread. Errors as gw_conn_send_record. */
int gw_session_send(struct gw_session *s, unsigned i, enum gw_wire_type type, const void *payload,
                    size_t len, struct gw_err *err);
/* The same with the payload in iov[1..iovcnt) (iov[0] is the header's slot, see
 * gw_conn_send_recordv). */
int gw_session_sendv(struct gw_session *s, unsigned i, enum gw_wire_type type, struct iovec *iov, int iovcnt,
                     struct gw_err *err);
/* Runs fn(ctx, stream i's connection, err) with stream i's send lock held: for work that
 * must not interleave with records sent on it (RDMA WRITEs and then the record naming them:
 * they share the connection's send queue and completions). fn may send records on the
 * connection itself (gw_conn_send_recordv). Returns fn's result. */
int gw_session_locked(struct gw_session *s, unsigned i, int (*fn)(void *ctx, struct gw_conn *c, struct gw_err *err),
                      void *ctx, struct gw_err *err);
/* Packs m and sends it on stream i. */
int gw_session_send_msg(struct gw_session *s, unsigned i, enum gw_wire_type type, const ProtobufCMessage *m,
                        struct gw_err *err);
/* ERROR(code, msg) on stream i; best effort. */
void gw_session_send_error(struct gw_session *s, unsigned i, int code, const char *msg);

/* Record bytes (headers included) sent and received on stream i so far. bytes_recv is only
 * exact when read by stream i's reader or after it stopped. */
uint64_t gw_session_bytes_sent(struct gw_session *s, unsigned i);
uint64_t gw_session_bytes_recv(struct gw_session *s, unsigned i);

/* Wakes every thread blocked on any stream (they fail); safe from any thread, repeatedly. */
void gw_session_shutdown(struct gw_session *s);
/* Closes every stream. No thread may use s any more. Safe on NULL. */
void gw_session_close(struct gw_session *s);

#endif
