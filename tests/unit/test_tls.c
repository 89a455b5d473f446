/* Unit tests for engine/transport/tls.c and tls_records.c: the preamble decoder (every
 * prefix waits, every deviation is refused), TLS 1.3 with the cluster PSK over socket pairs
 * (records both ways at once from two threads per side, large and scattered writes arrive
 * intact), Godwit's records against OpenSSL's own record layer in both directions (the
 * records are standard TLS 1.3), key updates every few records (also read by OpenSSL), a
 * wrong secret refused on both sides with -EACCES, a short secret refused, and a relay that
 * flips one byte of the encrypted stream: the receiver gets -EBADMSG and no altered byte. */
#include "engine/transport/conn.h"
#include "engine/transport/tls.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const uint8_t SECRET[] = "unit-test-cluster-secret-0123456789abcdef";
static const uint8_t OTHER[] = "another-cluster-secret-0123456789abcdefgh";

GW_TEST(preamble)
{
    struct gw_preamble p = {.tls = true, .stream_index = 3, .nstreams = 4}, q;
    memset(p.token, 0xab, sizeof p.token);
    uint8_t b[GW_PREAMBLE_SIZE + 8];
    gw_preamble_pack(&p, b);
    CHECK_EQ(gw_preamble_parse(b, GW_PREAMBLE_SIZE, &q), 1);
    CHECK(q.tls && q.stream_index == 3 && q.nstreams == 4 && !memcmp(q.token, p.token, sizeof q.token));
    CHECK(gw_token_set(q.token));
    for (size_t k = 0; k < GW_PREAMBLE_SIZE; k++) CHECK_EQ(gw_preamble_parse(b, k, &q), 0);
    uint8_t bad[GW_PREAMBLE_SIZE];
    size_t offs[] = {0, 3, 4, 5, 6, 7, 10, 11, 12, 15};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        memcpy(bad, b, sizeof bad);
        bad[offs[i]] ^= 0x40;
        CHECK_EQ(gw_preamble_parse(bad, sizeof bad, &q), -1);
    }
    p.stream_index = 4;   /* index not below the count */
    gw_preamble_pack(&p, bad);
    CHECK_EQ(gw_preamble_parse(bad, sizeof bad, &q), -1);
    p.stream_index = 0;
    p.nstreams = 0;
    gw_preamble_pack(&p, bad);
    CHECK_EQ(gw_preamble_parse(bad, sizeof bad, &q), -1);
    CHECK_EQ(gw_preamble_parse((const uint8_t *)"GET / HTTP/1.1\r\n", 2, &q), -1);   /* refused at once */
    memset(q.token, 0, sizeof q.token);
    CHECK(!gw_token_set(q.token));
}

GW_TEST(short_secret_refused)
{
    struct gw_sec_cfg c = {.tls = true, .secret = (const uint8_t *)"0123456789abcdef0123456789abcde", .secret_len = 31};
    struct gw_tls_ctx *x;
    struct gw_err e = {0};
    CHECK_EQ(gw_tls_ctx_new(&c, false, &x, &e), -EINVAL);
    c.cert = "/nonexistent";   /* only one of three */
    CHECK_EQ(gw_tls_ctx_new(&c, false, &x, &e), -EINVAL);
    c = (struct gw_sec_cfg){.tls = false};
    CHECK_EQ(gw_tls_ctx_new(&c, false, &x, &e), 0);
    CHECK(x == NULL);
}

struct side {
    int fd;
    const uint8_t *secret;
    bool server;
    int rc;
    struct gw_err e;
    struct gw_conn *c;
    struct gw_tls_ctx *ctx;
    bool openssl_records;      /* OpenSSL's record layer instead of Godwit's */
    uint64_t update_every;     /* Godwit's records per key (0 = default) */
    bool aes256;               /* a client as sources before AES-128 (or for older destinations) */
};

