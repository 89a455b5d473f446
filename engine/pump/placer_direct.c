/* The direct placer (see page_placer.h): raw pages land in guest memory straight from the
 * socket; copies, zero pages and the bitmaps go through the codec's gw_page_apply, which
 * holds the rules (a zero page on fresh memory leaves a hole alone). */
#include "engine/pump/page_placer.h"

#include <stdbool.h>
#include <sys/mman.h>

#include "engine/codec/page_codec.h"
#include "engine/common/util.h"

static struct gw_page_sink sink_of(const struct gw_placer_direct *d)
{
    return (struct gw_page_sink){ .mem = d->mem, .mem_size = d->mem_size, .touched = d->touched,
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
    struct gw_page_sink s = sink_of(d);
    for (uint32_t i = 0; i < n; i++) {
        struct gw_page_desc desc = { .pfn = pfn + i, .enc = GW_PAGE_RAW, .len = GW_PAGE_SIZE };
        gw_page_apply(&s, &desc, d->mem + (pfn + i) * GW_PAGE_SIZE); /* in place: bits only */
    }
    return 0;
}

static int direct_copy(void *ctx, uint64_t pfn, const uint8_t *src)
{
    struct gw_placer_direct *d = ctx;
    struct gw_page_sink s = sink_of(d);
    struct gw_page_desc desc = { .pfn = pfn, .enc = GW_PAGE_RAW, .len = GW_PAGE_SIZE };
    return gw_page_apply(&s, &desc, src);
}

static int direct_zero(void *ctx, uint64_t pfn)
{
    struct gw_placer_direct *d = ctx;
    struct gw_page_sink s = sink_of(d);
    struct gw_page_desc desc = { .pfn = pfn, .enc = GW_PAGE_ZERO, .len = 0 };
    return gw_page_apply(&s, &desc, NULL);
}

static const struct gw_page_placer_ops direct_ops = {
    .direct = direct_at, .prepare = direct_prepare, .placed = direct_placed,
    .copy = direct_copy, .zero = direct_zero,
};

struct gw_page_placer gw_placer_direct(struct gw_placer_direct *d)
{
    return (struct gw_page_placer){ .ops = &direct_ops, .ctx = d, .mem_size = d->mem_size };
}
