/* Unit tests for precopy/incoming_streams.c over real loopback sockets (no VM): the streams of
 * one session come back in stream order; strangers (wrong token, silent, half a preamble,
 * a flood larger than the waiting room) are turned away without holding up the session; a
 * session that never arrives times out on time; streams handed over by a daemon are taken as
 * they are. */
#include "precopy/incoming_streams.h"
#include "engine/common/util.h"
#include "engine/transport/tls.h"
#include "tests/lib/gw_test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static const uint8_t TOKEN[GW_SEC_TOKEN_SIZE] = {7, 7, 7, 7, 1, 2, 3};

static uint16_t port_of(const char *url)
{
    const char *c = strrchr(url, ':');
    return c ? (uint16_t)atoi(c + 1) : 0;
}

static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    return fd;
}

/* A stream of a session: its preamble, then a byte that marks which stream it is. */
static int send_stream(int fd, unsigned index, unsigned count, const uint8_t *token)
{
    struct gw_preamble p = {.tls = false, .stream_index = (uint16_t)index, .nstreams = (uint16_t)count};
    memcpy(p.token, token, sizeof p.token);
    uint8_t b[GW_PREAMBLE_SIZE + 1];
    gw_preamble_pack(&p, b);
    b[GW_PREAMBLE_SIZE] = (uint8_t)(0xA0 + index);
    return send(fd, b, sizeof b, MSG_NOSIGNAL) == (ssize_t)sizeof b ? 0 : -1;
}

struct gather {
    struct gw_listener *l;
    int timeout_ms;
    struct gw_conn *out[GW_WIRE_MAX_STREAMS];
    unsigned n;
    int r;
    struct gw_err e;
    uint64_t elapsed_ns;
};

static void *gather_thread(void *arg)
{
    struct gather *g = arg;
    uint64_t t0 = gw_now_ns();
    g->r = gw_incoming_streams(g->l, NULL, NULL, 0, NULL, TOKEN, g->timeout_ms, g->out, &g->n, &g->e);
    g->elapsed_ns = gw_now_ns() - t0;
    return NULL;
}

/* Each stream's marker byte is the next thing on it, in stream order. */
static void check_order(struct gather *g, unsigned count)
{
    CHECK_EQ(g->r, 0);
    CHECK_EQ(g->n, count);
    for (unsigned i = 0; i < g->n && i < count; i++) {
        uint8_t m = 0;
        gw_conn_set_timeout(g->out[i], 2000);
        CHECK_EQ(g->out[i]->ops->recv_some(g->out[i], &m, 1, &g->e), 1);
        CHECK_EQ(m, 0xA0 + i);
        gw_conn_close(g->out[i]);
    }
}

static struct gw_listener *listen_here(void)
{
    struct gw_listener *l = NULL;
    struct gw_err e = {0};
    if (gw_listen("tcp:127.0.0.1:0", &l, &e)) { fprintf(stderr, "  listen: %s\n", e.msg); return NULL; }
    return l;
}

GW_TEST(streams_in_order_strangers_turned_away)
{
    struct gw_listener *l = listen_here();
    REQUIRE(l);
    uint16_t port = port_of(l->url);
    uint8_t other[GW_SEC_TOKEN_SIZE] = {9};
    struct gather g = {.l = l, .timeout_ms = 10000};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, gather_thread, &g) == 0);
    int fds[6];
    fds[0] = dial(port);
    CHECK_EQ(send_stream(fds[0], 0, 3, other), 0);          /* another session's token */
    fds[1] = dial(port);
    CHECK_EQ(send(fds[1], "GET / HTTP/1.0\r\n\r\n" "................................", 50, MSG_NOSIGNAL), 50);
    fds[2] = dial(port);
    CHECK_EQ(send_stream(fds[2], 2, 3, TOKEN), 0);
    fds[3] = dial(port);
    CHECK_EQ(send_stream(fds[3], 2, 3, TOKEN), 0);          /* the same index again */
    fds[4] = dial(port);
    CHECK_EQ(send_stream(fds[4], 0, 3, TOKEN), 0);
    fds[5] = dial(port);
    CHECK_EQ(send_stream(fds[5], 1, 3, TOKEN), 0);
    pthread_join(th, NULL);
    check_order(&g, 3);
    CHECK(g.elapsed_ns < 3000000000ull);
    for (int i = 0; i < 6; i++) close(fds[i]);
    gw_listener_close(l);
}

/* Silent strangers first, and one that sends half a preamble: read one at a time, each held
 * the session up for the preamble timeout (5 s); side by side, they cost nothing. */