/* Preamble and handshake of one side. */
static void *open_side(void *arg)
{
    struct side *s = arg;
    struct gw_sec_cfg cfg = {.tls = true, .secret = s->secret, .secret_len = sizeof SECRET - 1, .aes128 = !s->aes256};
    s->rc = gw_tls_ctx_new(&cfg, s->server, &s->ctx, &s->e);
    if (!s->rc) gw_tls_ctx_set_records(s->ctx, s->openssl_records, s->update_every);
    if (!s->rc) s->rc = gw_conn_from_fd(s->fd, &s->c, &s->e);
    if (s->rc) return NULL;
    gw_conn_set_timeout(s->c, 10000);
    uint8_t tok[GW_SEC_TOKEN_SIZE];
    memset(tok, 7, sizeof tok);
    struct gw_preamble p;
    s->rc = s->server ? gw_sec_recv_preamble(s->c, &p, &s->e) : gw_sec_send_preamble(s->c, s->ctx, 0, 1, tok, &s->e);
    if (!s->rc) s->rc = gw_tls_wrap(&s->c, s->ctx, false, &s->e);
    return NULL;
}

static void close_side(struct side *s)
{
    gw_conn_close(s->c);
    gw_tls_ctx_free(s->ctx);
}

/* Both ends of a TLS connection over fds a (client) and b (server); cl and sv keep their
 * record-layer choices. */
static int open_pair_as(int a, int b, const uint8_t *cs, const uint8_t *ss, struct side *cl, struct side *sv)
{
    cl->fd = a;
    cl->secret = cs;
    sv->fd = b;
    sv->secret = ss;
    sv->server = true;
    pthread_t th;
    pthread_create(&th, NULL, open_side, sv);
    open_side(cl);
    pthread_join(th, NULL);
    return cl->rc ? cl->rc : sv->rc;
}

static int open_pair(int a, int b, const uint8_t *cs, const uint8_t *ss, struct side *cl, struct side *sv)
{
    *cl = (struct side){0};
    *sv = (struct side){0};
    return open_pair_as(a, b, cs, ss, cl, sv);
}

#define XFER_RECORDS 64
#define XFER_PAGES 64   /* 256 KiB per record, scattered over 64 iovecs */

struct xfer { struct gw_conn *c; uint8_t seed; int rc; uint64_t got; struct gw_err e; };

static void fill(uint8_t *p, size_t n, uint8_t seed, uint64_t rec)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + rec * 31 + i * 7 + (i >> 12));
}

static void *sender(void *arg)
{
    struct xfer *x = arg;
    uint8_t *pages = malloc(XFER_PAGES * 4096);
    struct iovec v[XFER_PAGES + 1];
    for (uint64_t r = 0; r < XFER_RECORDS && !x->rc; r++) {
        fill(pages, XFER_PAGES * 4096, x->seed, r);
        /* Pages in reverse order: the payload is scattered, as a batch of guest pages is. */
        for (int i = 0; i < XFER_PAGES; i++) v[1 + i] = (struct iovec){pages + (XFER_PAGES - 1 - i) * 4096, 4096};
        x->rc = gw_conn_send_recordv(x->c, GW_WIRE_PAGE_BATCH, v, XFER_PAGES + 1, &x->e);
    }
    free(pages);
    return NULL;
}

static void *receiver(void *arg)
{
    struct xfer *x = arg;
    uint8_t *want = malloc(XFER_PAGES * 4096), *rev = malloc(XFER_PAGES * 4096);
    struct gw_rbuf b = {0};
    for (uint64_t r = 0; r < XFER_RECORDS && !x->rc; r++) {
        struct gw_wire_header h;
        x->rc = gw_conn_recv_record(x->c, &h, &b, &x->e);
        if (x->rc) break;
        fill(want, XFER_PAGES * 4096, x->seed, r);
        for (int i = 0; i < XFER_PAGES; i++) memcpy(rev + i * 4096, want + (XFER_PAGES - 1 - i) * 4096, 4096);
        if (h.length != XFER_PAGES * 4096 || memcmp(b.data, rev, h.length)) { x->rc = -EILSEQ; break; }
        x->got += h.length;
    }
    gw_rbuf_free(&b);
    free(want);
    free(rev);
    return NULL;
}

