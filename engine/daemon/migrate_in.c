/* Incoming migrations, destination side: the internal GodwitPeer service.
 *
 * PrepareIncoming defines the VM here (state MIGRATING). On a host with a migration port it
 * only reserves the VM and answers with that port: the arrival of all the session's streams
 * starts the runner (migport.c). A host without one starts `godwit-vm incoming --listen
 * tcp:migration_host:0`, reads back the port the runner bound (its first stdout line) and
 * answers with migration_advertise:PORT. The
 * stream itself is authenticated by the runners' handshake (HMAC over the cluster secret);
 * the RPC by the peers' credential (derived from the cluster secret; never the operator's token). When the destination runner reports "running" the
 * supervisor makes the VM ours (RUNNING, persisted); when it exits first, the VM record is
 * dropped: it still lives on its source. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/api/grpc_server.h"
#include "engine/common/json.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/backup_sched.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/labels.h"
#include "engine/daemon/db.h"
#include "engine/daemon/migport.h"
#include "godwit/v1/daemon.pb-c.h"

#define INCOMING_READY_MS 10000
#define ABORT_WAIT_MS 5000                        /* for an aborted runner to be reaped */
#define RESERVATION_NS (30000ull * 1000 * 1000)   /* the source must connect within 30 s */

/* Waits (lock held, dropped while sleeping) for the destination runner's first stdout line,
 * {"listening":"tcp:HOST:PORT"}, and takes the port from it. 0, -ECHILD when the runner
 * exited, -ETIMEDOUT. */
static int wait_listening(struct gw_daemon *d, struct gw_vm_rec *rec, int *port)
{
    char path[1100];
    gw_vm_dir(d, rec->name, path, sizeof path);
    strncat(path, "/runner.out", sizeof path - strlen(path) - 1);
    uint64_t seq = rec->exit_seq, end = gw_now_ns() + (uint64_t)INCOMING_READY_MS * 1000000;
    while (gw_now_ns() < end) {
        if (rec->exit_seq != seq) return -ECHILD;
        FILE *f = fopen(path, "re");
        char line[512] = "";
        if (f) {
            if (!fgets(line, sizeof line, f)) line[0] = 0;
            fclose(f);
        }
        char url[300];
        if (strchr(line, '\n') && !gw_json_get_str(line, "listening", url, sizeof url)) {
            char *colon = strrchr(url, ':');
            uint64_t p;
            if (!colon || gw_parse_u64(colon + 1, 1, 65535, &p)) return -EPROTO;
            *port = (int)p;
            return 0;
        }
        pthread_mutex_unlock(&d->lock);
        usleep(20000);
        pthread_mutex_lock(&d->lock);
    }
    return rec->exit_seq != seq ? -ECHILD : -ETIMEDOUT;
}

static unsigned count_incoming(struct gw_daemon *d)
{
    unsigned n = 0;
    for (struct gw_vm_rec *r = d->vms; r; r = r->next) n += r->incoming;
    return n;
}

/* A reservation on the migration port that no stream has reached yet, made for source (lock
 * held). */
static bool stale_reservation(const struct gw_vm_rec *r, const char *source)
{
    return r->reserved_until_ns && !r->busy && !r->proc.pid && r->reserved_by[0] && source &&
           !strcmp(r->reserved_by, source);
}

#define JOB_ID_CAP ((int)sizeof ((struct gw_vm_rec *)0)->incoming_job)

