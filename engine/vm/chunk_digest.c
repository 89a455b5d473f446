/* Incremental chunked memory digest (see chunk_digest.h). */
#include "engine/vm/chunk_digest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define CHUNK_BYTES (GW_CHUNK_DIGEST_PAGES * 4096ull)

int gw_chunk_digest_init(struct gw_chunk_digest *d, const uint8_t *mem, uint64_t mem_size)
{
    memset(d, 0, sizeof *d);
    if (mem_size % CHUNK_BYTES) return -EINVAL;
    d->mem = mem;
    d->mem_size = mem_size;
    d->nchunks = mem_size / CHUNK_BYTES;
    d->stale_words = (d->nchunks + 63) / 64;
    d->hashes = malloc(d->nchunks * 16 + 16);
    d->stale = calloc(d->stale_words + 1, 8);
    d->ngroups = (d->nchunks + GW_CHUNK_DIGEST_GROUP - 1) / GW_CHUNK_DIGEST_GROUP;
    d->group_hashes = malloc(d->ngroups * 16 + 16);
    d->group_stale = calloc((d->ngroups + 63) / 64 + 1, 8);
    void *zeros = calloc(1, CHUNK_BYTES);
    if (!d->hashes || !d->stale || !zeros || !d->group_hashes || !d->group_stale) {
        free(zeros);
        gw_chunk_digest_free(d);
        return -ENOMEM;
    }
    XXH128_hash_t z = XXH3_128bits(zeros, CHUNK_BYTES);
    free(zeros);
    d->zero_hi = z.high64;
    d->zero_lo = z.low64;
    for (uint64_t c = 0; c < d->nchunks; c++) { d->hashes[2 * c] = z.high64; d->hashes[2 * c + 1] = z.low64; }
    for (uint64_t g = 0; g < d->ngroups; g++) d->group_stale[g / 64] |= 1ull << (g % 64);
    return 0;
}

void gw_chunk_digest_free(struct gw_chunk_digest *d)
{
    free(d->hashes);
    free(d->stale);
    free(d->group_hashes);
    free(d->group_stale);
    memset(d, 0, sizeof *d);
}

void gw_chunk_digest_mark(struct gw_chunk_digest *d, uint64_t pfn, uint64_t n)
{
    if (!n || pfn >= d->mem_size / 4096) return;
    uint64_t last = pfn + n - 1;
    if (last >= d->mem_size / 4096 || last < pfn) last = d->mem_size / 4096 - 1;
    for (uint64_t c = pfn / GW_CHUNK_DIGEST_PAGES; c <= last / GW_CHUNK_DIGEST_PAGES; c++)
        __atomic_fetch_or(&d->stale[c / 64], 1ull << (c % 64), __ATOMIC_RELAXED);
}

void gw_chunk_digest_mark_bitmap(struct gw_chunk_digest *d, uint64_t *bitmap, uint64_t words, int clear)
{
    uint64_t max_words = (d->mem_size / 4096 + 63) / 64;
    if (words > max_words) words = max_words;
    for (uint64_t w = 0; w < words; w++) {
        uint64_t bits = clear ? __atomic_exchange_n(&bitmap[w], 0, __ATOMIC_ACQ_REL)
                              : __atomic_load_n(&bitmap[w], __ATOMIC_ACQUIRE);
        if (!bits) continue;
        /* 64 pages = 64 / GW_CHUNK_DIGEST_PAGES chunks: mark each that has a bit. */
        const unsigned per = 64 / GW_CHUNK_DIGEST_PAGES;
        const uint64_t mask = (1ull << GW_CHUNK_DIGEST_PAGES) - 1;
        for (unsigned q = 0; q < per; q++) {
            if (!((bits >> (GW_CHUNK_DIGEST_PAGES * q)) & mask)) continue;
            uint64_t c = w * per + q;
            __atomic_fetch_or(&d->stale[c / 64], 1ull << (c % 64), __ATOMIC_RELAXED);
        }
    }
}

/* One chunk's hash; its group is marked for the next refresh. */
static void hash_chunk(struct gw_chunk_digest *d, uint64_t c)
{
    XXH128_hash_t h = XXH3_128bits(d->mem + c * CHUNK_BYTES, CHUNK_BYTES);
    d->hashes[2 * c] = h.high64;
    d->hashes[2 * c + 1] = h.low64;
    uint64_t g = c / GW_CHUNK_DIGEST_GROUP;
    __atomic_fetch_or(&d->group_stale[g / 64], 1ull << (g % 64), __ATOMIC_RELAXED);
}

