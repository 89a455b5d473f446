/* The supervisor: starts runners, notices when they end (their pidfds in one epoll set),
 * keeps each VM's counters fresh from its runner's status, restarts crashed VMs per their
 * policy, and after a daemon restart re-attaches to the runners that kept going.
 *
 * Runners live in their own session and outlive the daemon on purpose: restarting or
 * upgrading godwitd must not stop a single VM. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/json.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/backup_sched.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/db.h"
#include "engine/daemon/resume_route.h"
#include "engine/runner/runner_client.h"

#define REFRESH_NS (1000ull * 1000 * 1000)     /* status poll of a ready runner */
#define REFRESH_START_NS (100ull * 1000 * 1000) /* ... of one that has not answered yet */

static void watch(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)rec->proc.pid};
    if (epoll_ctl(d->sup_epoll, EPOLL_CTL_ADD, rec->proc.pidfd, &ev))
        gw_error("vm=%s: cannot watch runner %d: %s", rec->name, rec->proc.pid, strerror(errno));
    uint64_t one = 1;
    if (write(d->sup_wake, &one, sizeof one) < 0) { /* the loop wakes within 100 ms anyway */ }
}

/* The last non-empty line of the file `leaf` in a VM's directory (at most its last 2 KiB). */
static void last_line(struct gw_daemon *d, const char *name, const char *leaf, char *out, size_t len)
{
    char path[1100], buf[2048];
    out[0] = 0;
    gw_vm_dir(d, name, path, sizeof path);
    strncat(path, leaf, sizeof path - strlen(path) - 1);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t off = end > (off_t)sizeof buf - 1 ? end - (off_t)(sizeof buf - 1) : 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, off);
    close(fd);
    if (n <= 0) return;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
    char *line = strrchr(buf, '\n');
    snprintf(out, len, "%s", line ? line + 1 : buf);
}

/* The last line of a VM's runner log: usually the reason it failed. */
static void log_tail(struct gw_daemon *d, const char *name, char *out, size_t len)
{
    char line[200];
    last_line(d, name, "/runner.log", line, sizeof line);
    snprintf(out, len, "%s", line);
}

/* The "state" of the runner's exit summary (the last line of its stdout), "" when none:
 * "migrated" means the VM now runs elsewhere, whoever started the migration. */
static void exit_state(struct gw_daemon *d, const char *name, char *out, size_t len)
{
    char line[2048];
    last_line(d, name, "/runner.out", line, sizeof line);
    if (gw_json_get_str(line, "state", out, len)) out[0] = 0;
}

/* Lock held on entry and return; dropped around the file system work and the spawn itself
 * (the daemon's lock is never held across a process spawn). rec is marked busy meanwhile,
 * which keeps it alive and its name, guest, disk and socket path (argv points into them)
 * unchanged. */
static int spawn_argv(struct gw_daemon *d, struct gw_vm_rec *rec, char **argv, const int *pass_fds,
                      unsigned npass, char *err, size_t errlen)
{
    char dir[1024], out[1100], log[1100], name[sizeof rec->name];
    gw_vm_dir(d, rec->name, dir, sizeof dir);
    snprintf(out, sizeof out, "%s/runner.out", dir);
    snprintf(log, sizeof log, "%s/runner.log", dir);
    memcpy(name, rec->name, sizeof name);
    bool was_busy = rec->busy;
    rec->busy = true;
    pthread_mutex_unlock(&d->lock);
    int r = mkdir(dir, 0700) && errno != EEXIST ? -errno : 0;
    if (r) snprintf(err, errlen, "%s: %s", dir, strerror(-r));
    struct gw_proc p;
    if (!r) {
        /* Fresh for every run: its first line (an incoming runner's "listening") and its last
         * (the exit summary, "migrated" or not) must be this run's. */
        unlink(out);
        unlink(rec->control);   /* a stale socket must not pass for a live runner */
        r = gw_proc_spawn(argv, out, log, pass_fds, npass, &p);
        if (r) snprintf(err, errlen, "cannot start %s: %s", argv[0], strerror(-r));
    }
    pthread_mutex_lock(&d->lock);
    rec->busy = was_busy;
    pthread_cond_broadcast(&d->cond);
    if (r) {
        gw_warn("vm=%s: %s", name, err);
        return r;
    }
    rec->proc = p;
    rec->ready = false;
    rec->runner_state[0] = rec->paused_by[0] = 0;
    rec->stop_requested = false;
    rec->exit_code = -1;
    rec->exit_why[0] = 0;
    rec->error[0] = 0;
    rec->restart_at_ns = 0;
    rec->last_refresh_ns = 0;
    rec->started_ms = gw_unix_ms();
    watch(d, rec);
    gw_info("vm=%s: runner started, pid %d", rec->name, p.pid);
    return 0;
}

