/* The copy-before-write area both disk snapshots keep (disk_fleece.c for image files,
 * disk_rbd.c for RBD between the pause and the snapshot): the disk cut into blocks, each
 * block's state, and an unnamed local fleecing file holding the old data of the blocks the
 * guest overwrote first, up to a limit. Its owner holds its own mutex around every call
 * (the guest side runs on a vCPU thread under the device lock); the area only keeps tables. */
#ifndef GW_BACKUP_FLEECE_AREA_H
#define GW_BACKUP_FLEECE_AREA_H

#include <stddef.h>
#include <stdint.h>

enum gw_fleece_state {
    GW_FLEECE_UNTOUCHED = 0,   /* the disk (or snapshot) still holds its point-in-time data */
    GW_FLEECE_COPIED,          /* the old data is at slot[block] in the fleecing file */
    GW_FLEECE_ZERO,            /* the old data was all zeros (or a hole): nothing kept */
    GW_FLEECE_DONE,            /* the backup read it: later writes need no copy (disk_fleece.c) */
};

struct gw_fleece_area {
    uint64_t size, bs, nblocks;
    uint64_t used, limit, copied, wait_max, wait_total;
    uint8_t *state;            /* enum gw_fleece_state per block */
    uint32_t *slot;
    uint8_t *scratch;          /* one block, guest side */
    int fd;                    /* the fleecing file (unnamed), -1 before init */
};

/* Reads the old data of [off, off+len) of the disk into buf: 0, 1 when there is nothing to
 * keep (a hole, or all zeros), or -errno. */
typedef int (*gw_fleece_read_old_fn)(void *ctx, uint64_t off, uint64_t len, uint8_t *buf);

/* Tables for a disk of size bytes in blocks of bs, a fleecing file in dir with room for
 * limit bytes. 0 or -errno with err set; gw_fleece_area_free undoes a partial init. */
int gw_fleece_area_init(struct gw_fleece_area *a, uint64_t size, uint64_t bs, uint64_t limit, const char *dir,
                        char *err, size_t errlen);
void gw_fleece_area_free(struct gw_fleece_area *a);
uint64_t gw_fleece_area_block_len(const struct gw_fleece_area *a, uint64_t i);

/* Guest side, before a write of [off, off+len) lands: keeps the old data of every UNTOUCHED
 * block it touches. 0, or the first failure with why set: -ENOSPC when the file is full (why
 * ends with full_hint, what the operator can do), or -errno from read_old or the file; the
 * owner then loses its snapshot (the guest write goes on). */
int gw_fleece_area_copy(struct gw_fleece_area *a, uint64_t off, uint64_t len, gw_fleece_read_old_fn read_old,
                        void *ctx, const char *full_hint, char *why, size_t whylen);
/* Block i's old data (state COPIED) into buf. 0 or -errno. */
int gw_fleece_area_read(const struct gw_fleece_area *a, uint64_t i, uint8_t *buf);
/* Counts a guest write's wait (ns), guest side only. */
void gw_fleece_area_waited(struct gw_fleece_area *a, uint64_t ns);

#endif
