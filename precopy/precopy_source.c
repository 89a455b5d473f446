/* Pre-copy source (see precopy_source.h). One thread drives the whole migration; the
 * transport's sender threads encode and send the pages it queues. */
#include "precopy/precopy_source.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/dirty/dirty.h"
#include "precopy/precopy_link.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/mem_data.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/vm.h"
#include "engine/transport/tls.h"

#define PFN_BATCH 4096u        /* pages queued per call (and cleared per KVM call) */
#define COMMIT_TIMEOUT_MS 15000
#define PACE_SLICE_NS 50000000ull  /* a bandwidth-limited migration checks for a stop this often */

struct gw_precopy {
    struct gw_vm *vm;
    struct gw_precopy_params p;
    char url[256];
    uint8_t *secret;
    pthread_t thread;
    pthread_mutex_t lock;         /* protects prog, cancel, finished */
    struct gw_mig_progress prog;
    bool cancel;
    bool finished;

    uint64_t deadline_ns;         /* policy.timeout_s from the start, covers connect too */
    struct gw_mig_sender *tx;     /* set and cleared under lock (gw_precopy_cancel uses it) */
    /* migration thread only */
    struct gw_dirty_consumer *dirty;
    struct gw_chunk_digest cd;
    struct gw_conv_state conv;
    uint64_t t_start;
    uint64_t round_bytes;         /* guest bytes queued in the current round */
    uint64_t round_t0;
    uint64_t pfns[PFN_BATCH];
    struct gw_err err;
};

static void set_phase(struct gw_precopy *m, enum gw_mig_phase ph)
{
    pthread_mutex_lock(&m->lock);
    m->prog.phase = ph;
    pthread_mutex_unlock(&m->lock);
}

static int fail(struct gw_precopy *m, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct gw_precopy *m, int code, const char *fmt, ...)
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

static bool cancelled(struct gw_precopy *m)
{
    pthread_mutex_lock(&m->lock);
    bool c = m->cancel;
    pthread_mutex_unlock(&m->lock);
    return c;
}

/* Why the migration must stop now: 0, -ECANCELED (asked to) or -ETIMEDOUT (the policy's
 * timeout, which bounds the whole migration). */
static int stop_reason(struct gw_precopy *m)
{
    if (cancelled(m)) return -ECANCELED;
    return m->deadline_ns && gw_now_ns() >= m->deadline_ns ? -ETIMEDOUT : 0;
}

/* Fails with the stop reason's message. */
static int fail_stopped(struct gw_precopy *m, int why)
{
    if (why == -ETIMEDOUT)
        return fail(m, why, "did not converge within %llu s",
                    (unsigned long long)(m->p.policy.timeout_ns / 1000000000ull));
    return fail(m, -ECANCELED, "cancelled");
}

/* Milliseconds left before the deadline (at least 1), capped at cap_ms. */
static int remaining_ms(struct gw_precopy *m, int cap_ms)
{
    if (!m->deadline_ns) return cap_ms;
    uint64_t now = gw_now_ns();
    uint64_t left = m->deadline_ns > now ? (m->deadline_ns - now) / 1000000 : 0;
    return left < 1 ? 1 : left < (uint64_t)cap_ms ? (int)left : cap_ms;
}

static void update_stats(struct gw_precopy *m)
{
    struct gw_mig_stats st;
    gw_mig_sender_stats(m->tx, &st);
    pthread_mutex_lock(&m->lock);
    m->prog.sent_bytes = st.bytes_wire;
    m->prog.pages_zero = st.codec.pages[GW_PAGE_ZERO];
    m->prog.pages_raw = st.codec.pages[GW_PAGE_RAW];
    m->prog.pages_lz4 = st.codec.pages[GW_PAGE_LZ4];
    m->prog.total_ns = gw_now_ns() - m->t_start;
    m->prog.throughput_bps = m->prog.total_ns ? gw_u64_of_double(st.bytes_wire * 1e9 / m->prog.total_ns) : 0;
    m->prog.dirty_rate_bps = m->conv.dirty_rate_bps;
    m->prog.expected_downtime_ns = m->conv.expected_downtime_ns;
    m->prog.throttle_pct = m->conv.throttle_pct;
    snprintf(m->prog.note, sizeof m->prog.note, "%s", m->conv.reason);
    pthread_mutex_unlock(&m->lock);
}

