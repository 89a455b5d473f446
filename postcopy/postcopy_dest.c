/* Post-copy destination (see postcopy_dest.h). */
#include "postcopy/postcopy_dest.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/codec/wire.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/transport/session.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/vm.h"
#include "postcopy/pc_client.h"
#include "postcopy/pc_wire.h"

#define POLL_MS 200
#define DIGEST_WAIT_NS (30ull * 1000000000ull)

struct gw_postcopy_in {
    struct gw_session *ses;
    struct gw_vm *vm;
    struct gw_pc_client *c;
    int timeout_ms;
    pthread_t ctl_thr, done_thr;
    bool threads;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    struct gw_mig_progress prog;
    bool have_digest, finished, stop;
    uint64_t digest;
    uint64_t t0, t_go;
    struct gw_rbuf buf;           /* stream 0: handing over thread, then ctl_thr */
};

/* Next POSTCOPY or STATE record on stream 0: 0 with h; ERROR -> -EPROTO with the reason. */
static int recv_control(struct gw_postcopy_in *p, struct gw_wire_header *h, struct gw_err *e)
{
    int r = gw_conn_recv_record(gw_session_conn(p->ses, GW_PC_STREAM_CONTROL), h, &p->buf, e);
    if (r) return r;
    if (h->type == GW_WIRE_ERROR) {
        int rr;
        Godwit__V1__MigError *m = gw_wire_unpack_error(p->buf.data, h->length, &rr);
        gw_err_set(e, -EPROTO, "the source stopped: %s", m && m->message ? m->message : "(no reason)");
        if (m) godwit__v1__mig_error__free_unpacked(m, NULL);
        return -EPROTO;
    }
    if (h->type != GW_WIRE_POSTCOPY && h->type != GW_WIRE_STATE)
        return gw_err_set(e, -EPROTO, "unexpected %s record on the control stream", gw_wire_type_name(h->type));
    return 0;
}

static void stats(struct gw_postcopy_in *p)
{
    struct gw_pc_client_stats st;
    gw_pc_client_stats(p->c, &st);
    uint64_t bytes = 0;
    for (unsigned i = 0; i < gw_session_streams(p->ses); i++) bytes += gw_session_bytes_recv(p->ses, i);
    pthread_mutex_lock(&p->lock);
    struct gw_mig_postcopy *pc = &p->prog.pc;
    pc->used = true;
    pc->pages_requested = st.pages_requested;
    pc->pages_resent = st.pages_dup;
    pc->req_p50_us = st.lat_p50_us;
    pc->req_p99_us = st.lat_p99_us;
    pc->req_max_us = st.lat_max_us;
    memcpy(pc->req_hist, st.lat_hist, sizeof pc->req_hist);
    pc->blocked_ns = st.blocked_ns;
    p->prog.pages_raw = st.pages_received;
    p->prog.sent_bytes = bytes;
    if (p->t_go && !p->finished) pc->postcopy_ns = gw_now_ns() - p->t_go;
    p->prog.total_ns = gw_now_ns() - p->t0;
    pthread_mutex_unlock(&p->lock);
}

