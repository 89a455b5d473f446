/* A page batch sent over RDMA: the raw pages of an encoded PAGE_BATCH (the pump's iovecs,
 * page_sink.h) go by RDMA WRITE straight from the source's guest memory into the
 * destination's registered guest memory (engine/transport/rdma_mem.h), no bounce buffer on
 * either side; then the batch's record follows on the same connection with those pages'
 * descriptors rewritten to GW_PAGE_PLACED (no data). RC ordering delivers that record after
 * the writes, so the destination's decoder knows which pages arrived (and notes them through
 * its placer's placed op) without copying a byte. Zero markers and lz4 blocks stay in the
 * record: they are smaller than the page they stand for. A raw page outside every region the
 * destination offered for this stream goes in the record as before.
 *
 * Ordering. A WRITE lands in the destination's memory when it is performed, while a record
 * sent earlier may still wait in the destination's receive queue: if that record holds an
 * older copy of the same page (a zero marker, an lz4 block, a raw page in the record), the
 * destination would apply the older copy over the newer one. So a page that went in a record
 * not yet known to be applied (in_records, below) never goes by WRITE: it goes raw in the
 * record, behind the older copy. The caller clears in_records when the destination has
 * applied everything sent so far (pre-copy: its SYNC); until then such pages keep going in
 * records, all others by WRITE.
 *
 * A sink calls gw_rdma_batch_send from lane i's worker with stream i's send lock held
 * (gw_session_locked): the writes and the record share the connection's send queue. */
#ifndef GW_PUMP_RDMA_BATCH_H
#define GW_PUMP_RDMA_BATCH_H

#include <stdint.h>
#include <sys/uio.h>

#include "engine/transport/rdma_mem.h"

/* Where lane's raw pages may go: guest memory (registered as local on c's connection) and the
 * destination's regions for this stream (as gw_rdma_regions_unpack checked them). */
struct gw_rdma_target {
    const uint8_t *mem;
    uint64_t mem_size;
    struct gw_rdma_mr *local;
    const struct gw_rdma_peer_region *regions;
    unsigned nregions;
    uint32_t stream;
    /* One bit per page (bit pfn % 64 of word pfn / 64), caller-owned, zeroed by the caller:
     * set here for every page sent in a record. A page's bit is only touched by the lane that
     * sends it (the pump's lanes own whole 2 MiB chunks, whole words of it). */
    uint64_t *in_records;
};

/* Per-lane buffers (about 350 KiB, allocated on first use): zero-initialise, release with
 * gw_rdma_batch_free. Counters: pages and bytes moved by RDMA WRITE, WRITEs posted. */
struct gw_rdma_batch {
    uint8_t *table;
    struct iovec *iov;
    struct gw_rdma_run *runs;
    struct gw_rdma_write *writes;
    uint64_t pages_written, writes_done;
};

/* Sends the encoded batch iov[1..iovcnt) of npages pages (iov[0] free, as the pump hands
 * it over; iov[1] starts with the batch header and descriptor table) on c: RDMA WRITEs of its
 * raw runs, then the PAGE_BATCH record. Returns 0, -EBADMSG (the iovecs do not hold the batch
 * their table describes), -ENOMEM, or the errors of gw_rdma_mem_write and of the record's
 * send. */
int gw_rdma_batch_send(struct gw_rdma_batch *b, struct gw_conn *c, const struct gw_rdma_target *t,
                       const struct iovec *iov, int iovcnt, uint32_t npages, struct gw_err *err);

void gw_rdma_batch_free(struct gw_rdma_batch *b);

#endif
