/* The shared part of the transport: choosing a back end by URL scheme, and sending and
 * receiving whole records over any back end. The record checks live here once, so a TCP
 * and an RDMA connection reject the same bad input the same way. */
#include "engine/transport/conn.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"

int gw_err_set(struct gw_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int gw_url_parse(const char *url, char *scheme, size_t scheme_len, char *host, size_t host_len,
                 uint16_t *port)
{
    const char *c = strchr(url, ':');
    if (!c || (size_t)(c - url) >= scheme_len || c == url) return -EINVAL;
    memcpy(scheme, url, (size_t)(c - url));
    scheme[c - url] = 0;
    const char *h = c + 1, *hend, *p;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':') return -EINVAL;
        h++;
        p = hend + 2;
    } else {
        hend = strrchr(h, ':');
        if (!hend) return -EINVAL;
        p = hend + 1;
    }
    if (hend == h || (size_t)(hend - h) >= host_len) return -EINVAL;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = 0;
    uint64_t v;   /* digits only: strtoul alone also took " 80" and "+80" */
    if (gw_parse_u64(p, 0, 65535, &v)) return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

int gw_conn_connect(const char *url, int timeout_ms, struct gw_conn **out, struct gw_err *err)
{
    char scheme[16], host[256];
    uint16_t port;
    if (gw_url_parse(url, scheme, sizeof scheme, host, sizeof host, &port) || port == 0)
        return gw_err_set(err, -EINVAL, "bad migration URL '%s' (want tcp:HOST:PORT or rdma:HOST:PORT)", url);
    if (!strcmp(scheme, "tcp")) return gw_tcp_connect(host, port, timeout_ms, out, err);
    if (!strcmp(scheme, "rdma")) return gw_rdma_connect(host, port, timeout_ms, out, err);
    return gw_err_set(err, -EPROTONOSUPPORT, "unknown transport '%s' in '%s'", scheme, url);
}

int gw_listen(const char *url, struct gw_listener **out, struct gw_err *err)
{
    char scheme[16], host[256];
    uint16_t port;
    if (gw_url_parse(url, scheme, sizeof scheme, host, sizeof host, &port))
        return gw_err_set(err, -EINVAL, "bad listen URL '%s' (want tcp:HOST:PORT or rdma:HOST:PORT)", url);
    if (!strcmp(scheme, "tcp")) return gw_tcp_listen(host, port, out, err);
    if (!strcmp(scheme, "rdma")) return gw_rdma_listen(host, port, out, err);
    return gw_err_set(err, -EPROTONOSUPPORT, "unknown transport '%s' in '%s'", scheme, url);
}

int gw_listener_accept(struct gw_listener *l, int timeout_ms, struct gw_conn **out,
                       struct gw_err *err)
{
    return l->ops->accept(l, timeout_ms, out, err);
}

void gw_listener_close(struct gw_listener *l)
{
    if (l) l->ops->close(l);
}

void gw_conn_shutdown(struct gw_conn *c)
{
    if (c) c->ops->shutdown(c);
}

void gw_conn_close(struct gw_conn *c)
{
    if (c) c->ops->close(c);
}

void gw_rbuf_free(struct gw_rbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = 0;
}

int gw_conn_send_recordv(struct gw_conn *c, enum gw_wire_type type, struct iovec *iov,
                         int iovcnt, struct gw_err *err)
{
    size_t len = 0;
    for (int i = 1; i < iovcnt; i++) len += iov[i].iov_len;
    if (len > GW_WIRE_MAX_PAYLOAD)
        return gw_err_set(err, -EMSGSIZE, "%s record of %zu bytes is over the maximum",
                          gw_wire_type_name(type), len);
    struct gw_wire_header h = {
        .magic = GW_WIRE_MAGIC, .type = (uint8_t)type, .length = (uint32_t)len,
        .stream = c->stream == GW_CONN_ANY_STREAM ? 0 : c->stream, .seq = c->send_seq,
    };
    uint8_t hb[GW_WIRE_HEADER_SIZE];
    gw_wire_header_pack(&h, hb);
    iov[0] = (struct iovec){ hb, sizeof hb };
    int r = c->ops->sendv(c, iov, iovcnt, err);
    iov[0] = (struct iovec){ NULL, 0 }; /* hb dies with this call */
    if (r) return r;
    c->send_seq++;
    __atomic_add_fetch(&c->bytes_sent, sizeof hb + len, __ATOMIC_RELAXED);  /* read by stats from other threads */
    return 0;
}

int gw_conn_send_record(struct gw_conn *c, enum gw_wire_type type, const void *payload,
                        size_t len, struct gw_err *err)
{
    struct iovec v[2] = { { NULL, 0 }, { (void *)payload, len } };
    return gw_conn_send_recordv(c, type, v, len ? 2 : 1, err);
}

/* Reads exactly the bytes of iov[0..iovcnt); *got says how many arrived before an error or
 * end of stream. */
