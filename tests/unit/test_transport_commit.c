/* Unit tests for the two-phase commit of a migration session (migration.h): the happy path
 * runs in test_transport's migrations; here the failures: the link cut after READY, the
 * destination's ERROR instead of RUNNING, calls and records out of order on either side;
 * and the receiver's hooks for the pre-copy engine: the touched bitmap and zero pages on
 * fresh memory. */
#include "engine/codec/digest.h"
#include "engine/common/util.h"
#include "engine/transport/conn.h"
#include "engine/transport/handshake.h"
#include "precopy/precopy_link.h"
#include "tests/lib/gw_test.h"
#include "tests/unit/mig_harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* A TCP relay between source and destination that the test can cut, as a link that fails:
 * both sides see the connection end without either of them closing it. */
struct relay {
    int lfd, cut[2];
    uint16_t to_port;
    char url[64];
    int fds[16];            /* pairs: fds[2k] from the source, fds[2k+1] to the destination */
    int nfds;
    pthread_t th;
};

static void *relay_main(void *arg)
{
    struct relay *rl = arg;
    static char buf[1 << 16];
    for (;;) {
        struct pollfd p[18];
        int np = 0;
        p[np++] = (struct pollfd){ .fd = rl->cut[0], .events = POLLIN };
        p[np++] = (struct pollfd){ .fd = rl->lfd, .events = POLLIN };
        for (int i = 0; i < rl->nfds; i++) p[np++] = (struct pollfd){ .fd = rl->fds[i], .events = POLLIN };
        if (poll(p, (nfds_t)np, -1) < 0) continue;
        if (p[0].revents) break;
        if (p[1].revents && rl->nfds + 2 <= 16) {
            int a = accept(rl->lfd, NULL, NULL);
            int b = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(rl->to_port),
                                      .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
            if (a < 0 || b < 0 || connect(b, (struct sockaddr *)&sa, sizeof sa) < 0) break;
            rl->fds[rl->nfds++] = a;
            rl->fds[rl->nfds++] = b;
            continue;
        }
        for (int i = 0; i < rl->nfds; i++) {
            if (!p[2 + i].revents) continue;
            ssize_t n = read(rl->fds[i], buf, sizeof buf);
            int peer = rl->fds[i ^ 1];
            if (n <= 0) { shutdown(peer, SHUT_WR); shutdown(rl->fds[i], SHUT_RD); continue; }
            gw_write_full(peer, buf, (size_t)n);
        }
    }
    /* The cut: every connection ends at once, in both directions. */
    for (int i = 0; i < rl->nfds; i++) shutdown(rl->fds[i], SHUT_RDWR);
    return NULL;
}

