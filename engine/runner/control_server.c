/* The runner's control socket (see runner.h): a unix stream socket serving one request per
 * connection, so a client that dies mid-request affects nothing but itself. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/runner/frame.h"
#include "engine/runner/runner.h"
#include "postcopy/postcopy_source.h"
#include "backup/backup.h"
#include "engine/vm/snapshot_file.h"
#include "precopy/precopy_source.h"

int gw_runner_control_open(struct gw_runner *r, const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return -ENAMETOOLONG;
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    unlink(path);
    /* The control socket saves, migrates and stops the VM: owner only, set before listen()
     * so nobody connects while the umask's mode is on the file. */
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || chmod(path, 0600) < 0 || listen(fd, 8) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    r->listen_fd = fd;
    snprintf(r->control_path, sizeof r->control_path, "%s", path);
    return 0;
}

void gw_runner_control_close(struct gw_runner *r)
{
    if (r->listen_fd >= 0) {
        close(r->listen_fd);
        unlink(r->control_path);
    }
    r->listen_fd = -1;
}

static void do_save(struct gw_runner *r, const Godwit__V1__RunnerSaveRequest *req,
                    Godwit__V1__RunnerReply *rep, Godwit__V1__RunnerSaveResult *res, char *err,
                    unsigned errlen, char *digest_hex)
{
    if (!req->path || !*req->path) { snprintf(err, errlen, "save needs a path"); return; }
    /* The save holds its own pause: an operator's pause stays in force after it, and no
     * other owner's resume can run the guest while the file is written. */
    enum gw_run_state before = r->state;
    int rc = gw_runner_hold(r, GW_PAUSE_SAVE);
    if (rc) { snprintf(err, errlen, "cannot pause the VM: %s", strerror(-rc)); return; }
    r->state = GW_RUN_SAVING;
    struct gw_snapshot_stats stats;
    rc = gw_snapshot_save(r->vm, req->path, &stats, err, errlen);
    if (rc) {
        gw_error("save to %s failed: %s", req->path, err);
        r->state = before;
        gw_runner_release(r, GW_PAUSE_SAVE); /* a failed save leaves the VM as it was */
        return;
    }
    gw_info("saved to %s: %llu MiB of data in %.1f ms", req->path,
            (unsigned long long)(stats.data_bytes >> 20), stats.elapsed_ns / 1e6);
    godwit__v1__runner_save_result__init(res);
    res->state_bytes = stats.state_bytes;
    res->data_bytes = stats.data_bytes;
    res->memory_bytes = stats.memory_bytes;
    res->elapsed_ns = stats.elapsed_ns;
    gw_mem_digest_hex(&stats.digest, digest_hex);
    res->memory_digest = digest_hex;
    rep->save = res;
    rep->ok = true;
    if (req->stop_after) {
        r->stop = true;
        r->state = GW_RUN_SUSPENDED;   /* the file holds the VM now: it never runs here again */
    } else {
        r->state = before;
        gw_runner_release(r, GW_PAUSE_SAVE);
    }
}

static enum gw_run_op op_of(Godwit__V1__RunnerRequest__OpCase c)
{
    switch (c) {
    case GODWIT__V1__RUNNER_REQUEST__OP_PAUSE: return GW_OP_PAUSE;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESUME: return GW_OP_RESUME;
    case GODWIT__V1__RUNNER_REQUEST__OP_SAVE: return GW_OP_SAVE;
    case GODWIT__V1__RUNNER_REQUEST__OP_STOP: return GW_OP_STOP;
    case GODWIT__V1__RUNNER_REQUEST__OP_MIGRATE: return GW_OP_MIGRATE;
    case GODWIT__V1__RUNNER_REQUEST__OP_CANCEL_MIGRATION: return GW_OP_CANCEL_MIGRATION;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESOLVE: return GW_OP_RESOLVE;
    case GODWIT__V1__RUNNER_REQUEST__OP_BACKUP: return GW_OP_BACKUP;
    case GODWIT__V1__RUNNER_REQUEST__OP_SWITCH_TO_POSTCOPY: return GW_OP_SWITCH_TO_POSTCOPY;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESUME_MIGRATION: return GW_OP_RESUME_MIGRATION;
    default: return GW_OP_STATUS;
    }
}

