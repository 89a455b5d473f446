/* The security layer of a migration stream: a plaintext preamble that says which session a
 * connection belongs to, then TLS 1.3 (OpenSSL) as a decorator over any struct gw_conn, so
 * that everything above (records, the handshake, multi-stream sessions) is unchanged.
 *
 * Preamble (GW_PREAMBLE_SIZE bytes, little-endian), the first bytes the source sends:
 *     0  u32  magic "GWPR"
 *     4  u8   version (1)
 *     5  u8   1 = TLS follows, 0 = plaintext records follow (migration_tls = off)
 *     6  u16  reserved, 0
 *     8  u16  stream index (< stream count)
 *    10  u16  stream count (1..GW_WIRE_MAX_STREAMS)
 *    12  u32  reserved, 0
 *    16  32   session token (PrepareIncoming's one-time token; all zero = none)
 * It lets a destination daemon route a connection (and refuse strangers) without holding any
 * key material, and it is authenticated after the fact: the source repeats the token in its
 * HELLO, inside TLS, and the destination's handshake compares the two.
 *
 * TLS: version 1.3 only, mutually authenticated, either by an external PSK derived from the
 * cluster secret (HKDF-SHA384, no PKI; suite TLS_AES_128_GCM_SHA256, or TLS_AES_256_GCM_SHA384
 * towards a destination that predates it; with (EC)DHE for forward secrecy) or by X.509
 * certificates from the operator's CA (cert, key and CA all given; AES-128-GCM preferred,
 * AES-256-GCM taken). Kernel TLS is used when the kernel offers the "tls" TCP ULP
 * (SSL_OP_ENABLE_KTLS); otherwise Godwit builds the records itself after OpenSSL's handshake,
 * with the secrets it negotiated (tls_records.h: no extra copies, the two directions of a
 * stream in parallel), written in large batches (one send per 256 KiB, never one per page).
 *
 * Threads: like any gw_conn, one sending and one receiving thread may use a connection at the
 * same time. With OpenSSL's record layer (kernel TLS), which forbids concurrent calls on one
 * SSL object, each call holds a mutex only while OpenSSL works on data already at hand;
 * waiting for the socket happens outside it (non-blocking socket I/O and poll, bounded by
 * the connection's timeout). */
#ifndef GW_TRANSPORT_TLS_H
#define GW_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/transport/conn.h"

#define GW_PREAMBLE_SIZE 48u
#define GW_PREAMBLE_MAGIC 0x52505747u /* "GWPR" */
#define GW_SEC_TOKEN_SIZE 32u
/* Shortest cluster secret accepted anywhere (the PSK is only as strong as the secret). */
#define GW_SEC_MIN_SECRET 32u
#define GW_SEC_MAX_SECRET 1024u

struct gw_preamble {
    bool tls;
    uint16_t stream_index, nstreams;
    uint8_t token[GW_SEC_TOKEN_SIZE];
};

/* Packs p into out. */
void gw_preamble_pack(const struct gw_preamble *p, uint8_t out[GW_PREAMBLE_SIZE]);
/* buf holds the first n bytes of a connection. Returns 1 and fills *out when they start with a
 * valid preamble (magic, version, reserved zero, 1 <= count <= GW_WIRE_MAX_STREAMS, index <
 * count); 0 when fewer than GW_PREAMBLE_SIZE bytes are there; -1 when it is not a preamble.
 * Reads nothing beyond buf[GW_PREAMBLE_SIZE). */
int gw_preamble_parse(const uint8_t *buf, size_t n, struct gw_preamble *out);
/* True when the token is not all zero. */
bool gw_token_set(const uint8_t token[GW_SEC_TOKEN_SIZE]);

/* How one side protects its streams. All pointers are the caller's and must outlive every
 * connection made with the context. */
