/* gRPC server lifecycle and its event loop: one thread, epoll over the listening socket,
 * an eventfd that worker threads poke when a call has output, and every connection's
 * non-blocking socket. Deadlines live in a min-heap whose head sets the epoll timeout.
 * Reads per wake-up are bounded so that one busy client cannot starve the others, and a
 * connection's unsent output is bounded by nghttp2's flow control plus one socket buffer. */
#include "engine/api/grpc_server_int.h"

#include "engine/api/grpc_tls.h"
#include "engine/common/log.h"
#include "engine/common/util.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

enum { EV_LISTEN = 1, EV_WAKE = 2, EV_CONN = 3 };

#define READ_CHUNK 16384
#define READS_PER_WAKE 16

int gw_grpc_server_new(const struct gw_grpc_server_config *cfg, struct gw_grpc_server **out)
{
    if (!cfg || !cfg->listen || !cfg->listen[0])
        return -EINVAL;
    struct gw_grpc_server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    if (!s->cfg.max_message_bytes) s->cfg.max_message_bytes = 4u << 20;
    if (!s->cfg.max_connections) s->cfg.max_connections = 256;
    if (!s->cfg.max_streams) s->cfg.max_streams = 128;
    if (!s->cfg.workers) s->cfg.workers = 4;
    if (!s->cfg.idle_timeout_ms) s->cfg.idle_timeout_ms = 5 * 60 * 1000;
    if (!s->cfg.max_send_queue_bytes) s->cfg.max_send_queue_bytes = 16u << 20;
    if (!s->cfg.max_send_total_bytes) s->cfg.max_send_total_bytes = 256ull << 20;
    if (s->cfg.max_send_total_bytes < s->cfg.max_send_queue_bytes)
        s->cfg.max_send_total_bytes = s->cfg.max_send_queue_bytes;
    if (!s->cfg.max_conn_buffer_bytes) {
        uint64_t two = 2ull * s->cfg.max_message_bytes;
        s->cfg.max_conn_buffer_bytes = two > (16u << 20) ? (two > UINT32_MAX ? UINT32_MAX : (uint32_t)two)
                                                          : (16u << 20);
    }
    if (!s->cfg.max_buffer_bytes) s->cfg.max_buffer_bytes = 256ull << 20;
    if (s->cfg.max_buffer_bytes < s->cfg.max_conn_buffer_bytes)
        s->cfg.max_buffer_bytes = s->cfg.max_conn_buffer_bytes;
    s->listen_fd = s->epoll_fd = s->wake_fd = -1;
    s->listen_kind = EV_LISTEN;
    s->wake_kind = EV_WAKE;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->work_lock, NULL);
    pthread_cond_init(&s->work_cond, NULL);
    s->listen_addr = strdup(cfg->listen);
    s->token = cfg->token && cfg->token[0] ? strdup(cfg->token) : NULL;
    s->cfg.listen = s->listen_addr;
    s->cfg.token = s->token;
    s->peer_token = cfg->peer_token && cfg->peer_token[0] ? strdup(cfg->peer_token) : NULL;
    s->cfg.peer_token = s->peer_token;
    if (!s->listen_addr || (cfg->token && cfg->token[0] && !s->token) ||
        (cfg->peer_token && cfg->peer_token[0] && !s->peer_token) ||
        gw_h2_callbacks_new(&s->ng_cbs) < 0 || nghttp2_option_new(&s->ng_opt) != 0) {
        gw_grpc_server_free(s);
        return -ENOMEM;
    }
    if (cfg->tls_cert && cfg->tls_cert[0]) {
        char err[512];
        int r = gw_grpc_tls_server_ctx(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca, &s->tls, err, sizeof err);
        if (r) {
            gw_error("grpc: %s", err);
            gw_grpc_server_free(s);
            return r;
        }
    }
    /* Flow control by hand: request bytes beyond a connection's budget are not
     * acknowledged until earlier calls let theirs go, so the client waits instead of
     * getting RESOURCE_EXHAUSTED (grpc_h2.c, on_data_chunk). */
    nghttp2_option_set_no_auto_window_update(s->ng_opt, 1);
    *out = s;
    return 0;
}

