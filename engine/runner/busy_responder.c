/* The control socket while the main thread is busy (see busy_responder.h). */
#include "engine/runner/busy_responder.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/runner/runner.h"

static void serve_one(struct gw_busy_responder *b, int fd)
{
    Godwit__V1__RunnerRequest *req;
    if (gw_runner_control_recv(fd, &req)) return;
    Godwit__V1__RunnerReply rep = GODWIT__V1__RUNNER_REPLY__INIT;
    char err[256] = "";
    switch (req->op_case) {
    case GODWIT__V1__RUNNER_REQUEST__OP_STATUS:
        rep.ok = true;
        break;
    case GODWIT__V1__RUNNER_REQUEST__OP_STOP:
        if (!atomic_exchange(&b->stop_asked, true)) gw_info("control: stop asked while %s runs: it stops first", b->what);
        rep.ok = true;
        break;
    default:
        snprintf(err, sizeof err, "refused: %s is in progress (interrupt its requester, or stop the VM)", b->what);
        gw_info("control: %s", err);
        break;
    }
    gw_runner_control_reply(b->r, fd, &rep, err);
    godwit__v1__runner_request__free_unpacked(req, NULL);
}

static void *responder_main(void *arg)
{
    struct gw_busy_responder *b = arg;
    struct pollfd p[2] = {{.fd = b->wake_fd, .events = POLLIN}, {.fd = b->r->listen_fd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) { if (errno == EINTR) continue; break; }
        if (p[0].revents) break;
        if (!(p[1].revents & POLLIN)) continue;
        int fd = accept4(b->r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        serve_one(b, fd);
        close(fd);
    }
    return NULL;
}

int gw_busy_responder_start(struct gw_busy_responder *b, struct gw_runner *r, const char *what)
{
    *b = (struct gw_busy_responder){.r = r, .what = what, .wake_fd = -1};
    atomic_init(&b->stop_asked, false);
    if (r->listen_fd < 0) return 0;
    b->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (b->wake_fd < 0) return -errno;
    int rc = pthread_create(&b->thread, NULL, responder_main, b);
    if (rc) { close(b->wake_fd); b->wake_fd = -1; return -rc; }
    pthread_setname_np(b->thread, "control-busy");
    b->running = true;
    return 0;
}

void gw_busy_responder_end(struct gw_busy_responder *b)
{
    if (b->running) {
        uint64_t one = 1;
        if (write(b->wake_fd, &one, sizeof one) != sizeof one) gw_warn("control: cannot wake the busy responder");
        pthread_join(b->thread, NULL);
        b->running = false;
    }
    if (b->wake_fd >= 0) close(b->wake_fd);
    b->wake_fd = -1;
    if (b->r && atomic_load(&b->stop_asked)) b->r->stop = true;
}
