/* Unit tests for the record layer: header checks, receiving records from a hostile or
 * vanishing peer (over a socketpair), records sent and received in scattered pieces,
 * control message bounds, and the authenticated handshake with the right and a wrong
 * cluster secret. */
#include "engine/codec/wire.h"
#include "engine/transport/conn.h"
#include "engine/transport/handshake.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void pack(uint8_t *b, uint32_t magic, uint8_t type, uint8_t flags, uint32_t len, uint32_t stream, uint64_t seq)
{
    struct gw_wire_header h = { .magic = magic, .type = type, .flags = flags, .length = len,
                                .stream = stream, .seq = seq };
    gw_wire_header_pack(&h, b);
}

GW_TEST(header_roundtrip_and_checks)
{
    uint8_t b[GW_WIRE_HEADER_SIZE];
    struct gw_wire_header h;
    pack(b, GW_WIRE_MAGIC, GW_WIRE_PAGE_BATCH, 0, 12345, 3, 0x1122334455667788ull);
    CHECK(memcmp(b, "GWM1", 4) == 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), 0);
    CHECK(h.type == GW_WIRE_PAGE_BATCH && h.length == 12345 && h.stream == 3 && h.seq == 0x1122334455667788ull);
    pack(b, GW_WIRE_MAGIC ^ 1, GW_WIRE_HELLO, 0, 0, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EBADMSG);
    pack(b, GW_WIRE_MAGIC, 0, 0, 0, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EPROTO);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_TYPE_MAX + 1, 0, 0, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EPROTO);
    pack(b, GW_WIRE_MAGIC, 255, 0, 0, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EPROTO);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_STATE, 0, GW_WIRE_MAX_PAYLOAD + 1, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EMSGSIZE);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_STATE, 0, UINT32_MAX, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EMSGSIZE);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_STATE, 1, 0, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EBADMSG);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_STATE, 0, 0, 0, 0);
    b[6] = 1;
    CHECK_EQ(gw_wire_header_parse(b, &h), -EBADMSG);
    CHECK(strcmp(gw_wire_type_name(GW_WIRE_END_OF_ROUND), "END_OF_ROUND") == 0);
    CHECK(strcmp(gw_wire_type_name(99), "unknown") == 0);
    /* The commit's second phase: numbers 12 and 13 are fixed on the wire. */
    CHECK_EQ(GW_WIRE_GO, 12);
    CHECK_EQ(GW_WIRE_RUNNING, 13);
    CHECK(strcmp(gw_wire_type_name(GW_WIRE_GO), "GO") == 0);
    CHECK(strcmp(gw_wire_type_name(GW_WIRE_RUNNING), "RUNNING") == 0);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_RUNNING, 0, 0, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), 0);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_TYPE_MAX + 1, 0, 0, 0, 0);
    CHECK_EQ(gw_wire_header_parse(b, &h), -EPROTO);
}

GW_TEST(record_split_truncated)
{
    uint8_t b[GW_WIRE_HEADER_SIZE + 10];
    pack(b, GW_WIRE_MAGIC, GW_WIRE_STATE, 0, 10, 0, 0);
    struct gw_wire_header h;
    const uint8_t *p;
    size_t used;
    for (size_t l = 0; l < sizeof b; l++) CHECK_EQ(gw_wire_record_split(b, l, &h, &p, &used), -EAGAIN);
    CHECK_EQ(gw_wire_record_split(b, sizeof b, &h, &p, &used), 0);
    CHECK(used == sizeof b && p == b + GW_WIRE_HEADER_SIZE);
}

/* A connected pair: a gw_conn on one end, a raw fd on the other. */
static int pair(struct gw_conn **c, int *raw)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) return -1;
    *raw = sv[1];
    if (gw_conn_from_fd(sv[0], c, NULL)) return -1;
    gw_conn_set_timeout(*c, 5000);
    return 0;
}

