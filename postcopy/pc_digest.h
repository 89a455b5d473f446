/* Post-copy's memory digest: the sum (mod 2^64) over every page of a hash of its frame
 * number and its bytes. A sum does not care in which order pages arrive or on which stream,
 * so the destination adds each page once, as it places it (before the guest can change it),
 * and a page it never received counts as a zero page (a hole on the source, never written).
 * The source sums its frozen memory after the pause. Equal sums prove the destination got
 * exactly the memory the source stopped with. */
#ifndef GW_POSTCOPY_PC_DIGEST_H
#define GW_POSTCOPY_PC_DIGEST_H

#include <stdint.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* Mixes the page's content hash with its frame number (splitmix64's finaliser). */
static inline uint64_t gw_pc_mix(uint64_t pfn, uint64_t content)
{
    uint64_t z = content ^ (pfn * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t gw_pc_content_hash(const uint8_t *page) { return XXH3_64bits(page, 4096); }

static inline uint64_t gw_pc_zero_content_hash(void)
{
    static const uint8_t zero[4096];
    return XXH3_64bits(zero, sizeof zero);
}

static inline uint64_t gw_pc_page_hash(uint64_t pfn, const uint8_t *page)
{
    return gw_pc_mix(pfn, page ? gw_pc_content_hash(page) : gw_pc_zero_content_hash());
}

#endif
