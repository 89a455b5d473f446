/* RDMA back end (librdmacm + libibverbs): a reliable-connected queue pair carrying the same
 * record byte stream as TCP, in SEND/RECV messages of up to CHUNK bytes through registered
 * bounce buffers. Framing, handshake and stream fan-out stay in the shared layer above.
 *
 * Records go through bounce buffers and each send completion is awaited; guest pages go by
 * RDMA WRITE straight into the destination's registered guest memory (rdma_mem.h). Both use
 * the verbs ops below (rdma_verbs.h), the only place the send side calls libibverbs, so that
 * the logic above them also runs over the test double. Flow control leans on the RC
 * transport's receiver-not-ready retry (rnr_retry 7 = retry forever) while the receiver
 * reposts its NRECV buffers.
 *
 * Before any address resolution the device list is checked, so a host without RDMA (no
 * InfiniBand/RoCE/iWARP device or no kernel support) gets one clear message. */
#include "engine/transport/conn.h"
#include "engine/transport/rdma_mem.h"
#include "engine/transport/rdma_verbs.h"

#include <errno.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <rdma/rdma_verbs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (64u * 1024)
#define NRECV 16u

struct rdma_priv {
    struct rdma_cm_id *id;
    struct ibv_mr *send_mr, *recv_mr;
    uint8_t *send_buf;           /* CHUNK bytes */
    uint8_t *recv_buf;           /* NRECV * CHUNK bytes */
    uint8_t *cur;                /* unread bytes of the current received message */
    size_t cur_len;
    int cur_slot;                /* buffer to repost once cur is consumed, -1 = none */
};

static int have_device(struct gw_err *err)
{
    int n = 0;
    errno = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    int e = errno;
    if (list) ibv_free_device_list(list);
    if (!list || n <= 0) {
        if (!list && e && e != ENOSYS && e != ENODEV)
            return gw_err_set(err, -ENODEV, "rdma: no RDMA device found (ibv_get_device_list failed: %s)",
                              strerror(e));
        return gw_err_set(err, -ENODEV, "rdma: no RDMA device found (ibv_get_device_list returned 0 devices)");
    }
    return 0;
}

/* ---- the verbs ops (rdma_verbs.h); dev is the connection's rdma_cm_id ---- */

static int ib_reg_mem(void *dev, void *mem, uint64_t len, bool remote_write, void **mr, uint32_t *rkey,
                      struct gw_err *err)
{
    struct rdma_cm_id *id = dev;
    int access = IBV_ACCESS_LOCAL_WRITE | (remote_write ? IBV_ACCESS_REMOTE_WRITE : 0);
    struct ibv_mr *m = ibv_reg_mr(id->pd, mem, len, access);
    if (!m) {
        int e = errno ? errno : EIO;
        return gw_err_set(err, -e, "rdma: cannot register %llu bytes: %s", (unsigned long long)len, strerror(e));
    }
    *mr = m;
    *rkey = m->rkey;
    return 0;
}

static void ib_dereg_mem(void *dev, void *mr)
{
    (void)dev;
    ibv_dereg_mr(mr);
}

static int ib_post_write(void *dev, void *mr, const void *local, uint64_t len, uint64_t remote_addr, uint32_t rkey,
                         uint64_t wr_id, struct gw_err *err)
{
    if (rdma_post_write(dev, (void *)(uintptr_t)wr_id, (void *)local, len, mr, IBV_SEND_SIGNALED, remote_addr, rkey)) {
        int e = errno ? errno : EIO;
        return gw_err_set(err, -e, "rdma: cannot post an RDMA WRITE: %s", strerror(e));
    }
    return 0;
}

static int ib_post_send(void *dev, void *mr, const void *buf, size_t len, uint64_t wr_id, struct gw_err *err)
{
    if (rdma_post_send(dev, (void *)(uintptr_t)wr_id, (void *)buf, len, mr, IBV_SEND_SIGNALED)) {
        int e = errno ? errno : EIO;
        return gw_err_set(err, -e, "rdma: cannot post a send: %s", strerror(e));
    }
    return 0;
}

static int ib_poll_send(void *dev, uint64_t *wr_id, struct gw_err *err)
{
    struct ibv_wc wc;
    if (rdma_get_send_comp(dev, &wc) <= 0) {
        int e = errno ? errno : EIO;
        return gw_err_set(err, -e, "rdma: send completion lost: %s", strerror(e));
    }
    if (wc.status != IBV_WC_SUCCESS)
        return gw_err_set(err, -EIO, "rdma: %s failed: %s", wc.opcode == IBV_WC_RDMA_WRITE ? "RDMA WRITE" : "send",
                          ibv_wc_status_str(wc.status));
    *wr_id = wc.wr_id;
    return 0;
}

