/* Bidirectional-streaming calls (GW_GRPC_BIDI_STREAM): the handler is run once per request
 * message, in order, while the client keeps its stream open, as a client that asks several
 * questions on one stream (grpcurl's reflection client) needs: it waits for each answer
 * before it asks the next, so a server that waited for the half-close would never answer.
 *
 * The loop thread queues each message as it is deframed (at most GW_GRPC_BIDI_MAX_QUEUED
 * waiting) and hands the call to a worker when none is working on it; that worker handles
 * every queued message and lets the call go when the queue is empty, so one call never runs
 * on two workers at once and its answers leave in the order of its questions. The client's
 * half-close finishes the call with OK once every message was handled; a handler returning
 * anything but OK finishes it with that code, and what the client sends after is dropped. */
#include "engine/api/grpc_server_int.h"

#include <errno.h>
#include <stdlib.h>

static void drop_all_locked(struct gw_grpc_call *c)
{
    struct gw_bidi_msg *m = c->bidi_head;
    while (m) {
        struct gw_bidi_msg *n = m->next;
        free(m->buf);
        free(m);
        m = n;
    }
    c->bidi_head = c->bidi_tail = NULL;
    c->bidi_queued = 0;
    c->bidi_bytes = 0;
}

int gw_call_bidi_push(struct gw_grpc_call *c, uint8_t *buf, size_t len)
{
    struct gw_grpc_server *srv = c->srv;
    struct gw_bidi_msg *m = malloc(sizeof *m);
    if (!m) { free(buf); return -ENOMEM; }
    *m = (struct gw_bidi_msg){.buf = buf, .len = len};
    pthread_mutex_lock(&srv->lock);
    if (c->finished || c->cancelled) {   /* answered already: nothing more is read */
        pthread_mutex_unlock(&srv->lock);
        free(buf);
        free(m);
        return 0;
    }
    if (c->bidi_queued >= GW_GRPC_BIDI_MAX_QUEUED) {
        pthread_mutex_unlock(&srv->lock);
        free(buf);
        free(m);
        return -ENOBUFS;
    }
    if (c->bidi_tail) c->bidi_tail->next = m;
    else c->bidi_head = m;
    c->bidi_tail = m;
    c->bidi_queued++;
    c->bidi_bytes += len;
    c->bidi_held = c->bidi_bytes;
    bool start = !c->bidi_active;
    c->bidi_active = true;
    pthread_mutex_unlock(&srv->lock);
    if (start) gw_call_dispatch(c);
    return 0;
}

void gw_call_bidi_close(struct gw_grpc_call *c)
{
    struct gw_grpc_server *srv = c->srv;
    pthread_mutex_lock(&srv->lock);
    c->bidi_closed = true;
    bool idle = !c->bidi_active;
    pthread_mutex_unlock(&srv->lock);
    if (idle) gw_grpc_call_finish(c, GW_GRPC_OK, NULL);
}

void gw_call_bidi_run(struct gw_grpc_call *c)
{
    struct gw_grpc_server *srv = c->srv;
    const struct gw_grpc_method *meth = &c->method->m;
    for (;;) {
        pthread_mutex_lock(&srv->lock);
        struct gw_bidi_msg *m = c->bidi_head;
        if (!m || c->finished || c->cancelled) {
            drop_all_locked(c);
            c->bidi_active = false;
            bool done = c->bidi_closed;
            pthread_mutex_unlock(&srv->lock);
            if (done) gw_grpc_call_finish(c, GW_GRPC_OK, NULL);
            return;
        }
        c->bidi_head = m->next;
        if (!c->bidi_head) c->bidi_tail = NULL;
        c->bidi_queued--;
        c->bidi_bytes -= m->len;
        pthread_mutex_unlock(&srv->lock);
        /* The worker that holds the call is the only reader of req while it runs. */
        c->req = m->buf;
        c->req_len = m->len;
        free(m);
        ProtobufCMessage *msg = NULL;
        int rc = GW_GRPC_OK;
        if (meth->request && !(msg = protobuf_c_message_unpack(meth->request, NULL, c->req_len, c->req)))
            rc = gw_grpc_call_error(c, GW_GRPC_INVALID_ARGUMENT, "cannot parse %s request", meth->request->name);
        else
            rc = meth->handler(c, msg, meth->arg);
        if (msg) protobuf_c_message_free_unpacked(msg, NULL);
        free(c->req);
        c->req = NULL;
        c->req_len = 0;
        if (rc != GW_GRPC_OK) {
            if (rc < 0 || rc > GW_GRPC_CODE_MAX) gw_grpc_call_finish(c, GW_GRPC_UNKNOWN, "handler returned %d", rc);
            else gw_grpc_call_finish(c, rc, NULL);
        }
    }
}

void gw_call_bidi_free(struct gw_grpc_call *c)
{
    drop_all_locked(c);   /* the last reference: nobody else holds the call */
}
