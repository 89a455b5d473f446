/* Post-copy destination (see postcopy_dest.h). */
#include "postcopy/postcopy_dest.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/codec/wire.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/transport/session.h"
#include "engine/transport/tls.h"
#include "engine/vm/vcpu.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/vm.h"
#include "postcopy/pc_client.h"
#include "postcopy/pc_resume.h"
#include "postcopy/pc_wire.h"
#include "precopy/incoming_streams.h"
#include "precopy/precopy_dest.h"
#include "precopy/precopy_source.h"   /* enum gw_mig_fault (test builds) */

#define POLL_MS 200
#define KEEPALIVE_MS 200
#define DEFAULT_LINK_TIMEOUT_MS 2000
#define RESUME_ACCEPT_MS 5000

struct gw_postcopy_in {
    struct gw_session *ses;       /* under ses_mu: the current session (replaced on resume) */
    pthread_mutex_t ses_mu;
    struct gw_vm *vm;
    struct gw_pc_client *c;
    int timeout_ms, link_timeout_ms;
    pthread_t ctl_thr, done_thr, resume_thr, sample_thr;
    bool threads, ctl_started, resume_started, sample_started;
    uint64_t sampled_ns[GW_PC_MAX_VCPUS];   /* sample_main's per-vCPU blocked time (atomic) */
    pthread_mutex_t lock;
    pthread_cond_t cv;
    struct gw_mig_progress prog;
    bool have_digest, finished, stop;
    uint64_t epoch;               /* under lock: sessions resumed so far */
    uint64_t digest;
    uint64_t t0, t_go, t_lost;
    uint64_t t_started;           /* the vCPUs run here */
    struct gw_rbuf buf;           /* stream 0: handing over thread, then ctl_thr */
    /* recovery (pc_resume.h) */
    struct gw_listener *l;
    int fd_src;                   /* or the listening socket daemons hand streams over on; -1 */
    struct gw_tls_ctx *tls;
    uint8_t *secret;
    size_t secret_len;
    uint8_t key[GW_PC_RESUME_KEY_SIZE];
    uint8_t token[32];                /* the session's token: a reconnecting source's preambles carry it */
    unsigned nstreams;
    uint64_t mem_size;
    int stop_fd;                  /* eventfd: wakes the resume thread */
    int test_fault;               /* enum gw_mig_fault (GODWIT_TEST_HOOKS builds) */
};

static bool stopping(struct gw_postcopy_in *p)
{
    pthread_mutex_lock(&p->lock);
    bool s = p->stop;
    pthread_mutex_unlock(&p->lock);
    return s;
}

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
    pthread_mutex_lock(&p->ses_mu);
    for (unsigned i = 0; i < gw_session_streams(p->ses); i++) bytes += gw_session_bytes_recv(p->ses, i);
    pthread_mutex_unlock(&p->ses_mu);
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
    pc->nvcpus = p->vm->nvcpus < 16 ? p->vm->nvcpus : 16;
    for (unsigned i = 0; i < pc->nvcpus; i++)
        pc->vcpu_blocked_ns[i] = st.vcpu_blocked_ns[i] + __atomic_load_n(&p->sampled_ns[i], __ATOMIC_RELAXED);
    p->prog.pages_raw = st.pages_received;
    p->prog.sent_bytes = bytes;
    if (p->t_go && !p->finished) pc->postcopy_ns = gw_now_ns() - p->t_go;
    p->prog.total_ns = gw_now_ns() - p->t0;
    pthread_mutex_unlock(&p->lock);
}

/* The end of post-copy here: completed, or stopped for good with the reason.
 * The first call decides (the source hanging up right after DONE is no failure). */