static int recv_after(const uint8_t *bytes, size_t n, bool close_after, struct gw_err *e)
{
    struct gw_conn *c;
    int raw;
    if (pair(&c, &raw)) return -999;
    if (n && write(raw, bytes, n) != (ssize_t)n) return -998;
    if (close_after) close(raw);
    struct gw_wire_header h;
    struct gw_rbuf b = {0};
    int r = gw_conn_recv_record(c, &h, &b, e);
    gw_rbuf_free(&b);
    gw_conn_close(c);
    if (!close_after) close(raw);
    return r;
}

GW_TEST(recv_record_hostile_and_hangup)
{
    uint8_t b[GW_WIRE_HEADER_SIZE + 100] = {0};
    struct gw_err e = {0};
    pack(b, GW_WIRE_MAGIC, GW_WIRE_STATE, 0, 100, 0, 0);
    CHECK_EQ(recv_after(b, sizeof b, true, &e), 0);                     /* control */
    CHECK_EQ(recv_after(b, GW_WIRE_HEADER_SIZE + 40, true, &e), -EPIPE); /* mid-payload */
    CHECK(strstr(e.msg, "mid-record") != NULL);
    CHECK_EQ(recv_after(b, 10, true, &e), -EPIPE);                      /* mid-header */
    CHECK(strstr(e.msg, "mid-record") != NULL);
    CHECK_EQ(recv_after(b, 0, true, &e), -ESHUTDOWN);                   /* between records */
    pack(b, 0xdeadbeef, GW_WIRE_STATE, 0, 100, 0, 0);
    CHECK_EQ(recv_after(b, sizeof b, true, &e), -EBADMSG);
    pack(b, GW_WIRE_MAGIC, 42, 0, 100, 0, 0);
    CHECK_EQ(recv_after(b, sizeof b, true, &e), -EPROTO);
    CHECK(strstr(e.msg, "unknown record type 42") != NULL);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_PAGE_BATCH, 0, 0x7fffffff, 0, 0);   /* nothing allocated */
    CHECK_EQ(recv_after(b, sizeof b, true, &e), -EMSGSIZE);
    pack(b, GW_WIRE_MAGIC, GW_WIRE_STATE, 0, 100, 0, 5);               /* out of sequence */
    CHECK_EQ(recv_after(b, sizeof b, true, &e), -EBADMSG);
    /* A silent peer is a timeout, not a hang. */
    struct gw_conn *c;
    int raw;
    REQUIRE(pair(&c, &raw) == 0);
    gw_conn_set_timeout(c, 100);
    struct gw_wire_header h;
    struct gw_rbuf rb = {0};
    CHECK_EQ(gw_conn_recv_record(c, &h, &rb, &e), -ETIMEDOUT);
    gw_conn_close(c);
    close(raw);
}

GW_TEST(send_then_receive_records)
{
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    struct gw_conn *a, *b;
    REQUIRE(gw_conn_from_fd(sv[0], &a, NULL) == 0 && gw_conn_from_fd(sv[1], &b, NULL) == 0);
    a->stream = b->stream = 2;
    CHECK_EQ(gw_conn_send_record(a, GW_WIRE_STATE, "hello", 5, NULL), 0);
    CHECK_EQ(gw_conn_send_record(a, GW_WIRE_COMMIT, NULL, 0, NULL), 0);
    struct gw_wire_header h;
    struct gw_rbuf rb = {0};
    CHECK_EQ(gw_conn_recv_record(b, &h, &rb, NULL), 0);
    CHECK(h.type == GW_WIRE_STATE && h.length == 5 && memcmp(rb.data, "hello", 5) == 0);
    CHECK_EQ(gw_conn_recv_record(b, &h, &rb, NULL), 0);
    CHECK(h.type == GW_WIRE_COMMIT && h.length == 0 && h.seq == 1);
    b->stream = 3; /* a record for another stream is refused */
    CHECK_EQ(gw_conn_send_record(a, GW_WIRE_STATE, "x", 1, NULL), 0);
    CHECK_EQ(gw_conn_recv_record(b, &h, &rb, NULL), -EBADMSG);
    CHECK_EQ(a->bytes_sent, 3 * GW_WIRE_HEADER_SIZE + 6);
    gw_rbuf_free(&rb);
    gw_conn_close(a);
    gw_conn_close(b);
}

