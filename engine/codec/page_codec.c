/* The page codec: zero pages become markers, other pages lz4 blocks when that pays, raw
 * otherwise. The decoder is the one place where page data from the network meets guest
 * memory, so it checks each descriptor against the payload and the memory size first. */
#include "engine/codec/page_codec.h"

#include <errno.h>
#include <lz4.h>
#include <stdbool.h>
#include <string.h>

#include "engine/codec/wire.h"
#include "engine/common/util.h"

/* lz4 is re-tried every PROBE_EVERY batches while skipped, so the estimates follow the
 * guest's data. RATIO_SKIP: above this output/input ratio lz4 is not worth its time. */
#define PROBE_EVERY 16u
#define RATIO_SKIP 0.90
#define EWMA_ALPHA 0.25
/* Non-zero pages after which a batch that tries lz4 checks whether it pays so far. */
#define SAMPLE_PAGES 32u

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

void gw_page_encoder_init(struct gw_page_encoder *e, enum gw_codec_mode mode, int accel)
{
    memset(e, 0, sizeof *e);
    e->mode = mode;
    e->accel = accel < 1 ? 1 : accel;
    e->ratio = 0.5; /* optimistic start: the first batches measure the real figures */
}

void gw_page_encoder_set_link_rate(struct gw_page_encoder *e, uint64_t link_bps)
{
    e->link_bps = link_bps;
}

/* Decides whether this batch tries lz4. */
static bool want_lz4(struct gw_page_encoder *e)
{
    if (e->mode == GW_CODEC_NONE) return false;
    if (e->mode == GW_CODEC_LZ4) return true;
    bool poor = e->ratio > RATIO_SKIP;
    bool link_faster = e->link_bps && e->comp_bps > 0 &&
                       (double)e->link_bps >= e->comp_bps * (1.0 - e->ratio);
    if (!poor && !link_faster) return true;
    if (++e->since_probe >= PROBE_EVERY) { e->since_probe = 0; return true; }
    return false;
}

static void learn(struct gw_page_encoder *e, uint64_t in, uint64_t out, uint64_t ns)
{
    if (!in) return;
    double r = (double)out / (double)in;
    e->ratio = e->ratio * (1 - EWMA_ALPHA) + r * EWMA_ALPHA;
    if (ns) {
        double bps = (double)in * 1e9 / (double)ns;
        e->comp_bps = e->comp_bps > 0 ? e->comp_bps * (1 - EWMA_ALPHA) + bps * EWMA_ALPHA : bps;
    }
}

/* Appends [p, p+len) to the iovec list, merged with the last entry when adjacent. */
static void iov_push(struct iovec *iov, int *cnt, const uint8_t *p, size_t len)
{
    struct iovec *last = &iov[*cnt - 1];
    if ((const uint8_t *)last->iov_base + last->iov_len == p) {
        last->iov_len += len;
        return;
    }
    iov[*cnt].iov_base = (void *)p;
    iov[*cnt].iov_len = len;
    (*cnt)++;
}

/* The encoder behind both entry points. iov == NULL: RAW pages are copied into out after
 * the table, in descriptor order, and out is the whole payload. iov != NULL: out holds the
 * table and the lz4 blocks only and iov describes the payload. */
static int encode(struct gw_page_encoder *e, const uint8_t *mem, uint64_t mem_size,
                  const uint64_t *pfns, uint32_t n, uint8_t *out, size_t cap,
                  struct iovec *iov, int *iovcnt, size_t *out_len)
{
    if (n == 0 || n > GW_WIRE_MAX_BATCH_PAGES) return -EINVAL;
    if (cap < (iov ? gw_page_batch_scratch_bound(n) : gw_page_batch_bound(n))) return -ENOBUFS;
    uint64_t npfn = mem_size / GW_PAGE_SIZE;
    for (uint32_t i = 0; i < n; i++)
        if (pfns[i] >= npfn) return -ERANGE;

