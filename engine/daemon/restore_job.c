/* RESTORE jobs of godwitd (backup_jobs.h): a backup becomes a new VM on this host.
 *
 * The disk: a backup with a disk gets a new image that the daemon makes itself, named after
 * the new VM and nothing else from the API: NAME.img in the first of image_roots (created
 * with O_EXCL | O_NOFOLLOW, so an image that exists, or a link planted in its place, is
 * refused, never overwritten), or rbd:POOL/NAME in one of rbd_pools (the runner creates it and
 * refuses one that exists). The runner (`godwit-vm restore-backup --disk`) fills it and the VM
 * record keeps it as its disk.
 *
 * Progress: an ordinary restore's runner writes framed JobProgress messages on a pipe the
 * job hands it (--progress-fd 3) while it reads the store, then closes it and starts the VM;
 * the job ends when the runner answers on its control socket. An instant restore's runner
 * starts the VM at once: the job then follows the fill through the runner's status
 * (RunnerStatus.instant_restore) and ends when the fill completes.
 *
 * Failure and cancel: whatever the step, a restore that does not end with a running VM stops
 * its runner and leaves neither a VM record nor the image it made. A cancelled instant restore
 * discards its VM too: its memory is not all back, and it cannot run on without the store. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup.h"
#include "engine/api/grpc_wire.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/backup_jobs.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/runner/frame.h"
#include "engine/runner/runner_client.h"
#include "engine/vm/blk_backend.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define PROGRESS_MS 500
#define RESTORE_TIMEOUT_MS 600000    /* a restoring runner silent this long (no frame, no answer) is wedged */
#define STATUS_TIMEOUT_MS 5000
#define STOP_MS 5000

#define S(x) GODWIT__V1__JOB__STATE__##x

/* How the job ends, decided first and published only once the undoing is done: a watcher
 * that sees FAILED or CANCELLED finds no record and no image left. */
struct verdict {
    int state;                 /* 0: not decided */
    const char *reason;
    char msg[512];
};

static void decide(struct verdict *v, int state, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void decide(struct verdict *v, int state, const char *reason, const char *fmt, ...)
{
    v->state = state;
    v->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->msg, sizeof v->msg, fmt, ap);
    va_end(ap);
}

/* The manifest of the backup to restore: its configuration decides the new VM's. Lock not
 * held. 0, or -errno with the reason in err. */
static int read_manifest(const struct gw_backup_target_cfg *t, const char *vm, char *id, Godwit__V1__BackupManifest **m,
                         char *err, size_t errlen)
{
    Godwit__V1__StoreSpec spec;
    gw_bkjob_spec(t, &spec);
    struct gw_backup_target tg;
    int r = gw_backup_target_open(&spec, &tg, err, errlen);
    if (r) return r;
    if (!id[0] && (r = gw_backup_latest(&tg, vm, id))) {
        if (r == -ENOENT) snprintf(err, errlen, "VM %s has no backup in target %s", vm, t->name);
        else snprintf(err, errlen, "%s", gw_store_error(tg.store));
    }
    if (!r) r = gw_manifest_load(tg.store, &tg.keys, vm, id, m, err, errlen);
    gw_backup_target_close(&tg);
    return r;
}

int gw_bkjob_restore_disk_check(struct gw_daemon *d, const char *name, const char *pool, char *out,
                                size_t cap, const char **reason, char *msg, size_t msglen)
{
#define FAIL(c, why, ...) do { *reason = (why); snprintf(msg, msglen, __VA_ARGS__); return (c); } while (0)
    int n;
    if (pool[0]) {
        n = snprintf(out, cap, "rbd:%s/%s", pool, name);
        if (n < 0 || (size_t)n >= cap) FAIL(GW_GRPC_INVALID_ARGUMENT, "IMAGE_PATH_INVALID", "disk_pool is too long");
        const char *r, *why = gw_config_image_refused(&d->cfg, out, "disk", &r);
        if (why) FAIL(GW_GRPC_FAILED_PRECONDITION, r, "disk %s: %s", out, why);
        return GW_GRPC_OK;
    }
    char root[PATH_MAX];
    int e = gw_config_image_root(&d->cfg, root, sizeof root);
    if (e == -ENOENT)
        FAIL(GW_GRPC_FAILED_PRECONDITION, "NO_IMAGE_ROOTS", "this host has no image_roots configured: it makes no disk "
             "images");
    if (e) FAIL(GW_GRPC_FAILED_PRECONDITION, "IMAGE_ROOT_MISSING", "the first of this host's image_roots is not a "
                "directory here: %s", strerror(-e));
    n = snprintf(out, cap, "%s/%s.img", root, name);
    if (n < 0 || (size_t)n >= cap) FAIL(GW_GRPC_FAILED_PRECONDITION, "IMAGE_PATH_INVALID", "the image path is too long");
    struct stat st;
    if (!lstat(out, &st) || errno != ENOENT)
        FAIL(GW_GRPC_ALREADY_EXISTS, "IMAGE_EXISTS", "disk image %s exists already: restore under another name, or "
             "remove the image first", out);
    return GW_GRPC_OK;
#undef FAIL
}

