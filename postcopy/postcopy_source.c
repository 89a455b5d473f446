/* Post-copy source (see postcopy_source.h). */
#include "postcopy/postcopy_source.h"
#include "postcopy/postcopy_source_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/codec/wire.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/dirty/dirty.h"
#include "engine/transport/session.h"
#include "engine/transport/tls.h"
#include "engine/vm/mem_data.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/vm.h"
#include "postcopy/hybrid_policy.h"
#include "postcopy/pc_digest.h"
#include "postcopy/pc_resume.h"
#include "postcopy/pc_server.h"
#include "postcopy/pc_wire.h"

#define STALE_MAX_ROUNDS 4u        /* STALE before the pause: at most this many */
#define STALE_ENOUGH_PAGES 512u     /* a round that dropped fewer (~2 ms of holes) is the last */
#define POLL_MS 200
#define KEEPALIVE_MS 200
#define DEFAULT_LINK_TIMEOUT_MS 2000


static int fail(struct gw_postcopy *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct gw_postcopy *m, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&m->lock);
    if (!m->prog.error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m->prog.error, sizeof m->prog.error, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&m->lock);
    return code ? code : -EIO;
}

static void set_phase(struct gw_postcopy *m, enum gw_mig_phase ph)
{
    pthread_mutex_lock(&m->lock);
    m->prog.phase = ph;
    pthread_mutex_unlock(&m->lock);
}

static bool cancelled(struct gw_postcopy *m)
{
    pthread_mutex_lock(&m->lock);
    bool c = m->cancel && !m->go_sent;
    pthread_mutex_unlock(&m->lock);
    return c;
}

static void update_stats(struct gw_postcopy *m)
{
    if (!m->srv) return;
    struct gw_pc_server_stats st;
    gw_pc_server_stats(m->srv, &st);
    uint64_t bytes = 0;
    for (unsigned i = 0; i < gw_session_streams(m->ses); i++) bytes += gw_session_bytes_sent(m->ses, i);
    pthread_mutex_lock(&m->lock);
    m->prog.sent_bytes = bytes;
    m->prog.pages_raw = st.pages_answered + st.pages_pushed;
    m->prog.moved_bytes = (st.pages_answered + st.pages_pushed) * 4096;
    m->prog.pc.used = true;
    m->prog.pc.pages_requested = m->base_requested + st.pages_requested;
    m->prog.pc.refused = m->base_refused + st.refused;
    uint64_t total = 0;
    for (uint64_t w = 0; w < (m->npages + 63) / 64; w++) total += (uint64_t)__builtin_popcountll(m->cur_push[w]);
    uint64_t sent = st.pages_answered + st.pages_pushed;
    m->prog.pc.pages_remaining = sent < total ? total - sent : 0;
    m->prog.remaining_bytes = m->prog.pc.pages_remaining * 4096;
    m->prog.total_ns = gw_now_ns() - m->t_start;
    if (m->t_go) m->prog.pc.postcopy_ns = gw_now_ns() - m->t_go;
    pthread_mutex_unlock(&m->lock);
}

static int mark_data(uint64_t off, uint64_t len, void *ctx)
{
    struct gw_postcopy *m = ctx;
    for (uint64_t p = off / 4096; p < (off + len + 4095) / 4096 && p < m->npages; p++)
        m->push[p / 64] |= 1ull << (p % 64);
    return 0;
}

/* After the pause: the pages that became data since the list taken while the VM ran (the
 * holes of m->push). Pages never turn back into holes, and the kernel's cost is the data it
 * steps over: looking only where the list found holes keeps the pause short (listing 128 MiB
 * of data took 2.7-4 ms here). */
static int mark_new_data(struct gw_postcopy *m)
{
    for (uint64_t p = 0; p < m->npages;) {
        if ((m->push[p / 64] >> (p % 64)) & 1) { p++; continue; }
        uint64_t q = p;
        while (q < m->npages && !((m->push[q / 64] >> (q % 64)) & 1)) {
            if (q % 64 == 0 && !m->push[q / 64] && q + 64 <= m->npages) q += 64;
            else q++;
        }
        int r = gw_mem_for_each_data_in(&m->vm->mem, p * 4096, q * 4096, mark_data, m);
        if (r) return r;
        p = q;
    }
    return 0;
}

