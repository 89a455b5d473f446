/* Post-copy destination: fault thread and page receivers (see pc_client.h). */
#include "postcopy/pc_client.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "engine/codec/wire.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/pump/page_recv.h"
#include "postcopy/pc_digest.h"
#include "postcopy/pc_pacer.h"
#include "postcopy/pc_wire.h"

struct rx_thread {
    struct gw_pc_client *c;
    unsigned stream;
    bool precopy_done;            /* under c->mu */
    pthread_t thr;
    bool started;
};

struct gw_pc_client {
    struct gw_session *ses;       /* under ses_mu: replaced when a broken link is resumed */
    pthread_mutex_t ses_mu;
    struct gw_uffd_placer u;
    struct gw_page_placer pl;     /* the uffd placer, once switched */
    struct gw_placer_direct direct;   /* pre-copy: pages written straight into memory */
    struct gw_page_placer direct_pl;
    struct gw_page_placer pre;    /* direct_pl, noting each page's digest hash as it lands */
    uint64_t *pre_hash;           /* per page: gw_pc_page_hash of its pre-copied content */
    uint8_t *mem;
    uint64_t mem_size;
    unsigned precopy_ended;       /* under mu: lanes past PRECOPY_END */
    bool switched;                /* under mu: memory registered, lanes use pl */
    unsigned nlanes;
    int stop_fd;                  /* eventfd: wakes the fault thread */
    bool stop;                    /* atomic */
    pthread_t fault_thr;
    bool fault_started;
    struct rx_thread rx[GW_WIRE_MAX_STREAMS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gw_pc_client_stats st; /* under mu: requests, lanes_ended, push_done, error */
    int (*vcpu_of_tid)(void *ctx, uint32_t tid);
    void *vcpu_ctx;
};

static bool stopping(struct gw_pc_client *c) { return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE); }

void gw_pc_client_fail(struct gw_pc_client *c, const struct gw_err *e)
{
    pthread_mutex_lock(&c->mu);
    if (!c->st.error) {
        c->st.error = e->code ? e->code : -EIO;
        snprintf(c->st.msg, sizeof c->st.msg, "%s", e->msg);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* ---- fault thread ---- */

static int send_requests(struct gw_pc_client *c, const uint64_t *pfns, unsigned n, struct gw_err *e)
{
    uint8_t b[GW_PC_HDR + 8 * GW_PC_MAX_REQ_PAGES];
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_REQUEST, .count = n}, b);
    for (unsigned i = 0; i < n; i++) gw_pc_put64(b + GW_PC_HDR + 8 * i, pfns[i]);
    pthread_mutex_lock(&c->ses_mu);
    int r = gw_session_send(c->ses, GW_PC_STREAM_PRIORITY, GW_WIRE_POSTCOPY, b, GW_PC_HDR + 8ull * n, e);
    pthread_mutex_unlock(&c->ses_mu);
    if (!r) {
        pthread_mutex_lock(&c->mu);
        c->st.requests++;
        c->st.pages_requested += n;
        pthread_mutex_unlock(&c->mu);
    }
    return r;
}

