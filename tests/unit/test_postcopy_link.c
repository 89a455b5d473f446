/* Unit tests for the post-copy page traffic (postcopy/pc_server.c, pc_client.c,
 * uffd_placer.c) over a real loopback session and real userfaultfd memory:
 *   - reader threads on the destination touch pages that have not arrived: each blocks in
 *     the kernel until its page is requested on the priority channel and placed; at the end
 *     memory equals the source's, the digest sums agree, no page arrived twice;
 *   - hostile requests (out of range, malformed, a flood, after PUSH_DONE) are refused and
 *     counted, and the server goes on;
 *   - a run of pages placed at once (instant restore) skips pages already there.
 *   - a link broken mid-push is resumed on a new session (only what is missing crosses, lost
 *     requests are asked again), and a resume without the migration's key is refused. */
#include "engine/codec/wire.h"
#include "engine/common/util.h"
#include "postcopy/pc_client.h"
#include "postcopy/pc_digest.h"
#include "postcopy/pc_resume.h"
#include "postcopy/pc_server.h"
#include "postcopy/pc_wire.h"
#include "postcopy/uffd_placer.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096u
#define NPAGES 8192u             /* 32 MiB */
#define LANES 2u
#define SECRET "s3cret-cluster-key-for-postcopy"

static uint8_t *memfd_map(uint64_t size)
{
    int fd = memfd_create("gw-test-pc", MFD_CLOEXEC);
    if (fd < 0) return NULL;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) == 0) p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

struct acc {
    struct gw_listener *l;
    struct gw_session *s;
    int r;
    struct gw_err e;
};

static void *accept_main(void *arg)
{
    struct acc *a = arg;
    struct gw_session_cfg c = {.secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
                               .features = GW_WIRE_F_ALL, .timeout_ms = 10000};
    a->r = gw_session_accept(a->l, &c, &a->s, &a->e);
    return NULL;
}

/* A connected session pair: *src, *dst with 2 + LANES streams. */
static int session_pair(struct gw_session **src, struct gw_session **dst, int timeout_ms)
{
    struct acc a = {0};
    struct gw_err e = {0};
    if (gw_listen("tcp:127.0.0.1:0", &a.l, &e)) return -1;
    pthread_t th;
    pthread_create(&th, NULL, accept_main, &a);
    struct gw_session_cfg c = {.url = a.l->url, .nstreams = GW_PC_FIRST_LANE + LANES,
                               .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
                               .mem_size = (uint64_t)NPAGES * PG, .features = GW_WIRE_F_LZ4 | GW_WIRE_F_POSTCOPY,
                               .timeout_ms = timeout_ms};
    int r = gw_session_connect(&c, src, &e);
    pthread_join(th, NULL);
    gw_listener_close(a.l);
    if (r || a.r) { gw_session_close(*src); gw_session_close(a.s); return -1; }
    if (!(gw_session_features(*src, 0) & GW_WIRE_F_POSTCOPY)) return -1;
    *dst = a.s;
    return 0;
}

/* Source memory: pages 0..3/4 hold data (random, text, zero mixed), the rest are holes. */
static uint8_t *source_mem(uint64_t *push)
{
    uint8_t *m = memfd_map((uint64_t)NPAGES * PG);
    if (!m) return NULL;
    uint64_t x = 88172645463325252ull;
    for (uint64_t p = 0; p < NPAGES * 3 / 4; p++) {
        push[p / 64] |= 1ull << (p % 64);
        if (p % 7 == 3) continue;                          /* data range, zero content */
        for (unsigned i = 0; i < PG; i += 8) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint64_t v = p % 5 == 0 ? 0x2065726f6d206f4cull + (i / 64) : x;
            memcpy(m + p * PG + i, &v, 8);
        }
    }
    return m;
}

static uint64_t source_sum(const uint8_t *m)
{
    uint64_t s = 0;
    for (uint64_t p = 0; p < NPAGES; p++) s += gw_pc_page_hash(p, p < NPAGES * 3 / 4 ? m + p * PG : NULL);
    return s;
}

struct toucher {
    const uint8_t *dst, *src;
    unsigned seed;
    uint64_t bad;
};

/* A "vCPU": reads pages in a random order through the registered mapping (each read of a
 * missing page blocks until it is placed) and compares them with the source. */
static void *touch_main(void *arg)
{
    struct toucher *t = arg;
    for (int i = 0; i < 300; i++) {
        uint64_t p = (uint64_t)rand_r(&t->seed) % NPAGES;
        if (memcmp(t->dst + p * PG, t->src + p * PG, PG)) t->bad++;
    }
    return NULL;
}