/* The post-copy digest of the frozen memory: holes count as zero pages, unread. */
struct digest_ctx {
    const uint8_t *mem;
    uint64_t npages, next, sum;
};

static int digest_range(uint64_t off, uint64_t len, void *ctx)
{
    struct digest_ctx *d = ctx;
    uint64_t zh = gw_pc_zero_content_hash();
    uint64_t first = off / 4096, last = (off + len + 4095) / 4096;
    if (last > d->npages) last = d->npages;
    for (; d->next < first; d->next++) d->sum += gw_pc_mix(d->next, zh);
    for (; d->next < last; d->next++) d->sum += gw_pc_page_hash(d->next, d->mem + d->next * 4096);
    return 0;
}

static uint64_t memory_digest(struct gw_postcopy *m)
{
    struct digest_ctx d = {.mem = m->vm->mem.base, .npages = m->npages};
    gw_mem_for_each_data(&m->vm->mem, digest_range, &d);
    uint64_t zh = gw_pc_zero_content_hash();
    for (; d.next < d.npages; d.next++) d.sum += gw_pc_mix(d.next, zh);
    return d.sum;
}

static int send_op(struct gw_postcopy *m, enum gw_pc_op op, uint64_t a, struct gw_err *e)
{
    uint8_t b[GW_PC_HDR];
    gw_pc_pack(&(struct gw_pc_msg){.op = op, .a = a}, b);
    return gw_session_send(m->ses, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, e);
}

/* Next record on stream 0 within timeout_ms: 0 with *msg for a POSTCOPY record, -EPROTO for
 * the destination's ERROR (message in prog.error) or anything else, or the transport's. */
static int recv_control(struct gw_postcopy *m, struct gw_pc_msg *msg, struct gw_err *e)
{
    struct gw_wire_header h;
    int r = gw_conn_recv_record(gw_session_conn(m->ses, GW_PC_STREAM_CONTROL), &h, &m->buf, e);
    if (r) return r;
    if (h.type == GW_WIRE_ERROR) {
        int rr;
        Godwit__V1__MigError *em = gw_wire_unpack_error(m->buf.data, h.length, &rr);
        m->peer_error = true;
        gw_err_set(e, -EPROTO, "the destination stopped: %s", em && em->message ? em->message : "(no reason)");
        if (em) godwit__v1__mig_error__free_unpacked(em, NULL);
        return -EPROTO;
    }
    if (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(m->buf.data, h.length, msg))
        return gw_err_set(e, -EPROTO, "unexpected %s record from the destination", gw_wire_type_name(h.type));
    return 0;
}

