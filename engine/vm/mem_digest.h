/* Digest of all guest memory for snapshots: the same value as the incremental migration
 * digest (chunk_digest.h) of the same contents, computed in one pass. Holes of the memfd are
 * not read (reading a shmem hole through the mapping would allocate it): their chunks count
 * as zeros, which is what they hold. Two VMs with equal RAM contents have equal digests,
 * whatever their holes. */
#ifndef GW_VM_MEM_DIGEST_H
#define GW_VM_MEM_DIGEST_H

#include <stdint.h>

struct gw_guest_mem;

struct gw_mem_digest {
    uint64_t hi, lo;
};

/* Returns 0 or -errno. Works on wrapped buffers too (no memfd: every byte is read). */
int gw_mem_digest(const struct gw_guest_mem *m, struct gw_mem_digest *out);
/* Writes 32 hex digits and a NUL into buf[33]. */
void gw_mem_digest_hex(const struct gw_mem_digest *d, char buf[33]);

#endif