/* Records both ways at once between a and b (two threads per side), every byte checked,
 * then a's close seen by b as a clean end between records. Closes both. */
static void exchange_and_close(struct side *a, struct side *b)
{
    CHECK(!memcmp(b->c->token, a->c->token, sizeof a->c->token) && a->c->token[0] == 7);   /* carried over */
    /* Each side sends and receives at the same time, on one connection. */
    struct xfer as = {.c = a->c, .seed = 1}, ar = {.c = a->c, .seed = 2}, bs = {.c = b->c, .seed = 2}, br = {.c = b->c, .seed = 1};
    pthread_t t[4];
    pthread_create(&t[0], NULL, sender, &as);
    pthread_create(&t[1], NULL, receiver, &ar);
    pthread_create(&t[2], NULL, sender, &bs);
    pthread_create(&t[3], NULL, receiver, &br);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    CHECK_EQ(as.rc, 0);
    CHECK_EQ(bs.rc, 0);
    CHECK_EQ(ar.rc, 0);
    CHECK_EQ(br.rc, 0);
    CHECK_EQ(ar.got, (uint64_t)XFER_RECORDS * XFER_PAGES * 4096);
    CHECK_EQ(br.got, (uint64_t)XFER_RECORDS * XFER_PAGES * 4096);
    close_side(a);
    /* The peer's end: a clean close between records. */
    struct gw_wire_header h;
    struct gw_rbuf rb = {0};
    CHECK_EQ(gw_conn_recv_record(b->c, &h, &rb, NULL), -ESHUTDOWN);
    gw_rbuf_free(&rb);
    close_side(b);
}

GW_TEST(psk_both_ways_at_once)
{
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    struct side a, b;
    REQUIRE(open_pair(sv[0], sv[1], SECRET, SECRET, &a, &b) == 0);
    CHECK(!strcmp(gw_sec_describe(a.c, NULL, NULL), "tls13-psk"));
    CHECK(!strcmp(gw_sec_describe(b.c, NULL, NULL), "tls13-psk"));
    CHECK(!strcmp(gw_tls_suite(a.c), "TLS_AES_128_GCM_SHA256"));   /* the faster suite by default */
    CHECK(!strcmp(gw_tls_suite(b.c), "TLS_AES_128_GCM_SHA256"));
    exchange_and_close(&a, &b);
}

/* A source that offers AES-256 only (as versions before AES-128 do, and as sources do towards
 * a destination that did not say it takes AES-128) is served under that suite: the PSK goes
 * under the suite the server chose, on either record layer. */
