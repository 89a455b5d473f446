/* Blocking gRPC client on an nghttp2 client session. The socket is non-blocking and every
 * wait goes through poll with the call's deadline, so no call outlives its deadline by more
 * than a scheduling delay, even against a server that stops answering. */
#include "engine/api/grpc_client.h"

#include "engine/api/grpc_addr.h"
#include "engine/common/util.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "engine/api/grpc_tls.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One call in flight; lives on gw_grpc_client_call's stack. */
struct client_call {
    int32_t stream_id;
    const uint8_t *req;        /* prefix + message */
    size_t req_len, req_off;
    struct gw_grpc_deframer deframer;
    gw_grpc_client_raw_fn fn;
    void *arg;
    bool done, have_status, user_cancel;
    int http_status;
    struct gw_grpc_status *st;
};

struct gw_grpc_client {
    int fd;
    nghttp2_session *ng;
    char *authority;
    char *token_hdr;           /* "Bearer <token>" or NULL */
    uint32_t max_message;
    bool broken;
    struct client_call *call;
    SSL_CTX *tls_ctx;          /* TLS, or NULL for h2c */
    SSL *ssl;
};

/* Sends up to len bytes: the count, or -1 with errno (EAGAIN: wait for the socket). */
static ssize_t c_send(struct gw_grpc_client *c, const uint8_t *p, size_t len)
{
    if (!c->ssl) return send(c->fd, p, len, MSG_NOSIGNAL);
    int n = SSL_write(c->ssl, p, (int)(len > INT32_MAX ? INT32_MAX : len));
    if (n > 0) return n;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : ECONNRESET;
    return -1;
}

/* Receives up to len bytes: the count, 0 at the end, or -1 with errno. */
static ssize_t c_recv(struct gw_grpc_client *c, uint8_t *p, size_t len)
{
    if (!c->ssl) return recv(c->fd, p, len, 0);
    int n = SSL_read(c->ssl, p, (int)len);
    if (n > 0) return n;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : ECONNRESET;
    return -1;
}

static void set_status(struct gw_grpc_status *st, int code, const char *msg)
{
    st->code = code;
    snprintf(st->message, sizeof st->message, "%s", msg);
}

static struct client_call *cur(struct gw_grpc_client *c, int32_t id)
{
    return c->call && c->call->stream_id == id ? c->call : NULL;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *n, size_t nl,
                     const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
    struct client_call *cc = cur(ud, f->hd.stream_id);
    if (!cc)
        return 0;
    if (nl == 7 && memcmp(n, ":status", 7) == 0) {
        cc->http_status = 0;
        for (size_t i = 0; i < vl && i < 4; i++)
            cc->http_status = cc->http_status * 10 + (v[i] - '0');
    } else if (nl == 11 && memcmp(n, "grpc-status", 11) == 0) {
        int code = 0;
        for (size_t i = 0; i < vl && i < 4; i++)
            code = code * 10 + (v[i] >= '0' && v[i] <= '9' ? v[i] - '0' : 0);
        cc->st->code = code;
        cc->have_status = true;
    } else if (nl == 12 && memcmp(n, "grpc-message", 12) == 0) {
        gw_grpc_pct_decode((const char *)v, vl, cc->st->message, sizeof cc->st->message);
    }
    return 0;
}

