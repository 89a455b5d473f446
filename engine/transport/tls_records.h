/* TLS 1.3 application records (RFC 8446 section 5) built and opened by Godwit itself, with
 * the traffic secrets that OpenSSL's handshake negotiated: the same hand-over that kernel TLS
 * gets, done in user space. OpenSSL still runs the whole handshake and does every AEAD
 * operation (EVP); what moves here is only the record framing around it, because OpenSSL's
 * own record layer copies every byte twice more (plaintext into its write buffer, records
 * into the BIO; ciphertext into its read buffer, plaintext out of it) and serialises the two
 * directions of a connection on one SSL object. Here a page is encrypted straight from guest
 * memory into the send buffer and decrypted straight from the receive buffer into its place,
 * and sending and receiving run at the same time under separate locks.
 *
 * What goes on the wire is ordinary TLS 1.3: records of at most 2^14 plaintext bytes, type
 * application_data outside, the real type as the last plaintext byte, nonce = IV xor the
 * record sequence number, the record header as additional data. test_tls proves it against
 * OpenSSL's own record layer in both directions. The sender never pads; a padded record is
 * refused (both ends are Godwit). Keys are updated (KeyUpdate, update_not_requested) every
 * update_every records, far below AES-GCM's limit of 2^24.5 records per key; a peer that asks
 * for an update is refused. Alerts: close_notify ends the stream cleanly, any other is an
 * error naming it.
 *
 * Received plaintext is written to the caller's buffer as it is decrypted, before the
 * record's tag is checked; bytes are only reported (and the call only returns them as
 * received) once the tag verified. A record that fails is a fatal error of the connection:
 * callers never act on bytes that were not returned, and the migration that owns the
 * buffer fails. */
#ifndef GW_TRANSPORT_TLS_RECORDS_H
#define GW_TRANSPORT_TLS_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "engine/transport/conn.h"

#define GW_TLS_SECRET_MAX 64u
/* Records per key before a KeyUpdate: 2^23, a tenth of AES-GCM's limit (2^24.5). */
#define GW_TLS_KEY_UPDATE_RECORDS (1ull << 23)

/* This side's view of a finished handshake. */
struct gw_tls_traffic {
    int cipher_nid;                    /* NID_aes_128_gcm or NID_aes_256_gcm (the suite's) */
    const EVP_MD *md;                  /* the suite's hash */
    uint8_t tx[GW_TLS_SECRET_MAX];     /* this side's write traffic secret */
    uint8_t rx[GW_TLS_SECRET_MAX];     /* the peer's write traffic secret */
    size_t len;                        /* bytes of each secret (the hash's length) */
    const char *what;                  /* "tls13-psk" or "tls13-x509", for gw_sec_describe */
    const char *suite;                 /* the suite's name (OpenSSL's static string), for gw_tls_suite */
    uint64_t update_every;             /* records per key; 0 = GW_TLS_KEY_UPDATE_RECORDS */
};

/* Replaces *cp (a connection whose handshake just ended, with nothing of the peer's read
 * beyond it) with one that carries TLS records and owns the old one. On failure *cp is
 * unchanged and still the caller's. tr's secrets are copied; the caller wipes its own. */
int gw_tls_records_wrap(struct gw_conn **cp, const struct gw_tls_traffic *tr, struct gw_err *err);

/* "tls13-psk" or "tls13-x509" when c carries Godwit-built TLS records, else NULL. */
const char *gw_tls_records_what(const struct gw_conn *c);
/* The negotiated suite's name when c carries Godwit-built TLS records, else NULL. */
const char *gw_tls_records_suite(const struct gw_conn *c);

/* HKDF-Expand-Label(secret, label, "", out_len) of RFC 8446 section 7.1. 0 or -EIO. */
int gw_tls13_expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len, const char *label,
                          uint8_t *out, size_t out_len);

#endif
