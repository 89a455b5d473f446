/* The disk of a backup when the VM's disk is an RBD image. The point in time is the backup's
 * pause, but the RBD snapshot is created after it: creating one costs 70-90 ms (a monitor
 * round trip and librbd's own quiesce), far more than the few milliseconds the pause may take.
 *
 * At the pause copy-before-write starts in the block device (the seam the raw-file fleece
 * uses, disk_fleece.c): the first guest write to each block after the point in time first
 * reads the old block through the VM's own RBD handle and keeps it in the bounded local
 * fleecing file (an all-zero block only as a mark). The vCPUs resume; then the snapshot is
 * created through the same handle (librbd orders it against the guest's writes), and
 * copy-before-write stops. A block is read from the fleecing file if the guest wrote it
 * between the point and the snapshot, else from the snapshot: together they are the disk at
 * the point in time. A guest write waits for one read of its own disk at most, never for the
 * backup target; when the fleecing area is full or a copy fails, copy-before-write stops, the
 * guest goes on, and the backup fails with the reason (it gives way, as for raw files).
 *
 * Incremental: the last backup's snapshot is kept, named "godwit-<backup id>". The next
 * backup whose parent is that backup asks RBD which extents changed between the two
 * snapshots (rbd_diff_iterate2, from the object map with fast-diff) and reads only the chunks
 * those extents and the fleeced blocks touch; every other chunk keeps the parent's chunk name.
 * Without the parent's snapshot (the first backup, a parent made from a file, a snapshot
 * removed by hand), or when the size or chunk size differ, every chunk is read. After the
 * manifest is written the new snapshot takes its backup's name and the parent's snapshot is
 * removed; on failure the new one is removed and the parent's stays. (The kept snapshot is a
 * little later than its backup's point in time: the next diff then names a superset of what
 * changed since that point, which costs reads, never correctness.)
 *
 * Life cycle: gw_disk_rbd_open (before the pause) -> gw_disk_rbd_freeze (inside it) ->
 * gw_disk_rbd_snap (after it) -> gw_disk_rbd_store -> gw_disk_rbd_finish (after the manifest,
 * or on failure) -> gw_disk_rbd_free (ends copy-before-write on every path). */
#ifndef GW_BACKUP_DISK_RBD_H
#define GW_BACKUP_DISK_RBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/disk_snapshot.h"
#include "godwit/v1/backup.pb-c.h"

struct gw_vm;
struct gw_chunk_sink;
struct gw_disk_rbd;

#define GW_DISK_RBD_SNAP_PREFIX "godwit-"

/* Whether vm's disk is an RBD image (then the calls below replace reading the image). */
bool gw_disk_rbd_applies(const struct gw_vm *vm);

/* Prepares the backup of vm's RBD disk: block tables and the fleecing file (p: its directory
 * and limit, the backup's chunk size). No cluster call. 0 or -errno with err set. */
int gw_disk_rbd_open(struct gw_vm *vm, const struct gw_disk_snapshot_params *p, struct gw_disk_rbd **out, char *err,
                     size_t errlen);

/* The point in time: starts copy-before-write. Call inside the pause (no request in flight).
 * 0 or -errno with err set. */
int gw_disk_rbd_freeze(struct gw_disk_rbd *d, char *err, size_t errlen);

/* Creates the RBD snapshot, with the vCPUs running, then stops copy-before-write. 0 or -errno
 * with err set (also when copy-before-write was lost before the snapshot existed). */
int gw_disk_rbd_snap(struct gw_disk_rbd *d, char *err, size_t errlen);

/* The disk's size in bytes. */
uint64_t gw_disk_rbd_size(const struct gw_disk_rbd *d);

/* Copy-before-write figures (blocks fleeced, bytes, the guest's longest wait; st may be NULL)
 * and the time the snapshot's creation took (what the pause used to hold). */
void gw_disk_rbd_stats(const struct gw_disk_rbd *d, struct gw_disk_snapshot_stats *st, uint64_t *snap_ns);

/* Stores the point in time's chunks of cs bytes into sink: names[i] gets chunk i's name (all
 * zeros for a zero chunk), for every i < ceil(size / cs). parent (may be NULL) is the parent
 * backup's disk image and parent_id its id: the diff base. *bytes_read gets the bytes read
 * (from the snapshot: the fleeced blocks replace parts of those), *incremental whether a diff was used. 0 or -errno with err
 * set. */
int gw_disk_rbd_store(struct gw_disk_rbd *d, struct gw_chunk_sink *sink, uint32_t cs,
                      const Godwit__V1__BackupImage *parent, const char *parent_id, uint8_t (*names)[32],
                      uint64_t *bytes_read, bool *incremental, char *err, size_t errlen);

/* backup_id set: the backup is listed; keep its snapshot under its name and remove the
 * parent's. NULL: the backup failed; remove the new snapshot (if it was made). Failures are
 * logged only (a snapshot left behind costs space, not correctness). */
void gw_disk_rbd_finish(struct gw_disk_rbd *d, const char *backup_id);
/* Ends copy-before-write if still on, closes the fleecing file, frees d (NULL is fine). */
void gw_disk_rbd_free(struct gw_disk_rbd *d);

/* Restoring a backup's disk into an RBD image (made beforehand, of the backup's disk size):
 * open checks the size and takes the image's lock (-EAGAIN: in use); the restore writes
 * through the handle; close flushes when ok and lets the lock go (the VM takes it next).
 * 0 or -errno with err set. */
struct gw_blk;
int gw_disk_rbd_restore_open(const char *spec, uint64_t size, struct gw_blk **out, char *err, size_t errlen);
int gw_disk_rbd_restore_close(struct gw_blk *b, const char *spec, bool ok, char *err, size_t errlen);

#endif
