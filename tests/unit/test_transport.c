/* Unit tests for engine/transport: URL parsing, whole migration sessions over loopback TCP
 * with 1, 3 and 4 streams (rounds, state, digest, two-phase commit; memories end equal), all
 * streams of a session handed over at once out of order (and refused with a wrong count, a
 * duplicate index or a foreign session), a
 * source that hangs up mid-record or sends hostile pages, aborts on either side, a wrong
 * secret, the RDMA back end on a host without RDMA devices, control records waiting for
 * every stream, a batch naming a page twice, and a throughput benchmark
 * (GODWIT_TRANSPORT_BENCH=1). The commit's failure
 * cases and the receiver's hooks are in test_transport_commit.c. */
#include "engine/codec/digest.h"
#include "engine/common/util.h"
#include "engine/transport/conn.h"
#include "engine/transport/handshake.h"
#include "engine/transport/rdma_mem.h"
#include "precopy/precopy_link.h"
#include "tests/lib/gw_test.h"
#include "tests/unit/mig_harness.h"

#include <errno.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

GW_TEST(url_parsing)
{
    char s[16], h[64];
    uint16_t port;
    CHECK(gw_url_parse("tcp:10.0.0.1:7000", s, sizeof s, h, sizeof h, &port) == 0 &&
          !strcmp(s, "tcp") && !strcmp(h, "10.0.0.1") && port == 7000);
    CHECK(gw_url_parse("rdma:[fe80::1]:18515", s, sizeof s, h, sizeof h, &port) == 0 &&
          !strcmp(s, "rdma") && !strcmp(h, "fe80::1") && port == 18515);
    CHECK_EQ(gw_url_parse("tcp:host", s, sizeof s, h, sizeof h, &port), -EINVAL);
    CHECK_EQ(gw_url_parse("tcp:host:99999", s, sizeof s, h, sizeof h, &port), -EINVAL);
    CHECK_EQ(gw_url_parse("tcp:host:12x", s, sizeof s, h, sizeof h, &port), -EINVAL);
    CHECK_EQ(gw_url_parse("tcp::80", s, sizeof s, h, sizeof h, &port), -EINVAL);
    CHECK_EQ(gw_url_parse("tcp:host: 80", s, sizeof s, h, sizeof h, &port), -EINVAL);
    CHECK_EQ(gw_url_parse("tcp:host:+80", s, sizeof s, h, sizeof h, &port), -EINVAL);
    CHECK_EQ(gw_url_parse("tcp:host:", s, sizeof s, h, sizeof h, &port), -EINVAL);
    CHECK(gw_url_parse("tcp:host:0", s, sizeof s, h, sizeof h, &port) == 0 && port == 0);
    struct gw_conn *c;
    struct gw_err e = {0};
    CHECK_EQ(gw_conn_connect("udp:1.2.3.4:5", 100, &c, &e), -EPROTONOSUPPORT);
}



