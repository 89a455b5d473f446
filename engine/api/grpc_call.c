/* The call object that handlers hold, its thread-safe send/finish API, and the fixed pool of
 * worker threads that run handlers. A call is reference-counted: the stream holds one
 * reference until nghttp2 closes it, the worker queue one while queued or running, the ready
 * list one while the loop has output to pick up, and a handler one per gw_grpc_call_ref. */
#include "engine/api/grpc_server_int.h"

#include "engine/common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct gw_grpc_call *gw_call_new(struct gw_grpc_server *srv, struct gw_h2_conn *conn,
                                 int32_t stream_id)
{
    struct gw_grpc_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    c->srv = srv;
    c->conn = conn;
    c->stream_id = stream_id;
    c->heap_idx = -1;
    gw_grpc_deframer_init(&c->deframer, srv->cfg.max_message_bytes);
    return c;
}

static void call_free(struct gw_grpc_call *c)
{
    if (c->out_bytes) {   /* output its client never took: out of the server's total */
        pthread_mutex_lock(&c->srv->lock);
        c->srv->out_queued -= c->out_bytes;
        pthread_mutex_unlock(&c->srv->lock);
    }
    struct gw_out_buf *b = c->out_head;
    while (b) {
        struct gw_out_buf *n = b->next;
        free(b);
        b = n;
    }
    gw_grpc_deframer_free(&c->deframer);
    gw_call_bidi_free(c);
    free(c->req);
    free(c);
}

void gw_grpc_call_ref(struct gw_grpc_call *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void gw_grpc_call_unref(struct gw_grpc_call *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        call_free(c);
}

const uint8_t *gw_grpc_call_request(const struct gw_grpc_call *c, size_t *len)
{
    *len = c->req_len;
    return c->req;
}

const char *gw_grpc_call_path(const struct gw_grpc_call *c) { return c->path; }
uint64_t gw_grpc_call_deadline(const struct gw_grpc_call *c) { return c->deadline_ns; }

bool gw_grpc_call_cancelled(const struct gw_grpc_call *c)
{
    struct gw_grpc_server *srv = c->srv;
    pthread_mutex_lock(&srv->lock);
    bool r = c->cancelled;
    pthread_mutex_unlock(&srv->lock);
    return r;
}

bool gw_call_mark_ready_locked(struct gw_grpc_call *c)
{
    if (c->on_ready)
        return false;
    c->on_ready = true;
    gw_grpc_call_ref(c);  /* the ready list's reference, dropped by the loop */
    c->ready_next = NULL;
    bool was_empty = c->srv->ready_head == NULL;
    if (c->srv->ready_tail)
        c->srv->ready_tail->ready_next = c;
    else
        c->srv->ready_head = c;
    c->srv->ready_tail = c;
    return was_empty;
}

void gw_call_wake(struct gw_grpc_server *srv)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake anyway. */
    ssize_t n = write(srv->wake_fd, &one, sizeof one);
    (void)n;
}

/* How much queued output, over all calls, this call's next message may join. A stream gets
 * three quarters of the server's budget, a unary reply all of it: clients that stop reading
 * their streams (watchers, a stuck orchestrator) cannot make every other call fail, the CLI's
 * and health checks' among them. */
static uint64_t send_cap(const struct gw_grpc_call *c)
{
    uint64_t total = c->srv->cfg.max_send_total_bytes;
    bool stream = c->method && c->method->m.kind != GW_GRPC_UNARY;
    return stream ? total - total / 4 : total;
}

int gw_grpc_call_send_bytes(struct gw_grpc_call *c, const void *buf, size_t len)
{
    if (len > UINT32_MAX - GW_GRPC_PREFIX_LEN)
        return -EINVAL;
    struct gw_out_buf *b = malloc(sizeof *b + GW_GRPC_PREFIX_LEN + len);
    if (!b)
        return -ENOMEM;
    b->next = NULL;
    b->off = 0;
    b->len = GW_GRPC_PREFIX_LEN + len;
    gw_grpc_prefix_write(b->data, (uint32_t)len);
    if (len)
        memcpy(b->data + GW_GRPC_PREFIX_LEN, buf, len);

    struct gw_grpc_server *srv = c->srv;
    int rc = 0;
    bool wake = false;
    pthread_mutex_lock(&srv->lock);
    if (c->cancelled)
        rc = -ECANCELED;
    else if (c->finished)
        rc = -EALREADY;
    else if (c->method && c->method->m.kind == GW_GRPC_UNARY && c->sends > 0)
        rc = -EINVAL;
    else if (c->out_bytes + b->len > srv->cfg.max_send_queue_bytes && c->out_bytes > 0)
        rc = -ENOBUFS;
    else if (srv->out_queued + b->len > send_cap(c) && srv->out_queued > 0)
        rc = -ENOBUFS;   /* one message larger than the whole budget still goes when alone */
    if (rc == 0) {
        if (c->out_tail)
            c->out_tail->next = b;
        else
            c->out_head = b;
        c->out_tail = b;
        c->out_bytes += b->len;
        srv->out_queued += b->len;
        c->sends++;
        wake = gw_call_mark_ready_locked(c);
        b = NULL;
    }
    pthread_mutex_unlock(&srv->lock);
    free(b);
    if (wake)
        gw_call_wake(srv);
    return rc;
}