static void finish(struct gw_postcopy_in *p, enum gw_mig_phase ph, const char *why)
{
    stats(p);
    pthread_mutex_lock(&p->lock);
    bool first = !p->finished;
    if (first) {
        p->prog.phase = ph;
        if (why) snprintf(p->prog.error, sizeof p->prog.error, "%.*s", (int)sizeof p->prog.error - 1, why);
        if (ph == GW_MIG_COMPLETED) {
            p->prog.error[0] = 0;
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

/* The link to the source broke (session epoch ep): post-copy pauses, nothing is dropped,
 * and a source that reconnects can take it up again (resume_main). */
static void link_lost(struct gw_postcopy_in *p, uint64_t ep, const char *why)
{
    pthread_mutex_lock(&p->lock);
    bool first = !p->finished && p->epoch == ep && p->prog.phase == GW_MIG_POSTCOPY_ACTIVE;
    if (first) {
        p->prog.phase = GW_MIG_POSTCOPY_PAUSED;
        snprintf(p->prog.error, sizeof p->prog.error, "%.*s", (int)sizeof p->prog.error - 1, why);
        p->t_lost = gw_now_ns();
    }
    pthread_mutex_unlock(&p->lock);
    if (first)
        gw_error("vm %s: post-copy paused: %s; the VM waits here for the source to resume (%s)", p->vm->name, why,
                 p->l || p->fd_src >= 0 ? "it may reconnect" : "no listener: it cannot");
}

/* Stream 0 of one session: the source's DIGEST and keepalives; any failure, or silence for
 * the link timeout, is a broken link. */
static void *ctl_main(void *arg)
{
    struct gw_postcopy_in *p = arg;
    struct gw_err e = {0};
    pthread_mutex_lock(&p->lock);
    uint64_t ep = p->epoch;
    pthread_mutex_unlock(&p->lock);
    struct gw_session *ses = p->ses;   /* this thread's session: only resume_main replaces it, after joining us */
    struct gw_conn *c0 = gw_session_conn(ses, GW_PC_STREAM_CONTROL);
    uint64_t heard = gw_now_ns();
    for (;;) {
        struct gw_wire_header h;
        uint64_t before = c0->bytes_recv;
        int r = recv_control(p, &h, &e);
        pthread_mutex_lock(&p->lock);
        bool stop = p->stop || p->finished;
        pthread_mutex_unlock(&p->lock);
        if (stop) break;
        if (GW_PC_QUIET_TIMEOUT(r, c0, before)) {
            if (gw_now_ns() - heard < (uint64_t)p->link_timeout_ms * 1000000ull) continue;
            r = gw_err_set(&e, -ETIMEDOUT, "no word from the source for %d ms", p->link_timeout_ms);
        }
        struct gw_pc_msg m = {0};
        if (!r && (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(p->buf.data, h.length, &m) ||
                   (m.op != GW_PC_DIGEST && m.op != GW_PC_KEEPALIVE)))
            r = gw_err_set(&e, -EPROTO, "unexpected record from the source during post-copy");
        if (r) {
            char why[300];
            snprintf(why, sizeof why, "the source was lost during post-copy (%s)", e.msg);
            link_lost(p, ep, why);
            gw_session_shutdown(ses);   /* every stream of this session stops */
            gw_pc_client_fail(p->c, &e);
            break;
        }
        heard = gw_now_ns();
        if (m.op == GW_PC_KEEPALIVE) continue;
        pthread_mutex_lock(&p->lock);
        p->digest = m.a;
        p->have_digest = true;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

static void send_keepalive(struct gw_postcopy_in *p)
{
    uint8_t b[GW_PC_HDR];
    struct gw_err e = {0};
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_KEEPALIVE}, b);
    pthread_mutex_lock(&p->ses_mu);
    gw_session_send(p->ses, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, &e);   /* a failure shows elsewhere */
    pthread_mutex_unlock(&p->ses_mu);
}

/* ---- per-vCPU blocked time ----
 * The exact measure is userfaultfd's faulting thread (pc_client: a vCPU that takes its own
 * fault). Here KVM takes most guest faults on missing pages in its asynchronous page-fault
 * workers (kernel threads), and parks the vCPU meanwhile inside KVM_RUN: the fault names no
 * vCPU. So while page requests are outstanding, every SAMPLE_NS each vCPU thread that sleeps
 * (state S or D: parked, not running guest code) and is not being timed exactly counts as
 * blocked for the interval. An idle guest's HLT sleeps too: the figure is exact for busy
 * guests and an upper bound for idle ones. */
#define SAMPLE_NS 1000000ull

static bool thread_sleeps(int tid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    if (gw_read_small_file(path, buf, sizeof buf) < 0) return false;
    const char *e = strrchr(buf, ')');   /* the command name may hold anything */
    return e && e[1] == ' ' && (e[2] == 'S' || e[2] == 'D');
}

static void *sample_main(void *arg)
{
    struct gw_postcopy_in *p = arg;
    uint64_t last = gw_now_ns();
    for (;;) {
        struct timespec ts = {0, (long)SAMPLE_NS};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&p->lock);
        bool done = p->stop || p->finished;
        pthread_mutex_unlock(&p->lock);
        if (done) break;
        uint64_t now = gw_now_ns(), dt = now - last;
        last = now;
        struct gw_pc_client_stats st;
        gw_pc_client_stats(p->c, &st);
        if (!st.pages_waiting) continue;
        for (unsigned i = 0; i < p->vm->nvcpus && i < GW_PC_MAX_VCPUS; i++) {
            int tid = __atomic_load_n(&p->vm->vcpus[i]->tid, __ATOMIC_ACQUIRE);
            if (tid && !gw_pc_client_vcpu_timed(p->c, i) && thread_sleeps(tid))
                __atomic_fetch_add(&p->sampled_ns[i], dt, __ATOMIC_RELAXED);
        }
    }
    return NULL;
}

/* Waits until a session newer than ep is in place; false when stopping. */
static bool wait_resumed(struct gw_postcopy_in *p, uint64_t ep)
{
    pthread_mutex_lock(&p->lock);
    while (!p->stop && p->epoch == ep) pthread_cond_wait(&p->cv, &p->lock);
    bool ok = !p->stop;
    pthread_mutex_unlock(&p->lock);
    return ok;
}

static void send_done(struct gw_postcopy_in *p, struct gw_session *s)
{
    struct gw_pc_client_stats st;
    gw_pc_client_stats(p->c, &st);
    uint8_t b[GW_PC_HDR];
    struct gw_err e = {0};
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_DONE, .a = st.pages_received, .b = st.pages_dup}, b);
    if (gw_session_send(s, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, &e))
        gw_warn("vm %s: could not tell the source post-copy is done: %s (it will hear it when it reconnects)",
                p->vm->name, e.msg);
}

