/* RDMA page batches (see rdma_batch.h): walk the encoded batch once, descriptor by
 * descriptor, with a cursor over its data; collect runs of raw pages that a region covers
 * (written, then marked PLACED) and keep every other piece of data for the record. */
#include "engine/pump/rdma_batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/codec/page_codec.h"
#include "engine/common/util.h"

struct gw_rdma_run {
    uint64_t pfn;
    uint32_t n;
    const struct gw_rdma_peer_region *reg;
};

/* Record pieces: the header slot, the table, then at most one piece per descriptor plus one
 * per input iovec boundary a piece crosses. */
#define MAX_PIECES (2u * GW_WIRE_MAX_BATCH_PAGES + 4u)

static int ensure(struct gw_rdma_batch *b)
{
    if (b->table) return 0;
    b->table = malloc(GW_PAGE_BATCH_HDR + (size_t)GW_WIRE_MAX_BATCH_PAGES * GW_PAGE_DESC_SIZE);
    b->iov = malloc(MAX_PIECES * sizeof *b->iov);
    b->runs = malloc(GW_WIRE_MAX_BATCH_PAGES * sizeof *b->runs);
    b->writes = malloc(GW_WIRE_MAX_BATCH_PAGES * sizeof *b->writes);
    if (b->table && b->iov && b->runs && b->writes) return 0;
    gw_rdma_batch_free(b);
    return -ENOMEM;
}

void gw_rdma_batch_free(struct gw_rdma_batch *b)
{
    free(b->table);
    free(b->iov);
    free(b->runs);
    free(b->writes);
    b->table = NULL;
    b->iov = NULL;
    b->runs = NULL;
    b->writes = NULL;
}

struct cursor {
    const struct iovec *v;
    int cnt, i;
    size_t off;
};

/* Moves the cursor over len bytes; with keep, appends them to the record's pieces (merged
 * with the last one when adjacent). -EBADMSG when the data ends first. */
static int take(struct cursor *cu, size_t len, bool keep, struct iovec *out, int *ocnt)
{
    while (len) {
        if (cu->i >= cu->cnt) return -EBADMSG;
        size_t avail = cu->v[cu->i].iov_len - cu->off;
        size_t k = len < avail ? len : avail;
        uint8_t *p = (uint8_t *)cu->v[cu->i].iov_base + cu->off;
        if (keep) {
            struct iovec *last = &out[*ocnt - 1];
            if ((uint8_t *)last->iov_base + last->iov_len == p) last->iov_len += k;
            else out[(*ocnt)++] = (struct iovec){ p, k };
        }
        cu->off += k;
        len -= k;
        if (cu->off == cu->v[cu->i].iov_len) {
            cu->i++;
            cu->off = 0;
        }
    }
    return 0;
}

int gw_rdma_batch_send(struct gw_rdma_batch *b, struct gw_conn *c, const struct gw_rdma_target *t,
                       const struct iovec *iov, int iovcnt, uint32_t npages, struct gw_err *err)
{
    if (ensure(b)) return gw_err_set(err, -ENOMEM, "out of memory for RDMA batch buffers");
    size_t table = GW_PAGE_BATCH_HDR + (size_t)npages * GW_PAGE_DESC_SIZE;
    uint32_t n;
    if (iovcnt < 2 || npages == 0 || npages > GW_WIRE_MAX_BATCH_PAGES || iov[1].iov_len < table ||
        gw_page_batch_header(iov[1].iov_base, &n) || n != npages)
        return gw_err_set(err, -EBADMSG, "RDMA batch: the encoded batch does not start with its table");
    memcpy(b->table, iov[1].iov_base, table);
    struct gw_page_desc d;
    uint8_t *desc = b->table + GW_PAGE_BATCH_HDR;
    int cnt = 2;
    b->iov[1] = (struct iovec){ b->table, table };
    struct cursor cu = { .v = iov + 1, .cnt = iovcnt - 1, .off = table };
    if (cu.off == iov[1].iov_len) { cu.i = 1; cu.off = 0; }
    unsigned nruns = 0;
    const struct gw_rdma_peer_region *hint = NULL;
    int r = 0;
    for (uint32_t i = 0; i < n && !r; i++, desc += GW_PAGE_DESC_SIZE) {
        memcpy(&d.pfn, desc, 8);    /* our own encoder's table: little-endian like the host */
        d.enc = desc[8];
        memcpy(&d.len, desc + 12, 4);
        if (d.pfn >= t->mem_size / GW_PAGE_SIZE) return gw_err_set(err, -EBADMSG, "RDMA batch: page outside memory");
        uint64_t *word = &t->in_records[d.pfn / 64], bit = 1ull << (d.pfn % 64), at = d.pfn * GW_PAGE_SIZE;
        const struct gw_rdma_peer_region *reg = NULL;
        if (d.enc == GW_PAGE_RAW && !(*word & bit)) {
            /* Most pages of a batch lie in the region of the page before: look there first. */
            reg = hint && at >= hint->guest_off && at - hint->guest_off < hint->r.len
                      ? hint : gw_rdma_regions_find(t->regions, t->nregions, t->stream, at);
            if (reg) hint = reg;
        }
        if (!reg) {
            /* A zero marker, an lz4 block, a page no region covers, or one whose older copy
             * may still wait in the destination's queue: in the record, in order. */
            *word |= bit;
            r = take(&cu, d.len, true, b->iov, &cnt);
            continue;
        }
        desc[8] = GW_PAGE_PLACED;
        memset(desc + 12, 0, 4);
        r = take(&cu, GW_PAGE_SIZE, false, b->iov, &cnt);
        struct gw_rdma_run *last = nruns ? &b->runs[nruns - 1] : NULL;
        if (last && last->reg == reg && last->pfn + last->n == d.pfn) last->n++;
        else b->runs[nruns++] = (struct gw_rdma_run){ .pfn = d.pfn, .n = 1, .reg = reg };
    }
    if (!r && (cu.i < cu.cnt)) r = -EBADMSG;   /* data beyond what the table describes */
    if (r) return gw_err_set(err, r, "RDMA batch: the encoded batch's data does not match its table");
    /* The writes first (several in flight, all completed); the record naming them goes after
     * them on the same queue pair. */
    uint64_t pages = 0;
    for (unsigned k = 0; k < nruns; k++) {
        const struct gw_rdma_run *u = &b->runs[k];
        uint64_t off = u->pfn * GW_PAGE_SIZE;
        b->writes[k] = (struct gw_rdma_write){ .off = off, .len = (uint64_t)u->n * GW_PAGE_SIZE, .remote = &u->reg->r,
                                               .remote_off = off - u->reg->guest_off };
        pages += u->n;
    }
    if ((r = gw_rdma_mem_write_list(c, t->local, b->writes, nruns, err))) return r;
    /* Read by the stats from other threads. */
    __atomic_fetch_add(&b->pages_written, pages, __ATOMIC_RELAXED);
    __atomic_fetch_add(&b->writes_done, nruns, __ATOMIC_RELAXED);
    return gw_conn_send_recordv(c, GW_WIRE_PAGE_BATCH, b->iov, cnt, err);
}
