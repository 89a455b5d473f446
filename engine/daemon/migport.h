/* The migration port's one decoder of outside input (see migport.c): the first wire record
 * of a connection, which must be the source's HELLO for stream 0 of a one-stream session. */
#ifndef GW_DAEMON_MIGPORT_H
#define GW_DAEMON_MIGPORT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/codec/wire.h"

/* Largest first record the port looks at: header plus a handshake-sized payload. */
#define GW_MIGPORT_HELLO_MAX (GW_WIRE_HEADER_SIZE + GW_WIRE_MAX_HANDSHAKE_PAYLOAD)

/* buf holds the first n bytes received (n may be more or less than one record). Returns 1
 * and copies the announced VM name (a valid VM name shorter than namelen) when they start
 * with a complete, acceptable HELLO; 0 when more bytes are needed; -1 when the connection
 * must be refused (bad magic, type, flags or length, undecodable, not stream 0 of 1, no or
 * bad VM name). Reads nothing beyond buf[n). */
int gw_migport_parse_hello(const uint8_t *buf, size_t n, char *name, size_t namelen);

#endif
