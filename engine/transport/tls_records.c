/* Godwit-built TLS 1.3 records over a connection whose handshake OpenSSL ran (see
 * tls_records.h for the why and the rules). One lock per direction: the sending thread seals
 * records into a send buffer and writes it with one send per 256 KiB; the receiving thread
 * reads ciphertext in large non-blocking recvs and opens each record straight into the
 * caller's buffers when they have room for it, else into a one-record plaintext buffer. */
#include "engine/transport/tls_records.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/objects.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define REC_HDR 5u
#define REC_TAG 16u
#define REC_IV 12u
#define REC_MAX_PLAIN 16384u                       /* 2^14 (RFC 8446 5.1) */
#define REC_MAX_CIPHER (REC_MAX_PLAIN + 256u)      /* the largest length field allowed (5.2) */
#define REC_OVERHEAD (REC_HDR + 1u + REC_TAG)      /* header, inner type byte, tag */
#define SEND_BUF (256u << 10)                      /* records per send */
#define RECV_BUF (256u << 10)                      /* ciphertext per recv */
/* A record shorter than this is opened into the plaintext buffer even when the caller has
 * room: control records (alerts, KeyUpdate) are tiny and must never land in a caller's
 * buffer, and nothing is saved on a few bytes. */
#define DIRECT_MIN 64u

#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPDATA 23
#define HS_KEY_UPDATE 24

struct rec_dir {
    EVP_CIPHER_CTX *cx;
    EVP_CIPHER *cipher;
    const EVP_MD *md;
    bool enc;
    uint8_t secret[GW_TLS_SECRET_MAX];
    size_t slen;
    uint8_t iv[REC_IV];
    uint64_t seq;
};

struct rec_conn {
    struct gw_conn base;          /* first: a struct gw_conn * is a struct rec_conn * */
    struct gw_conn *inner;        /* owns the socket */
    const char *what;
    const char *suite;
    uint64_t update_every;
    /* sending side (wmu) */
    pthread_mutex_t wmu;
    struct rec_dir tx;
    uint8_t *sbuf;
    size_t slen;
    int wfatal;
    char wmsg[256];
    /* receiving side (rmu) */
    pthread_mutex_t rmu;
    struct rec_dir rx;
    uint8_t *rbuf;                /* ciphertext [rhead, rtail) not yet opened */
    size_t rhead, rtail;
    uint8_t plain[REC_MAX_PLAIN + 1];
    size_t poff, plen;            /* opened, not yet delivered: plain[poff, plen) */
    bool eof;
    int rfatal;
    char rmsg[256];
};

static const struct gw_conn_ops rec_ops;

/* ---- key schedule ----------------------------------------------------------------------- */

int gw_tls13_expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len, const char *label,
                          uint8_t *out, size_t out_len)
{
    /* HkdfLabel: u16 length, u8 label length, "tls13 " label, u8 context length (0). */
    uint8_t info[2 + 1 + 255 + 1];
    size_t ll = 6 + strlen(label);
    if (ll > 255 || out_len > 0xffff) return -EIO;
    info[0] = (uint8_t)(out_len >> 8);
    info[1] = (uint8_t)out_len;
    info[2] = (uint8_t)ll;
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll - 6);
    info[3 + ll] = 0;
    EVP_PKEY_CTX *k = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t got = out_len;
    int ok = k && EVP_PKEY_derive_init(k) > 0 && EVP_PKEY_CTX_set_hkdf_mode(k, EVP_PKEY_HKDEF_MODE_EXPAND_ONLY) > 0 &&
             EVP_PKEY_CTX_set_hkdf_md(k, md) > 0 && EVP_PKEY_CTX_set1_hkdf_key(k, secret, (int)secret_len) > 0 &&
             EVP_PKEY_CTX_add1_hkdf_info(k, info, (int)(4 + ll)) > 0 && EVP_PKEY_derive(k, out, &got) > 0 &&
             got == out_len;
    EVP_PKEY_CTX_free(k);
    return ok ? 0 : -EIO;
}