static int prepare_incoming(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__PrepareIncomingRequest *req = (const void *)msg;
    const Godwit__V1__Vm *vm = req->vm;
    if (!vm) return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "the VM's definition is required");
    const char *why = gw_vm_config_invalid(vm->name, vm->memory_bytes, vm->vcpus, vm->guest, vm->disk_path);
    if (why || !vm->memory_bytes || !vm->vcpus)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "%s", why ? why : "memory and vcpus are required");
    /* The disk is this host's own record, checked here: the runner opens exactly this path
     * (O_NOFOLLOW) and nothing on the migration wire names a file. */
    if (vm->disk_path && *vm->disk_path && (why = gw_config_disk_refused(&d->cfg, vm->disk_path)))
        return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "disk %s on %s: %s", vm->disk_path,
                                  d->cfg.hostname, why);
    /* As CreateVm checks them: a peer's VM is held to this host's rules, not the source's. */
    char rwhy[96];
    if ((why = gw_restart_policy_refused(vm->restart_policy, rwhy, sizeof rwhy)))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "%s", why);
    if (!req->job_id || strlen(req->job_id) >= JOB_ID_CAP)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "job_id longer than %d bytes", JOB_ID_CAP - 1);
    /* A Linux guest's kernel and initrd, and its tap, are the source's claims too: recorded
     * only when this host's own image_roots and net_taps allow them. The destination runner
     * opens no kernel (it arrives in the guest's memory); a later cold start here opens the
     * recorded path, checked again then. */
    struct gw_vm_boot boot;
    char spec[64], bwhy[700];
    const char *reason;
    if (vm->net && vm->net[0] && strlen(vm->net) < 32)
        snprintf(spec, sizeof spec, "%s%s%s", vm->net, vm->mac && vm->mac[0] ? ",mac=" : "", vm->mac ? vm->mac : "");
    else
        snprintf(spec, sizeof spec, "%s", vm->net && vm->net[0] ? "tap:(too long)" : "");
    int bcode = gw_vm_boot_check(&d->cfg, vm->name, vm->guest, vm->kernel ? vm->kernel : "",
                                 vm->initrd ? vm->initrd : "", vm->cmdline ? vm->cmdline : "", spec, &boot, &reason,
                                 bwhy, sizeof bwhy);
    if (bcode)
        return gw_grpc_call_error_reason(call, bcode, reason, "VM %s on %s: %s", vm->name, d->cfg.hostname, bwhy);
    pthread_mutex_lock(&d->lock);
    int code = GW_GRPC_OK;
    struct gw_vm_rec *rec = NULL;
    if (d->stopping) {
        code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "daemon shutting down");
        goto out;
    }
    if (!gw_cluster_accepts_vms(d)) {
        code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "HOST_NOT_ACTIVE", "%s is draining or "
                                         "in maintenance: it takes no incoming migrations", d->cfg.hostname);
        goto out;
    }
    struct gw_vm_rec *old = gw_vm_find(d, vm->name);
    if (old && stale_reservation(old, req->source_host)) {
        /* The same source asks again while its earlier reservation waits: that attempt is
         * dead (a source daemon restarted between PrepareIncoming and the streams, and its
         * evacuation retried). No runner exists yet, and the old token dies with the record,
         * so a late stream of the old attempt is closed at the port. */
        gw_warn("vm=%s: %s asks again; dropping its earlier reservation (no stream had arrived)", vm->name,
                req->source_host);
        gw_sup_drop_incoming(d, old);
        old = NULL;
    }
    if (old) {
        code = gw_grpc_call_error(call, GW_GRPC_ALREADY_EXISTS, "a VM named %s already exists on %s",
                                  vm->name, d->cfg.hostname);
        goto out;
    }
    /* A disk is one VM's: an arriving VM never gets another VM's (a stopped one's disk, read
     * and written by a guest the peer chose). */
    const struct gw_vm_rec *owner = vm->disk_path && *vm->disk_path ? gw_vm_disk_owner(d, vm->disk_path) : NULL;
    if (owner) {
        code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "DISK_IN_USE", "disk %s on %s belongs "
                                         "to VM %s", vm->disk_path, d->cfg.hostname, owner->name);
        goto out;
    }
    if (count_incoming(d) >= d->cfg.max_incoming) {
        code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "%s already receives %u migrations; retry later",
                                  d->cfg.hostname, d->cfg.max_incoming);
        goto out;
    }
    int r = gw_vm_rec_new(d, vm->name, &rec);
    if (r) {
        code = gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "VM name %s: %s", vm->name, strerror(-r));
        goto out;
    }
    /* No VM of this name is here: a hand-over record left by one that went away is stale. */
    gw_owner_remove_record(d, vm->name);
    snprintf(rec->incoming_job, sizeof rec->incoming_job, "%s", req->job_id);
    rec->memory_bytes = vm->memory_bytes;
    rec->vcpus = vm->vcpus;
    if (gw_cluster_name_ok(vm->anti_affinity)) snprintf(rec->anti_affinity, sizeof rec->anti_affinity, "%s", vm->anti_affinity);
    if (gw_cluster_name_ok(vm->origin_host)) snprintf(rec->origin_host, sizeof rec->origin_host, "%s", vm->origin_host);
    if (gw_labels_canon_ok(vm->labels)) snprintf(rec->labels, sizeof rec->labels, "%s", vm->labels);
    rec->priority = vm->priority;
    snprintf(rec->guest, sizeof rec->guest, "%s", vm->guest);
    snprintf(rec->disk, sizeof rec->disk, "%s", vm->disk_path);
    rec->boot = boot;
    if (vm->restart_policy) {
        rec->restart_kind = vm->restart_policy->kind;
        rec->max_restarts = vm->restart_policy->max_restarts;
        rec->backoff_ms = vm->restart_policy->backoff_ms;
    }
    if (vm->counters) rec->migrations = vm->counters->migrations;
    rec->created_ms = vm->created_unix_ms ? vm->created_unix_ms : gw_unix_ms();
    rec->busy = true;
    rec->incoming = true;   /* counted from now on */
    rec->next = d->vms;
    d->vms = rec;

    if (!d->cfg.secret_file[0]) {
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "%s has no secret_file configured: it cannot "
                                  "authenticate migrations", d->cfg.hostname);
        goto drop;
    }
    Godwit__V1__PrepareIncomingResponse resp = GODWIT__V1__PREPARE_INCOMING_RESPONSE__INIT;
    resp.tls_aes128 = true;   /* our runners' servers take either suite (tls.h) */
    char url[600];
    /* The one-time token the source's streams must carry: the migration port routes by it
     * and closes anything without it before a process starts. */
    if (getrandom(rec->session_token, sizeof rec->session_token, 0) != (ssize_t)sizeof rec->session_token) {
        code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "no random bytes for a session token");
        goto drop;
    }
    uint8_t token[sizeof rec->session_token];   /* the response is packed after rec may change */
    memcpy(token, rec->session_token, sizeof token);
    resp.session_token.data = token;
    resp.session_token.len = sizeof token;
    /* streams 0 = the source runner's default, which is within the port's limit. */
    if (d->cfg.migration_port && req->streams <= GW_MIGPORT_MAX_STREAMS) {
        /* Through the migration port: reserve, and let the streams' arrival start the runner. */
        rec->reserved_until_ns = gw_now_ns() + RESERVATION_NS;
        /* A name that does not fit is not recorded cut short: a cut name could match another
         * host's, so such a reservation is never replaced, only left to expire. */
        if (req->source_host && strlen(req->source_host) < sizeof rec->reserved_by)
            snprintf(rec->reserved_by, sizeof rec->reserved_by, "%s", req->source_host);
        rec->state = GODWIT__V1__VM__STATE__MIGRATING;
        rec->busy = false;
        snprintf(url, sizeof url, "tcp:%s:%u", d->cfg.migration_advertise, d->cfg.migration_port);
        resp.url = url;
        resp.via_migration_port = true;
        gw_info("vm=%s job=%s: incoming migration from %s reserved on the migration port", rec->name,
                req->job_id, req->source_host);
        gw_grpc_call_send(call, &resp.base);
        goto out;
    }
    /* A per-migration listener. Port 0: the runner binds any free port and prints it. */
    char listen_url[600], err[256];
    snprintf(listen_url, sizeof listen_url, "tcp:%s:0", d->cfg.migration_host);
    if (gw_sup_spawn_incoming(d, rec, listen_url, NULL, 0, err, sizeof err)) {
        code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "%s", err);
        goto drop;
    }
    int port = 0;
    r = wait_listening(d, rec, &port);
    if (r == -ECHILD) {
        code = rec->exit_code == 2
            ? gw_grpc_call_error(call, GW_GRPC_UNIMPLEMENTED, "the runner on %s cannot receive migrations (%s)",
                                 d->cfg.hostname, rec->exit_why)
            : gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "destination runner %s", rec->exit_why);
        goto drop;
    }
    if (r) {
        gw_proc_signal(&rec->proc, SIGKILL);
        code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "destination runner did not start listening");
        rec->busy = false;   /* its exit drops the record */
        goto out;
    }
    gw_info("vm=%s job=%s: incoming migration from %s, runner %d listens on port %d", rec->name, req->job_id,
            req->source_host, rec->proc.pid, port);
    rec->busy = false;
    gw_vm_persist(d, rec);
    snprintf(url, sizeof url, "tcp:%s:%d", d->cfg.migration_advertise, port);
    resp.url = url;
    gw_grpc_call_send(call, &resp.base);
    goto out;