static int on_message(void *arg, const uint8_t *msg, uint32_t len)
{
    struct client_call *cc = arg;
    if (cc->fn && cc->fn(cc->arg, msg, len) != 0)
        return -ECANCELED;
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    struct client_call *cc = cur(ud, id);
    if (!cc || cc->done || cc->deframer.error)
        return 0;
    int rc = gw_grpc_deframer_feed(&cc->deframer, data, len, on_message, cc);
    if (rc < 0) {
        if (rc == -ECANCELED) {
            cc->user_cancel = true;
            set_status(cc->st, GW_GRPC_CANCELLED, "cancelled by the caller");
        } else if (rc == -EMSGSIZE) {
            set_status(cc->st, GW_GRPC_RESOURCE_EXHAUSTED, "response message too large");
        } else {
            set_status(cc->st, GW_GRPC_INTERNAL, "malformed or compressed response message");
        }
        cc->have_status = true;
        cc->done = true;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t err, void *ud)
{
    struct client_call *cc = cur(ud, id);
    if (!cc || cc->done)
        return 0;
    cc->done = true;
    if (cc->have_status)
        return 0;
    cc->have_status = true;
    if (err == NGHTTP2_REFUSED_STREAM)
        set_status(cc->st, GW_GRPC_UNAVAILABLE, "stream refused");
    else if (err == NGHTTP2_CANCEL)
        set_status(cc->st, GW_GRPC_CANCELLED, "stream cancelled by the server");
    else if (cc->http_status && cc->http_status != 200)
        set_status(cc->st, cc->http_status == 401 ? GW_GRPC_UNAUTHENTICATED :
                           cc->http_status == 404 ? GW_GRPC_UNIMPLEMENTED :
                           cc->http_status == 503 ? GW_GRPC_UNAVAILABLE : GW_GRPC_UNKNOWN,
                   "HTTP status without grpc-status");
    else
        set_status(cc->st, GW_GRPC_INTERNAL, "stream ended without grpc-status");
    return 0;
}

static ssize_t req_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                        uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct client_call *cc = src->ptr;
    size_t n = cc->req_len - cc->req_off;
    if (n > length)
        n = length;
    memcpy(buf, cc->req + cc->req_off, n);
    cc->req_off += n;
    if (cc->req_off == cc->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

int gw_grpc_client_connect(const char *addr, int timeout_ms, struct gw_grpc_client **out)
{
    nghttp2_session_callbacks *cb = NULL;
    struct gw_grpc_client *c = calloc(1, sizeof *c);
    int rc = -ENOMEM;
    if (!c)
        return -ENOMEM;
    c->fd = -1;
    c->max_message = 64u << 20;
    c->authority = strdup(strncmp(addr, "unix:", 5) == 0 ? "localhost" : addr);
    if (!c->authority)
        goto fail;
    rc = gw_grpc_addr_connect(addr, timeout_ms);
    if (rc < 0)
        goto fail;
    c->fd = rc;
    rc = -ENOMEM;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    if (nghttp2_session_client_new(&c->ng, cb, c) != 0)
        goto fail;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20 },
    };
    if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, GW_ARRAY_SIZE(iv)) != 0)
        goto fail;
    nghttp2_session_callbacks_del(cb);
    *out = c;
    return 0;
fail:
    if (cb)
        nghttp2_session_callbacks_del(cb);
    gw_grpc_client_close(c);
    return rc;
}

int gw_grpc_client_connect_tls(const char *addr, int timeout_ms, const struct gw_grpc_client_tls *tls,
                               struct gw_grpc_client **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) { err = dummy; errlen = sizeof dummy; }
    err[0] = 0;
    struct gw_grpc_client *c;
    int r = gw_grpc_client_connect(addr, timeout_ms, &c);
    if (r) { snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(-r)); return r; }
    r = gw_grpc_tls_client_ctx(tls->ca, tls->cert, tls->key, &c->tls_ctx, err, errlen);
    if (r) goto fail;
    r = -ENOMEM;
    if (!(c->ssl = SSL_new(c->tls_ctx)) || !SSL_set_fd(c->ssl, c->fd)) goto fail;
    /* The server's certificate must name the host (or address) we reached it by. */
    char host[256] = "localhost";
    const char *colon = strrchr(addr, ':');
    if (strncmp(addr, "unix:", 5) && colon) {
        const char *h = addr, *e = colon;
        if (*h == '[') { h++; if (e > h && e[-1] == ']') e--; }
        snprintf(host, sizeof host, "%.*s", (int)(e - h), h);
    }
    unsigned char ip[16];
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
        if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host)) goto fail;
    } else if (!SSL_set1_host(c->ssl, host) || !SSL_set_tlsext_host_name(c->ssl, host)) {
        goto fail;
    }
    uint64_t deadline = gw_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 10000) * 1000000ull;
    for (;;) {
        int n = SSL_connect(c->ssl);
        if (n == 1) break;
        int e = SSL_get_error(c->ssl, n);
        uint64_t now = gw_now_ns();
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || now >= deadline) {
            char why[200] = "timed out";
            unsigned long er = ERR_get_error();
            if (er) ERR_error_string_n(er, why, sizeof why);
            long v = SSL_get_verify_result(c->ssl);
            snprintf(err, errlen, "TLS with %s: %s", addr, v != X509_V_OK ? X509_verify_cert_error_string(v) : why);
            ERR_clear_error();
            r = now >= deadline ? -ETIMEDOUT : -EACCES;
            goto fail;
        }
        struct pollfd p = {.fd = c->fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        poll(&p, 1, (int)((deadline - now) / 1000000 + 1));
    }
    const unsigned char *alpn;
    unsigned alen = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    if (alen != 2 || memcmp(alpn, "h2", 2)) {
        snprintf(err, errlen, "TLS with %s: the server did not agree to HTTP/2 (ALPN)", addr);
        r = -EPROTO;
        goto fail;
    }
    *out = c;
    return 0;
