/* TCP back end: blocking sockets with TCP_NODELAY (records are whole units already),
 * large socket buffers (a migration link is a long fat pipe) and per-call timeouts through
 * SO_SNDTIMEO/SO_RCVTIMEO, so a silent peer turns into -ETIMEDOUT instead of a hang.
 * Sends use MSG_NOSIGNAL: a peer that hangs up is an error to report, not a SIGPIPE. */
#include "engine/transport/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define SOCK_BUF_BYTES (4 << 20)

static void addr_str(const struct sockaddr *sa, char *out, size_t len)
{
    char h[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)sa;
        inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
        port = ntohs(a->sin_port);
        snprintf(out, len, "tcp:%s:%u", h, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
        port = ntohs(a->sin6_port);
        snprintf(out, len, "tcp:[%s]:%u", h, port);
    } else {
        snprintf(out, len, "tcp:local");
    }
}

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void tune(int fd)
{
    int one = 1, buf = SOCK_BUF_BYTES;
    /* Not fatal when refused (a socketpair has no TCP options; limits may cap buffers). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
}

static int tcp_sendv(struct gw_conn *c, const struct iovec *iov_in, int iovcnt, struct gw_err *err)
{
    /* sendmsg takes at most IOV_MAX entries and we must not modify the caller's list: send
     * from a window copied out of it, its first entry advanced past what already went. */
    struct iovec v[IOV_MAX];
    int i = 0;
    size_t off = 0; /* into iov_in[i] */
    while (i < iovcnt) {
        if (off == iov_in[i].iov_len) { i++; off = 0; continue; }
        int k = 0;
        for (int j = i; j < iovcnt && k < IOV_MAX; j++, k++) v[k] = iov_in[j];
        v[0].iov_base = (uint8_t *)v[0].iov_base + off;
        v[0].iov_len -= off;
        struct msghdr m = { .msg_iov = v, .msg_iovlen = (size_t)k };
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return gw_err_set(err, -ETIMEDOUT, "%s: send timed out after %d ms", c->peer, c->timeout_ms);
            int e = errno;
            return gw_err_set(err, -e, "%s: send: %s", c->peer, strerror(e));
        }
        /* Skip what was sent; a short send leaves us inside one entry. */
        size_t left = (size_t)n;
        while (left) {
            size_t room = iov_in[i].iov_len - off;
            if (left < room) { off += left; left = 0; }
            else { left -= room; i++; off = 0; }
        }
    }
    return 0;
}

static long tcp_recv_some(struct gw_conn *c, void *buf, size_t len, struct gw_err *err)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return gw_err_set(err, -ETIMEDOUT, "%s: receive timed out after %d ms", c->peer, c->timeout_ms);
        int e = errno;
        return gw_err_set(err, -e, "%s: receive: %s", c->peer, strerror(e));
    }
}

static long tcp_recvv(struct gw_conn *c, const struct iovec *iov, int iovcnt, struct gw_err *err)
{
    /* MSG_WAITALL: one call fills the whole list unless the peer stops, a signal comes or
     * the timeout fires (then it returns what it has, or -1 when nothing came). */
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    for (;;) {
        ssize_t n = recvmsg(c->fd, &m, MSG_WAITALL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return gw_err_set(err, -ETIMEDOUT, "%s: receive timed out after %d ms", c->peer, c->timeout_ms);
        int e = errno;
        return gw_err_set(err, -e, "%s: receive: %s", c->peer, strerror(e));
    }
}

static void tcp_shutdown(struct gw_conn *c) { shutdown(c->fd, SHUT_RDWR); }

static void tcp_close(struct gw_conn *c)
{
    close(c->fd);
    free(c);
}

static const struct gw_conn_ops tcp_ops = {
    .name = "tcp", .sendv = tcp_sendv, .recv_some = tcp_recv_some, .recvv = tcp_recvv,
    .shutdown = tcp_shutdown, .close = tcp_close,
};

int gw_conn_from_fd(int fd, struct gw_conn **out, struct gw_err *err)
{
    struct gw_conn *c = calloc(1, sizeof *c);
    if (!c) return gw_err_set(err, -ENOMEM, "out of memory");
    c->ops = &tcp_ops;
    c->fd = fd;
    c->stream = GW_CONN_ANY_STREAM;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) addr_str((struct sockaddr *)&ss, c->peer, sizeof c->peer);
    else snprintf(c->peer, sizeof c->peer, "fd:%d", fd);
    tune(fd);
    *out = c;
    return 0;
}

