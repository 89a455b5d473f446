/* Post-copy source: request server and background push (see pc_server.h). */
#include "postcopy/pc_server.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/codec/wire.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/pump/pump.h"
#include "postcopy/pc_pacer.h"
#include "postcopy/pc_wire.h"

#define PUSH_STEP 8u          /* pages the push looks at per step, and per batch: 32 KiB */
#define PUSH_AHEAD_STEPS 64u  /* steps queued before waiting for the pump to drain */
/* Unsent bytes a lane's socket may hold: a requested page the push already took waits for
 * what is ahead of it (4 MiB socket buffers at 1 Gbit/s made that 30 ms per lane). */
#define LANE_NOTSENT_LOWAT (32u << 10)
/* Where the push goes after a request: this far past the requested page (512 KiB). */
#define PUSH_LEAD_PAGES 128u

struct gw_pc_server {
    struct gw_pc_server_cfg cfg;
    uint64_t npages;
    uint64_t *sent;           /* one bit per page: handed to the wire (test-and-set) */
    uint64_t remaining;       /* push pages not yet sent (atomic) */
    uint64_t last_req;        /* where the push goes next + 1 (atomic; 0 = nowhere yet) */
    bool stop;                /* atomic */
    bool postcopy;            /* atomic: run() started; lanes claim their pages as they send */
    bool held;                /* under mu: the push waits for gw_pc_server_release_push */
    pthread_cond_t go_cv;     /* with mu: held cleared, or stop */
    struct gw_pump *pump;
    pthread_t req_thr, push_thr, pacer_thr;
    bool req_started, push_started, pacer_started;
    struct gw_pc_pacer pacer;  /* pacer thread only */
    uint64_t lane_pages[GW_WIRE_MAX_STREAMS];   /* lane worker only */
    /* request server only */
    struct gw_page_encoder enc;
    uint8_t *scratch;
    struct iovec iov[GW_PC_MAX_REQ_PAGES + 2];
    pthread_mutex_t mu;       /* st; orders answers against PUSH_DONE on the priority channel */
    bool lanes_closing;       /* under mu: LANE_END may be on its way (no answer on a lane after it) */
    struct gw_pc_server_stats st;
};

static void fail(struct gw_pc_server *s, const struct gw_err *e)
{
    pthread_mutex_lock(&s->mu);
    if (!s->st.error) {
        s->st.error = e->code ? e->code : -EIO;
        snprintf(s->st.msg, sizeof s->st.msg, "%s", e->msg);
    }
    pthread_mutex_unlock(&s->mu);
}

static bool stopping(struct gw_pc_server *s) { return __atomic_load_n(&s->stop, __ATOMIC_ACQUIRE); }

/* Takes pfn for sending; false when someone already did. */
static bool claim(struct gw_pc_server *s, uint64_t pfn)
{
    uint64_t bit = 1ull << (pfn % 64);
    if (__atomic_fetch_or(&s->sent[pfn / 64], bit, __ATOMIC_ACQ_REL) & bit) return false;
    if ((s->cfg.push[pfn / 64] >> (pfn % 64)) & 1) __atomic_fetch_sub(&s->remaining, 1, __ATOMIC_RELAXED);
    return true;
}

/* ---- the pump's sink: lane i writes stream 2 + i ---- */

static int sink_write(void *ctx, unsigned lane, struct iovec *iov, int iovcnt, size_t len, const uint64_t *pfns,
                      uint32_t npages, struct gw_err *e)
{
    struct gw_pc_server *s = ctx;
    (void)len;
    (void)pfns;
    s->lane_pages[lane] += npages;
    if (__atomic_load_n(&s->postcopy, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&s->mu);
        s->st.pages_pushed += npages;
        pthread_mutex_unlock(&s->mu);
    }
    return gw_session_sendv(s->cfg.ses, GW_PC_FIRST_LANE + lane, GW_WIRE_PAGE_BATCH, iov, iovcnt, e);
}

/* tag 1: the end of pre-copy; 0: the end of the push. */
static int sink_barrier(void *ctx, unsigned lane, uint64_t tag, uint32_t flags, struct gw_err *e)
{
    struct gw_pc_server *s = ctx;
    (void)flags;
    uint8_t b[GW_PC_HDR];
    gw_pc_pack(&(struct gw_pc_msg){.op = tag ? GW_PC_PRECOPY_END : GW_PC_LANE_END, .a = s->lane_pages[lane]}, b);
    s->lane_pages[lane] = 0;
    return gw_session_send(s->cfg.ses, GW_PC_FIRST_LANE + lane, GW_WIRE_POSTCOPY, b, sizeof b, e);
}