static void migrate_as(unsigned nstreams, uint64_t mem_size, enum gw_codec_mode mode, const struct dest *tmpl)
{
    uint64_t npages = mem_size / PG;
    uint8_t *mem = malloc(mem_size);
    uint64_t *pfns = malloc(npages * sizeof *pfns);
    REQUIRE(mem && pfns);
    for (uint64_t i = 0; i < npages; i++) fill_page(mem + i * PG, (int)(rnd() % 3));
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest_as(&d, &th, tmpl) == 0);
    Godwit__V1__VmConfig vc = GODWIT__V1__VM_CONFIG__INIT;
    vc.name = "test-vm";
    vc.memory_bytes = mem_size;
    struct gw_mig_sender_cfg cfg = {
        .url = d.l->url, .nstreams = nstreams, .secret = (const uint8_t *)SECRET,
        .secret_len = strlen(SECRET), .mem = mem, .mem_size = mem_size, .config = &vc,
        .codec = mode, .timeout_ms = 10000,
    };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    uint64_t t0 = gw_now_ns(), nd = 0;
    int r = gw_mig_sender_open(&cfg, &s, &e);
    CHECK_EQ(r, 0);
    if (r) { printf("  %s\n", e.msg); goto out; }
    /* Round 0: every page, in one call. */
    for (uint64_t i = 0; i < npages; i++) pfns[i] = i;
    CHECK_EQ(gw_mig_send_pages(s, pfns, npages), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 0, false, NULL), 0);
    /* Round 1: the guest dirtied 1/8 of its pages (some became zero, some text). */
    for (uint64_t i = 0; i < npages; i += 8) { fill_page(mem + i * PG, (int)(i / 8 % 3)); pfns[nd++] = i; }
    CHECK_EQ(gw_mig_send_pages(s, pfns, nd / 2), 0);       /* in two calls */
    CHECK_EQ(gw_mig_send_pages(s, pfns + nd / 2, nd - nd / 2), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 1, false, NULL), 0);
    /* Switchover: paused guest, a few last pages, state, digest, commit. */
    CHECK_EQ(gw_mig_send_switchover(s, 2), 0);
    uint64_t last[3] = { 1, npages / 2, npages - 1 };
    for (int i = 0; i < 3; i++) fill_page(mem + last[i] * PG, i);
    CHECK_EQ(gw_mig_send_pages(s, last, 3), 0);
    struct gw_mig_stats st;
    CHECK_EQ(gw_mig_send_end_of_round(s, 2, true, &st), 0);
    CHECK_EQ(gw_mig_send_state(s, "vcpu-state!", 11), 0);
    struct gw_digest dg;
    test_digest(mem, mem_size, &dg);
    CHECK_EQ(gw_mig_send_digest(s, &dg), 0);
    CHECK_EQ(gw_mig_send_commit(s, 3), 0);
    CHECK_EQ(gw_mig_sender_wait_ack(s, 10000), 0);   /* READY */
    CHECK_EQ(gw_mig_send_go(s), 0);
    CHECK_EQ(gw_mig_sender_wait_running(s, 10000), 0);
    CHECK(strcmp(gw_mig_sender_error(s), "") == 0);
    double sec = (double)(gw_now_ns() - t0) / 1e9;
    uint64_t sent = npages + nd + 3;
    CHECK_EQ(st.codec.pages[0] + st.codec.pages[1] + st.codec.pages[2], sent);
    CHECK(st.codec.pages[GW_PAGE_ZERO] > 0 && st.codec.pages[GW_PAGE_RAW] > 0);
    CHECK(mode == GW_CODEC_NONE ? st.codec.pages[GW_PAGE_LZ4] == 0 : st.codec.pages[GW_PAGE_LZ4] > 0);
    printf("  %u stream(s), %llu MiB: %.2f s, %.0f MiB/s of memory, wire %.1f MiB, pages raw/zero/lz4 %llu/%llu/%llu\n",
           nstreams, (unsigned long long)(mem_size >> 20), sec, (double)sent * PG / (1 << 20) / sec,
           (double)st.bytes_wire / (1 << 20), (unsigned long long)st.codec.pages[0],
           (unsigned long long)st.codec.pages[1], (unsigned long long)st.codec.pages[2]);
out:
    gw_mig_sender_close(s);
    __atomic_store_n(&d.src_closed, true, __ATOMIC_RELEASE);
    finish_dest(&d, th);
    CHECK_EQ(d.r, 0);
    if (d.r) printf("  destination: %s\n", d.err);
    CHECK(d.acked && d.go_seen && d.running);
    CHECK_EQ(d.after_running, -ETIMEDOUT); /* the source's hang-up after RUNNING is no error */
    CHECK_EQ(d.nstreams, nstreams);
    CHECK(d.digest_ok && d.state_ok && d.final_seen);
    CHECK_EQ(d.last_round, 2);
    CHECK_EQ(d.pages, npages + nd + 3);
    CHECK_EQ(d.st.codec.pages[0] + d.st.codec.pages[1] + d.st.codec.pages[2], npages + nd + 3);
    CHECK(d.mem && memcmp(d.mem, mem, mem_size) == 0);
    free(d.mem);
    free(mem);
    free(pfns);
}

static void migrate(unsigned nstreams, uint64_t mem_size, enum gw_codec_mode mode, bool handoff)
{
    struct dest t = { .secret = SECRET, .handoff = handoff, .mode = DM_NORMAL };
    migrate_as(nstreams, mem_size, mode, &t);
}

GW_TEST(migrate_64mib_one_stream) { migrate(1, 64 * GW_MIB, GW_CODEC_LZ4, false); }
GW_TEST(migrate_64mib_four_streams) { migrate(4, 64 * GW_MIB, GW_CODEC_AUTO, false); }
GW_TEST(migrate_16mib_three_streams_raw_handoff) { migrate(3, 16 * GW_MIB, GW_CODEC_NONE, true); }

