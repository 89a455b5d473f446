/* Streaming PAGE_BATCH receiver (see page_recv.h): header, table, checks, then the page
 * bodies scattered straight into guest memory. */
#include "engine/transport/page_recv.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/common/util.h"

/* Open-addressing set of the pages of one batch; 2x the largest batch keeps probes short.
 * Entries of older batches are told apart by their generation, so nothing is cleared. */
#define SEEN_BITS 13
#define SEEN_SLOTS (1u << SEEN_BITS)

struct gw_page_seen {
    uint64_t pfn;
    uint32_t gen;
};

static int ensure(struct gw_page_recv *pr)
{
    if (pr->table) return 0;
    pr->table = malloc((size_t)GW_WIRE_MAX_BATCH_PAGES * GW_PAGE_DESC_SIZE);
    pr->descs = malloc(GW_WIRE_MAX_BATCH_PAGES * sizeof *pr->descs);
    pr->iov = malloc(GW_WIRE_MAX_BATCH_PAGES * sizeof *pr->iov);
    pr->seen = calloc(SEEN_SLOTS, sizeof *pr->seen);
    if (pr->table && pr->descs && pr->iov && pr->seen) return 0;
    gw_page_recv_free(pr);
    return -ENOMEM;
}

void gw_page_recv_free(struct gw_page_recv *pr)
{
    free(pr->table);
    free(pr->descs);
    free(pr->iov);
    free(pr->seen);
    gw_rbuf_free(&pr->data);
    memset(pr, 0, sizeof *pr);
}

static int grow(struct gw_rbuf *b, size_t len)
{
    if (len <= b->cap) return 0;
    uint8_t *nb = realloc(b->data, len);
    if (!nb) return -ENOMEM;
    b->data = nb;
    b->cap = len;
    return 0;
}

/* Whether descs[0..n) name a page twice. */
static bool has_repeats(struct gw_page_recv *pr, uint32_t n)
{
    if (++pr->gen == 0) { /* wrapped: old generations could alias, start clean */
        memset(pr->seen, 0, SEEN_SLOTS * sizeof *pr->seen);
        pr->gen = 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t pfn = pr->descs[i].pfn;
        uint32_t k = (uint32_t)((pfn * 0x9E3779B97F4A7C15ull) >> (64 - SEEN_BITS));
        /* n <= SEEN_SLOTS / 2, so a free slot is always found. */
        while (pr->seen[k].gen == pr->gen) {
            if (pr->seen[k].pfn == pfn) return true;
            k = (k + 1) & (SEEN_SLOTS - 1);
        }
        pr->seen[k] = (struct gw_page_seen){ .pfn = pfn, .gen = pr->gen };
    }
    return false;
}

/* Appends a piece, merged with the previous one when adjacent. */
static void push(struct iovec *iov, int *cnt, uint8_t *p, size_t len)
{
    if (*cnt && (uint8_t *)iov[*cnt - 1].iov_base + iov[*cnt - 1].iov_len == p) {
        iov[*cnt - 1].iov_len += len;
        return;
    }
    iov[(*cnt)++] = (struct iovec){ p, len };
}

/* On fresh memory the destination pays for every new page: allocation, zeroing, a page
 * fault. Faulting a run of raw pages in with one madvise before the receive saves the
 * per-page fault entry (about a tenth of the receiver's time here). Best effort: an old
 * kernel (EINVAL) just faults as before. Runs whose first page is already written are
 * there already. */
static void populate(const struct gw_page_sink *sink, const struct iovec *iov, int cnt)
{
    for (int i = 0; i < cnt; i++) {
        uintptr_t p = (uintptr_t)iov[i].iov_base, m = (uintptr_t)sink->mem;
        if (p < m || p - m >= sink->mem_size) continue; /* an lz4 block */
        uint64_t pfn = (uint64_t)(p - m) / GW_PAGE_SIZE;
        if (__atomic_load_n(&sink->written[pfn / 64], __ATOMIC_RELAXED) & (1ull << (pfn % 64))) continue;
        madvise(iov[i].iov_base, iov[i].iov_len, MADV_POPULATE_WRITE);
    }
}

