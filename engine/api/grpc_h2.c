/* The HTTP/2 side of the gRPC server: nghttp2 callbacks that turn a request stream into a
 * call (headers checked, request message reassembled under the size limit), and the data
 * provider and trailers that carry a call's responses back. Runs on the loop thread only. */
#include "engine/api/grpc_server_int.h"

#include "engine/common/log.h"
#include "engine/common/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NV(n, v, vl) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE }

static struct gw_grpc_call *stream_call(nghttp2_session *ng, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(ng, id) : NULL;
}

/* Ends the call early (before dispatch) from the loop thread. */
static void fail(struct gw_grpc_call *c, int code, const char *msg)
{
    if (c->early_done)
        return;
    c->early_done = true;
    gw_call_finish_loop(c, code, msg);
}

static bool name_is(const uint8_t *n, size_t nl, const char *lit)
{
    size_t l = strlen(lit);
    return nl == l && memcmp(n, lit, l) == 0;
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct gw_h2_conn *conn = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct gw_grpc_call *c = gw_call_new(conn->srv, conn, f->hd.stream_id);
    if (!c)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  /* resets just this stream */
    c->conn_next = conn->calls;
    if (conn->calls)
        conn->calls->conn_prev = c;
    conn->calls = c;
    conn->ncalls++;
    nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, c);
    return 0;
}

static void check_auth(struct gw_grpc_call *c, const uint8_t *v, size_t vl)
{
    const char *tok = c->srv->token, *peer = c->srv->peer_token;
    if (vl < 7 || strncasecmp((const char *)v, "Bearer ", 7) != 0)
        return;
    if (tok) c->auth_ok = gw_grpc_secret_equal(v + 7, vl - 7, tok, strlen(tok));
    if (peer) c->peer_ok = gw_grpc_secret_equal(v + 7, vl - 7, peer, strlen(peer));
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *n, size_t nl,
                     const uint8_t *v, size_t vl, uint8_t flags, void *ud)
{
    struct gw_grpc_call *c = stream_call(ng, f->hd.stream_id);
    if (!c || c->headers_done)
        return 0;   /* trailers from the client carry nothing we use */
    if (name_is(n, nl, ":path")) {
        if (vl == 0 || vl >= sizeof c->path) {
            c->bad_path = true;
        } else {
            memcpy(c->path, v, vl);
            c->path[vl] = '\0';
        }
    } else if (name_is(n, nl, ":method")) {
        c->is_post = vl == 4 && memcmp(v, "POST", 4) == 0;
    } else if (name_is(n, nl, "content-type")) {
        static const char ct[] = "application/grpc";
        c->ct_ok = vl >= sizeof ct - 1 && memcmp(v, ct, sizeof ct - 1) == 0 &&
                   (vl == sizeof ct - 1 || v[sizeof ct - 1] == '+' || v[sizeof ct - 1] == ';');
    } else if (name_is(n, nl, "grpc-timeout")) {
        c->timeout_bad = gw_grpc_timeout_parse((const char *)v, vl, &c->timeout_ns) < 0;
        if (!c->timeout_bad && !c->timeout_ns) c->timeout_ns = 1;   /* "0n": already past, not "none" */
    } else if (name_is(n, nl, "authorization")) {
        check_auth(c, v, vl);
    }
    return 0;
}