/* Key and IV from the direction's current secret; the record count starts again. */
static int dir_keys(struct rec_dir *d)
{
    uint8_t key[32];
    int klen = EVP_CIPHER_get_key_length(d->cipher);
    if (klen <= 0 || (size_t)klen > sizeof key) return -EIO;
    int r = gw_tls13_expand_label(d->md, d->secret, d->slen, "key", key, (size_t)klen);
    if (!r) r = gw_tls13_expand_label(d->md, d->secret, d->slen, "iv", d->iv, REC_IV);
    if (!r && EVP_CipherInit_ex(d->cx, d->cipher, NULL, key, NULL, d->enc) != 1) r = -EIO;
    OPENSSL_cleanse(key, sizeof key);
    d->seq = 0;
    return r;
}

/* The next generation of the direction's secret (RFC 8446 7.2), after a KeyUpdate. */
static int dir_update(struct rec_dir *d)
{
    uint8_t next[GW_TLS_SECRET_MAX];
    int r = gw_tls13_expand_label(d->md, d->secret, d->slen, "traffic upd", next, d->slen);
    if (!r) {
        memcpy(d->secret, next, d->slen);
        r = dir_keys(d);
    }
    OPENSSL_cleanse(next, sizeof next);
    return r;
}

static int dir_init(struct rec_dir *d, const struct gw_tls_traffic *tr, const uint8_t *secret, bool enc)
{
    d->enc = enc;
    d->md = tr->md;
    d->slen = tr->len;
    memcpy(d->secret, secret, tr->len);
    const char *name = OBJ_nid2sn(tr->cipher_nid);
    d->cipher = name ? EVP_CIPHER_fetch(NULL, name, NULL) : NULL;
    d->cx = EVP_CIPHER_CTX_new();
    if (!d->cipher || !d->cx || EVP_CIPHER_get_mode(d->cipher) != EVP_CIPH_GCM_MODE) return -EIO;
    return dir_keys(d);
}

static void dir_free(struct rec_dir *d)
{
    EVP_CIPHER_CTX_free(d->cx);
    EVP_CIPHER_free(d->cipher);
    OPENSSL_cleanse(d->secret, sizeof d->secret);
    OPENSSL_cleanse(d->iv, sizeof d->iv);
}

/* Starts the record with header hdr: per-record nonce (IV xor sequence) and the header as
 * additional data. */
static int dir_begin(struct rec_dir *d, const uint8_t hdr[REC_HDR])
{
    uint8_t nonce[REC_IV];
    memcpy(nonce, d->iv, REC_IV);
    for (int i = 0; i < 8; i++) nonce[REC_IV - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
    int n;
    if (EVP_CipherInit_ex(d->cx, NULL, NULL, NULL, nonce, d->enc) != 1 ||
        EVP_CipherUpdate(d->cx, NULL, &n, hdr, REC_HDR) != 1)
        return -EIO;
    return 0;
}

static int dir_update_bytes(struct rec_dir *d, uint8_t *out, const uint8_t *in, size_t len)
{
    int n;
    return EVP_CipherUpdate(d->cx, out, &n, in, (int)len) == 1 && (size_t)n == len ? 0 : -EIO;
}

static void put_hdr(uint8_t hdr[REC_HDR], size_t len)
{
    hdr[0] = CT_APPDATA;
    hdr[1] = 3;
    hdr[2] = 3;
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
}

/* ---- sending ---------------------------------------------------------------------------- */

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    do n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1); while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    return n == 0 ? -ETIMEDOUT : 0;
}

/* Sends the records built (wmu held). */
static int flush(struct rec_conn *t, struct gw_err *err)
{
    size_t off = 0;
    while (off < t->slen) {
        ssize_t n = send(t->base.fd, t->sbuf + off, t->slen - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) { off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int e = errno;
            return gw_err_set(err, -e, "%s: send: %s", t->base.peer, strerror(e));
        }
        int r = wait_fd(t->base.fd, POLLOUT, t->base.timeout_ms);
        if (r == -ETIMEDOUT) {
            /* Keep what is unsent for a retry: a record cut in two must not be lost. */
            memmove(t->sbuf, t->sbuf + off, t->slen - off);
            t->slen -= off;
            return gw_err_set(err, r, "%s: send timed out after %d ms", t->base.peer, t->base.timeout_ms);
        }
        if (r) return gw_err_set(err, r, "%s: poll: %s", t->base.peer, strerror(-r));
    }
    t->slen = 0;
    return 0;
}

