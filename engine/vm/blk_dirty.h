/* The disk's dirty bitmap since the last backup: which 1 MiB blocks of the image the guest
 * wrote since backup `base`, so that an incremental backup whose parent is `base` reads only
 * those (backup/backup_disk.c). It lives in the block device and travels in its saved state
 * (VirtioBlkState), so a runner restored from a snapshot or a VM that migrated keeps it.
 * Owned by the device; every call under the device lock. */
#ifndef GW_VM_BLK_DIRTY_H
#define GW_VM_BLK_DIRTY_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/common/limits.h"

#define GW_BLK_DIRTY_BLOCK (1ull << 20)
#define GW_BLK_DIRTY_BASE_MAX GW_LIMIT_BACKUP_ID_BUF   /* a backup id and its NUL */

struct gw_blk_dirty {
    uint64_t *bits;
    uint64_t nbits, words;
    char base[GW_BLK_DIRTY_BASE_MAX];   /* "" = unknown: the next backup reads everything */
};

/* For a disk of bytes. 0 or -ENOMEM. */
int gw_blk_dirty_init(struct gw_blk_dirty *d, uint64_t bytes);
void gw_blk_dirty_free(struct gw_blk_dirty *d);
/* Marks [off, off+len) written (the caller checked the range). */
void gw_blk_dirty_mark(struct gw_blk_dirty *d, uint64_t off, uint64_t len);
/* Moves the bitmap into *out (malloc'd, d->words words; the caller frees) and clears it; base
 * gets what it was relative to. 0 or -ENOMEM. */
int gw_blk_dirty_take(struct gw_blk_dirty *d, uint64_t **out, char base[GW_BLK_DIRTY_BASE_MAX]);
/* Gives bits taken by a backup that then failed back (ORed in; base unchanged). */
void gw_blk_dirty_give_back(struct gw_blk_dirty *d, const uint64_t *bits);
/* The bitmap is now relative to backup id. */
void gw_blk_dirty_set_base(struct gw_blk_dirty *d, const char *id);
/* Loads a saved bitmap: taken when it has our block size and length and a sane base, else the
 * bitmap is unknown (base ""), so the next backup reads everything. */
void gw_blk_dirty_load(struct gw_blk_dirty *d, const uint8_t *bits, uint64_t len, uint64_t block, const char *base);
/* True when any block in [off, off+len) is marked in bits (words of a taken bitmap). */
bool gw_blk_dirty_any(const uint64_t *bits, uint64_t nbits, uint64_t off, uint64_t len);

#endif
