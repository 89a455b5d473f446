/* Which host owns a VM after a hand-over. Three ways used to make a VM run on two hosts:
 * a source runner that finished a migration while its daemon was down was taken for a crash
 * (and restarted, or restartable by `vm start`); a hand-over in doubt (GO sent, RUNNING lost)
 * stayed a dead end; and an in-doubt runner could be resumed. Here:
 *
 *   - the source runner's HandoverRecord ("migrated" / "in-doubt", written durably before
 *     it exits) decides what a runner exit means when no job thread followed it;
 *   - a migration re-attached after a daemon restart is followed by the supervisor's status
 *     polls (its job stays open and ends with the migration's real outcome);
 *   - an in-doubt hand-over is settled by asking the destination daemon
 *     (GodwitPeer.QueryIncoming): it runs there -> the copy here is discarded; it never
 *     started there -> the copy here resumes; unreachable -> the VM stays IN_DOUBT with the
 *     reason (the job ends) while the resolver keeps asking, and the operator may decide
 *     with ResolveVm (`godwit vm resolve NAME --keep-source|--keep-destination`).
 *
 * Locking as everywhere in the daemon: d->lock for the tables, dropped for every runner call,
 * peer RPC and sleep; threads find their VM again by name after each unlock. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/api/grpc_client.h"
#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/runner/handover.h"
#include "engine/runner/runner_client.h"
#include "godwit/v1/daemon.pb-c.h"

#define RESOLVE_EVERY_MS 1000      /* between two questions to the destination */
#define RESOLVE_JOB_ATTEMPTS 3     /* unanswered questions before the job ends (VM stays in doubt) */
#define PEER_TIMEOUT_MS 3000

void gw_handover_path(const struct gw_daemon *d, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s/handover.pb", d->vms_dir, name);
}

/* The open migration job of vm (job_id when known), or NULL (lock held). */
static struct gw_job *open_job(struct gw_daemon *d, const char *vm, const char *job_id)
{
    for (struct gw_job *j = d->jobs; j; j = j->next) {
        if (gw_job_final(j->state) || j->kind != GODWIT__V1__JOB__KIND__MIGRATE || strcmp(j->vm, vm)) continue;
        if (!job_id || !job_id[0] || !strcmp(j->id, job_id)) return j;
    }
    return NULL;
}

static void end_job(struct gw_daemon *d, const char *vm, const char *job_id, int state, const char *msg)
{
    struct gw_job *j = open_job(d, vm, job_id);
    if (!j) return;
    snprintf(j->error, sizeof j->error, "%.500s", state == GODWIT__V1__JOB__STATE__SUCCEEDED ? "" : msg);
    gw_job_set_state(j, state, msg);
}

void gw_owner_remove_record(struct gw_daemon *d, const char *name)
{
    char path[1200];
    gw_handover_path(d, name, path, sizeof path);
    if (unlink(path) && errno != ENOENT) gw_warn("vm=%s: cannot remove %s: %s", name, path, strerror(errno));
}

/* The VM runs on peer now: forget it here (lock held; rec freed). A runner still holding
 * the paused copy is killed: it must never run again. */
static void forget(struct gw_daemon *d, struct gw_vm_rec *rec, const char *peer, const char *job_id, const char *how)
{
    char msg[512];
    snprintf(msg, sizeof msg, "VM now runs on %s%s%s", peer[0] ? peer : "the destination", how[0] ? " " : "", how);
    gw_info("vm=%s: %s; dropping it here", rec->name, msg);
    end_job(d, rec->name, job_id, GODWIT__V1__JOB__STATE__SUCCEEDED, msg);
    if (rec->proc.pidfd >= 0) {
        gw_proc_signal(&rec->proc, SIGKILL);
        close(rec->proc.pidfd);   /* leaves the supervisor's epoll set with it */
    }
    gw_owner_remove_record(d, rec->name);
    gw_vm_unlink(d, rec);
    gw_db_delete_vm(d->db, rec->name);
    free(rec);
    pthread_cond_broadcast(&d->cond);
}

