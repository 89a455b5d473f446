/* Unit tests for engine/pump: the page pump with a fake sink and a fake placer.
 *
 * Ordering: the test writes a growing version number into pages and queues them again and
 * again, without barriers. The fake sink copies each batch (the "wire") and only then lets
 * the writer change the pages it carried; it hands the copy to the fake placer after a random
 * delay, so a copy that went down the wrong lane would arrive late. The placer checks that
 * the versions of each page only grow and, at the end, that every page holds its last
 * version: a newer copy is never overtaken by an older one. */
#include "engine/codec/page_codec.h"
#include "engine/common/util.h"
#include "engine/pump/page_placer.h"
#include "engine/pump/pump.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG 4096u
#define NPAGES 4096u          /* 16 MiB: 8 partition chunks */
#define LANES 3u

/* ---- fake placer: a destination memory that checks versions ---- */

struct fake_dest {
    pthread_mutex_t mu;
    uint64_t version[NPAGES];   /* last version placed */
    uint64_t placed;
    uint64_t regressions;       /* an older copy arrived after a newer one */
};

static int fake_copy(void *ctx, uint64_t pfn, const uint8_t *src)
{
    struct fake_dest *d = ctx;
    uint64_t v, p;
    memcpy(&v, src, 8);
    memcpy(&p, src + 8, 8);
    pthread_mutex_lock(&d->mu);
    if (p != pfn || v < d->version[pfn]) d->regressions++;
    d->version[pfn] = v;
    d->placed++;
    pthread_mutex_unlock(&d->mu);
    return 0;
}

static int fake_zero(void *ctx, uint64_t pfn)
{
    (void)ctx;
    (void)pfn;
    return -EINVAL;   /* the test never sends zero pages */
}

static const struct gw_page_placer_ops fake_placer_ops = { .copy = fake_copy, .zero = fake_zero };

/* ---- fake sink: copies, releases the pages, then places after a delay ---- */

struct fake_sink {
    struct gw_page_placer placer;
    uint8_t *wire[GW_PUMP_MAX_LANES];          /* one batch per lane */
    uint32_t *busy;                            /* per page: copies queued, not yet read */
    uint64_t barriers[GW_PUMP_MAX_LANES];      /* last barrier tag per lane */
    uint64_t nbarriers;
    uint64_t lane_of_page_errors;              /* a page on a lane other than its own */
    unsigned nlanes;
    uint64_t seed[GW_PUMP_MAX_LANES];
};

