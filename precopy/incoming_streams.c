/* The destination's first step: the streams of one session, each past its preamble and (when
 * this side speaks it) its TLS handshake, in stream order, ready for the migration
 * handshake (see incoming_streams.h). */
#include "precopy/incoming_streams.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/transport/tls.h"

#define PREAMBLE_TIMEOUT_MS GW_INCOMING_PREAMBLE_MS
/* Reading a preamble poll said had arrived: bounded in case the kernel ignored SO_RCVLOWAT
 * and woke us for part of it. */
#define PREAMBLE_READ_MS 200

/* The session gathered so far. */
struct session {
    struct gw_conn *slots[GW_WIRE_MAX_STREAMS];
    struct gw_preamble first;
    unsigned got, want;
    bool want_tls;
    const uint8_t *expect_token;
    unsigned turned_away;   /* strangers closed; the first TURNED_AWAY_LOGGED get a line each */
};

#define TURNED_AWAY_LOGGED 8u

/* Reads c's preamble and checks it against the session so far and, when the daemon told us,
 * the session's token; on success c takes its slot. Returns 0, or -errno with the reason in e
 * (c is then still the caller's). */
static int admit(struct session *s, struct gw_conn *c, int read_ms, struct gw_err *e)
{
    struct gw_preamble p;
    gw_conn_set_timeout(c, read_ms);
    int r = gw_sec_recv_preamble(c, &p, e);
    if (r) return r;
    /* Before it can define the session: a stranger who found the port first must not make
     * the real source's streams "another session's". */
    if (s->expect_token && CRYPTO_memcmp(p.token, s->expect_token, sizeof p.token))
        return gw_err_set(e, -EACCES, "%s: a stream without this migration's session token", c->peer);
    if (p.tls != s->want_tls)
        return gw_err_set(e, -EPROTO, "%s: the source %s TLS but this destination has migration TLS %s", c->peer,
                          p.tls ? "speaks" : "does not speak", s->want_tls ? "on" : "off");
    if (s->got && (p.nstreams != s->first.nstreams || memcmp(p.token, s->first.token, sizeof p.token)))
        return gw_err_set(e, -EPROTO, "%s: a stream of another session (count or token differs)", c->peer);
    if (s->slots[p.stream_index])
        return gw_err_set(e, -EPROTO, "%s: stream %u of the session came twice", c->peer, p.stream_index);
    if (!s->got) s->first = p;
    s->slots[p.stream_index] = c;
    s->got++;
    return 0;
}

/* A connection on a listener of our own that does not belong: closed, and the wait goes on.
 * why names the peer (admit's reasons do). A flood of them is counted, not logged line by
 * line. */
static void turn_away(struct session *s, struct gw_conn *c, const char *why)
{
    if (s->turned_away++ < TURNED_AWAY_LOGGED) gw_warn("incoming: %s: closed", why);
    gw_conn_close(c);
}

/* The listener's waiting room: connections in arrival order, each until its deadline. */
struct waiter {
    struct gw_conn *c;
    uint64_t until;
};

/* Takes waiter i out of room[0..*n), keeping the order; its connection is the caller's. */
static struct gw_conn *room_take(struct waiter *room, unsigned *n, unsigned i)
{
    struct gw_conn *c = room[i].c;
    memmove(room + i, room + i + 1, (--*n - i) * sizeof *room);
    return c;
}

/* Waiter i turned away for what (with the peer's name). */
static void room_evict(struct session *s, struct waiter *room, unsigned *n, unsigned i, const char *what)
{
    char why[160];
    snprintf(why, sizeof why, "%s: %s", room[i].c->peer, what);
    turn_away(s, room_take(room, n, i), why);
}

/* c waits for its preamble, woken only once all of it is there (SO_RCVLOWAT). */
static void room_add(struct waiter *room, unsigned *n, struct gw_conn *c)
{
    int lowat = GW_PREAMBLE_SIZE;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
    room[(*n)++] = (struct waiter){.c = c, .until = gw_now_ns() + PREAMBLE_TIMEOUT_MS * 1000000ull};
}

/* Streams a daemon accepted and handed over: they are the session, so any bad one ends it. */
static int from_fds(struct session *s, const int *fds, unsigned nfds, struct gw_err *e)
{
    if (nfds == 0 || nfds > GW_WIRE_MAX_STREAMS) {
        for (unsigned i = 0; i < nfds; i++) close(fds[i]);
        return gw_err_set(e, -EINVAL, "1..%u sockets", GW_WIRE_MAX_STREAMS);
    }
    s->want = nfds;
    for (unsigned k = 0; k < nfds; k++) {
        struct gw_conn *c;
        int r = gw_conn_from_fd(fds[k], &c, e);
        if (r) close(fds[k]);   /* not taken by a connection that was never made */
        else if ((r = admit(s, c, PREAMBLE_TIMEOUT_MS, e))) gw_conn_close(c);
        if (!r && s->first.nstreams != nfds)
            r = gw_err_set(e, -EPROTO, "the session has %u streams, %u were handed over", s->first.nstreams, nfds);
        if (r) {
            for (unsigned i = k + 1; i < nfds; i++) close(fds[i]);
            return r;
        }
    }
    return 0;
}