/* A record sent from thousands of scattered pieces (more than one sendmsg takes) and read
 * back in parts scattered again; asking for more than the record has left is refused. A
 * writer thread is needed: the record is bigger than the socket buffers. */
struct scatter_writer {
    struct gw_conn *c;
    struct iovec *iov;
    int cnt;
    int r;
};

static void *scatter_write(void *arg)
{
    struct scatter_writer *w = arg;
    w->r = gw_conn_send_recordv(w->c, GW_WIRE_STATE, w->iov, w->cnt, NULL);
    if (!w->r) w->r = gw_conn_send_record(w->c, GW_WIRE_COMMIT, "ab", 2, NULL);
    return NULL;
}

GW_TEST(scattered_records_send_and_receive)
{
    enum { PIECES = 3000, PIECE = 100 };
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    struct gw_conn *a, *b;
    REQUIRE(gw_conn_from_fd(sv[0], &a, NULL) == 0 && gw_conn_from_fd(sv[1], &b, NULL) == 0);
    uint8_t *src = malloc(PIECES * 2 * PIECE), *dst = calloc(PIECES, PIECE);
    struct iovec *iov = calloc(PIECES + 1, sizeof *iov), *riov = calloc(PIECES, sizeof *riov);
    REQUIRE(src && dst && iov && riov);
    for (unsigned i = 0; i < PIECES * 2 * PIECE; i++) src[i] = (uint8_t)(i * 7 + i / 251);
    /* Every other piece of src, so no two pieces are adjacent. iov[0] is the header slot. */
    for (int i = 0; i < PIECES; i++) iov[i + 1] = (struct iovec){ src + (size_t)i * 2 * PIECE, PIECE };
    struct scatter_writer w = { .c = a, .iov = iov, .cnt = PIECES + 1 };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, scatter_write, &w) == 0);
    struct gw_wire_header h;
    CHECK_EQ(gw_conn_recv_header(b, &h, NULL), 0);
    CHECK(h.type == GW_WIRE_STATE && h.length == PIECES * PIECE);
    /* Read it back scattered in reverse order of places, in two calls. */
    for (int i = 0; i < PIECES; i++) riov[i] = (struct iovec){ dst + (size_t)(PIECES - 1 - i) * PIECE, PIECE };
    CHECK_EQ(gw_conn_recv_payload(b, riov, PIECES / 3, NULL), 0);
    struct gw_err e = {0};
    struct iovec whole = { dst, (size_t)PIECES * PIECE };
    CHECK_EQ(gw_conn_recv_payload(b, &whole, 1, &e), -EMSGSIZE); /* more than is left */
    CHECK_EQ(gw_conn_recv_payload(b, riov + PIECES / 3, PIECES - PIECES / 3, NULL), 0);
    int bad = 0;
    for (int i = 0; i < PIECES; i++)
        bad += memcmp(dst + (size_t)(PIECES - 1 - i) * PIECE, src + (size_t)i * 2 * PIECE, PIECE) != 0;
    CHECK_EQ(bad, 0);
    CHECK(iov[1].iov_base == src && iov[PIECES].iov_len == PIECE); /* the caller's list stays */
    struct gw_rbuf rb = {0};
    CHECK_EQ(gw_conn_recv_record(b, &h, &rb, NULL), 0);
    CHECK(h.type == GW_WIRE_COMMIT && h.seq == 1 && memcmp(rb.data, "ab", 2) == 0);
    pthread_join(th, NULL); /* the writer is done with a: it sends no more */
    CHECK_EQ(w.r, 0);
    /* A header before the last payload was read whole is refused. */
    CHECK_EQ(gw_conn_send_record(a, GW_WIRE_STATE, "xyz", 3, NULL), 0);
    CHECK_EQ(gw_conn_recv_header(b, &h, NULL), 0);
    CHECK_EQ(gw_conn_recv_header(b, &h, NULL), -EINVAL);
    gw_rbuf_free(&rb);
    gw_conn_close(a);
    gw_conn_close(b);
    free(src); free(dst); free(iov); free(riov);
}

