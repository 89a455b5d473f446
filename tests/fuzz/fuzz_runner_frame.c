/* libFuzzer target for what a runner reads from its control socket and what a daemon reads
 * back: the length-prefixed frame (engine/runner/frame.c) through a real socket, decoded as
 * a RunnerRequest and as a RunnerReply, each request's operation checked against every run
 * state (engine/runner/run_state.c), and the bytes as a HandoverRecord file
 * (engine/runner/handover.c). Nothing may crash, leak or read past a buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/runner/frame.h"
#include "engine/runner/handover.h"
#include "engine/runner/run_state.h"
#include "godwit/v1/runner.pb-c.h"

static void through_socket(const uint8_t *data, size_t size, const ProtobufCMessageDescriptor *desc)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) abort();
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (size && write(sv[0], data, size) != (ssize_t)size) abort();
    close(sv[0]);   /* the reader sees end of file after the input */
    for (int i = 0; i < 4; i++) {
        ProtobufCMessage *m = NULL;
        if (gw_frame_recv(sv[1], desc, &m)) break;
        if (desc == &godwit__v1__runner_request__descriptor) {
            const Godwit__V1__RunnerRequest *req = (const void *)m;
            char why[256];
            for (int s = GW_RUN_RUNNING; s <= GW_RUN_FAILED; s++)
                gw_run_check((enum gw_run_state)s, (enum gw_run_op)((unsigned)req->op_case % 8), why, sizeof why);
        }
        /* A decoded message packs back into a frame the sender would accept. */
        size_t len = protobuf_c_message_get_packed_size(m);
        if (len <= GW_FRAME_MAX) {
            int p[2];
            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p)) abort();
            setsockopt(p[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
            setsockopt(p[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
            if (len + 4 < 200000 && gw_frame_send(p[0], m)) abort();
            close(p[0]);
            close(p[1]);
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    through_socket(data, size, &godwit__v1__runner_request__descriptor);
    through_socket(data, size, &godwit__v1__runner_reply__descriptor);
    Godwit__V1__HandoverRecord *rec = NULL;
    if (!gw_handover_decode(data, size, &rec)) {
        if (strcmp(rec->state, "migrated") && strcmp(rec->state, "in-doubt")) abort();
        godwit__v1__handover_record__free_unpacked(rec, NULL);
    }
    return 0;
}