/* A daemon's migration port hands all streams of a session over at once, in any order. */
GW_TEST(migrate_16mib_three_streams_handed_over_out_of_order)
{
    struct dest t = { .secret = SECRET, .handover = 3, .mode = DM_NORMAL };
    migrate_as(3, 16 * GW_MIB, GW_CODEC_AUTO, &t);
}

/* Hands over the streams (sid, nstreams, idx) of hand-driven sources that said HELLO; checks
 * the refusal and that it names the cause. */
static void handover_refused(unsigned n, const uint8_t *sid, const unsigned *nstreams, const unsigned *idx,
                             const char *want)
{
    struct gw_listener *l;
    REQUIRE(gw_listen("tcp:127.0.0.1:0", &l, NULL) == 0);
    struct gw_conn *src[8], *dst[8];
    for (unsigned i = 0; i < n; i++) {
        REQUIRE((src[i] = fake_hello(l->url, sid[i], 16 * PG, nstreams[i], idx[i])) != NULL);
        REQUIRE(gw_listener_accept(l, 5000, &dst[i], NULL) == 0);
    }
    struct gw_mig_receiver_cfg cfg = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET), .timeout_ms = 5000 };
    struct gw_mig_receiver *rx = NULL;
    struct gw_err e = {0};
    CHECK_EQ(gw_mig_receiver_accept_conns(dst, n, &cfg, &rx, &e), -EPROTO);
    CHECK(rx == NULL);
    CHECK(strstr(e.msg, want) != NULL);
    if (!strstr(e.msg, want)) printf("  got: %s\n", e.msg);
    for (unsigned i = 0; i < n; i++) gw_conn_close(src[i]);
    gw_listener_close(l);
}

GW_TEST(handover_wrong_count_duplicate_or_foreign_stream_refused)
{
    /* Two streams of a three-stream session. */
    handover_refused(2, (uint8_t[]){1, 1}, (unsigned[]){3, 3}, (unsigned[]){0, 1}, "3 streams, but 2 were handed over");
    /* Stream 1 twice, no stream 2. */
    handover_refused(3, (uint8_t[]){1, 1, 1}, (unsigned[]){3, 3, 3}, (unsigned[]){1, 0, 1}, "stream 1 was handed over twice");
    /* A stream of another session. */
    handover_refused(3, (uint8_t[]){1, 2, 1}, (unsigned[]){3, 3, 3}, (unsigned[]){0, 1, 2}, "different sessions");
    /* Nothing, or more than a session can have. */
    struct gw_mig_receiver_cfg cfg = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET) };
    struct gw_mig_receiver *rx = NULL;
    struct gw_err e = {0};
    CHECK_EQ(gw_mig_receiver_accept_conns(NULL, 0, &cfg, &rx, &e), -EINVAL);
    CHECK(strstr(e.msg, "1..64 streams") != NULL);
}

GW_TEST(wrong_secret_fails_clearly_on_both_sides)
{
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, "the-real-secret", false, DM_NORMAL) == 0);
    uint8_t mem[PG] = {0};
    struct gw_mig_sender_cfg cfg = { .url = d.l->url, .nstreams = 2, .secret = (const uint8_t *)"guess",
                                     .secret_len = 5, .mem = mem, .mem_size = PG, .timeout_ms = 5000 };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    CHECK_EQ(gw_mig_sender_open(&cfg, &s, &e), -EACCES);
    CHECK(s == NULL);
    CHECK(strstr(e.msg, "authentication failed") != NULL);
    finish_dest(&d, th);
    CHECK_EQ(d.r, -EACCES);
    CHECK(strstr(d.err, "authentication failed") != NULL);
}