GW_TEST(control_message_bounds)
{
    uint8_t nonce[GW_WIRE_NONCE_SIZE] = {1}, sid[GW_WIRE_SESSION_ID_SIZE] = {2};
    Godwit__V1__MigHello h = GODWIT__V1__MIG_HELLO__INIT;
    h.version = 1; h.nonce.data = nonce; h.nonce.len = sizeof nonce;
    h.session_id.data = sid; h.session_id.len = sizeof sid;
    h.nstreams = 4; h.stream_index = 3; h.mem_size = 1 << 20;
    uint8_t *b; size_t n; int err;
    REQUIRE(gw_wire_pack_msg(&h.base, &b, &n) == 0);
    Godwit__V1__MigHello *u = gw_wire_unpack_hello(b, n, &err);
    CHECK(u && u->stream_index == 3);
    if (u) godwit__v1__mig_hello__free_unpacked(u, NULL);
    free(b);
    h.stream_index = 4;   /* index must be below nstreams */
    REQUIRE(gw_wire_pack_msg(&h.base, &b, &n) == 0);
    CHECK(gw_wire_unpack_hello(b, n, &err) == NULL && err == -EBADMSG);
    free(b);
    h.stream_index = 0; h.nonce.len = 31;
    REQUIRE(gw_wire_pack_msg(&h.base, &b, &n) == 0);
    CHECK(gw_wire_unpack_hello(b, n, &err) == NULL);
    free(b);
    h.nonce.len = 32; h.mem_size = 4097;
    REQUIRE(gw_wire_pack_msg(&h.base, &b, &n) == 0);
    CHECK(gw_wire_unpack_hello(b, n, &err) == NULL);
    free(b);
    uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0xff };
    CHECK(gw_wire_unpack_auth(junk, sizeof junk, &err) == NULL && err == -EBADMSG);
    CHECK(gw_wire_unpack_digest(junk, sizeof junk, &err) == NULL);
}

struct dst_args {
    struct gw_conn *c;
    const char *secret;
    int r;
    struct gw_err e;
    Godwit__V1__MigHello *hello;
    uint64_t feat;
};

static void *dst_main(void *arg)
{
    struct dst_args *a = arg;
    struct gw_hs_params p = { .secret = (const uint8_t *)a->secret, .secret_len = strlen(a->secret),
                              .features = GW_WIRE_F_ALL };
    a->r = gw_hs_destination(a->c, &p, &a->hello, &a->feat, &a->e);
    return NULL;
}