int gw_sup_spawn(struct gw_daemon *d, struct gw_vm_rec *rec, char *err, size_t errlen)
{
    char mem[32], vcpus[16], console[1100], dir[1024], net[64], disk[2048];
    /* A cold start opens the kernel, initrd, tap and disk: under this host's rules as they are
     * now (roots change; files get replaced). */
    if (gw_vm_boot_recheck(&d->cfg, rec->name, &rec->boot, err, errlen)) return -EPERM;
    const char *why = rec->disk[0] ? gw_config_disk_refused(&d->cfg, rec->disk) : NULL;
    if (why) {
        snprintf(err, errlen, "disk %s: %s", rec->disk, why);
        return -EPERM;
    }
    if (gw_config_disk_arg(&d->cfg, rec->disk, disk, sizeof disk)) {
        snprintf(err, errlen, "the disk's runner argument is too long");
        return -ENAMETOOLONG;
    }
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)rec->memory_bytes);
    snprintf(vcpus, sizeof vcpus, "%u", rec->vcpus);
    gw_vm_dir(d, rec->name, dir, sizeof dir);
    snprintf(console, sizeof console, "%s/console.log", dir);
    char *argv[32];
    int n = 0;
    argv[n++] = d->cfg.runner;
    argv[n++] = "run";
    argv[n++] = "--name"; argv[n++] = rec->name;
    argv[n++] = "--memory"; argv[n++] = mem;
    argv[n++] = "--vcpus"; argv[n++] = vcpus;
    argv[n++] = "--guest"; argv[n++] = rec->guest;
    if (rec->disk[0]) { argv[n++] = "--disk"; argv[n++] = disk; }
    gw_vm_boot_argv(&rec->boot, true, argv, &n, net, sizeof net);
    argv[n++] = "--control"; argv[n++] = rec->control;
    argv[n++] = "--console"; argv[n++] = console;
    if (d->cfg.secret_file[0]) { argv[n++] = "--secret-file"; argv[n++] = d->cfg.secret_file; }
    if (d->cfg.test_runner_fault[0]) { argv[n++] = "--test-fault"; argv[n++] = d->cfg.test_runner_fault; }
    argv[n++] = "--json";
    argv[n] = NULL;
    int r = spawn_argv(d, rec, argv, NULL, 0, err, errlen);
    if (!r) {
        rec->state = GODWIT__V1__VM__STATE__RUNNING;
        gw_vm_persist(d, rec);
    }
    return r;
}

int gw_sup_spawn_with(struct gw_daemon *d, struct gw_vm_rec *rec, char **argv, char *err, size_t errlen)
{
    return gw_sup_spawn_with_fds(d, rec, argv, NULL, 0, err, errlen);
}

int gw_sup_spawn_with_fds(struct gw_daemon *d, struct gw_vm_rec *rec, char **argv, const int *pass_fds, unsigned npass,
                          char *err, size_t errlen)
{
    int r = spawn_argv(d, rec, argv, pass_fds, npass, err, errlen);
    if (!r) {
        rec->state = GODWIT__V1__VM__STATE__RUNNING;
        gw_vm_persist(d, rec);
    }
    return r;
}

/* token as hex into a new file of the daemon's own (0600, never through a link). */
static int write_token_file(const char *path, const uint8_t *token, size_t len)
{
    char hex[2 * 64 + 2];
    if (len > 64) return -EINVAL;
    gw_hex_encode(token, len, hex);
    hex[2 * len] = '\n';
    unlink(path);   /* one a runner did not get to read */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    int r = gw_write_full(fd, hex, 2 * len + 1);
    close(fd);
    return r;
}