GW_TEST(psk_client_with_aes256_only_is_served)
{
    for (int openssl_records = 0; openssl_records < 2; openssl_records++) {
        int sv[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        struct side a = {.aes256 = true, .openssl_records = openssl_records}, b = {.openssl_records = openssl_records};
        REQUIRE(open_pair_as(sv[0], sv[1], SECRET, SECRET, &a, &b) == 0);
        CHECK(!strcmp(gw_tls_suite(a.c), "TLS_AES_256_GCM_SHA384"));
        CHECK(!strcmp(gw_tls_suite(b.c), "TLS_AES_256_GCM_SHA384"));
        exchange_and_close(&a, &b);
    }
}

/* Godwit's records are TLS 1.3 as OpenSSL's own record layer writes and reads them: either
 * end may be OpenSSL's. */
GW_TEST(godwit_records_speak_openssl_records)
{
    for (int openssl_client = 0; openssl_client < 2; openssl_client++) {
        int sv[2];
        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        struct side a = {.openssl_records = openssl_client}, b = {.openssl_records = !openssl_client};
        REQUIRE(open_pair_as(sv[0], sv[1], SECRET, SECRET, &a, &b) == 0);
        CHECK(!strcmp(gw_sec_describe(a.c, NULL, NULL), "tls13-psk"));
        exchange_and_close(&a, &b);
    }
}

/* Keys change every 3 records in both directions (64 records of 256 KiB: ~300 updates each
 * way); OpenSSL's reader follows Godwit's KeyUpdate messages too. */
GW_TEST(key_updates_every_few_records)
{
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    struct side a = {.update_every = 3}, b = {.update_every = 3};
    REQUIRE(open_pair_as(sv[0], sv[1], SECRET, SECRET, &a, &b) == 0);
    exchange_and_close(&a, &b);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    struct side c = {.update_every = 3}, d = {.openssl_records = true};
    REQUIRE(open_pair_as(sv[0], sv[1], SECRET, SECRET, &c, &d) == 0);
    struct xfer s = {.c = c.c, .seed = 5}, r = {.c = d.c, .seed = 5};
    pthread_t ts;
    pthread_create(&ts, NULL, sender, &s);
    receiver(&r);
    pthread_join(ts, NULL);
    CHECK_EQ(s.rc, 0);
    CHECK_EQ(r.rc, 0);
    CHECK_EQ(r.got, (uint64_t)XFER_RECORDS * XFER_PAGES * 4096);
    close_side(&c);
    close_side(&d);
}

GW_TEST(wrong_psk_refused_on_both_sides)
{
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    struct side a, b;
    open_pair(sv[0], sv[1], SECRET, OTHER, &a, &b);
    CHECK_EQ(a.rc, -EACCES);
    CHECK_EQ(b.rc, -EACCES);
    CHECK(strstr(a.e.msg, "authentication failed") != NULL);
    /* Failed wraps leave the plain connections with their owners. */
    gw_conn_close(a.c);
    gw_conn_close(b.c);
    gw_tls_ctx_free(a.ctx);
    gw_tls_ctx_free(b.ctx);
}

/* Copies from one fd to another, flipping one byte at offset flip_at (of this direction). */
struct relay { int from, to; uint64_t flip_at; };

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    uint8_t buf[65536];
    uint64_t off = 0;
    for (;;) {
        ssize_t n = read(r->from, buf, sizeof buf);
        if (n <= 0) break;
        if (r->flip_at >= off && r->flip_at < off + (uint64_t)n) buf[r->flip_at - off] ^= 0x01;
        off += (uint64_t)n;
        if (send(r->to, buf, (size_t)n, MSG_NOSIGNAL) != n) break;
    }
    shutdown(r->to, SHUT_WR);
    return NULL;
}

GW_TEST(flipped_byte_is_refused)
{
    int ab[2], cd[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ab) == 0);
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cd) == 0);
    /* client ab[0] <-> ab[1] relay cd[0] <-> cd[1] server; the flip lands well after the
     * handshake, inside the application data. */
    struct relay up = {.from = ab[1], .to = cd[0], .flip_at = 100000}, down = {.from = cd[0], .to = ab[1], .flip_at = UINT64_MAX};
    pthread_t tu, td;
    pthread_create(&tu, NULL, relay_main, &up);
    pthread_create(&td, NULL, relay_main, &down);
    struct side a, b;
    REQUIRE(open_pair(ab[0], cd[1], SECRET, SECRET, &a, &b) == 0);
    struct xfer s = {.c = a.c, .seed = 9}, r = {.c = b.c, .seed = 9};
    pthread_t ts;
    pthread_create(&ts, NULL, sender, &s);
    receiver(&r);
    CHECK_EQ(r.rc, -EBADMSG);
    CHECK(strstr(r.e.msg, "failed authentication") != NULL);
    CHECK(r.got < 100000);   /* nothing at or after the flipped byte was delivered */
    gw_conn_shutdown(b.c);
    gw_conn_shutdown(a.c);
    pthread_join(ts, NULL);
    shutdown(ab[1], SHUT_RDWR);
    shutdown(cd[0], SHUT_RDWR);
    pthread_join(tu, NULL);
    pthread_join(td, NULL);
    close(ab[1]);
    close(cd[0]);
    close_side(&a);
    close_side(&b);
}
