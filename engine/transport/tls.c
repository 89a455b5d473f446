/* TLS 1.3 for migration streams, as a gw_conn decorator (see tls.h for the why and the
 * preamble). OpenSSL runs the handshake through a small BIO of ours (non-blocking recv; the
 * records it builds are collected and sent with one send). After it, by default, the
 * records are Godwit's own (tls_records.c, with the traffic secrets OpenSSL negotiated, as
 * kernel TLS would get them); OpenSSL's record layer (SSL_read/SSL_write) remains for kernel
 * TLS, which needs OpenSSL's socket BIO (SSL_OP_ENABLE_KTLS), and for the tests that prove
 * the two record layers speak the same TLS. */
#include "engine/transport/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/transport/tls_records.h"

#define STAGE_BYTES (256u << 10)      /* plaintext per SSL_write */
#define DIRECT_BYTES (64u << 10)      /* a contiguous run this long is written in place */
#define READ_BUF_BYTES (256u << 10)   /* OpenSSL's read-ahead buffer */
#define PSK_LEN 48
/* AES-128-GCM first: the cipher is most of what an encrypted migration costs, and it runs
 * 5-9 % faster than AES-256 here. A PSK client offers one suite (its PSK's hash must be the
 * suite's), AES-256 towards a destination that may predate AES-128 (gw_sec_cfg.aes128); a
 * server takes either, and with certificates (no PSK) the client's first common suite wins. */
#define BOTH_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
#define PSK_IDENTITY "godwit-mig-tls-v1"
#define PSK_SALT "godwit-mig-tls-v1"
#define HANDSHAKE_DEFAULT_MS 10000

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

void gw_preamble_pack(const struct gw_preamble *p, uint8_t out[GW_PREAMBLE_SIZE])
{
    memset(out, 0, GW_PREAMBLE_SIZE);
    put32(out, GW_PREAMBLE_MAGIC);
    out[4] = 1;
    out[5] = p->tls ? 1 : 0;
    put16(out + 8, p->stream_index);
    put16(out + 10, p->nstreams);
    memcpy(out + 16, p->token, GW_SEC_TOKEN_SIZE);
}

int gw_preamble_parse(const uint8_t *buf, size_t n, struct gw_preamble *out)
{
    /* Refuse a wrong magic as soon as its bytes are there: a stranger's garbage is closed at
     * once instead of after a timeout. */
    uint8_t magic[4];
    put32(magic, GW_PREAMBLE_MAGIC);
    if (memcmp(buf, magic, n < 4 ? n : 4)) return -1;
    if (n < GW_PREAMBLE_SIZE) return 0;
    uint16_t idx = le16(buf + 8), cnt = le16(buf + 10);
    if (buf[4] != 1 || buf[5] > 1 || le16(buf + 6) || le32(buf + 12) || cnt == 0 || cnt > GW_WIRE_MAX_STREAMS ||
        idx >= cnt)
        return -1;
    out->tls = buf[5] == 1;
    out->stream_index = idx;
    out->nstreams = cnt;
    memcpy(out->token, buf + 16, GW_SEC_TOKEN_SIZE);
    return 1;
}

bool gw_token_set(const uint8_t token[GW_SEC_TOKEN_SIZE])
{
    uint8_t acc = 0;
    for (unsigned i = 0; i < GW_SEC_TOKEN_SIZE; i++) acc |= token[i];
    return acc != 0;
}

/* ---- context -------------------------------------------------------------------------- */

struct gw_tls_ctx {
    SSL_CTX *ctx;
    bool server, x509, ktls;
    bool aes128;               /* a PSK client offers TLS_AES_128_GCM_SHA256 (else AES-256) */
    bool openssl_records;      /* OpenSSL's record layer in user space too (tests) */
    uint64_t update_every;     /* records per key of ours; 0 = the default */
    uint8_t psk[PSK_LEN];
};

/* The kernel offers TLS records when the "tls" TCP upper-layer protocol is loaded. */
static bool kernel_has_tls(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "re");
    if (!f) return false;
    char line[256] = "";
    bool yes = false;
    if (fgets(line, sizeof line, f))
        for (char *t = strtok(line, " \n"); t; t = strtok(NULL, " \n")) yes |= !strcmp(t, "tls");
    fclose(f);
    return yes;
}