static void hostile_source(const uint8_t *payload, size_t len, bool hang_up_mid_record, int want, const char *msg)
{
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_NORMAL) == 0);
    struct gw_conn *c = fake_stream(d.l->url, 4 * PG, 1, 0);
    REQUIRE(c);
    if (hang_up_mid_record) {
        /* A header announcing len bytes, then half of them, then the peer is gone. */
        struct gw_wire_header h = { .magic = GW_WIRE_MAGIC, .type = GW_WIRE_PAGE_BATCH,
                                    .length = (uint32_t)len, .seq = c->send_seq };
        uint8_t hb[GW_WIRE_HEADER_SIZE];
        gw_wire_header_pack(&h, hb);
        struct iovec iov[2] = { { hb, sizeof hb }, { (void *)payload, len / 2 } };
        c->ops->sendv(c, iov, 2, NULL);
    } else {
        gw_conn_send_record(c, GW_WIRE_PAGE_BATCH, payload, len, NULL);
    }
    uint64_t t0 = gw_now_ns();
    gw_conn_close(c);
    finish_dest(&d, th);
    CHECK_EQ(d.r, want);
    CHECK(strstr(d.err, msg) != NULL);
    CHECK(gw_now_ns() - t0 < 5 * 1000000000ull); /* an error, not a wait for the timeout */
    printf("  destination: %s\n", d.err);
    free(d.mem);
}

GW_TEST(source_hangs_up_mid_record)
{
    uint8_t page[GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE + PG] = {1};
    page[GW_PAGE_BATCH_HDR + 16 - 4] = 0; /* RAW page 0, len 4096 */
    page[GW_PAGE_BATCH_HDR + 16 - 3] = 0x10;
    hostile_source(page, sizeof page, true, -EPIPE, "mid-record");
}

GW_TEST(source_sends_page_outside_memory)
{
    uint8_t b[GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE] = {1};
    b[GW_PAGE_BATCH_HDR] = 4;                 /* pfn 4 of a 4-page guest */
    b[GW_PAGE_BATCH_HDR + 8] = GW_PAGE_ZERO;
    hostile_source(b, sizeof b, false, -ERANGE, "outside guest memory");
}

GW_TEST(destination_refuses_commit)
{
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_ABORT_AT_COMMIT) == 0);
    uint8_t *mem = calloc(16, PG);
    REQUIRE(mem);
    struct gw_mig_sender_cfg cfg = { .url = d.l->url, .nstreams = 2, .secret = (const uint8_t *)SECRET,
                                     .secret_len = strlen(SECRET), .mem = mem, .mem_size = 16 * PG };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    REQUIRE(gw_mig_sender_open(&cfg, &s, &e) == 0);
    uint64_t pf[2] = { 0, 15 };
    CHECK_EQ(gw_mig_send_pages(s, pf, 2), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 0, true, NULL), 0);
    struct gw_digest dg;
    test_digest(mem, 16 * PG, &dg);
    CHECK_EQ(gw_mig_send_digest(s, &dg), 0);
    CHECK_EQ(gw_mig_send_commit(s, 1), 0);
    CHECK_EQ(gw_mig_sender_wait_ack(s, 5000), -EPROTO);
    CHECK(strstr(gw_mig_sender_error(s), "digest mismatch (test)") != NULL);
    CHECK_EQ(gw_mig_send_commit(s, 1), -EPROTO); /* the session stays failed */
    gw_mig_sender_close(s);
    finish_dest(&d, th);
    CHECK_EQ(d.r, -EIO);
    free(d.mem);
    free(mem);
}

GW_TEST(source_aborts)
{
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_NORMAL) == 0);
    uint8_t *mem = calloc(16, PG);
    REQUIRE(mem);
    struct gw_mig_sender_cfg cfg = { .url = d.l->url, .nstreams = 2, .secret = (const uint8_t *)SECRET,
                                     .secret_len = strlen(SECRET), .mem = mem, .mem_size = 16 * PG };
    struct gw_mig_sender *s = NULL;
    REQUIRE(gw_mig_sender_open(&cfg, &s, NULL) == 0);
    uint64_t bad = 16;
    CHECK_EQ(gw_mig_send_pages(s, &bad, 1), -ERANGE);
    gw_mig_sender_abort(s, -ECANCELED, "operator cancelled");
    CHECK(gw_mig_send_end_of_round(s, 0, false, NULL) != 0);
    gw_mig_sender_close(s);
    finish_dest(&d, th);
    CHECK_EQ(d.r, -EPROTO);
    CHECK(strstr(d.err, "operator cancelled") != NULL);
    free(d.mem);
    free(mem);
}

/* Test double situation: this host has no RDMA device (no InfiniBand support in its kernel),
 * so the back end must stop at its device check with a clear message. On a host that has a
 * device the test is skipped rather than passed. */
