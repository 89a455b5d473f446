/* libFuzzer target: the migration port's decoder of a connection's first bytes, the preamble
 * (engine/daemon/migport_hello.c, engine/transport/tls.c), which strangers reach first. */
#include <stdint.h>
#include <string.h>

#include "engine/daemon/migport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_migport_hello h;
    int r = gw_migport_parse_hello(data, size, &h);
    if (r == 1 && (size < GW_PREAMBLE_SIZE || h.stream_index >= h.nstreams || h.nstreams > GW_MIGPORT_MAX_STREAMS ||
                   !gw_token_set(h.token)))
        __builtin_trap();
    return 0;
}