bool gw_tls_kernel_available(void) { return kernel_has_tls(); }

/* HKDF(md, salt, secret, info) into out[len]. */
static int hkdf(const EVP_MD *md, const char *salt, const uint8_t *secret, size_t slen, const char *info,
                uint8_t *out, size_t len)
{
    if (!secret || slen < GW_SEC_MIN_SECRET || slen > GW_SEC_MAX_SECRET) return -EINVAL;
    EVP_PKEY_CTX *k = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t got = len;
    int ok = k && EVP_PKEY_derive_init(k) > 0 && EVP_PKEY_CTX_set_hkdf_md(k, md) > 0 &&
             EVP_PKEY_CTX_set1_hkdf_salt(k, (const unsigned char *)salt, (int)strlen(salt)) > 0 &&
             EVP_PKEY_CTX_set1_hkdf_key(k, secret, (int)slen) > 0 &&
             EVP_PKEY_CTX_add1_hkdf_info(k, (const unsigned char *)info, (int)strlen(info)) > 0 &&
             EVP_PKEY_derive(k, out, &got) > 0 && got == len;
    EVP_PKEY_CTX_free(k);
    return ok ? 0 : -EIO;
}

int gw_tls_derive_psk(const uint8_t *secret, size_t len, uint8_t psk[PSK_LEN])
{
    return hkdf(EVP_sha384(), PSK_SALT, secret, len, "psk", psk, PSK_LEN);
}

int gw_sec_peer_token(const uint8_t *secret, size_t len, char out[65])
{
    uint8_t k[32];
    int r = hkdf(EVP_sha256(), "godwit-peer-api-v1", secret, len, "bearer", k, sizeof k);
    if (r) return r;
    for (unsigned i = 0; i < sizeof k; i++) snprintf(out + 2 * i, 3, "%02x", k[i]);
    OPENSSL_cleanse(k, sizeof k);
    return 0;
}

/* The context of an SSL, kept as the SSL_CTX's app data. */
static struct gw_tls_ctx *ctx_of(SSL *ssl) { return SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)); }

/* The PSK as a session of the suite with IANA id {0x13, id}: 0x01 TLS_AES_128_GCM_SHA256,
 * 0x02 TLS_AES_256_GCM_SHA384 (the PSK's hash must be the suite's). */
static SSL_SESSION *psk_session(SSL *ssl, const struct gw_tls_ctx *t, unsigned char id)
{
    const unsigned char suite[2] = {0x13, id};
    const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, suite);
    SSL_SESSION *s = cipher ? SSL_SESSION_new() : NULL;
    if (!s) return NULL;
    if (!SSL_SESSION_set1_master_key(s, t->psk, PSK_LEN) || !SSL_SESSION_set_cipher(s, cipher) ||
        !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
        SSL_SESSION_free(s);
        return NULL;
    }
    return s;
}

static int psk_use_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen, SSL_SESSION **sess)
{
    SSL_SESSION *s = psk_session(ssl, ctx_of(ssl), ctx_of(ssl)->aes128 ? 0x01 : 0x02);
    if (!s) return 0;
    if (md && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
        SSL_SESSION_free(s);   /* a retry for another hash: our PSK does not fit it */
        *sess = NULL;
        return 1;
    }
    *id = (const unsigned char *)PSK_IDENTITY;
    *idlen = sizeof PSK_IDENTITY - 1;
    *sess = s;
    return 1;
}

static int psk_find_cb(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
    *sess = NULL;
    if (idlen != sizeof PSK_IDENTITY - 1 || memcmp(id, PSK_IDENTITY, idlen)) return 1;   /* not ours: no PSK */
    /* The suite is chosen before the PSK is looked at: the PSK goes under that suite's hash,
     * so a source that offers either suite (older ones offer AES-256 only) is served. */
    const SSL_CIPHER *c = SSL_get_pending_cipher(ssl);
    *sess = psk_session(ssl, ctx_of(ssl), c && SSL_CIPHER_get_protocol_id(c) == 0x1301 ? 0x01 : 0x02);
    return *sess ? 1 : 0;
}

/* The first queued OpenSSL error as text (queue cleared). */
static const char *ssl_why(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e) snprintf(buf, len, "no detail");
    else ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