static int relay_start(struct relay *rl, const char *to_url)
{
    char scheme[16], host[64];
    memset(rl, 0, sizeof *rl);
    if (gw_url_parse(to_url, scheme, sizeof scheme, host, sizeof host, &rl->to_port) || pipe(rl->cut)) return -1;
    rl->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    if (bind(rl->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(rl->lfd, 16) ||
        getsockname(rl->lfd, (struct sockaddr *)&sa, &sl))
        return -1;
    snprintf(rl->url, sizeof rl->url, "tcp:127.0.0.1:%u", ntohs(sa.sin_port));
    return pthread_create(&rl->th, NULL, relay_main, rl);
}

static void relay_cut(struct relay *rl)
{
    if (write(rl->cut[1], "x", 1) != 1) return;
    pthread_join(rl->th, NULL);
    rl->th = 0;
}

static void relay_close(struct relay *rl)
{
    if (rl->th) relay_cut(rl);
    for (int i = 0; i < rl->nfds; i++) close(rl->fds[i]);
    close(rl->lfd);
    close(rl->cut[0]);
    close(rl->cut[1]);
}

/* A small session up to and including COMMIT; returns the open sender or NULL. */
static struct gw_mig_sender *small_session_to_commit(const char *url, uint8_t *mem, uint64_t npages, unsigned nstreams)
{
    struct gw_mig_sender_cfg cfg = { .url = url, .nstreams = nstreams, .secret = (const uint8_t *)SECRET,
                                     .secret_len = strlen(SECRET), .mem = mem, .mem_size = npages * PG,
                                     .timeout_ms = 5000 };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    if (gw_mig_sender_open(&cfg, &s, &e)) { printf("  %s\n", e.msg); return NULL; }
    uint64_t *pf = malloc(npages * sizeof *pf);
    for (uint64_t i = 0; pf && i < npages; i++) pf[i] = i;
    struct gw_digest dg;
    gw_digest_mem(mem, npages * PG, &dg);
    int r = pf ? gw_mig_send_pages(s, pf, npages) : -ENOMEM;
    if (!r) r = gw_mig_send_end_of_round(s, 0, true, NULL);
    if (!r) r = gw_mig_send_state(s, "vcpu-state!", 11);
    if (!r) r = gw_mig_send_digest(s, &dg);
    if (!r) r = gw_mig_send_commit(s, 1);
    free(pf);
    if (r) { printf("  %s\n", gw_mig_sender_error(s)); gw_mig_sender_close(s); return NULL; }
    return s;
}

GW_TEST(commit_link_lost_after_ack_before_go)
{
    struct dest d;
    pthread_t th;
    struct relay rl;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_NORMAL) == 0);
    REQUIRE(relay_start(&rl, d.l->url) == 0);
    uint64_t npages = 64;
    uint8_t *mem = malloc(npages * PG);
    REQUIRE(mem);
    for (uint64_t i = 0; i < npages; i++) fill_page(mem + i * PG, (int)(i % 3));
    struct gw_mig_sender *s = small_session_to_commit(rl.url, mem, npages, 2);
    CHECK(s != NULL);
    if (s) {
        CHECK_EQ(gw_mig_sender_wait_ack(s, 5000), 0); /* READY */
        relay_cut(&rl);
        /* GO may still leave (into a dead connection); then RUNNING cannot come. */
        int r = gw_mig_send_go(s);
        bool go_left = r == 0;
        if (go_left) r = gw_mig_sender_wait_running(s, 5000);
        CHECK(r != 0 && r != -EPROTO && r != -ETIMEDOUT); /* a transport error, at once */
        printf("  source: %s\n", gw_mig_sender_error(s));
        /* Once GO left, the source cannot know whether it arrived: it must say so. */
        CHECK(!go_left || strstr(gw_mig_sender_error(s), "outcome in doubt") != NULL);
    }
    gw_mig_sender_close(s);
    __atomic_store_n(&d.src_closed, true, __ATOMIC_RELEASE);
    finish_dest(&d, th);
    relay_close(&rl);
    /* The destination was READY but never got GO: it reports an error and must discard. */
    CHECK(d.acked && !d.go_seen && !d.running);
    CHECK(d.r != 0);
    CHECK(strstr(d.err, "after COMMIT, before GO") != NULL);
    printf("  destination: %s\n", d.err);
    free(d.mem);
    free(mem);
}

GW_TEST(commit_destination_error_instead_of_running)
{
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_ERROR_AT_GO) == 0);
    uint64_t npages = 16;
    uint8_t *mem = calloc(npages, PG);
    REQUIRE(mem);
    struct gw_mig_sender *s = small_session_to_commit(d.l->url, mem, npages, 1);
    CHECK(s != NULL);
    if (s) {
        CHECK_EQ(gw_mig_sender_wait_ack(s, 5000), 0);
        CHECK_EQ(gw_mig_send_go(s), 0);
        CHECK_EQ(gw_mig_sender_wait_running(s, 5000), -EPROTO);
        CHECK(strstr(gw_mig_sender_error(s), "did not start the guest: cannot resume the guest (test)") != NULL);
        printf("  source: %s\n", gw_mig_sender_error(s));
        CHECK_EQ(gw_mig_sender_wait_running(s, 5000), -EPROTO); /* stays failed */
    }
    gw_mig_sender_close(s);
    finish_dest(&d, th);
    CHECK(d.acked && d.go_seen && !d.running);
    CHECK_EQ(d.r, -EIO);
    free(d.mem);
    free(mem);
}

