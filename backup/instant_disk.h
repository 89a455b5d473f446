/* The disk half of an instant restore: the VM's new disk (a raw file or an RBD image, empty:
 * all holes, of the backup's size) fills from the backup behind the virtio disk. A background
 * thread reads the backup's disk chunks in order and writes them into it, and the device
 * (engine/vm/virtio_blk.h, gw_blk_fill) asks before every request:
 *   - a read of a block not yet restored restores it first (the request waits for it);
 *   - a write of a block not yet restored restores it first, unless the write covers the
 *     block whole: then the block is only marked restored (the guest's data wins, the
 *     backup's copy is never written over it).
 * Every write into the image goes through the device's own backend handle, under the device
 * lock: one writer per image (RBD's exclusive lock is the VM's, and a second handle could not
 * write), and the lock orders the fill against the guest's requests. The fill thread reads a
 * chunk from the store without the lock, then takes it and writes the chunk only if no request
 * restored or overwrote it meanwhile: a restore never lands after a guest write, and a guest
 * request waits for one chunk write of the fill at most, never for the store (its own chunks
 * excepted). Zero chunks are holes of the image from the start. Chunks are checked like memory
 * chunks (a hostile chunk fails the request and the restore); a store that fails is retried,
 * with the request waiting, and reported as stalled after outage_ms. When the last chunk is in,
 * the image is flushed through the backend (an fsync, or librbd's flush). */
#ifndef GW_BACKUP_INSTANT_DISK_H
#define GW_BACKUP_INSTANT_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/backup.h"
#include "engine/vm/virtio_blk.h"

struct gw_device;
struct gw_instant_disk;

struct gw_instant_disk_progress {
    uint64_t chunks_total, chunks_done;   /* non-zero chunks; restored or overwritten */
    uint64_t chunks_demand;               /* restored because a request needed them first */
    uint64_t chunks_overwritten;          /* covered whole by a guest write: never read */
    uint64_t bytes_written;               /* backup bytes written into the image */
    uint64_t fill_ns;                     /* start to done (0 until then) */
    bool complete, failed, stalled;
    char error[600];
};

/* Starts filling the image of the virtio disk dev (im->size bytes, all holes; opened for writing
 * and locked by the VM) from im, the background fill at fill_rate bytes/s (0: unlimited; the
 * device's own requests are never held back). Set the hook (gw_instant_disk_fill) on dev next.
 * t, im and dev are borrowed and must outlive d. 0 with *out or -errno with err. */
int gw_instant_disk_start(struct gw_backup_target *t, const Godwit__V1__BackupImage *im, struct gw_device *dev,
                          unsigned outage_ms, double fill_rate, struct gw_instant_disk **out, char *err,
                          size_t errlen);
/* The hook for the disk device. */
struct gw_blk_fill gw_instant_disk_fill(struct gw_instant_disk *d);
void gw_instant_disk_progress(struct gw_instant_disk *d, struct gw_instant_disk_progress *out);
/* Makes every waiting or later ensure fail at once (the restore is over). */
void gw_instant_disk_stop(struct gw_instant_disk *d);
/* Stops the thread and frees d (remove the hook from the device first). Safe on NULL. */
void gw_instant_disk_free(struct gw_instant_disk *d);

/* Reads chunk c of im from t's store and checks it into raw (capacity im->chunk_size), its
 * length in *len and the object's in *nread (instant_restore.c; shared with the disk). */
enum { GW_FETCH_OK = 0, GW_FETCH_UNREACHABLE, GW_FETCH_BAD };
int gw_backup_fetch_chunk(struct gw_backup_target *t, const Godwit__V1__BackupImage *im, uint64_t c, uint8_t *enc,
                          size_t enc_cap, uint8_t *raw, size_t *len, uint64_t *nread, char *why, size_t whylen);

#endif
