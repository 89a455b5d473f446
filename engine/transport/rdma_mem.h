/* RDMA WRITE of guest pages straight into the peer's registered guest memory: the page path
 * of an RDMA migration, under the same session as its control records (which keep going by
 * SEND/RECV through the connection's ops, rdma.c).
 *
 * The destination registers its guest memory for remote writes on every stream's connection
 * and sends the regions to the source in one RDMA_REGIONS record (gw_rdma_regions_pack); the
 * source checks them against the session (gw_rdma_regions_unpack), registers its own guest
 * memory for local reads and writes pages from it to offsets of the remote regions, no bounce
 * buffer on either side. The destination learns which pages arrived from the PAGE_BATCH
 * record sent after the writes on the same queue pair (GW_PAGE_PLACED descriptors; RC
 * ordering delivers a SEND after the WRITEs posted before it), so its decoder still never
 * writes guest memory itself.
 *
 * These calls go through the connection's verbs ops (rdma_verbs.h): they work on RDMA
 * connections (and on connections a test double gave verbs); on any other (TCP, TLS) they
 * fail with -EOPNOTSUPP and say so. Writes share the connection's send queue: call them with
 * the stream's send lock held (gw_session_locked), never beside a record send on the same
 * stream. */
#ifndef GW_TRANSPORT_RDMA_MEM_H
#define GW_TRANSPORT_RDMA_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/transport/conn.h"

/* What the peer needs to write into a registered region (sent to it in a record). Every
 * field of a received descriptor is checked against what it is used for before a write. */
struct gw_rdma_region {
    uint64_t addr;       /* remote virtual address of byte 0 */
    uint64_t len;
    uint32_t rkey;
};

/* One region of an RDMA_REGIONS record: guest memory [guest_off, guest_off + r.len) of the
 * pages stream `stream` carries lies at r on the peer. */
struct gw_rdma_peer_region {
    uint32_t stream;
    uint64_t guest_off;
    struct gw_rdma_region r;
};

struct gw_rdma_mr;

/* Registers mem[0..len) on c: for remote writes by the peer (remote_write, the destination)
 * or for local reads (the source). *desc (may be NULL) gets the descriptor to send. Returns
 * 0, -EOPNOTSUPP (c has no RDMA verbs), -EINVAL, or the verbs' -errno. */
int gw_rdma_mem_register(struct gw_conn *c, void *mem, uint64_t len, bool remote_write, struct gw_rdma_mr **out,
                         struct gw_rdma_region *desc, struct gw_err *err);

/* Writes local[off..off + len) (inside the registered region) to remote at remote_off and
 * waits for its completion. Checks off + len against the local region and
 * remote_off + len against remote->len before posting. Returns 0, -EOPNOTSUPP, -ERANGE,
 * or -EIO with the completion status. */
int gw_rdma_mem_write(struct gw_conn *c, struct gw_rdma_mr *local, uint64_t off, uint64_t len,
                      const struct gw_rdma_region *remote, uint64_t remote_off, struct gw_err *err);

/* One WRITE of a list: local[off..off + len) to remote at remote_off. */
struct gw_rdma_write {
    uint64_t off, len;
    const struct gw_rdma_region *remote;
    uint64_t remote_off;
};

/* Most WRITEs of a list in flight at once (the queue pair's send queue holds more). */
#define GW_RDMA_WRITES_IN_FLIGHT 16u

/* Performs w[0..n) as gw_rdma_mem_write does, each checked before it is posted, with up to
 * GW_RDMA_WRITES_IN_FLIGHT posted before the first completion is awaited, and returns once
 * every posted WRITE has completed (so the send queue holds none of them when a record is
 * sent next). Returns 0 or the first error (the WRITEs posted before it are still reaped). */
int gw_rdma_mem_write_list(struct gw_conn *c, struct gw_rdma_mr *local, const struct gw_rdma_write *w, unsigned n,
                           struct gw_err *err);

/* Deregisters; safe on NULL. The memory stays the caller's. */
void gw_rdma_mem_deregister(struct gw_rdma_mr *mr);

/* Packs regions v[0..n) as a MigRdmaRegions payload into a new malloc'd buffer (*out, *len;
 * the caller frees). 0, -EINVAL (n is 0 or over GW_WIRE_MAX_RDMA_REGIONS) or -ENOMEM. */
int gw_rdma_regions_pack(const struct gw_rdma_peer_region *v, unsigned n, uint8_t **out, size_t *len);

/* Parses an RDMA_REGIONS payload p[0..len) of a session of nstreams streams and mem_size
 * bytes of guest memory into out[0..GW_WIRE_MAX_RDMA_REGIONS) and *n, sorted by stream and
 * guest offset. Refused (-EBADMSG, err says which region and why): not a message; no region
 * or more than GW_WIRE_MAX_RDMA_REGIONS; a stream index >= nstreams; a guest offset or length
 * not a multiple of 4096; a length of 0; a region reaching beyond guest memory (checked
 * without overflow); an address range that wraps around; two regions of one stream that
 * overlap. */
int gw_rdma_regions_unpack(const uint8_t *p, size_t len, unsigned nstreams, uint64_t mem_size,
                           struct gw_rdma_peer_region *out, unsigned *n, struct gw_err *err);

/* The region of v[0..n) (as unpacked) that holds guest byte off for stream, or NULL. */
const struct gw_rdma_peer_region *gw_rdma_regions_find(const struct gw_rdma_peer_region *v, unsigned n,
                                                       uint32_t stream, uint64_t off);

#endif