int gw_grpc_server_register(struct gw_grpc_server *s, const struct gw_grpc_method *m)
{
    if (s->started)
        return -EBUSY;
    if (!m->path || m->path[0] != '/' || strlen(m->path) >= GW_GRPC_PATH_MAX || !m->handler)
        return -EINVAL;
    if (gw_server_find_method(s, m->path))
        return -EEXIST;
    if (s->nmethods == s->methods_cap) {
        size_t cap = s->methods_cap ? 2 * s->methods_cap : 16;
        struct gw_grpc_method_entry *n = realloc(s->methods, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        s->methods = n;
        s->methods_cap = cap;
    }
    struct gw_grpc_method_entry *e = &s->methods[s->nmethods];
    e->path = strdup(m->path);
    if (!e->path)
        return -ENOMEM;
    e->m = *m;
    e->m.path = e->path;
    s->nmethods++;
    return 0;
}

const struct gw_grpc_method_entry *gw_server_find_method(const struct gw_grpc_server *srv,
                                                         const char *path)
{
    /* A service has tens of methods: a linear scan is as fast as a hash here. */
    for (size_t i = 0; i < srv->nmethods; i++)
        if (strcmp(srv->methods[i].path, path) == 0)
            return &srv->methods[i];
    return NULL;
}

/* ---- deadline heap (loop thread) --------------------------------------------------------- */

static void heap_set(struct gw_grpc_server *s, size_t i, struct gw_grpc_call *c)
{
    s->heap[i] = c;
    c->heap_idx = (int)i;
}

static void heap_sift(struct gw_grpc_server *s, size_t i)
{
    struct gw_grpc_call *c = s->heap[i];
    while (i > 0 && s->heap[(i - 1) / 2]->deadline_ns > c->deadline_ns) {
        heap_set(s, i, s->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint64_t best = c->deadline_ns;
        if (l < s->heap_len && s->heap[l]->deadline_ns < best)
            m = l, best = s->heap[l]->deadline_ns;
        if (l + 1 < s->heap_len && s->heap[l + 1]->deadline_ns < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(s, i, s->heap[m]);
        i = m;
    }
    heap_set(s, i, c);
}

void gw_server_deadline_add(struct gw_grpc_server *s, struct gw_grpc_call *c)
{
    if (c->heap_idx >= 0)
        return;
    if (s->heap_len == s->heap_cap) {
        size_t cap = s->heap_cap ? 2 * s->heap_cap : 64;
        struct gw_grpc_call **n = realloc(s->heap, cap * sizeof *n);
        if (!n)
            return;  /* no deadline enforcement for this call rather than failing it */
        s->heap = n;
        s->heap_cap = cap;
    }
    heap_set(s, s->heap_len++, c);
    heap_sift(s, s->heap_len - 1);
}

void gw_server_deadline_del(struct gw_grpc_server *s, struct gw_grpc_call *c)
{
    if (c->heap_idx < 0)
        return;
    size_t i = (size_t)c->heap_idx;
    c->heap_idx = -1;
    struct gw_grpc_call *last = s->heap[--s->heap_len];
    if (i < s->heap_len) {
        heap_set(s, i, last);
        heap_sift(s, i);
    }
}

/* Expires due calls; returns the epoll timeout (ms) until the next deadline, -1 for none. */
static int expire_deadlines(struct gw_grpc_server *s)
{
    uint64_t now = gw_now_ns();
    while (s->heap_len && s->heap[0]->deadline_ns <= now) {
        struct gw_grpc_call *c = s->heap[0];
        gw_server_deadline_del(s, c);
        gw_call_expire(c);
        gw_h2_call_expired(c);
    }
    if (!s->heap_len)
        return -1;
    uint64_t ms = (s->heap[0]->deadline_ns - now + 999999) / 1000000;
    return ms > 1000 ? 1000 : (int)ms;
}

/* ---- connections ------------------------------------------------------------------------- */

void gw_server_call_detach(struct gw_grpc_call *c)
{
    struct gw_h2_conn *conn = c->conn;
    if (!conn)
        return;
    if (c->conn_prev)
        c->conn_prev->conn_next = c->conn_next;
    else
        conn->calls = c->conn_next;
    if (c->conn_next)
        c->conn_next->conn_prev = c->conn_prev;
    conn->ncalls--;
    /* The request bytes are freed with the call, maybe later on a worker; the budget lets go
     * now, as the client cannot add to them once the stream is closed. */
    conn->held -= c->held;
    c->srv->held -= c->held;
    c->held = 0;
    conn->owed -= c->owed;   /* the stream is gone: its window with it */
    c->owed = 0;
    /* Budget freed: streams waiting here, or on other connections (the server-wide budget),
     * may go on. */
    for (struct gw_h2_conn *k = c->srv->conns; k; k = k->next)
        gw_h2_conn_repay(k);
    c->conn = NULL;
    gw_server_deadline_del(c->srv, c);
    gw_call_cancel(c);
    gw_grpc_call_unref(c);  /* the stream's reference */
}

static void conn_close(struct gw_h2_conn *conn)
{
    struct gw_grpc_server *s = conn->srv;
    while (conn->calls) {
        struct gw_grpc_call *c = conn->calls;
        nghttp2_session_set_stream_user_data(conn->ng, c->stream_id, NULL);
        gw_server_call_detach(c);
    }
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        s->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    s->nconns--;
    epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
    SSL_free(conn->ssl);
    close(conn->fd);
    nghttp2_session_del(conn->ng);
    free(conn->wbuf);
    free(conn);
}

static void conn_want_write(struct gw_h2_conn *conn, bool on)
{
    if (conn->epollout == on)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = conn };
    if (epoll_ctl(conn->srv->epoll_fd, EPOLL_CTL_MOD, conn->fd, &ev) == 0)
        conn->epollout = on;
}

/* Sends up to len bytes (TLS or plain): the count, or -1 with errno (EAGAIN when the socket
 * or TLS must wait; conn->ssl_wants_read says it waits for input, not for room). */
static ssize_t conn_send(struct gw_h2_conn *conn, const uint8_t *p, size_t len)
{
    conn->ssl_wants_read = false;
    if (!conn->ssl)
        return send(conn->fd, p, len, MSG_NOSIGNAL);
    int n = SSL_write(conn->ssl, p, (int)(len > INT32_MAX ? INT32_MAX : len));
    if (n > 0)
        return n;
    int e = SSL_get_error(conn->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        conn->ssl_wants_read = e == SSL_ERROR_WANT_READ;
        errno = EAGAIN;
        return -1;
    }
    errno = ECONNRESET;
    return -1;
}

/* Writes what nghttp2 has to send. Returns 0, or -errno when the connection must close.
 * A socket that does not take everything keeps the rest in wbuf and nghttp2 is not asked for
 * more until it drained: output never grows past one chunk per connection. */
static int conn_flush(struct gw_h2_conn *conn)
{
    for (;;) {
        if (conn->woff < conn->wlen) {
            ssize_t n = conn_send(conn, conn->wbuf + conn->woff, conn->wlen - conn->woff);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    /* A TLS handshake waiting for the client: its input retries (conn_read). */
                    conn_want_write(conn, !conn->ssl_wants_read);
                    return 0;
                }
                return errno == EINTR ? 0 : -errno;
            }
            conn->woff += (size_t)n;
            continue;
        }
        conn->woff = conn->wlen = 0;
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(conn->ng, &data);
        if (n < 0)
            return -EPROTO;
        if (n == 0)
            break;
        ssize_t w = conn_send(conn, data, (size_t)n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return -errno;
            w = 0;
        }
        if (w < n) {
            size_t rest = (size_t)(n - w);
            if (rest > conn->wcap) {
                uint8_t *nb = realloc(conn->wbuf, rest);
                if (!nb)
                    return -ENOMEM;
                conn->wbuf = nb;
                conn->wcap = rest;
            }
            memcpy(conn->wbuf, data + w, rest);
            conn->wlen = rest;
        }
    }
    conn_want_write(conn, false);
    if (!nghttp2_session_want_read(conn->ng) && !nghttp2_session_want_write(conn->ng))
        return -ECONNRESET;  /* GOAWAY exchanged and all streams done */
    return 0;
}

