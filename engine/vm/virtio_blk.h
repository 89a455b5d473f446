/* virtio-blk (virtio 1.x, section 5.2) over virtio-mmio, backed by a raw image file.
 *
 * Requests are served synchronously, in the vCPU thread that writes QueueNotify, under the
 * device lock; so when the bus lock is free nothing is in flight, and saved state never
 * holds a half-done request. Offered features: VERSION_1, INDIRECT_DESC, SEG_MAX, FLUSH.
 * Supported requests: IN, OUT, FLUSH (fdatasync), GET_ID; others complete with UNSUPP. */
#ifndef GW_VM_VIRTIO_BLK_H
#define GW_VM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/common/lat_hist.h"
#include "engine/vm/blk_dirty.h"
#include "engine/vm/device.h"
#include "engine/vm/virtqueue.h"

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

/* Creates the disk "vda" on image_path (opened O_RDWR; its size must be a non-zero multiple
 * of 512 and is the capacity the guest sees). mem is borrowed and must outlive the device.
 * The device answers at [mmio_base, mmio_base + GW_VIRTIO_MMIO_SIZE) and raises
 * GW_VIRTIO_BLK_GSI through irq. On success *out owns the image fd; release it with
 * (*out)->ops->destroy. Returns 0 or -errno (with one log line saying why). */
int gw_virtio_blk_create(const char *image_path, const struct gw_guest_mem *mem,
                         struct gw_irq_sink irq, uint64_t mmio_base, struct gw_device **out);

/* Takes (on) or drops the image's write lock (an OFD lock on the whole file), so that two
 * hosts or VMs never write one image at once. gw_virtio_blk_create does not take it. Returns
 * 0, -EAGAIN when another open file holds it, -EINVAL when d is not a disk, or -errno. */
int gw_virtio_blk_lock(struct gw_device *d, bool on);

/* Makes the disk d (from gw_virtio_blk_create) report every write it makes into guest RAM
 * (read data, GET_ID answers, status bytes, used ring entries and index) to sink, so that
 * a migration copying RAM while the guest runs re-sends those pages: KVM's dirty log does
 * not see them. A sink with mark NULL stops reporting. Call with d->lock held (or before
 * any vCPU runs). Returns 0, or -EINVAL when d is not a virtio-blk device. */
int gw_virtio_blk_set_write_sink(struct gw_device *d, struct gw_guest_write_sink sink);

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

/* The disk's dirty bitmap since the last backup (blk_dirty.h), NULL when d is not a disk. Use
 * it under d->lock. */
struct gw_blk_dirty *gw_virtio_blk_dirty(struct gw_device *d);

/* The image path and capacity in bytes of disk d (-EINVAL when d is not a disk). */
int gw_virtio_blk_image(struct gw_device *d, const char **path, uint64_t *bytes);

#endif
