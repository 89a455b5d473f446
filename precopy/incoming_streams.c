/* The destination's first step: the streams of one session, each past its preamble and (when
 * this side speaks it) its TLS handshake, in stream order, ready for the migration
 * handshake (see incoming_streams.h). */
#include "precopy/incoming_streams.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/transport/tls.h"

#define PREAMBLE_TIMEOUT_MS 5000

/* Reads c's preamble and checks it against the session so far (*first: none yet) and, when
 * the daemon told us, the session's token. Returns 0, or -errno with the reason in e. */
static int take(struct gw_conn *c, struct gw_preamble *p, const struct gw_preamble *first, bool want_tls,
                const uint8_t *expect_token, struct gw_conn **slots, struct gw_err *e)
{
    gw_conn_set_timeout(c, PREAMBLE_TIMEOUT_MS);
    int r = gw_sec_recv_preamble(c, p, e);
    if (r) return r;
    /* Before it can define the session: a stranger who found the port first must not make
     * the real source's streams "another session's". */
    if (expect_token && CRYPTO_memcmp(p->token, expect_token, sizeof p->token))
        return gw_err_set(e, -EACCES, "%s: a stream without this migration's session token", c->peer);
    if (p->tls != want_tls)
        return gw_err_set(e, -EPROTO, "%s: the source %s TLS but this destination has migration TLS %s", c->peer,
                          p->tls ? "speaks" : "does not speak", want_tls ? "on" : "off");
    if (first && (p->nstreams != first->nstreams || memcmp(p->token, first->token, sizeof p->token)))
        return gw_err_set(e, -EPROTO, "%s: a stream of another session (count or token differs)", c->peer);
    if (slots[p->stream_index])
        return gw_err_set(e, -EPROTO, "%s: stream %u of the session came twice", c->peer, p->stream_index);
    return 0;
}

int gw_incoming_streams(struct gw_listener *l, struct gw_conn *first_conn, const int *fds, unsigned nfds, struct gw_tls_ctx *tls,
                        const uint8_t *expect_token, int timeout_ms, struct gw_conn **out, unsigned *n_out,
                        struct gw_err *e)
{
    struct gw_conn *slots[GW_WIRE_MAX_STREAMS] = {0};
    struct gw_preamble first = {0};
    unsigned got = 0, want = l ? 0 : nfds;
    int r = 0;
    if (!l && (nfds == 0 || nfds > GW_WIRE_MAX_STREAMS)) {
        for (unsigned i = 0; i < nfds; i++) close(fds[i]);
        return gw_err_set(e, -EINVAL, "1..%u sockets", GW_WIRE_MAX_STREAMS);
    }
    uint64_t end = gw_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 60000) * 1000000ull;
    for (unsigned k = 0; !r && (want == 0 || got < want); k++) {
        struct gw_conn *c;
        if (first_conn) {
            c = first_conn;
            first_conn = NULL;
        } else if (l) {
            uint64_t now = gw_now_ns();
            if (now >= end) { r = gw_err_set(e, -ETIMEDOUT, "%s: the session's streams did not arrive", l->url); break; }
            r = gw_listener_accept(l, (int)((end - now) / 1000000 + 1), &c, e);
            if (r) break;
        } else if ((r = gw_conn_from_fd(fds[k], &c, e))) {
            for (unsigned i = k; i < nfds; i++) close(fds[i]);
            break;
        }
        struct gw_preamble p;
        struct gw_err why = {0};
        int t = take(c, &p, got ? &first : NULL, tls != NULL, expect_token, slots, &why);
        if (t) {
            gw_conn_close(c);
            /* On a listener of our own, a stranger is closed and the wait goes on; the
             * streams a daemon handed over are the session, so any bad one ends it. */
            if (l) { gw_warn("incoming: %s: closed", why.msg); continue; }
            r = gw_err_set(e, t, "%s", why.msg);
            for (unsigned i = k + 1; i < nfds; i++) close(fds[i]);
            break;
        }
        if (!got) {
            first = p;
            if (l) want = p.nstreams;
            else if (p.nstreams != nfds) {
                gw_conn_close(c);
                for (unsigned i = k + 1; i < nfds; i++) close(fds[i]);
                r = gw_err_set(e, -EPROTO, "the session has %u streams, %u were handed over", p.nstreams, nfds);
                break;
            }
        }
        slots[p.stream_index] = c;
        got++;
    }
    /* TLS in stream order: the source opens its streams' TLS sessions in that order. */
    for (unsigned i = 0; !r && i < want; i++) {
        gw_conn_set_timeout(slots[i], PREAMBLE_TIMEOUT_MS * 2);
        if (tls) r = gw_tls_wrap(&slots[i], tls, i == 0, e);
    }
    if (r) {
        for (unsigned i = 0; i < GW_WIRE_MAX_STREAMS; i++) gw_conn_close(slots[i]);
        return r;
    }
    for (unsigned i = 0; i < want; i++) {
        gw_conn_set_timeout(slots[i], 0);
        out[i] = slots[i];
    }
    *n_out = want;
    return 0;
}