enum gw_settle gw_owner_settle_exit(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    char path[1200];
    gw_handover_path(d, rec->name, path, sizeof path);
    Godwit__V1__HandoverRecord *hr = NULL;
    int r = gw_handover_read(path, &hr);
    if (r) {
        if (r != -ENOENT) gw_warn("vm=%s: unreadable hand-over record %s: %s", rec->name, path, strerror(-r));
        return GW_SETTLE_NONE;
    }
    enum gw_settle out;
    if (!strcmp(hr->state, "migrated")) {
        forget(d, rec, hr->peer, hr->job_id, "(its runner finished the hand-over)");
        out = GW_SETTLE_MOVED;
    } else {
        char why[400];
        snprintf(why, sizeof why, "hand-over in doubt: %s", hr->error[0] ? hr->error : "the destination's RUNNING was lost");
        gw_owner_in_doubt(d, rec, hr->peer, hr->job_id, why);
        out = GW_SETTLE_IN_DOUBT;
    }
    godwit__v1__handover_record__free_unpacked(hr, NULL);
    return out;
}

/* ---- the resolver ---------------------------------------------------------------------- */

struct resolver {
    struct gw_daemon *d;
    char name[GW_VM_NAME_MAX + 1];
};

/* Asks peer whether vm runs there. Returns the answer's state, or -errno (why filled). */
static int query_peer(struct gw_daemon *d, const char *peer, const char *vm, const char *job_id, bool source_gone,
                      char *why, size_t len)
{
    struct gw_grpc_client *c;
    /* The cluster's peer credential (and TLS when configured), never the operator's token. */
    int r = gw_peer_connect(d, peer, &c);
    if (r) { snprintf(why, len, "%.200s unreachable: %s", peer, strerror(-r)); return r; }
    Godwit__V1__QueryIncomingRequest req = GODWIT__V1__QUERY_INCOMING_REQUEST__INIT;
    req.vm = (char *)vm;
    req.job_id = (char *)job_id;
    req.source_gone = source_gone;
    struct gw_grpc_status st;
    ProtobufCMessage *resp = NULL;
    gw_grpc_client_unary(c, "/godwit.v1.GodwitPeer/QueryIncoming", &req.base,
                         &godwit__v1__query_incoming_response__descriptor, &resp, PEER_TIMEOUT_MS, &st);
    gw_grpc_client_close(c);
    if (st.code != GW_GRPC_OK) {
        snprintf(why, len, "%.200s unreachable: %s: %.150s", peer, gw_grpc_code_name(st.code), st.message);
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        return -EPROTO;
    }
    r = ((Godwit__V1__QueryIncomingResponse *)resp)->state;
    protobuf_c_message_free_unpacked(resp, NULL);
    return r;
}

/* The destination never started the VM: it runs on here (lock held, dropped for the runner
 * call). */
static void keep_source(struct gw_daemon *d, struct gw_vm_rec *rec, const char *why)
{
    char name[sizeof rec->name], job[sizeof rec->in_doubt_job], peer[sizeof rec->in_doubt_peer];
    memcpy(name, rec->name, sizeof name);
    memcpy(job, rec->in_doubt_job, sizeof job);
    memcpy(peer, rec->in_doubt_peer, sizeof peer);
    char msg[600];
    snprintf(msg, sizeof msg, "the hand-over did not complete (%s); the VM runs on %s", why, d->cfg.hostname);
    if (rec->proc.pid) {
        char sock[sizeof rec->control];
        memcpy(sock, rec->control, sizeof sock);
        rec->busy = true;
        pthread_mutex_unlock(&d->lock);
        Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
        Godwit__V1__RunnerResolveRequest rv = GODWIT__V1__RUNNER_RESOLVE_REQUEST__INIT;
        rv.keep_source = true;
        req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_RESOLVE;
        req.resolve = &rv;
        Godwit__V1__RunnerReply *rep = NULL;
        int r = gw_runner_call(sock, &req, &rep, 5000);
        bool ok = !r && rep->ok;
        char err[256];
        snprintf(err, sizeof err, "%s", r ? strerror(-r) : rep->ok ? "" : rep->error);
        if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
        pthread_mutex_lock(&d->lock);
        rec = gw_vm_find(d, name);
        if (!rec) return;
        rec->busy = false;
        pthread_cond_broadcast(&d->cond);
        if (!ok) {
            gw_error("vm=%s: cannot resume the in-doubt VM: %s", name, err);
            snprintf(rec->error, sizeof rec->error, "resolving the hand-over: the runner refused to resume: %.180s", err);
            gw_vm_persist(d, rec);
            return;
        }
        rec->state = GODWIT__V1__VM__STATE__RUNNING;
        rec->error[0] = 0;
        gw_info("vm=%s: %s", name, msg);
    } else {
        /* The paused copy died with its runner: the VM crashed here (its policy applies). */
        snprintf(msg, sizeof msg, "the hand-over did not complete (%s); the VM stays on %s, where its runner had "
                 "ended (restart policy applies)", why, d->cfg.hostname);
        rec->state = GODWIT__V1__VM__STATE__CRASHED;
        gw_sup_crashed(d, rec, "its runner ended while the hand-over was in doubt, and the destination never started it");
    }
    rec->in_doubt_peer[0] = rec->in_doubt_job[0] = 0;
    gw_owner_remove_record(d, name);
    gw_vm_persist(d, rec);
    end_job(d, name, job, GODWIT__V1__JOB__STATE__FAILED, msg);
    pthread_cond_broadcast(&d->cond);
}

