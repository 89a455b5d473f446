/* gRPC handlers of godwit.v1.GodwitBackup (proto/godwit/v1/backup_api.proto): CreateBackup,
 * VerifyBackup and RestoreBackup make jobs (backup_jobs.c); ListBackups, GetBackup,
 * DeleteBackup and ListBackupTargets answer at once. Every field is checked before use: a
 * target is a name from the daemon's config, VM names and backup ids are checked against
 * the store's safe-name rule (they become object names, never paths). Errors carry an
 * ErrorInfo reason: UNKNOWN_TARGET, VM_MIGRATING, VM_BUSY, VM_NOT_RUNNING, BACKUP_NOT_FOUND,
 * STORE_UNAVAILABLE, VM_EXISTS; a restore's disk: IMAGE_EXISTS and the
 * image rules' reasons (config.h: RBD_DISK_REFUSED...). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"
#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/backup_sched.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "godwit/v1/backup_api.pb-c.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define BAD(call, ...) gw_grpc_call_error((call), GW_GRPC_INVALID_ARGUMENT, __VA_ARGS__)

/* The configured target named by a request, or an error sent (returns a gRPC code). */
static int target_of(struct gw_grpc_call *call, struct gw_daemon *d, const char *name,
                     const struct gw_backup_target_cfg **out)
{
    if (!name[0]) return BAD(call, "a backup target is required");
    if (strlen(name) > GW_CFG_TARGET_NAME_MAX) return BAD(call, "backup target names are at most %d bytes", GW_CFG_TARGET_NAME_MAX);
    *out = gw_config_backup_target(&d->cfg, name);
    if (!*out)
        return gw_grpc_call_error_reason(call, GW_GRPC_NOT_FOUND, "UNKNOWN_TARGET", "no backup target named %.63s "
                                         "in %s's config", name, d->cfg.hostname);
    return GW_GRPC_OK;
}

static int vm_name_check(struct gw_grpc_call *call, const char *name)
{
    if (!name[0]) return BAD(call, "a VM name is required");
    if (!gw_vm_name_ok(name)) return BAD(call, "VM names are 1-63 of [A-Za-z0-9._-], not starting with . or -");
    return GW_GRPC_OK;
}

/* id "" is allowed where it means "the newest" (allow_empty). */
static int id_check(struct gw_grpc_call *call, const char *id, bool allow_empty)
{
    if (!id[0]) return allow_empty ? GW_GRPC_OK : BAD(call, "a backup id is required");
    if (strlen(id) > GW_BKJOB_ID_MAX || !gw_store_name_ok(id))
        return BAD(call, "a backup id is 1-%u of [A-Za-z0-9._-]", GW_BKJOB_ID_MAX);
    return GW_GRPC_OK;
}

static int request_id_check(struct gw_grpc_call *call, const char *rid)
{
    return strlen(rid) > GW_REQUEST_ID_MAX ? BAD(call, "request_id longer than %d bytes", GW_REQUEST_ID_MAX) : GW_GRPC_OK;
}

/* Opens a target for a quick read (lock not held). A gRPC code. */
static int open_target(struct gw_grpc_call *call, const struct gw_backup_target_cfg *t, struct gw_backup_target *tg)
{
    Godwit__V1__StoreSpec spec;
    gw_bkjob_spec(t, &spec);
    char err[512];
    if (gw_backup_target_open(&spec, tg, err, sizeof err))
        return gw_grpc_call_error_reason(call, GW_GRPC_UNAVAILABLE, "STORE_UNAVAILABLE", "backup target %s: %s", t->name, err);
    return GW_GRPC_OK;
}

/* Sends {Job job = 1} (every job-making response has that shape). Lock held. */
static void send_job(struct gw_grpc_call *call, const struct gw_job *j, const ProtobufCMessageDescriptor *desc)
{
    Godwit__V1__Job pj;
    gw_job_to_proto(j, &pj);
    struct { ProtobufCMessage base; Godwit__V1__Job *job; } resp;
    protobuf_c_message_init(desc, &resp);
    resp.job = &pj;
    gw_grpc_call_send(call, &resp.base);
}