static void keylog_cb(const SSL *ssl, const char *line);

int gw_tls_ctx_new(const struct gw_sec_cfg *cfg, bool server, struct gw_tls_ctx **out, struct gw_err *err)
{
    *out = NULL;
    if (!cfg->tls) return 0;
    int nx = !!(cfg->cert && *cfg->cert) + !!(cfg->key && *cfg->key) + !!(cfg->ca && *cfg->ca);
    if (nx != 0 && nx != 3)
        return gw_err_set(err, -EINVAL, "TLS certificates need all three of tls_cert, tls_key and tls_ca");
    struct gw_tls_ctx *t = calloc(1, sizeof *t);
    if (!t) return gw_err_set(err, -ENOMEM, "out of memory");
    t->server = server;
    t->x509 = nx == 3;
    t->aes128 = cfg->aes128;
    t->ktls = kernel_has_tls();
    char why[256];
    int r = 0;
    if (!t->x509 && gw_tls_derive_psk(cfg->secret, cfg->secret_len, t->psk)) {
        r = gw_err_set(err, -EINVAL, "the cluster secret must be %u..%u bytes for the TLS key", GW_SEC_MIN_SECRET,
                       GW_SEC_MAX_SECRET);
        goto fail;
    }
    t->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!t->ctx || !SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(t->ctx, server || t->x509 ? BOTH_SUITES
                                          : cfg->aes128 ? "TLS_AES_128_GCM_SHA256" : "TLS_AES_256_GCM_SHA384")) {
        r = gw_err_set(err, -EIO, "TLS context: %s", ssl_why(why, sizeof why));
        goto fail;
    }
    SSL_CTX_set_app_data(t->ctx, t);
    SSL_CTX_set_num_tickets(t->ctx, 0);   /* no resumption: every stream proves the credential */
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(t->ctx, 1);
    SSL_CTX_set_default_read_buffer_len(t->ctx, READ_BUF_BYTES);
    SSL_CTX_set_keylog_callback(t->ctx, keylog_cb);
    if (t->x509) {
        if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->cert) != 1) {
            r = gw_err_set(err, -EACCES, "TLS certificate %s: %s", cfg->cert, ssl_why(why, sizeof why));
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(t->ctx) != 1) {
            r = gw_err_set(err, -EACCES, "TLS key %s: %s", cfg->key, ssl_why(why, sizeof why));
            goto fail;
        }
        if (SSL_CTX_load_verify_locations(t->ctx, cfg->ca, NULL) != 1) {
            r = gw_err_set(err, -EACCES, "TLS CA %s: %s", cfg->ca, ssl_why(why, sizeof why));
            goto fail;
        }
        /* Any certificate of the operator's CA is a member of the cluster: both sides must
         * show one. */
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    } else if (server) {
        SSL_CTX_set_psk_find_session_callback(t->ctx, psk_find_cb);
    } else {
        SSL_CTX_set_psk_use_session_callback(t->ctx, psk_use_cb);
    }
    *out = t;
    return 0;
fail:
    gw_tls_ctx_free(t);
    return r;
}

void gw_tls_ctx_set_records(struct gw_tls_ctx *t, bool openssl_records, uint64_t key_update_every)
{
    t->openssl_records = openssl_records;
    t->update_every = key_update_every;
}

void gw_tls_ctx_free(struct gw_tls_ctx *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx);
    OPENSSL_cleanse(t->psk, sizeof t->psk);
    free(t);
}

/* ---- preamble ------------------------------------------------------------------------- */

int gw_sec_send_preamble(struct gw_conn *c, const struct gw_tls_ctx *ctx, unsigned index, unsigned n,
                         const uint8_t *token, struct gw_err *err)
{
    if (n == 0 || n > GW_WIRE_MAX_STREAMS || index >= n)
        return gw_err_set(err, -EINVAL, "stream %u of %u", index, n);
    struct gw_preamble p = {.tls = ctx != NULL, .stream_index = (uint16_t)index, .nstreams = (uint16_t)n};
    if (token) memcpy(p.token, token, GW_SEC_TOKEN_SIZE);
    memcpy(c->token, p.token, sizeof c->token);
    uint8_t b[GW_PREAMBLE_SIZE];
    gw_preamble_pack(&p, b);
    struct iovec v = {b, sizeof b};
    return c->ops->sendv(c, &v, 1, err);
}

