/* The runner's control socket (see runner.h): a unix stream socket serving one request per
 * connection, so a client that dies mid-request affects nothing but itself. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/runner/frame.h"
#include "engine/runner/runner.h"
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
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 8) < 0) {
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
    bool was_paused = gw_vm_is_paused(r->vm);
    int rc = gw_vm_pause(r->vm);
    if (rc) { snprintf(err, errlen, "cannot pause the VM: %s", strerror(-rc)); return; }
    struct gw_snapshot_stats stats;
    rc = gw_snapshot_save(r->vm, req->path, &stats, err, errlen);
    if (rc) {
        gw_error("save to %s failed: %s", req->path, err);
        if (!was_paused) gw_vm_resume(r->vm); /* a failed save leaves the VM as it was */
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
    if (req->stop_after) { r->stop = true; r->suspended = true; }
    else if (!was_paused) gw_vm_resume(r->vm);
}

void gw_runner_control_serve(struct gw_runner *r)
{
    int fd = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    /* A client gets 5 s to send its request; a stuck one must not freeze the runner. */
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    Godwit__V1__RunnerRequest *req = NULL;
    int rc = gw_frame_recv(fd, &godwit__v1__runner_request__descriptor, (ProtobufCMessage **)&req);
    if (rc) { gw_debug("control: bad request: %s", strerror(-rc)); close(fd); return; }

    Godwit__V1__RunnerReply rep = GODWIT__V1__RUNNER_REPLY__INIT;
    Godwit__V1__RunnerStatus st;
    Godwit__V1__GuestCounters counters;
    Godwit__V1__RunnerSaveResult save_res;
    char err[512] = "", digest_hex[33];
    struct gw_backup_result backup_res;
    switch (req->op_case) {
    case GODWIT__V1__RUNNER_REQUEST__OP_STATUS:
        rep.ok = true;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_PAUSE:
        rc = gw_vm_pause(r->vm);
        rep.ok = rc == 0;
        if (rc) snprintf(err, sizeof err, "pause failed: %s", strerror(-rc));
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESUME:
        rc = gw_vm_resume(r->vm);
        rep.ok = rc == 0;
        if (rc) snprintf(err, sizeof err, "resume failed: the VM has failed");
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_SAVE:
        do_save(r, req->save, &rep, &save_res, err, sizeof err, digest_hex);
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_STOP:
        r->stop = true;
        rep.ok = true;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_MIGRATE:
        rep.ok = gw_runner_migrate(r, req->migrate, err, sizeof err) == 0;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_CANCEL_MIGRATION:
        if (r->migration) { gw_precopy_cancel(r->migration); rep.ok = true; }
        else snprintf(err, sizeof err, "no migration is running");
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_BACKUP:
        rep.ok = gw_runner_backup(r, req->backup, &backup_res, err, sizeof err) == 0;
        if (rep.ok) rep.backup = &backup_res.pb;
        break;
    default:
        snprintf(err, sizeof err, "unknown request");
        break;
    }
    gw_runner_poll_migration(r);
    gw_runner_fill_status(r, &st, &counters);
    rep.status = &st;
    rep.error = err;
    gw_frame_send(fd, &rep.base);
    godwit__v1__runner_request__free_unpacked(req, NULL);
    close(fd);
}
