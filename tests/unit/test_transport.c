/* Unit tests for engine/transport: URL parsing, whole migration sessions over loopback TCP
 * with 1 and 4 streams (rounds, state, digest, two-phase commit; memories end equal), a
 * source that hangs up mid-record or sends hostile pages, aborts on either side, a wrong
 * secret, the RDMA back end on a host without RDMA devices, the commit's failure cases (a
 * link cut after READY, ERROR instead of RUNNING, records and calls out of order), the
 * receiver's touched bitmap and fresh-memory zero pages, and a throughput benchmark
 * (GODWIT_TRANSPORT_BENCH=1). */
#include "engine/codec/digest.h"
#include "engine/common/util.h"
#include "engine/transport/conn.h"
#include "engine/transport/handshake.h"
#include "engine/transport/migration.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define PG 4096u
#define SECRET "s3cret-cluster-key"

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static void fill_page(uint8_t *p, int kind)
{
    if (kind == 0) {
        for (unsigned i = 0; i < PG; i += 8) { uint64_t v = rnd(); memcpy(p + i, &v, 8); }
    } else if (kind == 1) {
        static const char t[] = "pre-copy rounds send dirty pages until the rest fits the downtime. ";
        for (unsigned i = 0; i < PG; i++) p[i] = (uint8_t)t[(i + (rnd() & 7)) % (sizeof t - 1)];
    } else {
        memset(p, 0, PG);
    }
}

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
    struct gw_conn *c;
    struct gw_err e = {0};
    CHECK_EQ(gw_conn_connect("udp:1.2.3.4:5", 100, &c, &e), -EPROTONOSUPPORT);
}

/* A MAP_SHARED mapping of a new memfd of size bytes (all holes), or NULL. */
static uint8_t *fresh_memfd_map(uint64_t size)
{
    int fd = memfd_create("gw-test-ram", MFD_CLOEXEC);
    if (fd < 0) return NULL;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) == 0) p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the memory */
    return p == MAP_FAILED ? NULL : p;
}

/* ---- a destination run in a thread ---- */
enum dest_mode {
    DM_NORMAL,             /* check the digest at COMMIT, ACK, run at GO, send RUNNING */
    DM_ABORT_AT_COMMIT,    /* refuse COMMIT with ERROR */
    DM_ERROR_AT_GO,        /* ACK, then answer GO with ERROR (the guest could not start) */
    DM_BENCH,              /* fresh memfd memory, no digest; note when round 0 is complete */
};

struct dest {
    struct gw_listener *l;
    const char *secret;
    enum dest_mode mode;
    bool handoff;          /* accept stream 0 by hand, as a daemon handing over the socket */
    bool started, done;    /* atomics: receiving threads run / dest_main returned */
    bool src_closed;       /* atomic, set by the test: the source closed its session */
    uint64_t t_round;      /* gw_now_ns() at the first ROUND event */
    bool acked, go_seen, running;
    uint8_t *given_mem;    /* receive into this (test-owned) instead of allocating */
    uint64_t *touched;     /* passed to the receiver */
    bool fresh_memory;     /* passed to the receiver */
    bool no_digest;        /* memory the digest must not read (PROT_NONE pages) */
    int after_running;     /* gw_mig_receiver_next once the source hung up after RUNNING */
    /* results */
    int r;
    char err[256];
    uint8_t *mem;
    uint64_t mem_size;
    unsigned nstreams;
    uint64_t rounds_seen, last_round, pages;
    bool digest_ok, state_ok, final_seen;
    struct gw_mig_stats st;
};