static const struct gw_rdma_verbs_ops ib_verbs = {
    .name = "ibverbs", .reg_mem = ib_reg_mem, .dereg_mem = ib_dereg_mem, .post_write = ib_post_write,
    .post_send = ib_post_send, .poll_send = ib_poll_send,
};

static int post_recv_slot(struct rdma_priv *p, int slot)
{
    return rdma_post_recv(p->id, (void *)(uintptr_t)slot, p->recv_buf + (size_t)slot * CHUNK, CHUNK,
                          p->recv_mr) ? -errno : 0;
}

static int rdma_sendv(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err)
{
    struct rdma_priv *p = c->priv;
    size_t fill = 0;
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *src = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left || (i == iovcnt - 1 && fill)) {
            size_t n = left < CHUNK - fill ? left : CHUNK - fill;
            memcpy(p->send_buf + fill, src, n);
            fill += n; src += n; left -= n;
            if (fill < CHUNK && (left || i < iovcnt - 1)) continue;
            uint64_t wr_id;
            int r = c->rdma.ops->post_send(c->rdma.dev, p->send_mr, p->send_buf, fill, 0, err);
            if (!r) r = c->rdma.ops->poll_send(c->rdma.dev, &wr_id, err);
            if (r == -EIO) { /* a failed completion: the link is gone */
                char why[sizeof err->msg];
                snprintf(why, sizeof why, "%s", err ? err->msg : "send failed");
                return gw_err_set(err, -EPIPE, "%s: %s", c->peer, why);
            }
            if (r) return r;
            fill = 0;
        }
    }
    return 0;
}

static long rdma_recv_some(struct gw_conn *c, void *buf, size_t len, struct gw_err *err)
{
    struct rdma_priv *p = c->priv;
    if (!p->cur_len) {
        if (p->cur_slot >= 0 && post_recv_slot(p, p->cur_slot))
            return gw_err_set(err, -errno, "%s: rdma post recv: %s", c->peer, strerror(errno));
        p->cur_slot = -1;
        struct ibv_wc wc;
        if (rdma_get_recv_comp(p->id, &wc) <= 0)
            return gw_err_set(err, -EIO, "%s: rdma receive: %s", c->peer, strerror(errno));
        if (wc.status == IBV_WC_WR_FLUSH_ERR) return 0; /* the peer disconnected */
        if (wc.status != IBV_WC_SUCCESS)
            return gw_err_set(err, -EIO, "%s: rdma receive completion: %s", c->peer, ibv_wc_status_str(wc.status));
        p->cur_slot = (int)wc.wr_id;
        p->cur = p->recv_buf + (size_t)p->cur_slot * CHUNK;
        p->cur_len = wc.byte_len;
    }
    size_t n = len < p->cur_len ? len : p->cur_len;
    memcpy(buf, p->cur, n);
    p->cur += n;
    p->cur_len -= n;
    return (long)n;
}

static void rdma_shutdown(struct gw_conn *c)
{
    struct rdma_priv *p = c->priv;
    rdma_disconnect(p->id);
}

static void priv_free(struct rdma_priv *p)
{
    if (!p) return;
    if (p->send_mr) rdma_dereg_mr(p->send_mr);
    if (p->recv_mr) rdma_dereg_mr(p->recv_mr);
    if (p->id) rdma_destroy_ep(p->id);
    free(p->send_buf);
    free(p->recv_buf);
    free(p);
}

static void rdma_close(struct gw_conn *c)
{
    struct rdma_priv *p = c->priv;
    rdma_disconnect(p->id);
    priv_free(p);
    free(c);
}

static const struct gw_conn_ops rdma_ops = {
    .name = "rdma", .sendv = rdma_sendv, .recv_some = rdma_recv_some,
    .shutdown = rdma_shutdown, .close = rdma_close,
};

/* Registers buffers and posts the receives of a new endpoint; takes ownership of id. */
static int conn_wrap(struct rdma_cm_id *id, const char *peer, struct gw_conn **out, struct gw_err *err)
{
    struct rdma_priv *p = calloc(1, sizeof *p);
    struct gw_conn *c = calloc(1, sizeof *c);
    int r = -ENOMEM;
    if (!p || !c) goto fail;
    p->id = id;
    p->cur_slot = -1;
    p->send_buf = malloc(CHUNK);
    p->recv_buf = malloc((size_t)NRECV * CHUNK);
    if (!p->send_buf || !p->recv_buf) goto fail;
    p->send_mr = rdma_reg_msgs(id, p->send_buf, CHUNK);
    p->recv_mr = rdma_reg_msgs(id, p->recv_buf, (size_t)NRECV * CHUNK);
    r = -EIO;
    if (!p->send_mr || !p->recv_mr) goto fail;
    for (unsigned i = 0; i < NRECV; i++)
        if ((r = post_recv_slot(p, (int)i))) goto fail;
    c->ops = &rdma_ops;
    c->priv = p;
    c->rdma = (struct gw_rdma_verbs){ .ops = &ib_verbs, .dev = id };
    c->fd = -1;
    c->stream = GW_CONN_ANY_STREAM;
    snprintf(c->peer, sizeof c->peer, "rdma:%s", peer);
    *out = c;
    return 0;
fail:
    if (!p || !p->id) rdma_destroy_ep(id);
    priv_free(p);
    free(c);
    return gw_err_set(err, r, "rdma: cannot set up buffers for %s", peer);
}

