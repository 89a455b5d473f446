/* gRPC handlers of godwit.v1.Godwit for VMs and the host: CreateVm, StartVm, StopVm,
 * DeleteVm, GetVm, ListVms, GetHost. Status codes follow gRPC's conventions: a missing VM is
 * NOT_FOUND, a malformed request INVALID_ARGUMENT, a name taken ALREADY_EXISTS, an operation
 * the VM's state does not allow FAILED_PRECONDITION. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "engine/api/grpc_server.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/backup_sched.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/labels.h"
#include "engine/daemon/db.h"
#include "engine/vm/blk_backend.h"

#define GODWIT_VERSION "0.1.0"
#define START_TIMEOUT_MS 15000

/* Sends {Vm vm = 1} responses: every VM response of the API has that one field. */
static int send_vm(struct gw_grpc_call *call, struct gw_daemon *d, const struct gw_vm_rec *rec,
                   const ProtobufCMessageDescriptor *desc)
{
    Godwit__V1__Vm vm;
    Godwit__V1__RestartPolicy rp;
    Godwit__V1__VmCounters c;
    gw_vm_to_proto(d, rec, &vm, &rp, &c);
    /* CreateVmResponse, StartVmResponse, StopVmResponse and GetVmResponse share this layout. */
    struct { ProtobufCMessage base; Godwit__V1__Vm *vm; } resp;
    protobuf_c_message_init(desc, &resp);
    resp.vm = &vm;
    gw_grpc_call_send(call, &resp.base);
    return GW_GRPC_OK;
}

static int check_create(struct gw_grpc_call *call, struct gw_daemon *d, const Godwit__V1__CreateVmRequest *req,
                        struct gw_vm_boot *boot)
{
    const Godwit__V1__BootSpec *b = req->boot;
    const char *kernel = b && b->kernel ? b->kernel : "";
    const char *guest = kernel[0] && !req->guest[0] ? "linux" : req->guest;
    const char *why = gw_vm_config_invalid(req->name, req->memory_bytes, req->vcpus, guest, req->disk_path);
    if (why) return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "%s", why);
    const char *reason;
    char msg[700];
    int code = gw_vm_boot_check(&d->cfg, req->name, req->guest, kernel, b && b->initrd ? b->initrd : "",
                                b && b->cmdline ? b->cmdline : "", req->net ? req->net : "", boot, &reason, msg,
                                sizeof msg);
    if (code) return gw_grpc_call_error_reason(call, code, reason, "%s", msg);
    if ((why = gw_restart_policy_refused(req->restart_policy, msg, sizeof msg)))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "%s", why);
    /* A VM larger than the host's RAM could never run here: say so now, not at StartVm. */
    struct sysinfo si;
    uint64_t mem = req->memory_bytes ? req->memory_bytes : GW_DEFAULT_MEMORY;
    if (!sysinfo(&si) && mem > (uint64_t)si.totalram * si.mem_unit)
        return gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "memory_bytes %llu MiB exceeds the host's %llu MiB of RAM",
                                  (unsigned long long)(mem >> 20),
                                  (unsigned long long)((uint64_t)si.totalram * si.mem_unit >> 20));
    if (req->anti_affinity[0] && !gw_cluster_name_ok(req->anti_affinity))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "anti_affinity must be 1-63 characters of [A-Za-z0-9._-]");
    char labels[GW_LIMIT_LABELS_BUF], lwhy[200];
    if (gw_labels_canon(req->labels, req->n_labels, labels, sizeof labels, lwhy, sizeof lwhy))
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "%s", lwhy);
    return GW_GRPC_OK;
}

