/* Guest memory digest for snapshots (see mem_digest.h): the chunk digest, with only the
 * chunks that hold data marked. */
#include "engine/vm/mem_digest.h"

#include <stdio.h>

#include "engine/vm/chunk_digest.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/mem_data.h"

static int mark_data(uint64_t off, uint64_t len, void *ctx)
{
    gw_chunk_digest_mark(ctx, off / 4096, (off % 4096 + len + 4095) / 4096);
    return 0;
}

int gw_mem_digest(const struct gw_guest_mem *m, struct gw_mem_digest *out)
{
    struct gw_chunk_digest d;
    int r = gw_chunk_digest_init(&d, m->base, m->size);
    if (r) return r;
    r = gw_mem_for_each_data(m, mark_data, &d);
    if (!r) {
        uint8_t b[16];
        gw_chunk_digest_final(&d, b);
        out->hi = out->lo = 0;
        for (int i = 0; i < 8; i++) {
            out->hi = out->hi << 8 | b[i];
            out->lo = out->lo << 8 | b[8 + i];
        }
    }
    gw_chunk_digest_free(&d);
    return r;
}

void gw_mem_digest_hex(const struct gw_mem_digest *d, char buf[33])
{
    snprintf(buf, 33, "%016llx%016llx", (unsigned long long)d->hi, (unsigned long long)d->lo);
}
