/* Guest memory digest (see mem_digest.h). */
#include "engine/vm/mem_digest.h"

#include <errno.h>
#include <stdio.h>
#include <xxhash.h>

#include "engine/vm/guest_mem.h"
#include "engine/vm/mem_data.h"

struct digest_walk {
    XXH3_state_t *st;
    const struct gw_guest_mem *m;
    uint64_t pos;  /* bytes hashed so far */
};

static const uint8_t zeros[1 << 16];

static void hash_zeros(struct digest_walk *w, uint64_t len)
{
    while (len) {
        uint64_t n = len < sizeof zeros ? len : sizeof zeros;
        XXH3_128bits_update(w->st, zeros, n);
        len -= n;
    }
}

static int on_data(uint64_t off, uint64_t len, void *ctx)
{
    struct digest_walk *w = ctx;
    hash_zeros(w, off - w->pos);
    XXH3_128bits_update(w->st, w->m->base + off, len);
    w->pos = off + len;
    return 0;
}

int gw_mem_digest(const struct gw_guest_mem *m, struct gw_mem_digest *out)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) return -ENOMEM;
    XXH3_128bits_reset(st);
    struct digest_walk w = {.st = st, .m = m, .pos = 0};
    int r = gw_mem_for_each_data(m, on_data, &w);
    if (!r) {
        hash_zeros(&w, m->size - w.pos);
        XXH128_hash_t h = XXH3_128bits_digest(st);
        out->hi = h.high64;
        out->lo = h.low64;
    }
    XXH3_freeState(st);
    return r;
}

void gw_mem_digest_hex(const struct gw_mem_digest *d, char buf[33])
{
    snprintf(buf, 33, "%016llx%016llx", (unsigned long long)d->hi, (unsigned long long)d->lo);
}