/* Starts rec's runner and waits until it answers (lock held). Returns a gRPC code. */
static int start_locked(struct gw_grpc_call *call, struct gw_daemon *d, struct gw_vm_rec *rec)
{
    char err[256];
    rec->busy = true;
    rec->stop_requested = false;
    int code = GW_GRPC_OK;
    int r = gw_sup_spawn(d, rec, err, sizeof err);
    if (r) {
        rec->state = GODWIT__V1__VM__STATE__CRASHED;
        snprintf(rec->error, sizeof rec->error, "%s", err);
        gw_vm_persist(d, rec);
        /* -EPERM: its kernel, initrd or tap is no longer allowed here (vm_boot.c) */
        code = gw_grpc_call_error(call, r == -EPERM ? GW_GRPC_FAILED_PRECONDITION : GW_GRPC_INTERNAL, "VM %s: %s",
                                  rec->name, err);
    } else {
        r = gw_sup_wait_ready(d, rec, START_TIMEOUT_MS);
        if (r == -ECHILD)
            code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s: %s", rec->name, rec->error);
        else if (r) {
            gw_sup_stop(d, rec, true, 2000);
            code = gw_grpc_call_error(call, GW_GRPC_DEADLINE_EXCEEDED, "VM %s: runner did not answer within %d ms",
                                      rec->name, START_TIMEOUT_MS);
        } else {
            gw_info("vm=%s: started", rec->name);
        }
    }
    rec->busy = false;
    pthread_cond_broadcast(&d->cond);
    return code;
}

static void clear_old_logs(struct gw_daemon *d, const char *name);

static int create_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__CreateVmRequest *req = (const void *)msg;
    struct gw_vm_boot boot;
    int code = check_create(call, d, req, &boot);
    if (code) return code;
    /* A disk is opened read-write by a runner running as root: a file disk must be a canonical
     * path inside image_roots (the rule kernels, initrds and incoming disks follow), an RBD disk
     * names its pool only (options, files to open, come from this host's config). Before stop
     * 29 a file disk was taken from anywhere: a caller could give a VM /dev/sda or /etc. */
    const char *reason = NULL;
    const char *why = req->disk_path[0] ? gw_config_image_refused(&d->cfg, req->disk_path, "disk", &reason) : NULL;
    if (why) return gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, reason, "disk %s: %s", req->disk_path, why);
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec;
    if (!gw_cluster_accepts_vms(d)) {
        code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "HOST_NOT_ACTIVE", "%s is draining or in "
                                         "maintenance: it takes no new VMs", d->cfg.hostname);
        goto out;
    }
    if (gw_vm_find(d, req->name)) {
        code = gw_grpc_call_error(call, GW_GRPC_ALREADY_EXISTS, "a VM named %s already exists", req->name);
        goto out;
    }
    const struct gw_vm_rec *owner = req->disk_path[0] ? gw_vm_disk_owner(d, req->disk_path) : NULL;
    if (owner) {   /* one disk, one VM: two would take turns writing it */
        code = gw_grpc_call_error_reason(call, GW_GRPC_FAILED_PRECONDITION, "DISK_IN_USE", "disk %s belongs to VM %s",
                                         req->disk_path, owner->name);
        goto out;
    }
    int r = gw_vm_rec_new(d, req->name, &rec);
    if (r) {
        code = gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "VM name %s: %s", req->name, strerror(-r));
        goto out;
    }
    rec->memory_bytes = req->memory_bytes ? req->memory_bytes : GW_DEFAULT_MEMORY;
    rec->vcpus = req->vcpus ? req->vcpus : GW_DEFAULT_VCPUS;
    snprintf(rec->guest, sizeof rec->guest, "%s", boot.kernel[0] ? "linux" : req->guest[0] ? req->guest : GW_DEFAULT_GUEST);
    snprintf(rec->disk, sizeof rec->disk, "%s", req->disk_path);
    rec->boot = boot;
    if (req->restart_policy) {
        rec->restart_kind = req->restart_policy->kind;
        rec->max_restarts = req->restart_policy->max_restarts;
        rec->backoff_ms = req->restart_policy->backoff_ms;
    }
    rec->created_ms = gw_unix_ms();
    snprintf(rec->anti_affinity, sizeof rec->anti_affinity, "%s", req->anti_affinity);
    rec->priority = req->priority;
    char lerr[200];   /* checked above */
    gw_labels_canon(req->labels, req->n_labels, rec->labels, sizeof rec->labels, lerr, sizeof lerr);
    if (gw_vm_persist(d, rec)) {
        free(rec);
        code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "cannot store the VM definition");
        goto out;
    }
    clear_old_logs(d, rec->name);
    rec->next = d->vms;
    d->vms = rec;
    gw_info("vm=%s: defined (%llu MiB, %u vCPU, guest %s%s%s%s%s)", rec->name,
            (unsigned long long)(rec->memory_bytes >> 20), rec->vcpus, rec->guest, boot.kernel[0] ? ", kernel " : "",
            boot.kernel, boot.net[0] ? ", net " : "", boot.net);
    if (req->start) code = start_locked(call, d, rec);
    if (!code) send_vm(call, d, rec, &godwit__v1__create_vm_response__descriptor);
