/* Data-range iteration over guest RAM (see mem_data.h). */
#include "engine/vm/mem_data.h"

#include <errno.h>
#include <unistd.h>

#include "engine/vm/guest_mem.h"

int gw_mem_for_each_data_in(const struct gw_guest_mem *m, uint64_t from, uint64_t to,
                            int (*fn)(uint64_t off, uint64_t len, void *ctx), void *ctx)
{
    if (to > m->size) to = m->size;
    if (from >= to) return 0;
    if (m->memfd < 0) return fn(from, to - from, ctx);
    uint64_t off = from;
    while (off < to) {
        off_t d = lseek(m->memfd, (off_t)off, SEEK_DATA);
        if (d < 0) { if (errno == ENXIO) return 0; return -errno; }
        if ((uint64_t)d >= to) break;
        off_t h = lseek(m->memfd, d, SEEK_HOLE);
        if (h < 0) return -errno;
        uint64_t end = (uint64_t)h < to ? (uint64_t)h : to;
        if ((uint64_t)d >= end) break;
        int r = fn((uint64_t)d, end - (uint64_t)d, ctx);
        if (r) return r;
        off = end;
    }
    return 0;
}

int gw_mem_for_each_data(const struct gw_guest_mem *m,
                         int (*fn)(uint64_t off, uint64_t len, void *ctx), void *ctx)
{
    return gw_mem_for_each_data_in(m, 0, m->size, fn, ctx);
}