int gw_sec_recv_preamble(struct gw_conn *c, struct gw_preamble *out, struct gw_err *err)
{
    uint8_t b[GW_PREAMBLE_SIZE];
    size_t got = 0;
    while (got < sizeof b) {
        long n = c->ops->recv_some(c, b + got, sizeof b - got, err);
        if (n < 0) return (int)n;
        if (n == 0) return gw_err_set(err, -EPIPE, "%s: closed before its preamble (%zu of %u bytes)", c->peer, got,
                                      GW_PREAMBLE_SIZE);
        got += (size_t)n;
        if (gw_preamble_parse(b, got, out) < 0) break;
    }
    if (gw_preamble_parse(b, got, out) != 1)
        return gw_err_set(err, -EPROTO, "%s: not a migration stream (bad preamble)", c->peer);
    memcpy(c->token, out->token, sizeof c->token);
    return 0;
}

/* ---- the connection ------------------------------------------------------------------- */

struct tls_conn {
    struct gw_conn base;        /* first: a struct gw_conn * is a struct tls_conn * */
    struct gw_conn *inner;      /* owns the socket */
    struct gw_tls_ctx *ctx;
    SSL *ssl;
    pthread_mutex_t mu;         /* every SSL_* call on ssl, and wbuf */
    uint8_t *wbuf;              /* records built, not yet sent (user-space path) */
    size_t wlen, woff, wcap;
    uint8_t *stage;             /* sendv gathers into it: large SSL_writes */
    bool ktls_tx, ktls_rx, user_bio;
    /* The application traffic secrets, as the handshake derives them (own records only). */
    bool own_records;
    uint8_t client_secret[GW_TLS_SECRET_MAX], server_secret[GW_TLS_SECRET_MAX];
    size_t client_len, server_len;
    /* The first fatal error (under mu): OpenSSL's state after one is not worth asking again,
     * and a receive that returned bytes first reports it on the next call. */
    int fatal;
    char fatal_msg[256];
};

/* OpenSSL hands out the traffic secrets through its key log (the NSS key log lines:
 * "LABEL <client random> <secret>", in hex); the connection keeps the two application
 * secrets for its own records and nothing else. */
static void keylog_cb(const SSL *ssl, const char *line)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (!t || !t->own_records) return;
    uint8_t *dst;
    size_t *dlen;
    if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24)) { dst = t->client_secret; dlen = &t->client_len; }
    else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24)) { dst = t->server_secret; dlen = &t->server_len; }
    else return;
    const char *hex = strchr(line + 24, ' ');
    size_t n = hex ? strlen(++hex) : 0;
    if (n == 0 || n % 2 || n / 2 > GW_TLS_SECRET_MAX) return;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return;
        dst[i] = (uint8_t)v;
    }
    *dlen = n / 2;
}

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

/* Our BIO: reads are non-blocking recvs on the socket; writes append to wbuf. */
static int bio_write(BIO *b, const char *data, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    if (len <= 0) return 0;
    if (t->wlen + (size_t)len > t->wcap) {
        size_t cap = t->wcap ? t->wcap : STAGE_BYTES + (64u << 10);
        while (cap < t->wlen + (size_t)len) cap *= 2;
        uint8_t *nb = realloc(t->wbuf, cap);
        if (!nb) return -1;
        t->wbuf = nb;
        t->wcap = cap;
    }
    memcpy(t->wbuf + t->wlen, data, (size_t)len);
    t->wlen += (size_t)len;
    return len;
}

static int bio_read(BIO *b, char *buf, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = recv(t->base.fd, buf, (size_t)len, MSG_DONTWAIT);
        if (n >= 0) return (int)n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
        return -1;
    }
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b; (void)num; (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "godwit-migration");
    if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) && BIO_meth_set_ctrl(m, bio_ctrl) &&
        BIO_meth_set_create(m, bio_create))
        g_bio_method = m;
    else
        BIO_meth_free(m);
}