/* Waits for the last page and the digest (across broken links and resumes), proves memory
 * equal, says DONE. */
static void *done_main(void *arg)
{
    struct gw_postcopy_in *p = arg;
    struct gw_err e = {0};
    int r;
    uint64_t last_ka = 0;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        uint64_t ep = p->epoch;
        pthread_mutex_unlock(&p->lock);
        r = gw_pc_client_wait(p->c, POLL_MS, &e);
        if (stopping(p)) return NULL;
        if (r == -ETIMEDOUT) {
            stats(p);
            if (gw_now_ns() - last_ka >= KEEPALIVE_MS * 1000000ull) {
                send_keepalive(p);
                last_ka = gw_now_ns();
            }
            continue;
        }
        if (!r) break;
        char why[300];
        snprintf(why, sizeof why, "the source was lost during post-copy (%s)", e.msg);
        link_lost(p, ep, why);
        if (!wait_resumed(p, ep)) return NULL;
    }
    /* Every page is in; the digest came on stream 0 (again after a resume). */
    pthread_mutex_lock(&p->lock);
    while (!p->have_digest && !p->stop) {
        pthread_mutex_unlock(&p->lock);
        send_keepalive(p);
        struct timespec ts = {0, KEEPALIVE_MS * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&p->lock);
    }
    bool have = p->have_digest;
    uint64_t want = p->digest;
    pthread_mutex_unlock(&p->lock);
    if (!have) return NULL;
    char why[300];
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
        pthread_mutex_lock(&p->ses_mu);
        gw_session_send_error(p->ses, GW_PC_STREAM_CONTROL, -EBADMSG, why);
        pthread_mutex_unlock(&p->ses_mu);
        return NULL;
    }
    struct gw_pc_client_stats st;
    gw_pc_client_stats(p->c, &st);
    /* Completed before DONE leaves: the source hangs up as soon as it has it. */
    finish(p, GW_MIG_COMPLETED, NULL);
    pthread_mutex_lock(&p->ses_mu);
    send_done(p, p->ses);
    pthread_mutex_unlock(&p->ses_mu);
    gw_info("vm %s: post-copy complete: %llu pages, %llu requested, request p50 %llu us p99 %llu us", p->vm->name,
            (unsigned long long)st.pages_received, (unsigned long long)st.pages_requested,
            (unsigned long long)st.lat_p50_us, (unsigned long long)st.lat_p99_us);
    return NULL;
}

