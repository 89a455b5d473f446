/* The memory digest's wire form (see digest.h). */
#include "engine/codec/digest.h"

#include <stdio.h>

char *gw_digest_hex(const struct gw_digest *d, char out[2 * GW_DIGEST_SIZE + 1])
{
    for (unsigned i = 0; i < GW_DIGEST_SIZE; i++) snprintf(out + 2 * i, 3, "%02x", d->b[i]);
    return out;
}