/* Reads what TLS has: everything (data OpenSSL already decrypted would not wake epoll
 * again), then retries output a handshake held back. Returns 0 or -errno to close. */
static int conn_read_tls(struct gw_h2_conn *conn)
{
    uint8_t buf[READ_CHUNK];
    for (;;) {
        int n = SSL_read(conn->ssl, buf, sizeof buf);
        if (n <= 0) {
            int e = SSL_get_error(conn->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_WANT_WRITE) {
                conn_want_write(conn, true);
                return 0;
            }
            if (e != SSL_ERROR_ZERO_RETURN) {
                char why[200] = "";
                unsigned long er = ERR_get_error();
                if (er) ERR_error_string_n(er, why, sizeof why);
                gw_debug("grpc: TLS connection closed: %s", why[0] ? why : "by the peer");
            }
            ERR_clear_error();
            return -ECONNRESET;
        }
        conn->last_active_ns = gw_now_ns();
        ssize_t rc = nghttp2_session_mem_recv(conn->ng, buf, (size_t)n);
        if (rc < 0) {
            gw_debug("grpc: closing connection: %s", nghttp2_strerror((int)rc));
            conn_flush(conn);
            return -EPROTO;
        }
    }
    return conn->woff < conn->wlen || nghttp2_session_want_write(conn->ng) ? conn_flush(conn) : 0;
}

