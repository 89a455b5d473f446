/* Fresh-memory probe (see bench_fresh.h). */
#include "bench/bench_fresh.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/common/util.h"

int gw_bench_fresh_page_us(size_t bytes, double *us)
{
    size_t pages = bytes / 4096;
    if (!pages) return -EINVAL;
    uint8_t *m = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return -errno;
    /* A store per page, as a receiver's copy makes: the kernel's allocation, its zeroing and
     * whatever the host below adds. Not MADV_POPULATE_WRITE, which older kernels lack. */
    uint64_t t0 = gw_now_ns();
    for (size_t i = 0; i < pages; i++) ((volatile uint8_t *)m)[i * 4096] = 1;
    uint64_t t1 = gw_now_ns();
    munmap(m, pages * 4096);
    *us = (double)(t1 - t0) / 1e3 / (double)pages;
    return 0;
}

int gw_bench_place_floor_ms(size_t bytes, double *ms)
{
    enum { RUN = 256u << 10 };
    bytes = bytes / 4096 * 4096;
    if (!bytes) return -EINVAL;
    int fd = memfd_create("godwit-bench-place", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    uint8_t *buf = malloc(RUN);
    int r = buf && !ftruncate(fd, (off_t)bytes) ? 0 : buf ? -errno : -ENOMEM;
    if (!r) {
        memset(buf, 0x5a, RUN);   /* warm and non-zero: the source's pages, not holes */
        uint64_t t0 = gw_now_ns();
        for (size_t off = 0; !r && off < bytes; off += RUN)
            r = gw_pwrite_full(fd, buf, bytes - off < RUN ? bytes - off : RUN, (off_t)off);
        *ms = (double)(gw_now_ns() - t0) / 1e6;
    }
    free(buf);
    close(fd);
    return r;
}
