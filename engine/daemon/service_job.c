/* gRPC handlers of godwit.v1.Godwit for jobs: MigrateVm, GetJob, ListJobs, WatchJob (server
 * streaming: the current state at once, then every change, ending after the final state),
 * CancelJob. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"

static int send_job(struct gw_grpc_call *call, const struct gw_job *j, const ProtobufCMessageDescriptor *desc)
{
    Godwit__V1__Job pj;
    gw_job_to_proto(j, &pj);
    /* MigrateVmResponse, GetJobResponse and CancelJobResponse are all {Job job = 1}. */
    struct { ProtobufCMessage base; Godwit__V1__Job *job; } resp;
    protobuf_c_message_init(desc, &resp);
    resp.job = &pj;
    gw_grpc_call_send(call, &resp.base);
    return GW_GRPC_OK;
}

static bool dest_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n >= 256) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] == 0x7f) return false;
    return strchr(s, ':') != NULL;
}

static int migrate_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__MigrateVmRequest *req = (const void *)msg;
    if (!req->vm[0]) return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "a VM name is required");
    if (!dest_ok(req->destination))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "destination must be the destination godwitd's \"host:port\"");
    /* Only a host of the cluster may receive a VM: never an address a caller makes up. With a
     * registry, a registered, live and active host (the registry is the membership). */
    if (d->cluster->ops) {
        char why[300];
        int r = gw_cluster_check_destination(d, req->destination, why, sizeof why);
        if (r)
            return gw_grpc_call_error_reason(call, r == -EIO ? GW_GRPC_UNAVAILABLE : GW_GRPC_FAILED_PRECONDITION,
                                             gw_cluster_reason(r), "%s", why);
    } else if (!gw_config_is_peer(&d->cfg, req->destination))
        return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "destination %s is not one of %s's peers "
                                  "(peers in godwitd's config)", req->destination, d->cfg.hostname);
    const Godwit__V1__MigrationPolicy *p = req->policy;
    if (p && ((unsigned)p->mode > GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID ||
              (unsigned)p->compression > GODWIT__V1__MIGRATION_POLICY__COMPRESSION__LZ4 || p->streams > 64))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "bad migration policy");
    if (strlen(req->request_id) > GW_REQUEST_ID_MAX)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "request_id longer than %d bytes", GW_REQUEST_ID_MAX);
    pthread_mutex_lock(&d->lock);
    int code = GW_GRPC_OK;
    struct gw_vm_rec *rec = gw_vm_find(d, req->vm);
    struct gw_job *j;
    /* A retry of a request that made a job gets that job, whatever became of it. */
    for (j = req->request_id[0] ? d->jobs : NULL; j; j = j->next)
        if (!strcmp(j->request_id, req->request_id) && j->kind == GODWIT__V1__JOB__KIND__MIGRATE) {
            send_job(call, j, &godwit__v1__migrate_vm_response__descriptor);
            goto out;
        }
    if (!rec) { code = gw_grpc_call_error(call, GW_GRPC_NOT_FOUND, "no VM named %s", req->vm); goto out; }
    if (rec->state != GODWIT__V1__VM__STATE__RUNNING || rec->busy || !rec->proc.pid) {
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is not running (or busy)", req->vm);
        goto out;
    }
    /* The runner's own run state, as of its last status (within a second): it would refuse
     * the migration of a paused VM (a rolled-back migration would resume it). */
    if (rec->runner_state[0] && strcmp(rec->runner_state, "running")) {
        char by[48] = "";
        if (rec->paused_by[0]) snprintf(by, sizeof by, " (paused by %.30s)", rec->paused_by);
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is %s in its runner%s: resume it first",
                                  req->vm, rec->runner_state, by);
        goto out;
    }
    for (j = d->jobs; j; j = j->next) {
        if (!gw_job_final(j->state) && !strcmp(j->vm, req->vm)) {
            code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s already has job %s", req->vm, j->id);
            goto out;
        }
    }
    if (d->stopping || gw_job_new(d, GODWIT__V1__JOB__KIND__MIGRATE, req->vm, &j)) {
        code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot create a job now");
        goto out;
    }
    snprintf(j->destination, sizeof j->destination, "%s", req->destination);
    snprintf(j->request_id, sizeof j->request_id, "%s", req->request_id);
    if (p) gw_job_set_policy(j, p);
    if (!j->policy.mode) j->policy.mode = GODWIT__V1__MIGRATION_POLICY__MODE__PRECOPY;
    gw_info("job=%s vm=%s: migration to %s queued", j->id, j->vm, j->destination);
    gw_job_set_state(j, GODWIT__V1__JOB__STATE__QUEUED, "queued");   /* written before the reply */
    if (gw_migrate_start(d, j)) {
        snprintf(j->error, sizeof j->error, "cannot start the job thread");
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__FAILED, j->error);
    }
    send_job(call, j, &godwit__v1__migrate_vm_response__descriptor);
