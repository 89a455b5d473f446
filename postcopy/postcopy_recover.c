/* Post-copy source: recovery after a broken link (see postcopy_source.h, pc_resume.h): the
 * source reconnects with backoff, proves the migration's resume key, learns which pages the
 * destination holds and sends the rest; past its recovery time it waits for the operator. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/vm.h"
#include "postcopy/pc_resume.h"
#include "postcopy/pc_server.h"
#include "postcopy/pc_wire.h"
#include "postcopy/postcopy_source_int.h"

#define DEFAULT_RECOVER_NS (30ull * 1000000000ull)
#define RECONNECT_TIMEOUT_MS 5000     /* one attempt: connect, TLS, handshake, the resume exchange */
#define BACKOFF_FIRST_NS (50ull * 1000000ull)
/* The longest nap between attempts: the link's return is noticed within it, so it bounds how
 * long after the return post-copy resumes (target 500 ms with the handshake). An attempt on a
 * link that is down costs one failing connect. */
#define BACKOFF_MAX_NS (200ull * 1000000ull)

/* Stops the page traffic of the broken session and lets go of it; the pages stay. */
static void drop_session(struct gw_postcopy *m)
{
    if (m->ses) gw_session_shutdown(m->ses);
    if (m->srv) {
        struct gw_pc_server_stats st;
        gw_pc_server_stats(m->srv, &st);
        m->base_requested += st.pages_requested;
        m->base_refused += st.refused;
        gw_pc_server_close(m->srv);
        m->srv = NULL;
    }
    pthread_mutex_lock(&m->lock);
    struct gw_session *s = m->ses;
    m->ses = NULL;
    pthread_mutex_unlock(&m->lock);
    gw_session_close(s);
}

/* One attempt to take the migration up again at url. 0: resumed (pages flow again),
 * 1: the destination had completed, -errno with e. */
static int resume_once(struct gw_postcopy *m, const char *url, int timeout_ms, struct gw_err *e)
{
    Godwit__V1__VmConfig cfg;
    Godwit__V1__MemoryRegion regions[GW_MEM_MAX_REGIONS];
    Godwit__V1__MemoryRegion *region_ptrs[GW_MEM_MAX_REGIONS];
    gw_vm_describe(m->vm, &cfg, regions, region_ptrs);
    struct gw_session_cfg sc = {
        .url = url, .nstreams = GW_PC_FIRST_LANE + m->p.lanes, .secret = m->secret, .secret_len = m->p.secret_len,
        .mem_size = m->vm->mem.size, .config = &cfg,
        .features = GW_WIRE_F_POSTCOPY | GW_WIRE_F_PC_RESUME | (m->p.codec == GW_CODEC_NONE ? 0 : GW_WIRE_F_LZ4),
        .timeout_ms = timeout_ms, .preamble = m->p.preamble, .tls = m->p.tls, .token = m->p.token,
    };
    struct gw_session *s;
    int r = gw_session_connect(&sc, &s, e);
    if (r) return r;
    pthread_mutex_lock(&m->lock);
    m->prog.phase = GW_MIG_POSTCOPY_RECOVER;   /* connected: taking it up again */
    pthread_mutex_unlock(&m->lock);
    uint64_t *received = calloc((m->npages + 63) / 64, 8);
    if (!received) { gw_session_close(s); return gw_err_set(e, -ENOMEM, "out of memory"); }
    r = gw_pc_resume_source(s, m->resume_key, m->npages, received, &m->buf, e);
    if (r == 1) {
        free(received);
        gw_session_close(s);
        return 1;
    }
    if (!r) {
        /* Everything the destination does not hold goes again: what the push still had,
         * and what was on its way when the link broke. */
        for (uint64_t w = 0; w < (m->npages + 63) / 64; w++) m->cur_push[w] = m->push[w] & ~received[w];
        for (unsigned i = 0; i < gw_session_streams(s); i++) gw_conn_set_timeout(gw_session_conn(s, i), READY_TIMEOUT_MS);
        pthread_mutex_lock(&m->lock);
        m->ses = s;
        pthread_mutex_unlock(&m->lock);
        struct gw_pc_server_cfg pc = {.ses = s, .mem = m->vm->mem.base, .mem_size = m->vm->mem.size,
                                      .nlanes = m->p.lanes, .codec = m->p.codec, .rate_bps = m->p.bandwidth_limit_bps,
                                      .no_priority = m->p.no_priority};
        r = gw_pc_server_open(&pc, &m->srv, e);
        if (!r) r = gw_pc_server_run(m->srv, m->cur_push, e);
        if (r) drop_session(m);
        s = NULL;
    }
    free(received);
    gw_session_close(s);
    return r;
}

/* Sleeps up to ns unless the operator asks for something; true when woken by them. */
static bool nap(struct gw_postcopy *m, uint64_t ns)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(ns / 1000000000ull);
    dl.tv_nsec += (long)(ns % 1000000000ull);
    if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&m->lock);
    while (!m->abandon && !m->resume_now && pthread_cond_timedwait(&m->cv, &m->lock, &dl) != ETIMEDOUT) {}
    bool woken = m->abandon || m->resume_now;
    pthread_mutex_unlock(&m->lock);
    return woken;
}