static void *resolver_main(void *arg)
{
    struct resolver *rs = arg;
    struct gw_daemon *d = rs->d;
    unsigned attempts = 0;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        struct gw_vm_rec *rec = gw_vm_find(d, rs->name);
        if (d->stopping || !rec || rec->state != GODWIT__V1__VM__STATE__IN_DOUBT) break;
        if (rec->busy) goto wait;
        char peer[sizeof rec->in_doubt_peer], job[sizeof rec->in_doubt_job], why[400] = "";
        memcpy(peer, rec->in_doubt_peer, sizeof peer);
        memcpy(job, rec->in_doubt_job, sizeof job);
        bool gone = !rec->proc.pid;   /* no copy of the VM is left here */
        pthread_mutex_unlock(&d->lock);
        int ans = peer[0] ? query_peer(d, peer, rs->name, job, gone, why, sizeof why) : -EDESTADDRREQ;
        if (!peer[0]) snprintf(why, sizeof why, "the destination daemon is not known");
        pthread_mutex_lock(&d->lock);
        rec = gw_vm_find(d, rs->name);
        if (d->stopping || !rec || rec->state != GODWIT__V1__VM__STATE__IN_DOUBT || rec->busy) continue;
        if (ans == GODWIT__V1__QUERY_INCOMING_RESPONSE__STATE__RUNNING) {
            forget(d, rec, peer, job, "(the hand-over was in doubt; the destination confirmed it runs the VM)");
            break;
        }
        if (ans == GODWIT__V1__QUERY_INCOMING_RESPONSE__STATE__ABSENT) {
            char w[300];
            snprintf(w, sizeof w, "%s never started it", peer);
            keep_source(d, rec, w);
            rec = gw_vm_find(d, rs->name);
            if (!rec || rec->state != GODWIT__V1__VM__STATE__IN_DOUBT) break;
            goto wait;   /* the runner refused to resume: still in doubt, try again */
        }
        if (ans == GODWIT__V1__QUERY_INCOMING_RESPONSE__STATE__ARRIVING)
            snprintf(why, sizeof why, "%s is still taking the VM over", peer);
        if (++attempts == RESOLVE_JOB_ATTEMPTS) {
            /* Unsettled: the job ends, the VM stays in doubt (never runs here by itself), and
             * we keep asking until the peer answers or the operator decides. */
            snprintf(rec->error, sizeof rec->error, "hand-over in doubt (%.50s: %.60s); godwit vm resolve %s "
                     "--keep-source|--keep-destination", peer, why, rec->name);
            gw_vm_persist(d, rec);
            gw_warn("vm=%s: %s", rec->name, rec->error);
            end_job(d, rec->name, job, GODWIT__V1__JOB__STATE__FAILED, rec->error);
        }
    wait:;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);   /* d->cond's clock */
        ts.tv_sec += RESOLVE_EVERY_MS / 1000;
        while (!d->stopping && pthread_cond_timedwait(&d->cond, &d->lock, &ts) != ETIMEDOUT) {}
    }
    struct gw_vm_rec *rec = gw_vm_find(d, rs->name);
    if (rec) rec->resolver = false;
    d->resolvers--;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    free(rs);
    return NULL;
}

static void start_resolver(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    if (rec->resolver || d->stopping) return;
    struct resolver *rs = calloc(1, sizeof *rs);
    if (!rs) { gw_error("vm=%s: no memory for an in-doubt resolver", rec->name); return; }
    rs->d = d;
    snprintf(rs->name, sizeof rs->name, "%s", rec->name);
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &at, resolver_main, rs);
    pthread_attr_destroy(&at);
    if (r) { free(rs); gw_error("vm=%s: cannot start the in-doubt resolver: %s", rec->name, strerror(r)); return; }
    rec->resolver = true;
    d->resolvers++;
}

