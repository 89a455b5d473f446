/* grpc.health.v1.Health on our server. Watch calls stay open (GW_GRPC_PENDING): the service
 * keeps a reference on each and pushes a message on every change of the watched status. A
 * watcher leaves the list from its cancel callback when the client goes away. */
#include "engine/api/grpc_health.h"

#include "grpc/health/v1/health.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE_MAX 256

struct health_entry {
    char name[SERVICE_MAX];
    enum gw_health_status status;
};

struct health_watcher {
    struct health_watcher *next;
    struct gw_grpc_call *call;   /* one reference held */
    char name[SERVICE_MAX];
};

struct gw_grpc_health {
    pthread_mutex_t lock;
    struct health_entry *entries;
    size_t n, cap;
    struct health_watcher *watchers;
};

/* h->lock held. */
static struct health_entry *find(struct gw_grpc_health *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->entries[i].name, name) == 0)
            return &h->entries[i];
    return NULL;
}

static int send_status(struct gw_grpc_call *c, enum gw_health_status st)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    return gw_grpc_call_send(c, &r.base);
}

static int check(struct gw_grpc_call *c, const ProtobufCMessage *msg, void *arg)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    struct gw_grpc_health *h = arg;
    pthread_mutex_lock(&h->lock);
    struct health_entry *e = find(h, req->service);
    enum gw_health_status st = e ? e->status : GW_HEALTH_SERVICE_UNKNOWN;
    pthread_mutex_unlock(&h->lock);
    if (!e)
        return gw_grpc_call_error(c, GW_GRPC_NOT_FOUND, "unknown service");
    return send_status(c, st) == 0 ? GW_GRPC_OK : GW_GRPC_CANCELLED;
}

static void watcher_gone(struct gw_grpc_call *c, void *arg)
{
    struct gw_grpc_health *h = arg;
    struct health_watcher *found = NULL;
    pthread_mutex_lock(&h->lock);
    for (struct health_watcher **p = &h->watchers; *p; p = &(*p)->next) {
        if ((*p)->call == c) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&h->lock);
    if (found) {
        gw_grpc_call_unref(found->call);
        free(found);
    }
}

static int watch(struct gw_grpc_call *c, const ProtobufCMessage *msg, void *arg)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    struct gw_grpc_health *h = arg;
    if (strlen(req->service) >= SERVICE_MAX)
        return gw_grpc_call_error(c, GW_GRPC_INVALID_ARGUMENT, "service name too long");
    struct health_watcher *w = calloc(1, sizeof *w);
    if (!w)
        return GW_GRPC_RESOURCE_EXHAUSTED;
    strcpy(w->name, req->service);
    w->call = c;
    gw_grpc_call_ref(c);
    /* Sending the first status under the lock orders it before any change. */
    pthread_mutex_lock(&h->lock);
    struct health_entry *e = find(h, req->service);
    send_status(c, e ? e->status : GW_HEALTH_SERVICE_UNKNOWN);
    w->next = h->watchers;
    h->watchers = w;
    pthread_mutex_unlock(&h->lock);
    gw_grpc_call_on_cancel(c, watcher_gone, h);
    return GW_GRPC_PENDING;
}

int gw_grpc_health_set(struct gw_grpc_health *h, const char *service, enum gw_health_status st)
{
    if (strlen(service) >= SERVICE_MAX)
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&h->lock);
    struct health_entry *e = find(h, service);
    if (!e && h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 8;
        struct health_entry *n = realloc(h->entries, cap * sizeof *n);
        if (!n) {
            rc = -ENOMEM;
            goto out;
        }
        h->entries = n;
        h->cap = cap;
    }
    if (!e) {
        e = &h->entries[h->n++];
        strcpy(e->name, service);
        e->status = GW_HEALTH_UNKNOWN;
    }
    if (e->status != st) {
        e->status = st;
        for (struct health_watcher *w = h->watchers; w; w = w->next)
            if (strcmp(w->name, service) == 0)
                send_status(w->call, st);  /* a gone watcher fails here and leaves on cancel */
    }
out:
    pthread_mutex_unlock(&h->lock);
    return rc;
}

int gw_grpc_health_new(struct gw_grpc_server *s, bool require_auth, struct gw_grpc_health **out)
{
    struct gw_grpc_health *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    pthread_mutex_init(&h->lock, NULL);
    int rc = gw_grpc_health_set(h, "", GW_HEALTH_SERVING);
    unsigned flags = require_auth ? 0 : GW_GRPC_NO_AUTH;
    struct gw_grpc_method m = {
        .path = "/grpc.health.v1.Health/Check", .kind = GW_GRPC_UNARY,
        .request = &grpc__health__v1__health_check_request__descriptor,
        .handler = check, .arg = h, .flags = flags,
    };
    if (rc == 0)
        rc = gw_grpc_server_register(s, &m);
    m.path = "/grpc.health.v1.Health/Watch";
    m.kind = GW_GRPC_SERVER_STREAM;
    m.handler = watch;
    if (rc == 0)
        rc = gw_grpc_server_register(s, &m);
    if (rc < 0) {
        gw_grpc_health_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

void gw_grpc_health_free(struct gw_grpc_health *h)
{
    if (!h)
        return;
    struct health_watcher *w = h->watchers;
    h->watchers = NULL;
    while (w) {
        struct health_watcher *next = w->next;
        gw_grpc_call_on_cancel(w->call, NULL, NULL);
        gw_grpc_call_finish(w->call, GW_GRPC_UNAVAILABLE, "server shutting down");
        gw_grpc_call_unref(w->call);
        free(w);
        w = next;
    }
    free(h->entries);
    pthread_mutex_destroy(&h->lock);
    free(h);
}
