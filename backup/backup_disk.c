/* A backup's disk: every chunk of the disk's point in time (disk_snapshot.h) into the chunk
 * sink, read after the pause while the guest runs. Holes are zero chunks that are never read
 * or hashed; data chunks go to the sink in batches (hashed by two threads, looked up in the
 * store together). */
#include "backup/backup_disk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/store.h"

static int put_batch(struct gw_chunk_sink *sink, uint8_t *bufs, uint32_t cs, const uint64_t *idx, const size_t *len,
                     size_t n, uint8_t (*names)[32], char *err, size_t errlen)
{
    const uint8_t *data[GW_CHUNK_SINK_BATCH] = {0};
    uint8_t hash[GW_CHUNK_SINK_BATCH][32];
    bool zero[GW_CHUNK_SINK_BATCH];
    for (size_t k = 0; k < n; k++) data[k] = bufs + k * cs;
    int r = gw_chunk_sink_put_many(sink, data, len, n, true, hash, zero);
    if (r) { snprintf(err, errlen, "%s", gw_store_error(sink->store)); return r; }
    for (size_t k = 0; k < n; k++) memcpy(names[idx[k]], zero[k] ? (const uint8_t[32]){0} : hash[k], 32);
    return 0;
}

int gw_backup_disk_copy(struct gw_disk_snapshot *ds, struct gw_chunk_sink *sink, uint32_t cs, uint8_t (*names)[32],
                        const struct gw_backup_disk_reuse *reuse, struct gw_backup_disk_stats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    uint64_t nchunks = (ds->size + cs - 1) / cs;
    uint8_t *bufs = malloc((size_t)GW_CHUNK_SINK_BATCH * cs);
    if (!bufs) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    uint64_t idx[GW_CHUNK_SINK_BATCH];
    size_t len[GW_CHUNK_SINK_BATCH], n = 0;
    int r = 0;
    for (uint64_t i = 0; i < nchunks && !r; i++) {
        uint64_t off = i * cs, l = ds->size - off < cs ? ds->size - off : cs;
        if (reuse && reuse->clean && reuse->clean(reuse->ctx, i)) {
            /* Unchanged since the parent backup: its name stands, nothing is read. */
            memcpy(names[i], reuse->names[i], 32);
            ds->ops->skip(ds, off, l);
            static const uint8_t zero[32];
            st->reused_chunks++;
            sink->chunks++;
            if (memcmp(names[i], zero, 32)) sink->reused_chunks++;
            else sink->zero_chunks++;
            continue;
        }
        bool hole;
        uint8_t *buf = bufs + n * cs;
        r = ds->ops->read(ds, off, l, buf, &hole);
        if (r) { snprintf(err, errlen, "disk snapshot: %s", ds->err); break; }
        if (!hole) st->read_bytes += l;
        if (hole) {
            memset(names[i], 0, 32);
            st->hole_chunks++;
            sink->chunks++;
            sink->zero_chunks++;
            continue;
        }
        idx[n] = i;
        len[n++] = l;
        if (n == GW_CHUNK_SINK_BATCH) { r = put_batch(sink, bufs, cs, idx, len, n, names, err, errlen); n = 0; }
    }
    if (!r && n) r = put_batch(sink, bufs, cs, idx, len, n, names, err, errlen);
    free(bufs);
    return r;
}