out:
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

/* Looks name up (lock held); NOT_FOUND / FAILED_PRECONDITION when missing or busy. */
static int lookup(struct gw_grpc_call *call, struct gw_daemon *d, const char *name, bool idle,
                  struct gw_vm_rec **out)
{
    *out = NULL;
    if (!name[0]) return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "a VM name is required");
    *out = gw_vm_find(d, name);
    if (!*out) return gw_grpc_call_error(call, GW_GRPC_NOT_FOUND, "no VM named %s", name);
    if (idle && (*out)->state == GODWIT__V1__VM__STATE__IN_DOUBT)
        return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s: %s", name, (*out)->error);
    if (idle && ((*out)->busy || (*out)->incoming))
        return gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is busy (%s)", name,
                                  (*out)->migrating_out ? "migrating" : (*out)->incoming ? "arriving"
                                                                                         : "another operation is under way");
    return GW_GRPC_OK;
}

static int start_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__StartVmRequest *req = (const void *)msg;
    struct gw_vm_rec *rec;
    pthread_mutex_lock(&d->lock);
    int code = lookup(call, d, req->name, true, &rec);
    if (!code && rec->proc.pid)
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is already running", req->name);
    char record[1200];
    if (!code) gw_handover_path(d, rec->name, record, sizeof record);
    if (!code && !access(record, F_OK))
        /* Its last runner handed it to another host (or left it in doubt): a start here
         * would make a second copy. */
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s was handed over to another host "
                                  "(record %s); it does not run here", req->name, record);
    if (!code) {
        rec->restart_at_ns = 0;
        code = start_locked(call, d, rec);
    }
    if (!code) send_vm(call, d, rec, &godwit__v1__start_vm_response__descriptor);
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

static int stop_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__StopVmRequest *req = (const void *)msg;
    struct gw_vm_rec *rec;
    pthread_mutex_lock(&d->lock);
    int code = lookup(call, d, req->name, true, &rec);
    if (code) goto out;
    if (!rec->proc.pid) {
        if (!rec->restart_at_ns) {
            code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is not running", req->name);
            goto out;
        }
        rec->restart_at_ns = 0;   /* a crashed VM waiting for its restart: stop means stay down */
        rec->state = GODWIT__V1__VM__STATE__STOPPED;
        gw_vm_persist(d, rec);
    } else {
        uint32_t t = req->timeout_ms ? req->timeout_ms : 10000;
        if (t > 300000) t = 300000;
        rec->busy = true;
        int r = gw_sup_stop(d, rec, req->force, (int)t);
        rec->busy = false;
        pthread_cond_broadcast(&d->cond);
        if (r) {
            code = gw_grpc_call_error(call, GW_GRPC_DEADLINE_EXCEEDED, "VM %s: runner %d did not exit", req->name,
                                      rec->proc.pid);
            goto out;
        }
        gw_info("vm=%s: stopped%s", rec->name, req->force ? " (forced)" : "");
    }
    send_vm(call, d, rec, &godwit__v1__stop_vm_response__descriptor);
out:
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

/* Removes the files a VM left in the state directory. */
/* What a VM leaves in its directory: its history (logs, the hand-over record) and what its
 * runner held while it ran (sockets, tokens). */
static const char *const vm_history[] = {"runner.out", "runner.log", "console.log", "handover.pb"};
static const char *const vm_runtime[] = {"control.sock", "resume.sock", "resume.token", "incoming.token"};

static void unlink_in_vm_dir(struct gw_daemon *d, const char *name, const char *const *files, size_t n)
{
    char dir[1024], path[1100];
    gw_vm_dir(d, name, dir, sizeof dir);
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
}

/* A fresh definition's directory holds no one else's history: a VM of the same name that left
 * (migrated away, forgotten) kept its directory, and its console would read as this one's, its
 * record make this one "handed over" (never started). */