static int recv_fullv(struct gw_conn *c, const struct iovec *iov_in, int iovcnt, size_t *got,
                      struct gw_err *err)
{
    struct iovec v[IOV_MAX];
    *got = 0;
    int i = 0;
    size_t off = 0; /* into iov_in[i] */
    while (i < iovcnt) {
        if (off == iov_in[i].iov_len) { i++; off = 0; continue; }
        long n;
        if (c->ops->recvv) {
            /* A window of the list, the first entry advanced past what already arrived. */
            int k = 0;
            for (int j = i; j < iovcnt && k < (int)GW_ARRAY_SIZE(v); j++, k++) v[k] = iov_in[j];
            v[0].iov_base = (uint8_t *)v[0].iov_base + off;
            v[0].iov_len -= off;
            n = c->ops->recvv(c, v, k, err);
        } else {
            n = c->ops->recv_some(c, (uint8_t *)iov_in[i].iov_base + off, iov_in[i].iov_len - off, err);
        }
        if (n < 0) return (int)n;
        if (n == 0) return -EPIPE;
        *got += (size_t)n;
        __atomic_add_fetch(&c->bytes_recv, (uint64_t)n, __ATOMIC_RELAXED);  /* read by stats from other threads */
        /* Step over what arrived. */
        size_t left = (size_t)n;
        while (left) {
            size_t room = iov_in[i].iov_len - off;
            if (left < room) { off += left; left = 0; }
            else { left -= room; i++; off = 0; }
        }
    }
    return 0;
}

int gw_conn_recv_header(struct gw_conn *c, struct gw_wire_header *h, struct gw_err *err)
{
    if (c->rec_left)
        return gw_err_set(err, -EINVAL, "%s: %u payload bytes of the last record not read", c->peer, c->rec_left);
    uint8_t hb[GW_WIRE_HEADER_SIZE];
    size_t got;
    struct iovec v = { hb, sizeof hb };
    int r = recv_fullv(c, &v, 1, &got, err);
    if (r == -EPIPE && got == 0)
        return gw_err_set(err, -ESHUTDOWN, "%s: peer closed the connection", c->peer);
    if (r == -EPIPE)
        return gw_err_set(err, -EPIPE, "%s: peer hung up mid-record (%zu of %u header bytes)",
                          c->peer, got, GW_WIRE_HEADER_SIZE);
    if (r) return r;
    r = gw_wire_header_parse(hb, h);
    if (r == -EPROTO)
        return gw_err_set(err, r, "%s: unknown record type %u", c->peer, h->type);
    if (r == -EMSGSIZE)
        return gw_err_set(err, r, "%s: %s record length %u over the maximum %u", c->peer,
                          gw_wire_type_name(h->type), h->length, GW_WIRE_MAX_PAYLOAD);
    if (r)
        return gw_err_set(err, r, "%s: bad record header (magic %08x flags %u reserved %u)",
                          c->peer, h->magic, h->flags, h->reserved);
    if (c->max_payload && h->length > c->max_payload)
        return gw_err_set(err, -EMSGSIZE, "%s: %s record length %u over the limit %u here", c->peer,
                          gw_wire_type_name(h->type), h->length, c->max_payload);
    if (c->stream != GW_CONN_ANY_STREAM && h->stream != c->stream)
        return gw_err_set(err, -EBADMSG, "%s: record for stream %u on stream %u", c->peer,
                          h->stream, c->stream);
    if (h->seq != c->recv_seq)
        return gw_err_set(err, -EBADMSG, "%s: record sequence %llu, expected %llu", c->peer,
                          (unsigned long long)h->seq, (unsigned long long)c->recv_seq);
    /* The record is accepted here; a payload that does not follow ends the connection. */
    c->recv_seq++;
    c->rec = *h;
    c->rec_left = h->length;
    return 0;
}

int gw_conn_recv_payload(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err)
{
    size_t want = 0;
    for (int i = 0; i < iovcnt; i++) want += iov[i].iov_len;
    if (want > c->rec_left)
        return gw_err_set(err, -EMSGSIZE, "%s: %zu bytes asked of a %s record with %u left", c->peer,
                          want, gw_wire_type_name(c->rec.type), c->rec_left);
    size_t got;
    int r = recv_fullv(c, iov, iovcnt, &got, err);
    uint32_t done = c->rec.length - c->rec_left + (uint32_t)got;
    c->rec_left -= (uint32_t)got;
    if (r == -EPIPE)
        return gw_err_set(err, -EPIPE, "%s: peer hung up mid-record (%u of %u %s payload bytes)",
                          c->peer, done, c->rec.length, gw_wire_type_name(c->rec.type));
    return r;
}

int gw_conn_recv_record(struct gw_conn *c, struct gw_wire_header *h, struct gw_rbuf *buf,
                        struct gw_err *err)
{
    int r = gw_conn_recv_header(c, h, err);
    if (r) return r;
    if (h->length > buf->cap) {
        /* Grow to the record, not beyond: the header's length was bounded above. */
        uint8_t *nb = realloc(buf->data, h->length);
        if (!nb) return gw_err_set(err, -ENOMEM, "out of memory for a %u-byte record", h->length);
        buf->data = nb;
        buf->cap = h->length;
    }
    struct iovec v = { buf->data, h->length };
    return gw_conn_recv_payload(c, &v, 1, err);
}

void gw_conn_send_error(struct gw_conn *c, int code, const char *msg)
{
    Godwit__V1__MigError e = GODWIT__V1__MIG_ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    uint8_t *b;
    size_t n;
    if (gw_wire_pack_msg(&e.base, &b, &n)) return;
    gw_conn_send_record(c, GW_WIRE_ERROR, b, n, NULL);
    free(b);
}