int gw_sup_spawn_incoming(struct gw_daemon *d, struct gw_vm_rec *rec, const char *listen_url, const int *conn_fds,
                          unsigned nconn, char *err, size_t errlen)
{
    if (nconn > GW_PROC_MAX_PASS_FDS) {
        snprintf(err, errlen, "%u streams, at most %u can be handed over", nconn, GW_PROC_MAX_PASS_FDS);
        return -EINVAL;
    }
    char console[1100], dir[1024], net[64], disk[2048], mem[32], vcpus[16];
    if (gw_config_disk_arg(&d->cfg, rec->disk, disk, sizeof disk)) {
        snprintf(err, errlen, "the disk's runner argument is too long");
        return -ENAMETOOLONG;
    }
    gw_vm_dir(d, rec->name, dir, sizeof dir);
    snprintf(console, sizeof console, "%s/console.log", dir);
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)rec->memory_bytes);
    snprintf(vcpus, sizeof vcpus, "%u", rec->vcpus);
    char *argv[40 + 2 * GW_PROC_MAX_PASS_FDS], token_path[1100];
    char fdnum[GW_PROC_MAX_PASS_FDS + 1][12];
    int pass[GW_PROC_MAX_PASS_FDS], resume = -1;
    int n = 0;
    argv[n++] = d->cfg.runner;
    argv[n++] = "incoming";
    for (unsigned i = 0; i < nconn; i++) {   /* gw_proc_spawn puts them at 3, 4, ... */
        snprintf(fdnum[i], sizeof fdnum[i], "%u", 3 + i);
        argv[n++] = "--fd";
        argv[n++] = fdnum[i];
        pass[i] = conn_fds[i];
    }
    /* Where a post-copy source whose link broke is handed back to this runner (migport.c),
     * by this daemon or by one restarted later (resume_route.h). Without it the migration
     * still runs; only a recovery through the migration port cannot. */
    unsigned npass = nconn;
    if (nconn && nconn < GW_PROC_MAX_PASS_FDS) {
        char why[256];
        resume = gw_resume_route_open(d, rec, why, sizeof why);
        if (resume < 0) gw_warn("vm=%s: no post-copy resume route: %s", rec->name, why);
    }
    if (resume >= 0) {
        pass[npass] = resume;
        snprintf(fdnum[npass], sizeof fdnum[npass], "%u", 3 + npass);
        argv[n++] = "--resume-fd";
        argv[n++] = fdnum[npass++];
    }
    if (!nconn) {
        argv[n++] = "--listen"; argv[n++] = (char *)listen_url;
        /* A listener of its own takes only streams that carry this reservation's token: a
         * stranger who finds the port first cannot define the session and shut the source
         * out. The runner reads the file and removes it. */
        snprintf(token_path, sizeof token_path, "%s/incoming.token", dir);
        int r = write_token_file(token_path, rec->session_token, sizeof rec->session_token);
        if (r) {
            snprintf(err, errlen, "%s: %s", token_path, strerror(-r));
            return r;
        }
        argv[n++] = "--token-file"; argv[n++] = token_path;
    }
    argv[n++] = "--control"; argv[n++] = rec->control;
    argv[n++] = "--console"; argv[n++] = console;
    if (d->cfg.secret_file[0]) { argv[n++] = "--secret-file"; argv[n++] = d->cfg.secret_file; }
    /* The VM this host reserved, and its disk from our own record: nothing the source sends
     * names a VM or a file here. */
    argv[n++] = "--name"; argv[n++] = rec->name;
    /* And its size as reserved: the source's HELLO must agree, or the VM that runs here would
     * not be the one this host checked and counts. */
    argv[n++] = "--memory"; argv[n++] = mem;
    argv[n++] = "--vcpus"; argv[n++] = vcpus;
    if (rec->disk[0]) { argv[n++] = "--disk"; argv[n++] = disk; }
    /* Its tap from our record too (checked at PrepareIncoming); no kernel: the guest's
     * memory brings the one it runs. */
    gw_vm_boot_argv(&rec->boot, false, argv, &n, net, sizeof net);
    if (!d->cfg.migration_tls) { argv[n++] = "--tls"; argv[n++] = "off"; }
    if (d->cfg.tls_cert[0]) {
        argv[n++] = "--tls-cert"; argv[n++] = d->cfg.tls_cert;
        argv[n++] = "--tls-key"; argv[n++] = d->cfg.tls_key;
        argv[n++] = "--tls-ca"; argv[n++] = d->cfg.tls_ca;
    }
    argv[n++] = "--json";
    argv[n] = NULL;
    int r = spawn_argv(d, rec, argv, pass, npass, err, errlen);
    if (r && !nconn) unlink(token_path);
    if (resume >= 0) {
        close(resume);   /* the runner's now */
        if (!r) gw_resume_route_taken(rec);
        else gw_resume_route_forget(d, rec);
    }
    if (!r) {
        rec->incoming = true;
        rec->reserved_until_ns = 0;
        rec->state = GODWIT__V1__VM__STATE__MIGRATING;
    }
    return r;
}