/* Where a sender is in its iovec array. */
struct cursor {
    const struct iovec *iov;
    int cnt, i;
    size_t off;
};

/* Seals the next len bytes of the cursor (or of the small buffer ctl, when not NULL) as one
 * record of inner type type into sbuf, which has room (wmu held). */
static int seal(struct rec_conn *t, uint8_t type, struct cursor *cur, const uint8_t *ctl, size_t len)
{
    uint8_t *hdr = t->sbuf + t->slen, *out = hdr + REC_HDR;
    put_hdr(hdr, len + 1 + REC_TAG);
    int r = dir_begin(&t->tx, hdr);
    if (!r && ctl) r = dir_update_bytes(&t->tx, out, ctl, len);
    for (size_t done = 0; !r && !ctl && done < len;) {
        const struct iovec *v = &cur->iov[cur->i];
        size_t k = v->iov_len - cur->off;
        if (k > len - done) k = len - done;
        if (k) r = dir_update_bytes(&t->tx, out + done, (const uint8_t *)v->iov_base + cur->off, k);
        done += k;
        cur->off += k;
        if (cur->off == v->iov_len) { cur->i++; cur->off = 0; }
    }
    int n;
    if (!r) r = dir_update_bytes(&t->tx, out + len, &type, 1);
    if (!r && (EVP_CipherFinal_ex(t->tx.cx, out + len + 1, &n) != 1 ||
               EVP_CIPHER_CTX_ctrl(t->tx.cx, EVP_CTRL_AEAD_GET_TAG, REC_TAG, out + len + 1) != 1))
        r = -EIO;
    if (r) return r;
    t->slen += REC_OVERHEAD + len;
    t->tx.seq++;
    return 0;
}

/* Makes room for a record of len plaintext bytes (wmu held). */
static int room(struct rec_conn *t, size_t len, struct gw_err *err)
{
    return t->slen + REC_OVERHEAD + len > SEND_BUF ? flush(t, err) : 0;
}

/* Before the record that would reach update_every: a KeyUpdate under the old key, then the
 * new key for what follows. */
static int maybe_update_key(struct rec_conn *t, struct gw_err *err)
{
    if (t->tx.seq + 1 < t->update_every) return 0;
    static const uint8_t key_update[5] = {HS_KEY_UPDATE, 0, 0, 1, 0};   /* update_not_requested */
    int r = room(t, sizeof key_update, err);
    if (r) return r;
    if (seal(t, CT_HANDSHAKE, NULL, key_update, sizeof key_update) || dir_update(&t->tx))
        return gw_err_set(err, -EIO, "%s: TLS key update failed", t->base.peer);
    return 0;
}

static int rec_sendv(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err)
{
    struct rec_conn *t = (struct rec_conn *)c;
    size_t left = 0;
    for (int i = 0; i < iovcnt; i++) left += iov[i].iov_len;
    pthread_mutex_lock(&t->wmu);
    int r = t->wfatal ? gw_err_set(err, t->wfatal, "%s", t->wmsg) : 0;
    /* A send that timed out earlier may have left records behind: they go first. */
    if (!r && t->slen) r = flush(t, err);
    struct cursor cur = {.iov = iov, .cnt = iovcnt};
    while (!r && left) {
        size_t n = left < REC_MAX_PLAIN ? left : REC_MAX_PLAIN;
        if ((r = maybe_update_key(t, err)) || (r = room(t, n, err))) break;
        if (seal(t, CT_APPDATA, &cur, NULL, n)) r = gw_err_set(err, -EIO, "%s: TLS record sealing failed", t->base.peer);
        left -= n;
    }
    if (!r) r = flush(t, err);
    if (r && r != -ETIMEDOUT && !t->wfatal) {
        t->wfatal = r;
        snprintf(t->wmsg, sizeof t->wmsg, "%s", err && err->msg[0] ? err->msg : strerror(-r));
    }
    pthread_mutex_unlock(&t->wmu);
    return r;
}

