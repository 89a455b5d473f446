/* XXH3-128 digests of guest memory. Streaming in 1 MiB steps keeps the same code usable for a
 * mapping larger than what one call should hash (and is where progress could be reported). */
#include "engine/codec/digest.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
/* The state on the stack needs its size, which only the static-linking part shows. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#define STEP (1u << 20)

static void hash_range(const uint8_t *p, uint64_t len, struct gw_digest *out)
{
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    while (len) {
        size_t n = len > STEP ? STEP : (size_t)len;
        XXH3_128bits_update(&st, p, n);
        p += n;
        len -= n;
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
    for (unsigned i = 0; i < GW_DIGEST_SIZE; i++) out->b[i] = c.digest[i];
}

void gw_digest_mem(const void *mem, uint64_t len, struct gw_digest *out)
{
    hash_range(mem, len, out);
}

long gw_digest_chunks(const void *mem, uint64_t len, uint64_t chunk_size,
                      struct gw_digest *out, size_t n)
{
    if (chunk_size == 0) return -EINVAL;
    uint64_t need = len / chunk_size + (len % chunk_size != 0);
    if (need > n || need > (uint64_t)LONG_MAX) return -EINVAL;
    const uint8_t *p = mem;
    for (uint64_t i = 0; i < need; i++) {
        uint64_t off = i * chunk_size;
        uint64_t l = len - off < chunk_size ? len - off : chunk_size;
        hash_range(p + off, l, &out[i]);
    }
    return (long)need;
}

char *gw_digest_hex(const struct gw_digest *d, char out[2 * GW_DIGEST_SIZE + 1])
{
    for (unsigned i = 0; i < GW_DIGEST_SIZE; i++) snprintf(out + 2 * i, 3, "%02x", d->b[i]);
    return out;
}
