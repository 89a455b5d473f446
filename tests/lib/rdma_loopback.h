/* TEST DOUBLE of the RDMA verbs (engine/transport/rdma_verbs.h) — not an RDMA implementation.
 *
 * It exists only because no RDMA device or kernel RDMA support exists on the build and test
 * host, so the real verbs (rdma.c) cannot run here. It lets the tests run everything above
 * the verbs calls (the RDMA_REGIONS record and its checks, gw_rdma_mem_*, the RDMA page batch
 * and the placers' written-in-place path) over ordinary TCP connections:
 *   - a "fabric" holds every registration of the test process (rkey -> memory, access);
 *   - gw_rdma_loop_attach gives a TCP connection verbs ops (the session's attach hook);
 *   - an RDMA WRITE is checked (rkey known and live, remote write allowed, the target range
 *     inside the registration, the local range inside the local one) and performed at once as
 *     a copy into the peer's memory, then completes; a bad one completes with an error status
 *     as a NIC would report it (remote access error);
 *   - records (SENDs) go over the connection's TCP stream, in order, after the copies of the
 *     WRITEs posted before them: the ordering an RC queue pair gives.
 * Never linked into a production binary. */
#ifndef GW_TESTS_RDMA_LOOPBACK_H
#define GW_TESTS_RDMA_LOOPBACK_H

#include <stdint.h>

#include "engine/transport/conn.h"

struct gw_rdma_loop;

struct gw_rdma_loop *gw_rdma_loop_new(void);
/* Frees the fabric and every endpoint it handed out: after every connection it was attached
 * to is closed. Safe on NULL. */
void gw_rdma_loop_free(struct gw_rdma_loop *f);
/* The session's attach hook (gw_session_cfg.attach): ctx is the fabric. */
int gw_rdma_loop_attach(void *fabric, struct gw_conn *c, struct gw_err *err);
/* WRITEs performed and bytes copied so far; refused WRITEs. */
void gw_rdma_loop_counts(struct gw_rdma_loop *f, uint64_t *writes, uint64_t *bytes, uint64_t *refused);

#endif