/* All request headers are in: decide whether the call may go on. */
static void headers_done(struct gw_grpc_call *c)
{
    struct gw_grpc_server *srv = c->srv;
    c->headers_done = true;
    if (c->timeout_ns) {
        uint64_t now = gw_now_ns();
        c->deadline_ns = c->timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + c->timeout_ns;
        gw_server_deadline_add(srv, c);
    }
    if (!c->is_post) {
        fail(c, GW_GRPC_UNIMPLEMENTED, "gRPC requires POST");
        return;
    }
    if (!c->ct_ok) {
        fail(c, GW_GRPC_INTERNAL, "content-type must be application/grpc");
        return;
    }
    if (c->timeout_bad) {
        fail(c, GW_GRPC_INTERNAL, "malformed grpc-timeout");
        return;
    }
    c->method = c->bad_path ? NULL : gw_server_find_method(srv, c->path);
    /* Without a valid token even the existence of a method is not revealed. */
    bool need_auth = srv->token && !(c->method && (c->method->m.flags & GW_GRPC_NO_AUTH));
    bool peer_method = c->method && (c->method->m.flags & GW_GRPC_PEER);
    /* A peer method takes the cluster credential and nothing else; the operator's token
     * opens only the operator's API. */
    if (peer_method ? !c->peer_ok : need_auth && !c->auth_ok) {
        fail(c, GW_GRPC_UNAUTHENTICATED, "missing or invalid bearer token");
        return;
    }
    if (c->method && !(c->method->m.flags & GW_GRPC_NO_AUTH)) c->conn->authed = true;
    if (!c->method) {
        char msg[GW_GRPC_PATH_MAX + 32];
        snprintf(msg, sizeof msg, "unknown method %s", c->bad_path ? "(too long)" : c->path);
        fail(c, GW_GRPC_UNIMPLEMENTED, msg);
    }
}

static int on_message(void *arg, const uint8_t *msg, uint32_t len)
{
    struct gw_grpc_call *c = arg;
    if (c->method->m.kind == GW_GRPC_BIDI_STREAM) {
        uint8_t *buf = gw_grpc_deframer_take(&c->deframer);
        if (!buf && !(buf = malloc(1)))
            return -ENOMEM;
        c->nreq++;
        return gw_call_bidi_push(c, buf, len);
    }
    if (++c->nreq > 1)
        return -E2BIG;
    /* Keep the deframer's buffer rather than a copy: one message never costs twice its size. */
    c->req = gw_grpc_deframer_take(&c->deframer);
    if (!c->req && !(c->req = malloc(1)))   /* an empty message has no buffer */
        return -ENOMEM;
    c->req_len = len;
    return 0;
}

bool gw_h2_call_account(struct gw_grpc_call *c, bool release)
{
    struct gw_grpc_server *srv = c->srv;
    if (release)
        gw_grpc_deframer_free(&c->deframer);
    bool bidi = c->method && c->method->m.kind == GW_GRPC_BIDI_STREAM;
    size_t now = (size_t)c->deframer.buf_cap + (bidi ? c->bidi_held : c->req_len);
    c->conn->held = c->conn->held - c->held + now;
    srv->held = srv->held - c->held + now;
    c->held = now;
    return c->conn->held <= srv->cfg.max_conn_buffer_bytes && srv->held <= srv->cfg.max_buffer_bytes;
}

void gw_h2_conn_repay(struct gw_h2_conn *conn)
{
    if (!conn->owed || !conn->ng)
        return;
    struct gw_grpc_server *srv = conn->srv;
    bool receiving = false;
    for (struct gw_grpc_call *c = conn->calls; c; c = c->conn_next)
        receiving |= c->begun && !c->request_done && !c->early_done;
    for (struct gw_grpc_call *c = conn->calls; c && conn->owed; c = c->conn_next) {
        if (!c->owed)
            continue;
        bool fits = conn->held <= srv->cfg.max_conn_buffer_bytes;
        if (!fits && receiving)
            break;
        nghttp2_session_consume_stream(conn->ng, c->stream_id, c->owed);
        conn->owed -= c->owed;
        c->owed = 0;
        c->begun = true;
        receiving = true;
    }
}

/* Flow control (automatic window updates are off): the connection's window is given back at
 * once, always, so that one stream waiting for its budget never blocks the others; a stream's
 * own window is given back as its bytes are taken, unless the connection is over its buffer
 * budget and the stream has not begun: then the client waits (at most one stream window, 1
 * MiB, per such stream) until earlier calls let their bytes go (gw_h2_conn_repay). A stream
 * that has begun always runs to the end of its request, so some call can always complete.
 * Only the server-wide budget still refuses with RESOURCE_EXHAUSTED. */
