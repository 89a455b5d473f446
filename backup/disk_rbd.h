/* The disk of a backup when the VM's disk is an RBD image: an RBD snapshot is the point in
 * time, taken inside the backup's pause (the device completes requests synchronously, and
 * librbd flushes the image's writes before it snapshots), and read after the pause while the
 * guest runs on. The pause costs one snapshot, whatever the disk's size.
 *
 * Incremental: the last backup's snapshot is kept, named "godwit-<backup id>". The next
 * backup whose parent is that backup asks RBD which extents changed between the two
 * snapshots (rbd_diff_iterate2, from the object map with fast-diff) and reads only the chunks
 * those extents touch; every other chunk keeps the parent's chunk name. Without the parent's
 * snapshot (the first backup, a parent made from a file, a snapshot removed by hand), or when
 * the size or chunk size differ, every chunk is read. After the manifest is written the new
 * snapshot takes its backup's name and the parent's snapshot is removed; on failure the new
 * one is removed and the parent's stays.
 *
 * Life cycle: gw_disk_rbd_snap (inside the pause) -> gw_disk_rbd_store (after it) ->
 * gw_disk_rbd_finish (after the manifest, or on failure) -> gw_disk_rbd_free. */
#ifndef GW_BACKUP_DISK_RBD_H
#define GW_BACKUP_DISK_RBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "godwit/v1/backup.pb-c.h"

struct gw_vm;
struct gw_chunk_sink;
struct gw_disk_rbd;

#define GW_DISK_RBD_SNAP_PREFIX "godwit-"

/* Whether vm's disk is an RBD image (then the calls below replace reading the image). */
bool gw_disk_rbd_applies(const struct gw_vm *vm);

/* Takes the snapshot of vm's disk. Call with the VM paused. 0 or -errno with err set. */
int gw_disk_rbd_snap(struct gw_vm *vm, struct gw_disk_rbd **out, char *err, size_t errlen);

/* The disk's size in bytes. */
uint64_t gw_disk_rbd_size(const struct gw_disk_rbd *d);

/* Stores the snapshot's chunks of cs bytes into sink: names[i] gets chunk i's name (all
 * zeros for a zero chunk), for every i < ceil(size / cs). parent (may be NULL) is the parent
 * backup's disk image and parent_id its id: the diff base. *bytes_read gets the bytes read
 * from the snapshot, *incremental whether a diff was used. 0 or -errno with err set. */
int gw_disk_rbd_store(struct gw_disk_rbd *d, struct gw_chunk_sink *sink, uint32_t cs,
                      const Godwit__V1__BackupImage *parent, const char *parent_id, uint8_t (*names)[32],
                      uint64_t *bytes_read, bool *incremental, char *err, size_t errlen);

/* backup_id set: the backup is listed; keep its snapshot under its name and remove the
 * parent's. NULL: the backup failed; remove the new snapshot. Failures are logged only (a
 * snapshot left behind costs space, not correctness). */
void gw_disk_rbd_finish(struct gw_disk_rbd *d, const char *backup_id);
void gw_disk_rbd_free(struct gw_disk_rbd *d);

/* Restoring a backup's disk into an RBD image (made beforehand, of the backup's disk size):
 * open checks the size and takes the image's lock (-EAGAIN: in use); the restore writes
 * through the handle; close flushes when ok and lets the lock go (the VM takes it next).
 * 0 or -errno with err set. */
struct gw_blk;
int gw_disk_rbd_restore_open(const char *spec, uint64_t size, struct gw_blk **out, char *err, size_t errlen);
int gw_disk_rbd_restore_close(struct gw_blk *b, const char *spec, bool ok, char *err, size_t errlen);

#endif