int gw_conn_set_timeout(struct gw_conn *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms < 0 ? 0 : timeout_ms;
    if (c->fd >= 0) set_timeouts(c->fd, c->timeout_ms);
    return 0;
}

/* Non-blocking connect bounded by timeout_ms, then back to blocking. */
static int connect_one(const struct addrinfo *ai, int timeout_ms, int *fd_out)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) return -errno;
    tune(fd); /* before connect, so the window scale covers the large buffers */
    int r = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) { r = -errno; goto fail; }
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int n;
        do n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1); while (n < 0 && errno == EINTR);
        if (n == 0) { r = -ETIMEDOUT; goto fail; }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) { r = -soerr; goto fail; }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    *fd_out = fd;
    return 0;
fail:
    close(fd);
    return r;
}

int gw_tcp_connect(const char *host, uint16_t port, int timeout_ms, struct gw_conn **out,
                   struct gw_err *err)
{
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) return gw_err_set(err, -EHOSTUNREACH, "tcp: cannot resolve '%s': %s", host, gai_strerror(g));
    int fd = -1, r = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) r = connect_one(ai, timeout_ms, &fd);
    freeaddrinfo(res);
    if (fd < 0) return gw_err_set(err, r, "tcp: connect to %s:%u: %s", host, port, strerror(-r));
    r = gw_conn_from_fd(fd, out, err);
    if (r) { close(fd); return r; }
    gw_conn_set_timeout(*out, timeout_ms);
    return 0;
}

static int tcp_accept(struct gw_listener *l, int timeout_ms, struct gw_conn **out, struct gw_err *err)
{
    struct pollfd p = { .fd = l->fd, .events = POLLIN };
    int n;
    do n = poll(&p, 1, timeout_ms); while (n < 0 && errno == EINTR);
    if (n == 0) return gw_err_set(err, -ETIMEDOUT, "%s: no connection within %d ms", l->url, timeout_ms);
    if (n < 0) return gw_err_set(err, -errno, "%s: poll: %s", l->url, strerror(errno));
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return gw_err_set(err, -errno, "%s: accept: %s", l->url, strerror(errno));
    int r = gw_conn_from_fd(fd, out, err);
    if (r) close(fd);
    return r;
}

static void tcp_listener_close(struct gw_listener *l)
{
    close(l->fd);
    free(l);
}

static const struct gw_listener_ops tcp_listener_ops = { .accept = tcp_accept, .close = tcp_listener_close };

int gw_tcp_listen(const char *host, uint16_t port, struct gw_listener **out, struct gw_err *err)
{
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    int g = getaddrinfo(*host && strcmp(host, "*") ? host : NULL, ps, &hints, &res);
    if (g) return gw_err_set(err, -EADDRNOTAVAIL, "tcp: cannot resolve '%s': %s", host, gai_strerror(g));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), r = 0, one = 1;
    if (fd < 0) { r = -errno; goto fail; }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    tune(fd); /* accepted sockets inherit the buffer sizes */
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) { r = -errno; goto fail; }
    struct gw_listener *l = calloc(1, sizeof *l);
    if (!l) { r = -ENOMEM; goto fail; }
    l->ops = &tcp_listener_ops;
    l->fd = fd;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    addr_str((struct sockaddr *)&ss, l->url, sizeof l->url);
    freeaddrinfo(res);
    *out = l;
    return 0;
fail:
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return gw_err_set(err, r, "tcp: listen on %s:%u: %s", host, port, strerror(-r));
}