/* Reads what the socket has (bounded per wake-up). Returns 0 or -errno to close. */
static int conn_read(struct gw_h2_conn *conn)
{
    if (conn->ssl)
        return conn_read_tls(conn);
    uint8_t buf[READ_CHUNK];
    for (int i = 0; i < READS_PER_WAKE; i++) {
        ssize_t n = recv(conn->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -ECONNRESET;
        conn->last_active_ns = gw_now_ns();
        ssize_t rc = nghttp2_session_mem_recv(conn->ng, buf, (size_t)n);
        if (rc < 0) {
            /* A protocol error: nghttp2 queued a GOAWAY where it could; try to send it. */
            gw_debug("grpc: closing connection: %s", nghttp2_strerror((int)rc));
            conn_flush(conn);
            return -EPROTO;
        }
        if (n < (ssize_t)sizeof buf)
            return 0;
    }
    return 0;
}

static void accept_conns(struct gw_grpc_server *s)
{
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                gw_warn("grpc: accept: %s", strerror(errno));
            return;
        }
        if (s->nconns >= s->cfg.max_connections) {
            /* Strangers holding every slot must not lock the operators and the peers out: the
             * oldest connection that never authenticated makes room. Only when every one has
             * is the new one refused. */
            struct gw_h2_conn *oldest = NULL;
            for (struct gw_h2_conn *c = s->conns; c; c = c->next)
                if (!c->authed) oldest = c;   /* the list runs newest first */
            if (!oldest) {
                gw_warn("grpc: connection limit %u reached, refusing one", s->cfg.max_connections);
                close(fd);
                continue;
            }
            gw_warn("grpc: connection limit %u reached: closing the oldest connection that never authenticated",
                    s->cfg.max_connections);
            conn_close(oldest);
        }
        struct gw_h2_conn *conn = calloc(1, sizeof *conn);
        if (!conn) {
            close(fd);
            continue;
        }
        conn->kind = EV_CONN;
        conn->srv = s;
        conn->fd = fd;
        conn->last_active_ns = conn->accepted_ns = gw_now_ns();
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = conn };
        if (s->tls && (!(conn->ssl = SSL_new(s->tls)) || !SSL_set_fd(conn->ssl, fd))) {
            SSL_free(conn->ssl);
            close(fd);
            free(conn);
            continue;
        }
        if (conn->ssl)
            SSL_set_accept_state(conn->ssl);
        if (gw_h2_conn_session_new(conn) < 0 || epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            SSL_free(conn->ssl);
            if (conn->ng)
                nghttp2_session_del(conn->ng);
            close(fd);
            free(conn);
            continue;
        }
        conn->next = s->conns;
        if (s->conns)
            s->conns->prev = conn;
        s->conns = conn;
        s->nconns++;
        if (conn_flush(conn) < 0)   /* our SETTINGS */
            conn_close(conn);
    }
}

/* Hands every call with new output to its session. Calls are taken one at a time under the
 * lock because a worker may put a call back on the list while the loop handles it. */
static void drain_ready(struct gw_grpc_server *s)
{
    for (;;) {
        pthread_mutex_lock(&s->lock);
        struct gw_grpc_call *c = s->ready_head;
        if (c) {
            s->ready_head = c->ready_next;
            if (!s->ready_head)
                s->ready_tail = NULL;
            c->on_ready = false;
        }
        pthread_mutex_unlock(&s->lock);
        if (!c)
            return;
        gw_h2_call_ready(c);
        gw_grpc_call_unref(c);
    }
}

static void close_idle(struct gw_grpc_server *s, uint64_t now)
{
    uint64_t idle = (uint64_t)s->cfg.idle_timeout_ms * 1000000ull;
    struct gw_h2_conn *conn = s->conns;
    while (conn) {
        struct gw_h2_conn *next = conn->next;
        /* Pings and traffic keep a connection that has authenticated; one that never has
         * gets a short grace with no call open, whatever it sends. */
        if (conn->ncalls == 0 && (now - conn->last_active_ns > idle ||
                                  (!conn->authed && now - conn->accepted_ns > GW_GRPC_AUTH_GRACE_MS * 1000000ull)))
            conn_close(conn);
        conn = next;
    }
}