static void clear_old_logs(struct gw_daemon *d, const char *name)
{
    unlink_in_vm_dir(d, name, vm_history, GW_ARRAY_SIZE(vm_history));
}

static void remove_vm_dir(struct gw_daemon *d, const char *name)
{
    unlink_in_vm_dir(d, name, vm_history, GW_ARRAY_SIZE(vm_history));
    unlink_in_vm_dir(d, name, vm_runtime, GW_ARRAY_SIZE(vm_runtime));
    char dir[1024];
    gw_vm_dir(d, name, dir, sizeof dir);
    rmdir(dir);
}

static int delete_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    uint64_t mark = gw_db_mark(d->db);   /* the writes this call queues come after it */
    const Godwit__V1__DeleteVmRequest *req = (const void *)msg;
    struct gw_vm_rec *rec;
    pthread_mutex_lock(&d->lock);
    int code = lookup(call, d, req->name, true, &rec);
    if (code) goto out;
    if (rec->proc.pid && !req->force) {
        code = gw_grpc_call_error(call, GW_GRPC_FAILED_PRECONDITION, "VM %s is running: stop it first or force",
                                  req->name);
        goto out;
    }
    if (rec->proc.pid) {
        rec->busy = true;
        int r = gw_sup_stop(d, rec, true, 5000);
        rec->busy = false;
        pthread_cond_broadcast(&d->cond);
        if (r) {
            code = gw_grpc_call_error(call, GW_GRPC_DEADLINE_EXCEEDED, "VM %s: runner did not exit", req->name);
            goto out;
        }
    }
    if (gw_db_delete_vm(d->db, rec->name)) {
        code = gw_grpc_call_error(call, GW_GRPC_INTERNAL, "cannot delete the VM's record");
        goto out;
    }
    gw_vm_unlink(d, rec);
    remove_vm_dir(d, rec->name);
    gw_policy_forget_runs(d, rec->name);   /* its own policy stays: it names the VM, not this host */
    gw_info("vm=%s: deleted", rec->name);
    free(rec);
    Godwit__V1__DeleteVmResponse resp = GODWIT__V1__DELETE_VM_RESPONSE__INIT;
    gw_grpc_call_send(call, &resp.base);
out:
    pthread_mutex_unlock(&d->lock);
    return gw_daemon_settle(d, call, mark, code);   /* answer once the change is durable */
}

static int get_vm(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__GetVmRequest *req = (const void *)msg;
    struct gw_vm_rec *rec;
    pthread_mutex_lock(&d->lock);
    int code = lookup(call, d, req->name, false, &rec);
    if (!code) send_vm(call, d, rec, &godwit__v1__get_vm_response__descriptor);
    pthread_mutex_unlock(&d->lock);
    return code;
}

/* The console log's last bytes. Runs on a worker: the file is read outside the lock, opened
 * O_NOFOLLOW in the VM's own directory (a name checked by lookup, never a path from the
 * request). */
static int get_vm_console(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__GetVmConsoleRequest *req = (const void *)msg;
    if (req->max_bytes > GW_LIMIT_CONSOLE_TAIL_MAX)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "max_bytes must be at most %u", GW_LIMIT_CONSOLE_TAIL_MAX);
    size_t want = req->max_bytes ? req->max_bytes : GW_DEFAULT_CONSOLE_TAIL;
    struct gw_vm_rec *rec;
    char path[1100];
    pthread_mutex_lock(&d->lock);
    int code = lookup(call, d, req->name, false, &rec);
    if (!code) {
        gw_vm_dir(d, rec->name, path, sizeof path);
        strncat(path, "/console.log", sizeof path - strlen(path) - 1);
    }
    pthread_mutex_unlock(&d->lock);
    if (code) return code;
    Godwit__V1__GetVmConsoleResponse resp = GODWIT__V1__GET_VM_CONSOLE_RESPONSE__INIT;
    uint8_t *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd >= 0 && !fstat(fd, &st) && S_ISREG(st.st_mode)) {
        size_t n = (uint64_t)st.st_size < want ? (size_t)st.st_size : want;
        buf = malloc(n ? n : 1);
        ssize_t got = buf ? pread(fd, buf, n, st.st_size - (off_t)n) : -1;
        if (got < 0) {
            close(fd);
            free(buf);
            return gw_grpc_call_error(call, GW_GRPC_INTERNAL, "cannot read the console of %s", req->name);
        }
        resp.data.data = buf;
        resp.data.len = (size_t)got;
        resp.size = (uint64_t)st.st_size;
    }
    if (fd >= 0) close(fd);
    gw_grpc_call_send(call, &resp.base);
    free(buf);
    return GW_GRPC_OK;
}