out:
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

static int find(struct gw_grpc_call *call, struct gw_daemon *d, const char *id, struct gw_job **out)
{
    *out = NULL;
    if (!id[0]) return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "a job id is required");
    *out = gw_job_find(d, id);
    return *out ? GW_GRPC_OK : gw_grpc_call_error(call, GW_GRPC_NOT_FOUND, "no job %s", id);
}

static int get_job(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__GetJobRequest *req = (const void *)msg;
    struct gw_job *j;
    pthread_mutex_lock(&d->lock);
    int code = find(call, d, req->id, &j);
    if (!code) send_job(call, j, &godwit__v1__get_job_response__descriptor);
    pthread_mutex_unlock(&d->lock);
    return code;
}

static int list_jobs(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__ListJobsRequest *req = (const void *)msg;
    Godwit__V1__ListJobsResponse resp = GODWIT__V1__LIST_JOBS_RESPONSE__INIT;
    int code = GW_GRPC_OK;
    if ((unsigned)req->state > GODWIT__V1__JOB__STATE__CANCELLED)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "unknown job state %d", (int)req->state);
    pthread_mutex_lock(&d->lock);
    size_t n = 0;
    for (struct gw_job *j = d->jobs; j; j = j->next) n++;
    Godwit__V1__Job *jobs = calloc(n + 1, sizeof *jobs);
    Godwit__V1__Job **ptrs = calloc(n + 1, sizeof *ptrs);
    if (!jobs || !ptrs) {
        code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        /* The table is newest first; the list reads oldest first, as a history does. */
        size_t k = n;
        for (struct gw_job *j = d->jobs; j; j = j->next) {
            if ((req->state && j->state != (int)req->state) || (req->vm[0] && strcmp(req->vm, j->vm))) continue;
            k--;
            gw_job_to_proto(j, &jobs[k]);
            ptrs[k] = &jobs[k];
        }
        /* Pages: the token is the id of the last job of the previous page. */
        size_t first = k, end = n;
        if (req->page_token[0]) {
            while (first < end && strcmp(ptrs[first]->id, req->page_token)) first++;
            if (first == end) {
                code = gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "page_token %.40s is no longer valid",
                                          req->page_token);
                goto done;
            }
            first++;
        }
        size_t count = end - first;
        if (req->page_size && req->page_size < count) count = req->page_size;
        resp.n_jobs = count;
        resp.jobs = ptrs + first;
        resp.next_page_token = first + count < end ? ptrs[first + count - 1]->id : "";
        gw_grpc_call_send(call, &resp.base);
    }
done:
    pthread_mutex_unlock(&d->lock);
    free(jobs);
    free(ptrs);
    return code;
}

static int watch_job(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__WatchJobRequest *req = (const void *)msg;
    struct gw_job *j;
    pthread_mutex_lock(&d->lock);
    int code = find(call, d, req->id, &j);
    if (!code) {
        int r = gw_job_watch(j, call);
        if (r == 0) code = GW_GRPC_PENDING;      /* the job ends the call */
        else if (r == 1) code = GW_GRPC_OK;      /* already final: one event was all */
        else if (r == -ECANCELED) code = GW_GRPC_CANCELLED;
        else code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "cannot watch: %s", strerror(-r));
    }
    pthread_mutex_unlock(&d->lock);
    return code;
}

