/* Handshake of one migration connection (see handshake.h for the protocol). */
#include "engine/transport/handshake.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MAC_LABEL "godwit-mig-v1"
#define MAX_SECRET 1024u
#define ROLE_SRC 1
#define ROLE_DST 2

int gw_hs_mac(const uint8_t *secret, size_t secret_len, uint8_t role,
              const uint8_t nonce_src[GW_WIRE_NONCE_SIZE], const uint8_t nonce_dst[GW_WIRE_NONCE_SIZE],
              uint8_t mac[GW_WIRE_MAC_SIZE])
{
    uint8_t msg[sizeof MAC_LABEL - 1 + 1 + 2 * GW_WIRE_NONCE_SIZE], *m = msg;
    memcpy(m, MAC_LABEL, sizeof MAC_LABEL - 1);
    m += sizeof MAC_LABEL - 1;
    *m++ = role;
    memcpy(m, nonce_src, GW_WIRE_NONCE_SIZE);
    memcpy(m + GW_WIRE_NONCE_SIZE, nonce_dst, GW_WIRE_NONCE_SIZE);
    unsigned len = 0;
    if (!HMAC(EVP_sha256(), secret, (int)secret_len, msg, sizeof msg, mac, &len) || len != GW_WIRE_MAC_SIZE)
        return -EIO;
    return 0;
}

static bool token_set(const struct gw_conn *c)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < sizeof c->token; i++) acc |= c->token[i];
    return acc != 0;
}

/* The HELLO repeats the token of the stream's preamble (the one a destination daemon routed
 * the connection by), or neither has one. */
static bool token_matches(const struct gw_conn *c, const Godwit__V1__MigHello *he)
{
    if (!token_set(c)) return he->session_token.len == 0;
    return he->session_token.len == sizeof c->token &&
           !CRYPTO_memcmp(he->session_token.data, c->token, sizeof c->token);
}

static int check_params(const struct gw_hs_params *p, struct gw_err *err)
{
    if (!p->secret || p->secret_len == 0 || p->secret_len > MAX_SECRET)
        return gw_err_set(err, -EINVAL, "cluster secret must be 1..%u bytes", MAX_SECRET);
    return 0;
}

/* Receives one record that must be `want`; an ERROR record from the peer becomes err. */
static int expect(struct gw_conn *c, enum gw_wire_type want, struct gw_rbuf *b, struct gw_err *err)
{
    struct gw_wire_header h;
    int r = gw_conn_recv_record(c, &h, b, err);
    if (r) return r;
    if (h.type == want) return (int)h.length;
    if (h.type == GW_WIRE_ERROR) {
        Godwit__V1__MigError *e = gw_wire_unpack_error(b->data, h.length, &r);
        if (!e) return gw_err_set(err, -EPROTO, "%s: malformed ERROR record", c->peer);
        /* The peer's own words, with our errno for the same cause where it sent one. */
        r = e->code == -EACCES ? -EACCES : -EPROTO;
        gw_err_set(err, r, "%s: peer refused: %s", c->peer, e->message);
        godwit__v1__mig_error__free_unpacked(e, NULL);
        return r;
    }
    return gw_err_set(err, -EPROTO, "%s: expected %s, got %s", c->peer, gw_wire_type_name(want),
                      gw_wire_type_name(h.type));
}

static int send_msg(struct gw_conn *c, enum gw_wire_type t, const ProtobufCMessage *m, struct gw_err *err)
{
    uint8_t *b;
    size_t n;
    int r = gw_wire_pack_msg(m, &b, &n);
    if (r) return gw_err_set(err, r, "cannot pack %s", gw_wire_type_name(t));
    r = gw_conn_send_record(c, t, b, n, err);
    free(b);
    return r;
}

static int send_auth(struct gw_conn *c, const uint8_t mac[GW_WIRE_MAC_SIZE], struct gw_err *err)
{
    Godwit__V1__MigAuth a = GODWIT__V1__MIG_AUTH__INIT;
    a.mac.data = (uint8_t *)mac;
    a.mac.len = GW_WIRE_MAC_SIZE;
    return send_msg(c, GW_WIRE_AUTH, &a.base, err);
}