/* precopy: hybrid. Pages 0..NPAGES/2 go first as pre-copy while the "guest" still runs at
 * the source and changes every 5th of them; the switch names those and every page not yet
 * sent as dirty. */
static void run_migration(bool precopy, bool stale_early)
{
    uint64_t *push = calloc(NPAGES / 64, 8);
    uint64_t *dirty = calloc(NPAGES / 64, 8);
    uint8_t *src = source_mem(push);
    uint8_t *dst = memfd_map((uint64_t)NPAGES * PG);
    REQUIRE(src && dst && dirty);
    struct gw_session *ss, *ds;
    REQUIRE(session_pair(&ss, &ds, 10000) == 0);
    struct gw_err e = {0};
    struct gw_pc_client *c;
    REQUIRE(gw_pc_client_start(ds, dst, (uint64_t)NPAGES * PG, LANES, &c, &e) == 0);
    struct gw_pc_server *s;
    struct gw_pc_server_cfg sc = {.ses = ss, .mem = src, .mem_size = (uint64_t)NPAGES * PG,
                                  .nlanes = LANES, .codec = GW_CODEC_AUTO};
    REQUIRE(gw_pc_server_open(&sc, &s, &e) == 0);
    memcpy(dirty, push, NPAGES / 8);
    if (precopy) {
        uint64_t pf[256];
        for (uint64_t p0 = 0; p0 < NPAGES / 2; p0 += 256) {
            for (unsigned i = 0; i < 256; i++) pf[i] = p0 + i;
            CHECK_EQ(gw_pc_server_precopy(s, pf, 256, &e), 0);
        }
        CHECK_EQ(gw_pc_server_precopy_end(s, &e), 0);
        /* After pre-copy, the guest wrote every 5th page of the first half: stale there. */
        for (uint64_t p = 0; p < NPAGES / 2; p++) {
            if (p % 5 == 0) src[p * PG + 100] ^= 0x5a;
            else dirty[p / 64] &= ~(1ull << (p % 64));
        }
    } else {
        CHECK_EQ(gw_pc_server_precopy_end(s, &e), 0);
    }
    if (stale_early) {
        /* STALE before the pause (PRECOPY_END went already): it waits for the lanes, drops the
         * stale pages the destination holds, and a second one finds nothing left to drop; the
         * switch's DIRTY (the same pages) then leaves no stale copy. */
        CHECK_EQ(gw_pc_client_drop_stale(c, dirty, NPAGES - 64, 10000, &e), -EPROTO);
        uint64_t nstale = 0;
        for (unsigned w = 0; w < NPAGES / 64; w++) nstale += (uint64_t)__builtin_popcountll(dirty[w]);
        int64_t dropped = gw_pc_client_drop_stale(c, dirty, NPAGES, 10000, &e);
        CHECK(dropped > 0 && (uint64_t)dropped <= nstale);
        CHECK_EQ(gw_pc_client_drop_stale(c, dirty, NPAGES, 10000, &e), 0);
    }
    int r = gw_pc_client_switch(c, dirty, NPAGES, 10000, &e);
    if (r == -EPERM || r == -ENOSYS) { gw_test_skip("no userfaultfd"); return; }
    REQUIRE(r == 0);
    /* The guest starts before any post-copy page is pushed: its first touches are requests. */
    struct toucher t[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        t[i] = (struct toucher){.dst = dst, .src = src, .seed = 7u + (unsigned)i};
        pthread_create(&th[i], NULL, touch_main, &t[i]);
    }
    usleep(20000);
    REQUIRE(gw_pc_server_run(s, dirty, &e) == 0);
    r = gw_pc_client_wait(c, 20000, &e);
    CHECK_EQ(r, 0);
    /* Unregistering wakes readers of pages the source never sent (holes: zero). */
    uint64_t sum = 0;
    CHECK_EQ(gw_pc_client_finish(c, &sum), 0);
    for (int i = 0; i < 3; i++) { pthread_join(th[i], NULL); CHECK_EQ(t[i].bad, 0); }
    CHECK(sum == source_sum(src));
    CHECK(memcmp(dst, src, (size_t)NPAGES * PG) == 0);
    struct gw_pc_client_stats cst;
    gw_pc_client_stats(c, &cst);
    struct gw_pc_server_stats sst;
    gw_pc_server_stats(s, &sst);
    CHECK(cst.pages_requested > 0);
    CHECK(cst.lat_p50_us > 0);
    if (getenv("GW_TEST_VERBOSE"))
        fprintf(stderr, "requested %llu p50 %llu p99 %llu max %llu us, answered %llu in flight %llu\n",
                (unsigned long long)cst.pages_requested, (unsigned long long)cst.lat_p50_us,
                (unsigned long long)cst.lat_p99_us, (unsigned long long)cst.lat_max_us,
                (unsigned long long)sst.pages_answered, (unsigned long long)sst.pages_in_flight);
    CHECK_EQ(cst.pages_dup, 0);                    /* no page arrived twice */
    CHECK_EQ(sst.error, 0);
    CHECK(sst.push_done);
    uint64_t ndirty = 0;
    for (unsigned w = 0; w < NPAGES / 64; w++) ndirty += (uint64_t)__builtin_popcountll(dirty[w]);
    /* Every dirty page went once after the switch; requests may add holes (zero markers). */
    CHECK(sst.pages_answered + sst.pages_pushed >= ndirty);
    CHECK(sst.pages_answered + sst.pages_pushed <= ndirty + cst.pages_requested);
    CHECK(sst.pages_answered > 0);
    gw_session_shutdown(ss);
    gw_session_shutdown(ds);
    gw_pc_server_close(s);
    gw_pc_client_close(c, false);
    gw_session_close(ss);
    gw_session_close(ds);
    munmap(src, (size_t)NPAGES * PG);
    munmap(dst, (size_t)NPAGES * PG);
    free(push);
    free(dirty);
}