/* The end of post-copy here: completed, or paused with the reason. */
/* The first call decides (the source hanging up right after DONE is no failure). */
static void finish(struct gw_postcopy_in *p, enum gw_mig_phase ph, const char *why)
{
    stats(p);
    pthread_mutex_lock(&p->lock);
    bool first = !p->finished;
    if (first) {
        p->prog.phase = ph;
        if (why) snprintf(p->prog.error, sizeof p->prog.error, "%s", why);
        if (ph == GW_MIG_COMPLETED) {
            p->prog.pc.digest_ok = true;
            p->prog.pc.pages_remaining = 0;
        }
        p->finished = true;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
    if (first && ph != GW_MIG_COMPLETED) {
        /* Never run on part of the memory: the pages still missing are at the source. */
        gw_vm_pause(p->vm);
        gw_error("vm %s: post-copy stopped: %s; the VM is paused here and cannot run until the source's "
                 "pages arrive", p->vm->name, why);
    }
}

/* Stream 0 after GO: the source's DIGEST; any failure stops post-copy. */
static void *ctl_main(void *arg)
{
    struct gw_postcopy_in *p = arg;
    struct gw_err e = {0};
    for (;;) {
        struct gw_wire_header h;
        struct gw_conn *c0 = gw_session_conn(p->ses, GW_PC_STREAM_CONTROL);
        uint64_t before = c0->bytes_recv;
        int r = recv_control(p, &h, &e);
        pthread_mutex_lock(&p->lock);
        bool stop = p->stop || p->finished;
        pthread_mutex_unlock(&p->lock);
        if (stop) break;
        if (GW_PC_QUIET_TIMEOUT(r, c0, before)) continue;
        struct gw_pc_msg m = {0};
        if (!r && (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(p->buf.data, h.length, &m) || m.op != GW_PC_DIGEST))
            r = gw_err_set(&e, -EPROTO, "unexpected record from the source during post-copy");
        if (r) {
            char why[300];
            snprintf(why, sizeof why, "the source was lost during post-copy (%s)", e.msg);
            finish(p, GW_MIG_POSTCOPY_PAUSED, why);
            gw_pc_client_fail(p->c, &e);
            break;
        }
        pthread_mutex_lock(&p->lock);
        p->digest = m.a;
        p->have_digest = true;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

/* Waits for the last page and the digest, proves memory equal, says DONE. */
static void *done_main(void *arg)
{
    struct gw_postcopy_in *p = arg;
    struct gw_err e = {0};
    int r;
    while ((r = gw_pc_client_wait(p->c, POLL_MS, &e)) == -ETIMEDOUT) {
        stats(p);
        pthread_mutex_lock(&p->lock);
        bool f = p->finished;
        pthread_mutex_unlock(&p->lock);
        if (f) return NULL;
    }
    char why[300];
    if (r) {
        snprintf(why, sizeof why, "the source was lost during post-copy (%s)", e.msg);
        finish(p, GW_MIG_POSTCOPY_PAUSED, why);
        return NULL;
    }
    uint64_t dl = gw_now_ns() + DIGEST_WAIT_NS;
    pthread_mutex_lock(&p->lock);
    while (!p->have_digest && !p->finished && gw_now_ns() < dl) {
        pthread_mutex_unlock(&p->lock);
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&p->lock);
    }
    bool have = p->have_digest;
    uint64_t want = p->digest;
    bool f = p->finished;
    pthread_mutex_unlock(&p->lock);
    if (f) return NULL;
    if (!have) { finish(p, GW_MIG_POSTCOPY_PAUSED, "every page arrived but the source sent no digest"); return NULL; }
    uint64_t sum = 0;
    r = gw_pc_client_finish(p->c, &sum);
    if (r) {
        snprintf(why, sizeof why, "cannot end post-copy: %s", strerror(-r));
        finish(p, GW_MIG_POSTCOPY_PAUSED, why);
        return NULL;
    }
    if (sum != want) {
        snprintf(why, sizeof why, "memory digest differs after post-copy: source %016llx, here %016llx",
                 (unsigned long long)want, (unsigned long long)sum);
        finish(p, GW_MIG_POSTCOPY_PAUSED, why);
        gw_session_send_error(p->ses, GW_PC_STREAM_CONTROL, -EBADMSG, why);
        return NULL;
    }
    struct gw_pc_client_stats st;
    gw_pc_client_stats(p->c, &st);
    /* Completed before DONE leaves: the source hangs up as soon as it has it. */
    finish(p, GW_MIG_COMPLETED, NULL);
    uint8_t b[GW_PC_HDR];
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_DONE, .a = st.pages_received, .b = st.pages_dup}, b);
    if (gw_session_send(p->ses, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, &e))
        gw_warn("vm %s: could not tell the source post-copy is done: %s", p->vm->name, e.msg);
    gw_info("vm %s: post-copy complete: %llu pages, %llu requested, request p50 %llu us p99 %llu us", p->vm->name,
            (unsigned long long)st.pages_received, (unsigned long long)st.pages_requested,
            (unsigned long long)st.lat_p50_us, (unsigned long long)st.lat_p99_us);
    return NULL;
}