int gw_grpc_call_send(struct gw_grpc_call *c, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t stackbuf[1024];
    uint8_t *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf)
        return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    int rc = gw_grpc_call_send_bytes(c, buf, len);
    if (buf != stackbuf)
        free(buf);
    return rc;
}

/* Sets the final status; srv->lock held. Returns true when the loop must be woken. */
static bool finish_locked(struct gw_grpc_call *c, int code, const char *msg, bool *wake)
{
    if (c->finished || c->cancelled)
        return false;
    c->finished = true;
    c->code = code;
    if (msg)
        snprintf(c->message, sizeof c->message, "%s", msg);
    *wake = gw_call_mark_ready_locked(c);
    return true;
}

static int finish_v(struct gw_grpc_call *c, int code, const char *fmt, va_list ap)
{
    char msg[GW_GRPC_MSG_MAX];
    msg[0] = '\0';
    if (fmt)
        vsnprintf(msg, sizeof msg, fmt, ap);
    struct gw_grpc_server *srv = c->srv;
    bool wake = false;
    pthread_mutex_lock(&srv->lock);
    if (!fmt && c->message[0])   /* keep what gw_grpc_call_error recorded */
        snprintf(msg, sizeof msg, "%s", c->message);
    bool done = finish_locked(c, code, msg, &wake);
    pthread_mutex_unlock(&srv->lock);
    if (wake)
        gw_call_wake(srv);
    return done ? 0 : -EALREADY;
}

int gw_grpc_call_finish(struct gw_grpc_call *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = finish_v(c, code, fmt, ap);
    va_end(ap);
    return rc;
}

int gw_grpc_call_error_reason(struct gw_grpc_call *c, int code, const char *reason, const char *fmt, ...)
{
    char msg[GW_GRPC_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->srv->lock);
    if (!c->finished) {
        snprintf(c->message, sizeof c->message, "%s", msg);
        snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "");
    }
    pthread_mutex_unlock(&c->srv->lock);
    return code;
}

int gw_grpc_call_error(struct gw_grpc_call *c, int code, const char *fmt, ...)
{
    char msg[GW_GRPC_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->srv->lock);
    if (!c->finished)
        snprintf(c->message, sizeof c->message, "%s", msg);
    pthread_mutex_unlock(&c->srv->lock);
    return code;
}

void gw_call_finish_loop(struct gw_grpc_call *c, int code, const char *msg)
{
    bool wake = false;
    pthread_mutex_lock(&c->srv->lock);
    finish_locked(c, code, msg, &wake);
    pthread_mutex_unlock(&c->srv->lock);
    /* Already on the loop thread: the loop drains the ready list before it sleeps. */
}

void gw_grpc_call_on_cancel(struct gw_grpc_call *c, gw_grpc_cancel_fn fn, void *arg)
{
    bool now;
    pthread_mutex_lock(&c->srv->lock);
    now = c->cancelled && fn;
    c->on_cancel = now ? NULL : fn;
    c->on_cancel_arg = arg;
    pthread_mutex_unlock(&c->srv->lock);
    if (now)
        fn(c, arg);
}

void gw_call_cancel(struct gw_grpc_call *c)
{
    gw_grpc_cancel_fn fn = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&c->srv->lock);
    if (!c->finished && !c->cancelled) {
        c->cancelled = true;
        fn = c->on_cancel;
        arg = c->on_cancel_arg;
        c->on_cancel = NULL;
    } else if (c->finished) {
        /* Finished but the client went away before reading it all: later sends fail too. */
        c->cancelled = true;
    }
    pthread_mutex_unlock(&c->srv->lock);
    if (fn)
        fn(c, arg);
}

/* ---- worker pool ------------------------------------------------------------------------ */

static void run_call(struct gw_grpc_call *c);