/* The link broke after GO: reconnect with backoff for the recovery time (to the operator's
 * new address when they gave one), then wait for the operator. 0: resumed, 1: completed,
 * -ECONNABORTED: the operator gave up on it (the VM stays paused here). */
int gw_postcopy_recover(struct gw_postcopy *m, const char *why)
{
    uint64_t t_lost = gw_now_ns();
    pthread_mutex_lock(&m->lock);
    m->prog.phase = GW_MIG_POSTCOPY_PAUSED;
    snprintf(m->prog.error, sizeof m->prog.error, "the destination was lost during post-copy (%.120s); reconnecting", why);
    pthread_mutex_unlock(&m->lock);
    gw_warn("vm %s: post-copy to %s paused: %s; the VM stays paused here with all its pages; reconnecting",
            m->vm->name, m->url, why);
    drop_session(m);
    uint64_t budget = m->p.recover_timeout_ns ? m->p.recover_timeout_ns : DEFAULT_RECOVER_NS;
    for (;;) {
        uint64_t deadline = gw_now_ns() + budget, backoff = BACKOFF_FIRST_NS;
        unsigned attempts = 0;
        struct gw_err e = {0};
        while (gw_now_ns() < deadline) {
            pthread_mutex_lock(&m->lock);
            bool give_up = m->abandon;
            m->resume_now = false;
            if (m->resume_url[0]) {
                snprintf(m->url, sizeof m->url, "%s", m->resume_url);
                m->resume_url[0] = 0;
            }
            pthread_mutex_unlock(&m->lock);
            if (give_up) return -ECONNABORTED;
            attempts++;
            memset(&e, 0, sizeof e);
            /* One attempt never outlasts the recovery time by much. */
            uint64_t left_ms = (deadline - gw_now_ns()) / 1000000;
            int r = resume_once(m, m->url, left_ms < 200 ? 200 : left_ms < RECONNECT_TIMEOUT_MS ? (int)left_ms
                                                                            : RECONNECT_TIMEOUT_MS, &e);
            if (r >= 0) {
                pthread_mutex_lock(&m->lock);
                m->prog.phase = GW_MIG_POSTCOPY_ACTIVE;
                m->prog.error[0] = 0;
                m->prog.pc.recoveries++;
                m->prog.pc.recovery_ns = gw_now_ns() - t_lost;
                pthread_mutex_unlock(&m->lock);
                gw_info("vm %s: post-copy to %s resumed after %.0f ms (%u attempts)", m->vm->name, m->url,
                        (gw_now_ns() - t_lost) / 1e6, attempts);
                return r;
            }
            pthread_mutex_lock(&m->lock);
            m->prog.phase = GW_MIG_POSTCOPY_PAUSED;
            snprintf(m->prog.error, sizeof m->prog.error,
                     "the destination was lost during post-copy; reconnecting to %.60s: %.120s", m->url, e.msg);
            pthread_mutex_unlock(&m->lock);
            /* Every failure is retried until the time is up, a refused proof too: the address
             * may answer for someone else only for a while (a half-dead runner, a port reused). */
            uint64_t now = gw_now_ns(), left = now < deadline ? deadline - now : 0;
            nap(m, backoff < left ? backoff : left);
            backoff = backoff * 2 < BACKOFF_MAX_NS ? backoff * 2 : BACKOFF_MAX_NS;
        }
        pthread_mutex_lock(&m->lock);
        m->prog.phase = GW_MIG_POSTCOPY_PAUSED;
        snprintf(m->prog.error, sizeof m->prog.error,
                 "the destination was lost during post-copy: gave up reconnecting to %.40s after %u tries in %u s "
                 "(%.40s); the VM stays paused here with all its pages (resume --to ADDR, or resolve)",
                 m->url, attempts, (unsigned)(budget / 1000000000ull), e.msg[0] ? e.msg : "no answer");
        gw_error("vm %s: %s", m->vm->name, m->prog.error);
        /* The operator's turn: a resume (maybe elsewhere) or a resolve. */
        while (!m->abandon && !m->resume_now) pthread_cond_wait(&m->cv, &m->lock);
        bool give_up = m->abandon;
        pthread_mutex_unlock(&m->lock);
        if (give_up) return -ECONNABORTED;
    }
}

int gw_postcopy_resume(struct gw_postcopy *m, const char *url)
{
    if (url && (!*url || strlen(url) >= sizeof m->resume_url)) return -EINVAL;
    pthread_mutex_lock(&m->lock);
    enum gw_mig_phase ph = m->prog.phase;
    int r = m->finished || m->abandon || (ph != GW_MIG_POSTCOPY_PAUSED && ph != GW_MIG_POSTCOPY_RECOVER) ? -EALREADY : 0;
    if (!r) {
        if (url) snprintf(m->resume_url, sizeof m->resume_url, "%s", url);
        m->resume_now = true;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->lock);
    return r;
}

void gw_postcopy_abandon(struct gw_postcopy *m)
{
    pthread_mutex_lock(&m->lock);
    m->abandon = true;
    pthread_cond_broadcast(&m->cv);
    if (m->go_sent && m->ses && m->prog.phase != GW_MIG_POSTCOPY_ACTIVE) gw_session_shutdown(m->ses);
    pthread_mutex_unlock(&m->lock);
}