/* Waits up to the connection's timeout for events on the socket. 0, -ETIMEDOUT or -errno. */
static int wait_fd(struct tls_conn *t, short events, int timeout_ms)
{
    struct pollfd p = {.fd = t->base.fd, .events = events};
    int n;
    do n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1); while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n == 0) return -ETIMEDOUT;
    return 0;
}

/* Sends what wbuf holds (mu held; dropped while waiting for the socket unless !wait: then
 * whatever does not fit now stays for the next writer). A reader never waits here: two
 * readers waiting to send while their writers wait for room would never read again. */
static int drain_ex(struct tls_conn *t, bool wait, struct gw_err *err)
{
    while (t->woff < t->wlen) {
        ssize_t n = send(t->base.fd, t->wbuf + t->woff, t->wlen - t->woff, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) { t->woff += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            int e = errno;
            return gw_err_set(err, -e, "%s: send: %s", t->base.peer, strerror(e));
        }
        if (!wait) return 0;
        pthread_mutex_unlock(&t->mu);
        int r = wait_fd(t, POLLOUT, t->base.timeout_ms);
        pthread_mutex_lock(&t->mu);
        if (r == -ETIMEDOUT) return gw_err_set(err, r, "%s: send timed out after %d ms", t->base.peer, t->base.timeout_ms);
        if (r) return gw_err_set(err, r, "%s: poll: %s", t->base.peer, strerror(-r));
    }
    t->woff = t->wlen = 0;
    return 0;
}

static int drain(struct tls_conn *t, struct gw_err *err) { return drain_ex(t, true, err); }

/* Records the first fatal error (mu held) and returns it; later calls get the same. */
static int set_fatal(struct tls_conn *t, int r, const struct gw_err *err)
{
    if (!t->fatal) {
        t->fatal = r;
        snprintf(t->fatal_msg, sizeof t->fatal_msg, "%s", err && err->msg[0] ? err->msg : strerror(-r));
    }
    return r;
}

static int get_fatal(struct tls_conn *t, struct gw_err *err)
{
    return t->fatal ? gw_err_set(err, t->fatal, "%s", t->fatal_msg) : 0;
}

/* After an SSL_* call returned ret <= 0 (mu held): waits for what OpenSSL needs and returns 0
 * to retry, or the error. 1 = a clean close by the peer. */
static int ssl_wait(struct tls_conn *t, int ret, bool reader, const char *what, struct gw_err *err)
{
    int e = SSL_get_error(t->ssl, ret);
    int r;
    char why[256];
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        if ((r = drain_ex(t, !reader, err))) return r;
        pthread_mutex_unlock(&t->mu);
        r = wait_fd(t, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, t->base.timeout_ms);
        pthread_mutex_lock(&t->mu);
        if (r == -ETIMEDOUT)
            return gw_err_set(err, r, "%s: %s timed out after %d ms", t->base.peer, what, t->base.timeout_ms);
        return r ? gw_err_set(err, r, "%s: poll: %s", t->base.peer, strerror(-r)) : 0;
    case SSL_ERROR_ZERO_RETURN:
        return 1;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            if (errno && errno != EAGAIN) {
                int en = errno;
                return gw_err_set(err, -en, "%s: %s: %s", t->base.peer, what, strerror(en));
            }
            return 1;   /* the socket ended without close_notify: the record layer above sees the cut */
        }
        /* fall through */
    default:
        ssl_why(why, sizeof why);
        /* A record that fails its AEAD check is tampering (or corruption) on the link. */
        if (strstr(why, "bad record mac") || strstr(why, "decryption failed"))
            return gw_err_set(err, -EBADMSG, "%s: %s: a TLS record failed authentication (%s)", t->base.peer, what, why);
        return gw_err_set(err, -EPROTO, "%s: %s: %s", t->base.peer, what, why);
    }
}

static int tls_write_all(struct tls_conn *t, const uint8_t *buf, size_t len, struct gw_err *err)
{
    pthread_mutex_lock(&t->mu);
    int r = get_fatal(t, err);
    while (len && !r) {
        /* At most a stage per call: the records built are sent before more are made. */
        int n = SSL_write(t->ssl, buf, (int)(len > STAGE_BYTES ? STAGE_BYTES : len));
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            r = drain(t, err);
            continue;
        }
        r = ssl_wait(t, n, false, "send", err);
        if (r == 1) r = gw_err_set(err, -EPIPE, "%s: send: the peer closed the TLS session", t->base.peer);
    }
    if (r && r != -ETIMEDOUT) set_fatal(t, r, err);
    pthread_mutex_unlock(&t->mu);
    return r;
}