GW_TEST(rdma_without_device_fails_clearly)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (list) ibv_free_device_list(list);
    if (list && n > 0) { gw_test_skip("this host has an RDMA device"); return; }
    struct gw_conn *c = NULL;
    struct gw_listener *l = NULL;
    struct gw_err e = {0};
    CHECK_EQ(gw_conn_connect("rdma:127.0.0.1:18515", 1000, &c, &e), -ENODEV);
    CHECK(strstr(e.msg, "rdma: no RDMA device found") != NULL);
    printf("  %s\n", e.msg);
    memset(&e, 0, sizeof e);
    CHECK_EQ(gw_listen("rdma:0.0.0.0:18515", &l, &e), -ENODEV);
    CHECK(strstr(e.msg, "no RDMA device found") != NULL);
    uint8_t mem[PG];
    struct gw_mig_sender_cfg cfg = { .url = "rdma:127.0.0.1:18515", .nstreams = 1, .secret = (const uint8_t *)"k",
                                     .secret_len = 1, .mem = mem, .mem_size = PG };
    struct gw_mig_sender *s = NULL;
    CHECK_EQ(gw_mig_sender_open(&cfg, &s, &e), -ENODEV);
}

/* RDMA WRITE of pages works on RDMA connections only; on TCP it refuses with the reason. */
GW_TEST(rdma_write_refuses_a_tcp_connection)
{
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    struct gw_conn *c = NULL;
    REQUIRE(gw_conn_from_fd(sv[0], &c, NULL) == 0);
    uint8_t mem[PG];
    struct gw_rdma_mr *mr = NULL;
    struct gw_rdma_region desc, remote = { .addr = 4096, .len = PG, .rkey = 1 };
    struct gw_err e = {0};
    CHECK_EQ(gw_rdma_mem_register(c, mem, sizeof mem, true, &mr, &desc, &e), -EOPNOTSUPP);
    CHECK(strstr(e.msg, "needs an RDMA connection, this one is tcp") != NULL);
    CHECK(mr == NULL);
    memset(&e, 0, sizeof e);
    CHECK_EQ(gw_rdma_mem_write(c, NULL, 0, PG, &remote, 0, &e), -EOPNOTSUPP);
    CHECK(strstr(e.msg, "RDMA WRITE needs an RDMA connection") != NULL);
    gw_conn_close(c);
    close(sv[1]);
}

/* ---- control records wait for every stream ---- */
struct barrier_src {
    const char *url;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool go;
    int r;
};

static int send_eor(struct gw_conn *c, uint64_t round, uint64_t pages)
{
    Godwit__V1__MigEndOfRound m = GODWIT__V1__MIG_END_OF_ROUND__INIT;
    m.round = round;
    m.pages = pages;
    uint8_t b[32];
    return gw_conn_send_record(c, GW_WIRE_END_OF_ROUND, b, protobuf_c_message_pack(&m.base, b), NULL);
}

static void *barrier_src_main(void *arg)
{
    struct barrier_src *b = arg;
    struct gw_conn *c0 = fake_stream(b->url, 4 * PG, 2, 0), *c1 = fake_stream(b->url, 4 * PG, 2, 1);
    b->r = -1;
    if (!c0 || !c1) goto out;
    /* Stream 0 is done with round 0 and sends STATE; stream 1 lags behind. */
    if (send_eor(c0, 0, 0) || gw_conn_send_record(c0, GW_WIRE_STATE, "S", 1, NULL)) goto out;
    pthread_mutex_lock(&b->mu);
    while (!b->go) pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    uint8_t batch[GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE + PG] = {1};
    batch[GW_PAGE_BATCH_HDR] = 3;          /* pfn 3, RAW, 4096 bytes of 0x77 */
    batch[GW_PAGE_BATCH_HDR + 13] = 0x10;
    memset(batch + GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE, 0x77, PG);
    if (gw_conn_send_record(c1, GW_WIRE_PAGE_BATCH, batch, sizeof batch, NULL) || send_eor(c1, 0, 1)) goto out;
    b->r = 0;
out:
    /* Hold the connections until the receiver is done (it closes first). */
    if (c0) { struct gw_wire_header h; struct gw_rbuf rb = {0}; gw_conn_recv_record(c0, &h, &rb, NULL); gw_rbuf_free(&rb); }
    gw_conn_close(c0);
    gw_conn_close(c1);
    return NULL;
}