static void *dest_main(void *arg)
{
    struct dest *d = arg;
    struct gw_mig_receiver_cfg cfg = { .secret = (const uint8_t *)d->secret, .secret_len = strlen(d->secret),
                                       .timeout_ms = 10000, .touched = d->touched,
                                       .fresh_memory = d->fresh_memory };
    struct gw_mig_receiver *rx = NULL;
    struct gw_err e = {0};
    struct gw_digest want = {{0}};
    bool have_digest = false;
    if (d->handoff) {
        struct gw_conn *c0;
        d->r = gw_listener_accept(d->l, 10000, &c0, &e);
        if (!d->r) d->r = gw_mig_receiver_accept_conn(c0, d->l, &cfg, &rx, &e);
    } else {
        d->r = gw_mig_receiver_accept(d->l, &cfg, &rx, &e);
    }
    if (d->r) goto out;
    const Godwit__V1__MigHello *h = gw_mig_receiver_hello(rx);
    d->mem_size = h->mem_size;
    d->nstreams = h->nstreams;
    if (d->given_mem) {
        d->mem = d->given_mem;
    } else if (d->mode == DM_BENCH) {
        /* As on a real destination: guest RAM is a fresh memfd, all holes. */
        d->mem = fresh_memfd_map(d->mem_size);
    } else {
        d->mem = malloc(d->mem_size);
        if (d->mem) memset(d->mem, 0xEE, d->mem_size); /* not zero: zero markers must do their job */
    }
    if (!d->mem) { d->r = -ENOMEM; goto out; }
    if ((d->r = gw_mig_receiver_start(rx, d->mem, d->mem_size, &e))) goto out;
    __atomic_store_n(&d->started, true, __ATOMIC_RELEASE);
    for (;;) {
        struct gw_mig_event ev;
        if ((d->r = gw_mig_receiver_next(rx, &ev, 20000))) {
            snprintf(e.msg, sizeof e.msg, "%s", gw_mig_receiver_error(rx));
            break;
        }
        if (ev.type == GW_MIG_EV_ROUND) {
            if (!d->rounds_seen) d->t_round = gw_now_ns();
            d->rounds_seen++;
            d->last_round = ev.round;
            d->pages = ev.pages;
            d->final_seen |= ev.final;
        } else if (ev.type == GW_MIG_EV_STATE) {
            d->state_ok = ev.len == 11 && !memcmp(ev.data, "vcpu-state!", 11);
        } else if (ev.type == GW_MIG_EV_DIGEST) {
            want = ev.digest;
            have_digest = true;
        } else if (ev.type == GW_MIG_EV_COMMIT) {
            if (d->mode != DM_BENCH && !d->no_digest) {
                struct gw_digest got;
                gw_digest_mem(d->mem, d->mem_size, &got);
                d->digest_ok = have_digest && gw_digest_equal(&got, &want);
                if (d->mode == DM_ABORT_AT_COMMIT || !d->digest_ok) {
                    gw_mig_receiver_abort(rx, -EIO, "digest mismatch (test)");
                    d->r = -EIO;
                    break;
                }
            }
            if ((d->r = gw_mig_receiver_ack(rx))) {
                snprintf(e.msg, sizeof e.msg, "%s", gw_mig_receiver_error(rx));
                break;
            }
            d->acked = true; /* READY; the guest is not ours until GO */
        } else if (ev.type == GW_MIG_EV_GO) {
            d->go_seen = true;
            if (d->mode == DM_ERROR_AT_GO) {
                gw_mig_receiver_abort(rx, -EIO, "cannot resume the guest (test)");
                d->r = -EIO;
                break;
            }
            /* (A real destination resumes the guest here.) */
            if ((d->r = gw_mig_receiver_running(rx))) {
                snprintf(e.msg, sizeof e.msg, "%s", gw_mig_receiver_error(rx));
                break;
            }
            d->running = true;
            /* The source hangs up after RUNNING: that must not surface as an error. */
            for (int i = 0; i < 10000 && !__atomic_load_n(&d->src_closed, __ATOMIC_ACQUIRE); i++) usleep(1000);
            d->after_running = gw_mig_receiver_next(rx, &ev, 300);
            break;
        }
    }
    gw_mig_receiver_stats(rx, &d->st);
out:
    snprintf(d->err, sizeof d->err, "%s", e.msg);
    gw_mig_receiver_close(rx);
    __atomic_store_n(&d->done, true, __ATOMIC_RELEASE);
    return NULL;
}

/* Starts a destination set up as tmpl (its options; results cleared). */
static int start_dest_as(struct dest *d, pthread_t *th, const struct dest *tmpl)
{
    *d = *tmpl;
    if (gw_listen("tcp:127.0.0.1:0", &d->l, NULL)) return -1;
    return pthread_create(th, NULL, dest_main, d);
}

static int start_dest(struct dest *d, pthread_t *th, const char *secret, bool handoff, enum dest_mode mode)
{
    struct dest t = { .secret = secret, .handoff = handoff, .mode = mode };
    return start_dest_as(d, th, &t);
}

static void finish_dest(struct dest *d, pthread_t th)
{
    pthread_join(th, NULL);
    gw_listener_close(d->l);
}

static void migrate(unsigned nstreams, uint64_t mem_size, enum gw_codec_mode mode, bool handoff)
{
    uint64_t npages = mem_size / PG;
    uint8_t *mem = malloc(mem_size);
    uint64_t *pfns = malloc(npages * sizeof *pfns);
    REQUIRE(mem && pfns);
    for (uint64_t i = 0; i < npages; i++) fill_page(mem + i * PG, (int)(rnd() % 3));
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, handoff, DM_NORMAL) == 0);
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
    gw_digest_mem(mem, mem_size, &dg);
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