/* A queued page is taken for the push only now, just before it is encoded and written: one
 * that a request took meanwhile went on the priority channel and is dropped here, and a
 * request for one still waiting in the pump's queue is answered at once instead of waiting
 * for its turn. Pre-copy (hybrid) pages are never taken: they may go again after the switch. */
static uint32_t sink_claim(void *ctx, unsigned lane, uint64_t *pfns, uint32_t npages)
{
    struct gw_pc_server *s = ctx;
    (void)lane;
    if (!__atomic_load_n(&s->postcopy, __ATOMIC_ACQUIRE)) return npages;
    uint32_t k = 0;
    for (uint32_t i = 0; i < npages; i++)
        if (claim(s, pfns[i])) pfns[k++] = pfns[i];
    return k;
}

static void sink_abort(void *ctx)
{
    struct gw_pc_server *s = ctx;
    gw_session_shutdown(s->cfg.ses);
}

static const struct gw_page_sink_ops pc_sink = {.write_batch = sink_write, .barrier = sink_barrier,
                                                .claim = sink_claim, .abort = sink_abort};

/* ---- request server ---- */

static void refuse(struct gw_pc_server *s, uint64_t n, const char *why)
{
    pthread_mutex_lock(&s->mu);
    if (!s->st.refused) gw_warn("post-copy: refused a page request (%s)", why);
    s->st.refused += n;
    pthread_mutex_unlock(&s->mu);
}

/* Sends pfns[0..n) as one PAGE_BATCH on stream; under mu (PUSH_DONE cannot overtake it). */
static int send_pages(struct gw_pc_server *s, const uint64_t *pfns, uint32_t n, unsigned stream, struct gw_err *e)
{
    size_t len;
    int cnt;
    int r = gw_page_encode_batch_iov(&s->enc, s->cfg.mem, s->cfg.mem_size, pfns, n, s->scratch,
                                     gw_page_batch_scratch_bound(GW_PC_MAX_REQ_PAGES), s->iov + 1, &cnt, &len);
    if (r) return gw_err_set(e, r, "encoding requested pages failed");
    return gw_session_sendv(s->cfg.ses, stream, GW_WIRE_PAGE_BATCH, s->iov, cnt + 1, e);
}

static int answer(struct gw_pc_server *s, const uint8_t *p, const struct gw_pc_msg *m, struct gw_err *e)
{
    uint64_t pfns[GW_PC_MAX_REQ_PAGES];
    uint32_t n = 0, in_flight = 0, bad = 0;
    pthread_mutex_lock(&s->mu);
    if (s->st.push_done) {
        pthread_mutex_unlock(&s->mu);
        refuse(s, m->count, "after every page was sent");
        return 0;
    }
    for (uint32_t i = 0; i < m->count; i++) {
        uint64_t pfn = gw_pc_get64(p + GW_PC_HDR + 8ull * i);
        if (pfn >= s->npages) { bad++; continue; }
        /* Where the push goes next (push_main): near the guest's latest fault, but not at
         * it. The pages right after a fault are the likeliest next ones (a scan, a
         * verifier, an array), and a request answers one in ~60 us, while a page a lane
         * took waits behind the lane's batch, its socket's unsent bytes and the paced
         * wire: ~1 ms at 1 Gbit/s. Starting at the fault, the push kept taking the very
         * pages the guest asked for next (measured: 4 in 5 requests slower than 500 us).
         * So the push starts PUSH_LEAD_PAGES ahead and leaves the pages in between to
         * requests; it gets there soon enough when the guest does not. Without the
         * priority channel (a baseline) an answer waits behind bulk pages like a pushed
         * page, and the push is best right at the fault, unless it is already there. */
        bool taken = !claim(s, pfn);
        if (taken) in_flight++;
        else pfns[n++] = pfn;
        uint64_t go = pfn + (taken || !s->cfg.no_priority ? PUSH_LEAD_PAGES : 0);
        __atomic_store_n(&s->last_req, go + 1, __ATOMIC_RELEASE);
    }
    s->st.requests++;
    s->st.pages_requested += m->count - bad;
    s->st.pages_in_flight += in_flight;
    int r = 0;
    if (n) {
        /* Without the priority channel (a baseline), answers queue behind bulk pages on a
         * lane, but never after its LANE_END (lanes_closing, under mu like this send). */
        unsigned stream = s->cfg.no_priority && !s->lanes_closing ? GW_PC_FIRST_LANE : GW_PC_STREAM_PRIORITY;
        r = send_pages(s, pfns, n, stream, e);
        if (!r) s->st.pages_answered += n;
    }
    pthread_mutex_unlock(&s->mu);
    if (bad) refuse(s, bad, "page out of guest memory");
    return r;
}

