/* The migration port's decoder of a connection's first bytes (see migport.h), alone in its
 * file so that a fuzz target can instrument exactly it. */
#include "engine/daemon/migport.h"

#include <string.h>

int gw_migport_parse_hello(const uint8_t *buf, size_t n, struct gw_migport_hello *out)
{
    struct gw_preamble p;
    int r = gw_preamble_parse(buf, n, &p);
    if (r <= 0) return r;
    /* Only sessions PrepareIncoming announced come here: they always carry a token. */
    if (!gw_token_set(p.token) || p.nstreams > GW_MIGPORT_MAX_STREAMS) return -1;
    memcpy(out->token, p.token, sizeof out->token);
    out->stream_index = p.stream_index;
    out->nstreams = p.nstreams;
    out->tls = p.tls;
    return 1;
}
