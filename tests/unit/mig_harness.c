/* Shared pieces of the transport tests (see mig_harness.h). */
#include "tests/unit/mig_harness.h"

#include "engine/vm/chunk_digest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/codec/digest.h"
#include "engine/common/util.h"
#include "engine/transport/handshake.h"

static uint64_t rng = 88172645463325252ull;
uint64_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

void fill_page(uint8_t *p, int kind)
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

void test_digest(const uint8_t *mem, uint64_t size, struct gw_digest *out)
{
    if (gw_chunk_digest_buffer(mem, size, out->b)) memset(out->b, 0, sizeof out->b);
}

uint8_t *fresh_memfd_map(uint64_t size)
{
    int fd = memfd_create("gw-test-ram", MFD_CLOEXEC);
    if (fd < 0) return NULL;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) == 0) p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the memory */
    return p == MAP_FAILED ? NULL : p;
}

/* The destination's whole session: accept, receive, answer COMMIT and GO as d->mode says;
 * results land in d. */
static void *dest_main(void *arg)
{
    struct dest *d = arg;
    struct gw_mig_receiver_cfg cfg = { .secret = (const uint8_t *)d->secret, .secret_len = strlen(d->secret),
                                       .timeout_ms = 10000, .touched = d->touched,
                                       .fresh_memory = d->fresh_memory, .attach = d->attach,
                                       .attach_ctx = d->attach_ctx };
    struct gw_mig_receiver *rx = NULL;
    struct gw_err e = {0};
    struct gw_digest want = {{0}};
    bool have_digest = false;
    if (d->handover) {
        struct gw_conn *cs[GW_WIRE_MAX_STREAMS];
        unsigned n = 0;
        while (n < d->handover && n < GW_WIRE_MAX_STREAMS && !(d->r = gw_listener_accept(d->l, 10000, &cs[n], &e))) n++;
        for (unsigned i = 0; i < n / 2; i++) {
            struct gw_conn *t = cs[i];
            cs[i] = cs[n - 1 - i];
            cs[n - 1 - i] = t;
        }
        if (!d->r) d->r = gw_mig_receiver_accept_conns(cs, n, &cfg, &rx, &e);
        else for (unsigned i = 0; i < n; i++) gw_conn_close(cs[i]);
    } else if (d->handoff) {
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
        if (d->mem && d->prefault) memset(d->mem, 0, d->mem_size);
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
        } else if (ev.type == GW_MIG_EV_SYNC) {
            if ((d->r = gw_mig_receiver_synced(rx, ev.round))) break;
        } else if (ev.type == GW_MIG_EV_STATE) {
            d->state_ok = ev.len == 11 && !memcmp(ev.data, "vcpu-state!", 11);
        } else if (ev.type == GW_MIG_EV_DIGEST) {
            want = ev.digest;
            have_digest = true;
        } else if (ev.type == GW_MIG_EV_COMMIT) {
            if (d->mode != DM_BENCH && !d->no_digest) {
                struct gw_digest got;
                test_digest(d->mem, d->mem_size, &got);
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

int start_dest_as(struct dest *d, pthread_t *th, const struct dest *tmpl)
{
    *d = *tmpl;
    if (gw_listen("tcp:127.0.0.1:0", &d->l, NULL)) return -1;
    return pthread_create(th, NULL, dest_main, d);
}

int start_dest(struct dest *d, pthread_t *th, const char *secret, bool handoff, enum dest_mode mode)
{
    struct dest t = { .secret = secret, .handoff = handoff, .mode = mode };
    return start_dest_as(d, th, &t);
}

void finish_dest(struct dest *d, pthread_t th)
{
    pthread_join(th, NULL);
    gw_listener_close(d->l);
}

struct gw_conn *fake_stream(const char *url, uint64_t mem_size, unsigned nstreams, unsigned idx)
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

struct gw_conn *fake_hello(const char *url, uint8_t sid, uint64_t mem_size, unsigned nstreams, unsigned idx)
{
    struct gw_conn *c;
    if (gw_conn_connect(url, 5000, &c, NULL)) return NULL;
    uint8_t id[GW_WIRE_SESSION_ID_SIZE] = {sid};
    Godwit__V1__MigHello h = GODWIT__V1__MIG_HELLO__INIT;
    h.session_id.data = id; h.session_id.len = sizeof id;
    h.nstreams = nstreams; h.stream_index = idx; h.mem_size = mem_size;
    struct gw_hs_params p = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET), .features = GW_WIRE_F_LZ4 };
    struct gw_hs_source_state st;
    if (gw_hs_source_hello(c, &p, &h, &st, NULL)) { gw_conn_close(c); return NULL; }
    return c;
}
