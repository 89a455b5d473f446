/* Framed protobuf messages (see frame.h). */
#include "engine/runner/frame.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"

int gw_frame_send(int fd, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > GW_FRAME_MAX) return -EMSGSIZE;
    uint8_t *buf = malloc(4 + len);
    if (!buf) return -ENOMEM;
    uint32_t be = htonl((uint32_t)len);
    memcpy(buf, &be, 4);
    protobuf_c_message_pack(msg, buf + 4);
    int r = gw_write_full(fd, buf, 4 + len);
    free(buf);
    return r;
}

int gw_frame_recv(int fd, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    uint32_t be;
    int r = gw_read_full(fd, &be, 4);
    if (r) return r;
    uint32_t len = ntohl(be);
    if (len > GW_FRAME_MAX) return -EMSGSIZE;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return -ENOMEM;
    r = gw_read_full(fd, buf, len);
    if (!r) {
        *out = protobuf_c_message_unpack(desc, NULL, len, buf);
        if (!*out) r = -EBADMSG;
    }
    free(buf);
    return r;
}