fail:
    if (!err[0]) snprintf(err, errlen, "TLS with %s: %s", addr, strerror(-r));
    gw_grpc_client_close(c);
    return r;
}

int gw_grpc_client_set_token(struct gw_grpc_client *c, const char *token)
{
    free(c->token_hdr);
    c->token_hdr = NULL;
    if (!token || !token[0])
        return 0;
    if (asprintf(&c->token_hdr, "Bearer %s", token) < 0) {
        c->token_hdr = NULL;
        return -ENOMEM;
    }
    return 0;
}

void gw_grpc_client_set_max_message(struct gw_grpc_client *c, uint32_t bytes)
{
    c->max_message = bytes;
}

void gw_grpc_client_close(struct gw_grpc_client *c)
{
    if (!c)
        return;
    SSL_free(c->ssl);
    SSL_CTX_free(c->tls_ctx);
    if (c->ng)
        nghttp2_session_del(c->ng);
    if (c->fd >= 0)
        close(c->fd);
    free(c->authority);
    free(c->token_hdr);
    free(c);
}

/* Sends what nghttp2 has, waiting for the socket up to deadline. 0 or -errno. */
static int flush(struct gw_grpc_client *c, uint64_t deadline)
{
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(c->ng, &data)) > 0) {
        size_t off = 0;
        while (off < (size_t)n) {
            ssize_t w = c_send(c, data + off, (size_t)n - off);
            if (w >= 0) {
                off += (size_t)w;
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -errno;
            uint64_t now = gw_now_ns();
            if (deadline && now >= deadline)
                return -ETIMEDOUT;
            struct pollfd p = { .fd = c->fd, .events = POLLOUT };
            if (poll(&p, 1, deadline ? (int)((deadline - now) / 1000000 + 1) : -1) < 0 &&
                errno != EINTR)
                return -errno;
        }
    }
    return n < 0 ? -EPROTO : 0;
}

/* Reads once what the socket has and feeds nghttp2. 0, -EAGAIN (nothing yet) or -errno. */
static int pump_read(struct gw_grpc_client *c)
{
    uint8_t buf[16384];
    bool got = false;
    /* Over TLS, everything decrypted is taken now: poll would not wake for it again. */
    do {
        ssize_t n = c_recv(c, buf, sizeof buf);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return got ? 0 : -EAGAIN;
            return -errno;
        }
        if (n == 0)
            return -ECONNRESET;
        if (nghttp2_session_mem_recv(c->ng, buf, (size_t)n) < 0)
            return -EPROTO;
        got = true;
    } while (c->ssl);
    return 0;
}

static int submit(struct gw_grpc_client *c, struct client_call *cc, const char *path,
                  uint32_t timeout_ms)
{
    char tmo[10];
    size_t tl = gw_grpc_timeout_format((uint64_t)timeout_ms * 1000000ull, tmo);
#define H(n, v) { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE }
    nghttp2_nv nv[9] = {
        H(":method", "POST"), H(":scheme", "http"), H(":path", path),
        H(":authority", c->authority), H("te", "trailers"),
        H("content-type", "application/grpc"), H("user-agent", "godwit-grpc-c/1"),
    };
    size_t n = 7;
    if (timeout_ms)
        nv[n++] = (nghttp2_nv){ (uint8_t *)"grpc-timeout", (uint8_t *)tmo, 12, tl, NGHTTP2_NV_FLAG_NONE };
    if (c->token_hdr)
        nv[n++] = (nghttp2_nv)H("authorization", c->token_hdr);
#undef H
    nghttp2_data_provider prd = { .source.ptr = cc, .read_callback = req_read };
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, n, &prd, NULL);
    if (id < 0)
        return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -ENOSPC : -EPROTO;
    cc->stream_id = id;
    return 0;
}

