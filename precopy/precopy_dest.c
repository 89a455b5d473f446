/* Incoming migration (see precopy_dest.h). */
#include "precopy/precopy_dest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/common/limits.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "precopy/precopy_link.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/vm.h"
#include "engine/vm/virtio_attach.h"
#include "precopy/incoming_streams.h"

/* The largest VM we create. */
#define MAX_MEMORY GW_LIMIT_MEMORY_MAX   /* engine/common/limits.h */

struct incoming {
    const struct gw_incoming_params *p;
    struct gw_listener *l;
    struct gw_mig_receiver *rx;
    struct gw_vm *vm;
    struct gw_chunk_digest cd;
    bool cd_ready;
    bool final_round;             /* the source's last END_OF_ROUND has been applied */
    bool state_loaded, digest_ok;
    struct gw_mig_progress prog;
    uint64_t t0, t_switch;
    struct gw_err e;
};

static int create_vm(struct incoming *in, char *err, size_t errlen)
{
    const Godwit__V1__MigHello *h = gw_mig_receiver_hello(in->rx);
    const Godwit__V1__VmConfig *c = h ? h->config : NULL;
    if (!c) { snprintf(err, errlen, "the source sent no VM configuration"); return -EPROTO; }
    struct gw_vm_config cfg = {
        .name = c->name, .memory_bytes = c->memory_bytes, .vcpus = c->vcpus, .guest_spec = c->guest_spec,
        .disk_path = in->p->disk_path, .console_fd = in->p->console_fd, .net = in->p->net,
        .disk_lock_later = true,   /* the source holds the image's lock until GO */
    };
    if (in->p->expect_name && (!c->name || strcmp(c->name, in->p->expect_name))) {
        snprintf(err, errlen, "the source sent VM '%s', this host expects '%s'", c->name ? c->name : "",
                 in->p->expect_name);
        return -EACCES;
    }
    /* The VM that arrives is the VM this host reserved: its size too, not only its name (the
     * reservation is what this host checked and what its capacity counts). */
    if ((in->p->expect_memory && c->memory_bytes != in->p->expect_memory) ||
        (in->p->expect_vcpus && c->vcpus != in->p->expect_vcpus)) {
        snprintf(err, errlen, "the source sent a VM of %llu MiB and %u vCPUs, this host reserved %llu MiB and %u",
                 (unsigned long long)(c->memory_bytes >> 20), c->vcpus, (unsigned long long)(in->p->expect_memory >> 20),
                 in->p->expect_vcpus);
        return -EACCES;
    }
    if (c->disk_path && *c->disk_path && !in->p->disk_path) {
        snprintf(err, errlen, "the source's VM has a disk, and this host was given none for it");
        return -EINVAL;
    }
    if (c->memory_bytes > MAX_MEMORY) {
        snprintf(err, errlen, "the source announced %llu GiB of memory, more than the %llu GiB this host takes",
                 (unsigned long long)(c->memory_bytes >> 30), (unsigned long long)(MAX_MEMORY >> 30));
        return -EFBIG;
    }
    if (c->memory_bytes != h->mem_size) {
        snprintf(err, errlen, "the source announced %llu bytes of memory but a stream of %llu",
                 (unsigned long long)c->memory_bytes, (unsigned long long)h->mem_size);
        return -EPROTO;
    }
    char why[512];
    int r = gw_vm_create(&cfg, &in->vm, why, sizeof why);
    if (r) { snprintf(err, errlen, "cannot create the VM here: %s", why); return r; }
    gw_log_set_tag(in->vm->name);
    r = gw_chunk_digest_init(&in->cd, in->vm->mem.base, in->vm->mem.size);
    if (r) { snprintf(err, errlen, "digest: %s", strerror(-r)); return r; }
    in->cd_ready = true;
    in->prog.total_bytes = in->vm->mem.size;
    return 0;
}

/* On the receiving threads: the pages just placed are hashed there and then, alongside the
 * transfer (streams own disjoint chunks). The main thread only finishes the digest, once every
 * stream is done. */