GW_TEST(commit_calls_out_of_order_fail_the_session)
{
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_NORMAL) == 0);
    uint64_t npages = 16;
    uint8_t *mem = calloc(npages, PG);
    REQUIRE(mem);
    struct gw_mig_sender *s = small_session_to_commit(d.l->url, mem, npages, 2);
    CHECK(s != NULL);
    if (s) {
        /* GO before READY: refused, and the session ends (the destination discards). */
        CHECK_EQ(gw_mig_send_go(s), -EINVAL);
        CHECK(strstr(gw_mig_sender_error(s), "GO before the destination's ACK") != NULL);
        CHECK_EQ(gw_mig_sender_wait_ack(s, 1000), -EINVAL);
    }
    gw_mig_sender_close(s);
    __atomic_store_n(&d.src_closed, true, __ATOMIC_RELEASE);
    finish_dest(&d, th);
    CHECK(!d.go_seen && d.r != 0);
    printf("  destination: %s\n", d.err);
    free(d.mem);
    free(mem);
}

/* A hand-driven source sends records in the wrong order: the destination refuses them. */
static void bad_order_source(const uint8_t *types, int n, const char *msg)
{
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_NORMAL) == 0);
    struct gw_conn *c = fake_stream(d.l->url, 4 * PG, 1, 0);
    REQUIRE(c);
    for (int i = 0; i < n; i++) {
        if (types[i] == GW_WIRE_END_OF_ROUND) {
            Godwit__V1__MigEndOfRound m = GODWIT__V1__MIG_END_OF_ROUND__INIT;
            m.final = true;
            uint8_t b[32];
            gw_conn_send_record(c, GW_WIRE_END_OF_ROUND, b, protobuf_c_message_pack(&m.base, b), NULL);
        } else if (types[i] == GW_WIRE_PAGE_BATCH) {
            uint8_t b[GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE] = {1};
            b[GW_PAGE_BATCH_HDR + 8] = GW_PAGE_ZERO;
            gw_conn_send_record(c, GW_WIRE_PAGE_BATCH, b, sizeof b, NULL);
        } else {
            gw_conn_send_record(c, types[i], NULL, 0, NULL); /* empty COMMIT / GO / RUNNING */
        }
    }
    struct gw_wire_header h;
    struct gw_rbuf rb = {0};
    gw_conn_set_timeout(c, 5000);
    while (gw_conn_recv_record(c, &h, &rb, NULL) == 0) {} /* until the destination closes */
    gw_rbuf_free(&rb);
    gw_conn_close(c);
    finish_dest(&d, th);
    CHECK_EQ(d.r, -EPROTO);
    CHECK(strstr(d.err, msg) != NULL);
    printf("  destination: %s\n", d.err);
    free(d.mem);
}

GW_TEST(commit_records_out_of_order_are_refused)
{
    const uint8_t go_first[] = { GW_WIRE_END_OF_ROUND, GW_WIRE_GO };
    bad_order_source(go_first, 2, "unexpected record GO before ACK");
    const uint8_t early_commit[] = { GW_WIRE_COMMIT };
    bad_order_source(early_commit, 1, "unexpected record COMMIT before the final round");
    const uint8_t running[] = { GW_WIRE_END_OF_ROUND, GW_WIRE_RUNNING };
    bad_order_source(running, 2, "unexpected record RUNNING");
    const uint8_t late_pages[] = { GW_WIRE_END_OF_ROUND, GW_WIRE_PAGE_BATCH };
    bad_order_source(late_pages, 2, "unexpected record PAGE_BATCH after the final round");
}

/* A hand-driven destination answers COMMIT with RUNNING (skipping READY and GO). */
static void *running_instead_of_ack_dest(void *arg)
{
    struct gw_listener *l = arg;
    struct gw_conn *c;
    if (gw_listener_accept(l, 5000, &c, NULL)) return NULL;
    gw_conn_set_timeout(c, 5000);
    struct gw_hs_params p = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET), .features = GW_WIRE_F_ALL };
    Godwit__V1__MigHello *hello = NULL;
    uint64_t f;
    struct gw_wire_header h;
    struct gw_rbuf rb = {0};
    if (!gw_hs_destination(c, &p, &hello, &f, NULL)) {
        while (gw_conn_recv_record(c, &h, &rb, NULL) == 0 && h.type != GW_WIRE_COMMIT) {}
        gw_conn_send_record(c, GW_WIRE_RUNNING, NULL, 0, NULL);
        while (gw_conn_recv_record(c, &h, &rb, NULL) == 0) {} /* until the source closes */
    }
    if (hello) godwit__v1__mig_hello__free_unpacked(hello, NULL);
    gw_rbuf_free(&rb);
    gw_conn_close(c);
    return NULL;
}