static void *req_main(void *arg)
{
    struct gw_pc_server *s = arg;
    gw_pc_thread_urgent();
    struct gw_conn *c = gw_session_conn(s->cfg.ses, GW_PC_STREAM_PRIORITY);
    struct gw_rbuf buf = {0};
    struct gw_err e = {0};
    while (!stopping(s)) {
        struct gw_wire_header h;
        uint64_t before = c->bytes_recv;
        int r = gw_conn_recv_record(c, &h, &buf, &e);
        if (GW_PC_QUIET_TIMEOUT(r, c, before)) continue;
        if (r) { if (!stopping(s)) fail(s, &e); break; }
        if (h.type == GW_WIRE_ERROR) {
            int rr;
            Godwit__V1__MigError *m = gw_wire_unpack_error(buf.data, h.length, &rr);
            gw_err_set(&e, -EPROTO, "the destination stopped: %s", m && m->message ? m->message : "(no reason)");
            if (m) godwit__v1__mig_error__free_unpacked(m, NULL);
            fail(s, &e);
            break;
        }
        struct gw_pc_msg m = {0};
        if (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(buf.data, h.length, &m) || m.op != GW_PC_REQUEST) {
            refuse(s, 1, "not a well-formed page request");
            continue;
        }
        if ((r = answer(s, buf.data, &m, &e))) { fail(s, &e); break; }
    }
    gw_rbuf_free(&buf);
    return NULL;
}

/* ---- background push ---- */

