/* Gathering the streams of one incoming session when they start with a preamble
 * (engine/transport/tls.h): read each preamble, check that all streams are of one session
 * (same count and token, each index once, the TLS choice this side makes), then run TLS on
 * each in stream order. The migration handshake (HELLO, and the token inside it) follows
 * with gw_mig_receiver_accept_conns. */
#ifndef GW_PRECOPY_INCOMING_STREAMS_H
#define GW_PRECOPY_INCOMING_STREAMS_H

#include "engine/transport/conn.h"

struct gw_tls_ctx;

#define GW_INCOMING_WAITING_MAX 32u   /* connections of a listener waiting for their preambles */
#define GW_INCOMING_PREAMBLE_MS 5000  /* each one's time to send it (a source sends it at once) */

/* From l (first, when not NULL, is a connection already accepted from it, taken; accepting
 * until the count of the first valid preamble is reached; a connection whose preamble is bad
 * or does not fit is closed and the wait goes on, within timeout_ms; on a TCP listener up to
 * GW_INCOMING_WAITING_MAX connections wait for their preambles at once, 5 s each, the oldest
 * making way for a new one, so silent strangers delay no stream),
 * or from fds[0..nfds) (accepted elsewhere; taken even on error; any bad one fails). tls: the
 * server context, NULL = plaintext. expect_token (GW_SEC_TOKEN_SIZE bytes, or NULL = any): the
 * session token the daemon reserved, which a preamble must carry before it counts. On success
 * out[0..*n_out) are the streams in order (the caller's) with no timeout set. Returns 0 or
 * -errno (e says why). */
int gw_incoming_streams(struct gw_listener *l, struct gw_conn *first, const int *fds, unsigned nfds, struct gw_tls_ctx *tls,
                        const uint8_t *expect_token, int timeout_ms, struct gw_conn **out, unsigned *n_out,
                        struct gw_err *e);

#endif
