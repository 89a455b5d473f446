/* Post-copy recovery: the resume credential and its exchange (see pc_resume.h). */
#include "postcopy/pc_resume.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "engine/codec/wire.h"
#include "postcopy/pc_wire.h"

#define KEY_LABEL "godwit-pc-resume-v1"

int gw_pc_resume_key(const uint8_t *secret, size_t secret_len, const struct gw_session *s, const uint8_t token[32],
                     uint8_t key[GW_PC_RESUME_KEY_SIZE])
{
    uint8_t msg[sizeof KEY_LABEL - 1 + GW_WIRE_SESSION_ID_SIZE + 32];
    memcpy(msg, KEY_LABEL, sizeof KEY_LABEL - 1);
    gw_session_id(s, msg + sizeof KEY_LABEL - 1);
    memcpy(msg + sizeof KEY_LABEL - 1 + GW_WIRE_SESSION_ID_SIZE, token, 32);
    unsigned len = 0;
    if (!HMAC(EVP_sha256(), secret, (int)secret_len, msg, sizeof msg, key, &len) || len != GW_PC_RESUME_KEY_SIZE)
        return -EIO;
    return 0;
}

/* HMAC(K, role || nonce_d || nonce_s), nonces as two little-endian words each. */
static int proof(const uint8_t key[GW_PC_RESUME_KEY_SIZE], const char *role, const uint64_t nd[2], const uint64_t ns[2],
                 uint8_t out[GW_PC_PROOF_SIZE])
{
    uint8_t msg[3 + 32];
    memcpy(msg, role, 3);
    gw_pc_put64(msg + 3, nd[0]);
    gw_pc_put64(msg + 11, nd[1]);
    gw_pc_put64(msg + 19, ns[0]);
    gw_pc_put64(msg + 27, ns[1]);
    unsigned len = 0;
    if (!HMAC(EVP_sha256(), key, GW_PC_RESUME_KEY_SIZE, msg, sizeof msg, out, &len) || len != GW_PC_PROOF_SIZE)
        return -EIO;
    return 0;
}

int gw_pc_send_bitmap(struct gw_session *s, uint32_t op, const uint64_t *bits, uint64_t npages, struct gw_err *e)
{
    size_t words = (npages + 63) / 64;
    uint8_t *b = malloc(GW_PC_HDR + words * 8);
    if (!b) return gw_err_set(e, -ENOMEM, "out of memory");
    gw_pc_pack(&(struct gw_pc_msg){.op = op, .a = npages}, b);
    for (size_t w = 0; w < words; w++) gw_pc_put64(b + GW_PC_HDR + 8 * w, __atomic_load_n(&bits[w], __ATOMIC_ACQUIRE));
    int r = gw_session_send(s, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, GW_PC_HDR + words * 8, e);
    free(b);
    return r;
}

int gw_pc_get_bitmap(const uint8_t *p, uint64_t a, uint64_t npages, uint64_t *out, struct gw_err *e)
{
    if (a != npages) return gw_err_set(e, -EPROTO, "a page bitmap of %llu pages for a memory of %llu",
                                       (unsigned long long)a, (unsigned long long)npages);
    for (uint64_t w = 0; w < (npages + 63) / 64; w++) out[w] = gw_pc_get64(p + GW_PC_HDR + 8 * w);
    if (npages % 64) out[(npages - 1) / 64] &= (1ull << (npages % 64)) - 1;   /* no page past the end */
    return 0;
}