int gw_grpc_client_call(struct gw_grpc_client *c, const char *path, const uint8_t *req,
                        size_t len, gw_grpc_client_raw_fn fn, void *arg, uint32_t timeout_ms,
                        struct gw_grpc_status *st)
{
    struct client_call cc = { .fn = fn, .arg = arg, .st = st };
    uint8_t *framed = NULL;
    int rc;
    set_status(st, GW_GRPC_UNKNOWN, "");
    if (c->broken) {
        set_status(st, GW_GRPC_UNAVAILABLE, "connection lost");
        return -ENOTCONN;
    }
    if (len > UINT32_MAX) {
        set_status(st, GW_GRPC_INVALID_ARGUMENT, "request too large");
        return 0;
    }
    uint64_t deadline = timeout_ms ? gw_now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    framed = malloc(GW_GRPC_PREFIX_LEN + len);
    if (!framed) {
        set_status(st, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    gw_grpc_prefix_write(framed, (uint32_t)len);
    if (len)
        memcpy(framed + GW_GRPC_PREFIX_LEN, req, len);
    cc.req = framed;
    cc.req_len = GW_GRPC_PREFIX_LEN + len;
    gw_grpc_deframer_init(&cc.deframer, c->max_message);
    c->call = &cc;
    rc = submit(c, &cc, path, timeout_ms);
    while (rc == 0 && !cc.done) {
        rc = flush(c, deadline);
        if (rc < 0)
            break;
        uint64_t now = gw_now_ns();
        if (deadline && now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int n = poll(&p, 1, deadline ? (int)((deadline - now + 999999) / 1000000) : -1);
        if (n < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (n > 0) {
            rc = pump_read(c);
            if (rc == -EAGAIN)
                rc = 0;
        }
    }
    if (rc == -ETIMEDOUT) {
        /* Our deadline passed first: reset the stream so the server stops working on it. */
        cc.done = cc.have_status = true;  /* our own RST must not rewrite the status */
        set_status(st, GW_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
        nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, cc.stream_id, NGHTTP2_CANCEL);
        rc = flush(c, gw_now_ns() + 100000000ull);
        if (rc == -ETIMEDOUT)
            rc = 0;
    } else if (rc == 0 && cc.user_cancel) {
        rc = flush(c, deadline ? deadline : gw_now_ns() + 1000000000ull);
        if (rc == -ETIMEDOUT)
            rc = 0;
    }
    if (rc < 0) {
        c->broken = true;
        char msg[96];
        snprintf(msg, sizeof msg, "connection lost: %s", strerror(-rc));
        set_status(st, GW_GRPC_UNAVAILABLE, msg);
    }
    c->call = NULL;
    gw_grpc_deframer_free(&cc.deframer);
    free(framed);
    return rc;
}

struct unpack_ctx {
    const ProtobufCMessageDescriptor *desc;
    gw_grpc_client_msg_fn fn;
    void *arg;
    ProtobufCMessage *unary;   /* unary: the (single) response */
    bool bad;
};

static int unpack_one(void *arg, const uint8_t *msg, size_t len)
{
    struct unpack_ctx *u = arg;
    ProtobufCMessage *m = protobuf_c_message_unpack(u->desc, NULL, len, msg);
    if (!m) {
        u->bad = true;
        return -1;
    }
    if (u->fn) {
        int rc = u->fn(u->arg, m);
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    if (u->unary) {   /* a second message on a unary call */
        protobuf_c_message_free_unpacked(m, NULL);
        u->bad = true;
        return -1;
    }
    u->unary = m;
    return 0;
}

static uint8_t *pack(const ProtobufCMessage *req, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(req, buf);
    return buf;
}

static int call_unpacked(struct gw_grpc_client *c, const char *path, const ProtobufCMessage *req,
                         struct unpack_ctx *u, uint32_t timeout_ms, struct gw_grpc_status *st)
{
    size_t len;
    uint8_t *buf = pack(req, &len);
    if (!buf) {
        set_status(st, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return -ENOMEM;
    }
    int rc = gw_grpc_client_call(c, path, buf, len, unpack_one, u, timeout_ms, st);
    free(buf);
    if (rc == 0 && u->bad)
        set_status(st, GW_GRPC_INTERNAL, "malformed response message");
    return rc;
}

int gw_grpc_client_unary(struct gw_grpc_client *c, const char *path,
                         const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                         ProtobufCMessage **resp, uint32_t timeout_ms, struct gw_grpc_status *st)
{
    struct unpack_ctx u = { .desc = resp_desc };
    *resp = NULL;
    int rc = call_unpacked(c, path, req, &u, timeout_ms, st);
    if (rc == 0 && st->code == GW_GRPC_OK && !u.unary)
        set_status(st, GW_GRPC_INTERNAL, "no response message");
    if (rc == 0 && st->code == GW_GRPC_OK) {
        *resp = u.unary;
        u.unary = NULL;
    }
    if (u.unary)
        protobuf_c_message_free_unpacked(u.unary, NULL);
    return rc;
}

int gw_grpc_client_stream(struct gw_grpc_client *c, const char *path,
                          const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                          gw_grpc_client_msg_fn fn, void *arg, uint32_t timeout_ms,
                          struct gw_grpc_status *st)
{
    struct unpack_ctx u = { .desc = resp_desc, .fn = fn, .arg = arg };
    return call_unpacked(c, path, req, &u, timeout_ms, st);
}
