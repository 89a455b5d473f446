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

/* A request whose runner sends progress frames before its reply (a backup with progress_ms):
 * each frame with backup_progress set goes to on_progress; its non-zero return half-closes
 * the connection, which asks the runner to stop, and later frames are dropped. The final
 * reply goes into *rep (it says whether the stop came in time). timeout_ms bounds the wait
 * for each frame. Errors as gw_runner_call. */
int gw_runner_call_stream(const char *sock, const Godwit__V1__RunnerRequest *req,
                          int (*on_progress)(void *ctx, const Godwit__V1__JobProgress *p), void *ctx,
                          Godwit__V1__RunnerReply **rep, int timeout_ms);

/* The requests without arguments: status, stop, pause, resume, cancel_migration. */
int gw_runner_op(const char *sock, Godwit__V1__RunnerRequest__OpCase op,
                 Godwit__V1__RunnerReply **rep, int timeout_ms);

#endif