/* ---- receiving -------------------------------------------------------------------------- */

/* Makes a whole record available at rbuf + rhead (rmu held). 1 = there; 0 = not yet and
 * !block; 2 = the stream ended (between records, or cutting one: the records above see the
 * cut); -errno. */
static int have_record(struct rec_conn *t, bool block, struct gw_err *err)
{
    for (;;) {
        size_t have = t->rtail - t->rhead;
        if (have >= REC_HDR) {
            const uint8_t *h = t->rbuf + t->rhead;
            size_t len = (size_t)h[3] << 8 | h[4];
            if (h[0] != CT_APPDATA || h[1] != 3 || h[2] != 3 || len < 1 + REC_TAG || len > REC_MAX_CIPHER)
                return gw_err_set(err, -EPROTO, "%s: receive: not a TLS 1.3 application record (type %u, version "
                                  "%u.%u, length %zu)", t->base.peer, h[0], h[1], h[2], len);
            if (have >= REC_HDR + len) return 1;
            if (t->rhead + REC_HDR + len > RECV_BUF) {   /* the rest does not fit behind it */
                memmove(t->rbuf, t->rbuf + t->rhead, have);
                t->rhead = 0;
                t->rtail = have;
            }
        } else if (t->rhead && t->rhead + REC_HDR > RECV_BUF) {
            memmove(t->rbuf, t->rbuf + t->rhead, have);
            t->rhead = 0;
            t->rtail = have;
        }
        if (t->rhead == t->rtail) t->rhead = t->rtail = 0;
        ssize_t n = recv(t->base.fd, t->rbuf + t->rtail, RECV_BUF - t->rtail, MSG_DONTWAIT);
        if (n > 0) { t->rtail += (size_t)n; continue; }
        if (n == 0) return 2;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            int e = errno;
            return gw_err_set(err, -e, "%s: receive: %s", t->base.peer, strerror(e));
        }
        if (!block) return 0;
        int r = wait_fd(t->base.fd, POLLIN, t->base.timeout_ms);
        if (r == -ETIMEDOUT)
            return gw_err_set(err, r, "%s: receive timed out after %d ms", t->base.peer, t->base.timeout_ms);
        if (r) return gw_err_set(err, r, "%s: poll: %s", t->base.peer, strerror(-r));
    }
}

/* A control record's content (in plain[0, len)), under the read key it came with. 0, 2 (a
 * close_notify: the end) or -errno. */
static int control(struct rec_conn *t, uint8_t type, size_t len, struct gw_err *err)
{
    const uint8_t *p = t->plain;
    if (type == CT_ALERT) {
        if (len != 2) return gw_err_set(err, -EPROTO, "%s: receive: a malformed TLS alert", t->base.peer);
        if (p[1] == 0) return 2;   /* close_notify */
        return gw_err_set(err, -ECONNRESET, "%s: receive: the peer sent TLS alert %u", t->base.peer, p[1]);
    }
    if (type == CT_HANDSHAKE && len == 5 && p[0] == HS_KEY_UPDATE && p[1] == 0 && p[2] == 0 && p[3] == 1) {
        if (p[4] != 0)
            return gw_err_set(err, -EPROTO, "%s: receive: the peer asked for a TLS key update (not supported)",
                              t->base.peer);
        return dir_update(&t->rx) ? gw_err_set(err, -EIO, "%s: TLS key update failed", t->base.peer) : 0;
    }
    return gw_err_set(err, -EPROTO, "%s: receive: an unexpected TLS record (type %u, %zu bytes)", t->base.peer, type,
                      len);
}

/* Opens the record at rbuf + rhead. Its content goes to the cursor's buffers when dst is set
 * (they have room for it), else to plain. *type gets the inner type and *len the content
 * length. 0 or -errno (rmu held). */
