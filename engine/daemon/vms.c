/* The VM table: records, their API form and their rows in the database. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <sys/stat.h>

#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/labels.h"
#include "engine/daemon/db.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/vm_config.h"

bool gw_vm_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > GW_VM_NAME_MAX || name[0] == '.' || name[0] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

const char *gw_vm_config_invalid(const char *name, uint64_t memory, uint32_t vcpus, const char *guest,
                                 const char *disk)
{
    if (!gw_vm_name_ok(name))
        return "VM name must be 1-63 characters of [A-Za-z0-9._-], not starting with . or -";
    if (strlen(guest) > GW_GUEST_SPEC_MAX) return "guest spec too long";
    for (const char *c = guest; *c; c++)
        if ((unsigned char)*c < 0x21 || (unsigned char)*c == 0x7f) return "guest spec must be printable, without spaces";
    if (disk[0] && ((disk[0] != '/' && !gw_blk_is_rbd(disk)) || strlen(disk) > GW_LIMIT_DISK_PATH_MAX))
        return "disk_path must be an absolute path or rbd:POOL/IMAGE, under 512 bytes";
    static __thread char why[256];   /* per thread: handlers run on several */
    if (gw_vm_config_check(memory ? memory : GW_DEFAULT_MEMORY, vcpus ? vcpus : GW_DEFAULT_VCPUS,
                           guest[0] ? guest : GW_DEFAULT_GUEST, why, sizeof why))
        return why;
    return NULL;
}

struct gw_vm_rec *gw_vm_find(struct gw_daemon *d, const char *name)
{
    for (struct gw_vm_rec *r = d->vms; r; r = r->next)
        if (!strcmp(r->name, name)) return r;
    return NULL;
}

struct gw_vm_rec *gw_vm_find_reserved(struct gw_daemon *d, const uint8_t token[32])
{
    struct gw_vm_rec *hit = NULL;
    for (struct gw_vm_rec *r = d->vms; r; r = r->next)
        if (r->reserved_until_ns && !r->proc.pid && !CRYPTO_memcmp(r->session_token, token, sizeof r->session_token))
            hit = r;
    return hit;
}

struct gw_vm_rec *gw_vm_find_resumable(struct gw_daemon *d, const uint8_t token[32])
{
    for (struct gw_vm_rec *r = d->vms; r; r = r->next)
        if (r->resume_route && r->proc.pid && !CRYPTO_memcmp(r->resume_token, token, sizeof r->resume_token)) return r;
    return NULL;
}

void gw_vm_dir(const struct gw_daemon *d, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", d->vms_dir, name);
}

int gw_vm_rec_new(struct gw_daemon *d, const char *name, struct gw_vm_rec **out)
{
    if (!gw_vm_name_ok(name)) return -EINVAL;
    struct gw_vm_rec *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    snprintf(r->name, sizeof r->name, "%s", name);
    char dir[1024];
    gw_vm_dir(d, name, dir, sizeof dir);
    if ((size_t)snprintf(r->control, sizeof r->control, "%s/control.sock", dir) >= sizeof r->control) {
        free(r);
        return -ENAMETOOLONG;   /* unix socket paths are limited to 107 bytes */
    }
    r->proc.pidfd = -1;
    r->exit_code = -1;
    r->state = GODWIT__V1__VM__STATE__DEFINED;
    *out = r;
    return 0;
}

void gw_vm_unlink(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    for (struct gw_vm_rec **p = &d->vms; *p; p = &(*p)->next)
        if (*p == rec) { *p = rec->next; return; }
}

void gw_vm_to_proto(const struct gw_daemon *d, const struct gw_vm_rec *r, Godwit__V1__Vm *vm,
                    Godwit__V1__RestartPolicy *rp, Godwit__V1__VmCounters *c)
{
    godwit__v1__vm__init(vm);
    godwit__v1__restart_policy__init(rp);
    godwit__v1__vm_counters__init(c);
    vm->name = (char *)r->name;
    vm->memory_bytes = r->memory_bytes;
    vm->vcpus = r->vcpus;
    vm->guest = (char *)r->guest;
    vm->disk_path = (char *)r->disk;
    vm->state = r->state;
    rp->kind = r->restart_kind;
    rp->max_restarts = r->max_restarts;
    rp->backoff_ms = r->backoff_ms;
    vm->restart_policy = rp;
    c->pages_written = r->pages_written;
    c->verify_errors = r->verify_errors;
    c->restarts = r->restarts;
    c->migrations = r->migrations;
    vm->counters = c;
    vm->host = (char *)d->cfg.hostname;
    vm->runner_pid = r->proc.pid;
    vm->created_unix_ms = r->created_ms;
    vm->started_unix_ms = r->started_ms;
    vm->error = (char *)r->error;
    vm->in_doubt_peer = (char *)r->in_doubt_peer;
    vm->in_doubt_job = (char *)r->in_doubt_job;
    vm->arriving = r->incoming;
    vm->anti_affinity = (char *)r->anti_affinity;
    vm->priority = r->priority;
    vm->origin_host = (char *)r->origin_host;
    vm->labels = (char *)r->labels;
    vm->kernel = (char *)r->boot.kernel;
    vm->initrd = (char *)r->boot.initrd;
    vm->cmdline = (char *)r->boot.cmdline;
    vm->net = (char *)r->boot.net;
    vm->mac = (char *)r->boot.mac;
}