static void hash_placed(void *ctx, const uint64_t *pfns, const uint8_t *const *from, uint32_t n)
{
    gw_chunk_digest_placed(ctx, pfns, from, n);
}

/* Handles one event; returns 1 when the VM runs (done), 0 to go on, or -errno. */
static int on_event(struct incoming *in, const struct gw_mig_event *ev, char *err, size_t errlen)
{
    switch (ev->type) {
    case GW_MIG_EV_ROUND:
        if (in->final_round) { snprintf(err, errlen, "a round after the final round"); return -EPROTO; }
        /* Memory may change in any round before the final one: a digest only counts after it. */
        in->digest_ok = false;
        in->final_round = ev->final;
        in->prog.round = (uint32_t)ev->round;
        in->prog.phase = ev->final ? GW_MIG_SWITCHOVER : GW_MIG_PRECOPY;
        return 0;
    case GW_MIG_EV_SYNC:
        return gw_mig_receiver_synced(in->rx, ev->round)
                   ? (snprintf(err, errlen, "cannot answer SYNC: %s", gw_mig_receiver_error(in->rx)), -EPIPE) : 0;
    case GW_MIG_EV_SWITCHOVER:
        in->prog.phase = GW_MIG_SWITCHOVER;
        in->t_switch = gw_now_ns();
        return 0;
    case GW_MIG_EV_STATE: {
        Godwit__V1__VmState *st = godwit__v1__vm_state__unpack(NULL, ev->len, ev->data);
        if (!st) { snprintf(err, errlen, "the VM state does not decode"); return -EBADMSG; }
        char why[512];
        uint64_t t = gw_now_ns();
        int r = gw_vm_load_state(in->vm, st, why, sizeof why);
        gw_debug("incoming: state loaded in %.2f ms", (gw_now_ns() - t) / 1e6);
        godwit__v1__vm_state__free_unpacked(st, NULL);
        if (r) { snprintf(err, errlen, "the VM state does not load here: %s", why); return r; }
        in->state_loaded = true;
        return 0;
    }
    case GW_MIG_EV_DIGEST: {
        if (!in->final_round) {
            snprintf(err, errlen, "DIGEST before the final round (memory could still change)");
            return -EPROTO;
        }
        uint64_t t = gw_now_ns();
        struct gw_digest mine;
        gw_chunk_digest_final(&in->cd, mine.b);
        gw_debug("incoming: digest in %.2f ms", (gw_now_ns() - t) / 1e6);
        if (!gw_digest_equal(&mine, &ev->digest)) {
            char a[33], b[33];
            snprintf(err, errlen, "memory digest differs: source %s, here %s", gw_digest_hex(&ev->digest, a),
                     gw_digest_hex(&mine, b));
            return -EBADMSG;
        }
        in->digest_ok = true;
        return 0;
    }
    case GW_MIG_EV_COMMIT:
        if (!in->final_round || !in->state_loaded || !in->digest_ok) {
            snprintf(err, errlen, "COMMIT before %s", !in->final_round ? "the final round"
                     : in->state_loaded ? "a matching digest" : "the VM state");
            return -EPROTO;
        }
        return gw_mig_receiver_ack(in->rx) ? (snprintf(err, errlen, "cannot send READY: %s",
                                                       gw_mig_receiver_error(in->rx)), -EPIPE) : 0;
    case GW_MIG_EV_GO: {
        /* The image is ours from GO on: the source drops its lock right after sending it. */
        int r = gw_vm_disk_lock(in->vm, true, 5000);
        if (r) {
            snprintf(err, errlen, "the disk image is still locked elsewhere: %s", strerror(-r));
            return r;
        }
        r = gw_vm_start(in->vm);
        if (r) { snprintf(err, errlen, "cannot start the VM: %s", strerror(-r)); return r; }
        /* The VM runs here now; RUNNING only tells the source it may let go. */
        if (gw_mig_receiver_running(in->rx))
            gw_warn("vm %s: could not confirm RUNNING to the source: %s", in->vm->name,
                    gw_mig_receiver_error(in->rx));
        return 1;
    }
    }
    snprintf(err, errlen, "unexpected migration event %d", (int)ev->type);
    return -EPROTO;
}