/* Creates the empty image file path (canonical, inside a root): never one that exists, never
 * through a link. Lock not held. 0 or -errno. */
static int make_image(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    if (!slash || (size_t)(slash - path) >= sizeof dir) return -EINVAL;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = 0;
    int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return -errno;
    int fd = openat(dfd, slash + 1, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int r = fd < 0 ? -errno : 0;
    if (fd >= 0) close(fd);
    close(dfd);
    return r;
}

/* Reads the frames waiting on *fd (lock not held) into p (the last one wins); on EOF or an
 * error closes *fd and sets it to -1. Whether a frame came. */
static bool read_frames(int *fd, Godwit__V1__JobProgress **p)
{
    bool got = false;
    for (;;) {
        struct pollfd pf = {.fd = *fd, .events = POLLIN};
        int n = poll(&pf, 1, got ? 0 : PROGRESS_MS);
        if (n <= 0) return got;
        ProtobufCMessage *m = NULL;
        if (gw_frame_recv(*fd, &godwit__v1__job_progress__descriptor, &m)) {
            close(*fd);   /* closed: the restore is over (the runner starts the VM), or it died */
            *fd = -1;
            return got;
        }
        if (*p) godwit__v1__job_progress__free_unpacked(*p, NULL);
        *p = (Godwit__V1__JobProgress *)m;
        got = true;
    }
}

/* An ordinary restore (lock held, dropped while waiting): follows the runner's progress pipe
 * rd until the runner answers (0), exits (-ECHILD), is cancelled (-ECANCELED), the daemon
 * stops (-ESHUTDOWN) or it stays silent too long (-ETIMEDOUT). Takes rd. */
static int follow_restore(struct gw_daemon *d, struct gw_job *j, struct gw_vm_rec *rec, int rd)
{
    uint64_t seq = rec->exit_seq, alive = gw_now_ns();
    int r;
    for (;;) {
        if (rec->ready) { r = 0; break; }
        if (rec->exit_seq != seq) { r = -ECHILD; break; }
        if (j->cancel) { r = -ECANCELED; break; }
        if (d->stopping) { r = -ESHUTDOWN; break; }
        if (gw_now_ns() - alive > (uint64_t)RESTORE_TIMEOUT_MS * 1000000) { r = -ETIMEDOUT; break; }
        if (rd < 0) {
            if (gw_sup_wait_ready(d, rec, PROGRESS_MS) == 0) alive = gw_now_ns();
            continue;
        }
        Godwit__V1__JobProgress *p = NULL;
        pthread_mutex_unlock(&d->lock);
        bool got = read_frames(&rd, &p);
        pthread_mutex_lock(&d->lock);
        if (got && !j->cancel && !d->stopping) {
            alive = gw_now_ns();
            gw_job_take_progress(j, p);
            gw_job_progress(j, NULL);
            pthread_mutex_unlock(&d->lock);
            gw_job_save_progress(d, j);
            pthread_mutex_lock(&d->lock);
        }
        if (p) godwit__v1__job_progress__free_unpacked(p, NULL);
        if (rd < 0) alive = gw_now_ns();   /* the runner's VM starts: its answer is next */
    }
    if (rd >= 0) close(rd);
    return r;
}

/* An instant restore's fill, from the runner's status into the job (lock held). The phase of
 * the fill or NULL when the status carries none. */
static const char *take_instant(struct gw_job *j, const Godwit__V1__InstantRestoreProgress *ip, uint64_t t0)
{
    Godwit__V1__JobProgress *p = &j->progress;
    p->total_bytes = ip->bytes_total;
    p->sent_bytes = p->backup_bytes_written = ip->bytes_placed;
    p->backup_bytes_read = ip->bytes_read;
    p->remaining_bytes = ip->bytes_total > ip->bytes_placed ? ip->bytes_total - ip->bytes_placed : 0;
    p->backup_chunks = ip->chunks_placed + ip->disk_chunks_done;
    p->backup_chunks_total = ip->chunks_total + ip->disk_chunks_total;
    uint64_t ms = ip->fill_ms ? ip->fill_ms : (gw_now_ns() - t0) / 1000000;
    p->total_ms = ms;
    p->throughput_bytes_per_s = ms ? ip->bytes_placed * 1000 / ms : 0;
    p->eta_ms = p->throughput_bytes_per_s ? p->remaining_bytes * 1000 / p->throughput_bytes_per_s : 0;
    snprintf(j->phase, sizeof j->phase, "instant-%.20s", ip->phase);
    return ip->phase;
}

/* An instant restore after its runner answered (lock held, dropped while waiting): follows the
 * fill until it completes (0), fails (-EBADMSG, the runner's reason in why), the runner exits
 * (-ECHILD), the job is cancelled (-ECANCELED) or the daemon stops (-ESHUTDOWN). */
static int follow_instant(struct gw_daemon *d, struct gw_job *j, struct gw_vm_rec *rec, char *why, size_t whylen)
{
    uint64_t seq = rec->exit_seq, t0 = gw_now_ns();
    char sock[sizeof rec->control];
    memcpy(sock, rec->control, sizeof sock);
    bool stalled = false;
    for (;;) {
        if (rec->exit_seq != seq) return -ECHILD;
        if (j->cancel) return -ECANCELED;
        if (d->stopping) return -ESHUTDOWN;
        pthread_mutex_unlock(&d->lock);
        Godwit__V1__RunnerReply *rep = NULL;
        int r = gw_runner_op(sock, GODWIT__V1__RUNNER_REQUEST__OP_STATUS, &rep, STATUS_TIMEOUT_MS);
        pthread_mutex_lock(&d->lock);
        const char *ph = NULL;
        if (!r && rep->status && rep->status->instant_restore && rec->exit_seq == seq && !j->cancel)
            ph = take_instant(j, rep->status->instant_restore, t0);
        int out = 1;
        if (ph && !strcmp(ph, "complete")) {
            out = 0;
            if (stalled) {   /* the store came back and the fill ended before the next look */
                char msg[200];
                snprintf(msg, sizeof msg, "the backup store answers again: VM %s runs on", rec->name);
                gw_job_progress(j, msg);
            }
        } else if (ph && !strcmp(ph, "failed")) {
            snprintf(why, whylen, "%s", rep->status->instant_restore->error);
            out = -EBADMSG;
        } else if (ph) {
            bool now_stalled = !strcmp(ph, "stalled");
            char msg[400];
            /* The store's failure is the job's news; the runner holds the VM paused meanwhile. */
            if (now_stalled && !stalled)
                snprintf(msg, sizeof msg, "the backup store does not answer: VM %s is paused until it does (%.200s)",
                         rec->name, rep->status->instant_restore->error);
            else if (!now_stalled && stalled)
                snprintf(msg, sizeof msg, "the backup store answers again: VM %s runs on", rec->name);
            gw_job_progress(j, now_stalled != stalled ? msg : NULL);
            if (now_stalled != stalled) gw_warn("job=%s vm=%s: %s", j->id, rec->name, msg);
            stalled = now_stalled;
        }
        if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
        if (out <= 0) return out;
        pthread_mutex_unlock(&d->lock);
        gw_job_save_progress(d, j);
        pthread_mutex_lock(&d->lock);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)PROGRESS_MS * 1000000;
        if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
        if (!j->cancel && !d->stopping && rec->exit_seq == seq) pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    }
}

