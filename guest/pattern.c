/* Page content generators for the three patterns (see pattern.h):
 *  random  incompressible 64-bit words from splitmix64;
 *  text    ASCII words from a small vocabulary: lz4 shrinks it about 3x;
 *  sparse  7 of 8 (page, generation) pairs are all-zero pages, the rest carry a 16-byte header.
 * The generator writes into a buffer; check compares against a freshly generated copy. */
#include "guest/pattern.h"
#include "guest/abi.h"
#include "guest/rt.h"

static const char *const vocabulary[16] = {
    "godwit ", "migrates ", "twelve ", "thousand ", "kilometres ", "without ", "stopping ",
    "the ", "bar-tailed ", "over ", "pacific ", "ocean ", "in ", "autumn ", "each ", "year.\n",
};

static void fill_text(uint8_t *dst, uint64_t x)
{
    unsigned n = 0;
    while (n < 4096) {
        x = gw_mix64(x);
        const char *w = vocabulary[x & 15];
        while (*w && n < 4096) dst[n++] = (uint8_t)*w++;
    }
}

void gw_pattern_fill(uint8_t *dst, uint32_t pattern, uint64_t seed, uint64_t page, uint32_t gen)
{
    uint64_t x = gw_mix64(seed ^ gw_mix64(page * 0x100000001b3ull + gen));
    if (gen == 0) { memset(dst, 0, 4096); return; }
    if (pattern == GW_PAT_TEXT) { fill_text(dst, x); return; }
    uint64_t *w = (uint64_t *)dst;
    if (pattern == GW_PAT_SPARSE) {
        for (unsigned i = 0; i < 512; i++) w[i] = 0;
        if ((x & 7) == 0) { w[0] = page; w[1] = gen; }
        return;
    }
    for (unsigned i = 0; i < 512; i++) { x = gw_mix64(x); w[i] = x; }
}

int gw_pattern_check(const uint8_t *p, uint32_t pattern, uint64_t seed, uint64_t page, uint32_t gen)
{
    uint8_t expect[4096];
    gw_pattern_fill(expect, pattern, seed, page, gen);
    const uint64_t *a = (const uint64_t *)p, *b = (const uint64_t *)expect;
    for (unsigned i = 0; i < 512; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}