void gw_owner_in_doubt(struct gw_daemon *d, struct gw_vm_rec *rec, const char *peer, const char *job_id,
                       const char *why)
{
    rec->state = GODWIT__V1__VM__STATE__IN_DOUBT;
    rec->orphan_migration = false;
    rec->restart_at_ns = 0;
    snprintf(rec->in_doubt_peer, sizeof rec->in_doubt_peer, "%s", peer ? peer : "");
    snprintf(rec->in_doubt_job, sizeof rec->in_doubt_job, "%s", job_id ? job_id : "");
    snprintf(rec->error, sizeof rec->error, "%s", why);
    gw_warn("vm=%s: %s; asking %s", rec->name, why, rec->in_doubt_peer[0] ? rec->in_doubt_peer : "nobody");
    gw_vm_persist(d, rec);
    pthread_cond_broadcast(&d->cond);
    start_resolver(d, rec);
}

void gw_owner_runner_lost(struct gw_daemon *d, struct gw_vm_rec *rec, const char *why)
{
    struct gw_job *j = open_job(d, rec->name, NULL);
    if (!j || !j->destination[0]) { gw_sup_crashed(d, rec, why); return; }
    char msg[400];
    snprintf(msg, sizeof msg, "%.200s, leaving no record of the hand-over", why);
    gw_owner_in_doubt(d, rec, j->destination, j->id, msg);
}

bool gw_owner_cancel_wanted(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    struct gw_job *j = open_job(d, rec->name, NULL);
    return j && j->cancel;
}

void gw_owner_orphan_status(struct gw_daemon *d, struct gw_vm_rec *rec, const Godwit__V1__RunnerStatus *st)
{
    const char *s = st->state ? st->state : "";
    struct gw_job *j = open_job(d, rec->name, NULL);
    if (j && st->migration) gw_job_take_progress(j, st->migration);
    if (!strcmp(s, "migrating") || !strcmp(s, "migrated")) {
        if (j) gw_job_progress(j, NULL);   /* the exit (and its record) settles "migrated" */
        return;
    }
    if (!strcmp(s, "in-doubt")) {
        char path[1200];
        Godwit__V1__HandoverRecord *hr = NULL;
        gw_handover_path(d, rec->name, path, sizeof path);
        bool have = !gw_handover_read(path, &hr);
        gw_owner_in_doubt(d, rec, have ? hr->peer : (j ? j->destination : ""), have ? hr->job_id : (j ? j->id : ""),
                          st->migration_error && *st->migration_error ? st->migration_error : "hand-over in doubt");
        if (hr) godwit__v1__handover_record__free_unpacked(hr, NULL);
        return;
    }
    /* Back to running (or paused): the migration failed or was cancelled before GO. */
    rec->orphan_migration = false;
    rec->state = GODWIT__V1__VM__STATE__RUNNING;
    gw_vm_persist(d, rec);
    char msg[512];
    bool cancelled = j && j->cancel;
    snprintf(msg, sizeof msg, "%s; the VM runs on %s", cancelled ? "cancelled"
             : st->migration_error && *st->migration_error ? st->migration_error : "the migration did not complete",
             d->cfg.hostname);
    end_job(d, rec->name, NULL, cancelled ? GODWIT__V1__JOB__STATE__CANCELLED : GODWIT__V1__JOB__STATE__FAILED, msg);
    pthread_cond_broadcast(&d->cond);
}

void gw_owner_settle_jobs(struct gw_daemon *d)
{
    for (struct gw_job *j = d->jobs; j; j = j->next) {
        if (gw_job_final(j->state) || j->has_thread) continue;
        if (j->evac) continue;   /* an evacuation resumes from its journal (evacuate.c) */
        struct gw_vm_rec *rec = gw_vm_find(d, j->vm);
        if (j->kind == GODWIT__V1__JOB__KIND__MIGRATE && rec &&
            (rec->orphan_migration || rec->state == GODWIT__V1__VM__STATE__IN_DOUBT))
            continue;   /* followed by the supervisor / the resolver */
        snprintf(j->error, sizeof j->error, "interrupted: the daemon restarted while the job was %s%s%s",
                 j->state == GODWIT__V1__JOB__STATE__QUEUED ? "queued" : "running",
                 rec ? "; the VM is on " : "", rec ? d->cfg.hostname : "");
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__FAILED, "daemon restarted");
    }
}

/* ---- RPCs ------------------------------------------------------------------------------ */

