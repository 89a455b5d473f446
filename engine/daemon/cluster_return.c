/* Return home: after maintenance, `godwit host maintenance exit --return` brings back the VMs
 * an evacuation took away. Each VM carries its origin_host (set by the evacuation, kept by
 * the destination); the origin finds them in the registry and asks each holder
 * (GodwitPeer.ReturnVm, peer credential) to migrate them back. The holder trusts no address in
 * the request: it sends the VM only to the host the VM itself names as its origin, at the API
 * address that host publishes in the registry, and only while that host is live and active. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/api/grpc_client.h"
#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "godwit/v1/daemon.pb-c.h"

#define RETURN_RPC_MS 10000
#define RETURN_GIVE_UP_NS (120ull * 1000000000ull)


/* Asks the daemon at addr to send vm home (lock not held). 0 or -1. */
static int ask(struct gw_daemon *d, const char *addr, const char *vm)
{
    struct gw_grpc_client *c;
    if (gw_peer_connect(d, addr, &c)) { gw_warn("vm=%s: cannot reach %s to bring it home", vm, addr); return -1; }
    Godwit__V1__ReturnVmRequest req = GODWIT__V1__RETURN_VM_REQUEST__INIT;
    req.vm = (char *)vm;
    req.origin_host = d->cfg.hostname;
    struct gw_grpc_status st;
    ProtobufCMessage *resp = NULL;
    gw_grpc_client_unary(c, "/godwit.v1.GodwitPeer/ReturnVm", &req.base, &godwit__v1__return_vm_response__descriptor,
                         &resp, RETURN_RPC_MS, &st);
    gw_grpc_client_close(c);
    if (st.code == GW_GRPC_OK)
        gw_info("vm=%s: %s sends it home (job %s)", vm, addr, resp ? ((Godwit__V1__ReturnVmResponse *)resp)->job_id : "?");
    else
        gw_warn("vm=%s: %s will not send it home: %s", vm, addr, st.message);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st.code == GW_GRPC_OK ? 0 : -1;
}

struct ret_item {
    char vm[64];
    char addr[256];
    uint64_t asked_ns;                  /* 0 = not yet */
    bool done;
};

struct ret_run {
    struct gw_daemon *d;
    struct ret_item *items;
    size_t n;
};

/* Whether vm runs here now (lock held). */
static bool home(struct gw_daemon *d, const char *vm)
{
    struct gw_vm_rec *r = gw_vm_find(d, vm);
    return r && r->state == GODWIT__V1__VM__STATE__RUNNING && !r->incoming && !r->busy;
}

/* Paces the requests: at most max_incoming VMs on their way here at once (a holder's
 * migration would otherwise be refused by our own incoming cap). A VM asked for that has
 * not arrived after RETURN_GIVE_UP_NS no longer holds a slot (its holder's job failed). */
static void *return_main(void *arg)
{
    struct ret_run *rr = arg;
    struct gw_daemon *d = rr->d;
    struct gw_cluster *c = d->cluster;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        if (c->hb_stop || d->stopping) break;
        unsigned in_flight = 0;
        size_t left = 0;
        uint64_t now = gw_now_ns();
        for (size_t i = 0; i < rr->n; i++) {
            struct ret_item *it = &rr->items[i];
            if (it->done) continue;
            if (it->asked_ns && (home(d, it->vm) || now - it->asked_ns > RETURN_GIVE_UP_NS)) { it->done = true; continue; }
            left++;
            in_flight += it->asked_ns != 0;
        }
        if (!left) break;
        struct ret_item *next = NULL;
        for (size_t i = 0; i < rr->n && !next; i++)
            if (!rr->items[i].done && !rr->items[i].asked_ns) next = &rr->items[i];
        if (next && in_flight < d->cfg.max_incoming) {
            next->asked_ns = gw_now_ns();
            pthread_mutex_unlock(&d->lock);
            int r = ask(d, next->addr, next->vm);
            pthread_mutex_lock(&d->lock);
            if (r) next->done = true;
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    }
    c->return_running = false;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    free(rr->items);
    free(rr);
    return NULL;
}

static bool listed(const struct ret_item *items, size_t n, const char *vm)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(items[i].vm, vm)) return true;
    return false;
}