void gw_call_dispatch(struct gw_grpc_call *c)
{
    struct gw_grpc_server *srv = c->srv;
    c->dispatched = true;
    if (c->method->m.flags & GW_GRPC_INLINE) {
        /* On the loop thread, outside any lock: the handler's output is queued and the loop
         * is woken through the eventfd as for a worker, so the send path is the same. */
        gw_grpc_call_ref(c);
        run_call(c);
        gw_grpc_call_unref(c);
        return;
    }
    gw_grpc_call_ref(c);  /* the queue's reference */
    c->work_next = NULL;
    pthread_mutex_lock(&srv->work_lock);
    if (srv->work_tail)
        srv->work_tail->work_next = c;
    else
        srv->work_head = c;
    srv->work_tail = c;
    pthread_cond_signal(&srv->work_cond);
    pthread_mutex_unlock(&srv->work_lock);
}

/* Runs one call's handler and finishes the call with its result. */
static void run_call(struct gw_grpc_call *c)
{
    const struct gw_grpc_method *m = &c->method->m;
    ProtobufCMessage *msg = NULL;
    int rc;
    if (gw_grpc_call_cancelled(c))
        return;  /* the deadline passed or the client left while it waited in the queue */
    if (m->kind == GW_GRPC_BIDI_STREAM) {
        gw_call_bidi_run(c);
        return;
    }
    if (m->request) {
        msg = protobuf_c_message_unpack(m->request, NULL, c->req_len, c->req);
        if (!msg) {
            gw_grpc_call_finish(c, GW_GRPC_INVALID_ARGUMENT, "cannot parse %s request",
                                m->request->name);
            return;
        }
    }
    rc = m->handler(c, msg, m->arg);
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    if (rc == GW_GRPC_PENDING)
        return;
    if (rc < 0 || rc > GW_GRPC_CODE_MAX) {
        gw_grpc_call_finish(c, GW_GRPC_UNKNOWN, "handler returned %d", rc);
        return;
    }
    if (rc == GW_GRPC_OK && m->kind == GW_GRPC_UNARY) {
        pthread_mutex_lock(&c->srv->lock);
        uint32_t sends = c->sends;
        pthread_mutex_unlock(&c->srv->lock);
        if (sends != 1) {
            gw_grpc_call_finish(c, GW_GRPC_INTERNAL, "handler sent no response");
            return;
        }
    }
    gw_grpc_call_finish(c, rc, NULL);
}

static void *worker_main(void *arg)
{
    struct gw_grpc_server *srv = arg;
    for (;;) {
        pthread_mutex_lock(&srv->work_lock);
        while (!srv->work_head && !srv->work_stop)
            pthread_cond_wait(&srv->work_cond, &srv->work_lock);
        struct gw_grpc_call *c = srv->work_head;
        if (!c) {   /* stopping and nothing left */
            pthread_mutex_unlock(&srv->work_lock);
            return NULL;
        }
        srv->work_head = c->work_next;
        if (!srv->work_head)
            srv->work_tail = NULL;
        pthread_mutex_unlock(&srv->work_lock);
        run_call(c);
        gw_grpc_call_unref(c);
    }
}

int gw_workers_start(struct gw_grpc_server *srv)
{
    srv->workers = calloc(srv->cfg.workers, sizeof *srv->workers);
    if (!srv->workers)
        return -ENOMEM;
    for (uint32_t i = 0; i < srv->cfg.workers; i++) {
        int rc = pthread_create(&srv->workers[i], NULL, worker_main, srv);
        if (rc != 0) {
            gw_workers_stop(srv);
            return -rc;
        }
        srv->nworkers++;
    }
    return 0;
}

void gw_workers_stop(struct gw_grpc_server *srv)
{
    pthread_mutex_lock(&srv->work_lock);
    srv->work_stop = true;
    pthread_cond_broadcast(&srv->work_cond);
    pthread_mutex_unlock(&srv->work_lock);
    /* Queued calls are all cancelled by now (the loop closed every connection), so the
     * workers drain the queue quickly without running handlers. */
    for (uint32_t i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i], NULL);
    free(srv->workers);
    srv->workers = NULL;
    srv->nworkers = 0;
}

void gw_call_expire(struct gw_grpc_call *c)
{
    gw_grpc_cancel_fn fn = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&c->srv->lock);
    if (!c->finished && !c->cancelled) {
        bool wake_unused = false;
        finish_locked(c, GW_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded", &wake_unused);
        c->cancelled = true;  /* after finish_locked, which refuses cancelled calls */
        fn = c->on_cancel;
        arg = c->on_cancel_arg;
        c->on_cancel = NULL;
    }
    pthread_mutex_unlock(&c->srv->lock);
    if (fn)
        fn(c, arg);
}
