/* A gRPC server over cleartext HTTP/2 (h2c with prior knowledge), built on nghttp2 and
 * protobuf-c. It is what godwitd serves its API with.
 *
 * Threads: one event-loop thread owns every socket and nghttp2 session (epoll, non-blocking
 * sockets, so a slow or silent peer never holds up another). Handlers run on a fixed pool of
 * worker threads, so a handler may block (take a lock, query SQLite) without stalling I/O;
 * nothing is spawned per call.
 *
 * Handlers. A method is registered with a path ("/godwit.v1.Godwit/GetVm"), a kind (unary or
 * server-streaming), optionally the request's protobuf-c descriptor, and a handler:
 *
 *   static int get_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
 *   {
 *       const Godwit__V1__GetVmRequest *req = (const void *)msg;
 *       Godwit__V1__GetVmResponse resp = GODWIT__V1__GET_VM_RESPONSE__INIT;
 *       ...
 *       if (!found)
 *           return gw_grpc_call_error(call, GW_GRPC_NOT_FOUND, "no VM named %s", req->name);
 *       gw_grpc_call_send(call, &resp.base);   // packs at once: stack messages are fine
 *       return GW_GRPC_OK;
 *   }
 *
 * The handler's return value finishes the call (trailers grpc-status/grpc-message), unless it
 * returns GW_GRPC_PENDING: it then keeps the call (gw_grpc_call_ref) and finishes it later
 * from any thread. That is how a server-streaming handler such as WatchJob works: it takes a
 * reference, hands the call to the job, returns GW_GRPC_PENDING; the job thread calls
 * gw_grpc_call_send() for each event and gw_grpc_call_finish() at the end, then
 * gw_grpc_call_unref(). gw_grpc_call_send() fails with -ECANCELED once the client has gone,
 * reset the stream or the deadline passed, and gw_grpc_call_on_cancel() can ask to be told.
 *
 * The request message passed to a handler is owned by the server and valid only until the
 * handler returns; a handler that finishes later copies what it needs. */
#ifndef GW_API_GRPC_SERVER_H
#define GW_API_GRPC_SERVER_H

#include "engine/api/grpc_wire.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_grpc_server;
struct gw_grpc_call;

struct gw_grpc_server_config {
    const char *listen;            /* "host:port", "[v6addr]:port", "unix:/path"; port 0 = any */
    const char *token;             /* bearer token clients must send; NULL or "" = no auth */
    /* Bearer token of the GW_GRPC_PEER methods (other daemons of the cluster, with a
     * credential derived from the cluster secret); they never take the operator's token.
     * NULL or "": those methods refuse every caller. */
    const char *peer_token;
    /* TLS (ALPN h2) with this certificate and key; NULL = h2c. tls_client_ca: mutual TLS,
     * clients must present a certificate it signed (NULL = none asked). */
    const char *tls_cert, *tls_key, *tls_client_ca;
    uint32_t max_message_bytes;    /* largest request message; 0 = 4 MiB */
    uint32_t max_connections;      /* further connections are closed at once; 0 = 256 */
    uint32_t max_streams;          /* concurrent streams per connection; 0 = 128 */
    uint32_t workers;              /* handler threads; 0 = 4 */
    uint32_t idle_timeout_ms;      /* close a connection with no call and no input; 0 = 5 min */
    uint32_t max_send_queue_bytes; /* per-call queued output before send fails; 0 = 16 MiB */
    uint64_t max_send_total_bytes; /* queued output over all calls before a send fails; 0 =
                                    * 256 MiB (at least max_send_queue_bytes): clients that
                                    * stop reading on many streams cannot grow it further.
                                    * Streams may fill three quarters of it, unary replies
                                    * all: stalled streams leave room for other calls */
    uint32_t max_conn_buffer_bytes;/* request bytes one connection may have buffered across
                                    * its streams; 0 = max(16 MiB, 2 * max_message_bytes) */
    uint64_t max_buffer_bytes;     /* the same over all connections; 0 = 256 MiB (at least
                                    * max_conn_buffer_bytes). Over a budget: RESOURCE_EXHAUSTED */
};

/* BIDI_STREAM: the handler runs once per request message, in order, while the stream is open
 * (grpc_bidi.c); returning OK waits for the next one (the client's half-close finishes the
 * call with OK), any other code finishes the call. */
enum gw_grpc_kind { GW_GRPC_UNARY = 0, GW_GRPC_SERVER_STREAM = 1, GW_GRPC_BIDI_STREAM = 2 };

/* Method flags. */
#define GW_GRPC_NO_AUTH 1u  /* callable without the bearer token (health checks) */
/* Runs the handler on the event-loop thread instead of a worker: two thread hand-offs fewer
 * per call, for handlers that only read memory under a short lock and never block. A slow
 * INLINE handler stalls every connection, so the flag is for quick reads only. */