GW_TEST(postcopy_pages_requested_and_pushed) { run_migration(false, false); }
GW_TEST(hybrid_precopy_then_postcopy) { run_migration(true, false); }
GW_TEST(hybrid_stale_pages_dropped_before_the_switch) { run_migration(true, true); }

static int send_req(struct gw_session *ds, uint32_t count, const uint64_t *pfns, size_t extra)
{
    uint8_t b[GW_PC_HDR + 8 * 70];
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_REQUEST, .count = count}, b);
    for (uint32_t i = 0; i < count && i < 70; i++) gw_pc_put64(b + GW_PC_HDR + 8 * i, pfns[i]);
    size_t n = GW_PC_HDR + 8ull * (count < 70 ? count : 70) + extra;
    struct gw_err e;
    return gw_session_send(ds, GW_PC_STREAM_PRIORITY, GW_WIRE_POSTCOPY, b, n, &e);
}

GW_TEST(postcopy_hostile_requests_refused)
{
    uint64_t *push = calloc(NPAGES / 64, 8);
    uint8_t *src = source_mem(push);
    REQUIRE(src);
    /* Nothing to push until the end of the test: requests are the only traffic. Push one
     * page so PUSH_DONE comes only after the pump ran. */
    memset(push, 0, NPAGES / 8);
    struct gw_session *ss, *ds;
    REQUIRE(session_pair(&ss, &ds, 10000) == 0);
    struct gw_err e = {0};
    /* Hostile requests are queued before the server starts: it reads them in order. */
    uint64_t big[2] = {NPAGES, UINT64_MAX};
    CHECK_EQ(send_req(ds, 2, big, 0), 0);                  /* out of range: refused x2 */
    uint64_t one = 5;
    CHECK_EQ(send_req(ds, 1, &one, 8), 0);                  /* wrong length: refused */
    uint64_t many[70] = {0};
    CHECK_EQ(send_req(ds, 65, many, 0), 0);                 /* too many pfns: refused */
    CHECK_EQ(send_req(ds, 0, many, 0), 0);                  /* none: refused */
    for (int i = 0; i < 2000; i++) CHECK_EQ(send_req(ds, 1, &one, 0), 0);   /* a flood */
    struct gw_pc_server *s;
    struct gw_pc_server_cfg sc = {.ses = ss, .mem = src, .mem_size = (uint64_t)NPAGES * PG, .push = push,
                                  .nlanes = LANES, .codec = GW_CODEC_NONE};
    REQUIRE(gw_pc_server_start(&sc, &s, &e) == 0);
    /* Read the priority channel as a destination would: one answer (page 5), then PUSH_DONE. */
    struct gw_conn *pc = gw_session_conn(ds, GW_PC_STREAM_PRIORITY);
    struct gw_rbuf buf = {0};
    struct gw_wire_header h;
    int batches = 0, done = 0;
    while (!done && gw_conn_recv_record(pc, &h, &buf, &e) == 0) {
        if (h.type == GW_WIRE_PAGE_BATCH) batches++;
        if (h.type == GW_WIRE_POSTCOPY) done = 1;
    }
    CHECK_EQ(done, 1);
    CHECK(batches <= 1);                  /* the flood's page went at most once */
    /* After PUSH_DONE: refused. */
    CHECK_EQ(send_req(ds, 1, &one, 0), 0);
    for (int i = 0; i < 100; i++) {
        struct gw_pc_server_stats st;
        gw_pc_server_stats(s, &st);
        if (st.refused + st.pages_answered + st.pages_in_flight >= 2006) break;
        usleep(10000);
    }
    struct gw_pc_server_stats st;
    gw_pc_server_stats(s, &st);
    CHECK_EQ(st.error, 0);                /* the server went on */
    /* Every page named is accounted for: answered once, in flight, or refused (out of range
     * 2, wrong length 1, too many 1, none 1, after PUSH_DONE 1, and whatever of the flood of
     * 2000 came after it: the push has nothing to send and may finish first). */
    CHECK_EQ(st.refused + st.pages_answered + st.pages_in_flight, 2006);
    CHECK(st.refused >= 6);
    CHECK_EQ(st.pages_answered, (uint64_t)batches);
    CHECK_EQ(st.pages_pushed, 0);
    gw_rbuf_free(&buf);
    gw_session_shutdown(ss);
    gw_session_shutdown(ds);
    gw_pc_server_close(s);
    gw_session_close(ss);
    gw_session_close(ds);
    munmap(src, (size_t)NPAGES * PG);
    free(push);
}