/* A job of kind that a request with request_id made before (lock held), or NULL. */
static struct gw_job *by_request(struct gw_daemon *d, int kind, const char *rid)
{
    if (!rid[0]) return NULL;
    for (struct gw_job *j = d->jobs; j; j = j->next)
        if (j->kind == kind && !strcmp(j->request_id, rid)) return j;
    return NULL;
}

/* Makes a job of kind for vm with its backup part (lock held). NULL with an error sent. */
#define GW_BKJOB_MAX_LIVE 16u   /* verify and restore jobs running or queued at once */

static struct gw_job *new_job(struct gw_grpc_call *call, struct gw_daemon *d, int kind, const char *vm,
                              const char *target, const char *rid, int *code)
{
    struct gw_job *j = NULL;
    if (kind == GODWIT__V1__JOB__KIND__VERIFY || kind == GODWIT__V1__JOB__KIND__RESTORE) {
        /* Each is a thread and a store connection until it ends: the API may not start them
         * without bound (backups have their slots; these had nothing). */
        unsigned live = 0;
        for (struct gw_job *o = d->jobs; o; o = o->next)
            live += (o->kind == GODWIT__V1__JOB__KIND__VERIFY || o->kind == GODWIT__V1__JOB__KIND__RESTORE) &&
                    !gw_job_final(o->state);
        if (live >= GW_BKJOB_MAX_LIVE) {
            *code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "%u verify and restore jobs run already; "
                                       "retry when one ends", live);
            return NULL;
        }
    }
    struct gw_bkjob *b = calloc(1, sizeof *b);
    if (!b || d->stopping || gw_job_new(d, kind, vm, &j)) {
        free(b);
        *code = gw_grpc_call_error(call, GW_GRPC_UNAVAILABLE, "cannot create a job now");
        return NULL;
    }
    j->bk = b;
    snprintf(b->target, sizeof b->target, "%s", target);
    snprintf(j->request_id, sizeof j->request_id, "%s", rid);
    return j;
}

/* Persists j as QUEUED and starts its thread (lock held). */
static void launch(struct gw_daemon *d, struct gw_job *j, const char *what)
{
    gw_info("job=%s vm=%s: %s (target %s)", j->id, j->vm, what, j->bk->target);
    gw_job_set_state(j, GODWIT__V1__JOB__STATE__QUEUED, "queued");   /* written before the reply */
    if (gw_bkjob_start(d, j)) {
        snprintf(j->error, sizeof j->error, "cannot start the job thread");
        gw_job_set_state(j, GODWIT__V1__JOB__STATE__FAILED, j->error);
    }
}

/* The checks and the job of a backup of vm to t (lock held): 0 with *out made and launched,
 * or a gRPC code with the ErrorInfo reason (NULL = none) and message. The API and the
 * scheduler (backup_sched.c) both start backups here. */
