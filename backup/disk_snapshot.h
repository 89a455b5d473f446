/* The virtio disk's point in time for a backup, read after the pause at leisure.
 *
 * One interface, backends chosen in one place (gw_disk_snapshot_open) by what backs the disk:
 *   fleece (disk_fleece.c): raw image files. Copy-before-write in the block device: from the
 *     point in time until close, before a guest write lands on a block the backup has not read
 *     yet, the old block is copied to a bounded local fleecing file; reads come from there for
 *     blocks overwritten, from the image otherwise. A guest write waits at most for one local
 *     block copy, never for the backup target; when the fleecing area is full the BACKUP fails
 *     (reads return -ENOSPC with the reason), the guest never gives way.
 *   An RBD image has its own reader (disk_rbd.h): copy-before-write from the point in time until
 *     its RBD snapshot exists (taken after the pause), then the snapshot.
 *
 * Life cycle: open (before the pause: files and tables) -> freeze (inside the pause, with no
 * request in flight: the point in time) -> read each range once, in any order -> close (ends
 * copy-before-write; also safe without freeze, and on every failure path). */
#ifndef GW_BACKUP_DISK_SNAPSHOT_H
#define GW_BACKUP_DISK_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_vm;
struct gw_disk_snapshot;

struct gw_disk_snapshot_stats {
    uint64_t blocks_copied;       /* old blocks copied before a guest write (fleeced) */
    uint64_t fleece_bytes;        /* fleecing area used at the end (its peak: it only grows) */
    uint64_t fleece_limit;
    uint64_t guest_wait_ns_max;   /* the longest a guest write waited for a copy */
    uint64_t guest_wait_ns_total;
};

struct gw_disk_snapshot_ops {
    /* The point in time: called inside the pause. 0 or -errno (reason in s->err). */
    int (*freeze)(struct gw_disk_snapshot *s);
    /* Reads [off, off+len) as it was at the point in time into buf. off and len are multiples
     * of s->align (len may end at s->size instead). *hole is set when the range held only
     * zeros (buf's contents are then unspecified: it may not have been written). Each range is read at most once. 0, or -errno with the
     * reason in s->err (-ENOSPC: the fleecing area filled up). */
    int (*read)(struct gw_disk_snapshot *s, uint64_t off, uint64_t len, uint8_t *buf, bool *hole);
    /* The backup will not read [off, off+len) (unchanged since its parent: it reuses the
     * parent's chunks), so guest writes there need no copy. Same alignment as read. */
    void (*skip)(struct gw_disk_snapshot *s, uint64_t off, uint64_t len);
    /* Ends the snapshot and frees it; st (may be NULL) gets its counters. */
    void (*close)(struct gw_disk_snapshot *s, struct gw_disk_snapshot_stats *st);
};

struct gw_disk_snapshot {
    const struct gw_disk_snapshot_ops *ops;
    uint64_t size;                /* bytes of the disk */
    uint64_t align;               /* reads start on multiples of this */
    char err[256];
};

struct gw_disk_snapshot_params {
    const char *fleece_dir;       /* where the fleecing file goes (the runner's state dir) */
    uint64_t fleece_limit;        /* bytes; 0 = GW_LIMIT_FLEECE_DEFAULT */
    uint64_t align;               /* the backup's chunk size: reads come in these units */
};

/* Opens the point-in-time reader for vm's disk; *out is NULL (and 0 returned) when the VM has
 * no disk. 0 or -errno with the reason in err. */
int gw_disk_snapshot_open(struct gw_vm *vm, const struct gw_disk_snapshot_params *p, struct gw_disk_snapshot **out,
                          char *err, size_t errlen);

/* The fleecing area's geometry for a disk of size bytes and the backup's chunk size
 * (p->align): *limit (bytes), *bs (the copy-before-write block: divides *align, so a chunk
 * never splits one), *align. Shared by both copy-before-write users (disk_fleece.c,
 * disk_rbd.c). 0 or -EINVAL with the reason in err. */
int gw_disk_fleece_geometry(uint64_t size, const struct gw_disk_snapshot_params *p, uint64_t *limit, uint64_t *bs,
                            uint64_t *align, char *err, size_t errlen);

/* The fleecing file: an unnamed file in dir (nothing is left behind when the runner dies).
 * The fd, or -errno. */
int gw_disk_fleece_file(const char *dir);

/* The fleece backend (disk_fleece.c), for a raw image at path of size bytes. */
int gw_disk_fleece_open(struct gw_vm *vm, const char *path, uint64_t size, const struct gw_disk_snapshot_params *p,
                        struct gw_disk_snapshot **out, char *err, size_t errlen);

#endif