static struct timespec deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
    return ts;
}

int gw_sup_wait_ready(struct gw_daemon *d, struct gw_vm_rec *rec, int timeout_ms)
{
    uint64_t seq = rec->exit_seq;
    struct timespec ts = deadline_in(timeout_ms);
    while (!rec->ready && rec->exit_seq == seq) {
        if (pthread_cond_timedwait(&d->cond, &d->lock, &ts) == ETIMEDOUT) break;
    }
    if (rec->exit_seq != seq) return -ECHILD;
    return rec->ready ? 0 : -ETIMEDOUT;
}

static int wait_exit(struct gw_daemon *d, struct gw_vm_rec *rec, uint64_t seq, int timeout_ms)
{
    struct timespec ts = deadline_in(timeout_ms);
    while (rec->exit_seq == seq && rec->proc.pid) {
        if (pthread_cond_timedwait(&d->cond, &d->lock, &ts) == ETIMEDOUT) break;
    }
    return rec->exit_seq != seq || !rec->proc.pid ? 0 : -ETIMEDOUT;
}

int gw_sup_stop(struct gw_daemon *d, struct gw_vm_rec *rec, bool force, int timeout_ms)
{
    if (!rec->proc.pid) return 0;
    uint64_t seq = rec->exit_seq;
    rec->stop_requested = true;
    rec->restart_at_ns = 0;
    if (!force) {
        char sock[sizeof rec->control];
        memcpy(sock, rec->control, sizeof sock);
        pthread_mutex_unlock(&d->lock);
        Godwit__V1__RunnerReply *rep = NULL;
        int r = gw_runner_op(sock, GODWIT__V1__RUNNER_REQUEST__OP_STOP, &rep, 2000);
        if (rep) godwit__v1__runner_reply__free_unpacked(rep, NULL);
        pthread_mutex_lock(&d->lock);
        if (r) {
            gw_warn("vm=%s: stop request failed (%s): terminating the runner", rec->name, strerror(-r));
            gw_proc_signal(&rec->proc, SIGTERM);
        }
    } else {
        gw_proc_signal(&rec->proc, SIGKILL);
    }
    if (!wait_exit(d, rec, seq, timeout_ms)) return 0;
    gw_warn("vm=%s: runner did not stop within %d ms: killing it", rec->name, timeout_ms);
    gw_proc_signal(&rec->proc, SIGKILL);
    return wait_exit(d, rec, seq, 5000);
}

void gw_sup_crashed(struct gw_daemon *d, struct gw_vm_rec *rec, const char *why)
{
    rec->state = GODWIT__V1__VM__STATE__CRASHED;
    snprintf(rec->error, sizeof rec->error, "%s", why);
    bool policy = rec->restart_kind == GODWIT__V1__RESTART_POLICY__KIND__ON_CRASH ||
                  rec->restart_kind == GODWIT__V1__RESTART_POLICY__KIND__ALWAYS;
    if (policy && (rec->max_restarts == 0 || rec->restarts < rec->max_restarts)) {
        rec->restart_at_ns = gw_now_ns() + (uint64_t)rec->backoff_ms * 1000000;
        gw_warn("vm=%s: crashed (%s); restarting in %u ms", rec->name, why, rec->backoff_ms);
    } else {
        gw_warn("vm=%s: crashed (%s)", rec->name, why);
    }
    gw_vm_persist(d, rec);
}

void gw_sup_drop_incoming(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    if (rec->policy_adopted) gw_policy_forget(d, rec->name);   /* it came with the VM, it goes with it */
    gw_resume_route_forget(d, rec);
    gw_vm_unlink(d, rec);
    gw_db_delete_vm(d->db, rec->name);
    free(rec);
}