static int hand_over(struct gw_postcopy_in *p, char *err, size_t errlen)
{
    struct gw_err e = {0};
    unsigned n = gw_session_streams(p->ses);
    if (n < GW_PC_FIRST_LANE + 1) { snprintf(err, errlen, "a post-copy session needs 3 or more streams"); return -EPROTO; }
    int r = gw_pc_client_start(p->ses, p->vm->mem.base, p->vm->mem.size, n - GW_PC_FIRST_LANE, &p->c, &e);
    if (r) { snprintf(err, errlen, "cannot take post-copy here: %s", e.msg); return r; }
    /* Pre-copy pages (hybrid) land while we wait for DIRTY: the switch to post-copy. */
    p->prog.phase = GW_MIG_PRECOPY;
    struct gw_wire_header h;
    int wait_ms = p->timeout_ms;
    gw_conn_set_timeout(gw_session_conn(p->ses, GW_PC_STREAM_CONTROL), POLL_MS);
    struct gw_conn *c0 = gw_session_conn(p->ses, GW_PC_STREAM_CONTROL);
    for (uint64_t before = c0->bytes_recv;
         GW_PC_QUIET_TIMEOUT(r = recv_control(p, &h, &e), c0, before) && (wait_ms -= POLL_MS) > 0;
         before = c0->bytes_recv) {
        struct gw_pc_client_stats cs;
        gw_pc_client_stats(p->c, &cs);
        if (cs.error) { r = gw_err_set(&e, cs.error, "%s", cs.msg); break; }
    }
    gw_conn_set_timeout(gw_session_conn(p->ses, GW_PC_STREAM_CONTROL), p->timeout_ms);
    struct gw_pc_msg dm = {0};
    if (!r && (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(p->buf.data, h.length, &dm) || dm.op != GW_PC_DIRTY))
        r = gw_err_set(&e, -EPROTO, "expected the dirty pages first");
    if (!r && dm.a != p->vm->mem.size / 4096) r = gw_err_set(&e, -EPROTO, "the dirty bitmap does not fit guest memory");
    if (r) { snprintf(err, errlen, "migration aborted: %s", e.msg); return r; }
    p->prog.phase = GW_MIG_SWITCHOVER;
    size_t words = (dm.a + 63) / 64;
    uint64_t *dirty = malloc(words * 8);
    if (!dirty) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    for (size_t w = 0; w < words; w++) dirty[w] = gw_pc_get64(p->buf.data + GW_PC_HDR + 8 * w);
    r = gw_pc_client_switch(p->c, dirty, dm.a, p->timeout_ms, &e);
    free(dirty);
    if (r) { snprintf(err, errlen, "cannot switch to post-copy: %s", e.msg); return r; }
    r = recv_control(p, &h, &e);
    if (!r && h.type != GW_WIRE_STATE) r = gw_err_set(&e, -EPROTO, "expected the VM state first");
    if (r) { snprintf(err, errlen, "migration aborted: %s", e.msg); return r; }
    Godwit__V1__VmState *st = godwit__v1__vm_state__unpack(NULL, h.length, p->buf.data);
    if (!st) { snprintf(err, errlen, "the VM state does not decode"); return -EBADMSG; }
    char why[512];
    r = gw_vm_load_state(p->vm, st, why, sizeof why);
    godwit__v1__vm_state__free_unpacked(st, NULL);
    if (r) { snprintf(err, errlen, "the VM state does not load here: %s", why); return r; }
    uint8_t b[GW_PC_HDR];
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_READY}, b);
    r = gw_session_send(p->ses, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, &e);
    if (r) { snprintf(err, errlen, "cannot send READY: %s", e.msg); return r; }
    struct gw_pc_msg m = {0};
    r = recv_control(p, &h, &e);
    if (!r && (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(p->buf.data, h.length, &m) || m.op != GW_PC_GO))
        r = gw_err_set(&e, -EPROTO, "expected GO");
    if (r) { snprintf(err, errlen, "migration aborted: %s", e.msg); return r; }
    /* GO: the VM is ours. The source dropped the image's lock right after sending it. */
    p->t_go = gw_now_ns();
    r = gw_vm_disk_lock(p->vm, true, 5000);
    if (r) { snprintf(err, errlen, "the disk image is still locked elsewhere: %s", strerror(-r)); return r; }
    r = gw_vm_start(p->vm);
    if (r) { snprintf(err, errlen, "cannot start the VM: %s", strerror(-r)); return r; }
    return 0;
}