static void give_back(struct gw_grpc_call *c, nghttp2_session *ng, int32_t id, size_t len)
{
    struct gw_h2_conn *conn = c->conn;
    if (!c->owed && (c->begun || conn->held <= c->srv->cfg.max_conn_buffer_bytes)) {
        nghttp2_session_consume_stream(ng, id, len);
        c->begun = true;
    } else {
        c->owed += len;
        conn->owed += len;
    }
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    nghttp2_session_consume_connection(ng, len);
    struct gw_grpc_call *c = stream_call(ng, id);
    if (c && (c->early_done || !c->headers_done))
        nghttp2_session_consume_stream(ng, id, len);
    if (!c || c->early_done || !c->headers_done)
        return 0;   /* failed already: the rest of the body is dropped (flow control goes on) */
    int rc = gw_grpc_deframer_feed(&c->deframer, data, len, on_message, c);
    char msg[96];
    switch (rc) {
    case 0:
        break;
    case -EMSGSIZE:
        snprintf(msg, sizeof msg, "request message larger than %u bytes",
                 c->srv->cfg.max_message_bytes);
        fail(c, GW_GRPC_RESOURCE_EXHAUSTED, msg);
        break;
    case -ENOTSUP:
        fail(c, GW_GRPC_UNIMPLEMENTED, "compressed messages are not supported");
        break;
    case -E2BIG:
        fail(c, GW_GRPC_UNIMPLEMENTED, "more than one request message (client streaming)");
        break;
    case -ENOBUFS:
        fail(c, GW_GRPC_RESOURCE_EXHAUSTED, "too many request messages waiting for their answers");
        break;
    case -ENOMEM:
        fail(c, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        break;
    default:
        fail(c, GW_GRPC_INTERNAL, "malformed message framing");
        break;
    }
    if (rc < 0) { /* nothing more of this message is needed */
        gw_h2_call_account(c, true);
        nghttp2_session_consume_stream(ng, id, len + c->owed);
        c->conn->owed -= c->owed;
        c->owed = 0;
        return 0;
    }
    gw_h2_call_account(c, false);
    if (c->srv->held > c->srv->cfg.max_buffer_bytes) {
        fail(c, GW_GRPC_RESOURCE_EXHAUSTED, "too many request bytes buffered on this server; retry later");
        gw_h2_call_account(c, true);
        nghttp2_session_consume_stream(ng, id, len + c->owed);
        c->conn->owed -= c->owed;
        c->owed = 0;
        return 0;
    }
    give_back(c, ng, id, len);
    return 0;
}

static void request_end(struct gw_grpc_call *c)
{
    if (c->request_done)
        return;
    c->request_done = true;
    if (c->early_done)
        return;
    if (c->method->m.kind == GW_GRPC_BIDI_STREAM) {
        if (!gw_grpc_deframer_idle(&c->deframer)) {
            fail(c, GW_GRPC_INTERNAL, "request ended inside a message");
            return;
        }
        gw_h2_call_account(c, true);
        gw_call_bidi_close(c);
        if (c->conn)
            gw_h2_conn_repay(c->conn);
        return;
    }
    if (c->dispatched)
        return;
    if (!gw_grpc_deframer_idle(&c->deframer)) {
        fail(c, GW_GRPC_INTERNAL, "request ended inside a message");
        return;
    }
    if (c->nreq == 0) {
        fail(c, GW_GRPC_UNIMPLEMENTED, "no request message");
        return;
    }
    gw_h2_call_account(c, true);
    gw_call_dispatch(c);
    if (c->conn)
        gw_h2_conn_repay(c->conn);   /* one stream fewer receiving: let a waiting one go */
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct gw_h2_conn *conn = ud;
    (void)conn;
    struct gw_grpc_call *c = stream_call(ng, f->hd.stream_id);
    if (!c)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
        headers_done(c);
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && c->headers_done)
        request_end(c);
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    /* Our side is complete but the client is still sending (an early error, say, on a
     * message too large): tell it to stop, as gRPC servers do, with RST_STREAM(NO_ERROR). */
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(ng, f->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t err, void *ud)
{
    struct gw_grpc_call *c = stream_call(ng, id);
    if (c) {
        nghttp2_session_set_stream_user_data(ng, id, NULL);
        gw_server_call_detach(c);
    }
    return 0;
}

/* Status trailers; used alone (trailers-only response) or after data. */
#define DETAILS_MAX (2 * GW_GRPC_MSG_MAX + 256)

/* Up to three headers: grpc-status, grpc-message, and grpc-status-details-bin when the call
 * has a reason (an error only). */
static int status_nv(nghttp2_nv *nv, int code, const char *message, const char *reason, char codebuf[12],
                     char msgbuf[3 * GW_GRPC_MSG_MAX + 1], char detbuf[DETAILS_MAX])
{
    int n = 0;
    int cl = snprintf(codebuf, 12, "%d", code);
    nv[n++] = (nghttp2_nv)NV("grpc-status", codebuf, (size_t)cl);
    size_t ml = gw_grpc_pct_encode(message, strlen(message), msgbuf, 3 * GW_GRPC_MSG_MAX + 1);
    if (ml)
        nv[n++] = (nghttp2_nv)NV("grpc-message", msgbuf, ml);
    size_t dl = code && reason[0] ? gw_grpc_status_details(code, message, reason, detbuf, DETAILS_MAX) : 0;
    if (dl)
        nv[n++] = (nghttp2_nv)NV("grpc-status-details-bin", detbuf, dl);
    return n;
}

static void submit_trailers(struct gw_grpc_call *c, int code, const char *message, const char *reason)
{
    nghttp2_nv nv[3];
    char codebuf[12], msgbuf[3 * GW_GRPC_MSG_MAX + 1], detbuf[DETAILS_MAX];
    int n = status_nv(nv, code, message, reason, codebuf, msgbuf, detbuf);
    c->trailers_sent = true;
    int rc = nghttp2_submit_trailer(c->conn->ng, c->stream_id, nv, (size_t)n);
    if (rc < 0)
        nghttp2_submit_rst_stream(c->conn->ng, NGHTTP2_FLAG_NONE, c->stream_id,
                                  NGHTTP2_INTERNAL_ERROR);
}

static ssize_t data_read(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct gw_grpc_call *c = src->ptr;
    size_t n = 0;
    bool eof;
    int code = 0;
    char message[GW_GRPC_MSG_MAX], reason[GW_GRPC_REASON_MAX];
    pthread_mutex_lock(&c->srv->lock);
    while (n < length && c->out_head) {
        struct gw_out_buf *b = c->out_head;
        size_t k = b->len - b->off;
        if (k > length - n)
            k = length - n;
        memcpy(buf + n, b->data + b->off, k);
        b->off += k;
        n += k;
        if (b->off == b->len) {
            c->out_head = b->next;
            if (!c->out_head)
                c->out_tail = NULL;
            free(b);
        }
    }
    c->out_bytes -= n;
    c->srv->out_queued -= n;
    eof = !c->out_head && c->finished;
    if (eof) {
        code = c->code;
        memcpy(message, c->message, sizeof message);
        memcpy(reason, c->reason, sizeof reason);
    }
    pthread_mutex_unlock(&c->srv->lock);
    if (n == 0 && !eof) {
        c->data_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        submit_trailers(c, code, message, reason);
    }
    return (ssize_t)n;
}

void gw_h2_call_ready(struct gw_grpc_call *c)
{
    if (!c->conn || c->trailers_sent)
        return;
    nghttp2_session *ng = c->conn->ng;
    bool has_out, fin;
    int code = 0;
    char message[GW_GRPC_MSG_MAX], reason[GW_GRPC_REASON_MAX];
    pthread_mutex_lock(&c->srv->lock);
    has_out = c->out_head != NULL;
    fin = c->finished;
    if (fin) {
        code = c->code;
        memcpy(message, c->message, sizeof message);
        memcpy(reason, c->reason, sizeof reason);
    }
    pthread_mutex_unlock(&c->srv->lock);

    if (c->headers_sent) {
        if (c->data_deferred && (has_out || fin)) {
            c->data_deferred = false;
            nghttp2_session_resume_data(ng, c->stream_id);
        }
        return;
    }
    if (!has_out && !fin)
        return;
    c->headers_sent = true;
    int rc;
    if (!has_out) {
        /* Trailers-only response: one HEADERS frame with the status and END_STREAM. */
        nghttp2_nv nv[5] = { NV(":status", "200", 3), NV("content-type", "application/grpc", 16) };
        char codebuf[12], msgbuf[3 * GW_GRPC_MSG_MAX + 1], detbuf[DETAILS_MAX];
        int n = 2 + status_nv(nv + 2, code, message, reason, codebuf, msgbuf, detbuf);
        c->trailers_sent = true;
        rc = nghttp2_submit_response(ng, c->stream_id, nv, (size_t)n, NULL);
    } else {
        nghttp2_nv nv[2] = { NV(":status", "200", 3), NV("content-type", "application/grpc", 16) };
        nghttp2_data_provider prd = { .source.ptr = c, .read_callback = data_read };
        rc = nghttp2_submit_response(ng, c->stream_id, nv, 2, &prd);
    }
    if (rc < 0) {
        gw_warn("grpc: cannot submit response on stream %d: %s", c->stream_id,
                nghttp2_strerror(rc));
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_INTERNAL_ERROR);
    }
}

