/* gRPC handlers of godwit.v1.Godwit for the cluster: ListHosts (the registry with each host's
 * state, free capacity, VMs and heartbeat age; paged by name), EvacuateHost (a dry run's plan
 * and blockers, or the parent job) and ExitMaintenance. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"

#define PAGE_MAX 1000

static int list_hosts(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__ListHostsRequest *req = (const void *)msg;
    if (!d->cluster->ops)
        return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "no cluster registry configured on %s "
                                  "(cluster = dir:PATH in godwitd's config)", d->cfg.hostname);
    if (strlen(req->page_token) > GW_CLUSTER_NAME_MAX)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "bad page_token");
    Godwit__V1__ClusterHost **hosts;
    size_t n;
    int r = gw_cluster_hosts(d, &hosts, &n);
    if (r) {
        char why[300];
        gw_cluster_describe(d, r, why, sizeof why);
        return gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot read the cluster registry: %s", why);
    }
    /* Pages by name: the token is the last name of the previous page (records come sorted),
     * so a host joining between two pages neither repeats nor shifts the others. */
    size_t first = 0;
    if (req->page_token[0])
        while (first < n && strcmp(hosts[first]->name, req->page_token) <= 0) first++;
    size_t size = req->page_size && req->page_size < PAGE_MAX ? req->page_size : PAGE_MAX;
    size_t count = n - first < size ? n - first : size;
    Godwit__V1__ListHostsResponse resp = GODWIT__V1__LIST_HOSTS_RESPONSE__INIT;
    resp.n_hosts = count;
    resp.hosts = hosts + first;
    resp.next_page_token = first + count < n ? hosts[first + count - 1]->name : "";
    gw_grpc_call_send(call, &resp.base);
    gw_cluster_hosts_free(hosts, n);
    return GW_GRPC_OK;
}

/* The VMs this host would move (lock held): running ones, and those that cannot move now
 * (a job of theirs is open) with the reason in busy. names point into the records. */
static size_t collect_vms(struct gw_daemon *d, struct gw_plan_vm *vms, size_t cap)
{
    size_t n = 0;
    uint64_t now = gw_unix_ms();
    for (struct gw_vm_rec *r = d->vms; r && n < cap; r = r->next) {
        if (r->state != GODWIT__V1__VM__STATE__RUNNING && r->state != GODWIT__V1__VM__STATE__MIGRATING) continue;
        if (r->incoming) continue;
        uint64_t dirty = 0;
        if (r->started_ms && now > r->started_ms + 1000)
            dirty = r->pages_written * 4096 * 1000 / (now - r->started_ms);
        vms[n++] = (struct gw_plan_vm){.name = r->name, .memory_bytes = r->memory_bytes, .vcpus = r->vcpus,
                                       .priority = r->priority, .anti_affinity = r->anti_affinity,
                                       .disk = r->disk, .dirty_rate = dirty};
        gw_cluster_vm_busy(d, r, vms[n - 1].busy, sizeof vms[n - 1].busy);
    }
    return n;
}

static void step_msg(const struct gw_plan_in *in, const struct gw_plan_step *s, Godwit__V1__EvacuationStep *m)
{
    godwit__v1__evacuation_step__init(m);
    const struct gw_plan_vm *v = &in->vms[s->vm];
    m->vm = (char *)v->name;
    m->memory_bytes = v->memory_bytes;
    m->priority = v->priority;
    m->estimated_bytes = s->est_bytes;
    m->estimated_ms = s->est_ms;
    m->dirty_rate_bytes_per_s = v->dirty_rate;
    m->state = GODWIT__V1__EVACUATION_STEP__STATE__PENDING;
    m->phase = "planned";
    if (s->host >= 0) {
        m->destination_host = in->hosts[s->host]->name;
        m->destination = in->hosts[s->host]->api_address;
    } else {
        m->reason = (char *)s->blocker;
        m->error = (char *)s->message;
    }
}