    uint64_t t0 = gw_now_ns();
    bool lz4 = want_lz4(e);
    e->last_compressed = lz4;
    uint64_t tried_in = 0, tried_out = 0, lz4_ns = 0;
    put32(out, n);
    put32(out + 4, 0);
    uint8_t *desc = out + GW_PAGE_BATCH_HDR;
    uint8_t *data = desc + (size_t)n * GW_PAGE_DESC_SIZE;
    size_t payload = (size_t)(data - out);
    if (iov) {
        iov[0].iov_base = out;
        iov[0].iov_len = payload;
        *iovcnt = 1;
    }
    for (uint32_t i = 0; i < n; i++, desc += GW_PAGE_DESC_SIZE) {
        const uint8_t *page = mem + pfns[i] * GW_PAGE_SIZE;
        uint8_t enc = GW_PAGE_RAW;
        uint32_t len = GW_PAGE_SIZE;
        if (gw_is_zero(page, GW_PAGE_SIZE)) {
            enc = GW_PAGE_ZERO;
            len = 0;
        } else if (lz4) {
            /* A bounded destination makes lz4 give up (return 0) when it would not save
             * enough; the page then goes raw. */
            uint64_t tc = gw_now_ns();
            int c = LZ4_compress_fast((const char *)page, (char *)data, GW_PAGE_SIZE,
                                      GW_PAGE_LZ4_MAX, e->accel);
            lz4_ns += gw_now_ns() - tc;
            tried_in += GW_PAGE_SIZE;
            if (c > 0) {
                enc = GW_PAGE_LZ4;
                len = (uint32_t)c;
            }
            tried_out += len;
            /* AUTO: incompressible data (random, encrypted, already compressed) shows in a
             * few pages: stop paying for lz4 in this batch once a sample says it does not
             * pay. LZ4 mode means "always try" and keeps going. */
            if (e->mode == GW_CODEC_AUTO && tried_in == SAMPLE_PAGES * GW_PAGE_SIZE &&
                (double)tried_out > RATIO_SKIP * (double)tried_in)
                lz4 = false;
        }
        if (enc == GW_PAGE_RAW && !iov) memcpy(data, page, GW_PAGE_SIZE);
        if (iov && enc == GW_PAGE_RAW) iov_push(iov, iovcnt, page, GW_PAGE_SIZE);
        else if (iov && enc == GW_PAGE_LZ4) iov_push(iov, iovcnt, data, len);
        put64(desc, pfns[i]);
        desc[8] = enc;
        desc[9] = desc[10] = desc[11] = 0;
        put32(desc + 12, len);
        if (!iov || enc == GW_PAGE_LZ4) data += len;
        payload += len;
        e->st.pages[enc]++;
    }
    uint64_t ns = gw_now_ns() - t0;
    /* The compressor's rate is measured on its own calls: zero checks and raw pages
     * would make it look slower than it is. */
    if (e->last_compressed) learn(e, tried_in, tried_out, lz4_ns);
    *out_len = payload;
    e->st.bytes_in += (uint64_t)n * GW_PAGE_SIZE;
    e->st.bytes_out += payload;
    e->st.batches++;
    e->st.ns += ns;
    return 0;
}

int gw_page_encode_batch(struct gw_page_encoder *e, const uint8_t *mem, uint64_t mem_size,
                         const uint64_t *pfns, uint32_t n, uint8_t *out, size_t cap,
                         size_t *out_len)
{
    return encode(e, mem, mem_size, pfns, n, out, cap, NULL, NULL, out_len);
}

int gw_page_encode_batch_iov(struct gw_page_encoder *e, const uint8_t *mem, uint64_t mem_size,
                             const uint64_t *pfns, uint32_t n, uint8_t *scratch, size_t cap,
                             struct iovec *iov, int *iovcnt, size_t *out_len)
{
    return encode(e, mem, mem_size, pfns, n, scratch, cap, iov, iovcnt, out_len);
}

int gw_page_batch_header(const uint8_t hdr[GW_PAGE_BATCH_HDR], uint32_t *n)
{
    *n = get32(hdr);
    if (*n == 0 || *n > GW_WIRE_MAX_BATCH_PAGES || get32(hdr + 4) != 0) return -EBADMSG;
    return 0;
}

int gw_page_batch_descs(const uint8_t *table, uint32_t n, size_t payload_len, uint64_t mem_size,
                        struct gw_page_desc *out)
{
    if (n == 0 || n > GW_WIRE_MAX_BATCH_PAGES) return -EBADMSG;
    /* n is bounded, so the table size cannot overflow a size_t. */
    size_t off = GW_PAGE_BATCH_HDR + (size_t)n * GW_PAGE_DESC_SIZE;
    if (payload_len < off) return -EBADMSG;
    uint64_t npfn = mem_size / GW_PAGE_SIZE;
    for (uint32_t i = 0; i < n; i++, table += GW_PAGE_DESC_SIZE) {
        struct gw_page_desc *d = &out[i];
        d->pfn = get64(table);
        d->enc = table[8];
        d->len = get32(table + 12);
        if (table[9] | table[10] | table[11]) return -EBADMSG;
        switch (d->enc) {
        case GW_PAGE_RAW: if (d->len != GW_PAGE_SIZE) return -EBADMSG; break;
        case GW_PAGE_ZERO:
        case GW_PAGE_PLACED: if (d->len != 0) return -EBADMSG; break;
        case GW_PAGE_LZ4: if (d->len == 0 || d->len > GW_PAGE_LZ4_MAX) return -EBADMSG; break;
        default: return -EBADMSG;
        }
        /* pfn < npfn keeps pfn * 4096 + 4096 <= mem_size without overflow. */
        if (d->pfn >= npfn) return -ERANGE;
        if (!gw_range_ok(off, d->len, payload_len)) return -EBADMSG;
        off += d->len;
    }
    return off == payload_len ? 0 : -EBADMSG;
}

