/* RDMA WRITE of guest pages straight into the peer's registered guest memory: the page path
 * of an RDMA migration, under the same session as its control records (which keep going by
 * SEND/RECV through the connection's ops, rdma.c).
 *
 * The destination registers its guest memory for remote writes and sends the region's
 * descriptor to the source (a record of the user's protocol); the source registers its own
 * guest memory for local reads and writes pages from it to offsets of the remote region, no
 * bounce buffer on either side. The destination learns which pages arrived from a record
 * sent after the writes completed (RC ordering: a SEND posted after a WRITE completes after
 * it), so its decoder still never writes guest memory itself.
 *
 * These calls work on connections of the RDMA back end only; on any other (TCP, TLS) they
 * fail with -EOPNOTSUPP and say so. Writes share the connection's send queue: call them with
 * the stream's send lock held (gw_session), never beside a record send on the same stream. */
#ifndef GW_TRANSPORT_RDMA_MEM_H
#define GW_TRANSPORT_RDMA_MEM_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/transport/conn.h"

/* What the peer needs to write into a registered region (sent to it in a record). Every
 * field of a received descriptor is checked against what it is used for before a write. */
struct gw_rdma_region {
    uint64_t addr;       /* remote virtual address of byte 0 */
    uint64_t len;
    uint32_t rkey;
};

struct gw_rdma_mr;

/* Registers mem[0..len) on c's protection domain: for remote writes by the peer
 * (remote_write, the destination) or for local reads (the source). *desc (may be NULL)
 * gets the descriptor to send. Returns 0, -EOPNOTSUPP (not an RDMA connection), -EINVAL,
 * or -errno from ibv_reg_mr. */
int gw_rdma_mem_register(struct gw_conn *c, void *mem, uint64_t len, bool remote_write, struct gw_rdma_mr **out,
                         struct gw_rdma_region *desc, struct gw_err *err);

/* Writes local[off..off + len) (inside the registered region) to remote at remote_off and
 * waits for its completion. Checks off + len against the local region and
 * remote_off + len against remote->len before posting. Returns 0, -EOPNOTSUPP, -ERANGE,
 * or -EIO with the completion status. */
int gw_rdma_mem_write(struct gw_conn *c, struct gw_rdma_mr *local, uint64_t off, uint64_t len,
                      const struct gw_rdma_region *remote, uint64_t remote_off, struct gw_err *err);

/* Deregisters; safe on NULL. The memory stays the caller's. */
void gw_rdma_mem_deregister(struct gw_rdma_mr *mr);

#endif