/* A listener whose connections cannot be polled (RDMA): one preamble at a time. */
static int from_listener_serial(struct session *s, struct gw_listener *l, struct gw_conn *first, uint64_t end,
                                struct gw_err *e)
{
    while (!s->want || s->got < s->want) {
        struct gw_conn *c = first;
        first = NULL;
        uint64_t now = gw_now_ns();
        if (!c && now >= end) return gw_err_set(e, -ETIMEDOUT, "%s: the session's streams did not arrive", l->url);
        int r = c ? 0 : gw_listener_accept(l, (int)((end - now) / 1000000 + 1), &c, e);
        if (r) return r;
        struct gw_err why = {0};
        if (admit(s, c, PREAMBLE_TIMEOUT_MS, &why)) { turn_away(s, c, why.msg); continue; }
        s->want = s->first.nstreams;
    }
    return 0;
}

/* A TCP listener: connections wait for their preambles side by side, in a room of
 * GW_INCOMING_WAITING_MAX, each for at most PREAMBLE_TIMEOUT_MS. Read one by one, a stranger
 * who connects and sends nothing held up every stream behind it for the whole preamble
 * timeout, and a few dozen of them outlasted the session's. Now a silent connection costs a
 * place in the room; when the room is full the connection that has waited longest makes way
 * (the real source sends its preamble at once). SO_RCVLOWAT makes poll report a connection
 * only when its whole preamble (or its end) is there, so no read waits for a slow sender. */
static int from_listener(struct session *s, struct gw_listener *l, struct gw_conn *first, uint64_t end,
                         struct gw_err *e)
{
    struct waiter room[GW_INCOMING_WAITING_MAX];
    unsigned n = 0;
    int r = 0;
    if (first) room_add(room, &n, first);
    while (!r && (!s->want || s->got < s->want)) {
        uint64_t now = gw_now_ns(), wake = end;
        /* Expired waiters out, oldest first (the room is in arrival order). */
        while (n && room[0].until <= now) room_evict(s, room, &n, 0, "no preamble in time");
        if (now >= end) { r = gw_err_set(e, -ETIMEDOUT, "%s: the session's streams did not arrive", l->url); break; }
        if (n && room[0].until < wake) wake = room[0].until;
        struct pollfd p[GW_INCOMING_WAITING_MAX + 1];
        p[0] = (struct pollfd){.fd = l->fd, .events = POLLIN};
        for (unsigned i = 0; i < n; i++) p[i + 1] = (struct pollfd){.fd = room[i].c->fd, .events = POLLIN};
        int k = poll(p, n + 1, (int)((wake - now) / 1000000 + 1));
        if (k < 0 && errno != EINTR) { r = gw_err_set(e, -errno, "%s: poll: %s", l->url, strerror(errno)); break; }
        if (k <= 0) continue;
        /* Waiters whose preamble (or end) arrived, from the back so removal keeps indices. */
        for (unsigned i = n; i-- > 0 && (!s->want || s->got < s->want);) {
            if (!p[i + 1].revents) continue;
            struct gw_conn *c = room_take(room, &n, i);
            struct gw_err why = {0};
            if (admit(s, c, PREAMBLE_READ_MS, &why)) { turn_away(s, c, why.msg); continue; }
            int one = 1;   /* back to the default: later reads take what there is */
            setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
            s->want = s->first.nstreams;
        }
        if (p[0].revents & (POLLERR | POLLNVAL)) {   /* a broken listener: never a busy loop */
            r = gw_err_set(e, -EIO, "%s: the listener failed", l->url);
            break;
        }
        if (!(p[0].revents & POLLIN) || (s->want && s->got >= s->want)) continue;
        struct gw_conn *c;
        struct gw_err why = {0};
        int a = gw_listener_accept(l, 0, &c, &why);
        if (a == -ETIMEDOUT || a == -EAGAIN || a == -ECONNABORTED || a == -EINTR) continue;
        if (a) { r = gw_err_set(e, a, "%s", why.msg); break; }
        if (n == GW_INCOMING_WAITING_MAX) room_evict(s, room, &n, 0, "the oldest of a full waiting room");
        room_add(room, &n, c);
    }
    for (unsigned i = 0; i < n; i++) gw_conn_close(room[i].c);
    return r;
}

static void log_turned_away(const struct session *s)
{
    if (s->turned_away > TURNED_AWAY_LOGGED)
        gw_warn("incoming: %u more connections turned away", s->turned_away - TURNED_AWAY_LOGGED);
}

int gw_incoming_streams(struct gw_listener *l, struct gw_conn *first_conn, const int *fds, unsigned nfds, struct gw_tls_ctx *tls,
                        const uint8_t *expect_token, int timeout_ms, struct gw_conn **out, unsigned *n_out,
                        struct gw_err *e)
{
    struct session s = {.want_tls = tls != NULL, .expect_token = expect_token};
    uint64_t end = gw_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 60000) * 1000000ull;
    int r;
    if (!l) r = from_fds(&s, fds, nfds, e);
    else if (l->fd >= 0 && (!first_conn || first_conn->fd >= 0)) r = from_listener(&s, l, first_conn, end, e);
    else r = from_listener_serial(&s, l, first_conn, end, e);
    log_turned_away(&s);
    /* TLS in stream order: the source opens its streams' TLS sessions in that order. */
    for (unsigned i = 0; !r && i < s.want; i++) {
        gw_conn_set_timeout(s.slots[i], PREAMBLE_TIMEOUT_MS * 2);
        if (tls) r = gw_tls_wrap(&s.slots[i], tls, i == 0, e);
    }
    if (r) {
        for (unsigned i = 0; i < GW_WIRE_MAX_STREAMS; i++) gw_conn_close(s.slots[i]);
        return r;
    }
    for (unsigned i = 0; i < s.want; i++) {
        gw_conn_set_timeout(s.slots[i], 0);
        out[i] = s.slots[i];
    }
    *n_out = s.want;
    return 0;
}