/* ---- recovery: a source that reconnects after a broken link (pc_resume.h) ---- */

/* Takes the fds of one session from a daemon's connection (SCM_RIGHTS, one message, which
 * the daemon sends at once); how many, or -errno. */
static int recv_fds(int sock, int *fds, unsigned cap)
{
    struct pollfd pf = {.fd = sock, .events = POLLIN};
    if (poll(&pf, 1, RESUME_ACCEPT_MS) <= 0) return -ETIMEDOUT;
    char ctl[CMSG_SPACE(sizeof(int) * GW_INCOMING_MAX_FDS)];
    uint32_t count = 0;
    struct iovec iov = {.iov_base = &count, .iov_len = sizeof count};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
    ssize_t got = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (got < 0) return -errno;
    if (got == 0) return -EPIPE;
    unsigned n = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (unsigned i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
            if (n < cap) fds[n++] = fd;
            else close(fd);
        }
    }
    if ((mh.msg_flags & MSG_CTRUNC) || got != sizeof count || count != n || !n) {
        for (unsigned i = 0; i < n; i++) close(fds[i]);
        return -EPROTO;
    }
    return (int)n;
}

/* The next session on the listener (or from the daemon) that asks to resume; NULL when
 * stopping. */
static struct gw_session *accept_resume(struct gw_postcopy_in *p)
{
    while (!stopping(p)) {
        int src = p->l ? p->l->fd : p->fd_src;
        struct pollfd pf[2] = {{.fd = src, .events = POLLIN}, {.fd = p->stop_fd, .events = POLLIN}};
        if (poll(pf, 2, 1000) <= 0 || stopping(p)) continue;
        if (!(pf[0].revents & POLLIN)) continue;
        struct gw_conn *cs[GW_WIRE_MAX_STREAMS];
        unsigned n = 0;
        struct gw_err e = {0};
        int fds[GW_INCOMING_MAX_FDS], nf = 0;
        if (!p->l) {
            /* One connection per hand-over, from whichever daemon runs now (a restarted one
             * too): nothing here depends on the daemon that started us. */
            int c = accept4(p->fd_src, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0) {
                if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                    gw_warn("vm %s: cannot take a hand-over from the daemon: %s", p->vm->name, strerror(errno));
                    poll(NULL, 0, 100);   /* e.g. out of fds: do not spin on a pending connection */
                }
                continue;
            }
            struct ucred cr;
            socklen_t crl = sizeof cr;
            nf = getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &crl) ? -errno
                 : cr.uid != geteuid() ? -EPERM : recv_fds(c, fds, GW_INCOMING_MAX_FDS);
            close(c);
            if (nf < 0) {
                gw_warn("vm %s: the daemon handed over a bad set of streams: %s", p->vm->name, strerror(-nf));
                continue;
            }
        }
        /* On our own listener, only the session's own source may define the resume: a
         * stranger's preamble that came first would shut it out. */
        int r = p->l ? gw_incoming_streams(p->l, NULL, NULL, 0, p->tls, p->token, RESUME_ACCEPT_MS, cs, &n, &e)
                     : gw_incoming_streams(NULL, NULL, fds, (unsigned)nf, p->tls, NULL, RESUME_ACCEPT_MS, cs, &n, &e);
        struct gw_session *s = NULL;
        struct gw_session_cfg cfg = {.secret = p->secret, .secret_len = p->secret_len,
                                     .features = GW_WIRE_F_ALL, .timeout_ms = RESUME_ACCEPT_MS};
        if (!r) r = gw_session_accept_conns(cs, n, &cfg, &s, &e);
        if (r) { gw_warn("vm %s: a connection while waiting for the source to resume: %s", p->vm->name, e.msg); continue; }
        const Godwit__V1__MigHello *h = gw_session_hello(s);
        const char *bad = !(h->features & GW_WIRE_F_PC_RESUME) ? "a new migration for a VM that is already here"
                          : h->nstreams != p->nstreams ? "a resume with another number of streams"
                          : h->mem_size != p->mem_size ? "a resume for a VM of another size" : NULL;
        if (!bad) {
            struct gw_rbuf b = {0};
            for (unsigned i = 0; i < gw_session_streams(s); i++) gw_conn_set_timeout(gw_session_conn(s, i), RESUME_ACCEPT_MS);
            r = gw_pc_resume_destination(s, p->key, &b, &e);
            gw_rbuf_free(&b);
            if (!r) return s;
            gw_warn("vm %s: resume refused: %s", p->vm->name, e.msg);
        } else {
            gw_session_send_error(s, GW_PC_STREAM_CONTROL, -EPROTO, bad);
            gw_warn("vm %s: refused %s", p->vm->name, bad);
        }
        gw_session_close(s);
    }
    return NULL;
}