GW_TEST(control_records_wait_for_all_streams)
{
    struct gw_listener *l;
    REQUIRE(gw_listen("tcp:127.0.0.1:0", &l, NULL) == 0);
    struct barrier_src b = { .url = l->url };
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, barrier_src_main, &b) == 0);
    struct gw_mig_receiver_cfg cfg = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET), .timeout_ms = 5000 };
    struct gw_mig_receiver *rx = NULL;
    struct gw_err e = {0};
    uint8_t *mem = calloc(4, PG);
    CHECK_EQ(gw_mig_receiver_accept(l, &cfg, &rx, &e), 0);
    if (rx && mem) {
        CHECK_EQ(gw_mig_receiver_start(rx, mem, 4 * PG, &e), 0);
        struct gw_mig_event ev;
        CHECK_EQ(gw_mig_receiver_next(rx, &ev, 300), -ETIMEDOUT); /* STATE held back */
        pthread_mutex_lock(&b.mu);
        b.go = true;
        pthread_cond_signal(&b.cv);
        pthread_mutex_unlock(&b.mu);
        CHECK_EQ(gw_mig_receiver_next(rx, &ev, 5000), 0);
        CHECK(ev.type == GW_MIG_EV_ROUND && ev.round == 0 && ev.pages == 1);
        CHECK_EQ(gw_mig_receiver_next(rx, &ev, 5000), 0);
        CHECK(ev.type == GW_MIG_EV_STATE && ev.len == 1);
        CHECK(mem[3 * PG] == 0x77 && mem[4 * PG - 1] == 0x77); /* the lagging page is in */
    }
    pthread_mutex_lock(&b.mu); /* release the source even when a check above failed */
    b.go = true;
    pthread_cond_signal(&b.cv);
    pthread_mutex_unlock(&b.mu);
    gw_mig_receiver_close(rx);
    pthread_join(th, NULL);
    CHECK_EQ(b.r, 0);
    gw_listener_close(l);
    free(mem);
}

/* ---- throughput benchmark (GODWIT_TRANSPORT_BENCH=1; skipped otherwise) ----
 * 512 MiB of random (incompressible) pages in one round over loopback TCP with 1, 2 and 4
 * streams, into a fresh memfd as on a real destination. The clock runs from the first
 * queued page until the destination reports the round complete, i.e. every page is in the
 * destination's memory. The CPU time of both sides (this process) is printed too: on a
 * shared machine it is steadier than the wall clock. GODWIT_TRANSPORT_BENCH_REPS repeats
 * each case (the median is printed); GODWIT_TRANSPORT_BENCH_STREAMS="14" picks cases. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One migration of mem; returns MiB/s (0 on failure) and the CPU seconds per GiB. */
