/* Receiving a PAGE_BATCH straight into guest memory. gw_page_decode_batch needs the whole
 * payload in a buffer and then copies every raw page out of it; here the header and the
 * descriptor table are read and checked first, then the raw page bodies are received
 * directly at mem + pfn * 4096 (one recvmsg scatters many pages) and only lz4 blocks go
 * through a buffer. The checks are the codec's (gw_page_batch_descs): nothing reaches guest
 * memory before every descriptor of the batch has been checked. */
#ifndef GW_TRANSPORT_PAGE_RECV_H
#define GW_TRANSPORT_PAGE_RECV_H

#include <stdint.h>

#include "engine/codec/page_codec.h"
#include "engine/transport/conn.h"

/* Per-stream buffers (about 400 KiB, allocated on first use and reused): zero-initialise,
 * release with gw_page_recv_free. One per receiving thread. */
struct gw_page_recv {
    uint8_t *table;                /* the wire descriptors of one batch */
    struct gw_page_desc *descs;    /* checked descriptors */
    struct iovec *iov;             /* where each piece of data goes */
    struct gw_page_seen *seen;     /* pages named so far in this batch (repeat detection) */
    uint32_t gen;                  /* batch generation for seen */
    struct gw_rbuf data;           /* lz4 blocks; all data of a batch that names a page twice */
};

/* Receives the payload of the PAGE_BATCH record whose header h was just read from c (with
 * gw_conn_recv_header) and applies it to sink. A batch that names a page twice is received
 * whole and applied in order, so the last copy wins exactly as with gw_page_decode_batch.
 * Returns 0 and adds to *st and sets *npages; or -EBADMSG/-ERANGE (err says which
 * descriptor check failed), -ENOMEM, or the connection's errors. */
int gw_page_recv_batch(struct gw_conn *c, const struct gw_wire_header *h,
                       const struct gw_page_sink *sink, struct gw_page_recv *pr,
                       struct gw_codec_stats *st, uint32_t *npages, struct gw_err *err);

void gw_page_recv_free(struct gw_page_recv *pr);

#endif