/* Keeps the push under the configured rate, in short sleeps so that a stop is seen. */
static void pace(struct gw_pc_server *s, uint64_t t0, uint64_t pages)
{
    if (!s->cfg.rate_bps) return;
    uint64_t due = t0 + gw_u64_of_double((double)pages * 4096 * 1e9 / (double)s->cfg.rate_bps);
    for (uint64_t now; !stopping(s) && (now = gw_now_ns()) < due;) {
        uint64_t d = due - now < 20000000ull ? due - now : 20000000ull;
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static void *push_main(void *arg)
{
    struct gw_pc_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (s->held && !stopping(s)) pthread_cond_wait(&s->go_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    uint64_t pfns[PUSH_STEP];
    uint64_t cursor = 0, seen_req = 0, pushed = 0, t0 = gw_now_ns(), steps = 0;
    struct gw_err e = {0};
    int r = 0;
    while (!stopping(s) && __atomic_load_n(&s->remaining, __ATOMIC_ACQUIRE)) {
        uint64_t lr = __atomic_load_n(&s->last_req, __ATOMIC_ACQUIRE);
        if (lr != seen_req) {
            /* Go where the guest works now: its next faults are likely nearby. */
            seen_req = lr;
            cursor = ((lr - 1) & ~(uint64_t)(PUSH_STEP - 1)) % s->npages;
        }
        uint64_t end = cursor + PUSH_STEP < s->npages ? cursor + PUSH_STEP : s->npages;
        unsigned n = 0;
        /* Not taken yet: the lane takes each page when it sends it (sink_claim). */
        for (uint64_t p = cursor; p < end; p++)
            if ((s->cfg.push[p / 64] >> (p % 64)) & 1 &&
                !((__atomic_load_n(&s->sent[p / 64], __ATOMIC_ACQUIRE) >> (p % 64)) & 1))
                pfns[n++] = p;
        cursor = end >= s->npages ? 0 : end;
        if (n && (r = gw_pump_pages(s->pump, pfns, n))) break;
        if (n) {
            pushed += n;
            pace(s, t0, pushed);
            /* A little queued in the pump keeps the lanes busy; more would only be scanned
             * again (the push jumps to where the guest faults) and dropped by the lanes. */
            if (++steps % PUSH_AHEAD_STEPS == 0 && (r = gw_pump_drain(s->pump))) break;
        }
    }
    if (!r && !stopping(s)) {
        pthread_mutex_lock(&s->mu);
        s->lanes_closing = true;
        pthread_mutex_unlock(&s->mu);
        r = gw_pump_barrier(s->pump, 0, 0);
    }
    if (r) {
        const char *msg = NULL;
        gw_pump_error(s->pump, &msg);
        gw_err_set(&e, r, "background push: %s", msg ? msg : strerror(-r));
        if (!stopping(s)) fail(s, &e);
        return NULL;
    }
    if (stopping(s)) return NULL;
    uint8_t b[GW_PC_HDR];
    pthread_mutex_lock(&s->mu);
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_PUSH_DONE, .a = s->st.pages_pushed + s->st.pages_answered}, b);
    r = gw_session_send(s->cfg.ses, GW_PC_STREAM_PRIORITY, GW_WIRE_POSTCOPY, b, sizeof b, &e);
    if (!r) s->st.push_done = true;
    pthread_mutex_unlock(&s->mu);
    if (r) fail(s, &e);
    return NULL;
}

/* ---- pacer: keeps the lanes from filling the bottleneck's queue (pc_pacer.h) ---- */

static void *pacer_main(void *arg)
{
    struct gw_pc_server *s = arg;
    pthread_mutex_lock(&s->mu);
    while (s->held && !stopping(s)) pthread_cond_wait(&s->go_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    /* The lanes start on an idle link and, in slow start, fill the bottleneck's queue
     * within a few ms, just when the guest starts and faults most: readings every 1 ms at
     * first cut that queue sooner than the steady 5 ms would. */
    uint64_t fast_until = gw_now_ns() + GW_PC_PACER_FAST_MS * 1000000ull;
    const struct timespec fast = {0, GW_PC_PACER_FAST_TICK_MS * 1000000L};
    const struct timespec slow = {0, GW_PC_PACER_TICK_MS * 1000000L};
    gw_pc_pacer_tick(&s->pacer, gw_now_ns());
    while (!stopping(s) && __atomic_load_n(&s->remaining, __ATOMIC_ACQUIRE) && !s->pacer.off) {
        nanosleep(gw_now_ns() < fast_until ? &fast : &slow, NULL);
        gw_pc_pacer_tick(&s->pacer, gw_now_ns());
    }
    return NULL;
}

int gw_pc_server_open(const struct gw_pc_server_cfg *cfg, struct gw_pc_server **out, struct gw_err *e)
{
    if (!cfg->nlanes || cfg->nlanes + GW_PC_FIRST_LANE > gw_session_streams(cfg->ses) || !cfg->mem_size ||
        cfg->mem_size % 4096)
        return gw_err_set(e, -EINVAL, "post-copy server: bad configuration");
    struct gw_pc_server *s = calloc(1, sizeof *s);
    if (!s) return gw_err_set(e, -ENOMEM, "out of memory");
    s->cfg = *cfg;
    s->npages = cfg->mem_size / 4096;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->go_cv, NULL);
    s->sent = calloc((s->npages + 63) / 64, 8);
    s->scratch = malloc(gw_page_batch_scratch_bound(GW_PC_MAX_REQ_PAGES));
    if (!s->sent || !s->scratch) { gw_pc_server_close(s); return gw_err_set(e, -ENOMEM, "out of memory"); }
    /* Answers are never compressed: a requested page is wanted now, not smaller. */
    gw_page_encoder_init(&s->enc, GW_CODEC_NONE, 1);
    struct gw_pump_cfg pc = {.mem = cfg->mem, .mem_size = cfg->mem_size, .nlanes = cfg->nlanes,
                             .batch_pages = PUSH_STEP, .codec = cfg->codec, .sink = &pc_sink, .sink_ctx = s};
    int r = gw_pump_open(&pc, &s->pump, e);
    if (r) { gw_pc_server_close(s); return r; }
    /* Best effort (RDMA has no socket): answers first in the host's and the network's
     * queues; little waiting unsent behind the push. The baseline without the priority
     * channel is a plain single-channel post-copy: none of this, nor the pacer. */
    if (!cfg->no_priority) {
        gw_conn_mark_urgent(gw_session_conn(cfg->ses, GW_PC_STREAM_PRIORITY));
        for (unsigned i = 0; i < cfg->nlanes; i++)
            gw_conn_set_notsent_lowat(gw_session_conn(cfg->ses, GW_PC_FIRST_LANE + i), LANE_NOTSENT_LOWAT);
    }
    *out = s;
    return 0;
}

static int pump_err(struct gw_pc_server *s, int r, struct gw_err *e)
{
    const char *msg = NULL;
    gw_pump_error(s->pump, &msg);
    return gw_err_set(e, r, "%s", msg && *msg ? msg : strerror(-r));
}

int gw_pc_server_precopy(struct gw_pc_server *s, const uint64_t *pfns, size_t n, struct gw_err *e)
{
    int r = gw_pump_pages(s->pump, pfns, n);
    return r ? pump_err(s, r, e) : 0;
}

int gw_pc_server_precopy_drain(struct gw_pc_server *s, struct gw_err *e)
{
    int r = gw_pump_drain(s->pump);
    return r ? pump_err(s, r, e) : 0;
}

int gw_pc_server_precopy_end(struct gw_pc_server *s, struct gw_err *e)
{
    int r = gw_pump_barrier(s->pump, 1, 0);
    return r ? pump_err(s, r, e) : 0;
}

int gw_pc_server_run(struct gw_pc_server *s, const uint64_t *push, struct gw_err *e)
{
    if (!push) return gw_err_set(e, -EINVAL, "post-copy server: nothing to push");
    s->cfg.push = push;
    uint64_t rem = 0;
    for (uint64_t w = 0; w < (s->npages + 63) / 64; w++) rem += (uint64_t)__builtin_popcountll(push[w]);
    s->remaining = rem;
    __atomic_store_n(&s->postcopy, true, __ATOMIC_RELEASE);
    int r;
    if ((r = -pthread_create(&s->req_thr, NULL, req_main, s))) return gw_err_set(e, r, "cannot start the request server");
    s->req_started = true;
    if ((r = -pthread_create(&s->push_thr, NULL, push_main, s))) return gw_err_set(e, r, "cannot start the background push");
    s->push_started = true;
    /* A push capped by the policy's rate is paced by it alone. */
    if (!s->cfg.rate_bps && !s->cfg.no_priority) {
        struct gw_conn *lanes[GW_WIRE_MAX_STREAMS];
        for (unsigned i = 0; i < s->cfg.nlanes; i++) lanes[i] = gw_session_conn(s->cfg.ses, GW_PC_FIRST_LANE + i);
        gw_pc_pacer_init(&s->pacer, lanes, s->cfg.nlanes);
        if ((r = -pthread_create(&s->pacer_thr, NULL, pacer_main, s))) return gw_err_set(e, r, "cannot start the push's pacer");
        s->pacer_started = true;
    }
    return 0;
}

int gw_pc_server_start(const struct gw_pc_server_cfg *cfg, struct gw_pc_server **out, struct gw_err *e)
{
    struct gw_pc_server *s = NULL;   /* stays NULL when open fails: nothing to close */
    int r = gw_pc_server_open(cfg, &s, e);
    if (!r) r = gw_pc_server_precopy_end(s, e);
    if (!r) r = gw_pc_server_run(s, cfg->push, e);
    if (r) { gw_pc_server_close(s); return r; }
    *out = s;
    return 0;
}

void gw_pc_server_hold_push(struct gw_pc_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->held = true;
    pthread_mutex_unlock(&s->mu);
}

void gw_pc_server_release_push(struct gw_pc_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->held = false;
    pthread_cond_broadcast(&s->go_cv);
    pthread_mutex_unlock(&s->mu);
}

void gw_pc_server_stats(struct gw_pc_server *s, struct gw_pc_server_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void gw_pc_server_close(struct gw_pc_server *s)
{
    if (!s) return;
    __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->go_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->pump) {
        struct gw_err e = {.code = -ECANCELED};
        snprintf(e.msg, sizeof e.msg, "post-copy server stopped");
        gw_pump_stop(s->pump, &e);
    }
    if (s->push_started) pthread_join(s->push_thr, NULL);
    if (s->req_started) pthread_join(s->req_thr, NULL);
    if (s->pacer_started) pthread_join(s->pacer_thr, NULL);
    gw_pump_close(s->pump);
    pthread_cond_destroy(&s->go_cv);
    pthread_mutex_destroy(&s->mu);
    free(s->sent);
    free(s->scratch);
    free(s);
}