/* A runner's pidfd became readable: it ended. Lock held. */
static void on_exit_(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    int code;
    char why[128], tail[200];
    gw_proc_reap(&rec->proc, &code, why, sizeof why);
    gw_resume_route_forget(d, rec);   /* the runner owned the socket; its names are ours */
    rec->exit_code = code;
    snprintf(rec->exit_why, sizeof rec->exit_why, "%s", why);
    rec->exit_seq++;
    exit_state(d, rec->name, rec->exit_state, sizeof rec->exit_state);
    pthread_cond_broadcast(&d->cond);
    if (rec->migrating_out) return;                /* the migration job decides */
    if (rec->incoming) {
        gw_warn("vm=%s: incoming runner %s", rec->name, why);
        rec->state = GODWIT__V1__VM__STATE__CRASHED;
        snprintf(rec->error, sizeof rec->error, "incoming migration runner %s", why);
        if (!rec->busy) gw_sup_drop_incoming(d, rec);      /* the VM still lives on its source */
        return;
    }
    /* Its hand-over record says what the exit means: the VM moved (never restart it here),
     * or the move is in doubt (never run it here until settled). */
    if (!rec->busy && gw_owner_settle_exit(d, rec) != GW_SETTLE_NONE) return;
    if (!rec->busy && !strcmp(rec->exit_state, "in-doubt")) {
        /* In doubt, but its record is missing: never run it here; the operator decides. */
        gw_owner_in_doubt(d, rec, "", "", "its runner left with the hand-over in doubt and no record of it");
        return;
    }
    if (!rec->busy && rec->orphan_migration && strcmp(rec->exit_state, "migrated")) {
        /* A re-attached migration's runner died without a record: maybe after GO. */
        rec->orphan_migration = false;
        gw_owner_runner_lost(d, rec, "its runner ended during the migration");
        return;
    }
    if (!strcmp(rec->exit_state, "migrated")) {
        /* Its migration completed although no job of ours followed it (the daemon restarted
         * meanwhile): the VM lives on the destination now and must not be restarted here. */
        gw_info("vm=%s: runner left after migrating the VM away; dropping it here", rec->name);
        if (!rec->busy) {
            gw_vm_unlink(d, rec);
            gw_db_delete_vm(d->db, rec->name);
            free(rec);
        }
        return;
    }
    if (rec->stop_requested || (code == 0 && rec->restart_kind != GODWIT__V1__RESTART_POLICY__KIND__ALWAYS)) {
        rec->state = GODWIT__V1__VM__STATE__STOPPED;
        rec->error[0] = 0;
        gw_info("vm=%s: runner %s", rec->name, why);
        gw_vm_persist(d, rec);
        return;
    }
    log_tail(d, rec->name, tail, sizeof tail);
    char msg[256];
    snprintf(msg, sizeof msg, "runner %.60s%s%.180s", why, tail[0] ? ": " : "", tail);
    if (!rec->ready) {
        /* It never came up: restarting would only fail again. */
        rec->state = GODWIT__V1__VM__STATE__CRASHED;
        snprintf(rec->error, sizeof rec->error, "failed to start: %.230s", msg);
        gw_warn("vm=%s: %s", rec->name, rec->error);
        gw_vm_persist(d, rec);
        return;
    }
    gw_sup_crashed(d, rec, msg);
}

static struct gw_vm_rec *find_pid(struct gw_daemon *d, pid_t pid)
{
    for (struct gw_vm_rec *r = d->vms; r; r = r->next)
        if (r->proc.pid == pid) return r;
    return NULL;
}

/* Applies one status reply to rec (lock held). */
static void apply_status(struct gw_daemon *d, struct gw_vm_rec *rec, const Godwit__V1__RunnerReply *rep)
{
    const Godwit__V1__RunnerStatus *st = rep->status;
    if (!st) return;
    if (!rec->ready) pthread_cond_broadcast(&d->cond);
    rec->ready = true;
    snprintf(rec->runner_state, sizeof rec->runner_state, "%s", st->state ? st->state : "");
    snprintf(rec->paused_by, sizeof rec->paused_by, "%s", st->paused_by ? st->paused_by : "");
    if (st->counters) {
        rec->pages_written = st->counters->pages_written;
        rec->verify_errors = st->counters->verify_errors;
    }
    if (rec->orphan_migration && st->state) {
        gw_owner_orphan_status(d, rec, st);
        return;
    }
    if (rec->incoming && st->state && !strcmp(st->state, "running")) {
        rec->incoming = false;
        rec->state = GODWIT__V1__VM__STATE__RUNNING;
        rec->migrations++;
        rec->started_ms = gw_unix_ms();
        gw_info("vm=%s: incoming migration complete, running here", rec->name);
        gw_vm_persist(d, rec);
        pthread_cond_broadcast(&d->cond);
    }
}