/* Replaces the session with s, which proved it is this migration's source. */
static int take_resume(struct gw_postcopy_in *p, struct gw_session *s, struct gw_err *e)
{
    char why[sizeof p->prog.error];
    pthread_mutex_lock(&p->lock);
    bool completed = p->finished && p->prog.phase == GW_MIG_COMPLETED;
    bool dead = p->finished && !completed;
    snprintf(why, sizeof why, "%s", p->prog.error);
    pthread_mutex_unlock(&p->lock);
    if (dead) {
        gw_session_send_error(s, GW_PC_STREAM_CONTROL, -EBADMSG, why);
        return gw_err_set(e, -EBADMSG, "post-copy stopped here for good: %.200s", why);
    }
    if (completed) {
        /* Every page arrived and DONE was lost with the link: say it again. */
        send_done(p, s);
        return 1;
    }
    pthread_mutex_lock(&p->lock);
    p->prog.phase = GW_MIG_POSTCOPY_RECOVER;
    pthread_mutex_unlock(&p->lock);
    /* Stop everything that uses the old session, then swap it. */
    struct gw_session *old = p->ses;
    gw_session_shutdown(old);
    if (p->ctl_started) pthread_join(p->ctl_thr, NULL);
    p->ctl_started = false;
    gw_pc_client_detach(p->c);
    uint64_t np;
    const uint64_t *rcv = gw_pc_client_received(p->c, &np);
    int r = gw_pc_send_bitmap(s, GW_PC_RECEIVED, rcv, np, e);
    pthread_mutex_lock(&p->ses_mu);
    p->ses = s;
    pthread_mutex_unlock(&p->ses_mu);
    gw_pc_client_use_session(p->c, s);     /* the fault thread may be sending on old right now */
    gw_session_close(old);
    gw_conn_set_timeout(gw_session_conn(s, GW_PC_STREAM_CONTROL), POLL_MS);
    for (unsigned i = GW_PC_STREAM_PRIORITY; i < gw_session_streams(s); i++)
        gw_conn_set_timeout(gw_session_conn(s, i), p->timeout_ms);
    if (!r) r = gw_pc_client_attach(p->c, s, e);
    pthread_mutex_lock(&p->lock);
    p->epoch++;
    if (!r) {
        p->prog.phase = GW_MIG_POSTCOPY_ACTIVE;
        p->prog.error[0] = 0;
        p->prog.pc.recoveries++;
        if (p->t_lost) p->prog.pc.recovery_ns = gw_now_ns() - p->t_lost;
        p->t_lost = 0;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
    if (!r) r = -pthread_create(&p->ctl_thr, NULL, ctl_main, p);
    if (!r) p->ctl_started = true;
    if (r) {
        /* The new link broke at once: paused again, and the next resume replaces it. */
        pthread_mutex_lock(&p->lock);
        uint64_t ep = p->epoch;
        pthread_mutex_unlock(&p->lock);
        gw_session_shutdown(s);
        gw_pc_client_fail(p->c, e);
        link_lost(p, ep, e->msg);
    }
    return r;
}

static void *resume_main(void *arg)
{
    struct gw_postcopy_in *p = arg;
    struct gw_session *s;
    while ((s = accept_resume(p))) {
        struct gw_err e = {0};
        int r = take_resume(p, s, &e);
        if (r == 0) {
            gw_info("vm %s: post-copy resumed by the source after a broken link", p->vm->name);
            continue;
        }
        if (r < 0) gw_warn("vm %s: resume failed: %s", p->vm->name, e.msg);
        if (p->ses != s) gw_session_close(s);
    }
    return NULL;
}

/* The vCPU whose thread is tid, or -1 (a device thread, or KVM's own worker). */
static int vcpu_of_tid(void *ctx, uint32_t tid)
{
    struct gw_vm *vm = ctx;
    for (unsigned i = 0; i < vm->nvcpus && i < GW_PC_MAX_VCPUS; i++)
        if (vm->vcpus[i] && (uint32_t)__atomic_load_n(&vm->vcpus[i]->tid, __ATOMIC_ACQUIRE) == tid) return (int)i;
    return -1;
}

/* Hybrid's STALE (pc_wire.h) in p->buf: drops those pre-copied pages now, while the guest
 * still runs at the source, and says how many. */
static int drop_stale(struct gw_postcopy_in *p, const struct gw_pc_msg *m, struct gw_err *e)
{
    if (m->a != p->vm->mem.size / 4096) return gw_err_set(e, -EPROTO, "the stale-page bitmap does not fit guest memory");
    size_t words = (m->a + 63) / 64;
    uint64_t *stale = malloc(words * 8);
    if (!stale) return gw_err_set(e, -ENOMEM, "out of memory");
    for (size_t w = 0; w < words; w++) stale[w] = gw_pc_get64(p->buf.data + GW_PC_HDR + 8 * w);
    uint64_t t0 = gw_now_ns();
    int64_t dropped = gw_pc_client_drop_stale(p->c, stale, m->a, p->timeout_ms, e);
    free(stale);
    if (dropped < 0) return (int)dropped;
    gw_info("vm %s: hybrid: %lld stale pre-copied pages dropped before the pause in %.1f ms", p->vm->name,
            (long long)dropped, (gw_now_ns() - t0) / 1e6);
    uint8_t b[GW_PC_HDR];
    gw_pc_pack(&(struct gw_pc_msg){.op = GW_PC_STALE_DROPPED, .a = (uint64_t)dropped}, b);
    return gw_session_send(p->ses, GW_PC_STREAM_CONTROL, GW_WIRE_POSTCOPY, b, sizeof b, e);
}

static int hand_over(struct gw_postcopy_in *p, char *err, size_t errlen)
{
    struct gw_err e = {0};
    unsigned n = gw_session_streams(p->ses);
    if (n < GW_PC_FIRST_LANE + 1) { snprintf(err, errlen, "a post-copy session needs 3 or more streams"); return -EPROTO; }
    int r = gw_pc_client_start(p->ses, p->vm->mem.base, p->vm->mem.size, n - GW_PC_FIRST_LANE, &p->c, &e);
    if (r) { snprintf(err, errlen, "cannot take post-copy here: %s", e.msg); return r; }
    gw_pc_client_set_vcpu_map(p->c, vcpu_of_tid, p->vm);
    /* Pre-copy pages (hybrid) land while we wait for DIRTY: the switch to post-copy. */
    p->prog.phase = GW_MIG_PRECOPY;
    struct gw_wire_header h;
    int wait_ms = p->timeout_ms;
    gw_conn_mark_urgent(gw_session_conn(p->ses, GW_PC_STREAM_CONTROL));   /* READY, keepalives: first in the queues */
    gw_conn_set_timeout(gw_session_conn(p->ses, GW_PC_STREAM_CONTROL), POLL_MS);
    struct gw_conn *c0 = gw_session_conn(p->ses, GW_PC_STREAM_CONTROL);
    struct gw_pc_msg dm = {0};
    for (;;) {
        for (uint64_t before = c0->bytes_recv;
             GW_PC_QUIET_TIMEOUT(r = recv_control(p, &h, &e), c0, before) && (wait_ms -= POLL_MS) > 0;
             before = c0->bytes_recv) {
            struct gw_pc_client_stats cs;
            gw_pc_client_stats(p->c, &cs);
            if (cs.error) { r = gw_err_set(&e, cs.error, "%s", cs.msg); break; }
        }
        if (r || h.type != GW_WIRE_POSTCOPY || gw_pc_parse(p->buf.data, h.length, &dm) || dm.op != GW_PC_STALE ||
            !(gw_session_features(p->ses, 0) & GW_WIRE_F_PC_STALE))
            break;
#ifdef GODWIT_TEST_HOOKS
        /* The source waits for STALE_DROPPED with its VM still running: this runner dies,
         * or hangs with its sockets open until a SIGCONT. */
        if (p->test_fault == GW_FAULT_DIE_AT_STALE) kill(getpid(), SIGKILL);
        if (p->test_fault == GW_FAULT_HANG_AT_STALE) kill(getpid(), SIGSTOP);
#endif
        r = drop_stale(p, &dm, &e);
        if (r) break;
    }
    gw_conn_set_timeout(gw_session_conn(p->ses, GW_PC_STREAM_CONTROL), p->timeout_ms);
    if (!r && (h.type != GW_WIRE_POSTCOPY || gw_pc_parse(p->buf.data, h.length, &dm) || dm.op != GW_PC_DIRTY))
        r = gw_err_set(&e, -EPROTO, "expected the dirty pages first");
    if (!r && dm.a != p->vm->mem.size / 4096) r = gw_err_set(&e, -EPROTO, "the dirty bitmap does not fit guest memory");
    if (r) { snprintf(err, errlen, "migration aborted: %s", e.msg); return r; }
    p->prog.phase = GW_MIG_SWITCHOVER;
    size_t words = (dm.a + 63) / 64;
    uint64_t *dirty = malloc(words * 8);
    if (!dirty) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    for (size_t w = 0; w < words; w++) dirty[w] = gw_pc_get64(p->buf.data + GW_PC_HDR + 8 * w);
    uint64_t t_dirty = gw_now_ns();
    r = gw_pc_client_switch(p->c, dirty, dm.a, p->timeout_ms, &e);
    free(dirty);
    uint64_t t_switched = gw_now_ns();
    if (r) { snprintf(err, errlen, "cannot switch to post-copy: %s", e.msg); return r; }
    r = recv_control(p, &h, &e);
    if (!r && h.type != GW_WIRE_STATE) r = gw_err_set(&e, -EPROTO, "expected the VM state first");
    if (r) { snprintf(err, errlen, "migration aborted: %s", e.msg); return r; }
    Godwit__V1__VmState *st = godwit__v1__vm_state__unpack(NULL, h.length, p->buf.data);
    if (!st) { snprintf(err, errlen, "the VM state does not decode"); return -EBADMSG; }
    char why[512];
    uint64_t t_state = gw_now_ns();
    r = gw_vm_load_state(p->vm, st, why, sizeof why);
    godwit__v1__vm_state__free_unpacked(st, NULL);
    uint64_t t_loaded = gw_now_ns();
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
    p->t_started = gw_now_ns();
    /* The pause's share here: settling and registering memory, waiting for the state,
     * loading it, then READY until GO came back. */
    gw_info("vm %s: post-copy switchover here: memory %.2f ms, state wait %.2f ms, load %.2f ms, GO %.2f ms",
            p->vm->name, (t_switched - t_dirty) / 1e6, (t_state - t_switched) / 1e6, (t_loaded - t_state) / 1e6,
            (gw_now_ns() - t_loaded) / 1e6);
    return 0;
}

/* fd when it is a listening socket, else -1 with fd closed (e.g. a socketpair end from an
 * older daemon: nothing to accept on, and a readable fd would only spin accept_resume). */
static int listening_or_close(int fd, const char *vm)
{
    int on = 0;
    socklen_t len = sizeof on;
    if (fd < 0 || (!getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) && on)) return fd;
    gw_warn("vm %s: the resume fd is not a listening socket: no recovery through the daemon", vm);
    close(fd);
    return -1;
}

