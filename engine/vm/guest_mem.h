/* Guest RAM: one memfd (MAP_SHARED, so another process or a uffd handler can reach the same
 * pages) mapped once, exposed to KVM as one memory slot per region. Regions follow the PC
 * layout: RAM below the 3 GiB hole, the rest from 4 GiB up. Everything that turns a
 * guest-physical address from outside (a device, the network, a file) into a pointer goes
 * through gw_guest_mem_ptr, which refuses any range not wholly inside one region. */
#ifndef GW_VM_GUEST_MEM_H
#define GW_VM_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_MEM_MAX_REGIONS 4

struct gw_mem_region {
    uint64_t gpa;     /* guest-physical start */
    uint64_t size;    /* bytes, a multiple of the page size */
    uint64_t offset;  /* offset in the memfd and in the host mapping */
    uint8_t *hva;     /* host address of gpa: base + offset */
};

struct gw_guest_mem {
    int memfd;        /* owned; -1 when the memory is a plain buffer (unit tests) */
    uint8_t *base;    /* mapping of the whole memfd; owned when memfd >= 0 */
    uint64_t size;    /* total RAM bytes (sum of region sizes) */
    unsigned nregions;
    struct gw_mem_region regions[GW_MEM_MAX_REGIONS];
};

/* Creates size bytes of guest RAM (a multiple of 2 MiB, at least GW_MIN_MEMORY) laid out
 * around the MMIO hole. Returns 0 or -errno; on error *m is left closed. */
int gw_guest_mem_create(struct gw_guest_mem *m, uint64_t size, const char *name);

/* Wraps a caller-owned buffer as guest RAM with a single region at gpa 0 (tests, tools).
 * gw_guest_mem_destroy then releases nothing. */
void gw_guest_mem_wrap(struct gw_guest_mem *m, void *buf, uint64_t size);

/* Unmaps and closes what gw_guest_mem_create took. Safe on a zeroed or wrapped struct. */
void gw_guest_mem_destroy(struct gw_guest_mem *m);

/* Host pointer for [gpa, gpa+len) when the whole range lies in one region, else NULL.
 * len 0 is allowed and checks only that gpa is inside RAM. */
void *gw_guest_mem_ptr(const struct gw_guest_mem *m, uint64_t gpa, uint64_t len);

/* Memfd offset (== index into base) of gpa, or UINT64_MAX when gpa is not RAM. */
uint64_t gw_guest_mem_offset(const struct gw_guest_mem *m, uint64_t gpa);

/* Guest-physical address of memfd offset off, or UINT64_MAX when off >= size. */
uint64_t gw_guest_mem_gpa(const struct gw_guest_mem *m, uint64_t off);

#endif
