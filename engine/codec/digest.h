/* The memory digest as it travels: 16 bytes, the canonical (big-endian) form of the
 * XXH3-128 that engine/vm/chunk_digest.h defines over guest memory. Comparing and printing
 * only: the one digest of memory is computed there. */
#ifndef GW_CODEC_DIGEST_H
#define GW_CODEC_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_DIGEST_SIZE 16u

struct gw_digest {
    uint8_t b[GW_DIGEST_SIZE]; /* canonical (big-endian) XXH3-128, as on the wire */
};

/* Constant time: digests come from the network. */
static inline bool gw_digest_equal(const struct gw_digest *a, const struct gw_digest *b)
{
    unsigned d = 0;
    for (unsigned i = 0; i < GW_DIGEST_SIZE; i++) d |= a->b[i] ^ b->b[i];
    return d == 0;
}

/* Lowercase hex of d into out[33]; returns out. */
char *gw_digest_hex(const struct gw_digest *d, char out[2 * GW_DIGEST_SIZE + 1]);

#endif