static double bench_one(uint8_t *mem, uint64_t mem_size, unsigned nstreams, bool fresh, double *cpu_per_gib)
{
    uint64_t npages = mem_size / PG;
    uint64_t *pfns = malloc(npages * sizeof *pfns);
    if (!pfns) return 0;
    for (uint64_t i = 0; i < npages; i++) pfns[i] = i;
    struct dest d, tmpl = { .secret = SECRET, .mode = DM_BENCH, .fresh_memory = fresh, .prefault = !fresh };
    pthread_t th;
    if (start_dest_as(&d, &th, &tmpl)) { free(pfns); return 0; }
    struct gw_mig_sender_cfg cfg = {
        .url = d.l->url, .nstreams = nstreams, .secret = (const uint8_t *)SECRET,
        .secret_len = strlen(SECRET), .mem = mem, .mem_size = mem_size, .codec = GW_CODEC_AUTO,
        .timeout_ms = 20000,
    };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    double mib_s = 0;
    int r = gw_mig_sender_open(&cfg, &s, &e);
    CHECK_EQ(r, 0);
    if (!r) {
        /* Wait until the destination's memory is mapped and its threads run. */
        while (!__atomic_load_n(&d.started, __ATOMIC_ACQUIRE) && !__atomic_load_n(&d.done, __ATOMIC_ACQUIRE))
            usleep(1000);
        uint64_t t0 = gw_now_ns(), c0 = cpu_ns();
        CHECK_EQ(gw_mig_send_pages(s, pfns, npages), 0);
        struct gw_mig_stats st;
        CHECK_EQ(gw_mig_send_end_of_round(s, 0, true, &st), 0);
        CHECK_EQ(gw_mig_send_commit(s, 1), 0);
        CHECK_EQ(gw_mig_sender_wait_ack(s, 20000), 0);
        uint64_t c1 = cpu_ns();
        CHECK_EQ(gw_mig_send_go(s), 0);
        CHECK_EQ(gw_mig_sender_wait_running(s, 20000), 0);
        double sec = (double)(d.t_round - t0) / 1e9;
        mib_s = (double)mem_size / (1 << 20) / sec;
        *cpu_per_gib = (double)(c1 - c0) / 1e9 / ((double)mem_size / (1 << 30));
        CHECK_EQ(st.codec.pages[GW_PAGE_RAW], npages);
    } else {
        printf("  %s\n", e.msg);
    }
    gw_mig_sender_close(s);
    __atomic_store_n(&d.src_closed, true, __ATOMIC_RELEASE);
    finish_dest(&d, th);
    CHECK_EQ(d.r, 0);
    if (d.r) printf("  destination: %s\n", d.err);
    CHECK(d.mem && memcmp(d.mem, mem, mem_size) == 0);
    if (d.mem) munmap(d.mem, mem_size);
    free(pfns);
    return d.r ? 0 : mib_s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

GW_TEST(bench_512mib_random)
{
    const char *on = getenv("GODWIT_TRANSPORT_BENCH");
    if (!on || strcmp(on, "1")) { gw_test_skip("set GODWIT_TRANSPORT_BENCH=1 to run"); return; }
    uint64_t mem_size = 512 * GW_MIB;
    uint8_t *mem = malloc(mem_size);
    REQUIRE(mem);
    for (uint64_t i = 0; i < mem_size / PG; i++) fill_page(mem + i * PG, 0);
    const char *streams = getenv("GODWIT_TRANSPORT_BENCH_STREAMS"), *reps_s = getenv("GODWIT_TRANSPORT_BENCH_REPS");
    int reps = reps_s ? atoi(reps_s) : 1;
    if (reps < 1 || reps > 50) reps = 1;
    unsigned list[] = { 1, 2, 4 };
    /* Fresh: the destination's memfd is all holes, as in round 0 of a real migration (each
     * page costs the destination a page allocation). Populated: the pages are there already,
     * as for pages sent again in later rounds: the transport alone. */
    for (int fresh = 1; fresh >= 0; fresh--) {
        for (unsigned k = 0; k < 3; k++) {
            if (streams && !strchr(streams, '0' + (int)list[k])) continue;
            double mibs[50], cpus[50];
            for (int i = 0; i < reps; i++) mibs[i] = bench_one(mem, mem_size, list[k], fresh, &cpus[i]);
            qsort(mibs, (size_t)reps, sizeof *mibs, cmp_double);
            qsort(cpus, (size_t)reps, sizeof *cpus, cmp_double);
            printf("  bench %u stream(s), 512 MiB random into %s memory: median %.0f MiB/s (min %.0f, max %.0f, "
                   "%d runs), %.2f CPU s per GiB (both sides)\n", list[k], fresh ? "fresh" : "populated",
                   mibs[reps / 2], mibs[0], mibs[reps - 1], reps, cpus[reps / 2]);
        }
    }
    free(mem);
}


/* ---- a batch that names a page twice ---- */
struct repeat_src {
    const char *url;
    const uint8_t *batch;
    size_t len;
    uint32_t npages;
};

static void *repeat_src_main(void *arg)
{
    struct repeat_src *b = arg;
    struct gw_conn *c = fake_stream(b->url, 8 * PG, 1, 0);
    if (!c) return NULL;
    gw_conn_send_record(c, GW_WIRE_PAGE_BATCH, b->batch, b->len, NULL);
    Godwit__V1__MigEndOfRound m = GODWIT__V1__MIG_END_OF_ROUND__INIT;
    m.pages = b->npages;
    uint8_t eb[32];
    gw_conn_send_record(c, GW_WIRE_END_OF_ROUND, eb, protobuf_c_message_pack(&m.base, eb), NULL);
    /* Hold the connection until the receiver is done (it closes first). */
    struct gw_wire_header h;
    struct gw_rbuf rb = {0};
    gw_conn_recv_record(c, &h, &rb, NULL);
    gw_rbuf_free(&rb);
    gw_conn_close(c);
    return NULL;
}

/* The receiver puts raw page bodies straight into memory; a batch that names a page more
 * than once must still end with the last copy, as if applied in order. */
GW_TEST(receiver_applies_repeated_pages_in_order)
{
    uint8_t a[PG], bpage[PG], txt[PG];
    fill_page(a, 0);
    fill_page(bpage, 0);
    fill_page(txt, 1);
    uint8_t *lz = malloc(PG), *batch = malloc(gw_page_batch_bound(8));
    REQUIRE(lz && batch);
    struct gw_page_encoder enc;
    gw_page_encoder_init(&enc, GW_CODEC_LZ4, 1);
    /* Encode txt alone to get a real lz4 block for it. */
    uint64_t zero_pfn = 0;
    size_t ol;
    REQUIRE(gw_page_encode_batch(&enc, txt, PG, &zero_pfn, 1, batch, gw_page_batch_bound(8), &ol) == 0);
    REQUIRE(batch[GW_PAGE_BATCH_HDR + 8] == GW_PAGE_LZ4);
    uint32_t lzlen = (uint32_t)(ol - GW_PAGE_BATCH_HDR - GW_PAGE_DESC_SIZE);
    memcpy(lz, batch + GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE, lzlen);
    /* pfn 2: RAW a then ZERO; pfn 3: ZERO then RAW b; pfn 4: RAW a then LZ4 txt; pfn 5: RAW b. */
    struct { uint64_t pfn; uint8_t enc; const uint8_t *data; uint32_t len; } p[] = {
        { 2, GW_PAGE_RAW, a, PG }, { 2, GW_PAGE_ZERO, NULL, 0 }, { 3, GW_PAGE_ZERO, NULL, 0 },
        { 3, GW_PAGE_RAW, bpage, PG }, { 4, GW_PAGE_RAW, a, PG }, { 4, GW_PAGE_LZ4, lz, lzlen },
        { 5, GW_PAGE_RAW, bpage, PG },
    };
    uint32_t n = (uint32_t)GW_ARRAY_SIZE(p);
    memset(batch, 0, GW_PAGE_BATCH_HDR + n * GW_PAGE_DESC_SIZE);
    batch[0] = (uint8_t)n;
    size_t off = GW_PAGE_BATCH_HDR + n * GW_PAGE_DESC_SIZE;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = batch + GW_PAGE_BATCH_HDR + i * GW_PAGE_DESC_SIZE;
        d[0] = (uint8_t)p[i].pfn;
        d[8] = p[i].enc;
        memcpy(d + 12, &p[i].len, 4); /* little-endian host */
        if (p[i].len) memcpy(batch + off, p[i].data, p[i].len);
        off += p[i].len;
    }
    struct gw_listener *l;
    REQUIRE(gw_listen("tcp:127.0.0.1:0", &l, NULL) == 0);
    struct repeat_src src = { .url = l->url, .batch = batch, .len = off, .npages = n };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, repeat_src_main, &src) == 0);
    struct gw_mig_receiver_cfg cfg = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET), .timeout_ms = 5000 };
    struct gw_mig_receiver *rx = NULL;
    uint8_t *mem = malloc(8 * PG);
    REQUIRE(mem);
    memset(mem, 0xEE, 8 * PG);
    CHECK_EQ(gw_mig_receiver_accept(l, &cfg, &rx, NULL), 0);
    if (rx) {
        CHECK_EQ(gw_mig_receiver_start(rx, mem, 8 * PG, NULL), 0);
        struct gw_mig_event ev;
        CHECK_EQ(gw_mig_receiver_next(rx, &ev, 5000), 0);
        CHECK(ev.type == GW_MIG_EV_ROUND && ev.pages == n);
        CHECK(gw_is_zero(mem + 2 * PG, PG));
        CHECK(memcmp(mem + 3 * PG, bpage, PG) == 0);
        CHECK(memcmp(mem + 4 * PG, txt, PG) == 0);
        CHECK(memcmp(mem + 5 * PG, bpage, PG) == 0);
        CHECK(mem[6 * PG] == 0xEE); /* untouched */
    }
    gw_mig_receiver_close(rx);
    pthread_join(th, NULL);
    gw_listener_close(l);
    free(mem); free(lz); free(batch);
}