struct gw_sec_cfg {
    bool tls;                       /* false only on an explicit "off" */
    const uint8_t *secret;          /* cluster secret: the PSK's source (GW_SEC_MIN_SECRET..) */
    size_t secret_len;
    const char *cert, *key, *ca;    /* all three set: X.509 mutual authentication instead */
    /* A PSK client (source): offer TLS_AES_128_GCM_SHA256, which destinations accept since
     * PrepareIncomingResponse.tls_aes128; false: TLS_AES_256_GCM_SHA384, which all accept.
     * Servers take either; with certificates both are offered. */
    bool aes128;
};

struct gw_tls_ctx;

/* Builds a context for the client (source) or server (destination) side. Returns 0; -EINVAL
 * (secret too short, only some of cert/key/ca), -EACCES/-ENOENT (a certificate file cannot
 * be loaded, err says which), -EIO. cfg->tls false: *out = NULL and 0 (plaintext). */
int gw_tls_ctx_new(const struct gw_sec_cfg *cfg, bool server, struct gw_tls_ctx **out, struct gw_err *err);
void gw_tls_ctx_free(struct gw_tls_ctx *ctx);
/* For tests: openssl_records keeps OpenSSL's own record layer after the handshake (the
 * reference that Godwit's records must match); key_update_every sets how many records of
 * ours go under one key (0 = the default). Affects connections wrapped afterwards. */
void gw_tls_ctx_set_records(struct gw_tls_ctx *ctx, bool openssl_records, uint64_t key_update_every);

/* Source: sends the preamble for stream index of n on c (ctx NULL = plaintext follows);
 * token may be NULL (none). Sets c's token (repeated in its HELLO). */
int gw_sec_send_preamble(struct gw_conn *c, const struct gw_tls_ctx *ctx, unsigned index, unsigned n,
                         const uint8_t *token, struct gw_err *err);
/* Destination: reads exactly the preamble from c into *out and sets c's token from it. -EPROTO
 * when it is not one; -EPIPE/-ETIMEDOUT as a receive. */
int gw_sec_recv_preamble(struct gw_conn *c, struct gw_preamble *out, struct gw_err *err);

/* Runs the TLS handshake on *c (client or server as ctx was made) and on success replaces *c
 * with a TLS connection that owns the old one (its token, peer name, timeout and stream carry
 * over). On failure *c is unchanged and still the caller's. -EACCES: the peer did not prove
 * the cluster credential (wrong PSK, untrusted certificate); -EPROTONOSUPPORT: the back end
 * has no socket (RDMA); -ETIMEDOUT; -EPROTO/-EIO otherwise. announce: log which TLS runs. */
int gw_tls_wrap(struct gw_conn **c, struct gw_tls_ctx *ctx, bool announce, struct gw_err *err);

/* The negotiated TLS suite's name ("TLS_AES_128_GCM_SHA256", ...), "" for plaintext. */
const char *gw_tls_suite(const struct gw_conn *c);

/* What protects c: "tls13-psk", "tls13-x509" or "plain"; and whether the kernel does the
 * record crypto (kTLS) for sending and for receiving. */
const char *gw_sec_describe(const struct gw_conn *c, bool *ktls_tx, bool *ktls_rx);

/* Whether this kernel offers kernel TLS (the "tls" TCP ULP): what gw_tls_wrap then uses. */
bool gw_tls_kernel_available(void);

/* The cluster credential of the daemons' peer API (GodwitPeer): a bearer token derived from
 * the cluster secret (HKDF-SHA256, 32 bytes in hex), so that an operator's API token never
 * goes to another host. 0 or -EINVAL (secret too short) / -EIO. */
int gw_sec_peer_token(const uint8_t *secret, size_t len, char out[65]);

/* Derives the 48-byte TLS PSK from a secret (HKDF-SHA384). 0 or -EINVAL/-EIO. */
int gw_tls_derive_psk(const uint8_t *secret, size_t len, uint8_t psk[48]);

#endif
