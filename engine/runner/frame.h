/* Length-prefixed protobuf messages on a stream socket (the runner control socket): a 4-byte
 * big-endian length, then the message. Lengths above GW_FRAME_MAX are refused unread. */
#ifndef GW_RUNNER_FRAME_H
#define GW_RUNNER_FRAME_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#define GW_FRAME_MAX (1u << 20)

/* Packs and sends msg. 0 or -errno. */
int gw_frame_send(int fd, const ProtobufCMessage *msg);
/* Receives one message of type desc; *out is freed with protobuf_c_message_free_unpacked.
 * -EPIPE on a clean close, -EMSGSIZE for an oversized frame, -EBADMSG when it does not decode. */
int gw_frame_recv(int fd, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);

#endif