/* Whether c's first bytes are a wire record header rather than a preamble (peeked, nothing
 * consumed; waits up to timeout_ms for them). */
static bool starts_with_record(struct gw_conn *c, int timeout_ms)
{
    struct pollfd pf = {.fd = c->fd, .events = POLLIN};
    if (c->fd < 0 || poll(&pf, 1, timeout_ms) <= 0) return false;
    uint8_t b[4];
    if (recv(c->fd, b, sizeof b, MSG_PEEK | MSG_DONTWAIT) != (ssize_t)sizeof b) return false;
    return (b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24) == GW_WIRE_MAGIC;
}

static int run(struct incoming *in, char *err, size_t errlen)
{
    const struct gw_incoming_params *p = in->p;
    struct gw_mig_receiver_cfg cfg = {
        .secret = p->secret, .secret_len = p->secret_len, .timeout_ms = p->timeout_ms ? p->timeout_ms : 60000,
        .fresh_memory = true, .attach = p->attach, .attach_ctx = p->attach_ctx,
    };
    int r;
    if (p->preamble) {
        struct gw_conn *cs[GW_WIRE_MAX_STREAMS];
        unsigned n = 0;
        if (!p->nfds) {
            r = gw_listen(p->listen_url, &in->l, &in->e);
            if (!r && p->on_listening) p->on_listening(p->ctx, in->l->url);
        } else {
            r = 0;
        }
        struct gw_conn *c0 = NULL;
        if (!r && !p->nfds && !p->tls) {
            /* Plaintext on a listener of our own: a source that starts with a bare HELLO
             * (no preamble) still gets the one-at-a-time handshake of old. */
            r = gw_listener_accept(in->l, cfg.timeout_ms, &c0, &in->e);
            /* A source sends its first bytes at once: a first connection that stays silent
             * (a stranger) is given the preamble's 5 s, not the whole session's time, and then
             * waits among the others (incoming_streams.h). */
            if (!r && starts_with_record(c0, cfg.timeout_ms < GW_INCOMING_PREAMBLE_MS ? cfg.timeout_ms : GW_INCOMING_PREAMBLE_MS)) {
                r = gw_mig_receiver_accept_conn(c0, in->l, &cfg, &in->rx, &in->e);
                goto accepted;
            }
        }
        if (!r) r = gw_incoming_streams(in->l, c0, p->fds, p->nfds, p->tls, p->session_token, cfg.timeout_ms, cs, &n,
                                        &in->e);
        if (!r) r = gw_mig_receiver_accept_conns(cs, n, &cfg, &in->rx, &in->e);
    } else if (p->nfds == 1) {
        struct gw_conn *c;
        r = gw_conn_from_fd(p->fds[0], &c, &in->e);
        if (!r) r = gw_mig_receiver_accept_conn(c, NULL, &cfg, &in->rx, &in->e);
    } else if (p->nfds > 1) {
        struct gw_conn *cs[GW_INCOMING_MAX_FDS];
        unsigned n = 0;   /* fds[0..n) are wrapped in cs */
        r = p->nfds > GW_INCOMING_MAX_FDS ? gw_err_set(&in->e, -EINVAL, "at most %u sockets", GW_INCOMING_MAX_FDS) : 0;
        while (!r && n < p->nfds && !(r = gw_conn_from_fd(p->fds[n], &cs[n], &in->e))) n++;
        if (r) {
            for (unsigned i = 0; i < n; i++) gw_conn_close(cs[i]);
            for (unsigned i = n; i < p->nfds && i < GW_INCOMING_MAX_FDS; i++) close(p->fds[i]);
        } else {
            r = gw_mig_receiver_accept_conns(cs, n, &cfg, &in->rx, &in->e);
        }
    } else {
        r = gw_listen(p->listen_url, &in->l, &in->e);
        if (!r && p->on_listening) p->on_listening(p->ctx, in->l->url);
        if (!r) r = gw_mig_receiver_accept(in->l, &cfg, &in->rx, &in->e);
    }
accepted:
    if (r) { snprintf(err, errlen, "%s", in->e.msg[0] ? in->e.msg : strerror(-r)); return r; }
    in->t0 = gw_now_ns();
    in->prog.phase = GW_MIG_SETUP;
    r = create_vm(in, err, errlen);
    if (r) { gw_mig_receiver_abort(in->rx, r, err); return r; }
    if (gw_mig_receiver_hello(in->rx)->features & GW_WIRE_F_PC_RESUME) {
        snprintf(err, errlen, "a post-copy resume for a migration this runner does not hold");
        gw_mig_receiver_abort(in->rx, -EPROTO, err);
        return -EPROTO;
    }
    if (gw_mig_receiver_hello(in->rx)->features & GW_WIRE_F_POSTCOPY) {
        if (!p->postcopy) {
            snprintf(err, errlen, "the source asks for post-copy, which this destination does not take");
            gw_mig_receiver_abort(in->rx, -EPROTONOSUPPORT, err);
            return -EPROTONOSUPPORT;
        }
        struct gw_session *ses = gw_mig_receiver_take_session(in->rx);
        gw_mig_receiver_close(in->rx);
        in->rx = NULL;
        in->prog.phase = GW_MIG_SWITCHOVER;
        in->t_switch = gw_now_ns();
        struct gw_listener *l = in->l;
        in->l = NULL;
        return p->postcopy(p->postcopy_ctx, ses, l, in->vm, err, errlen);
    }
    gw_mig_receiver_on_placed(in->rx, hash_placed, &in->cd);
    r = gw_mig_receiver_start_memfd(in->rx, in->vm->mem.base, in->vm->mem.memfd, in->vm->mem.size, &in->e);
    if (r) { snprintf(err, errlen, "%s", in->e.msg); return r; }
    in->prog.setup_ns = gw_now_ns() - in->t0;
    in->prog.phase = GW_MIG_PRECOPY;
    for (;;) {
        struct gw_mig_event ev;
        r = gw_mig_receiver_next(in->rx, &ev, cfg.timeout_ms);
        if (r) {
            snprintf(err, errlen, "migration aborted: %s", gw_mig_receiver_error(in->rx)[0]
                     ? gw_mig_receiver_error(in->rx) : strerror(-r));
            return r;
        }
        r = on_event(in, &ev, err, errlen);
        if (r < 0) { gw_mig_receiver_abort(in->rx, r, err); return r; }
        if (r == 1) return 0;
    }
}

