/* The migration port's one decoder of outside input (see migport.c): the first wire record
 * of a connection, which must be the source's HELLO for one stream of a session. */
#ifndef GW_DAEMON_MIGPORT_H
#define GW_DAEMON_MIGPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/codec/wire.h"

/* Largest first record the port looks at: header plus a handshake-sized payload. */
#define GW_MIGPORT_HELLO_MAX (GW_WIRE_HEADER_SIZE + GW_WIRE_MAX_HANDSHAKE_PAYLOAD)

/* Most streams of a session the port takes (the runner's own limit, --streams 1..16). */
#define GW_MIGPORT_MAX_STREAMS 16u

/* What the port needs of a HELLO: which session, which stream of how many, and (stream 0)
 * the VM. */
struct gw_migport_hello {
    uint8_t session_id[GW_WIRE_SESSION_ID_SIZE];
    uint32_t stream_index, nstreams;
    char name[64];               /* stream 0: the VM, a valid VM name; "" on other streams */
};

/* buf holds the first n bytes received (n may be more or less than one record). Returns 1
 * and fills *out when they start with a complete, acceptable HELLO; 0 when more bytes are
 * needed; -1 when the connection must be refused (bad magic, type, flags or length,
 * undecodable, no 16-byte session id, nstreams not 1..GW_MIGPORT_MAX_STREAMS, stream index
 * not below it, stream 0 without a valid VM name). Reads nothing beyond buf[n). */
int gw_migport_parse_hello(const uint8_t *buf, size_t n, struct gw_migport_hello *out);

#endif