int gw_page_recv_batch(struct gw_conn *c, const struct gw_wire_header *h,
                       const struct gw_page_sink *sink, struct gw_page_recv *pr,
                       struct gw_codec_stats *st, uint32_t *npages, struct gw_err *err)
{
    if (ensure(pr)) return gw_err_set(err, -ENOMEM, "out of memory for batch buffers");
    uint8_t hdr[GW_PAGE_BATCH_HDR];
    uint32_t n;
    struct iovec v = { hdr, sizeof hdr };
    int r;
    if (h->length < GW_PAGE_BATCH_HDR) { r = -EBADMSG; goto bad; }
    if ((r = gw_conn_recv_payload(c, &v, 1, err))) return r;
    if ((r = gw_page_batch_header(hdr, &n))) goto bad;
    size_t table = (size_t)n * GW_PAGE_DESC_SIZE; /* n is bounded: no overflow */
    if (h->length - GW_PAGE_BATCH_HDR < table) { r = -EBADMSG; goto bad; }
    v = (struct iovec){ pr->table, table };
    if ((r = gw_conn_recv_payload(c, &v, 1, err))) return r;
    if ((r = gw_page_batch_descs(pr->table, n, h->length, sink->mem_size, pr->descs))) goto bad;

    /* Every descriptor is checked: the data may now go where they say. */
    size_t data_len = h->length - GW_PAGE_BATCH_HDR - table;
    bool repeats = has_repeats(pr, n);
    size_t lz = 0;
    for (uint32_t i = 0; i < n; i++) lz += pr->descs[i].enc == GW_PAGE_LZ4 ? pr->descs[i].len : 0;
    if (grow(&pr->data, repeats ? data_len : lz))
        return gw_err_set(err, -ENOMEM, "out of memory for a %zu-byte batch", data_len);
    int cnt = 0;
    size_t off = 0;
    if (repeats) {
        /* Raw bodies straight to memory would let an earlier copy of a page overwrite a
         * later one: take the slow path, in order. */
        if (data_len) push(pr->iov, &cnt, pr->data.data, data_len);
    } else {
        for (uint32_t i = 0; i < n; i++) {
            const struct gw_page_desc *d = &pr->descs[i];
            if (d->enc == GW_PAGE_RAW) {
                push(pr->iov, &cnt, sink->mem + d->pfn * GW_PAGE_SIZE, GW_PAGE_SIZE);
            } else if (d->enc == GW_PAGE_LZ4) {
                push(pr->iov, &cnt, pr->data.data + off, d->len);
                off += d->len;
            }
        }
    }
    if (sink->written && !repeats) populate(sink, pr->iov, cnt);
    if (cnt && (r = gw_conn_recv_payload(c, pr->iov, cnt, err))) return r;

    uint64_t t0 = gw_now_ns();
    uint64_t counts[GW_PAGE_NENC] = {0};
    off = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct gw_page_desc *d = &pr->descs[i];
        const uint8_t *src = NULL; /* a ZERO page has no data */
        if (d->enc == GW_PAGE_RAW && !repeats) {
            src = sink->mem + d->pfn * GW_PAGE_SIZE; /* already in place */
        } else if (d->len) {
            src = pr->data.data + off;
            off += d->len;
        }
        if ((r = gw_page_apply(sink, d, src))) goto bad;
        counts[d->enc]++;
    }
    for (int k = 0; k < GW_PAGE_NENC; k++) st->pages[k] += counts[k];
    st->bytes_in += h->length;
    st->bytes_out += (uint64_t)n * GW_PAGE_SIZE;
    st->batches++;
    st->ns += gw_now_ns() - t0;
    *npages = n;
    return 0;
bad:
    return gw_err_set(err, r, "stream %u: bad PAGE_BATCH #%llu: %s", h->stream,
                      (unsigned long long)h->seq, gw_wire_strerror(r));
}