/* Waits for the restored runner's first answer (lock held): 0, -ECHILD, -ECANCELED,
 * -ESHUTDOWN or -ETIMEDOUT. */
static int wait_first_answer(struct gw_daemon *d, struct gw_job *j, struct gw_vm_rec *rec)
{
    uint64_t deadline = gw_now_ns() + (uint64_t)RESTORE_TIMEOUT_MS * 1000000;
    for (;;) {
        if (j->cancel) return -ECANCELED;
        if (d->stopping) return -ESHUTDOWN;
        int r = gw_sup_wait_ready(d, rec, PROGRESS_MS);
        if (r != -ETIMEDOUT) return r;
        if (gw_now_ns() >= deadline) return -ETIMEDOUT;
    }
}

/* The runner's argv for rec (lock held): strings point into t, j, rec and bufs. */
static void restore_argv(struct gw_daemon *d, struct gw_job *j, struct gw_vm_rec *rec,
                         const struct gw_backup_target_cfg *t, const char *disk_arg, bool progress_fd, char **argv,
                         char bufs[3][1100])
{
    char dir[1024];
    gw_vm_dir(d, rec->name, dir, sizeof dir);
    snprintf(bufs[0], sizeof bufs[0], "%s/console.log", dir);
    int n = 0;
    argv[n++] = d->cfg.runner;
    argv[n++] = "restore-backup";
    argv[n++] = "--store"; argv[n++] = (char *)t->store;
    if (t->ceph_conf[0]) { argv[n++] = "--ceph-conf"; argv[n++] = (char *)t->ceph_conf; }
    if (t->ceph_id[0]) { argv[n++] = "--ceph-id"; argv[n++] = (char *)t->ceph_id; }
    if (t->keyring[0]) { argv[n++] = "--keyring"; argv[n++] = (char *)t->keyring; }
    if (t->key_file[0]) { argv[n++] = "--key-file"; argv[n++] = (char *)t->key_file; }
    if (t->osd_op_timeout_s) {
        snprintf(bufs[1], 16, "%u", t->osd_op_timeout_s);
        argv[n++] = "--osd-timeout"; argv[n++] = bufs[1];
    }
    if (t->inflight) {
        snprintf(bufs[2], 16, "%u", t->inflight);
        argv[n++] = "--inflight"; argv[n++] = bufs[2];
    }
    argv[n++] = "--vm"; argv[n++] = j->vm;
    argv[n++] = "--backup"; argv[n++] = j->bk->backup_id;
    argv[n++] = "--name"; argv[n++] = rec->name;
    if (disk_arg[0]) { argv[n++] = "--disk"; argv[n++] = (char *)disk_arg; }
    if (j->bk->instant) argv[n++] = "--instant";
    /* An ordinary restore reads at the host's backup priority; an instant one's fill is what
     * the restored guest waits for: it keeps the runner's own. */
    else { argv[n++] = "--cpu-priority"; argv[n++] = d->cfg.backup_cpu_priority; }
    if (progress_fd) { argv[n++] = "--progress-fd"; argv[n++] = "3"; }   /* the pipe: the spawn's first fd */
    argv[n++] = "--control"; argv[n++] = rec->control;
    argv[n++] = "--console"; argv[n++] = bufs[0];
    if (d->cfg.secret_file[0]) { argv[n++] = "--secret-file"; argv[n++] = d->cfg.secret_file; }
    argv[n++] = "--json";
    argv[n] = NULL;
}