int gw_vm_persist(struct gw_daemon *d, const struct gw_vm_rec *rec)
{
    Godwit__V1__Vm vm;
    Godwit__V1__RestartPolicy rp;
    Godwit__V1__VmCounters c;
    gw_vm_to_proto(d, rec, &vm, &rp, &c);
    int r = gw_db_put_vm(d->db, &vm);
    if (r) gw_error("vm=%s: cannot save its record: %s", rec->name, strerror(-r));
    return r;
}

static void load_one(void *arg, const Godwit__V1__Vm *vm)
{
    struct gw_daemon *d = arg;
    struct gw_vm_rec *r;
    if (gw_vm_rec_new(d, vm->name, &r)) { gw_warn("db: skipping VM record '%s'", vm->name); return; }
    r->memory_bytes = vm->memory_bytes;
    r->vcpus = vm->vcpus;
    snprintf(r->guest, sizeof r->guest, "%s", vm->guest);
    snprintf(r->disk, sizeof r->disk, "%s", vm->disk_path);
    r->state = vm->state;
    if (vm->restart_policy) {
        r->restart_kind = vm->restart_policy->kind;
        r->max_restarts = vm->restart_policy->max_restarts;
        r->backoff_ms = vm->restart_policy->backoff_ms;
    }
    if (vm->counters) {
        r->pages_written = vm->counters->pages_written;
        r->verify_errors = vm->counters->verify_errors;
        r->restarts = vm->counters->restarts;
        r->migrations = vm->counters->migrations;
    }
    r->created_ms = vm->created_unix_ms;
    r->started_ms = vm->started_unix_ms;
    snprintf(r->error, sizeof r->error, "%s", vm->error);
    snprintf(r->in_doubt_peer, sizeof r->in_doubt_peer, "%s", vm->in_doubt_peer);
    snprintf(r->in_doubt_job, sizeof r->in_doubt_job, "%s", vm->in_doubt_job);
    r->incoming = vm->arriving;   /* re-attach checks it against the runner */
    snprintf(r->anti_affinity, sizeof r->anti_affinity, "%s", vm->anti_affinity);
    snprintf(r->origin_host, sizeof r->origin_host, "%s", vm->origin_host);
    r->priority = vm->priority;
    if (gw_labels_canon_ok(vm->labels)) snprintf(r->labels, sizeof r->labels, "%s", vm->labels);
    else gw_warn("vm=%s: its stored labels are malformed: dropped", vm->name);
    /* Our own record, written by us after the same checks; copied within bounds. The files
     * and tap are checked again before a cold start (gw_vm_boot_recheck). */
    snprintf(r->boot.kernel, sizeof r->boot.kernel, "%s", vm->kernel);
    snprintf(r->boot.initrd, sizeof r->boot.initrd, "%s", vm->initrd);
    snprintf(r->boot.cmdline, sizeof r->boot.cmdline, "%s", vm->cmdline);
    snprintf(r->boot.net, sizeof r->boot.net, "%s", vm->net);
    snprintf(r->boot.mac, sizeof r->boot.mac, "%s", vm->mac);
    /* The recorded pid is only a claim: gw_sup_reattach checks it. */
    r->proc.pid = vm->runner_pid;
    r->next = d->vms;
    d->vms = r;
}

int gw_vm_load_all(struct gw_daemon *d)
{
    if (mkdir(d->vms_dir, 0700) && errno != EEXIST) return -errno;
    return gw_db_load_vms(d->db, load_one, d);
}

int gw_daemon_settle(struct gw_daemon *d, struct gw_grpc_call *call, uint64_t mark, int code)
{
    int r = gw_db_flush_since(d->db, mark);
    if (r && !code)
        code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "the change was not stored (a database write failed; the "
                                  "daemon's log says why): it would be lost when the daemon restarts");
    return code;
}

const struct gw_vm_rec *gw_vm_disk_owner(const struct gw_daemon *d, const char *disk)
{
    for (const struct gw_vm_rec *r = d->vms; r; r = r->next)
        if (r->disk[0] && !strcmp(r->disk, disk)) return r;
    return NULL;
}

const char *gw_restart_policy_refused(const Godwit__V1__RestartPolicy *rp, char *why, size_t whylen)
{
    if (rp && (rp->kind < 0 || rp->kind > GODWIT__V1__RESTART_POLICY__KIND__ALWAYS))
        snprintf(why, whylen, "restart_policy.kind %d is unknown", (int)rp->kind);
    else if (rp && rp->backoff_ms > GW_RESTART_BACKOFF_MS_MAX)
        snprintf(why, whylen, "restart_policy.backoff_ms must be at most %u", GW_RESTART_BACKOFF_MS_MAX);
    else
        return NULL;
    return why;
}