static int tls_sendv(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err)
{
    struct tls_conn *t = (struct tls_conn *)c;
    size_t fill = 0;
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        /* Entries that continue each other in memory (consecutive guest pages) are one run. */
        while (i + 1 < iovcnt && (const uint8_t *)iov[i + 1].iov_base == p + left) left += iov[++i].iov_len;
        /* A run of whole records goes out without the copy (the rest of the stage first, to
         * keep the order). */
        if (left >= DIRECT_BYTES) {
            int r = fill ? tls_write_all(t, t->stage, fill, err) : 0;
            if (r || (r = tls_write_all(t, p, left, err))) return r;
            fill = 0;
            continue;
        }
        while (left) {
            size_t k = STAGE_BYTES - fill < left ? STAGE_BYTES - fill : left;
            memcpy(t->stage + fill, p, k);
            fill += k;
            p += k;
            left -= k;
            if (fill == STAGE_BYTES) {
                int r = tls_write_all(t, t->stage, fill, err);
                if (r) return r;
                fill = 0;
            }
        }
    }
    return fill ? tls_write_all(t, t->stage, fill, err) : 0;
}

/* Reads into buf: blocks (up to the timeout) for the first byte only when block is set.
 * Returns the count, 0 at a clean end, -EAGAIN when !block and nothing is at hand, -errno. */
