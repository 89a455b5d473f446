/* The receiving side's page decoder: reads a PAGE_BATCH record's payload from a connection,
 * checks it and hands every page to a placer (page_placer.h). The header and the descriptor
 * table are read and checked first (the codec's gw_page_batch_descs): nothing reaches the
 * placer before every descriptor of the batch has been checked. Raw page bodies are then
 * received where the placer's direct op says (guest memory for the direct placer: one
 * recvmsg scatters many pages), or into a buffer and handed to its copy op; lz4 blocks are
 * decoded into a page buffer and handed to copy; zero pages to zero; pages the sender wrote
 * in place by RDMA (GW_PAGE_PLACED, no data) to placed. The decoder itself never writes
 * guest memory. */
#ifndef GW_PUMP_PAGE_RECV_H
#define GW_PUMP_PAGE_RECV_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/codec/page_codec.h"
#include "engine/pump/page_placer.h"
#include "engine/transport/conn.h"

/* Per-stream buffers (about 400 KiB, allocated on first use and reused): zero-initialise,
 * release with gw_page_recv_free. One per receiving thread. */
struct gw_page_recv {
    uint8_t *table;                /* the wire descriptors of one batch */
    struct gw_page_desc *descs;    /* checked descriptors */
    struct iovec *iov;             /* where each piece of data goes */
    struct gw_page_seen *seen;     /* pages named so far in this batch (repeat detection) */
    uint32_t gen;                  /* batch generation for seen */
    struct gw_rbuf data;           /* lz4 blocks; raw pages without a direct place; all data
                                    * of a batch that names a page twice */
    uint8_t *page;                 /* one decoded lz4 page */
    /* Per descriptor of the last batch: where the placer's write_run took the page's bytes
     * from (in data, valid until the next batch), or NULL (placed any other way). Lets the
     * owner use bytes still in cache (a digest) instead of reading guest memory back. */
    const uint8_t **placed_from;
    /* Set by the owner when the sender may write pages into their place itself (an RDMA
     * session whose guest memory this side registered for it, engine/transport/rdma_mem.h):
     * GW_PAGE_PLACED descriptors are then handed to the placer's placed op; otherwise a
     * batch that holds one is refused (-EBADMSG). */
    bool remote_writes;
};

/* Receives the payload of the PAGE_BATCH record whose header h was just read from c (with
 * gw_conn_recv_header) and hands its pages to pl, in descriptor order. A batch that names a
 * page twice is received whole into the buffer and placed in order, so the last copy wins
 * exactly as with gw_page_decode_batch.
 * Returns 0 and adds to *st and sets *npages; or -EBADMSG/-ERANGE (err says which
 * descriptor check failed), -ENOMEM, -EILSEQ (an lz4 block that does not decode to one page), the placer's error,
 * or the connection's errors. */
int gw_page_recv_batch(struct gw_conn *c, const struct gw_wire_header *h,
                       const struct gw_page_placer *pl, struct gw_page_recv *pr,
                       struct gw_codec_stats *st, uint32_t *npages, struct gw_err *err);

void gw_page_recv_free(struct gw_page_recv *pr);

#endif