static int make_ep(const char *host, uint16_t port, bool passive, struct rdma_cm_id **id, struct gw_err *err)
{
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    struct rdma_addrinfo hints = { .ai_port_space = RDMA_PS_TCP, .ai_flags = passive ? RAI_PASSIVE : 0 }, *res;
    if (rdma_getaddrinfo(host, ps, &hints, &res))
        return gw_err_set(err, -EHOSTUNREACH, "rdma: cannot resolve %s:%u: %s", host, port, strerror(errno));
    struct ibv_qp_init_attr attr = {
        .cap = { .max_send_wr = GW_RDMA_WRITES_IN_FLIGHT + 4, .max_recv_wr = NRECV, .max_send_sge = 1, .max_recv_sge = 1 },
        .qp_type = IBV_QPT_RC, .sq_sig_all = 1,
    };
    int r = rdma_create_ep(id, res, NULL, &attr); /* passive: the template for accepted QPs */
    int e = errno;
    rdma_freeaddrinfo(res);
    if (r) return gw_err_set(err, -e, "rdma: create endpoint for %s:%u: %s", host, port, strerror(e));
    return 0;
}

int gw_rdma_connect(const char *host, uint16_t port, int timeout_ms, struct gw_conn **out,
                    struct gw_err *err)
{
    int r = have_device(err);
    if (r) return r;
    struct rdma_cm_id *id;
    if ((r = make_ep(host, port, false, &id, err))) return r;
    if ((r = conn_wrap(id, host, out, err))) return r;
    struct rdma_conn_param cp = { .retry_count = 7, .rnr_retry_count = 7 };
    if (rdma_connect(id, &cp)) {
        int e = errno;
        gw_conn_close(*out);
        return gw_err_set(err, -e, "rdma: connect to %s:%u: %s", host, port, strerror(e));
    }
    return 0;
}

static int rdma_accept_one(struct gw_listener *l, int timeout_ms, struct gw_conn **out, struct gw_err *err)
{
    struct rdma_cm_id *id, *lid = l->priv;
    /* A synchronous listen id still has its own event channel: polling its fd bounds the
     * wait, then rdma_get_request finds the request ready. */
    if (lid->channel && timeout_ms >= 0) {
        struct pollfd pfd = { .fd = lid->channel->fd, .events = POLLIN };
        int n;
        do n = poll(&pfd, 1, timeout_ms); while (n < 0 && errno == EINTR);
        if (n == 0) return gw_err_set(err, -ETIMEDOUT, "%s: no connection within %d ms", l->url, timeout_ms);
    }
    if (rdma_get_request(lid, &id))
        return gw_err_set(err, -errno, "%s: rdma get request: %s", l->url, strerror(errno));
    int r = conn_wrap(id, "peer", out, err);
    if (r) return r;
    struct rdma_conn_param cp = { .retry_count = 7, .rnr_retry_count = 7 };
    if (rdma_accept(id, &cp)) {
        int e = errno;
        gw_conn_close(*out);
        return gw_err_set(err, -e, "%s: rdma accept: %s", l->url, strerror(e));
    }
    return 0;
}

static void rdma_listener_close(struct gw_listener *l)
{
    rdma_destroy_ep(l->priv);
    free(l);
}

static const struct gw_listener_ops rdma_listener_ops = { .accept = rdma_accept_one, .close = rdma_listener_close };

int gw_rdma_listen(const char *host, uint16_t port, struct gw_listener **out, struct gw_err *err)
{
    int r = have_device(err);
    if (r) return r;
    struct rdma_cm_id *id;
    if ((r = make_ep(host, port, true, &id, err))) return r;
    struct gw_listener *l = calloc(1, sizeof *l);
    if (!l || rdma_listen(id, 16)) {
        int e = l ? errno : ENOMEM;
        free(l);
        rdma_destroy_ep(id);
        return gw_err_set(err, -e, "rdma: listen on %s:%u: %s", host, port, strerror(e));
    }
    l->ops = &rdma_listener_ops;
    l->priv = id;
    l->fd = -1;
    snprintf(l->url, sizeof l->url, "rdma:%s:%u", host, port);
    *out = l;
    return 0;
}