/* Runs both sides of the handshake; returns the source's result. */
static int handshake(const char *src_secret, const char *dst_secret, struct dst_args *d, struct gw_err *se)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return -999;
    struct gw_conn *s;
    memset(d, 0, sizeof *d);
    gw_conn_from_fd(sv[0], &s, NULL);
    gw_conn_from_fd(sv[1], &d->c, NULL);
    gw_conn_set_timeout(s, 5000);
    gw_conn_set_timeout(d->c, 5000);
    d->secret = dst_secret;
    pthread_t th;
    pthread_create(&th, NULL, dst_main, d);
    uint8_t sid[GW_WIRE_SESSION_ID_SIZE] = {9};
    Godwit__V1__VmConfig cfg = GODWIT__V1__VM_CONFIG__INIT;
    cfg.name = "web1";
    cfg.memory_bytes = 64 << 20;
    Godwit__V1__MigHello h = GODWIT__V1__MIG_HELLO__INIT;
    h.config = &cfg;
    h.session_id.data = sid; h.session_id.len = sizeof sid;
    h.nstreams = 2; h.stream_index = 1; h.mem_size = 64 << 20;
    struct gw_hs_params p = { .secret = (const uint8_t *)src_secret, .secret_len = strlen(src_secret),
                              .features = GW_WIRE_F_LZ4 };
    uint64_t feat = 0;
    int r = gw_hs_source(s, &p, &h, &feat, se);
    gw_conn_close(s); /* a source that gave up hangs up; the destination must not wait */
    pthread_join(th, NULL);
    if (!r && feat != GW_WIRE_F_LZ4) r = -1000;
    gw_conn_close(d->c);
    return r;
}

GW_TEST(handshake_right_secret)
{
    struct dst_args d;
    struct gw_err se = {0};
    CHECK_EQ(handshake("cluster-secret", "cluster-secret", &d, &se), 0);
    CHECK_EQ(d.r, 0);
    REQUIRE(d.hello);
    CHECK(d.hello->config && strcmp(d.hello->config->name, "web1") == 0);
    CHECK_EQ(d.hello->stream_index, 1);
    CHECK_EQ(d.feat, GW_WIRE_F_LZ4);
    godwit__v1__mig_hello__free_unpacked(d.hello, NULL);
}

GW_TEST(handshake_wrong_secret_fails_on_both_sides)
{
    struct dst_args d;
    struct gw_err se = {0};
    CHECK_EQ(handshake("cluster-secret", "other-secret", &d, &se), -EACCES);
    CHECK_EQ(d.r, -EACCES);
    CHECK(d.hello == NULL);
    CHECK(strstr(se.msg, "authentication failed") != NULL);
    CHECK(strstr(d.e.msg, "authentication failed") != NULL);
    printf("  source: %s\n  destination: %s\n", se.msg, d.e.msg);
    CHECK_EQ(handshake("", "x", &d, &se), -EINVAL); /* an empty secret is refused up front */
}

GW_TEST(mac_binds_role_and_nonces)
{
    uint8_t n1[32] = {1}, n2[32] = {2}, m1[32], m2[32], m3[32];
    CHECK_EQ(gw_hs_mac((const uint8_t *)"k", 1, 1, n1, n2, m1), 0);
    CHECK_EQ(gw_hs_mac((const uint8_t *)"k", 1, 2, n1, n2, m2), 0);
    CHECK_EQ(gw_hs_mac((const uint8_t *)"k", 1, 1, n2, n1, m3), 0);
    CHECK(memcmp(m1, m2, 32) != 0);
    CHECK(memcmp(m1, m3, 32) != 0);
}

GW_TEST(handshake_refuses_big_records_before_auth)
{
    struct gw_conn *c;
    int raw;
    REQUIRE(pair(&c, &raw) == 0);
    uint8_t b[GW_WIRE_HEADER_SIZE];
    pack(b, GW_WIRE_MAGIC, GW_WIRE_HELLO, 0, GW_WIRE_MAX_HANDSHAKE_PAYLOAD + 1, 0, 0);
    REQUIRE(write(raw, b, sizeof b) == (ssize_t)sizeof b);
    struct gw_hs_params p = { .secret = (const uint8_t *)"k", .secret_len = 1, .features = GW_WIRE_F_ALL };
    Godwit__V1__MigHello *h = NULL;
    uint64_t f;
    struct gw_err e = {0};
    CHECK_EQ(gw_hs_destination(c, &p, &h, &f, &e), -EMSGSIZE);
    CHECK(h == NULL);
    CHECK_EQ(c->max_payload, 0); /* the limit is lifted after the handshake */
    gw_conn_close(c);
    close(raw);
}