int gw_postcopy_in_start(struct gw_session *ses, struct gw_vm *vm, int timeout_ms, struct gw_postcopy_in **out,
                         char *err, size_t errlen)
{
    struct gw_postcopy_in *p = calloc(1, sizeof *p);
    if (!p) { gw_session_close(ses); snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    p->ses = ses;
    p->vm = vm;
    p->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
    p->t0 = gw_now_ns();
    p->prog.phase = GW_MIG_SWITCHOVER;
    p->prog.total_bytes = vm->mem.size;
    p->prog.pc.used = true;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cv, NULL);
    gw_conn_set_timeout(gw_session_conn(ses, GW_PC_STREAM_CONTROL), p->timeout_ms);
    int r = hand_over(p, err, errlen);
    if (r) {
        gw_session_send_error(ses, GW_PC_STREAM_CONTROL, r, err);
        gw_postcopy_in_free(p);
        return r;
    }
    p->prog.phase = GW_MIG_POSTCOPY_ACTIVE;
    p->prog.measured_downtime_ns = 0;
    gw_conn_set_timeout(gw_session_conn(ses, GW_PC_STREAM_CONTROL), POLL_MS);
    if ((r = -pthread_create(&p->ctl_thr, NULL, ctl_main, p)) == 0) {
        if ((r = -pthread_create(&p->done_thr, NULL, done_main, p))) {
            finish(p, GW_MIG_POSTCOPY_PAUSED, "cannot start the post-copy thread");
            pthread_join(p->ctl_thr, NULL);
        } else {
            p->threads = true;
        }
    } else {
        finish(p, GW_MIG_POSTCOPY_PAUSED, "cannot start the post-copy thread");
    }
    *out = p;
    return 0;
}

void gw_postcopy_in_progress(struct gw_postcopy_in *p, struct gw_mig_progress *out)
{
    pthread_mutex_lock(&p->lock);
    *out = p->prog;
    pthread_mutex_unlock(&p->lock);
}

bool gw_postcopy_in_finished(struct gw_postcopy_in *p)
{
    pthread_mutex_lock(&p->lock);
    bool f = p->finished;
    pthread_mutex_unlock(&p->lock);
    return f;
}

void gw_postcopy_in_free(struct gw_postcopy_in *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    bool completed = p->finished && p->prog.phase == GW_MIG_COMPLETED;
    bool started = p->t_go != 0;
    pthread_mutex_unlock(&p->lock);
    gw_session_shutdown(p->ses);
    if (p->c) gw_pc_client_fail(p->c, &(struct gw_err){.code = -ECANCELED});
    if (p->threads) {
        pthread_join(p->done_thr, NULL);
        pthread_join(p->ctl_thr, NULL);
    }
    /* After GO and short of completion the missing pages are poisoned (see pc_client.h). */
    gw_pc_client_close(p->c, started && !completed);
    gw_session_close(p->ses);
    gw_rbuf_free(&p->buf);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
