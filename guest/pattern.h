/* Page contents the memory workloads write and verify. A page's content is a pure function
 * of (seed, page index, generation, pattern), so the verifier can recompute what any page
 * must hold from the generation table alone. Generation 0 means "never written": all zero. */
#ifndef GW_GUEST_PATTERN_H
#define GW_GUEST_PATTERN_H

#include <stdint.h>

/* Fills the 4 KiB page at dst. */
void gw_pattern_fill(uint8_t *dst, uint32_t pattern, uint64_t seed, uint64_t page, uint32_t gen);
/* Returns 1 when the page at p holds what gw_pattern_fill would write, else 0. */
int gw_pattern_check(const uint8_t *p, uint32_t pattern, uint64_t seed, uint64_t page, uint32_t gen);

#endif