static void *fault_main(void *arg)
{
    struct gw_pc_client *c = arg;
    gw_pc_thread_urgent();
    struct gw_err e = {0};
    uint64_t faults[GW_PC_MAX_REQ_PAGES], want[GW_PC_MAX_REQ_PAGES];
    uint32_t tids[GW_PC_MAX_REQ_PAGES];
    while (!stopping(c)) {
        struct pollfd pf[2] = {{.fd = c->u.uffd, .events = POLLIN}, {.fd = c->stop_fd, .events = POLLIN}};
        int pr = poll(pf, 2, 1000);
        if (pr < 0 && errno != EINTR) { gw_err_set(&e, -errno, "poll on userfaultfd failed"); break; }
        if (pr <= 0 || stopping(c)) continue;
        int n = gw_uffd_read_faults(&c->u, faults, tids, (int)GW_PC_MAX_REQ_PAGES);
        if (n < 0) { gw_err_set(&e, n, "reading page faults: %s", strerror(-n)); break; }
        unsigned k = 0;
        uint64_t now = gw_now_ns();
        for (int i = 0; i < n; i++) {
            int v = c->vcpu_of_tid && tids[i] ? c->vcpu_of_tid(c->vcpu_ctx, tids[i]) : -1;
            if (v >= 0) gw_uffd_placer_vcpu_waits(&c->u, (unsigned)v, faults[i]);
            uint64_t zero = 0;
            /* A page is requested once, whoever else waits for it: the copy wakes them all. */
            if (__atomic_compare_exchange_n(&c->u.req_ns[faults[i]], &zero, now, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
                want[k++] = faults[i];
        }
        /* A request lost with a broken link stays noted (req_ns): it is asked again on the
         * resumed session (gw_pc_client_attach). The fault thread itself never stops for it. */
        if (k) send_requests(c, want, k, &e);
    }
    if (e.code && !stopping(c)) gw_pc_client_fail(c, &e);
    return NULL;
}

/* ---- the pre-copy placer: the direct placer, plus each page's hash as it lands, so that the
 * switch sums the pre-copied pages without reading them during the guest's pause ---- */

static uint8_t *pre_direct(void *ctx, uint64_t pfn, uint32_t n)
{
    struct gw_pc_client *c = ctx;
    return c->direct_pl.ops->direct(c->direct_pl.ctx, pfn, n);
}

static void pre_prepare(void *ctx, uint64_t pfn, uint32_t n)
{
    struct gw_pc_client *c = ctx;
    c->direct_pl.ops->prepare(c->direct_pl.ctx, pfn, n);
}

static int pre_placed(void *ctx, uint64_t pfn, uint32_t n)
{
    struct gw_pc_client *c = ctx;
    int r = c->direct_pl.ops->placed(c->direct_pl.ctx, pfn, n);
    for (uint64_t p = pfn; !r && p < pfn + n; p++) c->pre_hash[p] = gw_pc_page_hash(p, c->mem + p * 4096);
    return r;
}

static int pre_copy(void *ctx, uint64_t pfn, const uint8_t *src)
{
    struct gw_pc_client *c = ctx;
    int r = c->direct_pl.ops->copy(c->direct_pl.ctx, pfn, src);
    if (!r) c->pre_hash[pfn] = gw_pc_page_hash(pfn, src);
    return r;
}

static int pre_zero(void *ctx, uint64_t pfn)
{
    struct gw_pc_client *c = ctx;
    int r = c->direct_pl.ops->zero(c->direct_pl.ctx, pfn);
    if (!r) c->pre_hash[pfn] = gw_pc_page_hash(pfn, NULL);
    return r;
}

static const struct gw_page_placer_ops pre_ops = {
    .direct = pre_direct, .prepare = pre_prepare, .placed = pre_placed, .copy = pre_copy, .zero = pre_zero,
};

/* ---- receivers ---- */

static int on_postcopy(struct rx_thread *t, const uint8_t *p, size_t len, bool *end, struct gw_err *e)
{
    struct gw_pc_client *c = t->c;
    struct gw_pc_msg m = {0};
    if (gw_pc_parse(p, len, &m)) return gw_err_set(e, -EBADMSG, "stream %u: malformed post-copy record", t->stream);
    bool lane = t->stream >= GW_PC_FIRST_LANE;
    if (lane && m.op == GW_PC_PRECOPY_END) {
        /* Pre-copy is over on this lane: wait until memory is registered (gw_pc_client_switch). */
        pthread_mutex_lock(&c->mu);
        if (t->precopy_done) {
            pthread_mutex_unlock(&c->mu);
            return gw_err_set(e, -EPROTO, "stream %u: PRECOPY_END twice", t->stream);
        }
        t->precopy_done = true;
        c->precopy_ended++;
        pthread_cond_broadcast(&c->cv);
        while (!c->switched && !c->st.error && !stopping(c)) pthread_cond_wait(&c->cv, &c->mu);
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    if (lane && !t->precopy_done) return gw_err_set(e, -EPROTO, "stream %u: LANE_END before PRECOPY_END", t->stream);
    if (m.op != (lane ? GW_PC_LANE_END : GW_PC_PUSH_DONE))
        return gw_err_set(e, -EPROTO, "stream %u: unexpected post-copy op %u", t->stream, m.op);
    pthread_mutex_lock(&c->mu);
    if (lane) c->st.lanes_ended++;
    else c->st.push_done = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    *end = true;
    return 0;
}

static void *rx_main(void *arg)
{
    struct rx_thread *t = arg;
    struct gw_pc_client *c = t->c;
    pthread_mutex_lock(&c->ses_mu);
    struct gw_conn *conn = gw_session_conn(c->ses, t->stream);
    pthread_mutex_unlock(&c->ses_mu);
    /* Requests go first in the queues on the way (best effort: RDMA has no socket). */
    if (t->stream == GW_PC_STREAM_PRIORITY) {
        gw_conn_mark_urgent(conn);
        gw_pc_thread_urgent();
    }
    struct gw_page_recv pr = {0};
    struct gw_codec_stats cs = {0};
    struct gw_err e = {0};
    uint8_t small[GW_PC_HDR + 8 * GW_PC_MAX_REQ_PAGES];
    bool end = false;
    int r = 0;
    while (!end && !stopping(c)) {
        struct gw_wire_header h;
        uint64_t before = conn->bytes_recv;
        r = gw_conn_recv_header(conn, &h, &e);
        if (GW_PC_QUIET_TIMEOUT(r, conn, before)) { r = 0; continue; }   /* a quiet priority channel is fine */
        if (r) break;
        if (h.type == GW_WIRE_PAGE_BATCH) {
            uint32_t n;
            /* Lanes carry pre-copy pages until PRECOPY_END, post-copy pages after it; the
             * priority channel only ever answers requests (after the switch). */
            bool pre = t->stream >= GW_PC_FIRST_LANE ? !t->precopy_done : false;
            if (!pre && !__atomic_load_n(&c->switched, __ATOMIC_ACQUIRE)) {
                r = gw_err_set(&e, -EPROTO, "stream %u: post-copy pages before the switch", t->stream);
                break;
            }
            r = gw_page_recv_batch(conn, &h, pre ? &c->pre : &c->pl, &pr, &cs, &n, &e);
        } else if (h.type == GW_WIRE_POSTCOPY && h.length <= sizeof small) {
            struct iovec iov = {.iov_base = small, .iov_len = h.length};
            r = gw_conn_recv_payload(conn, &iov, 1, &e);
            if (!r) r = on_postcopy(t, small, h.length, &end, &e);
        } else if (h.type == GW_WIRE_ERROR) {
            r = gw_err_set(&e, -EPROTO, "the source stopped the migration");
        } else {
            r = gw_err_set(&e, -EPROTO, "stream %u: unexpected %s record", t->stream, gw_wire_type_name(h.type));
        }
        if (r) break;
    }
    gw_page_recv_free(&pr);
    if (r && !stopping(c)) gw_pc_client_fail(c, &e);
    return NULL;
}

int gw_pc_client_start(struct gw_session *ses, uint8_t *mem, uint64_t mem_size, unsigned nlanes,
                       struct gw_pc_client **out, struct gw_err *e)
{
    if (!nlanes || nlanes + GW_PC_FIRST_LANE != gw_session_streams(ses))
        return gw_err_set(e, -EPROTO, "a post-copy session needs 3 or more streams");
    struct gw_pc_client *c = calloc(1, sizeof *c);
    if (!c) return gw_err_set(e, -ENOMEM, "out of memory");
    c->ses = ses;
    c->nlanes = nlanes;
    c->stop_fd = -1;
    c->u.uffd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->ses_mu, NULL);
    pthread_condattr_t ca;   /* deadlines are CLOCK_MONOTONIC */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->mem = mem;
    c->mem_size = mem_size;
    c->direct = (struct gw_placer_direct){.mem = mem, .mem_size = mem_size,
                                          .written = calloc((mem_size / 4096 + 63) / 64, 8)};
    c->pre_hash = calloc(mem_size / 4096, 8);
    if (!c->direct.written || !c->pre_hash) { gw_pc_client_close(c, false); return gw_err_set(e, -ENOMEM, "out of memory"); }
    c->direct_pl = gw_placer_direct(&c->direct);
    c->pre = (struct gw_page_placer){.ops = &pre_ops, .ctx = c, .mem_size = mem_size};
    c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int r;
    if (c->stop_fd < 0) { r = -errno; gw_pc_client_close(c, false); return gw_err_set(e, r, "eventfd failed"); }
    for (unsigned i = GW_PC_STREAM_PRIORITY; i < GW_PC_FIRST_LANE + nlanes; i++) {
        c->rx[i] = (struct rx_thread){.c = c, .stream = i};
        if ((r = -pthread_create(&c->rx[i].thr, NULL, rx_main, &c->rx[i]))) {
            gw_pc_client_close(c, false);
            return gw_err_set(e, r, "cannot start a receiver");
        }
        c->rx[i].started = true;
    }
    *out = c;
    return 0;
}

/* Drops the pre-copied pages that are stale (dirty) with a hole, and notes the others as
 * received (their hash too): they are final, the guest has not run here yet. */
static void settle_precopy(struct gw_pc_client *c, const uint64_t *dirty)
{
    uint64_t np = c->mem_size / 4096;
    const uint64_t *wr = c->direct.written;
    for (uint64_t p = 0; p < np;) {
        bool written = (wr[p / 64] >> (p % 64)) & 1;
        bool stale = (dirty[p / 64] >> (p % 64)) & 1;
        if (!written) { p++; continue; }
        if (!stale) {
            c->u.received[p / 64] |= 1ull << (p % 64);
            c->u.placed++;
            c->u.hash_sum += c->pre_hash[p];   /* hashed as it landed: nothing read now */
            p++;
            continue;
        }
        uint64_t q = p + 1;
        while (q < np && ((wr[q / 64] >> (q % 64)) & 1) && ((dirty[q / 64] >> (q % 64)) & 1)) q++;
        /* MADV_REMOVE punches the hole in the memfd itself: the page faults as missing. */
        madvise(c->mem + p * 4096, (q - p) * 4096, MADV_REMOVE);
        p = q;
    }
}

/* Waits until every lane passed PRECOPY_END: from then on no receiver writes memory until the
 * switch. 0 or -errno with e. */
static int wait_precopy_end(struct gw_pc_client *c, int timeout_ms, struct gw_err *e)
{
    uint64_t dl = gw_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 60000) * 1000000ull;
    pthread_mutex_lock(&c->mu);
    /* The receivers signal cv at each PRECOPY_END (and on failure): no polling in the pause. */
    struct timespec ts = {(time_t)(dl / 1000000000ull), (long)(dl % 1000000000ull)};
    while (c->precopy_ended < c->nlanes && !c->st.error && gw_now_ns() < dl)
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    int r = c->st.error ? gw_err_set(e, c->st.error, "%s", c->st.msg)
            : c->precopy_ended < c->nlanes ? gw_err_set(e, -ETIMEDOUT, "pre-copy did not end on every stream") : 0;
    pthread_mutex_unlock(&c->mu);
    return r;
}

int64_t gw_pc_client_drop_stale(struct gw_pc_client *c, const uint64_t *stale, uint64_t npages, int timeout_ms,
                                struct gw_err *e)
{
    uint64_t np = c->mem_size / 4096;
    if (npages != np) return gw_err_set(e, -EPROTO, "the stale-page bitmap does not fit guest memory");
    /* The source ended pre-copy before STALE: once every lane has passed PRECOPY_END nothing
     * writes memory here, and the holes punched now stay holes until the switch. */
    int r = wait_precopy_end(c, timeout_ms, e);
    if (r) return r;
    uint64_t *wr = c->direct.written, dropped = 0, run = 0, run_len = 0;
    for (uint64_t w = 0; w < (np + 63) / 64; w++) {
        /* written never has a bit past np: a hostile tail in stale is masked by it. */
        uint64_t bits = stale[w] & __atomic_load_n(&wr[w], __ATOMIC_RELAXED);
        if (!bits) continue;
        /* Every lane is idle (above); the bit still goes before the page, so that a page
         * noted as not written is a hole whatever a receiver did. */
        __atomic_fetch_and(&wr[w], ~bits, __ATOMIC_SEQ_CST);
        for (; bits; bits &= bits - 1) {
            uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
            dropped++;
            if (run_len && p == run + run_len) { run_len++; continue; }
            if (run_len) madvise(c->mem + run * 4096, run_len * 4096, MADV_REMOVE);
            run = p;
            run_len = 1;
        }
    }
    if (run_len) madvise(c->mem + run * 4096, run_len * 4096, MADV_REMOVE);
    return (int64_t)dropped;
}

int gw_pc_client_switch(struct gw_pc_client *c, const uint64_t *dirty, uint64_t npages, int timeout_ms,
                        struct gw_err *e)
{
    if (npages != c->mem_size / 4096) return gw_err_set(e, -EPROTO, "the dirty bitmap does not fit guest memory");
    uint64_t t0 = gw_now_ns();
    int r = wait_precopy_end(c, timeout_ms, e);
    if (r) return r;
    /* Every lane waits now: nothing writes memory while it is settled and registered. */
    uint64_t t_lanes = gw_now_ns();
    r = gw_uffd_placer_open(&c->u, c->mem, c->mem_size, e);
    if (r) return r;
    uint64_t t_reg = gw_now_ns();
    settle_precopy(c, dirty);
    gw_info("post-copy switch: lanes' pre-copy end %.2f ms, userfaultfd %.2f ms, pre-copied pages settled %.2f ms",
            (t_lanes - t0) / 1e6, (t_reg - t_lanes) / 1e6, (gw_now_ns() - t_reg) / 1e6);
    c->pl = gw_uffd_placer(&c->u);
    if ((r = -pthread_create(&c->fault_thr, NULL, fault_main, c))) return gw_err_set(e, r, "cannot start the fault thread");
    c->fault_started = true;
    pthread_mutex_lock(&c->mu);
    __atomic_store_n(&c->switched, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int gw_pc_client_wait(struct gw_pc_client *c, int timeout_ms, struct gw_err *e)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (dl.tv_nsec >= 1000000000) { dl.tv_sec++; dl.tv_nsec -= 1000000000; }
    }
    pthread_mutex_lock(&c->mu);
    int r = 0;
    while (!c->st.error && !(c->st.push_done && c->st.lanes_ended == c->nlanes)) {
        if (timeout_ms < 0) pthread_cond_wait(&c->cv, &c->mu);
        else if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT) { r = -ETIMEDOUT; break; }
    }
    if (c->st.error) r = gw_err_set(e, c->st.error, "%s", c->st.msg);
    else if (!r) c->st.complete = true;
    pthread_mutex_unlock(&c->mu);
    return r;
}