/* Reads a lane until LANE_END; returns the pages its batches carried (or -1). */
struct lane_reader { struct gw_session *ds; unsigned stream; long pages; };
static void *lane_reader_main(void *arg)
{
    struct lane_reader *lr = arg;
    struct gw_conn *c = gw_session_conn(lr->ds, lr->stream);
    struct gw_rbuf buf = {0};
    struct gw_wire_header h;
    struct gw_err e = {0};
    lr->pages = 0;
    while (gw_conn_recv_record(c, &h, &buf, &e) == 0) {
        struct gw_pc_msg m;
        if (h.type == GW_WIRE_POSTCOPY && !gw_pc_parse(buf.data, h.length, &m) && m.op == GW_PC_LANE_END) break;
        uint32_t n;
        if (h.type == GW_WIRE_PAGE_BATCH && h.length >= GW_PAGE_BATCH_HDR && !gw_page_batch_header(buf.data, &n))
            lr->pages += n;
    }
    gw_rbuf_free(&buf);
    return NULL;
}

/* The switchover: the push waits until GO (nothing bulky shares the link with the state and
 * GO) while requests are answered; released, it sends every other page once, and the
 * request's page is never pushed again. */
GW_TEST(push_held_until_go_requests_answered_meanwhile)
{
    uint64_t *push = calloc(NPAGES / 64, 8);
    uint8_t *src = source_mem(push);
    REQUIRE(src);
    struct gw_session *ss, *ds;
    REQUIRE(session_pair(&ss, &ds, 10000) == 0);
    struct gw_err e = {0};
    struct gw_pc_server *s;
    struct gw_pc_server_cfg sc = {.ses = ss, .mem = src, .mem_size = (uint64_t)NPAGES * PG, .nlanes = LANES,
                                  .codec = GW_CODEC_NONE};
    REQUIRE(gw_pc_server_open(&sc, &s, &e) == 0);
    REQUIRE(gw_pc_server_precopy_end(s, &e) == 0);
    /* Each lane says PRECOPY_END first. */
    for (unsigned i = 0; i < LANES; i++) {
        struct gw_rbuf b = {0};
        struct gw_wire_header h;
        REQUIRE(gw_conn_recv_record(gw_session_conn(ds, GW_PC_FIRST_LANE + i), &h, &b, &e) == 0);
        CHECK_EQ(h.type, GW_WIRE_POSTCOPY);
        gw_rbuf_free(&b);
    }
    gw_pc_server_hold_push(s);
    REQUIRE(gw_pc_server_run(s, push, &e) == 0);
    uint64_t want = 100;
    CHECK_EQ(send_req(ds, 1, &want, 0), 0);
    struct gw_conn *pc = gw_session_conn(ds, GW_PC_STREAM_PRIORITY);
    struct gw_rbuf buf = {0};
    struct gw_wire_header h;
    REQUIRE(gw_conn_recv_record(pc, &h, &buf, &e) == 0);
    CHECK_EQ(h.type, GW_WIRE_PAGE_BATCH);
    usleep(50000);
    struct gw_pc_server_stats st;
    gw_pc_server_stats(s, &st);
    CHECK_EQ(st.pages_answered, 1);
    CHECK_EQ(st.pages_pushed, 0);              /* held: nothing on the lanes yet */
    struct lane_reader lr[LANES];
    pthread_t thr[LANES];
    for (unsigned i = 0; i < LANES; i++) {
        lr[i] = (struct lane_reader){.ds = ds, .stream = GW_PC_FIRST_LANE + i};
        REQUIRE(pthread_create(&thr[i], NULL, lane_reader_main, &lr[i]) == 0);
    }
    gw_pc_server_release_push(s);
    int done = 0;
    while (!done && gw_conn_recv_record(pc, &h, &buf, &e) == 0)
        if (h.type == GW_WIRE_POSTCOPY) done = 1;
    CHECK_EQ(done, 1);
    long lane_pages = 0;
    for (unsigned i = 0; i < LANES; i++) {
        pthread_join(thr[i], NULL);
        lane_pages += lr[i].pages;
    }
    gw_pc_server_stats(s, &st);
    uint64_t total = 0;
    for (unsigned w = 0; w < NPAGES / 64; w++) total += (uint64_t)__builtin_popcountll(push[w]);
    CHECK_EQ(st.pages_pushed, total - 1);      /* every page but the answered one */
    CHECK_EQ((uint64_t)lane_pages, total - 1);
    CHECK_EQ(st.pages_answered, 1);
    gw_rbuf_free(&buf);
    gw_session_shutdown(ss);
    gw_session_shutdown(ds);
    gw_pc_server_close(s);
    gw_session_close(ss);
    gw_session_close(ds);
    munmap(src, (size_t)NPAGES * PG);
    free(push);
}