int gw_hs_source_hello(struct gw_conn *c, const struct gw_hs_params *p, Godwit__V1__MigHello *hello,
                       struct gw_hs_source_state *st, struct gw_err *err)
{
    int r = check_params(p, err);
    if (r) return r;
    if (RAND_bytes(st->nonce, sizeof st->nonce) != 1) return gw_err_set(err, -EIO, "no random bytes for a nonce");
    hello->version = GW_WIRE_VERSION;
    /* RDMA WRITE only where this connection can do it (rdma_verbs.h). */
    hello->features = p->features & (c->rdma.ops ? ~0ull : ~GW_WIRE_F_RDMA_WRITE);
    hello->nonce.data = st->nonce;
    hello->nonce.len = sizeof st->nonce;
    /* The preamble's token again, now inside the authenticated channel. */
    if (token_set(c)) {
        hello->session_token.data = c->token;
        hello->session_token.len = sizeof c->token;
    }
    c->stream = hello->stream_index;
    c->max_payload = GW_WIRE_MAX_HANDSHAKE_PAYLOAD;
    r = send_msg(c, GW_WIRE_HELLO, &hello->base, err);
    c->max_payload = 0;
    hello->nonce.data = NULL;
    hello->nonce.len = 0;
    hello->session_token.data = NULL;
    hello->session_token.len = 0;
    return r;
}

int gw_hs_source_finish(struct gw_conn *c, const struct gw_hs_params *p, const struct gw_hs_source_state *st,
                        uint64_t *features, struct gw_err *err)
{
    int r;
    uint8_t mac[GW_WIRE_MAC_SIZE], want[GW_WIRE_MAC_SIZE];
    struct gw_rbuf b = {0};
    Godwit__V1__MigChallenge *ch = NULL;
    Godwit__V1__MigAuth *au = NULL;
    c->max_payload = GW_WIRE_MAX_HANDSHAKE_PAYLOAD;
    if ((r = expect(c, GW_WIRE_CHALLENGE, &b, err)) < 0) goto out;
    if (!(ch = gw_wire_unpack_challenge(b.data, (size_t)r, &r))) {
        r = gw_err_set(err, -EPROTO, "%s: malformed CHALLENGE", c->peer);
        goto out;
    }
    if (ch->version != GW_WIRE_VERSION || (ch->features & ~p->features)) {
        r = gw_err_set(err, -EPROTO, "%s: destination answered version %u features %llx", c->peer,
                       ch->version, (unsigned long long)ch->features);
        goto out;
    }
    if ((r = gw_hs_mac(p->secret, p->secret_len, ROLE_SRC, st->nonce, ch->nonce.data, mac)) ||
        (r = gw_hs_mac(p->secret, p->secret_len, ROLE_DST, st->nonce, ch->nonce.data, want))) {
        r = gw_err_set(err, r, "HMAC failed");
        goto out;
    }
    if ((r = send_auth(c, mac, err))) goto out;
    if ((r = expect(c, GW_WIRE_AUTH, &b, err)) < 0) {
        if (r == -EACCES) gw_err_set(err, r, "authentication failed: %s rejected our cluster secret", c->peer);
        goto out;
    }
    if (!(au = gw_wire_unpack_auth(b.data, (size_t)r, &r))) {
        r = gw_err_set(err, -EPROTO, "%s: malformed AUTH", c->peer);
        goto out;
    }
    if (CRYPTO_memcmp(au->mac.data, want, sizeof want)) {
        r = gw_err_set(err, -EACCES, "authentication failed: %s does not hold our cluster secret", c->peer);
        goto out;
    }
    *features = ch->features;
    r = 0;
out:
    c->max_payload = 0;
    if (ch) godwit__v1__mig_challenge__free_unpacked(ch, NULL);
    if (au) godwit__v1__mig_auth__free_unpacked(au, NULL);
    gw_rbuf_free(&b);
    return r;
}

int gw_hs_source(struct gw_conn *c, const struct gw_hs_params *p, Godwit__V1__MigHello *hello,
                 uint64_t *features, struct gw_err *err)
{
    struct gw_hs_source_state st;
    int r = gw_hs_source_hello(c, p, hello, &st, err);
    return r ? r : gw_hs_source_finish(c, p, &st, features, err);
}