int gw_pc_client_finish(struct gw_pc_client *c, uint64_t *digest_sum)
{
    int r = gw_uffd_placer_unregister(&c->u);
    if (r) return r;
    /* Every page not received is a hole at the source: it counts as zero. */
    uint64_t sum = __atomic_load_n(&c->u.hash_sum, __ATOMIC_ACQUIRE);
    uint64_t zh = gw_pc_zero_content_hash();
    for (uint64_t p = 0; p < c->u.npages; p++)
        if (!gw_uffd_placer_has(&c->u, p)) sum += gw_pc_mix(p, zh);
    *digest_sum = sum;
    return 0;
}

void gw_pc_client_stats(struct gw_pc_client *c, struct gw_pc_client_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
    struct gw_uffd_placer *u = &c->u;
    out->pages_received = gw_uffd_placer_count(u);
    out->pages_dup = __atomic_load_n(&u->dups, __ATOMIC_RELAXED);
    for (int i = 0; i < 32; i++) out->lat_hist[i] = __atomic_load_n(&u->lat_hist[i], __ATOMIC_RELAXED);
    out->lat_p50_us = gw_uffd_placer_latency_us(u, 50);
    out->lat_p99_us = gw_uffd_placer_latency_us(u, 99);
    out->lat_max_us = __atomic_load_n(&u->lat_max_ns, __ATOMIC_RELAXED) / 1000;
    out->blocked_ns = __atomic_load_n(&u->lat_sum_ns, __ATOMIC_RELAXED);
    uint64_t placed_req = __atomic_load_n(&u->lat_count, __ATOMIC_RELAXED);
    out->pages_waiting = out->pages_requested > placed_req ? out->pages_requested - placed_req : 0;
    uint64_t now = gw_now_ns();
    for (unsigned i = 0; i < GW_PC_MAX_VCPUS; i++) {
        /* What it waited for pages already placed, and the wait in progress. */
        uint64_t b = __atomic_load_n(&u->vcpu[i].blocked_ns, __ATOMIC_RELAXED);
        uint64_t since = __atomic_load_n(&u->vcpu[i].since_ns, __ATOMIC_RELAXED);
        if (__atomic_load_n(&u->vcpu[i].pfn1, __ATOMIC_ACQUIRE) && now > since) b += now - since;
        out->vcpu_blocked_ns[i] = b;
    }
}