/* ---- an abandoned post-copy: missing pages are poisoned, never read as zero ---- */

static __thread sigjmp_buf bus_jmp;
static __thread volatile int bus_armed;

static void on_sigbus(int sig)
{
    (void)sig;
    if (bus_armed) siglongjmp(bus_jmp, 1);
    abort();
}

struct poisoned_reader {
    const volatile uint8_t *page;
    int got_bus;
    int value;
};

static void *read_missing(void *arg)
{
    struct poisoned_reader *pr = arg;
    bus_armed = 1;
    if (sigsetjmp(bus_jmp, 1)) { pr->got_bus = 1; return NULL; }
    pr->value = pr->page[17];     /* blocks: the page is missing */
    return NULL;
}

GW_TEST(abandoned_postcopy_poisons_missing_pages)
{
    uint8_t *mem = memfd_map(64 * PG);
    REQUIRE(mem);
    struct gw_uffd_placer u;
    struct gw_err e = {0};
    int r = gw_uffd_placer_open(&u, mem, 64 * PG, &e);
    if (r == -EPERM || r == -ENOSYS) { gw_test_skip("no userfaultfd"); return; }
    REQUIRE(r == 0);
    if (!u.can_poison) { gw_uffd_placer_close(&u); gw_test_skip("no UFFDIO_POISON"); return; }
    struct gw_page_placer pl = gw_uffd_placer(&u);
    uint8_t page[PG];
    memset(page, 0xab, sizeof page);
    CHECK_EQ(pl.ops->copy(pl.ctx, 3, page), 0);
    CHECK_EQ(pl.ops->copy(pl.ctx, 3, page), 0);          /* a second copy is refused, counted */
    CHECK_EQ(u.dups, 1);
    struct sigaction sa = {.sa_handler = on_sigbus}, old;
    sigaction(SIGBUS, &sa, &old);
    struct poisoned_reader pr = {.page = mem + 9 * PG, .value = -1};
    pthread_t th;
    pthread_create(&th, NULL, read_missing, &pr);
    usleep(50000);                  /* the reader now waits in the kernel */
    CHECK_EQ(gw_uffd_placer_poison_missing(&u), 0);
    pthread_join(th, NULL);
    CHECK_EQ(pr.got_bus, 1);        /* woken, and it read nothing */
    CHECK_EQ(pr.value, -1);
    CHECK_EQ(mem[3 * PG + 5], 0xab);     /* the placed page is intact */
    sigaction(SIGBUS, &old, NULL);
    gw_uffd_placer_close(&u);
    munmap(mem, 64 * PG);
}

/* gw_uffd_placer_place_run, as instant restore places a whole chunk: pages already there are
 * skipped (never overwritten, counted), the others placed in runs; zero runs too. */
