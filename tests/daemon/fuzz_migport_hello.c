/* libFuzzer target: the migration port's decoder of a connection's first record
 * (engine/daemon/migport_hello.c), which strangers on the network reach first. */
#include <stdint.h>
#include <string.h>

#include "engine/daemon/migport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gw_migport_hello h;
    int r = gw_migport_parse_hello(data, size, &h);
    if (r == 1 && (!memchr(h.name, 0, sizeof h.name) || h.stream_index >= h.nstreams ||
                   h.nstreams > GW_MIGPORT_MAX_STREAMS))
        __builtin_trap();
    return 0;
}