int gw_bkjob_backup(struct gw_daemon *d, const char *vm, const struct gw_backup_target_cfg *t, const char *parent,
                    const char *method, const char *rid, const struct gw_bk_throttle *thr, struct gw_job **out,
                    const char **reason, char *msg, size_t msglen)
{
    *reason = NULL;
    struct gw_vm_rec *rec = gw_vm_find(d, vm);
#define FAIL(c, why, ...) do { *reason = (why); snprintf(msg, msglen, __VA_ARGS__); return (c); } while (0)
    if (!rec) FAIL(GW_GRPC_NOT_FOUND, "VM_NOT_FOUND", "no VM named %s", vm);
    /* Owner and run state: a backup needs the VM running here, and nothing else on it. */
    if (rec->migrating_out || rec->incoming || rec->state == GODWIT__V1__VM__STATE__MIGRATING)
        FAIL(GW_GRPC_FAILED_PRECONDITION, "VM_MIGRATING", "VM %s is being migrated: back it up once the migration "
             "has ended", vm);
    if (rec->state == GODWIT__V1__VM__STATE__IN_DOUBT)
        FAIL(GW_GRPC_FAILED_PRECONDITION, "VM_IN_DOUBT", "VM %s: %s", vm, rec->error);
    if (rec->state != GODWIT__V1__VM__STATE__RUNNING || !rec->proc.pid || !rec->ready)
        FAIL(GW_GRPC_FAILED_PRECONDITION, "VM_NOT_RUNNING", "VM %s is not running here", vm);
    for (struct gw_job *o = d->jobs; o; o = o->next)
        if (!gw_job_final(o->state) && !strcmp(o->vm, vm) && o->kind != GODWIT__V1__JOB__KIND__VERIFY &&
            o->kind != GODWIT__V1__JOB__KIND__RESTORE)
            FAIL(GW_GRPC_FAILED_PRECONDITION, o->kind == GODWIT__V1__JOB__KIND__BACKUP ? "VM_BUSY" : "VM_MIGRATING",
                 "VM %s already has job %s", vm, o->id);
    if (rec->busy) FAIL(GW_GRPC_FAILED_PRECONDITION, "VM_BUSY", "VM %s is busy (another operation is under way)", vm);
    struct gw_job *j = NULL;
    struct gw_bkjob *b = calloc(1, sizeof *b);
    if (!b || d->stopping || gw_job_new(d, GODWIT__V1__JOB__KIND__BACKUP, vm, &j)) {
        free(b);
        FAIL(GW_GRPC_UNAVAILABLE, NULL, "cannot create a job now");
    }
#undef FAIL
    j->bk = b;
    snprintf(b->target, sizeof b->target, "%s", t->name);
    snprintf(j->request_id, sizeof j->request_id, "%s", rid);
    snprintf(b->parent, sizeof b->parent, "%s", parent);
    snprintf(b->method, sizeof b->method, "%s", method);
    b->thr = thr ? *thr : (struct gw_bk_throttle){.adaptive = -1};
    b->exit_seq = rec->exit_seq;
    rec->busy = true;   /* until the job thread ends: no stop, delete or migration meanwhile */
    launch(d, j, "backup queued");
    if (j->state == GODWIT__V1__JOB__STATE__FAILED) rec->busy = false;
    *out = j;
    return GW_GRPC_OK;
}