bool gw_pc_client_vcpu_timed(struct gw_pc_client *c, unsigned vcpu)
{
    return vcpu < GW_PC_MAX_VCPUS && __atomic_load_n(&c->u.vcpu[vcpu].pfn1, __ATOMIC_ACQUIRE) != 0;
}

void gw_pc_client_set_vcpu_map(struct gw_pc_client *c, int (*of_tid)(void *ctx, uint32_t tid), void *ctx)
{
    c->vcpu_of_tid = of_tid;
    c->vcpu_ctx = ctx;
}

void gw_pc_client_close(struct gw_pc_client *c, bool abandon)
{
    if (!c) return;
    __atomic_store_n(&c->stop, true, __ATOMIC_RELEASE);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cv);   /* lanes waiting for the switch */
    pthread_mutex_unlock(&c->mu);
    if (c->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(c->stop_fd, &one, sizeof one);
        (void)w;
    }
    if (c->fault_started) pthread_join(c->fault_thr, NULL);
    for (unsigned i = 0; i < GW_WIRE_MAX_STREAMS; i++)
        if (c->rx[i].started) pthread_join(c->rx[i].thr, NULL);
    if (c->stop_fd >= 0) close(c->stop_fd);
    /* An abandoned post-copy poisons the missing pages before letting go of the userfaultfd:
     * closing it alone would let every waiting thread see zero pages where data is missing,
     * and keeping it open would leave KVM's page-fault workers waiting for ever. */
    if (abandon && c->u.registered) {
        int r = gw_uffd_placer_poison_missing(&c->u);
        if (r) gw_warn("post-copy: cannot poison the missing pages (%s): they will read as zero", strerror(-r));
    }
    gw_uffd_placer_close(&c->u);
    free(c->direct.written);
    free(c->pre_hash);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->ses_mu);
    free(c);
}