/* GodwitPeer.QueryIncoming: does the VM run here? */
static int query_incoming(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__QueryIncomingRequest *req = (const void *)msg;
    Godwit__V1__QueryIncomingResponse resp = GODWIT__V1__QUERY_INCOMING_RESPONSE__INIT;
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, req->vm);
    /* Only the migration's own source may say it is gone: another peer's word drops nothing. */
    if (rec && req->source_gone && rec->incoming && !rec->proc.pid && !rec->busy && gw_incoming_job_is(rec, req->job_id)) {
        /* Only reserved, and the source's runner is gone: nothing will ever arrive. */
        gw_info("vm=%s job=%s: the source's runner is gone; dropping the reservation", rec->name, req->job_id);
        gw_sup_drop_incoming(d, rec);
        rec = NULL;
    }
    /* A VM of that name that arrived (or is arriving) for another job is not the asker's VM:
     * answering by name alone let another peer's VM of the same name keep the asker's in
     * doubt, or make it forget its own. An asker that names no job (no record of it) gets
     * the answer by name, as before: never "absent" for a VM that may be its own. */
    if (rec && req->job_id && req->job_id[0] && !gw_incoming_job_is(rec, req->job_id)) rec = NULL;
    if (!rec) resp.state = GODWIT__V1__QUERY_INCOMING_RESPONSE__STATE__ABSENT;
    else if (rec->incoming || rec->reserved_until_ns) resp.state = GODWIT__V1__QUERY_INCOMING_RESPONSE__STATE__ARRIVING;
    else resp.state = GODWIT__V1__QUERY_INCOMING_RESPONSE__STATE__RUNNING;   /* ours since it arrived */
    pthread_mutex_unlock(&d->lock);
    gw_grpc_call_send(call, &resp.base);
    return GW_GRPC_OK;
}

/* Godwit.ResolveVm: the operator settles an in-doubt VM. */
static int resolve_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__ResolveVmRequest *req = (const void *)msg;
    if (!req->name[0]) return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "a VM name is required");
    if (req->keep_source == req->keep_destination)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "set exactly one of keep_source and keep_destination");
    pthread_mutex_lock(&d->lock);
    int code = GW_GRPC_OK;
    struct gw_vm_rec *rec = gw_vm_find(d, req->name);
    if (!rec) code = gw_grpc_call_error(call, GW_GRPC_NOT_FOUND, "no VM named %s", req->name);
    else if (rec->state != GODWIT__V1__VM__STATE__IN_DOUBT)
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is not in doubt", req->name);
    else if (rec->busy)
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is being resolved", req->name);
    if (code) goto out;
    Godwit__V1__ResolveVmResponse resp = GODWIT__V1__RESOLVE_VM_RESPONSE__INIT;
    if (req->keep_destination) {
        char peer[sizeof rec->in_doubt_peer], job[sizeof rec->in_doubt_job];
        memcpy(peer, rec->in_doubt_peer, sizeof peer);
        memcpy(job, rec->in_doubt_job, sizeof job);
        forget(d, rec, peer, job, "(the operator resolved the in-doubt hand-over)");
        gw_grpc_call_send(call, &resp.base);
        goto out;
    }
    char name[sizeof rec->name];
    memcpy(name, rec->name, sizeof name);
    keep_source(d, rec, "the operator chose the source");
    rec = gw_vm_find(d, name);
    if (!rec || rec->state == GODWIT__V1__VM__STATE__IN_DOUBT) {
        code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "VM %s: %s", name, rec ? rec->error : "gone");
        goto out;
    }
    Godwit__V1__Vm vm;
    Godwit__V1__RestartPolicy rp;
    Godwit__V1__VmCounters c;
    gw_vm_to_proto(d, rec, &vm, &rp, &c);
    resp.vm = &vm;
    gw_grpc_call_send(call, &resp.base);
out:
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

int gw_service_register_owner(struct gw_daemon *d)
{
    int r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
        .path = "/godwit.v1.GodwitPeer/QueryIncoming", .kind = GW_GRPC_UNARY,
        .request = &godwit__v1__query_incoming_request__descriptor, .handler = query_incoming, .arg = d,
        .flags = GW_GRPC_INLINE | GW_GRPC_PEER});   /* the peer credential only */
    if (!r) r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
        .path = "/godwit.v1.Godwit/ResolveVm", .kind = GW_GRPC_UNARY,
        .request = &godwit__v1__resolve_vm_request__descriptor, .handler = resolve_vm, .arg = d});
    return r;
}

void gw_owner_shutdown(struct gw_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    while (d->resolvers) pthread_cond_wait(&d->cond, &d->lock);
    pthread_mutex_unlock(&d->lock);
}