size_t gw_cluster_return_home(struct gw_daemon *d, char **names, size_t cap)
{
    /* First the journal of the last evacuation (exact even before the holders' next
     * heartbeat), then the registry for VMs of older evacuations. */
    struct ret_run *rr = calloc(1, sizeof *rr);
    struct gw_evac_moved *moved = calloc(GW_EVAC_MAX_VMS, sizeof *moved);
    if (rr) rr->items = calloc(cap + 1, sizeof *rr->items);
    if (!rr || !moved || !rr->items) goto fail;
    rr->d = d;
    pthread_mutex_lock(&d->lock);
    size_t nm = gw_evac_last_moved(d, moved, GW_EVAC_MAX_VMS);
    pthread_mutex_unlock(&d->lock);
    for (size_t i = 0; i < nm && rr->n < cap; i++) {
        snprintf(rr->items[rr->n].vm, sizeof rr->items[0].vm, "%s", moved[i].vm);
        snprintf(rr->items[rr->n].addr, sizeof rr->items[0].addr, "%s", moved[i].dest);
        rr->n++;
    }
    Godwit__V1__ClusterHost **hosts;
    size_t nh;
    if (!gw_cluster_hosts(d, &hosts, &nh)) {
        for (size_t i = 0; i < nh; i++) {
            const Godwit__V1__ClusterHost *h = hosts[i];
            if (h->down || !strcmp(h->name, d->cfg.hostname)) continue;
            for (size_t k = 0; k < h->n_vms && rr->n < cap; k++) {
                const Godwit__V1__ClusterVm *v = h->vms[k];
                if (strcmp(v->origin_host, d->cfg.hostname) || v->state != GODWIT__V1__VM__STATE__RUNNING ||
                    listed(rr->items, rr->n, v->name))
                    continue;
                snprintf(rr->items[rr->n].vm, sizeof rr->items[0].vm, "%s", v->name);
                snprintf(rr->items[rr->n].addr, sizeof rr->items[0].addr, "%s", h->api_address);
                rr->n++;
            }
        }
        gw_cluster_hosts_free(hosts, nh);
    }
    free(moved);
    moved = NULL;
    pthread_mutex_lock(&d->lock);
    struct gw_cluster *c = d->cluster;
    if (c->return_running || !rr->n) {
        if (c->return_running) gw_warn("return home: already under way");
        pthread_mutex_unlock(&d->lock);
        goto fail;
    }
    if (c->return_joinable) {
        /* The previous run is over (return_running is false, set as its last act under the
         * lock we hold now): reap it before starting the next. */
        pthread_join(c->return_thread, NULL);
        c->return_joinable = false;
    }
    size_t n = 0;
    while (n < rr->n && (names[n] = strdup(rr->items[n].vm))) n++;   /* out of memory: a shorter list */
    c->return_running = true;
    if (pthread_create(&c->return_thread, NULL, return_main, rr)) {
        c->return_running = false;
        pthread_mutex_unlock(&d->lock);
        for (size_t i = 0; i < n; i++) free(names[i]);
        goto fail;
    }
    c->return_joinable = true;
    pthread_mutex_unlock(&d->lock);
    return n;
fail:
    free(moved);
    if (rr) free(rr->items);
    free(rr);
    return 0;
}

static int return_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__ReturnVmRequest *req = (const void *)msg;
    if (!gw_vm_name_ok(req->vm) || !gw_cluster_name_ok(req->origin_host))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "bad VM or host name");
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, req->vm);
    bool mine = rec && !strcmp(rec->origin_host, req->origin_host);
    pthread_mutex_unlock(&d->lock);
    if (!rec) return gw_grpc_call_error(call, GW_GRPC_NOT_FOUND, "no VM named %s on %s", req->vm, d->cfg.hostname);
    if (!mine) return gw_grpc_call_error(call, GW_GRPC_PERMISSION_DENIED, "VM %s does not come from %s", req->vm,
                                         req->origin_host);
    /* The origin's address from the registry, never from the request. */
    Godwit__V1__ClusterHost **hosts;
    size_t nh;
    if (gw_cluster_hosts(d, &hosts, &nh)) return gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot read the registry");
    char dest[256] = "";
    for (size_t i = 0; i < nh; i++)
        if (!strcmp(hosts[i]->name, req->origin_host) && !hosts[i]->down &&
            hosts[i]->state == GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE)
            snprintf(dest, sizeof dest, "%s", hosts[i]->api_address);
    gw_cluster_hosts_free(hosts, nh);
    if (!dest[0]) return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "%s is not a live, active host of the "
                                            "registry", req->origin_host);
    pthread_mutex_lock(&d->lock);
    Godwit__V1__MigrationPolicy pol = GODWIT__V1__MIGRATION_POLICY__INIT;
    struct gw_job *j;
    const char *reason;
    char why[200];
    int code = GW_GRPC_OK;
    if (gw_cluster_migrate(d, req->vm, dest, &pol, false, &j, &reason, why, sizeof why)) {
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "%s: %s", reason, why);
    } else {
        Godwit__V1__ReturnVmResponse resp = GODWIT__V1__RETURN_VM_RESPONSE__INIT;
        resp.job_id = j->id;
        gw_grpc_call_send(call, &resp.base);
    }
    pthread_mutex_unlock(&d->lock);
    return code;
}

int gw_service_register_cluster_peer(struct gw_daemon *d)
{
    return gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
        .path = "/godwit.v1.GodwitPeer/ReturnVm", .kind = GW_GRPC_UNARY,
        .request = &godwit__v1__return_vm_request__descriptor, .handler = return_vm, .arg = d, .flags = GW_GRPC_PEER});
}