static long tls_read(struct tls_conn *t, void *buf, size_t len, bool block, struct gw_err *err)
{
    for (;;) {
        int n = SSL_read(t->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
        if (n > 0) return n;
        int e = SSL_get_error(t->ssl, n);
        if (!block && e == SSL_ERROR_WANT_READ) return -EAGAIN;
        int r = ssl_wait(t, n, true, "receive", err);
        if (r == 1) return 0;
        if (r) return r == -ETIMEDOUT ? r : set_fatal(t, r, err);
    }
}

static long tls_recv_some(struct gw_conn *c, void *buf, size_t len, struct gw_err *err)
{
    struct tls_conn *t = (struct tls_conn *)c;
    pthread_mutex_lock(&t->mu);
    long n = get_fatal(t, err);
    if (!n) n = tls_read(t, buf, len, true, err);
    if (t->wlen && n >= 0) drain_ex(t, false, NULL);   /* something OpenSSL had to answer */
    pthread_mutex_unlock(&t->mu);
    return n;
}

static long tls_recvv(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err)
{
    struct tls_conn *t = (struct tls_conn *)c;
    pthread_mutex_lock(&t->mu);
    long total = get_fatal(t, err);
    if (total) goto out;
    /* The first byte may wait; after it, take only what is already here. Entries that
     * continue each other in memory (consecutive guest pages) are read as one run: fewer
     * calls into OpenSSL, each taking up to a whole record. */
    for (int i = 0; i < iovcnt; i++) {
        uint8_t *base = iov[i].iov_base;
        size_t len = iov[i].iov_len, off = 0;
        while (i + 1 < iovcnt && (uint8_t *)iov[i + 1].iov_base == base + len) len += iov[++i].iov_len;
        while (off < len) {
            long n = tls_read(t, base + off, len - off, total == 0, err);
            if (n == -EAGAIN) goto out;
            if (n < 0) { if (!total) total = n; goto out; }
            if (n == 0) goto out;
            off += (size_t)n;
            total += n;
        }
    }
out:
    if (t->wlen && total >= 0) drain_ex(t, false, NULL);
    pthread_mutex_unlock(&t->mu);
    return total;
}

static void tls_shutdown(struct gw_conn *c)
{
    struct tls_conn *t = (struct tls_conn *)c;
    shutdown(t->base.fd, SHUT_RDWR);
}

static void tls_close(struct gw_conn *c)
{
    struct tls_conn *t = (struct tls_conn *)c;
    SSL_free(t->ssl);
    gw_conn_close(t->inner);
    pthread_mutex_destroy(&t->mu);
    free(t->wbuf);
    free(t->stage);
    free(t);
}

static const struct gw_conn_ops tls_ops = {
    .name = "tls", .sendv = tls_sendv, .recv_some = tls_recv_some, .recvv = tls_recvv,
    .shutdown = tls_shutdown, .close = tls_close,
};

const char *gw_sec_describe(const struct gw_conn *c, bool *ktls_tx, bool *ktls_rx)
{
    bool tx = false, rx = false;
    const char *what = "plain";
    if (c->ops == &tls_ops) {
        const struct tls_conn *t = (const struct tls_conn *)c;
        tx = t->ktls_tx;
        rx = t->ktls_rx;
        what = t->ctx->x509 ? "tls13-x509" : "tls13-psk";
    } else if (gw_tls_records_what(c)) {
        what = gw_tls_records_what(c);
    }
    if (ktls_tx) *ktls_tx = tx;
    if (ktls_rx) *ktls_rx = rx;
    return what;
}

const char *gw_tls_suite(const struct gw_conn *c)
{
    if (c->ops == &tls_ops) {
        const SSL_CIPHER *s = SSL_get_current_cipher(((const struct tls_conn *)c)->ssl);
        return s ? SSL_CIPHER_get_name(s) : "";
    }
    const char *s = gw_tls_records_suite(c);
    return s ? s : "";
}

static void free_partial(struct tls_conn *t)
{
    if (t->ssl) SSL_free(t->ssl);
    OPENSSL_cleanse(t->client_secret, sizeof t->client_secret);
    OPENSSL_cleanse(t->server_secret, sizeof t->server_secret);
    pthread_mutex_destroy(&t->mu);
    free(t->wbuf);
    free(t->stage);
    free(t);
}

/* After the handshake: the records go on in tls_records.c with the secrets OpenSSL derived,
 * and the SSL object goes (t is freed; *cp is replaced on success, else left as it was). */
static int hand_over(struct gw_conn **cp, struct tls_conn *t, struct gw_err *err)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
    bool client = !t->ctx->server;
    struct gw_tls_traffic tr = {
        .cipher_nid = c ? SSL_CIPHER_get_cipher_nid(c) : NID_undef,
        .md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL,
        .len = t->client_len,
        .what = t->ctx->x509 ? "tls13-x509" : "tls13-psk",
        .suite = c ? SSL_CIPHER_get_name(c) : NULL,
        .update_every = t->ctx->update_every,
    };
    int r = 0;
    /* Both secrets came, of the suite's hash length, and OpenSSL holds nothing of the
     * peer's beyond its handshake (else those bytes would be lost to the records). */
    if (!tr.md || t->client_len != (size_t)EVP_MD_get_size(tr.md) || t->server_len != t->client_len ||
        (tr.cipher_nid != NID_aes_256_gcm && tr.cipher_nid != NID_aes_128_gcm))
        r = gw_err_set(err, -EPROTO, "%s: TLS: the handshake gave no usable traffic secrets", t->base.peer);
    else if (SSL_has_pending(t->ssl))
        r = gw_err_set(err, -EPROTO, "%s: TLS: data arrived inside the handshake", t->base.peer);
    if (!r) {
        memcpy(tr.tx, client ? t->client_secret : t->server_secret, tr.len);
        memcpy(tr.rx, client ? t->server_secret : t->client_secret, tr.len);
        struct gw_conn *c0 = t->inner;
        r = gw_tls_records_wrap(&c0, &tr, err);
        if (!r) *cp = c0;
    }
    OPENSSL_cleanse(tr.tx, sizeof tr.tx);
    OPENSSL_cleanse(tr.rx, sizeof tr.rx);
    free_partial(t);
    return r;
}