/* The new record for the restored VM (lock held): NULL with the verdict made. */
static struct gw_vm_rec *new_record(struct gw_daemon *d, struct gw_job *j, const Godwit__V1__VmConfig *sc,
                                    struct verdict *v)
{
    struct gw_vm_rec *rec;
    if (gw_vm_find(d, j->bk->new_vm)) {
        decide(v, S(FAILED), "VM_EXISTS", "a VM named %s already exists here", j->bk->new_vm);
        return NULL;
    }
    if (!gw_cluster_accepts_vms(d)) {   /* a drain began while the job was queued */
        decide(v, S(FAILED), "HOST_NOT_ACTIVE", "%s is draining or in maintenance: it takes no new VMs", d->cfg.hostname);
        return NULL;
    }
    if (gw_vm_rec_new(d, j->bk->new_vm, &rec)) {
        decide(v, S(FAILED), "INTERNAL", "cannot make a record for VM %s", j->bk->new_vm);
        return NULL;
    }
    rec->memory_bytes = sc->memory_bytes;
    rec->vcpus = sc->vcpus;
    snprintf(rec->guest, sizeof rec->guest, "%s", sc->guest_spec);
    snprintf(rec->disk, sizeof rec->disk, "%s", j->bk->disk);
    rec->restart_kind = j->bk->restart_kind;
    rec->max_restarts = j->bk->max_restarts;
    rec->backoff_ms = j->bk->backoff_ms;
    rec->created_ms = gw_unix_ms();
    if (gw_vm_persist(d, rec)) {
        free(rec);
        decide(v, S(FAILED), "INTERNAL", "cannot store the VM definition");
        return NULL;
    }
    rec->next = d->vms;
    d->vms = rec;
    rec->busy = true;
    return rec;
}

