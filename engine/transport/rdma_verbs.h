/* The few verbs calls the RDMA back end makes, behind an ops table: register memory, post an
 * RDMA WRITE, post a SEND, wait for a send-queue completion. Everything above them (record
 * chunking in rdma.c, the bounds checks and region bookkeeping of rdma_mem.c, the page sink
 * that writes batches in place, engine/pump/rdma_sink.c) is plain C over these ops, so it is
 * the same code whichever implementation is underneath:
 *   - rdma.c: libibverbs/librdmacm on a reliable-connected queue pair (the real one);
 *   - tests/lib/rdma_loopback.c: a TEST DOUBLE for hosts without RDMA hardware (the build and
 *     test host has none), which performs a WRITE as a memcpy into the peer's registration.
 *
 * A connection with RDMA verbs carries them in gw_conn.rdma (ops NULL: none, e.g. TCP). All
 * calls for one connection come from the thread that holds its send lock (gw_session), so an
 * implementation needs no locking of its own per connection. */
#ifndef GW_TRANSPORT_RDMA_VERBS_H
#define GW_TRANSPORT_RDMA_VERBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_err;

struct gw_rdma_verbs_ops {
    const char *name;
    /* Registers mem[0..len) for local access and, with remote_write, for the peer's RDMA
     * WRITE. *mr is the implementation's handle, *rkey what the peer needs. 0 or -errno. */
    int (*reg_mem)(void *dev, void *mem, uint64_t len, bool remote_write, void **mr, uint32_t *rkey,
                   struct gw_err *err);
    void (*dereg_mem)(void *dev, void *mr);
    /* Posts a signalled RDMA WRITE of local[0..len) (inside mr's registration) to the peer's
     * remote_addr under rkey. 0 or -errno; the outcome comes with its completion. */
    int (*post_write)(void *dev, void *mr, const void *local, uint64_t len, uint64_t remote_addr, uint32_t rkey,
                      uint64_t wr_id, struct gw_err *err);
    /* Posts a signalled SEND of buf[0..len) (inside mr's registration). 0 or -errno. */
    int (*post_send)(void *dev, void *mr, const void *buf, size_t len, uint64_t wr_id, struct gw_err *err);
    /* Waits for the next send-queue completion: 0 and its *wr_id, or -EIO (err says the
     * completion's status) or -errno. */
    int (*poll_send)(void *dev, uint64_t *wr_id, struct gw_err *err);
};

struct gw_rdma_verbs {
    const struct gw_rdma_verbs_ops *ops;   /* NULL: the connection has no RDMA verbs */
    void *dev;                             /* the implementation's per-connection state */
};

#endif