int gw_postcopy_in_start(struct gw_session *ses, struct gw_vm *vm, int timeout_ms, const struct gw_postcopy_in_resume *rs,
                         struct gw_postcopy_in **out, char *err, size_t errlen)
{
    struct gw_postcopy_in *p = calloc(1, sizeof *p);
    if (!p) {
        gw_session_close(ses);
        if (rs) { if (rs->l) gw_listener_close(rs->l); if (rs->fd_src >= 0) close(rs->fd_src); gw_tls_ctx_free(rs->tls); }
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    p->ses = ses;
    p->vm = vm;
    p->stop_fd = -1;
    p->fd_src = -1;
    p->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
    p->link_timeout_ms = rs && rs->link_timeout_ms > 0 ? rs->link_timeout_ms : DEFAULT_LINK_TIMEOUT_MS;
    p->test_fault = rs ? rs->test_fault : 0;
    p->t0 = gw_now_ns();
    p->prog.phase = GW_MIG_SWITCHOVER;
    p->prog.total_bytes = vm->mem.size;
    p->prog.pc.used = true;
    p->nstreams = gw_session_streams(ses);
    p->mem_size = vm->mem.size;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->ses_mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int r = 0;
    if (rs && !rs->l && rs->fd_src >= 0) p->fd_src = rs->fd_src;
    else if (rs && rs->fd_src >= 0) close(rs->fd_src);
    p->fd_src = listening_or_close(p->fd_src, vm->name);
    if (rs && (rs->l || p->fd_src >= 0)) {
        p->l = rs->l;
        p->tls = rs->tls;
        p->secret = malloc(rs->secret_len ? rs->secret_len : 1);
        const Godwit__V1__MigHello *h = gw_session_hello(ses);
        memset(p->token, 0, sizeof p->token);
        if (h && h->session_token.len == sizeof p->token) memcpy(p->token, h->session_token.data, sizeof p->token);
        p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (!p->secret || p->stop_fd < 0 ||
            gw_pc_resume_key(rs->secret, rs->secret_len, ses, p->token, p->key)) r = -ENOMEM;
        if (p->secret) memcpy(p->secret, rs->secret, rs->secret_len);
        p->secret_len = rs->secret_len;
    } else if (rs) {
        gw_tls_ctx_free(rs->tls);
    }
    if (r) snprintf(err, errlen, "cannot prepare post-copy recovery");
    gw_conn_set_timeout(gw_session_conn(ses, GW_PC_STREAM_CONTROL), p->timeout_ms);
    if (!r) r = hand_over(p, err, errlen);
    if (r) {
        gw_session_send_error(ses, GW_PC_STREAM_CONTROL, r, err);
        gw_postcopy_in_free(p);
        return r;
    }
    p->prog.phase = GW_MIG_POSTCOPY_ACTIVE;
    /* This side's share of the pause: from GO to the vCPUs running (the source measures
     * its own, from the pause to GO). */
    p->prog.measured_downtime_ns = p->t_started - p->t_go;
    gw_conn_set_timeout(gw_session_conn(ses, GW_PC_STREAM_CONTROL), POLL_MS);
    if ((r = -pthread_create(&p->ctl_thr, NULL, ctl_main, p)) == 0) {
        p->ctl_started = true;
        if ((r = -pthread_create(&p->done_thr, NULL, done_main, p))) finish(p, GW_MIG_POSTCOPY_PAUSED, "cannot start the post-copy thread");
        else p->threads = true;
    } else {
        finish(p, GW_MIG_POSTCOPY_PAUSED, "cannot start the post-copy thread");
    }
    if ((p->l || p->fd_src >= 0) && !pthread_create(&p->resume_thr, NULL, resume_main, p)) p->resume_started = true;
    if (!pthread_create(&p->sample_thr, NULL, sample_main, p)) p->sample_started = true;
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
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->lock);
    if (p->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(p->stop_fd, &one, sizeof one);
        (void)w;
    }
    if (p->resume_started) pthread_join(p->resume_thr, NULL);   /* before the session may change no more */
    gw_session_shutdown(p->ses);
    if (p->c) gw_pc_client_fail(p->c, &(struct gw_err){.code = -ECANCELED});
    if (p->threads) pthread_join(p->done_thr, NULL);
    if (p->sample_started) pthread_join(p->sample_thr, NULL);
    if (p->ctl_started) pthread_join(p->ctl_thr, NULL);
    /* After GO and short of completion the missing pages are poisoned (see pc_client.h). */
    gw_pc_client_close(p->c, started && !completed);
    gw_session_close(p->ses);
    gw_rbuf_free(&p->buf);
    if (p->l) gw_listener_close(p->l);
    if (p->fd_src >= 0) close(p->fd_src);
    gw_tls_ctx_free(p->tls);
    if (p->secret) memset(p->secret, 0, p->secret_len);
    free(p->secret);
    memset(p->key, 0, sizeof p->key);
    if (p->stop_fd >= 0) close(p->stop_fd);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->ses_mu);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