static int create_backup(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__CreateBackupRequest *req = (const void *)msg;
    const struct gw_backup_target_cfg *t;
    int code;
    if ((code = vm_name_check(call, req->vm)) || (code = target_of(call, d, req->target, &t)) ||
        (code = request_id_check(call, req->request_id)))
        return code;
    if (strcmp(req->parent, "none") && (code = id_check(call, req->parent, true))) return code;
    if (req->method[0] && strcmp(req->method, "wp") && strcmp(req->method, "dirty-log") && strcmp(req->method, "pause"))
        return BAD(call, "method is wp, dirty-log or pause");
    pthread_mutex_lock(&d->lock);
    struct gw_job *j = by_request(d, GODWIT__V1__JOB__KIND__BACKUP, req->request_id);
    const char *reason = NULL;
    char why[512];
    if (!j && (code = gw_bkjob_backup(d, req->vm, t, req->parent, req->method, req->request_id, NULL, &j, &reason, why,
                                      sizeof why)))
        code = reason ? gw_grpc_call_error_reason(call, code, reason, "%s", why) : gw_grpc_call_error(call, code, "%s", why);
    else
        send_job(call, j, &godwit__v1__create_backup_response__descriptor);
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

static int verify_backup(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__VerifyBackupRequest *req = (const void *)msg;
    const struct gw_backup_target_cfg *t;
    int code;
    if ((code = vm_name_check(call, req->vm)) || (code = target_of(call, d, req->target, &t)) ||
        (code = id_check(call, req->id, true)) || (code = request_id_check(call, req->request_id)))
        return code;
    pthread_mutex_lock(&d->lock);
    struct gw_job *j = by_request(d, GODWIT__V1__JOB__KIND__VERIFY, req->request_id);
    /* One verify of a VM's backups in a target at a time: each reads every chunk it checks,
     * on a thread and a store connection of its own, and the VM counts as busy meanwhile. */
    for (struct gw_job *o = j ? NULL : d->jobs; o; o = o->next)
        if (o->kind == GODWIT__V1__JOB__KIND__VERIFY && !gw_job_final(o->state) && o->bk &&
            !strcmp(o->vm, req->vm) && !strcmp(o->bk->target, t->name)) {
            code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "VERIFY_RUNNING", "job %s already "
                                             "verifies VM %s's backups in %s", o->id, req->vm, t->name);
            pthread_mutex_unlock(&d->lock);
            return code;
        }
    if (!j && (j = new_job(call, d, GODWIT__V1__JOB__KIND__VERIFY, req->vm, t->name, req->request_id, &code))) {
        snprintf(j->bk->backup_id, sizeof j->bk->backup_id, "%s", req->id);
        launch(d, j, "verify queued");
    }
    if (j) send_job(call, j, &godwit__v1__verify_backup_response__descriptor);
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

static int restore_backup(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__RestoreBackupRequest *req = (const void *)msg;
    const struct gw_backup_target_cfg *t;
    int code;
    const char *name = req->name[0] ? req->name : req->vm;
    if ((code = vm_name_check(call, req->vm)) || (code = target_of(call, d, req->target, &t)) ||
        (code = id_check(call, req->id, true)) || (code = request_id_check(call, req->request_id)) ||
        (code = vm_name_check(call, name)))
        return code;
    const Godwit__V1__RestartPolicy *rp = req->restart_policy;
    char rwhy[96];
    const char *why_rp = gw_restart_policy_refused(rp, rwhy, sizeof rwhy);
    if (why_rp) return BAD(call, "%s", why_rp);
    if (req->disk_pool[0] && (strlen(req->disk_pool) > GW_VM_NAME_MAX || !gw_store_name_ok(req->disk_pool)))
        return BAD(call, "disk_pool is a pool name of this host's rbd_pools: 1-%d of [A-Za-z0-9._-]", GW_VM_NAME_MAX);
    pthread_mutex_lock(&d->lock);
    struct gw_job *j = by_request(d, GODWIT__V1__JOB__KIND__RESTORE, req->request_id);
    if (j) { send_job(call, j, &godwit__v1__restore_backup_response__descriptor); goto out; }
    if (!gw_cluster_accepts_vms(d)) {
        /* A restore makes a VM here, as CreateVm does: not on a host being drained, which the
         * evacuation's plan would not know of. */
        code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "HOST_NOT_ACTIVE", "%s is draining or in "
                                         "maintenance: it takes no new VMs", d->cfg.hostname);
        goto out;
    }
    bool taken = gw_vm_find(d, name) != NULL;
    for (struct gw_job *o = d->jobs; o && !taken; o = o->next)
        taken = o->kind == GODWIT__V1__JOB__KIND__RESTORE && !gw_job_final(o->state) && o->bk && !strcmp(o->bk->new_vm, name);
    if (taken) {
        code = gw_grpc_call_error_reason(call, GW_GRPC_ALREADY_EXISTS, "VM_EXISTS", "a VM named %s already exists here "
                                         "(restore it under a new name: a clone)", name);
        goto out;
    }
    /* The image the restore would make (if the backup has a disk): refused now when it exists
     * or may not be made here (after the retry lookup: a retried request finds its job, not
     * the image that job made). A host without image_roots fails the job only if it needs one. */
    char disk[sizeof ((struct gw_bkjob *)0)->disk], why[512];
    const char *reason = NULL;
    if ((code = gw_bkjob_restore_disk_check(d, name, req->disk_pool, disk, sizeof disk, &reason, why,
                                            sizeof why))) {
        if (strcmp(reason, "NO_IMAGE_ROOTS") && strcmp(reason, "IMAGE_ROOT_MISSING")) {
            code = gw_grpc_call_error_reason(call, code, reason, "%s", why);
            goto out;
        }
        code = GW_GRPC_OK;
    }
    if (!(j = new_job(call, d, GODWIT__V1__JOB__KIND__RESTORE, req->vm, t->name, req->request_id, &code))) goto out;
    snprintf(j->bk->backup_id, sizeof j->bk->backup_id, "%s", req->id);
    snprintf(j->bk->new_vm, sizeof j->bk->new_vm, "%s", name);
    if (rp) { j->bk->restart_kind = rp->kind; j->bk->max_restarts = rp->max_restarts; j->bk->backoff_ms = rp->backoff_ms; }
    j->bk->instant = req->instant;
    snprintf(j->bk->disk_pool, sizeof j->bk->disk_pool, "%s", req->disk_pool);
    launch(d, j, req->instant ? "instant restore queued" : "restore queued");
    send_job(call, j, &godwit__v1__restore_backup_response__descriptor);
out:
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

/* A Backup message from a manifest (strings point into m, digest into hex). */
static void backup_of(const Godwit__V1__BackupManifest *m, const char *target, char hex[33], Godwit__V1__Backup *b)
{
    godwit__v1__backup__init(b);
    b->id = m->id;
    b->vm = m->vm_name;
    b->target = (char *)target;
    b->parent = m->parent;
    b->created_unix_ms = m->created_unix_ns / 1000000;
    b->memory_bytes = m->memory ? m->memory->size : 0;
    b->disk_bytes = m->disk ? m->disk->size : 0;
    b->chunks = (m->memory ? m->memory->n_chunks : 0) + (m->disk ? m->disk->n_chunks : 0);
    if (m->state && m->state->config) { b->vcpus = m->state->config->vcpus; b->guest = m->state->config->guest_spec; }
    b->new_bytes = m->new_bytes;
    b->reused_chunks = m->reused_chunks;
    b->pause_us = m->pause_ns / 1000;
    b->method = m->method;
    b->encrypted = m->encrypted;
    gw_hex_encode(m->memory_digest.data, m->memory_digest.len < 16 ? m->memory_digest.len : 16, hex);
    b->memory_digest = hex;
}

/* The strings of a Backup that point into its manifest, copied so the manifest can go, and
 * its digest in hex. */
struct kept {
    char id[GW_BACKUP_ID_BUF], vm[GW_VM_NAME_MAX + 1], parent[GW_BACKUP_ID_BUF], guest[GW_LIMIT_GUEST_SPEC_MAX + 1];
    char method[32], digest[33];
};

static void keep(Godwit__V1__Backup *b, struct kept *k)
{
    snprintf(k->id, sizeof k->id, "%s", b->id);
    snprintf(k->vm, sizeof k->vm, "%s", b->vm);
    snprintf(k->parent, sizeof k->parent, "%s", b->parent);
    snprintf(k->guest, sizeof k->guest, "%s", b->guest ? b->guest : "");
    snprintf(k->method, sizeof k->method, "%s", b->method);
    b->id = k->id;
    b->vm = k->vm;
    b->parent = k->parent;
    b->guest = k->guest;
    b->method = k->method;
}

static int list_backups(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__ListBackupsRequest *req = (const void *)msg;
    const struct gw_backup_target_cfg *t;
    int code;
    if ((code = vm_name_check(call, req->vm)) || (code = target_of(call, d, req->target, &t)) ||
        (code = id_check(call, req->page_token, true)))
        return code;
    struct gw_backup_target tg;
    if ((code = open_target(call, t, &tg))) return code;
    char (*ids)[GW_BACKUP_ID_BUF] = NULL;
    size_t n = 0, first = 0;
    if (gw_backup_list(&tg, req->vm, &ids, &n)) {
        code = gw_grpc_call_error_reason(call, GW_GRPC_UNAVAILABLE, "STORE_UNAVAILABLE", "backup target %s: %s", t->name,
                                         gw_store_error(tg.store));
        goto out;
    }
    /* Pages: the token is the last id of the previous page (ids sort by time). */
    if (req->page_token[0])
        while (first < n && strcmp(ids[first], req->page_token) <= 0) first++;
    size_t count = n - first;
    if (req->page_size && req->page_size < count) count = req->page_size;
    Godwit__V1__Backup *bs = calloc(count + 1, sizeof *bs);
    Godwit__V1__Backup **ptrs = calloc(count + 1, sizeof *ptrs);
    struct kept *kp = calloc(count + 1, sizeof *kp);
    char (*errs)[256] = calloc(count + 1, 256);
    if (!bs || !ptrs || !kp || !errs) {
        code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        for (size_t i = 0; i < count; i++) {
            const char *id = ids[first + i];
            Godwit__V1__BackupManifest *m = NULL;
            if (gw_manifest_load(tg.store, &tg.keys, req->vm, id, &m, errs[i], sizeof errs[0])) {
                godwit__v1__backup__init(&bs[i]);
                bs[i].id = (char *)id;
                bs[i].vm = req->vm;
                bs[i].target = (char *)t->name;
                bs[i].error = errs[i];
            } else {
                /* A manifest lists every chunk (a 1 TiB disk: a million names): keep what the
                 * answer shows and let the rest go now, not after the last one is read. */
                backup_of(m, t->name, kp[i].digest, &bs[i]);
                keep(&bs[i], &kp[i]);
                godwit__v1__backup_manifest__free_unpacked(m, NULL);
            }
            ptrs[i] = &bs[i];
        }
        Godwit__V1__ListBackupsResponse resp = GODWIT__V1__LIST_BACKUPS_RESPONSE__INIT;
        resp.n_backups = count;
        resp.backups = ptrs;
        resp.next_page_token = first + count < n && count ? ids[first + count - 1] : "";
        gw_grpc_call_send(call, &resp.base);
    }
    free(bs);
    free(ptrs);
    free(kp);
    free(errs);
out:
    free(ids);
    gw_backup_target_close(&tg);
    return code;
}

static int get_backup(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__GetBackupRequest *req = (const void *)msg;
    const struct gw_backup_target_cfg *t;
    int code;
    if ((code = vm_name_check(call, req->vm)) || (code = target_of(call, d, req->target, &t)) ||
        (code = id_check(call, req->id, true)))
        return code;
    struct gw_backup_target tg;
    if ((code = open_target(call, t, &tg))) return code;
    char id[GW_BACKUP_ID_BUF], err[512], hex[33];
    snprintf(id, sizeof id, "%s", req->id);
    Godwit__V1__BackupManifest *m = NULL;
    int r = id[0] ? 0 : gw_backup_latest(&tg, req->vm, id);
    if (r == -ENOENT)
        code = gw_grpc_call_error_reason(call, GW_GRPC_NOT_FOUND, "BACKUP_NOT_FOUND", "VM %s has no backup in target %s",
                                         req->vm, t->name);
    else if (r)
        code = gw_grpc_call_error_reason(call, GW_GRPC_UNAVAILABLE, "STORE_UNAVAILABLE", "backup target %s: %s", t->name,
                                         gw_store_error(tg.store));
    else if ((r = gw_manifest_load(tg.store, &tg.keys, req->vm, id, &m, err, sizeof err)))
        code = r == -ENOENT ? gw_grpc_call_error_reason(call, GW_GRPC_NOT_FOUND, "BACKUP_NOT_FOUND", "no backup %s of VM "
                                                        "%s in target %s", id, req->vm, t->name)
                            : gw_grpc_call_error_reason(call, GW_GRPC_DATA_LOSS, "BACKUP_CORRUPT", "backup %s: %s", id, err);
    else {
        Godwit__V1__Backup b;
        backup_of(m, t->name, hex, &b);
        Godwit__V1__GetBackupResponse resp = GODWIT__V1__GET_BACKUP_RESPONSE__INIT;
        resp.backup = &b;
        gw_grpc_call_send(call, &resp.base);
    }
    if (m) godwit__v1__backup_manifest__free_unpacked(m, NULL);
    gw_backup_target_close(&tg);
    return code;
}

static int delete_backup(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__DeleteBackupRequest *req = (const void *)msg;
    const struct gw_backup_target_cfg *t;
    int code;
    if ((code = vm_name_check(call, req->vm)) || (code = target_of(call, d, req->target, &t)) ||
        (code = id_check(call, req->id, false)))
        return code;
    /* A restore or verify reading it now would fail half-way: refuse while one runs. */
    pthread_mutex_lock(&d->lock);
    for (struct gw_job *o = d->jobs; o && !code; o = o->next)
        if (o->bk && !gw_job_final(o->state) && o->kind != GODWIT__V1__JOB__KIND__BACKUP && !strcmp(o->vm, req->vm) &&
            !strcmp(o->bk->target, t->name))
            code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "BACKUP_IN_USE", "job %s reads the backups "
                                             "of VM %s now", o->id, req->vm);
    pthread_mutex_unlock(&d->lock);
    if (code) return code;
    struct gw_backup_target tg;
    if ((code = open_target(call, t, &tg))) return code;
    char err[512];
    int r = gw_backup_delete(&tg, req->vm, req->id, err, sizeof err);
    if (r == -ENOENT)
        code = gw_grpc_call_error_reason(call, GW_GRPC_NOT_FOUND, "BACKUP_NOT_FOUND", "%s", err);
    else if (r)
        code = gw_grpc_call_error_reason(call, GW_GRPC_UNAVAILABLE, "STORE_UNAVAILABLE", "%s", err);
    else {
        gw_info("vm=%s: backup %s deleted from target %s", req->vm, req->id, t->name);
        Godwit__V1__DeleteBackupResponse resp = GODWIT__V1__DELETE_BACKUP_RESPONSE__INIT;
        gw_grpc_call_send(call, &resp.base);
    }
    gw_backup_target_close(&tg);
    return code;
}

