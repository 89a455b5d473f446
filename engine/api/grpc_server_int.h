/* Internal shape of the gRPC server, shared by its files only:
 *   grpc_server.c  lifecycle, listening, the epoll loop, connection I/O, deadlines
 *   grpc_h2.c      the nghttp2 session of one connection: requests in, responses out
 *   grpc_call.c    the call object and its thread-safe API, the worker pool
 * Locking: srv->lock guards every call's output queue and finish/cancel state and the ready
 * list; everything else about a call and all connection state belongs to the loop thread. */
#ifndef GW_API_GRPC_SERVER_INT_H
#define GW_API_GRPC_SERVER_INT_H

#include "engine/api/grpc_status.h"
#include "engine/api/grpc_addr.h"
#include "engine/api/grpc_server.h"

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>

#define GW_GRPC_PATH_MAX 256
#define GW_GRPC_MSG_MAX 1024  /* longest grpc-message we keep (before escaping) */

struct gw_grpc_method_entry {
    struct gw_grpc_method m;
    char *path;   /* owned copy of m.path */
};

struct gw_out_buf {
    struct gw_out_buf *next;
    size_t len, off;
    uint8_t data[];
};

struct gw_h2_conn;

struct gw_grpc_call {
    atomic_int refs;
    struct gw_grpc_server *srv;

    /* ---- loop thread only ---- */
    struct gw_h2_conn *conn;          /* NULL once the stream is gone */
    int32_t stream_id;
    struct gw_grpc_call *conn_next, *conn_prev;
    const struct gw_grpc_method_entry *method;
    char path[GW_GRPC_PATH_MAX];
    bool bad_path, is_post, ct_ok, auth_ok, peer_ok, headers_done;
    bool timeout_bad;
    uint64_t timeout_ns;              /* from grpc-timeout, 0 = none */
    int heap_idx;                     /* index in the deadline heap, -1 = not there */
    struct gw_grpc_deframer deframer;
    bool request_done, dispatched;
    bool early_done;                  /* the loop finished it before dispatch (an error) */
    size_t held;                      /* request bytes counted against the buffer budgets */
    size_t owed;                      /* bytes received but not yet given back to the stream's
                                       * flow-control window: the connection is over its budget */
    bool begun;                       /* its window is being given back: it runs to the end */
    bool headers_sent, trailers_sent, data_deferred;

    /* ---- set before dispatch, read-only afterwards ---- */
    uint64_t deadline_ns;
    uint8_t *req;
    size_t req_len;
    uint32_t nreq;

    /* ---- guarded by srv->lock ---- */
    struct gw_out_buf *out_head, *out_tail;
    size_t out_bytes;
    uint32_t sends;
    bool finished, cancelled;
    int code;
    char message[GW_GRPC_MSG_MAX];
    char reason[GW_GRPC_REASON_MAX];  /* ErrorInfo reason for the status details, "" = none */
    bool on_ready;
    struct gw_grpc_call *ready_next;
    gw_grpc_cancel_fn on_cancel;
    void *on_cancel_arg;

    /* ---- bidirectional streams (GW_GRPC_BIDI_STREAM), guarded by srv->lock ---- */
    struct gw_bidi_msg *bidi_head, *bidi_tail;   /* request messages not yet handled */
    uint32_t bidi_queued;
    size_t bidi_bytes;
    bool bidi_active;                 /* queued for, or running on, a worker */
    bool bidi_closed;                 /* the client half-closed: finish once all are handled */
    size_t bidi_held;                 /* loop thread only: bidi_bytes when last accounted */

    /* ---- worker queue (guarded by srv->work_lock) ---- */
    struct gw_grpc_call *work_next;
};

struct gw_bidi_msg {
    struct gw_bidi_msg *next;
    uint8_t *buf;
    size_t len;
};

/* Request messages of one bidirectional call waiting for its handler, at most. */
#define GW_GRPC_BIDI_MAX_QUEUED 64u

struct gw_h2_conn {
    int kind;                         /* EV_CONN: first, see grpc_server.c */
    struct gw_grpc_server *srv;
    int fd;
    nghttp2_session *ng;
    struct gw_grpc_call *calls;       /* open calls on this connection */
    uint32_t ncalls;
    uint8_t *wbuf;                    /* bytes nghttp2 produced that the socket did not take */
    size_t wlen, woff, wcap;
    bool epollout;
    uint64_t last_active_ns;
    uint64_t accepted_ns;
    /* It has made a call that needed credentials, with them (or, on a server without a
     * token, any call but the open health service). Until then it may be a stranger: it is
     * closed after GW_GRPC_AUTH_GRACE_MS without a call open, and it is the first to go
     * when the connections are at their limit. */
    bool authed;
    uint64_t held;                    /* request bytes its calls hold (loop only) */
    SSL *ssl;                         /* TLS, or NULL for h2c */
    bool ssl_wants_read;              /* the last TLS write waits for input, not for room */
    uint64_t owed;                    /* sum of its calls' owed bytes (loop only) */
    struct gw_h2_conn *next, *prev;
};

