/* Streaming PAGE_BATCH decoder (see page_recv.h): header, table, checks, then the page
 * bodies scattered where the placer wants them. */
#include "engine/pump/page_recv.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <lz4.h>

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
    pr->page = malloc(GW_PAGE_SIZE);
    pr->placed_from = malloc(GW_WIRE_MAX_BATCH_PAGES * sizeof *pr->placed_from);
    if (pr->table && pr->descs && pr->iov && pr->seen && pr->page && pr->placed_from) return 0;
    gw_page_recv_free(pr);
    return -ENOMEM;
}

void gw_page_recv_free(struct gw_page_recv *pr)
{
    free(pr->table);
    free(pr->descs);
    free(pr->iov);
    free(pr->seen);
    free(pr->page);
    free(pr->placed_from);
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

/* Hands one checked page whose data (if any) is src to the placer. */
static int place(const struct gw_page_placer *pl, struct gw_page_recv *pr, const struct gw_page_desc *d,
                 const uint8_t *src)
{
    switch (d->enc) {
    case GW_PAGE_RAW:
        return pl->ops->copy(pl->ctx, d->pfn, src);
    case GW_PAGE_ZERO:
        return pl->ops->zero(pl->ctx, d->pfn);
    case GW_PAGE_LZ4:
        /* The output capacity is one page, so a hostile block cannot write past it; anything
         * but exactly one page out is an error of its own ("lz4", not "malformed"). */
        if (LZ4_decompress_safe((const char *)src, (char *)pr->page, (int)d->len, GW_PAGE_SIZE) != (int)GW_PAGE_SIZE)
            return -EILSEQ;
        return pl->ops->copy(pl->ctx, d->pfn, pr->page);
    }
    return -EBADMSG;
}

int gw_page_recv_batch(struct gw_conn *c, const struct gw_wire_header *h,
                       const struct gw_page_placer *pl, struct gw_page_recv *pr,
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
    if ((r = gw_page_batch_descs(pr->table, n, h->length, pl->mem_size, pr->descs))) goto bad;

    /* Pages written in place by the sender are only believed where this side let it write
     * (and the placer can note them). */
    for (uint32_t i = 0; i < n; i++)
        if (pr->descs[i].enc == GW_PAGE_PLACED && (!pr->remote_writes || !pl->ops->placed))
            return gw_err_set(err, -EBADMSG,
                              "stream %u: bad PAGE_BATCH #%llu: page %llu is marked written in place, but "
                              "this side registered no memory for the source to write",
                              h->stream, (unsigned long long)h->seq, (unsigned long long)pr->descs[i].pfn);

    /* Every descriptor is checked: the data may now go where they say. */
    size_t data_len = h->length - GW_PAGE_BATCH_HDR - table;
    bool repeats = has_repeats(pr, n);
    const struct gw_page_placer_ops *ops = pl->ops;
    /* Raw pages go in place when the placer has a place for them and the batch names no
     * page twice (else an earlier copy received in place could overwrite a later one). */
    bool in_place = !repeats && ops->direct;
    size_t buffered = 0;
    for (uint32_t i = 0; i < n; i++)
        buffered += pr->descs[i].enc == GW_PAGE_RAW && in_place ? 0 : pr->descs[i].len;
    if (grow(&pr->data, buffered))
        return gw_err_set(err, -ENOMEM, "out of memory for a %zu-byte batch", data_len);
    int cnt = 0;
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct gw_page_desc *d = &pr->descs[i];
        if (!d->len) continue;
        if (d->enc == GW_PAGE_RAW && in_place) {
            /* Runs of consecutive raw pages are one iovec and one prepare call. */
            uint32_t k = 1;
            while (i + k < n && pr->descs[i + k].enc == GW_PAGE_RAW && pr->descs[i + k].pfn == d->pfn + k) k++;
            if (ops->prepare) ops->prepare(pl->ctx, d->pfn, k);
            push(pr->iov, &cnt, ops->direct(pl->ctx, d->pfn, k), (size_t)k * GW_PAGE_SIZE);
            i += k - 1;
        } else {
            push(pr->iov, &cnt, pr->data.data + off, d->len);
            off += d->len;
        }
    }
    if (cnt && (r = gw_conn_recv_payload(c, pr->iov, cnt, err))) return r;

    uint64_t t0 = gw_now_ns();
    uint64_t counts[GW_PAGE_NENC] = {0};
    off = 0;
    for (uint32_t i = 0; i < n; i++) pr->placed_from[i] = NULL;
    for (uint32_t i = 0; i < n; i++) {
        const struct gw_page_desc *d = &pr->descs[i];
        if (d->enc == GW_PAGE_RAW && in_place) {
            uint32_t k = 1;
            while (i + k < n && pr->descs[i + k].enc == GW_PAGE_RAW && pr->descs[i + k].pfn == d->pfn + k) k++;
            if (ops->placed && (r = ops->placed(pl->ctx, d->pfn, k))) goto bad;
            counts[GW_PAGE_RAW] += k;
            i += k - 1;
            continue;
        }
        if (d->enc == GW_PAGE_PLACED) {
            /* Already in place (RDMA WRITE before this record): a run is one note. */
            uint32_t k = 1;
            while (i + k < n && pr->descs[i + k].enc == GW_PAGE_PLACED && pr->descs[i + k].pfn == d->pfn + k) k++;
            if ((r = ops->placed(pl->ctx, d->pfn, k))) goto bad;
            counts[GW_PAGE_PLACED] += k;
            i += k - 1;
            continue;
        }
        if (d->enc == GW_PAGE_RAW && ops->write_run) {
            /* A run of raw pages, consecutive in memory and in the buffer: one call. */
            uint32_t k = 1;
            while (i + k < n && pr->descs[i + k].enc == GW_PAGE_RAW && pr->descs[i + k].pfn == d->pfn + k) k++;
            if ((r = ops->write_run(pl->ctx, d->pfn, k, pr->data.data + off))) goto bad;
            for (uint32_t j = 0; j < k; j++) pr->placed_from[i + j] = pr->data.data + off + (size_t)j * GW_PAGE_SIZE;
            off += (size_t)k * GW_PAGE_SIZE;
            counts[GW_PAGE_RAW] += k;
            i += k - 1;
            continue;
        }
        /* A zero page has no data (a batch of zero markers only has no data buffer at
         * all, and NULL + 0 is undefined). */
        if ((r = place(pl, pr, d, d->len ? pr->data.data + off : NULL))) goto bad;
        off += d->len;
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