#define GW_GRPC_INLINE 2u
/* Called by other daemons: authenticated by the peer token only (see peer_token). */
#define GW_GRPC_PEER 4u

/* Returned by a handler that keeps the call and finishes it later. */
#define GW_GRPC_PENDING (-1)

/* Runs on a worker thread. msg is the unpacked request when the method was registered with a
 * descriptor (NULL otherwise: see gw_grpc_call_request). Returns a gw_grpc_code, which
 * finishes the call, or GW_GRPC_PENDING. A unary handler returning OK must have sent exactly
 * one message (otherwise the client gets INTERNAL). */
typedef int (*gw_grpc_handler_fn)(struct gw_grpc_call *call, const ProtobufCMessage *msg,
                                  void *arg);

struct gw_grpc_method {
    const char *path;                              /* copied */
    enum gw_grpc_kind kind;
    const ProtobufCMessageDescriptor *request;     /* NULL = raw bytes */
    gw_grpc_handler_fn handler;
    void *arg;
    unsigned flags;
};

/* Creates a server (nothing is bound yet). Returns 0 or -errno (-EINVAL for a bad config). */
int gw_grpc_server_new(const struct gw_grpc_server_config *cfg, struct gw_grpc_server **out);
/* Adds a method; only before gw_grpc_server_start. -EEXIST for a duplicate path, -EBUSY
 * when already started. */
int gw_grpc_server_register(struct gw_grpc_server *s, const struct gw_grpc_method *m);
/* Binds, listens and starts the loop and worker threads. Returns 0 or -errno. */
int gw_grpc_server_start(struct gw_grpc_server *s);
/* The bound TCP port (useful with port 0), or 0 for a unix socket / before start. */
int gw_grpc_server_port(const struct gw_grpc_server *s);
/* Closes every connection (open calls are cancelled), stops and joins the threads. Handlers
 * still holding calls may go on calling send/finish (they get -ECANCELED). Idempotent. */
void gw_grpc_server_stop(struct gw_grpc_server *s);
/* Stops the server if needed and frees it. Every call reference taken by handlers must have
 * been dropped before (the calls point back at the server). */
void gw_grpc_server_free(struct gw_grpc_server *s);

/* ---- calls ------------------------------------------------------------------------------ */

/* The raw request message (without the 5-byte prefix); owned by the call. */
const uint8_t *gw_grpc_call_request(const struct gw_grpc_call *c, size_t *len);
/* The method path, e.g. "/godwit.v1.Godwit/GetVm"; owned by the call. */
const char *gw_grpc_call_path(const struct gw_grpc_call *c);
/* Monotonic deadline in ns (gw_now_ns clock), 0 when the client set none. */
uint64_t gw_grpc_call_deadline(const struct gw_grpc_call *c);
/* True once the client went away, reset the stream, the deadline passed or the server stopped. */
bool gw_grpc_call_cancelled(const struct gw_grpc_call *c);

/* Queues one response message (packed now; msg stays the caller's). Thread-safe.
 * Returns 0, -ECANCELED (call gone), -EALREADY (already finished), -EINVAL (second message on
 * a unary call, or over 4 GiB), -ENOBUFS (more than max_send_queue_bytes waiting on this call,
 * or over all calls more than max_send_total_bytes, three quarters of it for a stream: clients
 * read too slowly), -ENOMEM. */
int gw_grpc_call_send(struct gw_grpc_call *c, const ProtobufCMessage *msg);
int gw_grpc_call_send_bytes(struct gw_grpc_call *c, const void *buf, size_t len);
/* Ends the call with code and a printf-style message (NULL = none), after the queued messages.
 * Thread-safe. Returns 0, or -EALREADY when it was already finished or cancelled. */
int gw_grpc_call_finish(struct gw_grpc_call *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* For handlers: records the message that goes with the code they return; returns code. */
int gw_grpc_call_error(struct gw_grpc_call *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same with a machine-readable reason (e.g. "NO_CAPACITY", at most 47 characters of
 * [A-Z_]) sent as google.rpc.ErrorInfo in grpc-status-details-bin (grpc_status.h). */
int gw_grpc_call_error_reason(struct gw_grpc_call *c, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

void gw_grpc_call_ref(struct gw_grpc_call *c);
void gw_grpc_call_unref(struct gw_grpc_call *c);

/* Asks for fn(c, arg) once when the call is cancelled before it finished. fn runs on the
 * loop thread (it must not block) or, when the call is already cancelled, at once on the
 * caller's thread. One callback per call; NULL fn removes it. */
typedef void (*gw_grpc_cancel_fn)(struct gw_grpc_call *c, void *arg);
void gw_grpc_call_on_cancel(struct gw_grpc_call *c, gw_grpc_cancel_fn fn, void *arg);

#endif
