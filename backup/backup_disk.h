/* Copying a backup's disk from its point in time (disk_snapshot.h) into a chunk sink. */
#ifndef GW_BACKUP_BACKUP_DISK_H
#define GW_BACKUP_BACKUP_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/disk_snapshot.h"
#include "storage/chunk_sink.h"

/* An incremental backup's shortcut: chunk i for which clean(ctx, i) is true is unchanged since
 * the parent backup, whose chunk names (one per chunk of the same size) are names[]. */
struct gw_backup_disk_reuse {
    bool (*clean)(void *ctx, uint64_t chunk);
    void *ctx;
    const uint8_t (*names)[32];
};

struct gw_backup_disk_stats {
    uint64_t read_bytes, hole_chunks, reused_chunks;
};

/* Reads every chunk of cs bytes of ds (except those reuse says are clean) and puts it into
 * sink; names[i] gets chunk i's name (all zero for a zero chunk). reuse may be NULL. 0 or
 * -errno with the reason in err (-ENOSPC: the fleecing area filled up). */
int gw_backup_disk_copy(struct gw_disk_snapshot *ds, struct gw_chunk_sink *sink, uint32_t cs, uint8_t (*names)[32],
                        const struct gw_backup_disk_reuse *reuse, struct gw_backup_disk_stats *st, char *err,
                        size_t errlen);

#endif