static int evacuate_host(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__EvacuateHostRequest *req = (const void *)msg;
    if (req->host[0] && strcmp(req->host, d->cfg.hostname))
        return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "this is %s: evacuate %s through its own API",
                                  d->cfg.hostname, req->host);
    if (!d->cluster->ops)
        return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "no cluster registry configured on %s: "
                                  "there is nowhere to evacuate to", d->cfg.hostname);
    const Godwit__V1__EvacuationPolicy *p = req->policy;
    const Godwit__V1__MigrationPolicy *mp = p ? p->migration : NULL;
    if (strlen(req->request_id) > 63 || (p && (p->max_outbound > 64 || p->max_inbound > 64 || p->stall_timeout_s > 86400)) ||
        (mp && ((unsigned)mp->mode > GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID ||
                (unsigned)mp->compression > GODWIT__V1__MIGRATION_POLICY__COMPRESSION__LZ4 || mp->streams > 64)))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "bad evacuation policy or request_id");

    Godwit__V1__EvacuateHostResponse resp = GODWIT__V1__EVACUATE_HOST_RESPONSE__INIT;
    Godwit__V1__Job pj;
    if (!req->dry_run) {
        /* A retried request finds the job its first attempt made. */
        pthread_mutex_lock(&d->lock);
        struct gw_job *j = gw_evac_by_request(d, req->request_id);
        if (!j)
            for (struct gw_job *o = d->jobs; o; o = o->next)
                if (o->evac && !gw_job_final(o->state)) j = o;
        if (j && !gw_evac_by_request(d, req->request_id)) {
            pthread_mutex_unlock(&d->lock);
            return gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "EVACUATION_RUNNING",
                                             "%s is already being evacuated by job %s", d->cfg.hostname, j->id);
        }
        if (j) {
            gw_job_to_proto(j, &pj);
            resp.job = &pj;
            gw_grpc_call_send(call, &resp.base);
            pthread_mutex_unlock(&d->lock);
            return GW_GRPC_OK;
        }
        pthread_mutex_unlock(&d->lock);
    }

    Godwit__V1__ClusterHost **hosts;
    size_t nh;
    int r = gw_cluster_hosts(d, &hosts, &nh);
    if (r) {
        char why[300];
        gw_cluster_describe(d, r, why, sizeof why);
        return gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot read the cluster registry: %s", why);
    }
    struct gw_plan_vm *vms = calloc(GW_EVAC_MAX_VMS, sizeof *vms);
    struct gw_plan_step *steps = calloc(GW_EVAC_MAX_VMS, sizeof *steps);
    Godwit__V1__EvacuationStep *sm = calloc(GW_EVAC_MAX_VMS, sizeof *sm);
    Godwit__V1__EvacuationStep **sp = calloc(GW_EVAC_MAX_VMS, sizeof *sp);
    Godwit__V1__EvacuationBlocker *bm = calloc(GW_EVAC_MAX_VMS, sizeof *bm);
    Godwit__V1__EvacuationBlocker **bp = calloc(GW_EVAC_MAX_VMS, sizeof *bp);
    int code = GW_GRPC_OK;
    pthread_mutex_lock(&d->lock);
    if (!vms || !steps || !sm || !sp || !bm || !bp) {
        code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    Godwit__V1__EvacuationPolicy pol;
    Godwit__V1__MigrationPolicy mig;
    gw_evac_policy(d, p, &pol, &mig);
    struct gw_cluster_fit fit;
    pthread_mutex_unlock(&d->lock);
    gw_cluster_model(d, hosts, nh, &fit);   /* takes the lock itself */
    pthread_mutex_lock(&d->lock);
    /* A bandwidth limit below the measured link is the link. */
    uint64_t lim = mig.bandwidth_limit_bytes_per_s;
    if (lim && lim < fit.bw) fit.bw = lim;
    if (lim && (!fit.link_bw || lim < fit.link_bw)) fit.link_bw = lim;
    struct gw_plan_in in = {.vms = vms, .n_vms = collect_vms(d, vms, GW_EVAC_MAX_VMS), .hosts = hosts,
                            .n_hosts = nh, .self = d->cfg.hostname, .bandwidth = fit.bw, .overhead_ms = fit.overhead_ms,
                            .link_bw = fit.link_bw, .nonconverging_pct = fit.nonconverging_pct};
    unsigned blocked = gw_cluster_plan(&in, steps);
    size_t nb = 0;
    for (size_t i = 0; i < in.n_vms; i++) {
        step_msg(&in, &steps[i], &sm[i]);
        sp[i] = &sm[i];
        if (steps[i].host >= 0) continue;
        godwit__v1__evacuation_blocker__init(&bm[nb]);
        bm[nb].vm = (char *)vms[steps[i].vm].name;
        bm[nb].reason = (char *)steps[i].blocker;
        bm[nb].message = steps[i].message;
        bp[nb] = &bm[nb];
        nb++;
    }
    resp.n_plan = in.n_vms;
    resp.plan = sp;
    resp.n_blockers = nb;
    resp.blockers = bp;
    if (req->dry_run) {
        gw_grpc_call_send(call, &resp.base);
        goto out;
    }
    if (blocked) {
        /* Nothing moves while any VM has nowhere to go: a half-drained host is worse. */
        code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, bm[0].reason,
                                         "%s: %s: %s (%u VMs blocked; see a dry run)", bm[0].reason, bm[0].vm,
                                         bm[0].message, blocked);
        goto out;
    }
    if (d->stopping) { code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "daemon shutting down"); goto out; }
    /* Checked again under the lock that starts it: the first check let go of the lock to read
     * the registry, and a second call (a retry, or another) could start one meanwhile. */
    struct gw_job *j = gw_evac_by_request(d, req->request_id);
    for (struct gw_job *o = d->jobs; o && !j; o = o->next)
        if (o->evac && !gw_job_final(o->state)) j = o;
    if (j) {
        if (!gw_evac_by_request(d, req->request_id)) {
            code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "EVACUATION_RUNNING",
                                             "%s is already being evacuated by job %s", d->cfg.hostname, j->id);
            goto out;
        }
        gw_job_to_proto(j, &pj);   /* the same request: its job */
        resp.job = &pj;
        gw_grpc_call_send(call, &resp.base);
        goto out;
    }
    r = gw_evac_start(d, p, req->request_id, &in, steps, &j);
    if (r) { code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "cannot start the evacuation: %s", strerror(-r)); goto out; }
    gw_job_to_proto(j, &pj);
    resp.job = &pj;
    gw_grpc_call_send(call, &resp.base);