static int setup(struct gw_postcopy *m)
{
    Godwit__V1__VmConfig cfg;
    Godwit__V1__MemoryRegion regions[GW_MEM_MAX_REGIONS];
    Godwit__V1__MemoryRegion *region_ptrs[GW_MEM_MAX_REGIONS];
    gw_vm_describe(m->vm, &cfg, regions, region_ptrs);
    struct gw_session_cfg sc = {
        .url = m->url, .nstreams = GW_PC_FIRST_LANE + m->p.lanes, .secret = m->secret,
        .secret_len = m->p.secret_len, .mem_size = m->vm->mem.size, .config = &cfg,
        .features = GW_WIRE_F_POSTCOPY | (m->p.codec == GW_CODEC_NONE ? 0 : GW_WIRE_F_LZ4) |
                    (m->p.precopy_rounds ? GW_WIRE_F_PC_STALE : 0),
        .timeout_ms = READY_TIMEOUT_MS, .preamble = m->p.preamble, .tls = m->p.tls, .token = m->p.token,
    };
    struct gw_err e = {0};
    struct gw_session *s;
    int r = gw_session_connect(&sc, &s, &e);
    if (r) return fail(m, r, "%s", e.msg[0] ? e.msg : strerror(-r));
    pthread_mutex_lock(&m->lock);
    m->ses = s;
    pthread_mutex_unlock(&m->lock);
    /* The switchover's records (state, READY, GO) and keepalives go first in the queues. */
    gw_conn_mark_urgent(gw_session_conn(s, GW_PC_STREAM_CONTROL));
    if (!(gw_session_features(s, 0) & GW_WIRE_F_POSTCOPY))
        return fail(m, -EPROTONOSUPPORT, "the destination does not take post-copy migrations");
    if (gw_pc_resume_key(m->secret, m->p.secret_len, s, m->p.token, m->resume_key))
        return fail(m, -EIO, "cannot derive the resume key");
    if (cancelled(m)) return fail(m, -ECANCELED, "cancelled");
    m->npages = m->vm->mem.size / 4096;
    m->push = calloc((m->npages + 63) / 64, 8);
    m->cur_push = calloc((m->npages + 63) / 64, 8);
    if (!m->push || !m->cur_push) return fail(m, -ENOMEM, "out of memory");
    struct gw_pc_server_cfg pc = {.ses = m->ses, .mem = m->vm->mem.base, .mem_size = m->vm->mem.size,
                                  .nlanes = m->p.lanes, .codec = m->p.codec, .rate_bps = m->p.bandwidth_limit_bps,
                                      .no_priority = m->p.no_priority};
    r = gw_pc_server_open(&pc, &m->srv, &e);
    if (r) return fail(m, r, "%s", e.msg);
    pthread_mutex_lock(&m->lock);
    m->prog.setup_ns = gw_now_ns() - m->t_start;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* ---- hybrid: pre-copy rounds while the VM runs ---- */

#define PFN_BATCH 4096u

/* Keeps pre-copy under the policy's bandwidth limit, in short sleeps so a cancel is seen. */
static void pace_precopy(struct gw_postcopy *m, uint64_t moved)
{
    uint64_t limit = m->p.bandwidth_limit_bps;
    if (!limit) return;
    uint64_t due = m->t_precopy + gw_u64_of_double((double)moved * 1e9 / (double)limit);
    for (uint64_t now; !cancelled(m) && (now = gw_now_ns()) < due;) {
        uint64_t d = due - now < 20000000ull ? due - now : 20000000ull;
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static int queue_pfns(struct gw_postcopy *m, const uint64_t *pfns, size_t n)
{
    struct gw_err e = {0};
    int r = n ? gw_pc_server_precopy(m->srv, pfns, n, &e) : 0;
    if (r) return fail(m, r, "pre-copy: %s", e.msg);
    pthread_mutex_lock(&m->lock);
    m->prog.moved_bytes += n * 4096ull;
    uint64_t moved = m->prog.moved_bytes;
    pthread_mutex_unlock(&m->lock);
    pace_precopy(m, moved);
    return cancelled(m) ? fail(m, -ECANCELED, "cancelled") : 0;
}

static int queue_range(uint64_t off, uint64_t len, void *ctx)
{
    struct gw_postcopy *m = ctx;
    uint64_t pfns[256];
    size_t n = 0;
    for (uint64_t p = off / 4096; p < (off + len + 4095) / 4096 && p < m->npages; p++) {
        pfns[n++] = p;
        if (n == 256) {
            int r = queue_pfns(m, pfns, n);
            if (r) return r;
            n = 0;
        }
    }
    return queue_pfns(m, pfns, n);
}

/* The pages of the last fetch, each 4096-page group re-protected just before it is queued. */
static int queue_dirty(struct gw_postcopy *m)
{
    uint64_t *pfns = m->pfns;
    const struct gw_dirty_consumer *d = m->dirty;
    for (uint64_t w0 = 0; w0 < d->words; w0 += PFN_BATCH / 64) {
        uint64_t wend = w0 + PFN_BATCH / 64 < d->words ? w0 + PFN_BATCH / 64 : d->words;
        size_t n = 0;
        for (uint64_t w = w0; w < wend; w++)
            for (uint64_t bits = d->bitmap[w]; bits; bits &= bits - 1)
                pfns[n++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
        if (!n) continue;
        uint64_t first = w0 * 64, cnt = (wend - w0) * 64;
        if (first + cnt > d->npages) cnt = d->npages - first;
        int r = gw_dirty_clear(m->dirty, first, cnt);
        if (r) return fail(m, r, "clearing the dirty log: %s", strerror(-r));
        if ((r = queue_pfns(m, pfns, n))) return r;
    }
    return 0;
}

int gw_postcopy_switch(struct gw_postcopy *m)
{
    pthread_mutex_lock(&m->lock);
    int r = !m->p.precopy_rounds || m->switched || m->finished ? -EALREADY : 0;
    if (!r) m->switch_now = true;
    pthread_mutex_unlock(&m->lock);
    return r;
}

/* 1 when the operator asked for post-copy now. */
static int operator_switch(struct gw_postcopy *m)
{
    pthread_mutex_lock(&m->lock);
    bool now = m->switch_now;
    pthread_mutex_unlock(&m->lock);
    return now ? 1 : 0;
}

static int precopy_rounds(struct gw_postcopy *m)
{
    set_phase(m, GW_MIG_PRECOPY);
    char why[200] = "";
    int r = gw_dirty_attach(m->vm, GW_DIRTY_KVM_BITMAP, &m->dirty, why, sizeof why);
    if (r) return fail(m, r, "cannot start dirty logging: %s", why[0] ? why : strerror(-r));
    struct gw_hybrid_policy pol = {.downtime_limit_ns = m->p.downtime_limit_ns, .dirty_rate_pct = m->p.dirty_rate_pct,
                                   .ns_per_gib = m->p.ns_per_gib, .mem_size = m->vm->mem.size};
    uint64_t t0 = m->t_precopy = gw_now_ns(), t_fetch = t0;
    r = gw_mem_for_each_data(&m->vm->mem, queue_range, m);
    unsigned slow = 0;
    /* The operator's switch is taken between rounds: a round cut short would leave pages that
     * were fetched from the dirty log but neither sent nor in the final fetch. */
    for (unsigned round = 1; !r && round < m->p.precopy_rounds && !(r = operator_switch(m)); round++) {
        uint64_t n;
        r = gw_dirty_fetch(m->dirty, &n);
        if (r) return fail(m, r, "reading the dirty log: %s", strerror(-r));
        /* Rate: guest bytes queued so far over the time taken (the pump blocks while full, so
         * this follows the link); the policy (hybrid_policy.h) weighs it against what the
         * guest dirtied since the last fetch. */
        uint64_t now = gw_now_ns();
        pthread_mutex_lock(&m->lock);
        struct gw_hybrid_round hr = {.dirty_bytes = n * 4096, .round_ns = now - t_fetch,
                                     .moved_bytes = m->prog.moved_bytes, .elapsed_ns = now - t0};
        t_fetch = now;
        struct gw_hybrid_eval ev;
        enum gw_hybrid_decision d = gw_hybrid_decide(&pol, &hr, &slow, &ev);
        m->prog.round = round;
        m->prog.remaining_bytes = n * 4096;
        m->prog.throughput_bps = ev.rate_bps;
        m->prog.dirty_rate_bps = ev.dirty_bps;
        m->prog.expected_downtime_ns = ev.projected_ns;
        snprintf(m->prog.note, sizeof m->prog.note, "%s", gw_hybrid_note(d));
        pthread_mutex_unlock(&m->lock);
        /* Switching: what this fetch found goes once, after the switch, and not in one more
         * round that the guest would only dirty again (its bits stay in the log until then). */
        if (d != GW_HYBRID_GO_ON) {
            gw_info("vm %s: hybrid after round %u: %s", m->vm->name, round, gw_hybrid_note(d));
            break;
        }
        r = queue_dirty(m);
    }
    if (r == 1) {
        pthread_mutex_lock(&m->lock);
        snprintf(m->prog.note, sizeof m->prog.note, "switched to post-copy by the operator");
        pthread_mutex_unlock(&m->lock);
        gw_info("vm %s: switching to post-copy on the operator's word", m->vm->name);
        r = 0;
    }
    return r;
}

/* One STALE and its answer: the pages dropped there. */
static int send_stale_once(struct gw_postcopy *m, uint64_t *n, uint64_t *dropped)
{
    int r = gw_dirty_fetch(m->dirty, n);
    if (r) return fail(m, r, "reading the dirty log: %s", strerror(-r));
    *dropped = 0;
    if (!*n) return 0;
    size_t words = (m->npages + 63) / 64;
    uint8_t *sm = malloc(GW_PC_HDR + words * 8);
    if (!sm) return fail(m, -ENOMEM, "out of memory");
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_STALE, .a = m->npages}, sm);
    for (size_t w = 0; w < words; w++) gw_pc_put64(sm + GW_PC_HDR + 8 * w, m->dirty->bitmap[w]);
    struct gw_err e = {0};
    r = gw_session_send(m->ses, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, sm, GW_PC_HDR + words * 8, &e);
    free(sm);
    if (r) return fail(m, r, "sending the stale pages: %s", e.msg);
    struct gw_pc_msg msg = {0};
    do {
        if (cancelled(m)) return fail(m, -ECANCELED, "cancelled");
        r = recv_control(m, &msg, &e);
        if (r) return fail(m, r, "the destination failed before the switch, while dropping stale pre-copied pages: %s",
                           e.msg);
    } while (msg.op == GW_PC_KEEPALIVE);
    if (msg.op != GW_PC_STALE_DROPPED) return fail(m, -EPROTO, "destination sent post-copy op %u for STALE", msg.op);
    *dropped = msg.a;
    return 0;
}

/* Hybrid, pre-copy drained, the guest still running here: names the pages dirtied since they
 * were sent (STALE), so that the destination drops its copies now and not in the pause, and
 * waits until it has. The guest dirties more meanwhile, so again while a round still drops
 * many (each round is shorter: what is dropped once is not dropped again). Their bits stay in
 * the log: DIRTY names them all again, and the pause drops only what is left. */
static int send_stale(struct gw_postcopy *m)
{
    uint64_t t0 = gw_now_ns(), n = 0, dropped = 0, total = 0;
    unsigned rounds = 0;
    do {
        int r = send_stale_once(m, &n, &dropped);
        if (r) return r;
        total += dropped;
        rounds++;
    } while (dropped > STALE_ENOUGH_PAGES && rounds < STALE_MAX_ROUNDS);
    gw_info("vm %s: hybrid: the destination dropped %llu of %llu stale pages before the pause (%u rounds, %.1f ms, "
            "%llu in the last)", m->vm->name, (unsigned long long)total, (unsigned long long)n, rounds,
            (gw_now_ns() - t0) / 1e6, (unsigned long long)dropped);
    return 0;
}

/* Pause, start the page traffic, state, READY. 0: the destination is READY. */
static int hand_over(struct gw_postcopy *m)
{
    if (m->dirty) {
        struct gw_err e = {0};
        int r = gw_pc_server_precopy_drain(m->srv, &e);
        if (r) return fail(m, r, "pre-copy: %s", e.msg);
        if (gw_session_features(m->ses, 0) & GW_WIRE_F_PC_STALE) {
            /* Pre-copy is over: PRECOPY_END now, so that the destination drops the stale
             * pages with every lane idle (pc_wire.h). */
            if ((r = gw_pc_server_precopy_end(m->srv, &e))) return fail(m, r, "ending pre-copy: %s", e.msg);
            m->precopy_ended = true;
            if ((r = send_stale(m))) return r;
        }
    }
    pthread_mutex_lock(&m->lock);
    m->switched = true;
    m->prog.phase = GW_MIG_SWITCHOVER;
    pthread_mutex_unlock(&m->lock);
    gw_vm_flush_devices(m->vm);
    if (!m->dirty) {
        /* Plain post-copy: every page that holds data is pushed; list them while the VM
         * still runs, and after the pause only what was a hole then. */
        int r = gw_mem_for_each_data(&m->vm->mem, mark_data, m);
        if (r) return fail(m, r, "cannot list guest memory: %s", strerror(-r));
    }
    m->t_pause = gw_now_ns();
    int r = gw_vm_pause(m->vm);
    if (r) return fail(m, r, "cannot pause the VM: %s", strerror(-r));
    m->t_paused = gw_now_ns();
    if (m->dirty) {
        /* Hybrid: what changed since its last round goes again. */
        uint64_t n;
        r = gw_dirty_fetch(m->dirty, &n);
        if (r) return fail(m, r, "reading the dirty log: %s", strerror(-r));
        memcpy(m->push, m->dirty->bitmap, (m->npages + 63) / 64 * 8);
        m->dirty_done = m->dirty;
        m->dirty = NULL;
    } else {
        /* Every page that ever held data is pushed; holes are zero on both sides. */
        r = mark_new_data(m);
        if (r) return fail(m, r, "cannot list guest memory: %s", strerror(-r));
    }
    m->t_list = gw_now_ns();
    struct gw_err e = {0};
    r = m->precopy_ended ? 0 : gw_pc_server_precopy_end(m->srv, &e);
    if (r) return fail(m, r, "ending pre-copy: %s", e.msg);
    size_t words = (m->npages + 63) / 64;
    uint8_t *dm = malloc(GW_PC_HDR + words * 8);
    if (!dm) return fail(m, -ENOMEM, "out of memory");
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_DIRTY, .a = m->npages}, dm);
    for (size_t w = 0; w < words; w++) gw_pc_put64(dm + GW_PC_HDR + 8 * w, m->push[w]);
    r = gw_session_send(m->ses, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, dm, GW_PC_HDR + words * 8, &e);
    free(dm);
    if (r) return fail(m, r, "sending the dirty pages: %s", e.msg);
    m->t_dirty = gw_now_ns();
    memcpy(m->cur_push, m->push, words * 8);
    gw_pc_server_hold_push(m->srv);   /* until GO: the state and GO go out on an idle link */
    r = gw_pc_server_run(m->srv, m->cur_push, &e);
    if (r) return fail(m, r, "%s", e.msg);
    Godwit__V1__VmState *st = NULL;
    r = gw_vm_save_state(m->vm, &st);
    if (r) return fail(m, r, "cannot read the VM state: %s", strerror(-r));
    r = gw_session_send_msg(m->ses, GW_PC_STREAM_CONTROL, GW_WIRE_STATE, &st->base, &e);
    gw_vm_state_free(st);
    if (r) return fail(m, r, "sending the state: %s", e.msg);
    m->t_state = gw_now_ns();
    struct gw_pc_msg msg = {0};
    for (;;) {
        if (cancelled(m)) return fail(m, -ECANCELED, "cancelled");
        r = recv_control(m, &msg, &e);
        if (r) return fail(m, r, "destination not ready: %s", e.msg);
        if (msg.op == GW_PC_READY) return 0;
        return fail(m, -EPROTO, "destination sent post-copy op %u before READY", msg.op);
    }
}