/* The VMs (filtered by state) as messages pointing into the records (lock held). */
struct vm_list {
    size_t n;
    Godwit__V1__Vm **ptrs;
    Godwit__V1__Vm *vms;
    Godwit__V1__RestartPolicy *rps;
    Godwit__V1__VmCounters *cs;
};

static int by_name(const void *a, const void *b)
{
    return strcmp((*(Godwit__V1__Vm *const *)a)->name, (*(Godwit__V1__Vm *const *)b)->name);
}

/* Sorted by name: listings read the same whatever order the VMs came in. */
static int vm_list_build(struct gw_daemon *d, int state, struct vm_list *l)
{
    size_t n = 0;
    for (struct gw_vm_rec *r = d->vms; r; r = r->next) n++;
    *l = (struct vm_list){0};
    l->ptrs = calloc(n + 1, sizeof *l->ptrs);
    l->vms = calloc(n + 1, sizeof *l->vms);
    l->rps = calloc(n + 1, sizeof *l->rps);
    l->cs = calloc(n + 1, sizeof *l->cs);
    if (!l->ptrs || !l->vms || !l->rps || !l->cs) return -ENOMEM;
    for (struct gw_vm_rec *r = d->vms; r; r = r->next) {
        if (state && r->state != state) continue;
        gw_vm_to_proto(d, r, &l->vms[l->n], &l->rps[l->n], &l->cs[l->n]);
        l->ptrs[l->n] = &l->vms[l->n];
        l->n++;
    }
    qsort(l->ptrs, l->n, sizeof *l->ptrs, by_name);
    return 0;
}

static void vm_list_free(struct vm_list *l)
{
    free(l->ptrs);
    free(l->vms);
    free(l->rps);
    free(l->cs);
}

static int list_vms(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    const Godwit__V1__ListVmsRequest *req = (const void *)msg;
    Godwit__V1__ListVmsResponse resp = GODWIT__V1__LIST_VMS_RESPONSE__INIT;
    struct vm_list l;
    int code = GW_GRPC_OK;
    if ((unsigned)req->state > GODWIT__V1__VM__STATE__IN_DOUBT)
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "unknown VM state %d", (int)req->state);
    pthread_mutex_lock(&d->lock);
    if (strlen(req->page_token) > GW_VM_NAME_MAX) {
        pthread_mutex_unlock(&d->lock);
        return gw_grpc_call_error(call, GW_GRPC_INVALID_ARGUMENT, "bad page_token");
    }
    if (vm_list_build(d, req->state, &l)) code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    else {
        /* Pages by name: the token is the last name of the previous page. */
        size_t first = 0;
        if (req->page_token[0])
            while (first < l.n && strcmp(l.ptrs[first]->name, req->page_token) <= 0) first++;
        size_t count = l.n - first;
        if (req->page_size && req->page_size < count) count = req->page_size;
        resp.n_vms = count;
        resp.vms = l.ptrs + first;
        resp.next_page_token = first + count < l.n ? l.ptrs[first + count - 1]->name : "";
        gw_grpc_call_send(call, &resp.base);
    }
    pthread_mutex_unlock(&d->lock);
    vm_list_free(&l);
    return code;
}

static void host_capacity(struct gw_daemon *d, Godwit__V1__HostCapacity *cap)
{
    struct sysinfo si;
    cap->cpus = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
    if (!sysinfo(&si)) {
        cap->memory_bytes = (uint64_t)si.totalram * si.mem_unit;
        cap->memory_free_bytes = (uint64_t)(si.freeram + si.bufferram) * si.mem_unit;
    }
    int kfd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    cap->kvm = kfd >= 0;
    if (kfd >= 0) {
        cap->dirty_ring = ioctl(kfd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING) > 0;
        close(kfd);
    }
    cap->userfaultfd = access("/dev/userfaultfd", F_OK) == 0 || access("/proc/sys/vm/unprivileged_userfaultfd", F_OK) == 0;
    cap->rdma = access("/sys/class/infiniband", F_OK) == 0;
    (void)d;
}

