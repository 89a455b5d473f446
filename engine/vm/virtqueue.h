/* Split virtqueues (virtio 1.x, section 2.6) living in guest RAM, seen from the device side.
 *
 * Everything in the rings is written by the guest, possibly while we read it from another
 * vCPU thread, so every value is read once into a local copy and checked before use:
 * ring placement, descriptor indexes, chain length, buffer ranges. A chain that breaks a
 * rule is refused as a whole (gw_vq_pop returns a negative errno and describes the fault in
 * vq->err); the caller then marks the device DEVICE_NEEDS_RESET. Nothing here ever forms a
 * pointer outside guest RAM: every host pointer comes from gw_guest_mem_ptr.
 *
 * Not thread-safe: one queue is driven by one thread at a time (the device's bus lock). */
#ifndef GW_VM_VIRTQUEUE_H
#define GW_VM_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>

struct gw_guest_mem;

/* Largest queue any of our devices offers; also the longest chain (direct + indirect) we
 * accept, since a driver may not build a chain longer than the queue size. */
#define GW_VQ_NUM_MAX 256u

#define GW_VIRTQ_DESC_F_NEXT 1u
#define GW_VIRTQ_DESC_F_WRITE 2u
#define GW_VIRTQ_DESC_F_INDIRECT 4u

/* Guest-visible layout (little-endian, packed by construction). */
struct gw_virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

/* One buffer of a chain: base points into guest RAM at guest-physical gpa, and
 * [base, base+len) lies wholly inside it (len may be 0). The guest may change the bytes at
 * any time; only the bounds are guaranteed. */
struct gw_vq_iov {
    uint8_t *base;
    uint64_t gpa;
    uint32_t len;
};

/* Where a device reports the guest memory it wrote. KVM's dirty log only sees writes made
 * by vCPUs, so a migration that is copying RAM while the device runs must be told about
 * the device's own writes (request data, status bytes, used ring), or the destination gets
 * stale pages. mark may be NULL (nobody is tracking); it is called from the vCPU thread
 * serving the request, under the device lock. */
struct gw_guest_write_sink {
    void (*mark)(void *ctx, uint64_t gpa, uint64_t len);
    void *ctx;
};

/* A popped descriptor chain: nout device-readable buffers first, then nin device-writable
 * ones (iov[nout .. nout+nin)). out_bytes/in_bytes are the totals of each part. */
struct gw_vq_chain {
    uint16_t head;
    unsigned nout, nin;
    uint64_t out_bytes, in_bytes;
    struct gw_vq_iov iov[GW_VQ_NUM_MAX];
};

struct gw_vq {
    /* Set once by gw_vq_init. */
    const struct gw_guest_mem *mem;
    uint16_t num_max;
    bool indirect_ok;          /* VIRTIO_F_INDIRECT_DESC was negotiated */
    struct gw_guest_write_sink wsink;  /* kept across gw_vq_reset */

    /* Written by the driver through the transport while !ready. */
    uint16_t num;
    uint64_t desc_addr, avail_addr, used_addr;
    bool ready;

    /* Device progress, saved and restored. Free-running 16-bit counters like the rings'. */
    uint16_t last_avail_idx;
    uint16_t used_idx;

    /* Host views of the rings, valid while ready (set by gw_vq_activate). */
    uint8_t *desc, *avail, *used;

    /* One-line description of the last fault found by gw_vq_activate or gw_vq_pop. */
    char err[160];
};

/* Resets vq to the state after a device reset: not ready, num = num_max, addresses 0. */
void gw_vq_init(struct gw_vq *vq, const struct gw_guest_mem *mem, uint16_t num_max);
void gw_vq_reset(struct gw_vq *vq);

/* Checks num (a power of two, 1..num_max), the alignment of the three rings (16/2/4) and
 * that each ring lies wholly in guest RAM, then resolves host pointers and marks the queue
 * ready. Does not read guest memory (safe during restore, before RAM has arrived).
 * Returns 0, or -EINVAL with vq->err set (the queue stays not ready). */
int gw_vq_activate(struct gw_vq *vq);

/* Takes the next available chain into *chain. Returns 1 when a chain was taken, 0 when
 * the ring is empty, or a negative errno when the guest broke a rule (vq->err says which;
 * last_avail_idx is not advanced): -EINVAL (index out of range, bad flags, buffer outside
 * RAM, readable after writable, nested or unsupported indirect), -ELOOP (chain revisits
 * a descriptor), -E2BIG (chain longer than the queue), -EOVERFLOW (avail->idx ran more
 * than num entries ahead). */
int gw_vq_pop(struct gw_vq *vq, struct gw_vq_chain *chain);

/* Publishes a finished chain: writes {head, written} to the used ring, then makes it
 * visible with a release store of used->idx, so the guest sees the data the device wrote
 * into the buffers before it sees the used entry. Reports both writes to vq->wsink. */
void gw_vq_push(struct gw_vq *vq, uint16_t head, uint32_t written);

/* Gives back the chain the last gw_vq_pop took, for a device that refuses it as malformed:
 * the saved state then shows it as never consumed rather than forever in flight. */
void gw_vq_unpop(struct gw_vq *vq);

/* Reports len bytes at gpa written by the device to vq->wsink (if any). */
void gw_vq_mark_written(const struct gw_vq *vq, uint64_t gpa, uint64_t len);

#endif