/* ---- recovery after a broken link ---- */

void gw_pc_client_detach(struct gw_pc_client *c)
{
    for (unsigned i = 0; i < GW_WIRE_MAX_STREAMS; i++)
        if (c->rx[i].started) {
            pthread_join(c->rx[i].thr, NULL);
            c->rx[i].started = false;
        }
}

const uint64_t *gw_pc_client_received(struct gw_pc_client *c, uint64_t *npages)
{
    *npages = c->mem_size / 4096;
    return c->u.received;
}

/* Asks again for every page requested but not placed: its request or its answer was lost
 * with the old link. The fault thread does not ask twice (req_ns is set), so this does. */
static int rerequest(struct gw_pc_client *c, struct gw_err *e)
{
    uint64_t want[GW_PC_MAX_REQ_PAGES];
    unsigned k = 0;
    for (uint64_t p = 0; p < c->u.npages; p++) {
        if (!__atomic_load_n(&c->u.req_ns[p], __ATOMIC_ACQUIRE) || gw_uffd_placer_has(&c->u, p)) continue;
        want[k++] = p;
        if (k == GW_PC_MAX_REQ_PAGES) {
            int r = send_requests(c, want, k, e);
            if (r) return r;
            k = 0;
        }
    }
    return k ? send_requests(c, want, k, e) : 0;
}