struct refresh { char name[GW_VM_NAME_MAX + 1]; char sock[108]; pid_t pid; bool cancel; };

static void tick(struct gw_daemon *d)
{
    uint64_t now = gw_now_ns();
    struct refresh *list = NULL;
    size_t n = 0, cap = 0;
    for (struct gw_vm_rec *r = d->vms, *next; r; r = next) {
        next = r->next;
        if (r->reserved_until_ns && now >= r->reserved_until_ns && !r->busy && !r->proc.pid) {
            /* The source never connected to the migration port: the VM still lives there. */
            gw_warn("vm=%s: no migration stream arrived for the reservation; dropping it", r->name);
            gw_sup_drop_incoming(d, r);
            continue;
        }
        if (r->restart_at_ns && now >= r->restart_at_ns && !r->busy && !r->proc.pid) {
            char err[256];
            r->restarts++;
            gw_info("vm=%s: restart %llu per its policy", r->name, (unsigned long long)r->restarts);
            /* The spawn drops the lock (r stays busy meanwhile): the list may change under
             * us, so this round of the scan ends here; the next tick goes on. */
            next = NULL;
            if (gw_sup_spawn(d, r, err, sizeof err)) {
                r->restart_at_ns = 0;
                snprintf(r->error, sizeof r->error, "restart failed: %.230s", err);
                gw_vm_persist(d, r);
            }
        }
        if (!r->proc.pid) continue;
        uint64_t every = r->ready ? REFRESH_NS : REFRESH_START_NS;
        if (now - r->last_refresh_ns < every) continue;
        r->last_refresh_ns = now;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct refresh *l = realloc(list, nc * sizeof *l);
            if (!l) break;
            list = l;
            cap = nc;
        }
        snprintf(list[n].name, sizeof list[n].name, "%s", r->name);
        memcpy(list[n].sock, r->control, sizeof list[n].sock);
        list[n].pid = r->proc.pid;
        list[n].cancel = r->orphan_migration && gw_owner_cancel_wanted(d, r);
        n++;
    }
    pthread_mutex_unlock(&d->lock);
    for (size_t i = 0; i < n; i++) {
        Godwit__V1__RunnerReply *rep = NULL;
        if (list[i].cancel) {
            /* CancelJob of a migration re-attached after a restart: the runner is told here,
             * its status then ends the job (owner.c). */
            if (!gw_runner_op(list[i].sock, GODWIT__V1__RUNNER_REQUEST__OP_CANCEL_MIGRATION, &rep, 1000))
                godwit__v1__runner_reply__free_unpacked(rep, NULL);
            rep = NULL;
        }
        if (gw_runner_op(list[i].sock, GODWIT__V1__RUNNER_REQUEST__OP_STATUS, &rep, 1000)) continue;
        pthread_mutex_lock(&d->lock);
        struct gw_vm_rec *r = gw_vm_find(d, list[i].name);
        if (r && r->proc.pid == list[i].pid) apply_status(d, r, rep);
        pthread_mutex_unlock(&d->lock);
        godwit__v1__runner_reply__free_unpacked(rep, NULL);
    }
    free(list);
    pthread_mutex_lock(&d->lock);
}

static void *sup_main(void *arg)
{
    struct gw_daemon *d = arg;
    pthread_mutex_lock(&d->lock);
    while (!d->stopping) {
        pthread_mutex_unlock(&d->lock);
        struct epoll_event ev[16];
        int n = epoll_wait(d->sup_epoll, ev, 16, 100);
        pthread_mutex_lock(&d->lock);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0) {
                uint64_t v;
                if (read(d->sup_wake, &v, sizeof v) < 0) { /* spurious */ }
                continue;
            }
            struct gw_vm_rec *rec = find_pid(d, (pid_t)ev[i].data.u64);
            if (rec && gw_proc_exited(&rec->proc)) on_exit_(d, rec);
            else if (!rec) gw_error("supervisor: exit of unknown runner %llu", (unsigned long long)ev[i].data.u64);
        }
        if (!d->stopping) tick(d);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