GW_TEST(place_run_skips_present_pages)
{
    uint8_t *mem = memfd_map(64 * PG);
    REQUIRE(mem);
    struct gw_uffd_placer u;
    struct gw_err e = {0};
    int r = gw_uffd_placer_open(&u, mem, 64 * PG, &e);
    if (r == -EPERM || r == -ENOSYS) { gw_test_skip("no userfaultfd"); return; }
    REQUIRE(r == 0);
    struct gw_page_placer pl = gw_uffd_placer(&u);
    uint8_t page[PG], *chunk = malloc(16 * PG);
    REQUIRE(chunk);
    memset(page, 0xee, sizeof page);
    for (unsigned i = 0; i < 16; i++) memset(chunk + i * PG, 0x10 + i, PG);
    CHECK_EQ(pl.ops->copy(pl.ctx, 5, page), 0);     /* already there: a fault placed it */
    CHECK_EQ(pl.ops->copy(pl.ctx, 6, page), 0);
    CHECK_EQ(pl.ops->copy(pl.ctx, 15, page), 0);
    CHECK_EQ(gw_uffd_placer_place_run(&u, 0, 16, chunk), 0);
    CHECK_EQ(gw_uffd_placer_count(&u), 16);
    for (unsigned i = 0; i < 16; i++) {
        CHECK(gw_uffd_placer_has(&u, i));
        uint8_t want = (i == 5 || i == 6 || i == 15) ? 0xee : (uint8_t)(0x10 + i);
        CHECK_EQ(mem[i * PG + 100], want);
    }
    /* The bitmap skips placed pages; a page the kernel has but the bitmap does not (placed
     * behind its back) is refused with EEXIST and skipped, the run going on after it. */
    struct uffdio_copy c = {.dst = (uintptr_t)(mem + 20 * PG), .src = (uintptr_t)page, .len = PG};
    CHECK_EQ(ioctl(u.uffd, UFFDIO_COPY, &c), 0);
    CHECK_EQ(gw_uffd_placer_place_run(&u, 16, 16, NULL), 0);   /* zero pages */
    CHECK_EQ(u.dups, 1);
    CHECK_EQ(mem[20 * PG], 0xee);
    CHECK_EQ(mem[21 * PG], 0);
    CHECK_EQ(gw_uffd_placer_count(&u), 31);
    CHECK_EQ(gw_uffd_placer_unregister(&u), 0);
    free(chunk);
    gw_uffd_placer_close(&u);
    munmap(mem, 64 * PG);
}

/* ---- recovery after a broken link (postcopy/pc_resume.h) ---- */

struct resume_dst {
    struct gw_session *s;
    const uint8_t *key;
    struct gw_pc_client *c;   /* NULL: only the exchange */
    int r;
    struct gw_err e;
};

/* The destination's side of a resume: the exchange, then RECEIVED. */
static void *resume_dst_main(void *arg)
{
    struct resume_dst *d = arg;
    struct gw_rbuf b = {0};
    d->r = gw_pc_resume_destination(d->s, d->key, &b, &d->e);
    if (!d->r && d->c) {
        uint64_t np;
        const uint64_t *rcv = gw_pc_client_received(d->c, &np);
        d->r = gw_pc_send_bitmap(d->s, GW_PC_RECEIVED, rcv, np, &d->e);
    }
    gw_rbuf_free(&b);
    return NULL;
}

/* A destination that does not hold K: challenges, ignores the proof, answers a made-up proof
 * and a RECEIVED that claims every page. */
static void *fake_dst_main(void *arg)
{
    struct resume_dst *d = arg;
    struct gw_rbuf b = {0};
    uint8_t rec[GW_PC_HDR + GW_PC_PROOF_SIZE] = {0};
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_RESUME_CHALLENGE, .a = 7, .b = 9}, rec);
    struct gw_wire_header h;
    uint64_t all[NPAGES / 64];
    memset(all, 0xff, sizeof all);
    if (!gw_session_send(d->s, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, rec, GW_PC_HDR, &d->e) &&
        !gw_conn_recv_record(gw_session_conn(d->s, GW_PC_STREAM_CONTROL), &h, &b, &d->e)) {
        gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_RESUME_PROOF}, rec);
        memset(rec + GW_PC_HDR, 0x17, GW_PC_PROOF_SIZE);
        gw_session_send(d->s, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, rec, sizeof rec, &d->e);
        gw_pc_send_bitmap(d->s, GW_PC_RECEIVED, all, NPAGES, &d->e);
    }
    gw_rbuf_free(&b);
    return NULL;
}