GW_TEST(migrate_64mib_one_stream) { migrate(1, 64 * GW_MIB, GW_CODEC_LZ4, false); }
GW_TEST(migrate_64mib_four_streams) { migrate(4, 64 * GW_MIB, GW_CODEC_AUTO, false); }
GW_TEST(migrate_16mib_three_streams_raw_handoff) { migrate(3, 16 * GW_MIB, GW_CODEC_NONE, true); }

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

/* A hand-driven source: one authenticated stream idx of an nstreams session. */
static struct gw_conn *fake_stream(const char *url, uint64_t mem_size, unsigned nstreams, unsigned idx)
{
    struct gw_conn *c;
    if (gw_conn_connect(url, 5000, &c, NULL)) return NULL;
    uint8_t sid[GW_WIRE_SESSION_ID_SIZE] = {1};
    Godwit__V1__MigHello h = GODWIT__V1__MIG_HELLO__INIT;
    h.session_id.data = sid; h.session_id.len = sizeof sid;
    h.nstreams = nstreams; h.stream_index = idx; h.mem_size = mem_size;
    struct gw_hs_params p = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET), .features = GW_WIRE_F_LZ4 };
    uint64_t f;
    if (gw_hs_source(c, &p, &h, &f, NULL)) { gw_conn_close(c); return NULL; }
    return c;
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
    gw_digest_mem(mem, 16 * PG, &dg);
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
 * streams. The clock runs from the first queued page until the destination reports the
 * round complete, i.e. every page is in the destination's memory. */
static void bench_one(uint8_t *mem, uint64_t mem_size, unsigned nstreams, enum gw_codec_mode mode)
{
    uint64_t npages = mem_size / PG;
    uint64_t *pfns = malloc(npages * sizeof *pfns);
    REQUIRE(pfns);
    for (uint64_t i = 0; i < npages; i++) pfns[i] = i;
    struct dest d;
    pthread_t th;
    REQUIRE(start_dest(&d, &th, SECRET, false, DM_BENCH) == 0);
    struct gw_mig_sender_cfg cfg = {
        .url = d.l->url, .nstreams = nstreams, .secret = (const uint8_t *)SECRET,
        .secret_len = strlen(SECRET), .mem = mem, .mem_size = mem_size, .codec = mode,
        .timeout_ms = 20000,
    };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    int r = gw_mig_sender_open(&cfg, &s, &e);
    CHECK_EQ(r, 0);
    if (!r) {
        /* Wait until the destination's memory is allocated and its threads run. */
        while (!__atomic_load_n(&d.started, __ATOMIC_ACQUIRE) && !__atomic_load_n(&d.done, __ATOMIC_ACQUIRE))
            usleep(1000);
        uint64_t t0 = gw_now_ns();
        CHECK_EQ(gw_mig_send_pages(s, pfns, npages), 0);
        struct gw_mig_stats st;
        CHECK_EQ(gw_mig_send_end_of_round(s, 0, true, &st), 0);
        uint64_t t_sent = gw_now_ns();
        CHECK_EQ(gw_mig_send_commit(s, 1), 0);
        CHECK_EQ(gw_mig_sender_wait_ack(s, 20000), 0);
        CHECK_EQ(gw_mig_send_go(s), 0);
        CHECK_EQ(gw_mig_sender_wait_running(s, 20000), 0);
        double sec = (double)(d.t_round - t0) / 1e9;
        printf("  bench %s %u stream(s): %.0f MiB/s (%.3f s; source done after %.3f s; pages raw/zero/lz4 %llu/%llu/%llu)\n",
               mode == GW_CODEC_NONE ? "none" : mode == GW_CODEC_LZ4 ? "lz4 " : "auto", nstreams,
               (double)mem_size / (1 << 20) / sec, sec, (double)(t_sent - t0) / 1e9,
               (unsigned long long)st.codec.pages[0], (unsigned long long)st.codec.pages[1],
               (unsigned long long)st.codec.pages[2]);
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
}

GW_TEST(bench_512mib_random)
{
    const char *on = getenv("GODWIT_TRANSPORT_BENCH");
    if (!on || strcmp(on, "1")) { gw_test_skip("set GODWIT_TRANSPORT_BENCH=1 to run"); return; }
    uint64_t mem_size = 512 * GW_MIB;
    uint8_t *mem = malloc(mem_size);
    REQUIRE(mem);
    for (uint64_t i = 0; i < mem_size / PG; i++) fill_page(mem + i * PG, 0);
    const char *streams = getenv("GODWIT_TRANSPORT_BENCH_STREAMS");
    unsigned list[] = { 1, 2, 4 };
    for (unsigned k = 0; k < 3; k++) {
        if (streams && !strchr(streams, '0' + (int)list[k])) continue;
        bench_one(mem, mem_size, list[k], GW_CODEC_AUTO);
    }
    free(mem);
}

/* ---- two-phase commit ---- */

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