out:
    pthread_mutex_unlock(&d->lock);
    gw_cluster_hosts_free(hosts, nh);
    free(vms); free(steps); free(sm); free(sp); free(bm); free(bp);
    return code;
}

static int exit_maintenance(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__ExitMaintenanceRequest *req = (const void *)msg;
    Godwit__V1__ExitMaintenanceResponse resp = GODWIT__V1__EXIT_MAINTENANCE_RESPONSE__INIT;
    int code = GW_GRPC_OK;
    pthread_mutex_lock(&d->lock);
    for (struct gw_job *j = d->jobs; j; j = j->next)
        if (j->evac && !gw_job_final(j->state)) {
            code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "EVACUATION_RUNNING",
                                             "evacuation %s is running: cancel it (it puts the host back to active)",
                                             j->id);
            goto out;
        }
    if (gw_cluster_set_state(d, GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE)) {
        code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "cannot save the host's state");
        goto out;
    }
    resp.state = d->cluster->state;
    pthread_mutex_unlock(&d->lock);
    char *names[GW_EVAC_MAX_VMS];
    size_t n = 0;
    if (req->return_home) {
        /* The holders check that we are live and active in the registry: publish it first. */
        gw_cluster_publish(d);
        n = gw_cluster_return_home(d, names, GW_EVAC_MAX_VMS);
    }
    resp.n_returning = n;
    resp.returning = names;
    gw_grpc_call_send(call, &resp.base);
    for (size_t i = 0; i < n; i++) free(names[i]);
    return GW_GRPC_OK;
out:
    pthread_mutex_unlock(&d->lock);
    return code;
}

int gw_service_register_cluster(struct gw_daemon *d)
{
    static const struct {
        const char *path; const ProtobufCMessageDescriptor *desc; gw_grpc_handler_fn fn;
    } m[] = {
        {"/godwit.v1.Godwit/ListHosts", &godwit__v1__list_hosts_request__descriptor, list_hosts},
        {"/godwit.v1.Godwit/EvacuateHost", &godwit__v1__evacuate_host_request__descriptor, evacuate_host},
        {"/godwit.v1.Godwit/ExitMaintenance", &godwit__v1__exit_maintenance_request__descriptor, exit_maintenance},
    };
    for (size_t i = 0; i < GW_ARRAY_SIZE(m); i++) {
        int r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
            .path = m[i].path, .kind = GW_GRPC_UNARY, .request = m[i].desc, .handler = m[i].fn, .arg = d});
        if (r) return r;
    }
    return gw_service_register_cluster_peer(d);
}
