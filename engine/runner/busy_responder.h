/* The control socket while the runner's main thread is busy in one long request (a backup:
 * minutes at a gentle throttle). The socket serves one request at a time from the main loop,
 * so until this existed it answered nothing then: `godwit-vm status` timed out, and the
 * adaptive throttle of a backup of another VM, which polls the latency of every VM on the
 * host through their status ten times a second (godwitd's --watch-vm list), waited its
 * 200 ms timeout per busy VM in every 100 ms step and went without that VM's latency.
 *
 * A thread of its own answers meanwhile: status as always; stop, by asking the busy request
 * to give up (it checks stop_asked: a backup at its throttle's every wait slice and after each
 * batch of chunks) and stopping the runner once it has; every other operation is refused
 * with the reason. */
#ifndef GW_RUNNER_BUSY_RESPONDER_H
#define GW_RUNNER_BUSY_RESPONDER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct gw_runner;

struct gw_busy_responder {
    struct gw_runner *r;
    const char *what;          /* "a backup": the refusals' reason */
    atomic_bool stop_asked;    /* a stop came: the busy request gives up, then the runner stops */
    int wake_fd;               /* eventfd: tells the thread to end */
    pthread_t thread;
    bool running;
};

/* Starts answering r's control socket (nothing when it has none). The main thread must not
 * touch the runner's state that status reads until gw_busy_responder_end. */
int gw_busy_responder_start(struct gw_busy_responder *b, struct gw_runner *r, const char *what);
/* Ends the thread (joined); sets r->stop when a stop was asked. Safe on a responder that did
 * not start. */
void gw_busy_responder_end(struct gw_busy_responder *b);

#endif
