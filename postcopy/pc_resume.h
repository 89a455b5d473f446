/* Post-copy recovery after a broken link: the credential that lets a source take up its own
 * migration again, and the exchange that opens a resumed session.
 *
 * From GO on the destination runs the VM and the source holds the pages it has not got. When
 * the link breaks, neither side lets go: the source reconnects (a new session: new streams,
 * preambles, TLS and the cluster-secret handshake, like any migration, with
 * GW_WIRE_F_PC_RESUME in its HELLO), and the destination runner that holds the migration takes
 * such a session only after this exchange on its stream 0:
 *
 *   destination  RESUME_CHALLENGE  nonce_d (16 random bytes)
 *   source       RESUME_PROOF      nonce_s, HMAC(K, "src" || nonce_d || nonce_s)
 *   destination  RESUME_PROOF      HMAC(K, "dst" || nonce_d || nonce_s)
 *   destination  RECEIVED          the pages it holds (or DONE: it completed already)
 *
 * K = HMAC-SHA256(cluster secret, "godwit-pc-resume-v1" || the ORIGINAL session's id || its
 * token). The id is random per migration and, with TLS, never crossed in the clear; K itself
 * never crosses. So K is bound to one migration: another cluster member (which passes the
 * handshake) cannot resume someone else's migration, and fresh nonces on both sides make a
 * recorded exchange worthless. The destination proves K too, so a source never takes a
 * stranger's RECEIVED bitmap (which could claim every page and end the migration with the
 * VM lost). */
#ifndef GW_POSTCOPY_PC_RESUME_H
#define GW_POSTCOPY_PC_RESUME_H

#include <stddef.h>
#include <stdint.h>

#include "engine/transport/session.h"

#define GW_PC_RESUME_KEY_SIZE 32u

/* K for the session s (its id) and its preamble token (32 bytes, zero when none). 0 or -EIO. */
int gw_pc_resume_key(const uint8_t *secret, size_t secret_len, const struct gw_session *s, const uint8_t token[32],
                     uint8_t key[GW_PC_RESUME_KEY_SIZE]);

/* Sends op (DIRTY or RECEIVED) with the bitmap bits[0..(npages+63)/64) on stream 0. */
int gw_pc_send_bitmap(struct gw_session *s, uint32_t op, const uint64_t *bits, uint64_t npages, struct gw_err *e);
/* Copies the bitmap of a parsed DIRTY / RECEIVED payload p (checked by gw_pc_parse) into
 * out[(npages+63)/64] after checking that it names exactly npages pages; 0 or -EPROTO. */
int gw_pc_get_bitmap(const uint8_t *p, uint64_t a, uint64_t npages, uint64_t *out, struct gw_err *e);

/* Source, on a new session s: answers the challenge, checks the destination's proof and
 * takes its RECEIVED bitmap into received[(npages+63)/64]. Returns 0 (resume), 1 (the
 * destination says DONE: it completed), -EACCES (a proof failed), or -errno. buf: a receive
 * buffer of the caller's. */
int gw_pc_resume_source(struct gw_session *s, const uint8_t key[GW_PC_RESUME_KEY_SIZE], uint64_t npages,
                        uint64_t *received, struct gw_rbuf *buf, struct gw_err *e);

/* Destination, on a session s that asked to resume: challenges the source and checks its
 * proof, then proves K in turn. 0 (the caller sends RECEIVED or DONE next), -EACCES, -errno. */
int gw_pc_resume_destination(struct gw_session *s, const uint8_t key[GW_PC_RESUME_KEY_SIZE], struct gw_rbuf *buf,
                             struct gw_err *e);

#endif