static int list_targets(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    (void)msg;
    Godwit__V1__BackupTarget ts[GW_CFG_MAX_BACKUP_TARGETS], *ptrs[GW_CFG_MAX_BACKUP_TARGETS];
    unsigned n = d->cfg.n_backup_targets;
    for (unsigned i = 0; i < n; i++) {
        const struct gw_backup_target_cfg *t = &d->cfg.backup_targets[i];
        godwit__v1__backup_target__init(&ts[i]);
        ts[i].name = (char *)t->name;
        ts[i].kind = !strncmp(t->store, "rados:", 6) ? "rados" : "dir";
        ts[i].encrypted = t->key_file[0] != 0;
        ptrs[i] = &ts[i];
    }
    Godwit__V1__ListBackupTargetsResponse resp = GODWIT__V1__LIST_BACKUP_TARGETS_RESPONSE__INIT;
    resp.n_targets = n;
    resp.targets = ptrs;
    gw_grpc_call_send(call, &resp.base);
    return GW_GRPC_OK;
}

int gw_service_register_backup(struct gw_daemon *d)
{
    static const struct {
        const char *path; const ProtobufCMessageDescriptor *desc; gw_grpc_handler_fn fn;
    } m[] = {
        {"/godwit.v1.GodwitBackup/CreateBackup", &godwit__v1__create_backup_request__descriptor, create_backup},
        {"/godwit.v1.GodwitBackup/ListBackups", &godwit__v1__list_backups_request__descriptor, list_backups},
        {"/godwit.v1.GodwitBackup/GetBackup", &godwit__v1__get_backup_request__descriptor, get_backup},
        {"/godwit.v1.GodwitBackup/VerifyBackup", &godwit__v1__verify_backup_request__descriptor, verify_backup},
        {"/godwit.v1.GodwitBackup/RestoreBackup", &godwit__v1__restore_backup_request__descriptor, restore_backup},
        {"/godwit.v1.GodwitBackup/DeleteBackup", &godwit__v1__delete_backup_request__descriptor, delete_backup},
        {"/godwit.v1.GodwitBackup/ListBackupTargets", &godwit__v1__list_backup_targets_request__descriptor, list_targets},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        int r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
            .path = m[i].path, .kind = GW_GRPC_UNARY, .request = m[i].desc, .handler = m[i].fn, .arg = d});
        if (r) return r;
    }
    return gw_service_register_policy(d);
}