/* The link breaks in the middle of the background push while "vCPUs" wait for pages: the
 * destination keeps what it placed, a new session proves it belongs to the migration, the
 * source sends only what the destination lacks, requests lost with the link are asked
 * again, and memory ends equal with no page placed twice. */
GW_TEST(postcopy_resumed_after_broken_link)
{
    uint64_t *push = calloc(NPAGES / 64, 8), *cur = calloc(NPAGES / 64, 8), *rcv = calloc(NPAGES / 64, 8);
    uint8_t *src = source_mem(push);
    uint8_t *dst = memfd_map((uint64_t)NPAGES * PG);
    REQUIRE(src && dst && cur && rcv);
    struct gw_session *ss, *ds;
    REQUIRE(session_pair(&ss, &ds, 10000) == 0);
    uint8_t ks[GW_PC_RESUME_KEY_SIZE], kd[GW_PC_RESUME_KEY_SIZE], token[32] = {0};
    REQUIRE(gw_pc_resume_key((const uint8_t *)SECRET, strlen(SECRET), ss, token, ks) == 0);
    REQUIRE(gw_pc_resume_key((const uint8_t *)SECRET, strlen(SECRET), ds, token, kd) == 0);
    CHECK(memcmp(ks, kd, sizeof ks) == 0);             /* both ends hold K, which never crossed */
    struct gw_err e = {0};
    struct gw_pc_client *c;
    REQUIRE(gw_pc_client_start(ds, dst, (uint64_t)NPAGES * PG, LANES, &c, &e) == 0);
    struct gw_pc_server *s;
    /* A slow push (24 MiB at 16 MiB/s): the break comes in its middle. */
    struct gw_pc_server_cfg sc = {.ses = ss, .mem = src, .mem_size = (uint64_t)NPAGES * PG, .nlanes = LANES,
                                  .codec = GW_CODEC_AUTO, .rate_bps = 16u << 20};
    REQUIRE(gw_pc_server_open(&sc, &s, &e) == 0);
    CHECK_EQ(gw_pc_server_precopy_end(s, &e), 0);
    int r = gw_pc_client_switch(c, push, NPAGES, 10000, &e);
    if (r == -EPERM || r == -ENOSYS) { gw_test_skip("no userfaultfd"); return; }
    REQUIRE(r == 0);
    REQUIRE(gw_pc_server_run(s, push, &e) == 0);
    usleep(300000);
    /* The link breaks: every stream of the session fails at once. */
    gw_session_shutdown(ss);
    gw_session_shutdown(ds);
    CHECK(gw_pc_client_wait(c, 10000, &e) < 0);
    gw_pc_server_close(s);
    gw_pc_client_detach(c);
    /* vCPUs touch pages now: their requests go nowhere until the resume asks again. */
    struct toucher t[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        t[i] = (struct toucher){.dst = dst, .src = src, .seed = 99u + (unsigned)i};
        pthread_create(&th[i], NULL, touch_main, &t[i]);
    }
    usleep(50000);
    struct gw_session *ss2, *ds2;
    REQUIRE(session_pair(&ss2, &ds2, 10000) == 0);
    struct resume_dst d = {.s = ds2, .key = kd, .c = c};
    pthread_t dth;
    pthread_create(&dth, NULL, resume_dst_main, &d);
    struct gw_rbuf b = {0};
    CHECK_EQ(gw_pc_resume_source(ss2, ks, NPAGES, rcv, &b, &e), 0);
    pthread_join(dth, NULL);
    CHECK_EQ(d.r, 0);
    uint64_t held = 0, want = 0;
    for (unsigned w = 0; w < NPAGES / 64; w++) {
        cur[w] = push[w] & ~rcv[w];
        held += (uint64_t)__builtin_popcountll(rcv[w]);
        want += (uint64_t)__builtin_popcountll(cur[w]);
    }
    CHECK(held > 0 && want > 0);                       /* broken in the middle indeed */
    sc.ses = ss2;
    sc.rate_bps = 0;
    REQUIRE(gw_pc_server_open(&sc, &s, &e) == 0);
    REQUIRE(gw_pc_server_run(s, cur, &e) == 0);
    CHECK_EQ(gw_pc_client_attach(c, ds2, &e), 0);
    CHECK_EQ(gw_pc_client_wait(c, 20000, &e), 0);
    uint64_t sum = 0;
    CHECK_EQ(gw_pc_client_finish(c, &sum), 0);
    for (int i = 0; i < 3; i++) { pthread_join(th[i], NULL); CHECK_EQ(t[i].bad, 0); }
    CHECK(sum == source_sum(src));
    CHECK(memcmp(dst, src, (size_t)NPAGES * PG) == 0);
    struct gw_pc_client_stats cst;
    gw_pc_client_stats(c, &cst);
    struct gw_pc_server_stats sst;
    gw_pc_server_stats(s, &sst);
    CHECK_EQ(cst.pages_dup, 0);                        /* nothing the destination held came again */
    CHECK(sst.pages_answered + sst.pages_pushed >= want);
    CHECK(sst.pages_pushed <= want);
    gw_session_shutdown(ss2);
    gw_session_shutdown(ds2);
    gw_pc_server_close(s);
    gw_pc_client_close(c, false);
    gw_rbuf_free(&b);
    gw_session_close(ss);
    gw_session_close(ds);
    gw_session_close(ss2);
    gw_session_close(ds2);
    munmap(src, (size_t)NPAGES * PG);
    munmap(dst, (size_t)NPAGES * PG);
    free(push);
    free(cur);
    free(rcv);
}

