/* Guest RAM in a memfd, split into regions around the MMIO hole (see guest_mem.h). */
#include "engine/vm/guest_mem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guest/abi.h"

int gw_guest_mem_create(struct gw_guest_mem *m, uint64_t size, const char *name)
{
    memset(m, 0, sizeof *m);
    m->memfd = -1;
    if (size < GW_MIN_MEMORY || size % (2ull << 20)) return -EINVAL;
    /* Regions: [0, hole) and [4G, 4G + rest). */
    uint64_t below = size < GW_RAM_HOLE_START ? size : GW_RAM_HOLE_START;
    uint64_t above = size - below;

    char fdname[64];
    snprintf(fdname, sizeof fdname, "godwit-ram-%s", name ? name : "vm");
    int fd = memfd_create(fdname, MFD_CLOEXEC);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)size) < 0) { int e = -errno; close(fd); return e; }
    /* MAP_NORESERVE: untouched guest pages cost nothing; the memfd has holes until written. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) { int e = -errno; close(fd); return e; }
    madvise(p, size, MADV_DONTDUMP);

    m->memfd = fd;
    m->base = p;
    m->size = size;
    m->regions[0] = (struct gw_mem_region){.gpa = 0, .size = below, .offset = 0, .hva = m->base};
    m->nregions = 1;
    if (above) {
        m->regions[1] = (struct gw_mem_region){
            .gpa = GW_RAM_HOLE_END, .size = above, .offset = below, .hva = m->base + below};
        m->nregions = 2;
    }
    return 0;
}

void gw_guest_mem_wrap(struct gw_guest_mem *m, void *buf, uint64_t size)
{
    memset(m, 0, sizeof *m);
    m->memfd = -1;
    m->base = buf;
    m->size = size;
    m->regions[0] = (struct gw_mem_region){.gpa = 0, .size = size, .offset = 0, .hva = buf};
    m->nregions = 1;
}

void gw_guest_mem_destroy(struct gw_guest_mem *m)
{
    if (m->memfd >= 0) {
        if (m->base) munmap(m->base, m->size);
        close(m->memfd);
    }
    memset(m, 0, sizeof *m);
    m->memfd = -1;
}

void *gw_guest_mem_ptr(const struct gw_guest_mem *m, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < m->nregions; i++) {
        const struct gw_mem_region *r = &m->regions[i];
        if (gpa < r->gpa) continue;
        uint64_t off = gpa - r->gpa;
        if (off >= r->size) continue;
        if (len > r->size - off) return NULL;
        return r->hva + off;
    }
    return NULL;
}

uint64_t gw_guest_mem_offset(const struct gw_guest_mem *m, uint64_t gpa)
{
    for (unsigned i = 0; i < m->nregions; i++) {
        const struct gw_mem_region *r = &m->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size) return r->offset + (gpa - r->gpa);
    }
    return UINT64_MAX;
}

uint64_t gw_guest_mem_gpa(const struct gw_guest_mem *m, uint64_t off)
{
    for (unsigned i = 0; i < m->nregions; i++) {
        const struct gw_mem_region *r = &m->regions[i];
        if (off >= r->offset && off - r->offset < r->size) return r->gpa + (off - r->offset);
    }
    return UINT64_MAX;
}
