/* The per-connection handshake: the source says HELLO (version, features, VM config,
 * nonce), the destination answers CHALLENGE (its nonce, agreed features), then each side
 * proves it holds the cluster secret with AUTH = HMAC-SHA256(secret, "godwit-mig-v1" ||
 * role || source nonce || destination nonce). The source proves first; the destination
 * checks in constant time and answers ERROR "authentication failed" on a mismatch, so both
 * sides report the same clear cause. Fresh nonces on both sides defeat replay; the role
 * byte keeps one side's MAC from being reflected back as the other's. */
#ifndef GW_TRANSPORT_HANDSHAKE_H
#define GW_TRANSPORT_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/transport/conn.h"

struct gw_hs_params {
    const uint8_t *secret;     /* cluster secret, caller-owned, 1..1024 bytes */
    size_t secret_len;
    uint64_t features;         /* GW_WIRE_F_* this side can use */
};

/* HMAC-SHA256(secret, "godwit-mig-v1" || role || nonce_src || nonce_dst) into mac[32].
 * Returns 0 or -EIO. */
int gw_hs_mac(const uint8_t *secret, size_t secret_len, uint8_t role,
              const uint8_t nonce_src[GW_WIRE_NONCE_SIZE], const uint8_t nonce_dst[GW_WIRE_NONCE_SIZE],
              uint8_t mac[GW_WIRE_MAC_SIZE]);

/* Source side on connection c. hello is filled by the caller (config, session_id,
 * stream_index, nstreams, mem_size); version, features and nonce are set here (the nonce
 * field points into a buffer of this call only during the call). Sets c->stream to the
 * stream index. On success *features gets the agreed set. Returns 0; -EACCES
 * "authentication failed" (wrong secret on either side); -EPROTO for an ERROR from the peer
 * or an unexpected record (err says which); or a transport error. */
int gw_hs_source(struct gw_conn *c, const struct gw_hs_params *p, Godwit__V1__MigHello *hello,
                 uint64_t *features, struct gw_err *err);

/* Destination side: receives and checks the HELLO, challenges, verifies the source's MAC and
 * proves its own. On success *hello_out is the source's HELLO (caller frees it with
 * godwit__v1__mig_hello__free_unpacked(h, NULL)), c->stream is its stream index and
 * *features the agreed set. Errors as gw_hs_source. */
int gw_hs_destination(struct gw_conn *c, const struct gw_hs_params *p,
                      Godwit__V1__MigHello **hello_out, uint64_t *features, struct gw_err *err);

/* The same two handshakes in two halves, for a session whose streams must all be open
 * before any of them is answered (see gw_mig_sender_open and gw_mig_receiver_accept_conns):
 * the source sends every HELLO first, then finishes each stream's handshake; the destination
 * reads every HELLO first, then finishes in stream order. st keeps the source's nonce between
 * its halves. hello given to gw_hs_destination_finish is the one its first half returned
 * (still the caller's). Errors as above. */
struct gw_hs_source_state { uint8_t nonce[GW_WIRE_NONCE_SIZE]; };
int gw_hs_source_hello(struct gw_conn *c, const struct gw_hs_params *p, Godwit__V1__MigHello *hello,
                       struct gw_hs_source_state *st, struct gw_err *err);
int gw_hs_source_finish(struct gw_conn *c, const struct gw_hs_params *p, const struct gw_hs_source_state *st,
                        uint64_t *features, struct gw_err *err);
int gw_hs_destination_hello(struct gw_conn *c, const struct gw_hs_params *p,
                            Godwit__V1__MigHello **hello_out, struct gw_err *err);
int gw_hs_destination_finish(struct gw_conn *c, const struct gw_hs_params *p, const Godwit__V1__MigHello *hello,
                             uint64_t *features, struct gw_err *err);

#endif
