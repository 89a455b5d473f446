/* A small blocking gRPC client over HTTP/2, cleartext (h2c, prior knowledge) or TLS (ALPN h2,
 * the server's certificate checked against a CA and the host name or address it was reached
 * by), for the `godwit` CLI, daemons calling their peers, and tests. One connection, one call at a time: a client object is used by one
 * thread (open several clients for concurrency). Every call takes a deadline, sends the
 * bearer token when one is set, and reports the gRPC status the server sent, or one the
 * client made up for a local failure (UNAVAILABLE when the connection broke,
 * DEADLINE_EXCEEDED when the deadline passed first, INTERNAL for a malformed response). */
#ifndef GW_API_GRPC_CLIENT_H
#define GW_API_GRPC_CLIENT_H

#include "engine/api/grpc_wire.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

struct gw_grpc_client;

struct gw_grpc_status {
    int code;              /* enum gw_grpc_code */
    char message[512];     /* grpc-message, percent-decoded, truncated to fit */
};

/* Connects to addr ("host:port", "[v6]:port", "unix:/path") within timeout_ms.
 * Returns 0 or -errno. */
int gw_grpc_client_connect(const char *addr, int timeout_ms, struct gw_grpc_client **out);

/* TLS for gw_grpc_client_connect_tls: ca verifies the server ("" = the system's roots);
 * cert and key (both or neither) are this client's certificate for mutual TLS. */
struct gw_grpc_client_tls {
    const char *ca, *cert, *key;
};
/* The same over TLS, the handshake within timeout_ms. Returns 0, -EACCES (the server's
 * certificate is not trusted, or ours was refused; err says which), or -errno. err may be
 * NULL. */
int gw_grpc_client_connect_tls(const char *addr, int timeout_ms, const struct gw_grpc_client_tls *tls,
                               struct gw_grpc_client **out, char *err, size_t errlen);
/* Sets (copies) the bearer token sent with every call; NULL or "" clears it. 0 or -ENOMEM. */
int gw_grpc_client_set_token(struct gw_grpc_client *c, const char *token);
/* Largest response message accepted (default 64 MiB); larger ones end the call with
 * RESOURCE_EXHAUSTED. */
void gw_grpc_client_set_max_message(struct gw_grpc_client *c, uint32_t bytes);
void gw_grpc_client_close(struct gw_grpc_client *c);

/* Called once per response message. Return 0 to go on, non-zero to cancel the call (the
 * status becomes CANCELLED). msg is freed by the client after the callback returns. */
typedef int (*gw_grpc_client_msg_fn)(void *arg, const ProtobufCMessage *msg);
/* Raw variant: the message bytes, valid during the callback. */
typedef int (*gw_grpc_client_raw_fn)(void *arg, const uint8_t *msg, size_t len);

/* A unary call. On return st holds the status; when st->code is OK, *resp is the unpacked
 * response (free with protobuf_c_message_free_unpacked), else *resp is NULL.
 * timeout_ms 0 = no deadline. Returns 0 when the call reached a status (whatever its code),
 * or -errno when the connection is unusable (st is then UNAVAILABLE; reconnect). */
int gw_grpc_client_unary(struct gw_grpc_client *c, const char *path,
                         const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                         ProtobufCMessage **resp, uint32_t timeout_ms, struct gw_grpc_status *st);

/* A server-streaming call: fn gets each response message in order, then the call returns
 * with the final status. Returns as gw_grpc_client_unary. */
int gw_grpc_client_stream(struct gw_grpc_client *c, const char *path,
                          const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                          gw_grpc_client_msg_fn fn, void *arg, uint32_t timeout_ms,
                          struct gw_grpc_status *st);

/* The raw call both of the above are made of: req is len bytes of serialized request. */
int gw_grpc_client_call(struct gw_grpc_client *c, const char *path, const uint8_t *req,
                        size_t len, gw_grpc_client_raw_fn fn, void *arg, uint32_t timeout_ms,
                        struct gw_grpc_status *st);

#endif