static int sink_write(void *ctx, unsigned lane, struct iovec *iov, int iovcnt, size_t len, uint32_t npages,
                      struct gw_err *err)
{
    struct fake_sink *s = ctx;
    uint8_t *w = s->wire[lane];
    size_t off = 0;
    for (int i = 1; i < iovcnt; i++) {
        memcpy(w + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    if (off != len) return gw_err_set(err, -EBADMSG, "iovecs do not add up");
    uint32_t n;
    struct gw_page_desc descs[GW_WIRE_MAX_BATCH_PAGES];
    if (gw_page_batch_header(w, &n) || n != npages ||
        gw_page_batch_descs(w + GW_PAGE_BATCH_HDR, n, len, s->placer.mem_size, descs))
        return gw_err_set(err, -EBADMSG, "bad batch");
    /* The bytes are on the "wire": the writer may change these pages again. */
    for (uint32_t i = 0; i < n; i++) {
        if (gw_pump_lane(descs[i].pfn, s->nlanes) != lane) __atomic_fetch_add(&s->lane_of_page_errors, 1, __ATOMIC_RELAXED);
        __atomic_fetch_sub(&s->busy[descs[i].pfn], 1, __ATOMIC_RELEASE);
    }
    /* A random delay before the "receiver" places them. */
    s->seed[lane] = s->seed[lane] * 6364136223846793005ull + 1442695040888963407ull;
    usleep((useconds_t)((s->seed[lane] >> 33) % 400));
    const uint8_t *data = w + GW_PAGE_BATCH_HDR + (size_t)n * GW_PAGE_DESC_SIZE;
    for (uint32_t i = 0; i < n; i++) {
        int r = descs[i].enc == GW_PAGE_RAW ? s->placer.ops->copy(s->placer.ctx, descs[i].pfn, data)
                                            : s->placer.ops->zero(s->placer.ctx, descs[i].pfn);
        if (r) return gw_err_set(err, r, "placer refused page %llu", (unsigned long long)descs[i].pfn);
        data += descs[i].len;
    }
    return 0;
}

static int sink_barrier(void *ctx, unsigned lane, uint64_t tag, uint32_t flags, struct gw_err *err)
{
    struct fake_sink *s = ctx;
    (void)flags;
    if (tag <= s->barriers[lane] && s->barriers[lane]) return gw_err_set(err, -EPROTO, "barrier out of order");
    s->barriers[lane] = tag;
    __atomic_fetch_add(&s->nbarriers, 1, __ATOMIC_RELAXED);
    return 0;
}

static const struct gw_page_sink_ops fake_sink_ops = { .write_batch = sink_write, .barrier = sink_barrier };

static void write_version(uint8_t *mem, uint64_t pfn, uint64_t v)
{
    memcpy(mem + pfn * PG, &v, 8);
    memcpy(mem + pfn * PG + 8, &pfn, 8);
    memset(mem + pfn * PG + 16, (int)(v & 0xff) | 1, 64);
}

GW_TEST(newer_copy_never_overtaken_by_older)
{
    uint8_t *mem = calloc(NPAGES, PG);
    struct fake_dest *d = calloc(1, sizeof *d);
    struct fake_sink *s = calloc(1, sizeof *s);
    uint32_t *busy = calloc(NPAGES, sizeof *busy);
    uint64_t *last = calloc(NPAGES, sizeof *last);
    REQUIRE(mem && d && s && busy && last);
    pthread_mutex_init(&d->mu, NULL);
    s->placer = (struct gw_page_placer){ .ops = &fake_placer_ops, .ctx = d, .mem_size = (uint64_t)NPAGES * PG };
    s->busy = busy;
    s->nlanes = LANES;
    for (unsigned i = 0; i < LANES; i++) {
        s->wire[i] = malloc(gw_page_batch_bound(64));
        s->seed[i] = i + 1;
        REQUIRE(s->wire[i]);
    }
    struct gw_pump_cfg cfg = { .mem = mem, .mem_size = (uint64_t)NPAGES * PG, .nlanes = LANES, .batch_pages = 1,
                               .codec = GW_CODEC_NONE, .sink = &fake_sink_ops, .sink_ctx = s };
    struct gw_pump *p;
    struct gw_err e = {0};
    REQUIRE(gw_pump_open(&cfg, &p, &e) == 0);
    /* A hot set of pages (spread over every chunk) queued again and again, in a shuffled
     * order, each time with a new version; no barrier in between. One page per batch, so
     * every page is on its lane at once and the writer only waits for its own last copy. */
    uint64_t state = 42, queued = 0;
    for (unsigned it = 0; it < 6000; it++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t pfn = ((state >> 20) % 64) * (NPAGES / 64);   /* 64 hot pages, every chunk */
        /* Wait until the pump has read this page's previous copy. */
        while (__atomic_load_n(&busy[pfn], __ATOMIC_ACQUIRE)) usleep(20);
        write_version(mem, pfn, ++last[pfn]);
        __atomic_fetch_add(&busy[pfn], 1, __ATOMIC_RELAXED);
        CHECK_EQ(gw_pump_pages(p, &pfn, 1), 0);
        queued++;
    }
    CHECK_EQ(gw_pump_barrier(p, 1, 0), 0);
    CHECK_EQ(s->nbarriers, LANES);
    CHECK_EQ(d->placed, queued);
    CHECK_EQ(d->regressions, 0);
    CHECK_EQ(s->lane_of_page_errors, 0);
    for (unsigned i = 0; i < NPAGES; i++) CHECK_EQ(d->version[i], last[i]);
    struct gw_codec_stats st;
    gw_pump_stats(p, &st);
    CHECK_EQ(st.pages[GW_PAGE_RAW], queued);
    /* A second barrier comes after the first on every lane. */
    CHECK_EQ(gw_pump_barrier(p, 2, 1), 0);
    CHECK_EQ(s->nbarriers, 2 * LANES);
    gw_pump_close(p);
    for (unsigned i = 0; i < LANES; i++) free(s->wire[i]);
    pthread_mutex_destroy(&d->mu);
    free(mem); free(d); free(s); free(busy); free(last);
}

/* A sink that fails: the pump fails, reports the sink's message, and drops the rest. */
static int failing_write(void *ctx, unsigned lane, struct iovec *iov, int iovcnt, size_t len, uint32_t npages,
                         struct gw_err *err)
{
    (void)ctx; (void)iov; (void)iovcnt; (void)len; (void)npages;
    return gw_err_set(err, -EPIPE, "lane %u: the far end hung up (test)", lane);
}

static int aborts;
static void count_abort(void *ctx) { (void)ctx; __atomic_fetch_add(&aborts, 1, __ATOMIC_RELAXED); }

GW_TEST(sink_failure_fails_the_pump_once)
{
    static const struct gw_page_sink_ops ops = { .write_batch = failing_write, .abort = count_abort };
    uint8_t *mem = calloc(64, PG);
    REQUIRE(mem);
    struct gw_pump_cfg cfg = { .mem = mem, .mem_size = 64 * PG, .nlanes = 2, .batch_pages = 4, .sink = &ops };
    struct gw_pump *p;
    REQUIRE(gw_pump_open(&cfg, &p, NULL) == 0);
    uint64_t pfns[64];
    for (unsigned i = 0; i < 64; i++) pfns[i] = i;
    gw_pump_pages(p, pfns, 64);
    CHECK_EQ(gw_pump_barrier(p, 1, 0), -EPIPE);
    const char *msg;
    CHECK_EQ(gw_pump_error(p, &msg), -EPIPE);
    CHECK(strstr(msg, "hung up (test)") != NULL);
    CHECK_EQ(gw_pump_pages(p, pfns, 1), -EPIPE);
    CHECK_EQ(aborts, 1);
    gw_pump_close(p);
    free(mem);
}

GW_TEST(page_outside_memory_is_refused)
{
    static const struct gw_page_sink_ops ops = { .write_batch = failing_write };
    uint8_t *mem = calloc(8, PG);
    REQUIRE(mem);
    struct gw_pump_cfg cfg = { .mem = mem, .mem_size = 8 * PG, .nlanes = 1, .sink = &ops };
    struct gw_pump *p;
    REQUIRE(gw_pump_open(&cfg, &p, NULL) == 0);
    uint64_t pfn = 8;
    CHECK_EQ(gw_pump_pages(p, &pfn, 1), -ERANGE);
    CHECK_EQ(gw_pump_error(p, NULL), 0);
    CHECK_EQ(gw_pump_drain(p), 0);
    gw_pump_close(p);
    free(mem);
}
