/* The post-copy page placer: guest memory registered with userfaultfd, so that a vCPU (or a
 * device thread doing DMA, or KVM itself) touching a page that has not arrived blocks in the
 * kernel until the page is placed; a page is placed atomically with UFFDIO_COPY (or
 * UFFDIO_ZEROPAGE), which also wakes whoever waits for it.
 *
 * Mode: MISSING on the memfd's shared mapping, placing with UFFDIO_COPY. The alternative
 * (MINOR over a pre-allocated memfd, written through a second mapping and mapped in with
 * UFFDIO_CONTINUE) needs all memory allocated up front and a second mapping; the two are
 * compared in docs/postcopy.md.
 *
 * Never an older copy over a newer one: UFFDIO_COPY refuses a page that is already there
 * (EEXIST): the first copy of a page wins, and after the switchover the source's memory is
 * frozen, so every copy of a page carries the same bytes; once placed, the guest's own
 * writes are never overwritten. Such refusals are counted (dups).
 *
 * Threads: the placer ops may run from any number of threads at once (one per stream);
 * every shared counter and bitmap is atomic. The fault reader (gw_uffd_read_faults) runs in
 * one thread. */
#ifndef GW_POSTCOPY_UFFD_PLACER_H
#define GW_POSTCOPY_UFFD_PLACER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/common/lat_hist.h"
#include "engine/pump/page_placer.h"
#include "guest/abi.h"

#define GW_PC_MAX_VCPUS GW_MAX_VCPUS
#include "engine/transport/conn.h"

struct gw_uffd_placer {
    int uffd;                 /* owned */
    uint8_t *mem;             /* the registered mapping (the guest's own) */
    uint64_t mem_size;
    uint64_t npages;
    uint64_t *received;       /* one bit per page, set once the page is in place; owned */
    uint64_t *req_ns;         /* per page: when it was requested (0 = not), for latency; owned */
    bool registered;
    bool can_poison;          /* the kernel has UFFDIO_POISON */
    /* counters (atomic) */
    uint64_t placed;          /* pages placed (copy + zero) */
    uint64_t dups;            /* copies refused because the page was already there */
    uint64_t hash_sum;        /* postcopy/pc_digest.h sum over the placed pages */
    uint64_t lat_hist[32];    /* request -> placed, bucket i: [2^i, 2^(i+1)) microseconds */
    uint64_t lat_count, lat_sum_ns, lat_max_ns;
    struct gw_lat_hist lat_q; /* the same, four buckets per power of two: the percentiles */
    /* Per vCPU (like QEMU's postcopy-blocktime): the page it waits for (pfn + 1, 0 = none),
     * since when, and the time it spent blocked so far. Atomic. */
    struct { uint64_t pfn1, since_ns, blocked_ns; } vcpu[GW_PC_MAX_VCPUS];
};

/* Opens a userfaultfd, checks the kernel supports MISSING on shared memory, and registers
 * mem[0..mem_size) (page-aligned, a MAP_SHARED mapping of a memfd whose pages are all holes).
 * Returns 0 or -errno (e says why: no userfaultfd, no permission, no shmem support). */
int gw_uffd_placer_open(struct gw_uffd_placer *u, uint8_t *mem, uint64_t mem_size, struct gw_err *e);

/* The placer ops over u: copy = UFFDIO_COPY, zero = UFFDIO_ZEROPAGE, no direct. */
struct gw_page_placer gw_uffd_placer(struct gw_uffd_placer *u);

static inline bool gw_uffd_placer_has(const struct gw_uffd_placer *u, uint64_t pfn)
{
    return (__atomic_load_n(&u->received[pfn / 64], __ATOMIC_ACQUIRE) >> (pfn % 64)) & 1;
}
/* Places a run of pages [pfn, pfn + n) from src (n pages of data) or as zero pages (src
 * NULL), skipping every page already there, with one ioctl per run of missing pages: how a
 * page source that is not a network peer (a backup's chunk, backup/instant_restore.c) places
 * a whole chunk at once. The caller checked pfn + n against npages. 0 or -errno. */
int gw_uffd_placer_place_run(struct gw_uffd_placer *u, uint64_t pfn, uint64_t n, const uint8_t *src);

/* Pages placed so far. */
uint64_t gw_uffd_placer_count(const struct gw_uffd_placer *u);

/* Reads pending page faults (non-blocking) and stores their pfns in pfns[0..cap) and the
 * faulting threads' ids in tids[0..cap) (0 when the kernel does not say; tids may be NULL);
 * returns how many, or -errno. A fault for a page already placed is woken here and not
 * returned. */
int gw_uffd_read_faults(struct gw_uffd_placer *u, uint64_t *pfns, uint32_t *tids, int cap);

/* vCPU `vcpu` (< GW_PC_MAX_VCPUS) blocks on pfn from now: its blocked time runs until the
 * page is placed. A vCPU blocks on one page at a time; a second call before then is ignored. */
void gw_uffd_placer_vcpu_waits(struct gw_uffd_placer *u, unsigned vcpu, uint64_t pfn);

/* Ends the post-copy phase: unregisters the range; every thread still waiting on a fault
 * retries and finds a plain memfd page (a hole reads as zero). Only once every page the
 * source holds data for is placed. 0 or -errno. */
int gw_uffd_placer_unregister(struct gw_uffd_placer *u);

/* Abandons post-copy: marks every page not placed as poisoned, which wakes whoever waits for
 * it and makes every later access fail (SIGBUS for a thread, an error for the kernel's own
 * accesses, such as KVM's asynchronous page faults, which would otherwise wait for ever and
 * keep the VM from being destroyed) instead of reading zeros where data is missing.
 * 0, -ENOTSUP (kernel without UFFDIO_POISON) or -errno. */
int gw_uffd_placer_poison_missing(struct gw_uffd_placer *u);

/* Latency percentile (0..100) in microseconds: the upper bound of its quarter-power-of-two
 * bucket (at most 1/4 of a power of two above the exact value), capped at the largest
 * latency seen. */
uint64_t gw_uffd_placer_latency_us(const struct gw_uffd_placer *u, unsigned pct);

/* Closes the userfaultfd (which unregisters) and frees the bitmaps. Safe on a zeroed u. */
void gw_uffd_placer_close(struct gw_uffd_placer *u);

#endif
