/* Digests of guest memory: XXH3-128 over the bytes of the whole mapping, so that source and
 * destination can prove they hold the same memory after a migration, and per-chunk digests
 * to find where two copies differ. Works on any buffer; reads only. */
#ifndef GW_CODEC_DIGEST_H
#define GW_CODEC_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_DIGEST_SIZE 16u

struct gw_digest {
    uint8_t b[GW_DIGEST_SIZE]; /* canonical (big-endian) XXH3-128, as on the wire */
};

/* XXH3-128 of mem[0..len). len 0 is allowed. */
void gw_digest_mem(const void *mem, uint64_t len, struct gw_digest *out);

/* Digest of each chunk_size piece of mem[0..len) into out[0..n), the last piece possibly
 * shorter; n must be >= ceil(len / chunk_size). Returns the number of digests written, or
 * -EINVAL when chunk_size is 0 or n is too small. */
long gw_digest_chunks(const void *mem, uint64_t len, uint64_t chunk_size,
                      struct gw_digest *out, size_t n);

static inline bool gw_digest_equal(const struct gw_digest *a, const struct gw_digest *b)
{
    unsigned d = 0;
    for (unsigned i = 0; i < GW_DIGEST_SIZE; i++) d |= a->b[i] ^ b->b[i];
    return d == 0;
}

/* Lowercase hex of d into out[33]; returns out. */
char *gw_digest_hex(const struct gw_digest *d, char out[2 * GW_DIGEST_SIZE + 1]);

#endif