int gw_hs_destination_hello(struct gw_conn *c, const struct gw_hs_params *p,
                            Godwit__V1__MigHello **hello_out, struct gw_err *err)
{
    int r = check_params(p, err);
    if (r) return r;
    struct gw_rbuf b = {0};
    Godwit__V1__MigHello *he = NULL;
    c->stream = GW_CONN_ANY_STREAM;
    c->max_payload = GW_WIRE_MAX_HANDSHAKE_PAYLOAD;
    if ((r = expect(c, GW_WIRE_HELLO, &b, err)) < 0) goto out;
    if (!(he = gw_wire_unpack_hello(b.data, (size_t)r, &r))) {
        r = gw_err_set(err, -EPROTO, "%s: malformed HELLO", c->peer);
        gw_conn_send_error(c, r, "malformed HELLO");
        goto out;
    }
    if (he->version != GW_WIRE_VERSION) {
        r = gw_err_set(err, -EPROTONOSUPPORT, "%s: wire version %u, we speak %u", c->peer, he->version, GW_WIRE_VERSION);
        gw_conn_send_error(c, r, "unsupported wire version");
        goto out;
    }
    if (!token_matches(c, he)) {
        r = gw_err_set(err, -EACCES, "%s: the HELLO's session token is not the one its stream announced", c->peer);
        gw_conn_send_error(c, r, "session token mismatch");
        goto out;
    }
    c->stream = he->stream_index;
    *hello_out = he;
    he = NULL;
    r = 0;
out:
    c->max_payload = 0;
    if (he) godwit__v1__mig_hello__free_unpacked(he, NULL);
    gw_rbuf_free(&b);
    return r;
}

int gw_hs_destination_finish(struct gw_conn *c, const struct gw_hs_params *p, const Godwit__V1__MigHello *he,
                             uint64_t *features, struct gw_err *err)
{
    int r = check_params(p, err);
    if (r) return r;
    uint8_t nonce[GW_WIRE_NONCE_SIZE], mac[GW_WIRE_MAC_SIZE], want[GW_WIRE_MAC_SIZE];
    if (RAND_bytes(nonce, sizeof nonce) != 1) return gw_err_set(err, -EIO, "no random bytes for a nonce");
    struct gw_rbuf b = {0};
    Godwit__V1__MigAuth *au = NULL;
    c->stream = he->stream_index;
    c->max_payload = GW_WIRE_MAX_HANDSHAKE_PAYLOAD;
    Godwit__V1__MigChallenge ch = GODWIT__V1__MIG_CHALLENGE__INIT;
    ch.version = GW_WIRE_VERSION;
    ch.features = he->features & p->features & (c->rdma.ops ? ~0ull : ~GW_WIRE_F_RDMA_WRITE);
    ch.nonce.data = nonce;
    ch.nonce.len = sizeof nonce;
    if ((r = send_msg(c, GW_WIRE_CHALLENGE, &ch.base, err))) goto out;
    if ((r = gw_hs_mac(p->secret, p->secret_len, ROLE_SRC, he->nonce.data, nonce, want)) ||
        (r = gw_hs_mac(p->secret, p->secret_len, ROLE_DST, he->nonce.data, nonce, mac))) {
        r = gw_err_set(err, r, "HMAC failed");
        goto out;
    }
    if ((r = expect(c, GW_WIRE_AUTH, &b, err)) < 0) goto out;
    if (!(au = gw_wire_unpack_auth(b.data, (size_t)r, &r))) {
        r = gw_err_set(err, -EPROTO, "%s: malformed AUTH", c->peer);
        goto out;
    }
    if (CRYPTO_memcmp(au->mac.data, want, sizeof want)) {
        gw_conn_send_error(c, -EACCES, "authentication failed");
        r = gw_err_set(err, -EACCES, "authentication failed: %s does not hold our cluster secret", c->peer);
        goto out;
    }
    if ((r = send_auth(c, mac, err))) goto out;
    *features = ch.features;
out:
    c->max_payload = 0;
    if (au) godwit__v1__mig_auth__free_unpacked(au, NULL);
    gw_rbuf_free(&b);
    return r;
}

int gw_hs_destination(struct gw_conn *c, const struct gw_hs_params *p,
                      Godwit__V1__MigHello **hello_out, uint64_t *features, struct gw_err *err)
{
    Godwit__V1__MigHello *he = NULL;
    int r = gw_hs_destination_hello(c, p, &he, err);
    if (!r) r = gw_hs_destination_finish(c, p, he, features, err);
    if (r) {
        if (he) godwit__v1__mig_hello__free_unpacked(he, NULL);
        return r;
    }
    *hello_out = he;
    return 0;
}