/* Ends a restore that did not succeed (lock held): its runner stopped, its record and image
 * gone. Returns rec, or NULL once dropped. */
static struct gw_vm_rec *undo(struct gw_daemon *d, struct gw_job *j, struct gw_vm_rec *rec)
{
    if (rec && rec->proc.pid) gw_sup_stop(d, rec, true, STOP_MS);
    if (rec && !rec->proc.pid) {
        gw_vm_unlink(d, rec);
        gw_db_delete_vm(d->db, rec->name);
        free(rec);
        rec = NULL;
    }
    if (j->bk->made_image && !rec) {
        /* The runner removes what it wrote on a failure it sees; a killed one cannot. */
        if (unlink(j->bk->disk) && errno != ENOENT)
            gw_warn("job=%s: cannot remove %s: %s", j->id, j->bk->disk, strerror(errno));
        j->bk->made_image = false;
    }
    return rec;
}

void gw_bkjob_run_restore(struct gw_daemon *d, struct gw_job *j)
{
    pthread_mutex_lock(&d->lock);
    if (j->cancel || gw_job_final(j->state)) {   /* cancelled while queued */
        pthread_mutex_unlock(&d->lock);
        return;
    }
    const struct gw_backup_target_cfg *t = gw_config_backup_target(&d->cfg, j->bk->target);
    snprintf(j->phase, sizeof j->phase, "restore");
    gw_job_set_state(j, S(RUNNING), "restore started");
    char name[sizeof j->bk->new_vm], pool[sizeof j->bk->disk_pool];
    memcpy(name, j->bk->new_vm, sizeof name);
    memcpy(pool, j->bk->disk_pool, sizeof pool);
    bool instant = j->bk->instant;
    pthread_mutex_unlock(&d->lock);

    char err[512] = "", id[GW_BACKUP_ID_BUF], disk[sizeof j->bk->disk] = "", why_buf[512];
    snprintf(id, sizeof id, "%s", j->bk->backup_id);
    Godwit__V1__BackupManifest *m = NULL;
    const char *why = NULL, *reason = "RESTORE_REFUSED";
    bool made = false;
    struct verdict v = {0};
    int r = read_manifest(t, j->vm, id, &m, err, sizeof err);
    const Godwit__V1__VmConfig *sc = r ? NULL : m->state->config;
    if (!r) why = gw_vm_config_invalid(name, sc->memory_bytes, sc->vcpus, sc->guest_spec, "");
    if (!r && !why && m->disk->size) {
        /* The disk: checked again here (the API's check was a moment ago), then made. */
        if (gw_bkjob_restore_disk_check(d, name, pool, disk, sizeof disk, &reason, why_buf, sizeof why_buf))
            why = why_buf;
        else if (!gw_blk_is_rbd(disk)) {
            int e = make_image(disk);
            made = e == 0;
            if (e) {
                reason = e == -EEXIST ? "IMAGE_EXISTS" : "IMAGE_CREATE_FAILED";
                snprintf(why_buf, sizeof why_buf, "disk image %s: %s", disk,
                         e == -EEXIST ? "exists already" : strerror(-e));
                why = why_buf;
            }
        }
    }

    pthread_mutex_lock(&d->lock);
    snprintf(j->bk->backup_id, sizeof j->bk->backup_id, "%s", id);
    snprintf(j->bk->disk, sizeof j->bk->disk, "%s", disk);
    j->bk->made_image = made;
    if (!instant) snprintf(j->bk->cpu_priority, sizeof j->bk->cpu_priority, "%s", d->cfg.backup_cpu_priority);
    struct gw_vm_rec *rec = NULL;
    if (r) {
        decide(&v, S(FAILED), r == -ENOENT ? "BACKUP_NOT_FOUND" : "STORE_FAILED", "%s", err);
        goto out;
    }
    if (why) { decide(&v, S(FAILED), reason, "%s", why); goto out; }
    if (j->cancel) { decide(&v, S(CANCELLED), "CANCELLED", "cancelled before the VM was made"); goto out; }
    gw_hex_encode(m->memory_digest.data, m->memory_digest.len < 16 ? m->memory_digest.len : 16, j->bk->digest);
    if (!(rec = new_record(d, j, sc, &v))) goto out;
    j->progress.total_bytes = m->memory->size + m->disk->size;
    gw_job_progress(j, instant ? "restoring instantly" : "restoring");

    char disk_arg[2048] = "", *argv[48], bufs[3][1100], serr[256];
    if (disk[0] && gw_config_disk_arg(&d->cfg, disk, disk_arg, sizeof disk_arg)) {
        decide(&v, S(FAILED), "IMAGE_PATH_INVALID", "the disk's runner argument is too long");
        goto out;
    }
    int pfd[2] = {-1, -1};
    if (!instant && pipe2(pfd, O_CLOEXEC)) {
        decide(&v, S(FAILED), "INTERNAL", "cannot make the progress pipe: %s", strerror(errno));
        goto out;
    }
    restore_argv(d, j, rec, t, disk_arg, !instant, argv, bufs);
    r = gw_sup_spawn_with_fds(d, rec, argv, instant ? NULL : &pfd[1], instant ? 0 : 1, serr, sizeof serr);
    rec->busy = true;   /* the spawn restores busy as it found it: still ours */
    if (pfd[1] >= 0) close(pfd[1]);   /* the runner holds the only writer: its exit is EOF */
    if (r) {
        if (pfd[0] >= 0) close(pfd[0]);
        decide(&v, S(FAILED), "RESTORE_FAILED", "cannot start the restored VM: %s", serr);
        goto out;
    }
    r = instant ? wait_first_answer(d, j, rec) : follow_restore(d, j, rec, pfd[0]);
    if (!r && instant) {
        gw_info("job=%s: backup %s of %s restored instantly as VM %s: running, filling", j->id, id, j->vm, rec->name);
        gw_job_progress(j, "the VM runs; its memory and disk fill from the backup");
        r = follow_instant(d, j, rec, err, sizeof err);
    }
    if (!r) {
        j->progress.remaining_bytes = 0;
        j->progress.eta_ms = 0;
        if (!instant && !j->progress.backup_chunks_total) j->progress.backup_bytes_read = m->memory->size;
        gw_info("job=%s: backup %s of %s restored as VM %s, running", j->id, id, j->vm, rec->name);
        decide(&v, S(SUCCEEDED), NULL, "completed");
    } else if (r == -ECANCELED) {
        decide(&v, S(CANCELLED), "CANCELLED", "cancelled: VM %s was stopped and removed%s", rec->name,
               j->bk->made_image ? ", and the image made for it" : "");
    } else if (r == -ESHUTDOWN) {
        decide(&v, S(FAILED), "DAEMON_STOPPING", "the daemon stopped during the restore");
    } else if (r == -EBADMSG) {
        decide(&v, S(FAILED), "RESTORE_FAILED", "the instant restore failed: %s", err);
    } else if (r == -ECHILD) {
        decide(&v, S(FAILED), instant && rec->ready ? "RUNNER_EXITED" : "RESTORE_FAILED", "the restore failed: %s",
               rec->error[0] ? rec->error : rec->exit_why);
    } else {
        decide(&v, S(FAILED), "RESTORE_FAILED", "the restored VM did not answer within %d s", RESTORE_TIMEOUT_MS / 1000);
    }
out:
    /* Nothing of a failed restore stays: no runner, no record, no image. The daemon stopping
     * leaves a running instant restore alone: its runner fills on and is re-attached. */
    if (v.state != S(SUCCEEDED) && !(r == -ESHUTDOWN && instant && rec && rec->ready)) rec = undo(d, j, rec);
    if (rec) rec->busy = false;
    if (v.state == S(SUCCEEDED)) gw_bkjob_finish(j, v.state, NULL, NULL);
    else gw_bkjob_finish(j, v.state ? v.state : S(FAILED), v.reason ? v.reason : "INTERNAL", "%s", v.msg);
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    if (m) godwit__v1__backup_manifest__free_unpacked(m, NULL);
}