int gw_tls_wrap(struct gw_conn **cp, struct gw_tls_ctx *ctx, bool announce, struct gw_err *err)
{
    struct gw_conn *in = *cp;
    if (in->fd < 0)
        return gw_err_set(err, -EPROTONOSUPPORT, "%s: TLS needs a socket; this transport has none (turn "
                          "migration TLS off for RDMA)", in->peer);
    pthread_once(&g_bio_once, bio_method_init);
    struct tls_conn *t = calloc(1, sizeof *t);
    if (!t) return gw_err_set(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    t->base = *in;   /* peer, timeout, stream, token */
    t->base.ops = &tls_ops;
    t->base.priv = NULL;
    t->base.send_seq = t->base.recv_seq = t->base.bytes_sent = t->base.bytes_recv = 0;
    t->inner = in;
    t->ctx = ctx;
    t->stage = malloc(STAGE_BYTES);
    t->ssl = SSL_new(ctx->ctx);
    char why[256];
    if (!t->stage || !t->ssl) {
        free_partial(t);
        return gw_err_set(err, -ENOMEM, "TLS: %s", ssl_why(why, sizeof why));
    }
    /* Kernel TLS needs OpenSSL's own socket BIO; without it our batching BIO serves better. */
    int fl = fcntl(in->fd, F_GETFL);
    if (ctx->ktls) {
        SSL_set_options(t->ssl, SSL_OP_ENABLE_KTLS);
        if (fl < 0 || fcntl(in->fd, F_SETFL, fl | O_NONBLOCK) < 0 || !SSL_set_fd(t->ssl, in->fd)) {
            free_partial(t);
            return gw_err_set(err, -EIO, "TLS: cannot attach the socket");
        }
    } else {
        BIO *b = g_bio_method ? BIO_new(g_bio_method) : NULL;
        if (!b) {
            free_partial(t);
            return gw_err_set(err, -ENOMEM, "TLS: cannot make a BIO");
        }
        BIO_set_data(b, t);
        SSL_set_bio(t->ssl, b, b);
        t->user_bio = true;
        /* Own records take over right after the handshake: OpenSSL must not read ahead
         * into the peer's first records. */
        t->own_records = !ctx->openssl_records;
        if (t->own_records) SSL_set_read_ahead(t->ssl, 0);
    }
    SSL_set_app_data(t->ssl, t);
    if (ctx->server) SSL_set_accept_state(t->ssl);
    else SSL_set_connect_state(t->ssl);
    int timeout = in->timeout_ms > 0 ? in->timeout_ms : HANDSHAKE_DEFAULT_MS;
    t->base.timeout_ms = timeout;
    int r = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        int n = SSL_do_handshake(t->ssl);
        int d = drain(t, err);   /* the flight just built */
        if (n == 1 && !d) break;
        if (d) { r = d; break; }
        r = ssl_wait(t, n, false, "TLS handshake", err);
        if (r == 1) r = gw_err_set(err, -EPIPE, "%s: closed during the TLS handshake", in->peer);
        if (r) break;
    }
    pthread_mutex_unlock(&t->mu);
    if (r) {
        /* The usual cause of a failed handshake between two of ours is the credential: say so. */
        if (r == -EPROTO || r == -EBADMSG || r == -EPIPE || r == -ECONNRESET) {
            char m[sizeof err->msg];
            snprintf(m, sizeof m, "%s", err ? err->msg : "");
            r = gw_err_set(err, -EACCES, "authentication failed: TLS with %s refused (%s not accepted): %s", in->peer,
                           ctx->x509 ? "certificate" : "wrong cluster secret?", m);
        }
        if (ctx->ktls && fl >= 0) fcntl(in->fd, F_SETFL, fl);
        free_partial(t);
        return r;
    }
    if (ctx->ktls) {
        t->ktls_tx = BIO_get_ktls_send(SSL_get_wbio(t->ssl));
        t->ktls_rx = BIO_get_ktls_recv(SSL_get_rbio(t->ssl));
    }
    t->base.timeout_ms = in->timeout_ms;
    if (announce)
        gw_info("migration stream %s: TLS 1.3 %s (%s), %s", in->peer, SSL_get_cipher_name(t->ssl),
                ctx->x509 ? "X.509, mutual" : "cluster PSK",
                t->ktls_tx || t->ktls_rx ? (t->ktls_tx && t->ktls_rx ? "kernel TLS" : "kernel TLS for one direction")
                : ctx->ktls ? "user-space TLS (the kernel refused kTLS for this suite)"
                : t->own_records ? "user-space TLS, records built by Godwit (no kernel TLS on this host)"
                                 : "user-space TLS, OpenSSL's records (no kernel TLS on this host)");
    if (t->own_records) return hand_over(cp, t, err);
    *cp = &t->base;
    return 0;
}