GW_TEST(commit_running_before_go_is_refused_by_the_source)
{
    struct gw_listener *l;
    REQUIRE(gw_listen("tcp:127.0.0.1:0", &l, NULL) == 0);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, running_instead_of_ack_dest, l) == 0);
    uint8_t *mem = calloc(4, PG);
    REQUIRE(mem);
    struct gw_mig_sender *s = small_session_to_commit(l->url, mem, 4, 1);
    CHECK(s != NULL);
    if (s) {
        CHECK_EQ(gw_mig_sender_wait_ack(s, 5000), -EPROTO);
        CHECK(strstr(gw_mig_sender_error(s), "unexpected record RUNNING while waiting for ACK") != NULL);
        CHECK_EQ(gw_mig_send_go(s), -EPROTO); /* the session stays failed: no GO leaves */
    }
    gw_mig_sender_close(s);
    pthread_join(th, NULL);
    gw_listener_close(l);
    free(mem);
}

/* The receiver's hooks in a real session: touched gets exactly the pages sent (zero markers
 * too), and on fresh memory a zero marker leaves a never-written page alone: the
 * destination's page 20 is PROT_NONE and must not fault, pages 21..29 stay memfd holes. */
GW_TEST(receiver_touched_bitmap_and_fresh_memory)
{
    enum { N = 64 };
    uint8_t *src = calloc(N, PG), *dst = fresh_memfd_map(N * PG);
    REQUIRE(src && dst);
    REQUIRE(mprotect(dst + 20 * PG, PG, PROT_NONE) == 0);
    uint64_t touched[N / 64] = {0};
    for (unsigned i = 0; i < 10; i++) fill_page(src + i * PG, 0);       /* raw */
    for (unsigned i = 10; i < 20; i++) fill_page(src + i * PG, 1);      /* lz4 */
    fill_page(src + 40 * PG, 0);                                        /* raw, zero later */
    uint64_t pf[31];
    unsigned n = 0;
    for (unsigned i = 0; i < 30; i++) pf[n++] = i;                       /* 20..29 are zero */
    pf[n++] = 40;
    struct dest d, t = { .secret = SECRET, .given_mem = dst, .touched = touched, .fresh_memory = true,
                         .no_digest = true };
    pthread_t th;
    REQUIRE(start_dest_as(&d, &th, &t) == 0);
    struct gw_mig_sender_cfg cfg = { .url = d.l->url, .nstreams = 1, .secret = (const uint8_t *)SECRET,
                                     .secret_len = strlen(SECRET), .mem = src, .mem_size = N * PG,
                                     .codec = GW_CODEC_LZ4, .timeout_ms = 5000 };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    REQUIRE(gw_mig_sender_open(&cfg, &s, &e) == 0);
    CHECK_EQ(gw_mig_send_pages(s, pf, n), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 0, false, NULL), 0);
    memset(src + 40 * PG, 0, PG);                                       /* now a zero marker */
    uint64_t again[2] = { 40, 20 };
    CHECK_EQ(gw_mig_send_pages(s, again, 2), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 1, true, NULL), 0);
    CHECK_EQ(gw_mig_send_commit(s, 2), 0);
    CHECK_EQ(gw_mig_sender_wait_ack(s, 5000), 0);
    CHECK_EQ(gw_mig_send_go(s), 0);
    CHECK_EQ(gw_mig_sender_wait_running(s, 5000), 0);
    gw_mig_sender_close(s);
    __atomic_store_n(&d.src_closed, true, __ATOMIC_RELEASE);
    finish_dest(&d, th);
    CHECK_EQ(d.r, 0);
    if (d.r) printf("  destination: %s\n", d.err);
    uint64_t want = (1ull << 30) - 1 + (1ull << 40);
    CHECK_EQ(__atomic_load_n(&touched[0], __ATOMIC_ACQUIRE), want);
    CHECK(memcmp(dst, src, 20 * PG) == 0);
    CHECK(gw_is_zero(dst + 40 * PG, PG));                               /* written, then zeroed */
    unsigned char vec[N];
    REQUIRE(mincore(dst, N * PG, vec) == 0);
    unsigned resident = 0;
    for (unsigned i = 21; i < 30; i++) resident += vec[i] & 1;
    CHECK_EQ(resident, 0);                                              /* zero pages: still holes */
    CHECK(vec[0] & 1);
    munmap(dst, N * PG);
    free(src);
}