static int get_host(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct gw_daemon *d = arg;
    Godwit__V1__GetHostResponse resp = GODWIT__V1__GET_HOST_RESPONSE__INIT;
    Godwit__V1__HostCapacity cap = GODWIT__V1__HOST_CAPACITY__INIT;
    host_capacity(d, &cap);   /* outside the lock: it opens /dev/kvm */
    struct vm_list l;
    int code = GW_GRPC_OK;
    pthread_mutex_lock(&d->lock);
    size_t nj = 0;
    for (struct gw_job *j = d->jobs; j; j = j->next) nj += !gw_job_final(j->state);
    Godwit__V1__Job *jobs = calloc(nj + 1, sizeof *jobs);
    Godwit__V1__Job **jptrs = calloc(nj + 1, sizeof *jptrs);
    if (vm_list_build(d, 0, &l) || !jobs || !jptrs) {
        code = gw_grpc_call_error(call, GW_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        for (size_t i = 0; i < l.n; i++)
            if (l.vms[i].state == GODWIT__V1__VM__STATE__RUNNING || l.vms[i].state == GODWIT__V1__VM__STATE__MIGRATING)
                cap.memory_allocated_bytes += l.vms[i].memory_bytes;
        size_t k = 0;
        for (struct gw_job *j = d->jobs; j && k < nj; j = j->next) {
            if (gw_job_final(j->state)) continue;
            gw_job_to_proto(j, &jobs[k]);
            jptrs[k] = &jobs[k];
            k++;
        }
        resp.hostname = d->cfg.hostname;
        resp.version = GODWIT_VERSION;
        resp.capacity = &cap;
        resp.n_vms = l.n;
        resp.vms = l.ptrs;
        resp.n_running_jobs = k;
        resp.running_jobs = jptrs;
        resp.uptime_ms = (gw_now_ns() - d->started_ns) / 1000000;
        gw_grpc_call_send(call, &resp.base);
    }
    pthread_mutex_unlock(&d->lock);
    vm_list_free(&l);
    free(jobs);
    free(jptrs);
    return code;
}

int gw_service_register_vm(struct gw_daemon *d)
{
    /* GetVm and ListVms only copy the in-memory table under the daemon's short lock: they run
     * inline on the gRPC loop (GW_GRPC_INLINE), the rest on workers. */
    static const struct {
        const char *path; const ProtobufCMessageDescriptor *desc; gw_grpc_handler_fn fn; unsigned flags;
    } m[] = {
        {"/godwit.v1.Godwit/CreateVm", &godwit__v1__create_vm_request__descriptor, create_vm, 0},
        {"/godwit.v1.Godwit/StartVm", &godwit__v1__start_vm_request__descriptor, start_vm, 0},
        {"/godwit.v1.Godwit/StopVm", &godwit__v1__stop_vm_request__descriptor, stop_vm, 0},
        {"/godwit.v1.Godwit/DeleteVm", &godwit__v1__delete_vm_request__descriptor, delete_vm, 0},
        {"/godwit.v1.Godwit/GetVm", &godwit__v1__get_vm_request__descriptor, get_vm, GW_GRPC_INLINE},
        {"/godwit.v1.Godwit/ListVms", &godwit__v1__list_vms_request__descriptor, list_vms, GW_GRPC_INLINE},
        {"/godwit.v1.Godwit/GetHost", &godwit__v1__get_host_request__descriptor, get_host, 0},
        {"/godwit.v1.Godwit/GetVmConsole", &godwit__v1__get_vm_console_request__descriptor, get_vm_console, 0},
    };
    for (size_t i = 0; i < GW_ARRAY_SIZE(m); i++) {
        int r = gw_grpc_server_register(d->srv, &(struct gw_grpc_method){
            .path = m[i].path, .kind = GW_GRPC_UNARY, .request = m[i].desc, .handler = m[i].fn, .arg = d,
            .flags = m[i].flags});
        if (r) return r;
    }
    return 0;
}
