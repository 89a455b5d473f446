/* The direct placer (see page_placer.h): raw pages land in guest memory straight from the
 * socket; copies, zero pages and the bitmaps go through the codec's gw_page_apply, which
 * holds the rules (a zero page on fresh memory leaves a hole alone). */
#include "engine/pump/page_placer.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/codec/page_codec.h"
#include "engine/common/util.h"

static struct gw_page_mem sink_of(const struct gw_placer_direct *d)
{
    return (struct gw_page_mem){ .mem = d->mem, .mem_size = d->mem_size, .touched = d->touched,
                                  .written = d->written };
}

static uint8_t *direct_at(void *ctx, uint64_t pfn, uint32_t n)
{
    struct gw_placer_direct *d = ctx;
    (void)n;
    return d->mem + pfn * GW_PAGE_SIZE;
}

/* On fresh memory the destination pays for every new page: allocation, zeroing, a page
 * fault. Faulting a run in with one madvise before the receive saves the per-page fault
 * entry. Best effort: an old kernel (EINVAL) just faults as before. A run whose first page
 * is already written is there already. */
static void direct_prepare(void *ctx, uint64_t pfn, uint32_t n)
{
    struct gw_placer_direct *d = ctx;
    if (!d->written) return;
    if (__atomic_load_n(&d->written[pfn / 64], __ATOMIC_RELAXED) & (1ull << (pfn % 64))) return;
    madvise(d->mem + pfn * GW_PAGE_SIZE, (size_t)n * GW_PAGE_SIZE, MADV_POPULATE_WRITE);
}

static int direct_placed(void *ctx, uint64_t pfn, uint32_t n)
{
    struct gw_placer_direct *d = ctx;
    struct gw_page_mem s = sink_of(d);
    for (uint32_t i = 0; i < n; i++) {
        struct gw_page_desc desc = { .pfn = pfn + i, .enc = GW_PAGE_RAW, .len = GW_PAGE_SIZE };
        gw_page_apply(&s, &desc, d->mem + (pfn + i) * GW_PAGE_SIZE); /* in place: bits only */
    }
    return 0;
}

static int direct_copy(void *ctx, uint64_t pfn, const uint8_t *src)
{
    struct gw_placer_direct *d = ctx;
    struct gw_page_mem s = sink_of(d);
    struct gw_page_desc desc = { .pfn = pfn, .enc = GW_PAGE_RAW, .len = GW_PAGE_SIZE };
    return gw_page_apply(&s, &desc, src);
}

static int direct_zero(void *ctx, uint64_t pfn)
{
    struct gw_placer_direct *d = ctx;
    struct gw_page_mem s = sink_of(d);
    struct gw_page_desc desc = { .pfn = pfn, .enc = GW_PAGE_ZERO, .len = 0 };
    return gw_page_apply(&s, &desc, NULL);
}

/* Writes the run with pwrite (no zeroing of new pages), then notes it like pages received
 * in place. */
static int fd_write_run(void *ctx, uint64_t pfn, uint32_t n, const uint8_t *src)
{
    struct gw_placer_direct *d = ctx;
    size_t len = (size_t)n * GW_PAGE_SIZE, done = 0;
    off_t off = (off_t)(pfn * GW_PAGE_SIZE);
    while (done < len) {
        ssize_t w = pwrite(d->fd, src + done, len - done, off + (off_t)done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? -errno : -EIO;
        done += (size_t)w;
    }
    return direct_placed(ctx, pfn, n);
}

static int fd_copy(void *ctx, uint64_t pfn, const uint8_t *src)
{
    return fd_write_run(ctx, pfn, 1, src);
}

static const struct gw_page_placer_ops direct_ops = {
    .direct = direct_at, .prepare = direct_prepare, .placed = direct_placed,
    .copy = direct_copy, .zero = direct_zero,
};

/* placed: only for pages the sender wrote in place by RDMA (into a registration of this
 * shared mapping, so into the memfd); without direct the decoder never calls it otherwise. */
static const struct gw_page_placer_ops direct_fd_ops = {
    .placed = direct_placed, .copy = fd_copy, .write_run = fd_write_run, .zero = direct_zero,
};

struct gw_page_placer gw_placer_direct(struct gw_placer_direct *d)
{
    d->fd = -1;
    return (struct gw_page_placer){ .ops = &direct_ops, .ctx = d, .mem_size = d->mem_size };
}

struct gw_page_placer gw_placer_direct_fd(struct gw_placer_direct *d, int fd)
{
    d->fd = fd;
    return (struct gw_page_placer){ .ops = &direct_fd_ops, .ctx = d, .mem_size = d->mem_size };
}