void gw_chunk_digest_hash_pages(struct gw_chunk_digest *d, const uint64_t *pfns, uint32_t n)
{
    uint64_t rehashed = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t c = pfns[i] / GW_CHUNK_DIGEST_PAGES;
        if (c >= d->nchunks) continue;
        uint64_t bit = 1ull << (c % 64);
        /* Taking the bit first: a mark that comes after it (a newer copy queued) sets it
         * again, and the chunk is hashed again later. */
        if (!(__atomic_fetch_and(&d->stale[c / 64], ~bit, __ATOMIC_ACQ_REL) & bit)) continue;
        hash_chunk(d, c);
        rehashed++;
    }
    __atomic_fetch_add(&d->rehashed, rehashed, __ATOMIC_RELAXED);
}

void gw_chunk_digest_set_from(struct gw_chunk_digest *d, uint64_t pfn, uint64_t n, const uint8_t *data)
{
    /* Whole chunks [first, last) come from data; the pages of a chunk cut at either end only
     * mark it (its other pages are not in data). */
    uint64_t end = pfn + n, first = (pfn + GW_CHUNK_DIGEST_PAGES - 1) / GW_CHUNK_DIGEST_PAGES;
    uint64_t last = end / GW_CHUNK_DIGEST_PAGES;
    if (first >= last) {
        gw_chunk_digest_mark(d, pfn, n);
        return;
    }
    if (pfn % GW_CHUNK_DIGEST_PAGES) gw_chunk_digest_mark(d, pfn, first * GW_CHUNK_DIGEST_PAGES - pfn);
    if (end % GW_CHUNK_DIGEST_PAGES) gw_chunk_digest_mark(d, last * GW_CHUNK_DIGEST_PAGES, end % GW_CHUNK_DIGEST_PAGES);
    const uint8_t *whole = data + (first * GW_CHUNK_DIGEST_PAGES - pfn) * 4096;
    for (uint64_t c = first; c < last && c < d->nchunks; c++) {
        XXH128_hash_t h = XXH3_128bits(whole + (c - first) * CHUNK_BYTES, CHUNK_BYTES);
        d->hashes[2 * c] = h.high64;
        d->hashes[2 * c + 1] = h.low64;
        uint64_t g = c / GW_CHUNK_DIGEST_GROUP;
        /* Atomic: threads setting chunks of one group word at once (a restore's decoders). */
        __atomic_fetch_or(&d->group_stale[g / 64], 1ull << (g % 64), __ATOMIC_RELAXED);
    }
}

void gw_chunk_digest_placed(struct gw_chunk_digest *d, const uint64_t *pfns, const uint8_t *const *from, uint32_t n)
{
    for (uint32_t i = 0, k; i < n; i += k) {
        /* A run of consecutive pages written from one contiguous buffer goes to set_from (its
         * whole chunks from the buffer, the chunks it cuts marked); a page without a buffer
         * is marked. */
        k = 1;
        if (!from[i]) {
            gw_chunk_digest_mark(d, pfns[i], 1);
            continue;
        }
        while (i + k < n && pfns[i + k] == pfns[i] + k && from[i + k] == from[i] + (size_t)k * 4096) k++;
        gw_chunk_digest_set_from(d, pfns[i], k, from[i]);
    }
    gw_chunk_digest_hash_pages(d, pfns, n);
}

void gw_chunk_digest_refresh(struct gw_chunk_digest *d)
{
    for (uint64_t w = 0; w < d->stale_words; w++) {
        uint64_t bits = __atomic_exchange_n(&d->stale[w], 0, __ATOMIC_ACQ_REL);
        while (bits) {
            uint64_t c = w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (c >= d->nchunks) break;
            hash_chunk(d, c);
            d->rehashed++;
        }
    }
    for (uint64_t w = 0; w < (d->ngroups + 63) / 64; w++) {
        uint64_t bits = d->group_stale[w];
        d->group_stale[w] = 0;
        while (bits) {
            uint64_t g = w * 64 + (uint64_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (g >= d->ngroups) break;
            uint64_t first = g * GW_CHUNK_DIGEST_GROUP;
            uint64_t n = d->nchunks - first < GW_CHUNK_DIGEST_GROUP ? d->nchunks - first : GW_CHUNK_DIGEST_GROUP;
            XXH128_hash_t h = XXH3_128bits(&d->hashes[2 * first], n * 16);
            d->group_hashes[2 * g] = h.high64;
            d->group_hashes[2 * g + 1] = h.low64;
        }
    }
}

void gw_chunk_digest_final(struct gw_chunk_digest *d, uint8_t out[16])
{
    gw_chunk_digest_refresh(d);
    XXH128_hash_t h = XXH3_128bits(d->group_hashes, d->ngroups * 16);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, 16);
}

int gw_chunk_digest_buffer(const uint8_t *mem, uint64_t mem_size, uint8_t out[16])
{
    struct gw_chunk_digest d;
    int r = gw_chunk_digest_init(&d, mem, mem_size);
    if (r) return r;
    gw_chunk_digest_mark(&d, 0, mem_size / 4096);
    gw_chunk_digest_final(&d, out);
    gw_chunk_digest_free(&d);
    return 0;
}