static void set_done(struct gw_postcopy *m, uint64_t resent)
{
    pthread_mutex_lock(&m->lock);
    m->prog.pc.pages_resent = resent;
    m->prog.pc.digest_ok = true;
    m->prog.pc.pages_remaining = 0;
    m->prog.remaining_bytes = 0;
    pthread_mutex_unlock(&m->lock);
}

/* Serves the current session until DONE. 0: completed; -errno with e: the link broke (or
 * the destination stopped for good: m->peer_error). Keepalives go out every KEEPALIVE_MS; a
 * destination silent for the link timeout counts as lost. */
static int serve_session(struct gw_postcopy *m, struct gw_err *e)
{
    int r = send_op(m, GW_PC_DIGEST, memory_digest(m), e);
    if (r) return r;
    struct gw_conn *c0 = gw_session_conn(m->ses, GW_PC_STREAM_CONTROL);
    gw_conn_set_timeout(c0, POLL_MS);
    uint64_t link_ns = (uint64_t)(m->p.link_timeout_ms ? m->p.link_timeout_ms : DEFAULT_LINK_TIMEOUT_MS) * 1000000ull;
    uint64_t heard = gw_now_ns(), ka = 0;
    for (;;) {
        uint64_t now = gw_now_ns();
        if (now - ka >= KEEPALIVE_MS * 1000000ull) {
            if ((r = send_op(m, GW_PC_KEEPALIVE, 0, e))) return r;
            ka = now;
        }
        struct gw_pc_msg msg = {0};
        uint64_t before = c0->bytes_recv;
        r = recv_control(m, &msg, e);
        update_stats(m);
        if (GW_PC_QUIET_TIMEOUT(r, c0, before)) {
            struct gw_pc_server_stats st;
            gw_pc_server_stats(m->srv, &st);
            if (st.error) return gw_err_set(e, st.error, "%s", st.msg);
            if (gw_now_ns() - heard > link_ns)
                return gw_err_set(e, -ETIMEDOUT, "no word from the destination for %llu ms",
                                  (unsigned long long)(link_ns / 1000000));
            continue;
        }
        if (r) return r;
        heard = gw_now_ns();
        if (msg.op == GW_PC_KEEPALIVE) continue;
        if (msg.op != GW_PC_DONE) {
            m->peer_error = true;
            return gw_err_set(e, -EPROTO, "destination sent post-copy op %u", msg.op);
        }
        set_done(m, msg.b);
        return 0;
    }
}