static int open_record(struct rec_conn *t, struct cursor *dst, uint8_t *type, size_t *len, struct gw_err *err)
{
    uint8_t *h = t->rbuf + t->rhead, *ct = h + REC_HDR;
    size_t clen = ((size_t)h[3] << 8 | h[4]) - REC_TAG, body = clen - 1;
    if (body > REC_MAX_PLAIN)
        return gw_err_set(err, -EPROTO, "%s: receive: a TLS record longer than 2^14 bytes", t->base.peer);
    int r = dir_begin(&t->rx, h);
    if (dst) {
        struct cursor c = *dst;   /* the caller's cursor moves only once the record verified */
        for (size_t done = 0; !r && done < body;) {
            const struct iovec *v = &c.iov[c.i];
            size_t k = v->iov_len - c.off;
            if (k > body - done) k = body - done;
            if (k) r = dir_update_bytes(&t->rx, (uint8_t *)v->iov_base + c.off, ct + done, k);
            done += k;
            c.off += k;
            if (c.off == v->iov_len) { c.i++; c.off = 0; }
        }
        if (!r) r = dir_update_bytes(&t->rx, type, ct + body, 1);
    } else if (!r) {
        r = dir_update_bytes(&t->rx, t->plain, ct, clen);
        if (!r) *type = t->plain[body];
    }
    int n;
    uint8_t fin[16];
    if (r || EVP_CIPHER_CTX_ctrl(t->rx.cx, EVP_CTRL_AEAD_SET_TAG, REC_TAG, ct + clen) != 1)
        return gw_err_set(err, -EIO, "%s: receive: TLS record opening failed", t->base.peer);
    if (EVP_CipherFinal_ex(t->rx.cx, fin, &n) != 1)
        return gw_err_set(err, -EBADMSG, "%s: receive: a TLS record failed authentication (bad record mac)",
                          t->base.peer);
    t->rx.seq++;
    t->rhead += REC_HDR + clen + REC_TAG;
    if (*type == 0)
        return gw_err_set(err, -EPROTO, "%s: receive: a padded TLS record (never sent by Godwit)", t->base.peer);
    *len = body;
    return 0;
}

/* Delivers into iov: blocks (up to the timeout) for the first byte only; after it, takes
 * only what is already here. The count, 0 at the end, or -errno. */
static long rec_recvv(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err)
{
    struct rec_conn *t = (struct rec_conn *)c;
    size_t want = 0;
    for (int i = 0; i < iovcnt; i++) want += iov[i].iov_len;
    pthread_mutex_lock(&t->rmu);
    long total = t->rfatal ? gw_err_set(err, t->rfatal, "%s", t->rmsg) : 0;
    struct cursor cur = {.iov = iov, .cnt = iovcnt};
    while (total >= 0 && (size_t)total < want) {
        if (t->poff < t->plen) {   /* the rest of a record opened earlier */
            const struct iovec *v = &iov[cur.i];
            size_t k = v->iov_len - cur.off;
            if (k > t->plen - t->poff) k = t->plen - t->poff;
            memcpy((uint8_t *)v->iov_base + cur.off, t->plain + t->poff, k);
            t->poff += k;
            cur.off += k;
            total += (long)k;
            if (cur.off == v->iov_len) { cur.i++; cur.off = 0; }
            continue;
        }
        if (t->eof) break;
        int r = have_record(t, total == 0, err);
        if (r == 0) break;
        if (r == 2) { t->eof = true; break; }
        if (r < 0) {
            if (r != -ETIMEDOUT) goto fatal;
            if (!total) total = r;
            break;
        }
        const uint8_t *h = t->rbuf + t->rhead;
        size_t body = ((size_t)h[3] << 8 | h[4]) - REC_TAG - 1, len = 0;
        bool direct = body >= DIRECT_MIN && body <= want - (size_t)total;
        uint8_t type;
        if ((r = open_record(t, direct ? &cur : NULL, &type, &len, err))) goto fatal;
        if (type == CT_APPDATA && direct) {
            for (size_t k = len; k;) {   /* move the cursor over what was placed */
                size_t step = iov[cur.i].iov_len - cur.off;
                if (step > k) step = k;
                cur.off += step;
                k -= step;
                if (cur.off == iov[cur.i].iov_len) { cur.i++; cur.off = 0; }
            }
            total += (long)len;
        } else if (type == CT_APPDATA) {
            t->poff = 0;
            t->plen = len;
        } else if (direct) {
            r = gw_err_set(err, -EPROTO, "%s: receive: a %zu-byte TLS control record", t->base.peer, len);
            goto fatal;
        } else if ((r = control(t, type, len, err)) == 2) {
            t->eof = true;
            break;
        } else if (r) {
            goto fatal;
        }
        continue;
    fatal:
        t->rfatal = r;
        snprintf(t->rmsg, sizeof t->rmsg, "%s", err && err->msg[0] ? err->msg : strerror(-r));
        if (!total) total = r;
        break;
    }
    pthread_mutex_unlock(&t->rmu);
    return total;
}

