/* The client side of a runner's control socket (proto/godwit/v1/runner.proto), shared by
 * godwitd and godwit-vm's own client commands: connect, send one RunnerRequest, read one
 * RunnerReply, with a deadline so that a wedged runner cannot hold up its caller. */
#ifndef GW_RUNNER_RUNNER_CLIENT_H
#define GW_RUNNER_RUNNER_CLIENT_H

#include "godwit/v1/runner.pb-c.h"

/* One request/reply exchange with the runner listening at sock. On 0, *rep is the reply
 * (free with godwit__v1__runner_reply__free_unpacked). -ENOENT/-ECONNREFUSED when nobody
 * listens, -EAGAIN on timeout, -EPIPE when the runner hung up, -EBADMSG for garbage. */
int gw_runner_call(const char *sock, const Godwit__V1__RunnerRequest *req,
                   Godwit__V1__RunnerReply **rep, int timeout_ms);

/* The requests without arguments: status, stop, pause, resume, cancel_migration. */
int gw_runner_op(const char *sock, Godwit__V1__RunnerRequest__OpCase op,
                 Godwit__V1__RunnerReply **rep, int timeout_ms);

#endif