#define GW_GRPC_AUTH_GRACE_MS 10000u

struct gw_grpc_server {
    struct gw_grpc_server_config cfg;
    char *token;
    char *peer_token;
    SSL_CTX *tls;                     /* NULL = h2c */
    char *listen_addr;
    struct gw_grpc_method_entry *methods;
    size_t nmethods, methods_cap;

    int listen_fd, epoll_fd, wake_fd;
    int listen_kind, wake_kind;       /* epoll tags */
    int port;
    bool started;
    atomic_bool stopping;
    pthread_t loop_thread;

    struct gw_h2_conn *conns;
    uint32_t nconns;
    uint64_t held;                    /* request bytes all calls hold (loop only) */
    uint64_t out_queued;              /* response bytes all calls have queued (lock) */
    nghttp2_session_callbacks *ng_cbs;
    nghttp2_option *ng_opt;

    struct gw_grpc_call **heap;       /* deadline min-heap (loop only) */
    size_t heap_len, heap_cap;

    pthread_mutex_t lock;
    struct gw_grpc_call *ready_head, *ready_tail;

    pthread_mutex_t work_lock;
    pthread_cond_t work_cond;
    struct gw_grpc_call *work_head, *work_tail;
    bool work_stop;
    pthread_t *workers;
    uint32_t nworkers;
};

/* grpc_call.c */
struct gw_grpc_call *gw_call_new(struct gw_grpc_server *srv, struct gw_h2_conn *conn,
                                 int32_t stream_id);
/* Loop thread: finishes with code/msg unless finished already (no printf). */
void gw_call_finish_loop(struct gw_grpc_call *c, int code, const char *msg);
/* Loop thread: marks the call cancelled (unless finished) and runs its cancel callback. */
void gw_call_cancel(struct gw_grpc_call *c);
/* Loop thread: the deadline passed: finishes with DEADLINE_EXCEEDED and cancels. */
void gw_call_expire(struct gw_grpc_call *c);
/* Puts c on the ready list (srv->lock held by the caller); returns true when the loop must
 * be woken. */
bool gw_call_mark_ready_locked(struct gw_grpc_call *c);
void gw_call_wake(struct gw_grpc_server *srv);
/* Hands a complete request to the worker pool. */
void gw_call_dispatch(struct gw_grpc_call *c);
/* grpc_bidi.c. Loop thread: queues one request message of a bidirectional call (buf is
 * taken) and hands the call to a worker when none has it; -ENOBUFS when too many wait. */
int gw_call_bidi_push(struct gw_grpc_call *c, uint8_t *buf, size_t len);
/* Loop thread: the client half-closed. */
void gw_call_bidi_close(struct gw_grpc_call *c);
/* Worker: handles the queued messages (from run_call). */
void gw_call_bidi_run(struct gw_grpc_call *c);
/* From call_free: drops what is still queued. */
void gw_call_bidi_free(struct gw_grpc_call *c);
int gw_workers_start(struct gw_grpc_server *srv);
void gw_workers_stop(struct gw_grpc_server *srv);

/* grpc_h2.c */
int gw_h2_callbacks_new(nghttp2_session_callbacks **out);
int gw_h2_conn_session_new(struct gw_h2_conn *conn);
/* Loop thread: recounts the call's buffered request bytes against the connection and server
 * budgets; false when over one of them. release=true frees the deframer first. */
bool gw_h2_call_account(struct gw_grpc_call *c, bool release);
/* Gives waiting streams their flow-control window back while conn fits its budget, and always
 * to one stream when none is receiving (so that some request can always complete). Loop only. */
void gw_h2_conn_repay(struct gw_h2_conn *conn);
/* Loop thread: submits whatever a ready call has (headers, data, trailers). */
void gw_h2_call_ready(struct gw_grpc_call *c);
/* The loop's part of a call whose deadline passed (after gw_call_expire): its trailers when
 * nothing holds them back; else, with output still queued or a window the client keeps
 * shut, the stream is reset and the queue dropped, since either would keep the stream and
 * its memory until the connection ends. */
void gw_h2_call_expired(struct gw_grpc_call *c);

/* grpc_server.c */
const struct gw_grpc_method_entry *gw_server_find_method(const struct gw_grpc_server *srv,
                                                         const char *path);
void gw_server_deadline_add(struct gw_grpc_server *srv, struct gw_grpc_call *c);
void gw_server_deadline_del(struct gw_grpc_server *srv, struct gw_grpc_call *c);
/* Loop thread: forgets the call's stream (unlinks from the connection and the deadline
 * heap), cancels it when unfinished, and drops the stream's reference. */
void gw_server_call_detach(struct gw_grpc_call *c);

#endif