static void handle_conn_event(struct gw_h2_conn *conn, uint32_t events)
{
    int rc = 0;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        rc = conn_read(conn);
    if (rc == 0 && (events & EPOLLOUT))
        rc = conn_flush(conn);
    if (rc < 0)
        conn_close(conn);
}

static void *loop_main(void *arg)
{
    struct gw_grpc_server *s = arg;
    struct epoll_event evs[64];
    uint64_t last_idle_scan = gw_now_ns();
    while (!s->stopping) {
        int timeout = expire_deadlines(s);
        drain_ready(s);
        /* Flush every session with output (responses, WINDOW_UPDATEs, SETTINGS acks). */
        struct gw_h2_conn *conn = s->conns;
        while (conn) {
            struct gw_h2_conn *next = conn->next;
            if (conn->woff == conn->wlen && nghttp2_session_want_write(conn->ng) &&
                conn_flush(conn) < 0)
                conn_close(conn);
            conn = next;
        }
        if (timeout < 0 || timeout > 1000)
            timeout = 1000;  /* idle scan granularity */
        int n = epoll_wait(s->epoll_fd, evs, GW_ARRAY_SIZE(evs), timeout);
        if (n < 0 && errno != EINTR) {
            gw_error("grpc: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == EV_LISTEN) {
                accept_conns(s);
            } else if (kind == EV_WAKE) {
                uint64_t v;
                ssize_t r = read(s->wake_fd, &v, sizeof v);
                (void)r;
            } else {
                handle_conn_event(evs[i].data.ptr, evs[i].events);
            }
        }
        uint64_t now = gw_now_ns();
        if (now - last_idle_scan > 1000000000ull) {
            last_idle_scan = now;
            close_idle(s, now);
        }
    }
    while (s->conns)
        conn_close(s->conns);
    drain_ready(s);
    return NULL;
}

int gw_grpc_server_start(struct gw_grpc_server *s)
{
    int rc;
    if (s->started)
        return -EBUSY;
    rc = gw_grpc_addr_listen(s->cfg.listen, 128, &s->port);
    if (rc < 0)
        return rc;
    s->listen_fd = rc;
    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->epoll_fd < 0 || s->wake_fd < 0)
        goto fail_errno;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &s->listen_kind };
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &ev) < 0)
        goto fail_errno;
    ev.data.ptr = &s->wake_kind;
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->wake_fd, &ev) < 0)
        goto fail_errno;
    if ((rc = gw_workers_start(s)) < 0)
        goto fail;
    if ((rc = pthread_create(&s->loop_thread, NULL, loop_main, s)) != 0) {
        rc = -rc;
        gw_workers_stop(s);
        goto fail;
    }
    s->started = true;
    return 0;
fail_errno:
    rc = -errno;
fail:
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->epoll_fd >= 0) close(s->epoll_fd);
    if (s->wake_fd >= 0) close(s->wake_fd);
    s->listen_fd = s->epoll_fd = s->wake_fd = -1;
    return rc;
}

int gw_grpc_server_port(const struct gw_grpc_server *s)
{
    return s->port;
}

void gw_grpc_server_stop(struct gw_grpc_server *s)
{
    if (!s->started)
        return;
    s->stopping = true;
    gw_call_wake(s);
    pthread_join(s->loop_thread, NULL);
    gw_workers_stop(s);
    close(s->listen_fd);
    close(s->epoll_fd);
    /* wake_fd stays open: handlers still holding calls may poke it until they let go. */
    s->listen_fd = s->epoll_fd = -1;
    s->started = false;
    if (strncmp(s->cfg.listen, "unix:", 5) == 0)
        unlink(s->cfg.listen + 5);
}

void gw_grpc_server_free(struct gw_grpc_server *s)
{
    if (!s)
        return;
    gw_grpc_server_stop(s);
    drain_ready(s);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    for (size_t i = 0; i < s->nmethods; i++)
        free(s->methods[i].path);
    free(s->methods);
    free(s->heap);
    if (s->ng_cbs)
        nghttp2_session_callbacks_del(s->ng_cbs);
    if (s->ng_opt)
        nghttp2_option_del(s->ng_opt);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->work_lock);
    pthread_cond_destroy(&s->work_cond);
    free(s->listen_addr);
    free(s->token);
    free(s->peer_token);
    SSL_CTX_free(s->tls);
    free(s);
}