static inline void set_bit(uint64_t *map, uint64_t pfn, int order)
{
    __atomic_fetch_or(&map[pfn / 64], 1ull << (pfn % 64), order);
}

int gw_page_apply(const struct gw_page_mem *sink, const struct gw_page_desc *d, const uint8_t *src)
{
    uint8_t *page = sink->mem + d->pfn * GW_PAGE_SIZE;
    bool wrote = true;
    switch (d->enc) {
    case GW_PAGE_RAW:
        if (src != page) memcpy(page, src, GW_PAGE_SIZE);
        break;
    case GW_PAGE_ZERO: {
        /* On fresh memory a page never written this session is a hole that reads as zero:
         * leave it alone. Otherwise write only when not already zero, so untouched pages
         * of a memfd stay unallocated. */
        bool hole = sink->written &&
                    !(__atomic_load_n(&sink->written[d->pfn / 64], __ATOMIC_RELAXED) & (1ull << (d->pfn % 64)));
        wrote = false;
        if (!hole && !gw_is_zero(page, GW_PAGE_SIZE)) memset(page, 0, GW_PAGE_SIZE);
        break;
    }
    case GW_PAGE_LZ4:
        /* The destination capacity is one page, so a hostile block cannot write past it;
         * anything but exactly one page out is an error. */
        if (LZ4_decompress_safe((const char *)src, (char *)page, (int)d->len, GW_PAGE_SIZE) !=
            (int)GW_PAGE_SIZE)
            return -EILSEQ; /* its own code, so the operator reads "lz4", not "malformed" */
        break;
    default:
        return -EBADMSG;
    }
    /* The written bit only matters to this stream's later ZERO pages: relaxed. touched is
     * read by other threads after the page: release orders the page before the bit. */
    if (wrote && sink->written) set_bit(sink->written, d->pfn, __ATOMIC_RELAXED);
    if (sink->touched) set_bit(sink->touched, d->pfn, __ATOMIC_RELEASE);
    return 0;
}

int gw_page_decode_batch_mem(const uint8_t *p, size_t len, const struct gw_page_mem *sink,
                              struct gw_codec_stats *st, uint32_t *npages)
{
    uint32_t n;
    if (len < GW_PAGE_BATCH_HDR || gw_page_batch_header(p, &n)) return -EBADMSG;
    /* 4096 descriptors of 16 bytes: 64 KiB on the stack is fine for the threads that run
     * this, and keeps the decoder free of allocation. */
    struct gw_page_desc descs[GW_WIRE_MAX_BATCH_PAGES];
    int r = gw_page_batch_descs(p + GW_PAGE_BATCH_HDR, n, len, sink->mem_size, descs);
    if (r) return r;
    uint64_t t0 = gw_now_ns();
    const uint8_t *data = p + GW_PAGE_BATCH_HDR + (size_t)n * GW_PAGE_DESC_SIZE;
    uint64_t counts[GW_PAGE_NENC] = {0};
    for (uint32_t i = 0; i < n; i++) {
        if ((r = gw_page_apply(sink, &descs[i], data))) return r;
        data += descs[i].len;
        counts[descs[i].enc]++;
    }
    if (st) {
        for (int e = 0; e < GW_PAGE_NENC; e++) st->pages[e] += counts[e];
        st->bytes_in += len;
        st->bytes_out += (uint64_t)n * GW_PAGE_SIZE;
        st->batches++;
        st->ns += gw_now_ns() - t0;
    }
    if (npages) *npages = n;
    return 0;
}

int gw_page_decode_batch(const uint8_t *p, size_t len, uint8_t *mem, uint64_t mem_size,
                         struct gw_codec_stats *st, uint32_t *npages)
{
    struct gw_page_mem sink = { .mem = mem, .mem_size = mem_size };
    return gw_page_decode_batch_mem(p, len, &sink, st, npages);
}

void gw_codec_stats_add(struct gw_codec_stats *a, const struct gw_codec_stats *b)
{
    for (int e = 0; e < GW_PAGE_NENC; e++) a->pages[e] += b->pages[e];
    a->bytes_in += b->bytes_in;
    a->bytes_out += b->bytes_out;
    a->batches += b->batches;
    a->ns += b->ns;
}