/* A resume from someone who does not hold K (another cluster member: it passed the session
 * handshake) is refused and learns nothing; a destination that does not hold K is not
 * believed; a proof recorded from one exchange does not answer another's challenge. */
GW_TEST(resume_refused_without_the_session_key)
{
    struct gw_session *ss, *ds;
    REQUIRE(session_pair(&ss, &ds, 5000) == 0);
    uint8_t k[GW_PC_RESUME_KEY_SIZE], other[GW_PC_RESUME_KEY_SIZE], token[32] = {0};
    REQUIRE(gw_pc_resume_key((const uint8_t *)SECRET, strlen(SECRET), ss, token, k) == 0);
    struct gw_session *s1, *d1;
    REQUIRE(session_pair(&s1, &d1, 5000) == 0);
    /* The key of another migration (another session id) is another key. */
    REQUIRE(gw_pc_resume_key((const uint8_t *)SECRET, strlen(SECRET), s1, token, other) == 0);
    CHECK(memcmp(k, other, sizeof k) != 0);
    uint64_t rcv[NPAGES / 64];
    struct gw_rbuf b = {0};
    struct gw_err e = {0};
    /* A source with the wrong key: refused. */
    struct resume_dst d = {.s = d1, .key = k};
    pthread_t th;
    pthread_create(&th, NULL, resume_dst_main, &d);
    int r = gw_pc_resume_source(s1, other, NPAGES, rcv, &b, &e);
    pthread_join(th, NULL);
    CHECK_EQ(d.r, -EACCES);
    CHECK(r != 0);
    /* A destination without K that answers anything (and claims every page): not believed. */
    struct gw_session *s2, *d2;
    REQUIRE(session_pair(&s2, &d2, 5000) == 0);
    d = (struct resume_dst){.s = d2};
    pthread_create(&th, NULL, fake_dst_main, &d);
    r = gw_pc_resume_source(s2, k, NPAGES, rcv, &b, &e);
    CHECK_EQ(r, -EACCES);
    gw_session_shutdown(d2);
    pthread_join(th, NULL);
    /* Replay: the source's proof from one exchange against a fresh challenge. */
    struct gw_session *s3, *d3;
    REQUIRE(session_pair(&s3, &d3, 5000) == 0);
    d = (struct resume_dst){.s = d3, .key = k};
    pthread_create(&th, NULL, resume_dst_main, &d);
    struct gw_wire_header h;
    CHECK_EQ(gw_conn_recv_record(gw_session_conn(s3, GW_PC_STREAM_CONTROL), &h, &b, &e), 0);   /* the challenge */
    uint8_t rec[GW_PC_HDR + GW_PC_PROOF_SIZE] = {0};
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_RESUME_PROOF, .a = 1, .b = 2}, rec);
    memset(rec + GW_PC_HDR, 0x42, GW_PC_PROOF_SIZE);    /* whatever an eavesdropper kept */
    CHECK_EQ(gw_session_send(s3, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, rec, sizeof rec, &e), 0);
    pthread_join(th, NULL);
    CHECK_EQ(d.r, -EACCES);
    gw_rbuf_free(&b);
    struct gw_session *all[] = {ss, ds, s1, d1, s2, d2, s3, d3};
    for (unsigned i = 0; i < 8; i++) gw_session_close(all[i]);
}