static int cancel_job(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__CancelJobRequest *req = (const void *)msg;
    struct gw_job *j;
    pthread_mutex_lock(&d->lock);
    int code = find(call, d, req->id, &j);
    if (!code && gw_job_final(j->state))
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "job %s has already ended", req->id);
    if (!code) {
        gw_info("job=%s vm=%s: cancel requested", j->id, j->vm);
        gw_migrate_cancel(d, j);
        send_job(call, j, &godwit__v1__cancel_job_response__descriptor);
    }
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

static int switch_to_postcopy(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__SwitchToPostcopyRequest *req = (const void *)msg;
    struct gw_job *j;
    pthread_mutex_lock(&d->lock);
    int code = find(call, d, req->id, &j);
    if (!code && gw_job_final(j->state))
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "job %s has already ended", req->id);
    if (!code && j->policy.mode != GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID)
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "job %s is not a hybrid migration", req->id);
    if (!code) {
        gw_info("job=%s vm=%s: switch to post-copy requested", j->id, j->vm);
        j->switch_postcopy = true;   /* the job's follower tells the runner */
        pthread_cond_broadcast(&d->cond);
        send_job(call, j, &godwit__v1__switch_to_postcopy_response__descriptor);
    }
    pthread_mutex_unlock(&d->lock);
    return code;
}

static int resume_migration(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__ResumeMigrationRequest *req = (const void *)msg;
    const char *to = req->destination ? req->destination : "";
    if (!strncmp(to, "tcp:", 4)) to += 4;
    /* No control characters or spaces: the address is logged and handed to the runner. */
    if (strlen(to) > 200 || (*to && !dest_ok(to)))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "destination is HOST:PORT");
    struct gw_job *j;
    pthread_mutex_lock(&d->lock);
    int code = find(call, d, req->id, &j);
    if (!code && gw_job_final(j->state))
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "job %s has already ended", req->id);
    if (!code && j->policy.mode != GODWIT__V1__MIGRATION_POLICY__MODE__POSTCOPY &&
        j->policy.mode != GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID)
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "job %s is not a post-copy migration", req->id);
    if (!code && strcmp(j->phase, "postcopy-paused") && strcmp(j->phase, "postcopy-recover"))
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "job %s is not paused by a broken link (phase %s)",
                                  req->id, j->phase);
    if (!code) {
        gw_info("job=%s vm=%s: resume of the migration requested%s%s", j->id, j->vm, *to ? " to " : "", to);
        snprintf(j->resume_to, sizeof j->resume_to, "%s%s", *to ? "tcp:" : "", to);
        j->resume_migration = true;   /* the job's follower tells the runner */
        pthread_cond_broadcast(&d->cond);
        send_job(call, j, &godwit__v1__resume_migration_response__descriptor);
    }
    pthread_mutex_unlock(&d->lock);
    return code;
}

int gw_service_register_job(struct gw_daemon *d)
{
    static const struct {
        const char *path; const ProtobufCMessageDescriptor *desc; gw_grpc_handler_fn fn; enum gw_grpc_kind kind;
    } m[] = {
        {"/godwit.v1.Godwit/MigrateVm", &godwit__v1__migrate_vm_request__descriptor, migrate_vm, GW_GRPC_UNARY},
        {"/godwit.v1.Godwit/GetJob", &godwit__v1__get_job_request__descriptor, get_job, GW_GRPC_UNARY},
        {"/godwit.v1.Godwit/ListJobs", &godwit__v1__list_jobs_request__descriptor, list_jobs, GW_GRPC_UNARY},
        {"/godwit.v1.Godwit/WatchJob", &godwit__v1__watch_job_request__descriptor, watch_job, GW_GRPC_SERVER_STREAM},
        {"/godwit.v1.Godwit/CancelJob", &godwit__v1__cancel_job_request__descriptor, cancel_job, GW_GRPC_UNARY},
        {"/godwit.v1.Godwit/SwitchToPostcopy", &godwit__v1__switch_to_postcopy_request__descriptor, switch_to_postcopy,
         GW_GRPC_UNARY},
        {"/godwit.v1.Godwit/ResumeMigration", &godwit__v1__resume_migration_request__descriptor, resume_migration,
         GW_GRPC_UNARY},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        int r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
            .path = m[i].path, .kind = m[i].kind, .request = m[i].desc, .handler = m[i].fn, .arg = d});
        if (r) return r;
    }
    return 0;
}