static long rec_recv_some(struct gw_conn *c, void *buf, size_t len, struct gw_err *err)
{
    struct iovec v = {buf, len};
    return rec_recvv(c, &v, 1, err);
}

/* ---- the connection --------------------------------------------------------------------- */

static void rec_shutdown(struct gw_conn *c)
{
    shutdown(c->fd, SHUT_RDWR);
}

static void rec_free(struct rec_conn *t)
{
    dir_free(&t->tx);
    dir_free(&t->rx);
    pthread_mutex_destroy(&t->wmu);
    pthread_mutex_destroy(&t->rmu);
    free(t->sbuf);
    free(t->rbuf);
    OPENSSL_cleanse(t->plain, sizeof t->plain);
    free(t);
}

static void rec_close(struct gw_conn *c)
{
    struct rec_conn *t = (struct rec_conn *)c;
    gw_conn_close(t->inner);
    rec_free(t);
}

static const struct gw_conn_ops rec_ops = {
    .name = "tls", .sendv = rec_sendv, .recv_some = rec_recv_some, .recvv = rec_recvv,
    .shutdown = rec_shutdown, .close = rec_close,
};

const char *gw_tls_records_what(const struct gw_conn *c)
{
    return c->ops == &rec_ops ? ((const struct rec_conn *)c)->what : NULL;
}

const char *gw_tls_records_suite(const struct gw_conn *c)
{
    return c->ops == &rec_ops ? ((const struct rec_conn *)c)->suite : NULL;
}

int gw_tls_records_wrap(struct gw_conn **cp, const struct gw_tls_traffic *tr, struct gw_err *err)
{
    struct gw_conn *in = *cp;
    if (tr->len == 0 || tr->len > GW_TLS_SECRET_MAX || !tr->md)
        return gw_err_set(err, -EINVAL, "TLS: no traffic secrets from the handshake");
    struct rec_conn *t = calloc(1, sizeof *t);
    if (!t) return gw_err_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&t->wmu, NULL);
    pthread_mutex_init(&t->rmu, NULL);
    t->base = *in;   /* peer, timeout, stream, token */
    t->base.ops = &rec_ops;
    t->base.priv = NULL;
    t->base.send_seq = t->base.recv_seq = t->base.bytes_sent = t->base.bytes_recv = 0;
    t->inner = in;
    t->what = tr->what;
    t->suite = tr->suite ? tr->suite : "";
    t->update_every = tr->update_every ? tr->update_every : GW_TLS_KEY_UPDATE_RECORDS;
    t->sbuf = malloc(SEND_BUF);
    t->rbuf = malloc(RECV_BUF);
    if (!t->sbuf || !t->rbuf || dir_init(&t->tx, tr, tr->tx, true) || dir_init(&t->rx, tr, tr->rx, false)) {
        rec_free(t);
        return gw_err_set(err, -EIO, "TLS: cannot set up the record keys");
    }
    *cp = &t->base;
    return 0;
}