/* The next POSTCOPY record on stream 0, which must be op; the peer's ERROR becomes -EPROTO. */
static int expect(struct gw_session *s, uint32_t op, struct gw_pc_msg *m, struct gw_rbuf *buf, struct gw_err *e)
{
    struct gw_wire_header h;
    int r = gw_conn_recv_record(gw_session_conn(s, GW_PC_STREAM_CONTROL), &h, buf, e);
    if (r) return r;
    if (h.type == GW_WIRE_ERROR) {
        int rr;
        Godwit__V1__MigError *em = gw_wire_unpack_error(buf->data, h.length, &rr);
        gw_err_set(e, -EPROTO, "the peer refused the resume: %s", em && em->message ? em->message : "(no reason)");
        if (em) godwit__v1__mig_error__free_unpacked(em, NULL);
        return -EPROTO;
    }
    if (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(buf->data, h.length, m))
        return gw_err_set(e, -EPROTO, "a malformed %s record while resuming", gw_wire_type_name(h.type));
    if (m->op != op && !(op == GW_PC_RECEIVED && m->op == GW_PC_DONE))
        return gw_err_set(e, -EPROTO, "post-copy op %u while resuming (expected %u)", m->op, op);
    return 0;
}

static int send_proof(struct gw_session *s, const uint64_t ns[2], const uint8_t mac[GW_PC_PROOF_SIZE], struct gw_err *e)
{
    uint8_t b[GW_PC_HDR + GW_PC_PROOF_SIZE];
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_RESUME_PROOF, .a = ns ? ns[0] : 0, .b = ns ? ns[1] : 0}, b);
    memcpy(b + GW_PC_HDR, mac, GW_PC_PROOF_SIZE);
    return gw_session_send(s, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, e);
}

int gw_pc_resume_source(struct gw_session *s, const uint8_t key[GW_PC_RESUME_KEY_SIZE], uint64_t npages,
                        uint64_t *received, struct gw_rbuf *buf, struct gw_err *e)
{
    struct gw_pc_msg m = {0};
    int r = expect(s, GW_PC_RESUME_CHALLENGE, &m, buf, e);
    if (r) return r;
    uint64_t nd[2] = {m.a, m.b}, ns[2];
    if (RAND_bytes((uint8_t *)ns, sizeof ns) != 1) return gw_err_set(e, -EIO, "no random bytes for a nonce");
    uint8_t mac[GW_PC_PROOF_SIZE], want[GW_PC_PROOF_SIZE];
    if (proof(key, "src", nd, ns, mac) || proof(key, "dst", nd, ns, want)) return gw_err_set(e, -EIO, "HMAC failed");
    if ((r = send_proof(s, ns, mac, e))) return r;
    if ((r = expect(s, GW_PC_RESUME_PROOF, &m, buf, e))) return r;
    if (CRYPTO_memcmp(buf->data + GW_PC_HDR, want, sizeof want))
        return gw_err_set(e, -EACCES, "the destination cannot prove it holds this migration");
    if ((r = expect(s, GW_PC_RECEIVED, &m, buf, e))) return r;
    if (m.op == GW_PC_DONE) return 1;
    return gw_pc_get_bitmap(buf->data, m.a, npages, received, e);
}

int gw_pc_resume_destination(struct gw_session *s, const uint8_t key[GW_PC_RESUME_KEY_SIZE], struct gw_rbuf *buf,
                             struct gw_err *e)
{
    uint64_t nd[2];
    if (RAND_bytes((uint8_t *)nd, sizeof nd) != 1) return gw_err_set(e, -EIO, "no random bytes for a nonce");
    uint8_t b[GW_PC_HDR];
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_RESUME_CHALLENGE, .a = nd[0], .b = nd[1]}, b);
    int r = gw_session_send(s, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, e);
    struct gw_pc_msg m = {0};
    if (!r) r = expect(s, GW_PC_RESUME_PROOF, &m, buf, e);
    if (r) return r;
    uint64_t ns[2] = {m.a, m.b};
    uint8_t want[GW_PC_PROOF_SIZE], mac[GW_PC_PROOF_SIZE];
    if (proof(key, "src", nd, ns, want) || proof(key, "dst", nd, ns, mac)) return gw_err_set(e, -EIO, "HMAC failed");
    if (CRYPTO_memcmp(buf->data + GW_PC_HDR, want, sizeof want)) {
        gw_session_send_error(s, GW_PC_STREAM_CONTROL, -EACCES, "resume refused: not this migration's source");
        return gw_err_set(e, -EACCES, "a resume that does not prove it is this migration's source");
    }
    return send_proof(s, NULL, mac, e);
}