drop:
    /* The runner is not running (never started, or exited and was reaped). */
    gw_vm_unlink(d, rec);
    free(rec);
out:
    if (!code && req->backup_policy && (rec = gw_vm_find(d, vm->name)) && rec->incoming) rec->policy_adopted = true;
    pthread_mutex_unlock(&d->lock);
    if (!code && req->backup_policy) gw_policy_adopt(d, vm->name, req->backup_policy);
    return code;
}

static int abort_incoming(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__AbortIncomingRequest *req = (const void *)msg;
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, req->vm);
    int code = GW_GRPC_OK;
    if (!rec) code = gw_grpc_call_error(call, GW_GRPC_NOT_FOUND, "no VM named %s", req->vm);
    else if (!rec->incoming) code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is not an incoming migration", req->vm);
    else if (!gw_incoming_job_is(rec, req->job_id))
        /* Only the migration's own source may abort it: another peer cannot kill an arrival. */
        code = gw_grpc_call_error(call, GW_GRPC_PERMISSION_DENIED, "VM %s arrives for another job", req->vm);
    else {
        gw_info("vm=%s job=%s: incoming migration aborted by the source", rec->name, req->job_id);
        if (rec->proc.pid) {
            /* The supervisor drops the record once the runner is reaped. Answer only then
             * (or after ABORT_WAIT_MS): the source publishes its job's end after this call,
             * and whoever sees that end must find this host clean. */
            gw_proc_signal(&rec->proc, SIGKILL);
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);   /* d->cond's clock */
            ts.tv_sec += ABORT_WAIT_MS / 1000;
            while ((rec = gw_vm_find(d, req->vm)) && rec->incoming &&
                   pthread_cond_timedwait(&d->cond, &d->lock, &ts) != ETIMEDOUT) {}
        } else if (!rec->busy) {
            gw_sup_drop_incoming(d, rec);                         /* only reserved */
        }
        Godwit__V1__AbortIncomingResponse resp = GODWIT__V1__ABORT_INCOMING_RESPONSE__INIT;
        gw_grpc_call_send(call, &resp.base);
    }
    pthread_mutex_unlock(&d->lock);
    return code;
}

int gw_service_register_peer(struct gw_daemon *d)
{
    int r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
        .path = "/godwit.v1.GodwitPeer/PrepareIncoming", .kind = GW_GRPC_UNARY,
        .request = &godwit__v1__prepare_incoming_request__descriptor, .handler = prepare_incoming, .arg = d,
        .flags = GW_GRPC_PEER});
    if (!r) r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
        .path = "/godwit.v1.GodwitPeer/AbortIncoming", .kind = GW_GRPC_UNARY,
        .request = &godwit__v1__abort_incoming_request__descriptor, .handler = abort_incoming, .arg = d,
        .flags = GW_GRPC_PEER});
    return r;
}

bool gw_incoming_job_is(const struct gw_vm_rec *rec, const char *job_id)
{
    return !rec->incoming_job[0] || (job_id && !strcmp(rec->incoming_job, job_id));
}