GW_TEST(silent_strangers_delay_nothing)
{
    struct gw_listener *l = listen_here();
    REQUIRE(l);
    uint16_t port = port_of(l->url);
    enum { SILENT = 20 };
    int quiet[SILENT + 1];
    for (int i = 0; i < SILENT; i++) quiet[i] = dial(port);
    quiet[SILENT] = dial(port);
    CHECK_EQ(send(quiet[SILENT], "GWPR", 4, MSG_NOSIGNAL), 4);   /* the start of a preamble, then nothing */
    struct gather g = {.l = l, .timeout_ms = 8000};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, gather_thread, &g) == 0);
    usleep(100 * 1000);
    int a = dial(port), b = dial(port);
    CHECK_EQ(send_stream(b, 1, 2, TOKEN), 0);
    CHECK_EQ(send_stream(a, 0, 2, TOKEN), 0);
    pthread_join(th, NULL);
    check_order(&g, 2);
    printf("  2 streams behind %d silent connections: %.0f ms\n", SILENT + 1, g.elapsed_ns / 1e6);
    CHECK(g.elapsed_ns < 2000000000ull);
    for (int i = 0; i <= SILENT; i++) close(quiet[i]);
    close(a);
    close(b);
    gw_listener_close(l);
}

/* More silent connections than the waiting room holds: the oldest make way, the room never
 * grows past its size, and the session still comes in. */
GW_TEST(flood_larger_than_the_room)
{
    struct gw_listener *l = listen_here();
    REQUIRE(l);
    uint16_t port = port_of(l->url);
    struct gather g = {.l = l, .timeout_ms = 8000};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, gather_thread, &g) == 0);
    enum { FLOOD = 3 * GW_INCOMING_WAITING_MAX };
    int quiet[FLOOD];
    for (int i = 0; i < FLOOD; i++) quiet[i] = dial(port);
    usleep(200 * 1000);
    /* The first of the flood were closed to make room: they read end of file. */
    char c;
    struct timeval tv = {.tv_sec = 2};
    setsockopt(quiet[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CHECK_EQ(recv(quiet[0], &c, 1, 0), 0);
    int a = dial(port);
    CHECK_EQ(send_stream(a, 0, 1, TOKEN), 0);
    pthread_join(th, NULL);
    check_order(&g, 1);
    CHECK(g.elapsed_ns < 3000000000ull);
    for (int i = 0; i < FLOOD; i++) close(quiet[i]);
    close(a);
    gw_listener_close(l);
}

/* Nobody but a silent stranger: the session times out on time, not after the stranger's 5 s
 * plus the session's own, and a stranger past its 5 s is closed. */
GW_TEST(no_session_times_out_on_time)
{
    struct gw_listener *l = listen_here();
    REQUIRE(l);
    int q = dial(port_of(l->url));
    struct gather g = {.l = l, .timeout_ms = 1500};
    gather_thread(&g);
    CHECK_EQ(g.r, -ETIMEDOUT);
    CHECK(g.elapsed_ns >= 1400000000ull && g.elapsed_ns < 2500000000ull);
    CHECK(strstr(g.e.msg, "did not arrive") != NULL);
    g.timeout_ms = 6500;
    uint64_t t0 = gw_now_ns();
    int q2 = dial(port_of(l->url));
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, gather_thread, &g) == 0);
    char c;
    struct timeval tv = {.tv_sec = 6};
    setsockopt(q2, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CHECK_EQ(recv(q2, &c, 1, 0), 0);   /* closed after its 5 s */
    double s = (gw_now_ns() - t0) / 1e9;
    CHECK(s > 4.5 && s < 6.0);
    pthread_join(th, NULL);
    CHECK_EQ(g.r, -ETIMEDOUT);
    close(q);
    close(q2);
    gw_listener_close(l);
}

/* Streams a daemon accepted and handed over: taken in any order; a bad one fails the whole
 * session and every descriptor is closed (none left open). */
GW_TEST(handed_over_streams)
{
    int sv[3][2];
    for (int i = 0; i < 3; i++) REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv[i]) == 0);
    CHECK_EQ(send_stream(sv[0][1], 1, 3, TOKEN), 0);
    CHECK_EQ(send_stream(sv[1][1], 2, 3, TOKEN), 0);
    CHECK_EQ(send_stream(sv[2][1], 0, 3, TOKEN), 0);
    int fds[3] = {sv[0][0], sv[1][0], sv[2][0]};
    struct gather g = {0};
    g.r = gw_incoming_streams(NULL, NULL, fds, 3, NULL, TOKEN, 2000, g.out, &g.n, &g.e);
    check_order(&g, 3);
    for (int i = 0; i < 3; i++) close(sv[i][1]);
    /* The second has another session's count: fails, and all three are closed. */
    for (int i = 0; i < 3; i++) REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv[i]) == 0);
    CHECK_EQ(send_stream(sv[0][1], 0, 3, TOKEN), 0);
    CHECK_EQ(send_stream(sv[1][1], 1, 4, TOKEN), 0);
    CHECK_EQ(send_stream(sv[2][1], 2, 3, TOKEN), 0);
    for (int i = 0; i < 3; i++) fds[i] = sv[i][0];
    CHECK_EQ(gw_incoming_streams(NULL, NULL, fds, 3, NULL, TOKEN, 2000, g.out, &g.n, &g.e), -EPROTO);
    for (int i = 0; i < 3; i++) {
        /* The other end was closed: end of file, or a reset where it left our marker byte
         * unread; never "nothing yet". */
        char c;
        ssize_t n = recv(sv[i][1], &c, 1, MSG_DONTWAIT);
        CHECK(n == 0 || (n < 0 && errno == ECONNRESET));
        close(sv[i][1]);
    }
}