void gw_pc_client_use_session(struct gw_pc_client *c, struct gw_session *ses)
{
    pthread_mutex_lock(&c->ses_mu);
    c->ses = ses;
    pthread_mutex_unlock(&c->ses_mu);
}

int gw_pc_client_attach(struct gw_pc_client *c, struct gw_session *ses, struct gw_err *e)
{
    if (gw_session_streams(ses) != GW_PC_FIRST_LANE + c->nlanes)
        return gw_err_set(e, -EPROTO, "a resumed session of %u streams for a migration of %u",
                          gw_session_streams(ses), GW_PC_FIRST_LANE + c->nlanes);
    pthread_mutex_lock(&c->mu);
    c->st.error = 0;
    c->st.msg[0] = 0;
    c->st.lanes_ended = 0;
    c->st.push_done = false;
    pthread_mutex_unlock(&c->mu);
    gw_pc_client_use_session(c, ses);
    for (unsigned i = GW_PC_STREAM_PRIORITY; i < GW_PC_FIRST_LANE + c->nlanes; i++) {
        /* Past pre-copy for good: a resumed lane carries post-copy pages only. */
        c->rx[i] = (struct rx_thread){.c = c, .stream = i, .precopy_done = i >= GW_PC_FIRST_LANE};
        int r = -pthread_create(&c->rx[i].thr, NULL, rx_main, &c->rx[i]);
        if (r) return gw_err_set(e, r, "cannot start a receiver");
        c->rx[i].started = true;
    }
    return rerequest(c, e);
}
