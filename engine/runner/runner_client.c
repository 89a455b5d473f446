/* Runner control-socket client (see runner_client.h). */
#include "engine/runner/runner_client.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine/runner/frame.h"

/* Connects to sock with timeout_ms on each send and receive, and sends req. 0 with *fd
 * open (the caller closes it, also on error), or -errno. */
static int send_request(const char *sock, const Godwit__V1__RunnerRequest *req, int timeout_ms, int *fd)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    *fd = -1;
    if (strlen(sock) >= sizeof addr.sun_path) return -ENAMETOOLONG;
    memcpy(addr.sun_path, sock, strlen(sock) + 1);
    if ((*fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) return -errno;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(*fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(*fd, (struct sockaddr *)&addr, sizeof addr) < 0) return -errno;
    return gw_frame_send(*fd, &req->base);
}

int gw_runner_call(const char *sock, const Godwit__V1__RunnerRequest *req,
                   Godwit__V1__RunnerReply **rep, int timeout_ms)
{
    int fd;
    int r = send_request(sock, req, timeout_ms, &fd);
    if (!r) r = gw_frame_recv(fd, &godwit__v1__runner_reply__descriptor, (ProtobufCMessage **)rep);
    if (r == -EWOULDBLOCK) r = -EAGAIN;
    if (fd >= 0) close(fd);
    return r;
}

int gw_runner_call_stream(const char *sock, const Godwit__V1__RunnerRequest *req,
                          int (*on_progress)(void *ctx, const Godwit__V1__JobProgress *p), void *ctx,
                          Godwit__V1__RunnerReply **rep, int timeout_ms)
{
    int fd;
    int r = send_request(sock, req, timeout_ms, &fd);
    bool stopped = false;
    while (!r) {
        Godwit__V1__RunnerReply *f = NULL;
        r = gw_frame_recv(fd, &godwit__v1__runner_reply__descriptor, (ProtobufCMessage **)&f);
        if (r) break;
        if (!f->backup_progress || f->status) { *rep = f; break; }   /* the final reply */
        /* Asked to stop: half-close, which the runner sees at its next progress step; its
         * reply then tells whether the stop came in time. */
        if (!stopped && on_progress(ctx, f->backup_progress)) { shutdown(fd, SHUT_WR); stopped = true; }
        godwit__v1__runner_reply__free_unpacked(f, NULL);
    }
    if (r == -EWOULDBLOCK) r = -EAGAIN;
    if (fd >= 0) close(fd);
    return r;
}

int gw_runner_op(const char *sock, Godwit__V1__RunnerRequest__OpCase op,
                 Godwit__V1__RunnerReply **rep, int timeout_ms)
{
    Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
    /* Every argument-less request is an empty message: one instance of each serves. */
    Godwit__V1__RunnerStatusRequest s = GODWIT__V1__RUNNER_STATUS_REQUEST__INIT;
    Godwit__V1__RunnerStopRequest sp = GODWIT__V1__RUNNER_STOP_REQUEST__INIT;
    Godwit__V1__RunnerPauseRequest p = GODWIT__V1__RUNNER_PAUSE_REQUEST__INIT;
    Godwit__V1__RunnerResumeRequest rs = GODWIT__V1__RUNNER_RESUME_REQUEST__INIT;
    Godwit__V1__RunnerCancelMigrationRequest cm = GODWIT__V1__RUNNER_CANCEL_MIGRATION_REQUEST__INIT;
    Godwit__V1__RunnerSwitchToPostcopyRequest sw = GODWIT__V1__RUNNER_SWITCH_TO_POSTCOPY_REQUEST__INIT;
    req.op_case = op;
    switch (op) {
    case GODWIT__V1__RUNNER_REQUEST__OP_STATUS: req.status = &s; break;
    case GODWIT__V1__RUNNER_REQUEST__OP_STOP: req.stop = &sp; break;
    case GODWIT__V1__RUNNER_REQUEST__OP_PAUSE: req.pause = &p; break;
    case GODWIT__V1__RUNNER_REQUEST__OP_RESUME: req.resume = &rs; break;
    case GODWIT__V1__RUNNER_REQUEST__OP_CANCEL_MIGRATION: req.cancel_migration = &cm; break;
    case GODWIT__V1__RUNNER_REQUEST__OP_SWITCH_TO_POSTCOPY: req.switch_to_postcopy = &sw; break;
    default: return -EINVAL;
    }
    return gw_runner_call(sock, &req, rep, timeout_ms);
}
