/* Where received pages go: the receiving side's decoder (page_recv.h) checks and decodes a
 * batch and hands each page to a placer; it never writes guest memory itself. Placers:
 *   - direct (placer_direct.c): pre-copy and restore into memory nobody runs on yet: raw
 *     pages are received straight into guest memory, zero pages leave holes alone;
 *   - next, for post-copy and instant restore: UFFDIO_COPY into a registered range (copy and
 *     zero, no direct), or UFFDIO_CONTINUE over a second mapping of the memfd (direct returns
 *     the second mapping, placed issues the CONTINUE).
 *
 * The decoder calls a placer from one thread per stream; pages of different streams are
 * different pages (engine/pump/pump.h), so a placer needs no lock for the pages themselves,
 * only for state it shares across pages (bitmaps: atomics).
 *
 * Every pfn handed to a placer is < mem_size / 4096 and every run [pfn, pfn + n) lies inside
 * memory: the decoder checks the whole batch first. */
#ifndef GW_PUMP_PAGE_PLACER_H
#define GW_PUMP_PAGE_PLACER_H

#include <stdint.h>

struct gw_page_placer_ops {
    /* Where the raw bytes of pages [pfn, pfn + n) may be received in place (contiguous,
     * n * 4096 bytes), or NULL: then the decoder receives them into its own buffer and calls
     * copy for each. */
    uint8_t *(*direct)(void *ctx, uint64_t pfn, uint32_t n);
    /* Optional: called for a run before its bytes are received at direct(pfn, n), so a
     * placer can fault the pages in ahead (one call instead of one fault per page). */
    void (*prepare)(void *ctx, uint64_t pfn, uint32_t n);
    /* Pages [pfn, pfn + n) were received in full at direct(pfn, n), or the sender wrote
     * them into their place itself (RDMA WRITE into this side's registered guest memory,
     * GW_PAGE_PLACED): they are now in place (note them: dirty state, digest, received
     * bitmap; UFFDIO_CONTINUE them). A placer without it cannot take RDMA pages.
     * Returns 0 or -errno. */
    int (*placed)(void *ctx, uint64_t pfn, uint32_t n);
    /* One decoded page, src[0..4096) in the decoder's buffer: put it in place (memcpy,
     * UFFDIO_COPY). Returns 0 or -errno. */
    int (*copy)(void *ctx, uint64_t pfn, const uint8_t *src);
    /* Optional: n consecutive raw pages [pfn, pfn + n) from src[0..n * 4096) in the
     * decoder's buffer, in one go (pwrite into a memfd, one UFFDIO_COPY of the run). Used
     * when there is no direct place; without it, copy is called for each page. */
    int (*write_run)(void *ctx, uint64_t pfn, uint32_t n, const uint8_t *src);
    /* The page is all zero bytes (leave a hole, memset, UFFDIO_ZEROPAGE). 0 or -errno. */
    int (*zero)(void *ctx, uint64_t pfn);
};

struct gw_page_placer {
    const struct gw_page_placer_ops *ops;
    void *ctx;
    uint64_t mem_size;       /* multiple of 4096: the bound every pfn is checked against */
};

/* The direct placer: writes into mem[0..mem_size), which nobody else writes while it is in
 * use. Optional bitmaps (one bit per page: bit pfn % 64 of word pfn / 64, zeroed by the
 * caller, at least mem_size / 4096 bits rounded up to 64):
 *   touched  set (atomic OR, release) for every page placed, zero pages included, after the
 *            page is in place: what a digest must read again;
 *   written  given for fresh memory (all holes of a memfd): the pages written since. A zero
 *            page whose bit is clear is left alone entirely (not even read: reading a memfd
 *            hole through a shared mapping allocates it), and runs of raw pages not yet
 *            written are faulted in with one madvise(MADV_POPULATE_WRITE) before they come. */
struct gw_placer_direct {
    uint8_t *mem;
    uint64_t mem_size;
    uint64_t *touched;
    uint64_t *written;
    int fd;                 /* set by the constructors: the memfd behind mem, or -1 */
};

/* A placer over d (caller-owned, must outlive the placer's use): raw pages are received in
 * place, straight into mem. */
struct gw_page_placer gw_placer_direct(struct gw_placer_direct *d);
/* The same for memory that is a shared mapping of memfd fd at offset 0: raw pages are
 * received into the decoder's buffer and written with pwrite. A page written into a memfd
 * hole that way is allocated without being zeroed first; here that is about twice as fast
 * as faulting it in (which zeroes it) and copying into it, and the zeroing was the
 * destination's largest cost. */
struct gw_page_placer gw_placer_direct_fd(struct gw_placer_direct *d, int fd);

#endif