int gw_incoming_run(const struct gw_incoming_params *p, struct gw_vm **vm_out,
                    struct gw_mig_progress *prog, char *err, size_t errlen)
{
    struct incoming in = {.p = p};
    *vm_out = NULL;
    int r = run(&in, err, errlen);
    if (in.rx) {
        struct gw_mig_stats st;
        gw_mig_receiver_stats(in.rx, &st);
        in.prog.sent_bytes = st.bytes_wire;
        in.prog.pages_zero = st.codec.pages[GW_PAGE_ZERO];
        in.prog.pages_raw = st.codec.pages[GW_PAGE_RAW] + st.codec.pages[GW_PAGE_PLACED];
        in.prog.pages_lz4 = st.codec.pages[GW_PAGE_LZ4];
        gw_mig_receiver_close(in.rx);
    }
    if (in.l) gw_listener_close(in.l);
    if (in.cd_ready) gw_chunk_digest_free(&in.cd);
    in.prog.total_ns = in.t0 ? gw_now_ns() - in.t0 : 0;
    if (in.t_switch) in.prog.measured_downtime_ns = gw_now_ns() - in.t_switch;
    if (r) {
        in.prog.phase = GW_MIG_FAILED;
        snprintf(in.prog.error, sizeof in.prog.error, "%s", err);
        gw_vm_destroy(in.vm); /* never started, or discarded before GO */
    } else {
        in.prog.phase = GW_MIG_COMPLETED;
        *vm_out = in.vm;
    }
    if (prog) *prog = in.prog;
    return r;
}
