/* virtio-blk (virtio 1.x, section 5.2) over virtio-mmio, backed by a block backend
 * (blk_backend.h: a raw image file, or an RBD image).
 *
 * Requests are served synchronously, in the vCPU thread that writes QueueNotify, under the
 * device lock; so when the bus lock is free nothing is in flight, and saved state never
 * holds a half-done request. Within one kick, the reads and writes the driver queued run as
 * one backend batch (concurrently on RBD), all finished before the kick returns.
 * Offered features: VERSION_1, INDIRECT_DESC, SEG_MAX, FLUSH.
 * Supported requests: IN, OUT, FLUSH (the backend's flush), GET_ID; others complete with
 * UNSUPP. */
#ifndef GW_VM_VIRTIO_BLK_H
#define GW_VM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/common/lat_hist.h"
#include "engine/common/lat_windows.h"
#include "engine/vm/blk_dirty.h"
#include "engine/vm/device.h"
#include "engine/vm/virtqueue.h"

struct gw_blk;

#define GW_VIRTIO_ID_BLOCK 2u
#define GW_VIRTIO_BLK_QUEUE_NUM_MAX 256u
#define GW_VIRTIO_BLK_SECTOR 512u
#define GW_VIRTIO_BLK_ID_BYTES 20u
#define GW_VIRTIO_BLK_ID "godwit-vda"      /* GET_ID answer; the same on every host */

#define GW_VIRTIO_BLK_F_SEG_MAX (1ull << 2)
#define GW_VIRTIO_BLK_F_FLUSH (1ull << 9)

#define GW_VIRTIO_BLK_T_IN 0u
#define GW_VIRTIO_BLK_T_OUT 1u
#define GW_VIRTIO_BLK_T_FLUSH 4u
#define GW_VIRTIO_BLK_T_GET_ID 8u

#define GW_VIRTIO_BLK_S_OK 0u
#define GW_VIRTIO_BLK_S_IOERR 1u
#define GW_VIRTIO_BLK_S_UNSUPP 2u

/* Request header, the first 16 device-readable bytes of every request. */
struct gw_virtio_blk_req_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

/* Creates the disk "vda" on image_path (a file path or rbd:POOL/IMAGE..., see blk_backend.h;
 * opened for writing; its size must be a non-zero multiple of 512 and is the capacity the
 * guest sees). mem is borrowed and must outlive the device.
 * The device answers at [mmio_base, mmio_base + GW_VIRTIO_MMIO_SIZE) and raises
 * GW_VIRTIO_BLK_GSI through irq. On success *out owns the backend; release it with
 * (*out)->ops->destroy. Returns 0 or -errno (with one log line saying why). */
int gw_virtio_blk_create(const char *image_path, const struct gw_guest_mem *mem,
                         struct gw_irq_sink irq, uint64_t mmio_base, struct gw_device **out);
/* The same on a backend already open (gw_blk_open, which says why it failed); disk is owned
 * by the device from here on, also on failure. image_path names it in the saved state. */
int gw_virtio_blk_create_on(struct gw_blk *disk, const char *image_path, const struct gw_guest_mem *mem,
                            struct gw_irq_sink irq, uint64_t mmio_base, struct gw_device **out);

/* Takes (on) or drops the image's write lock (the backend's: an OFD lock on a file, RBD's
 * exclusive lock), so that two hosts or VMs never write one image at once.
 * gw_virtio_blk_create does not take it. Returns 0, -EAGAIN when another holder has it,
 * -EINVAL when d is not a disk, or -errno. */
int gw_virtio_blk_lock(struct gw_device *d, bool on);

/* The disk's backend (owned by d), or NULL when d is not a virtio-blk device. For callers
 * that need backend-specific calls (an RBD snapshot for a backup) while the VM is paused. */
struct gw_blk *gw_virtio_blk_backend(struct gw_device *d);

/* Makes the disk d (from gw_virtio_blk_create) report every write it makes into guest RAM
 * (read data, GET_ID answers, status bytes, used ring entries and index) to sink, so that
 * a migration copying RAM while the guest runs re-sends those pages: KVM's dirty log does
 * not see them. A sink with mark NULL stops reporting. Call with d->lock held (or before
 * any vCPU runs). Returns 0, or -EINVAL when d is not a virtio-blk device. */
int gw_virtio_blk_set_write_sink(struct gw_device *d, struct gw_guest_write_sink sink);

/* A disk whose image is still being filled (instant restore, backup/instant_disk.c): before
 * a request touches image bytes [off, off + len), ensure(ctx, off, len, write) makes them
 * present (for a write, it may instead note blocks the write covers whole as overwritten).
 * It may wait (for the backup store); a non-zero return fails the request with IOERR. Called
 * under the device lock from the thread serving the request. ensure NULL removes it. Call
 * with d->lock held (or before any vCPU runs). 0, or -EINVAL when d is not a disk. */
struct gw_blk_fill {
    int (*ensure)(void *ctx, uint64_t off, uint64_t len, bool write);
    void *ctx;
};
int gw_virtio_blk_set_fill(struct gw_device *d, struct gw_blk_fill fill);

/* Copy-before-write seam (backup/disk_fleece.c): before_write(ctx, off, len) is called under
 * d->lock before a guest write of image bytes [off, off+len) reaches the image, so whoever
 * set it can first copy the old contents. It must not wait on anything slower than the local
 * image (never on a backup target); the write proceeds whatever it does. A hook with
 * before_write NULL removes it. Call with d->lock held (or while no vCPU runs). Returns 0 or
 * -EINVAL when d is not a virtio-blk device. */
struct gw_blk_write_hook {
    void (*before_write)(void *ctx, uint64_t off, uint64_t len);
    void *ctx;
};
int gw_virtio_blk_set_write_hook(struct gw_device *d, struct gw_blk_write_hook hook);

/* Copies the histogram of request latencies (from the request taken off the ring to its
 * status written; IN and OUT only) since the device was created. Call with d->lock held.
 * Returns 0 or -EINVAL when d is not a virtio-blk device. */
int gw_virtio_blk_latency(struct gw_device *d, struct gw_lat_hist *out);
/* The p99s (us) of its last min(max, kept) 0.5 s windows and when each ended (end_ns may be
 * NULL), oldest first (lat_windows.h): their number, or -EINVAL. Call with d->lock held. */
int gw_virtio_blk_latency_windows(struct gw_device *d, uint32_t *p99_us, uint64_t *end_ns, unsigned max);

/* The disk's dirty bitmap since the last backup (blk_dirty.h), NULL when d is not a disk. Use
 * it under d->lock. */
struct gw_blk_dirty *gw_virtio_blk_dirty(struct gw_device *d);

/* The image path and capacity in bytes of disk d (-EINVAL when d is not a disk). */
int gw_virtio_blk_image(struct gw_device *d, const char **path, uint64_t *bytes);

#endif