int gw_sup_start_thread(struct gw_daemon *d)
{
    d->sup_epoll = epoll_create1(EPOLL_CLOEXEC);
    d->sup_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->sup_epoll < 0 || d->sup_wake < 0) return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(d->sup_epoll, EPOLL_CTL_ADD, d->sup_wake, &ev)) return -errno;
    pthread_mutex_lock(&d->lock);
    for (struct gw_vm_rec *r = d->vms; r; r = r->next)
        if (r->proc.pidfd >= 0) watch(d, r);
    pthread_mutex_unlock(&d->lock);
    int r = pthread_create(&d->sup_thread, NULL, sup_main, d);
    return -r;
}

void gw_sup_stop_thread(struct gw_daemon *d)
{
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->sup_thread, NULL);
    if (d->sup_epoll >= 0) close(d->sup_epoll);
    if (d->sup_wake >= 0) close(d->sup_wake);
    d->sup_epoll = d->sup_wake = -1;
}

void gw_sup_reattach(struct gw_daemon *d)
{
    char bin[GW_CFG_STR];
    snprintf(bin, sizeof bin, "%s", d->cfg.runner);
    const char *base = basename(bin);
    pthread_mutex_lock(&d->lock);
    for (struct gw_vm_rec *r = d->vms, *next; r; r = next) {
        next = r->next;   /* settling may free r */
        pid_t pid = r->proc.pid;
        bool migrating = r->state == GODWIT__V1__VM__STATE__MIGRATING, doubt = r->state == GODWIT__V1__VM__STATE__IN_DOUBT;
        bool live = r->state == GODWIT__V1__VM__STATE__RUNNING || migrating || doubt;
        bool arriving = r->incoming;
        r->proc = (struct gw_proc){.pidfd = -1};
        r->incoming = false;
        if (!live) continue;
        struct gw_proc p;
        if (pid > 0 && !gw_proc_adopt(pid, base, r->control, &p)) {
            r->proc = p;
            r->ready = true;   /* it was up: a crash from now on follows the restart policy */
            /* A destination runner of a post-copy migration may still need its source back
             * after a broken link: the route to it survives us (resume_route.h). */
            gw_resume_route_reattach(d, r);
            /* A destination runner opens its control socket only once the VM has arrived:
             * one without a socket is still receiving, and a failure must not restart it
             * here (the source still runs the VM). One with a socket is followed by status:
             * "running" makes the VM ours. */
            /* Records of older daemons lack `arriving`: an incoming runner has no socket yet. */
            if (migrating && (arriving || access(r->control, F_OK))) {
                r->incoming = true;
                gw_info("vm=%s: re-attached to incoming runner %d", r->name, pid);
            } else if (migrating) {
                /* A source runner may still be migrating: never call it running before its
                 * status says so (it may belong to another host by now). */
                r->orphan_migration = true;
                gw_info("vm=%s: re-attached to runner %d, which was migrating the VM", r->name, pid);
            } else if (doubt) {
                gw_info("vm=%s: re-attached to runner %d holding an in-doubt VM", r->name, pid);
                gw_owner_in_doubt(d, r, r->in_doubt_peer, r->in_doubt_job, r->error);
            } else {
                gw_info("vm=%s: re-attached to runner %d", r->name, pid);
            }
            continue;
        }
        gw_resume_route_forget(d, r);   /* its runner is gone: so is its route */
        if (migrating && arriving) {
            /* An incoming runner that ended while we were down: the VM never became ours
             * (the source runs it) or, after GO, the source knows; never restart it here. */
            gw_warn("vm=%s: incoming runner ended while the daemon was down; dropping the record", r->name);
            gw_sup_drop_incoming(d, r);
            continue;
        }
        if (gw_owner_settle_exit(d, r) != GW_SETTLE_NONE) continue;
        if (doubt) { gw_owner_in_doubt(d, r, r->in_doubt_peer, r->in_doubt_job, r->error); continue; }
        r->ready = true;   /* it did run: the restart policy applies */
        if (migrating) {
            /* A source runner that was migrating ended unseen: maybe after GO. */
            gw_owner_runner_lost(d, r, "its runner ended during a migration while the daemon was down");
            continue;
        }
        gw_sup_crashed(d, r, "runner ended while the daemon was down");
    }
    gw_owner_settle_jobs(d);
    pthread_mutex_unlock(&d->lock);
}
