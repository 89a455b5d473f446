/* libFuzzer target: the migration port's decoder of a connection's first record
 * (engine/daemon/migport_hello.c), which strangers on the network reach first. */
#include <stdint.h>
#include <string.h>

#include "engine/daemon/migport.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[64];
    int r = gw_migport_parse_hello(data, size, name, sizeof name);
    if (r == 1 && strlen(name) >= sizeof name) __builtin_trap();
    return 0;
}