/* Keeps the queueing rate under the policy's bandwidth limit (guest bytes per second). */
static void pace(struct gw_precopy *m)
{
    uint64_t limit = m->p.policy.bandwidth_limit_bps;
    if (!limit) return;
    uint64_t due_ns = gw_u64_of_double((double)m->round_bytes * 1e9 / (double)limit);
    /* In slices, so that a cancel, the deadline or a broken link is seen within one. */
    for (uint64_t spent; (spent = gw_now_ns() - m->round_t0) < due_ns && !stop_reason(m) &&
                         !gw_mig_sender_failed(m->tx);) {
        uint64_t d = due_ns - spent < PACE_SLICE_NS ? due_ns - spent : PACE_SLICE_NS;
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static int queue_pfns(struct gw_precopy *m, size_t n)
{
    if (!n) return 0;
    /* Marked before they are queued: the sending thread hashes them once sent. */
    for (size_t i = 0; i < n; i++) gw_chunk_digest_mark(&m->cd, m->pfns[i], 1);
    int r = gw_mig_send_pages(m->tx, m->pfns, n);
    if (r && stop_reason(m)) return fail_stopped(m, stop_reason(m));
    if (r) return fail(m, r, "sending pages: %s", gw_mig_sender_error(m->tx));
    m->round_bytes += n * 4096ull;
    pace(m);
    return 0;
}

static int queue_range(uint64_t off, uint64_t len, void *ctx)
{
    struct gw_precopy *m = ctx;
    uint64_t first = off / 4096, last = (off + len + 4095) / 4096;
    size_t n = 0;
    for (uint64_t p = first; p < last; p++) {
        m->pfns[n++] = p;
        if (n == PFN_BATCH) {
            int r = queue_pfns(m, n);
            if (r) return r;
            n = 0;
            if ((r = stop_reason(m))) return fail_stopped(m, r);
        }
    }
    return queue_pfns(m, n);
}

/* Queues every dirty page of the last fetch, re-protecting each 4096-page group just before
 * its pages are queued (manual mode), so a write after that shows up in the next round. */
static int queue_dirty(struct gw_precopy *m, bool clear)
{
    const struct gw_dirty_consumer *d = m->dirty;
    for (uint64_t w0 = 0; w0 < d->words; w0 += PFN_BATCH / 64) {
        uint64_t wend = w0 + PFN_BATCH / 64 < d->words ? w0 + PFN_BATCH / 64 : d->words;
        size_t n = 0;
        for (uint64_t w = w0; w < wend; w++) {
            uint64_t bits = d->bitmap[w];
            while (bits) {
                m->pfns[n++] = w * 64 + (uint64_t)__builtin_ctzll(bits);
                bits &= bits - 1;
            }
        }
        if (!n) continue;
        if (clear) {
            uint64_t first = w0 * 64, cnt = (wend - w0) * 64;
            if (first + cnt > d->npages) cnt = d->npages - first;
            int r = gw_dirty_clear(m->dirty, first, cnt);
            if (r) return fail(m, r, "clearing the dirty log: %s", strerror(-r));
        }
        int r = queue_pfns(m, n);
        if (r) return r;
        if (clear && (r = stop_reason(m))) return fail_stopped(m, r);
    }
    return 0;
}

static int end_round(struct gw_precopy *m, uint32_t round, bool final)
{
    int r = gw_mig_send_end_of_round(m->tx, round, final, NULL);
    if (r && !final && stop_reason(m)) return fail_stopped(m, stop_reason(m));
    if (r) return fail(m, r, "round %u: %s", round, gw_mig_sender_error(m->tx));
    gw_conv_round_sent(&m->conv, m->round_bytes, gw_now_ns() - m->round_t0);
    pthread_mutex_lock(&m->lock);
    m->prog.moved_bytes += m->round_bytes;
    m->prog.round = round;
    pthread_mutex_unlock(&m->lock);
    update_stats(m);
    return 0;
}

/* On the link's sending threads: the chunks of pages just sent are hashed there and then,
 * alongside the transfer, instead of all at once after the round. */
static void hash_sent(void *ctx, const uint64_t *pfns, uint32_t n)
{
    gw_chunk_digest_hash_pages(ctx, pfns, n);
}

static int setup(struct gw_precopy *m)
{
    struct gw_vm *vm = m->vm;
    Godwit__V1__VmConfig cfg;
    Godwit__V1__MemoryRegion regions[GW_MEM_MAX_REGIONS];
    Godwit__V1__MemoryRegion *region_ptrs[GW_MEM_MAX_REGIONS];
    gw_vm_describe(vm, &cfg, regions, region_ptrs);
    int r = gw_chunk_digest_init(&m->cd, vm->mem.base, vm->mem.size);
    if (r) return fail(m, r, "digest: %s", strerror(-r));
    struct gw_mig_sender_cfg sc = {
        .url = m->url, .nstreams = m->p.streams, .secret = m->secret, .secret_len = m->p.secret_len,
        .mem = vm->mem.base, .mem_size = vm->mem.size, .config = &cfg, .codec = m->p.codec,
        .timeout_ms = remaining_ms(m, GW_MIG_DEFAULT_TIMEOUT_MS),  /* connect and handshake too */
        .sent = hash_sent, .sent_ctx = &m->cd,
        .preamble = m->p.preamble, .tls = m->p.tls, .token = m->p.token,
        .attach = m->p.attach, .attach_ctx = m->p.attach_ctx,
    };
    struct gw_mig_sender *tx;
    r = gw_mig_sender_open(&sc, &tx, &m->err);
    if (r && (r == -ETIMEDOUT || stop_reason(m))) {
        int why = stop_reason(m);
        if (why == -ECANCELED) return fail_stopped(m, why);
        return fail(m, -ETIMEDOUT, "could not reach the destination within the %llu s timeout: %s",
                    (unsigned long long)(m->p.policy.timeout_ns / 1000000000ull), m->err.msg);
    }
    if (r) return fail(m, r, "%s", m->err.msg[0] ? m->err.msg : strerror(-r));
    pthread_mutex_lock(&m->lock);
    m->tx = tx;
    bool stop = m->cancel;
    pthread_mutex_unlock(&m->lock);
    if (stop) return fail_stopped(m, -ECANCELED);
    char why[200] = "";
    r = gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &m->dirty, why, sizeof why);
    if (r) return fail(m, r, "cannot start dirty logging: %s", why[0] ? why : strerror(-r));
    pthread_mutex_lock(&m->lock);
    m->prog.setup_ns = gw_now_ns() - m->t_start;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

/* Rounds until the policy says switch over (returns the last round number) or stop. */
static int precopy_rounds(struct gw_precopy *m, uint32_t *last_round)
{
    set_phase(m, GW_MIG_PRECOPY);
    m->round_t0 = gw_now_ns();
    m->round_bytes = 0;
    uint64_t fetch_t = m->round_t0;
    int r = gw_mem_for_each_data(&m->vm->mem, queue_range, m);
    uint64_t t_queued = gw_now_ns();
    if (!r) r = end_round(m, 0, false);
    if (r) return r;
    uint64_t t_sent = gw_now_ns();
    gw_chunk_digest_refresh(&m->cd);
    gw_debug("round 0: %llu MiB queued in %.1f ms, sent %.1f ms later, digest %.1f ms",
             (unsigned long long)(m->round_bytes >> 20), (t_queued - m->round_t0) / 1e6, (t_sent - t_queued) / 1e6,
             (gw_now_ns() - t_sent) / 1e6);
    for (uint32_t round = 1;; round++) {
        if ((r = stop_reason(m))) return fail_stopped(m, r);
        uint64_t dirty_pages;
        r = gw_dirty_fetch(m->dirty, &dirty_pages);
        if (r) return fail(m, r, "reading the dirty log: %s", strerror(-r));
        uint64_t now = gw_now_ns();
        enum gw_conv_decision d = gw_conv_decide(&m->conv, &m->p.policy, dirty_pages, now - fetch_t,
                                                 round - 1, now - m->t_start);
        fetch_t = now;
        pthread_mutex_lock(&m->lock);
        m->prog.remaining_bytes = dirty_pages * 4096;
        pthread_mutex_unlock(&m->lock);
        update_stats(m);
        gw_debug("migration round %u: %llu dirty pages, %s", round, (unsigned long long)dirty_pages, m->conv.reason);
        if (d == GW_CONV_CANCEL) return fail(m, -ETIMEDOUT, "%s", m->conv.reason);
        if (d == GW_CONV_SWITCHOVER) { *last_round = round; return 0; }
        if (m->conv.throttle_pct != __atomic_load_n(&m->vm->throttle_pct, __ATOMIC_RELAXED))
            gw_vm_set_throttle(m->vm, m->conv.throttle_pct);
        m->round_t0 = gw_now_ns();
        m->round_bytes = 0;
        r = queue_dirty(m, true);
        if (!r) r = end_round(m, round, false);
        if (r) return r;
        gw_chunk_digest_refresh(&m->cd);
    }
}

/* Pause, last pages, state, digest, COMMIT and READY. Returns 0 when the destination is
 * READY; the VM is then paused here. */
static int switchover_prepare(struct gw_precopy *m, uint32_t round, uint64_t *t_pause)
{
    /* Everything sent so far must be in the destination's memory before we pause: what
     * still sits in socket buffers would otherwise be moved during the pause. */
    int r = gw_mig_sender_sync(m->tx, remaining_ms(m, COMMIT_TIMEOUT_MS));
    if (r) return fail(m, r, "destination did not catch up: %s", gw_mig_sender_error(m->tx));
    set_phase(m, GW_MIG_SWITCHOVER);
    gw_vm_set_throttle(m->vm, 0);
    /* Flush the disk while the guest still runs: the flush inside the pause then only
     * covers the last few writes. */
    gw_vm_flush_devices(m->vm);
    *t_pause = gw_now_ns();
    r = gw_vm_pause(m->vm);
    if (r) return fail(m, r, "cannot pause the VM: %s", strerror(-r));
    uint64_t t_paused = gw_now_ns();
    uint64_t dirty_pages;
    r = gw_dirty_fetch(m->dirty, &dirty_pages);
    if (r) return fail(m, r, "reading the dirty log: %s", strerror(-r));
    m->round_t0 = gw_now_ns();
    m->round_bytes = 0;
    r = gw_mig_send_switchover(m->tx, round);
    if (!r) r = queue_dirty(m, false);
    if (r) return fail(m, r, "switchover: %s", gw_mig_sender_error(m->tx));
    r = end_round(m, round, true);
    if (r) return r;
    uint64_t t_pages = gw_now_ns();

    Godwit__V1__VmState *st = NULL;
    r = gw_vm_save_state(m->vm, &st);
    if (r) return fail(m, r, "cannot read the VM state: %s", strerror(-r));
    size_t len = godwit__v1__vm_state__get_packed_size(st);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) { gw_vm_state_free(st); return fail(m, -ENOMEM, "out of memory"); }
    godwit__v1__vm_state__pack(st, buf);
    gw_vm_state_free(st);
    r = gw_mig_send_state(m->tx, buf, len);
    free(buf);
    if (r) return fail(m, r, "sending the state: %s", gw_mig_sender_error(m->tx));

    uint64_t t_state = gw_now_ns();
    struct gw_digest dg;
    gw_chunk_digest_final(&m->cd, dg.b);
    uint64_t t_digest = gw_now_ns();
    if (m->p.fault == GW_FAULT_CORRUPT_DIGEST) dg.b[0] ^= 0xff;
    r = gw_mig_send_digest(m->tx, &dg);
    if (r) return fail(m, r, "sending the digest: %s", gw_mig_sender_error(m->tx));
    if (m->p.fault == GW_FAULT_CLOSE_BEFORE_COMMIT) {
        gw_mig_sender_abort(m->tx, -ECONNRESET, "test fault: link closed before commit");
        return fail(m, -ECONNRESET, "link closed before commit (test fault)");
    }
    r = gw_mig_send_commit(m->tx, round + 1);
    if (!r) r = gw_mig_sender_wait_ack(m->tx, remaining_ms(m, COMMIT_TIMEOUT_MS));
    if (r) return fail(m, r, "destination did not commit: %s", gw_mig_sender_error(m->tx));
    uint64_t t_ready = gw_now_ns();
    gw_debug("switchover: pause %.2f ms, %llu pages %.2f ms, state %zu bytes %.2f ms, digest %.2f ms, "
             "commit to READY %.2f ms", (t_paused - *t_pause) / 1e6, (unsigned long long)dirty_pages,
             (t_pages - t_paused) / 1e6, len, (t_state - t_pages) / 1e6, (t_digest - t_state) / 1e6,
             (t_ready - t_digest) / 1e6);
    return 0;
}

/* Whether the migration failed because the destination went away (its process died, its
 * host or the link broke): the connection was reset or closed under us. Test faults close
 * the link on purpose and keep their own message. */
static bool link_died(struct gw_precopy *m, int r)
{
    return m->p.fault == GW_FAULT_NONE && !stop_reason(m) &&
           (r == -EPIPE || r == -ECONNRESET || r == -ESHUTDOWN || r == -ECONNABORTED);
}

/* Says so in the operator's words, with the transport's detail in brackets. */
static void explain_dead_destination(struct gw_precopy *m)
{
    pthread_mutex_lock(&m->lock);
    char detail[sizeof m->prog.error];
    snprintf(detail, sizeof detail, "%s", m->prog.error);
    snprintf(m->prog.error, sizeof m->prog.error, "the destination died (%.180s); the VM runs on here", detail);
    pthread_mutex_unlock(&m->lock);
}

/* Undo everything before GO: the VM runs on here as if nothing happened. */
static void roll_back(struct gw_precopy *m, int code)
{
    if (m->tx) gw_mig_sender_abort(m->tx, code, m->prog.error);
    gw_vm_set_throttle(m->vm, 0);
    gw_dirty_detach(m->dirty);
    m->dirty = NULL;
    if (gw_vm_is_paused(m->vm)) gw_vm_resume(m->vm);
}

static void *migration_thread(void *arg)
{
    struct gw_precopy *m = arg;
    uint32_t round = 0;
    uint64_t t_pause = 0;
    enum gw_mig_phase end = GW_MIG_FAILED;
    int r = setup(m);
    if (!r) r = precopy_rounds(m, &round);
    if (!r) r = switchover_prepare(m, round, &t_pause);
    if (!r && m->p.fault == GW_FAULT_CLOSE_AFTER_READY) {
        gw_mig_sender_abort(m->tx, -ECONNRESET, "test fault: link closed after READY");
        r = fail(m, -ECONNRESET, "link closed after READY, before GO (test fault)");
    }
    if (r) {
        end = r == -ECANCELED ? GW_MIG_CANCELLED : GW_MIG_FAILED;
        if (link_died(m, r)) explain_dead_destination(m);
        roll_back(m, r);
        gw_warn("vm %s: migration to %s %s: %s%s", m->vm->name, m->url,
                end == GW_MIG_CANCELLED ? "cancelled" : "failed", m->prog.error,
                strstr(m->prog.error, "runs on here") ? "" : "; the VM runs on here");
    } else {
        /* GO: from here the VM belongs to the destination and is never resumed here. */
        if (m->p.fault == GW_FAULT_DROP_GO) {
            gw_mig_sender_abort(m->tx, -ECONNRESET, "test fault: GO dropped");
            r = -ECONNRESET;
        } else {
            r = gw_mig_send_go(m->tx);
        }
        if (!r && m->p.fault == GW_FAULT_CLOSE_AFTER_GO) {
            gw_mig_sender_abort(m->tx, -ECONNRESET, "test fault: link closed after GO");
            r = -ECONNRESET;
        }
        gw_vm_disk_lock(m->vm, false, 0);   /* the image is the destination's from GO on */
        if (!r) r = gw_mig_sender_wait_running(m->tx, COMMIT_TIMEOUT_MS);
        /* Test fault: the VM runs there now; dying here leaves no hand-over record. */
        if (!r && m->p.fault == GW_FAULT_DIE_AFTER_GO) raise(SIGKILL);
        uint64_t downtime = gw_now_ns() - t_pause;
        gw_dirty_detach(m->dirty);
        m->dirty = NULL;
        pthread_mutex_lock(&m->lock);
        m->prog.measured_downtime_ns = downtime;
        pthread_mutex_unlock(&m->lock);
        if (r) {
            end = GW_MIG_IN_DOUBT;
            fail(m, r, "link lost after GO: %s; the VM stays paused here until an operator "
                       "confirms where it runs", gw_mig_sender_error(m->tx));
            gw_error("vm %s: migration in doubt: %s", m->vm->name, m->prog.error);
        } else {
            end = GW_MIG_COMPLETED;
            gw_info("vm %s: migrated to %s: downtime %.2f ms, %u rounds", m->vm->name, m->url,
                    downtime / 1e6, round + 1);
        }
    }
    if (m->tx) update_stats(m);
    pthread_mutex_lock(&m->lock);
    struct gw_mig_sender *tx = m->tx;
    m->tx = NULL;
    pthread_mutex_unlock(&m->lock);
    gw_mig_sender_close(tx);
    gw_chunk_digest_free(&m->cd);
    pthread_mutex_lock(&m->lock);
    m->prog.phase = end;
    m->prog.total_ns = gw_now_ns() - m->t_start;
    m->finished = true;
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

unsigned gw_precopy_default_streams(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
}

int gw_precopy_start(struct gw_vm *vm, const struct gw_precopy_params *p, struct gw_precopy **out)
{
    if (!p->url || strlen(p->url) >= sizeof ((struct gw_precopy *)0)->url || !p->secret || !p->secret_len) {
        gw_tls_ctx_free(p->tls);
        return -EINVAL;
    }
    struct gw_precopy *m = calloc(1, sizeof *m);
    if (!m) { gw_tls_ctx_free(p->tls); return -ENOMEM; }
    m->vm = vm;
    m->p = *p;
    snprintf(m->url, sizeof m->url, "%s", p->url);
    m->secret = malloc(p->secret_len);
    if (!m->secret) { gw_tls_ctx_free(p->tls); free(m); return -ENOMEM; }
    memcpy(m->secret, p->secret, p->secret_len);
    m->p.secret = m->secret;
    if (!m->p.streams) m->p.streams = gw_precopy_default_streams();
    gw_conv_policy_defaults(&m->p.policy);
    gw_conv_init(&m->conv);
    pthread_mutex_init(&m->lock, NULL);
    m->t_start = gw_now_ns();
    if (m->p.policy.timeout_ns) m->deadline_ns = m->t_start + m->p.policy.timeout_ns;
    m->prog.phase = GW_MIG_SETUP;
    m->prog.total_bytes = vm->mem.size;
    int r = pthread_create(&m->thread, NULL, migration_thread, m);
    if (r) { pthread_mutex_destroy(&m->lock); gw_tls_ctx_free(m->p.tls); free(m->secret); free(m); return -r; }
    pthread_setname_np(m->thread, "precopy");
    *out = m;
    return 0;
}

void gw_precopy_progress(struct gw_precopy *m, struct gw_mig_progress *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->prog;
    if (!m->finished) out->total_ns = gw_now_ns() - m->t_start;
    pthread_mutex_unlock(&m->lock);
}

void gw_precopy_cancel(struct gw_precopy *m)
{
    pthread_mutex_lock(&m->lock);
    m->cancel = true;
    /* Stops the link at once (before GO; after it this does nothing): no batch queued so far
     * leaves, and the migration thread returns from wherever it waits. */
    if (m->tx) gw_mig_sender_cancel(m->tx, -ECANCELED, "cancelled");
    pthread_mutex_unlock(&m->lock);
}

bool gw_precopy_finished(struct gw_precopy *m)
{
    pthread_mutex_lock(&m->lock);
    bool f = m->finished;
    pthread_mutex_unlock(&m->lock);
    return f;
}

void gw_precopy_free(struct gw_precopy *m)
{
    if (!m) return;
    pthread_join(m->thread, NULL);
    pthread_mutex_destroy(&m->lock);
    if (m->secret) memset(m->secret, 0, m->p.secret_len);
    free(m->secret);
    gw_tls_ctx_free(m->p.tls);
    free(m);
}
