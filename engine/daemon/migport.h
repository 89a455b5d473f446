/* The migration port's one decoder of outside input (see migport.c): the first bytes of a
 * connection, which must be the source's preamble (engine/transport/tls.h) for one stream of
 * a session: its session token, its stream index and count, and whether TLS follows. */
#ifndef GW_DAEMON_MIGPORT_H
#define GW_DAEMON_MIGPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/transport/tls.h"

/* Largest first chunk the port looks at. */
#define GW_MIGPORT_HELLO_MAX GW_PREAMBLE_SIZE

/* Most streams of a session the port takes (the runner's own limit, --streams 1..16). */
#define GW_MIGPORT_MAX_STREAMS 16u

/* What the port needs of a stream's start: the session (its token names the reserved VM)
 * and which stream of how many. */
struct gw_migport_hello {
    uint8_t token[GW_SEC_TOKEN_SIZE];
    uint32_t stream_index, nstreams;
    bool tls;
};

/* buf holds the first n bytes received (n may be more or less than a preamble). Returns 1
 * and fills *out when they start with an acceptable preamble; 0 when more bytes are needed;
 * -1 when the connection must be refused (not a preamble, no token, nstreams not
 * 1..GW_MIGPORT_MAX_STREAMS, index not below it). Reads nothing beyond buf[n). */
int gw_migport_parse_hello(const uint8_t *buf, size_t n, struct gw_migport_hello *out);

#endif