void gw_h2_call_expired(struct gw_grpc_call *c)
{
    if (!c->conn || c->trailers_sent)
        return;
    nghttp2_session *ng = c->conn->ng;
    struct gw_out_buf *drop = NULL;
    pthread_mutex_lock(&c->srv->lock);
    bool queued = c->out_head != NULL;
    bool shut = c->headers_sent && nghttp2_session_get_stream_remote_window_size(ng, c->stream_id) <= 0;
    if (queued || shut) {
        drop = c->out_head;
        c->out_head = c->out_tail = NULL;
        c->srv->out_queued -= c->out_bytes;
        c->out_bytes = 0;
    }
    pthread_mutex_unlock(&c->srv->lock);
    if (!queued && !shut) {
        gw_h2_call_ready(c);   /* the DEADLINE_EXCEEDED trailers go now */
        return;
    }
    while (drop) {
        struct gw_out_buf *next = drop->next;
        free(drop);
        drop = next;
    }
    c->trailers_sent = true;
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
}

int gw_h2_callbacks_new(nghttp2_session_callbacks **out)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -ENOMEM;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    *out = cb;
    return 0;
}

int gw_h2_conn_session_new(struct gw_h2_conn *conn)
{
    struct gw_grpc_server *srv = conn->srv;
    int rc = nghttp2_session_server_new2(&conn->ng, srv->ng_cbs, conn, srv->ng_opt);
    if (rc != 0)
        return -ENOMEM;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1u << 20 },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16u << 10 },
    };
    rc = nghttp2_submit_settings(conn->ng, NGHTTP2_FLAG_NONE, iv, GW_ARRAY_SIZE(iv));
    if (rc == 0)  /* a larger connection window so that several streams can send at once */
        rc = nghttp2_session_set_local_window_size(conn->ng, NGHTTP2_FLAG_NONE, 0, 8u << 20);
    if (rc != 0) {
        nghttp2_session_del(conn->ng);
        conn->ng = NULL;
        return -ENOMEM;
    }
    return 0;
}