/* Runs one checked request; the reply's ok and err say how it went. */
static void dispatch(struct gw_runner *r, int fd, const Godwit__V1__RunnerRequest *req, Godwit__V1__RunnerReply *rep,
                     Godwit__V1__RunnerSaveResult *save_res, struct gw_backup_result *backup_res, char *err,
                     unsigned errlen, char *digest_hex)
{
    int rc;
    switch (req->op_case) {
    case GODWIT__V1__RUNNER_REQUEST__OP_STATUS:
        rep->ok = true;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_PAUSE:
        rc = gw_runner_hold(r, GW_PAUSE_OPERATOR);
        rep->ok = rc == 0;
        if (rc) snprintf(err, errlen, "pause failed: %s", strerror(-rc));
        else r->state = GW_RUN_PAUSED;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESUME:
        rc = gw_runner_release(r, GW_PAUSE_OPERATOR);
        rep->ok = rc == 0 && !r->pause_owners;
        if (rc) snprintf(err, errlen, "resume failed: the VM has failed");
        else if (r->pause_owners)
            snprintf(err, errlen, "resume refused: the VM is held paused by %s", gw_pause_owners_name(r->pause_owners));
        else r->state = GW_RUN_RUNNING;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_SAVE:
        do_save(r, req->save, rep, save_res, err, errlen, digest_hex);
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_STOP:
        /* A running migration is cancelled by the main loop's exit path (honoured before GO;
         * after GO the migration's own outcome stands). */
        r->stop = true;
        rep->ok = true;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_MIGRATE:
        rep->ok = gw_runner_migrate(r, req->migrate, err, errlen) == 0;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_CANCEL_MIGRATION:
        if (r->postcopy) gw_postcopy_cancel(r->postcopy);
        else gw_precopy_cancel(r->migration);
        rep->ok = true;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_SWITCH_TO_POSTCOPY:
        if (!r->postcopy) snprintf(err, errlen, "no hybrid migration is running");
        else if (gw_postcopy_switch(r->postcopy)) snprintf(err, errlen, "the migration is not in pre-copy");
        else rep->ok = true;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESUME_MIGRATION:
        rep->ok = gw_runner_resume_migration(r, req->resume_migration ? req->resume_migration->destination : NULL,
                                             err, errlen) == 0;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESOLVE:
        rep->ok = gw_runner_resolve(r, req->resolve && req->resolve->keep_source, err, errlen) == 0;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_BACKUP:
        rep->ok = gw_runner_backup(r, req->backup, fd, backup_res, err, errlen) == 0;
        if (rep->ok) rep->backup = &backup_res->pb;
        break;
    default:
        snprintf(err, errlen, "unknown request");
        break;
    }
}

int gw_runner_control_recv(int fd, Godwit__V1__RunnerRequest **req)
{
    /* A client gets 5 s to send its request; a stuck one must not freeze the runner. */
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    *req = NULL;
    int rc = gw_frame_recv(fd, &godwit__v1__runner_request__descriptor, (ProtobufCMessage **)req);
    if (rc) gw_debug("control: bad request: %s", strerror(-rc));
    return rc;
}

void gw_runner_control_reply(struct gw_runner *r, int fd, Godwit__V1__RunnerReply *rep, char *err)
{
    Godwit__V1__RunnerStatus st;
    Godwit__V1__GuestCounters counters;
    gw_runner_fill_status(r, &st, &counters);
    rep->status = &st;
    rep->error = err;
    gw_frame_send(fd, &rep->base);
    rep->status = NULL;   /* st ends here; the caller's reply must not point at it */
}

void gw_runner_control_serve(struct gw_runner *r)
{
    int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    Godwit__V1__RunnerRequest *req;
    if (gw_runner_control_recv(fd, &req)) { close(fd); return; }

    Godwit__V1__RunnerReply rep = GODWIT__V1__RUNNER_REPLY__INIT;
    Godwit__V1__RunnerSaveResult save_res;
    char err[512] = "", digest_hex[33];
    struct gw_backup_result backup_res;
    /* Whatever finished since the last request counts before this one is checked. */
    gw_runner_poll_migration(r);
    if (req->op_case == GODWIT__V1__RUNNER_REQUEST__OP__NOT_SET) snprintf(err, sizeof err, "unknown request");
    else if (!gw_run_check(r->state, op_of(req->op_case), err, sizeof err))
        dispatch(r, fd, req, &rep, &save_res, &backup_res, err, sizeof err, digest_hex);
    else gw_info("control: %s (state %s)", err, gw_run_state_name(r->state));
    gw_runner_poll_migration(r);
    gw_runner_control_reply(r, fd, &rep, err);
    godwit__v1__runner_request__free_unpacked(req, NULL);
    close(fd);
}