/* After GO: serve until DONE, across broken links. Returns 0 (completed), or -errno with the
 * VM paused here. */
static int serve(struct gw_postcopy *m)
{
    for (;;) {
        struct gw_err e = {0};
        int r = serve_session(m, &e);
        if (!r) return 0;
        if (m->peer_error) return fail(m, r, "the destination stopped post-copy: %s", e.msg);
        r = gw_postcopy_recover(m, e.msg);
        if (r == 1) { set_done(m, 0); return 0; }
        if (r) return r;
    }
}

static void *migration_thread(void *arg)
{
    struct gw_postcopy *m = arg;
    enum gw_mig_phase end = GW_MIG_FAILED;
    int r = setup(m);
    if (!r && m->p.precopy_rounds) r = precopy_rounds(m);
    if (!r) r = hand_over(m);
    if (!r) {
        /* The last moment a cancel counts: GO is decided under the lock. */
        pthread_mutex_lock(&m->lock);
        if (m->cancel) r = -ECANCELED;
        else m->go_sent = true;
        pthread_mutex_unlock(&m->lock);
        if (r) fail(m, r, "cancelled");
    }
    if (r) {
        /* Before GO: the VM is ours and runs on here. */
        end = r == -ECANCELED ? GW_MIG_CANCELLED : GW_MIG_FAILED;
        if (m->ses) {
            gw_session_send_error(m->ses, GW_PC_STREAM_CONTROL, r, m->prog.error);
            gw_session_shutdown(m->ses);
        }
        gw_pc_server_close(m->srv);
        m->srv = NULL;
        gw_dirty_detach(m->dirty);
        m->dirty = NULL;
        gw_dirty_detach(m->dirty_done);
        m->dirty_done = NULL;
        if (gw_vm_is_paused(m->vm)) gw_vm_resume(m->vm);
        gw_warn("vm %s: post-copy migration to %s %s: %s; the VM runs on here", m->vm->name, m->url,
                end == GW_MIG_CANCELLED ? "cancelled" : "failed", m->prog.error);
    } else {
        /* GO: from here the VM is the destination's and never resumed here by itself. */
        struct gw_err e = {0};
        pthread_mutex_lock(&m->lock);
        m->prog.phase = GW_MIG_POSTCOPY_ACTIVE;
        pthread_mutex_unlock(&m->lock);
        m->t_go = gw_now_ns();
        r = send_op(m, GW_PC_GO, 0, &e);
        gw_pc_server_release_push(m->srv);
        gw_vm_disk_lock(m->vm, false, 0);
        pthread_mutex_lock(&m->lock);
        m->prog.measured_downtime_ns = m->t_go - m->t_pause;
        pthread_mutex_unlock(&m->lock);
        gw_dirty_detach(m->dirty_done);
        m->dirty_done = NULL;
        /* GO lost with the link: the destination never started the VM, and it says so when
         * the source reconnects (RECEIVED comes only from a destination past GO). */
        if (r) fail(m, r, "the link broke while sending GO (%s)", e.msg);
        else r = serve(m);
        if (r) {
            end = GW_MIG_POSTCOPY_PAUSED;
            gw_error("vm %s: post-copy to %s stopped: %s; the VM stays paused here with all its pages",
                     m->vm->name, m->url, m->prog.error);
        } else {
            end = GW_MIG_COMPLETED;
            /* Where the pause went: stopping the vCPUs, the dirty pages, the state, then the
             * destination settling its memory and loading the state until READY. */
            gw_info("vm %s: post-copy to %s completed: pause %.2f ms (vCPUs %.2f, page list %.2f, dirty %.2f, "
                    "state %.2f, destination %.2f), %llu pages requested", m->vm->name, m->url,
                    m->prog.measured_downtime_ns / 1e6, (m->t_paused - m->t_pause) / 1e6, (m->t_list - m->t_paused) / 1e6,
                    (m->t_dirty - m->t_list) / 1e6, (m->t_state - m->t_dirty) / 1e6, (m->t_go - m->t_state) / 1e6,
                    (unsigned long long)m->prog.pc.pages_requested);
        }
        update_stats(m);
        if (m->ses) gw_session_shutdown(m->ses);
        gw_pc_server_close(m->srv);
        m->srv = NULL;
    }
    pthread_mutex_lock(&m->lock);
    struct gw_session *s = m->ses;
    m->ses = NULL;
    m->prog.phase = end;
    m->prog.total_ns = gw_now_ns() - m->t_start;
    if (end == GW_MIG_POSTCOPY_PAUSED && !strstr(m->prog.error, "paused here")) {
        size_t n = strlen(m->prog.error);
        snprintf(m->prog.error + n, sizeof m->prog.error - n, "; the VM stays paused here");
    }
    pthread_mutex_unlock(&m->lock);
    gw_session_close(s);
    gw_rbuf_free(&m->buf);
    free(m->push);
    m->push = NULL;
    free(m->cur_push);
    m->cur_push = NULL;
    pthread_mutex_lock(&m->lock);
    m->finished = true;
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int gw_postcopy_start(struct gw_vm *vm, const struct gw_postcopy_params *p, struct gw_postcopy **out)
{
    if (!p->url || strlen(p->url) >= sizeof ((struct gw_postcopy *)0)->url || !p->secret || !p->secret_len ||
        p->lanes > GW_WIRE_MAX_STREAMS - GW_PC_FIRST_LANE) {
        gw_tls_ctx_free(p->tls);
        return -EINVAL;
    }
    struct gw_postcopy *m = calloc(1, sizeof *m);
    if (!m) { gw_tls_ctx_free(p->tls); return -ENOMEM; }
    m->vm = vm;
    m->p = *p;
    if (!m->p.lanes) m->p.lanes = 2;
    snprintf(m->url, sizeof m->url, "%s", p->url);
    m->secret = malloc(p->secret_len);
    if (!m->secret) { gw_tls_ctx_free(p->tls); free(m); return -ENOMEM; }
    memcpy(m->secret, p->secret, p->secret_len);
    m->p.secret = m->secret;
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;   /* backoff deadlines are CLOCK_MONOTONIC */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    m->t_start = gw_now_ns();
    m->prog.phase = GW_MIG_SETUP;
    m->prog.total_bytes = vm->mem.size;
    m->prog.pc.used = true;
    int r = pthread_create(&m->thread, NULL, migration_thread, m);
    if (r) { pthread_mutex_destroy(&m->lock); gw_tls_ctx_free(m->p.tls); free(m->secret); free(m); return -r; }
    *out = m;
    return 0;
}

void gw_postcopy_progress(struct gw_postcopy *m, struct gw_mig_progress *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->prog;
    if (!m->finished) out->total_ns = gw_now_ns() - m->t_start;
    pthread_mutex_unlock(&m->lock);
}

void gw_postcopy_cancel(struct gw_postcopy *m)
{
    pthread_mutex_lock(&m->lock);
    if (!m->go_sent) {
        m->cancel = true;
        if (m->ses) gw_session_shutdown(m->ses);   /* wakes the thread wherever it waits */
    }
    pthread_mutex_unlock(&m->lock);
}

bool gw_postcopy_finished(struct gw_postcopy *m)
{
    pthread_mutex_lock(&m->lock);
    bool f = m->finished;
    pthread_mutex_unlock(&m->lock);
    return f;
}

void gw_postcopy_free(struct gw_postcopy *m)
{
    if (!m) return;
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->lock);
    memset(m->resume_key, 0, sizeof m->resume_key);
    if (m->secret) memset(m->secret, 0, m->p.secret_len);
    free(m->secret);
    gw_tls_ctx_free(m->p.tls);
    free(m);
}
