/* The copy-before-write area (see fleece_area.h). */
#include "backup/fleece_area.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/disk_snapshot.h"
#include "engine/common/util.h"

int gw_fleece_area_init(struct gw_fleece_area *a, uint64_t size, uint64_t bs, uint64_t limit, const char *dir,
                        char *err, size_t errlen)
{
    *a = (struct gw_fleece_area){.size = size, .bs = bs, .limit = limit, .nblocks = (size + bs - 1) / bs, .fd = -1};
    a->state = calloc(a->nblocks ? a->nblocks : 1, 1);
    a->slot = calloc(a->nblocks ? a->nblocks : 1, sizeof *a->slot);
    a->scratch = malloc(bs);
    if (!a->state || !a->slot || !a->scratch) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    a->fd = gw_disk_fleece_file(dir);
    if (a->fd < 0) {
        int r = a->fd;
        snprintf(err, errlen, "cannot create the fleecing file in %s: %s", dir, strerror(-r));
        return r;
    }
    return 0;
}

void gw_fleece_area_free(struct gw_fleece_area *a)
{
    if (a->fd >= 0) close(a->fd);   /* unnamed: nothing stays behind */
    free(a->state);
    free(a->slot);
    free(a->scratch);
    *a = (struct gw_fleece_area){.fd = -1};
}

uint64_t gw_fleece_area_block_len(const struct gw_fleece_area *a, uint64_t i)
{
    uint64_t off = i * a->bs;
    return a->size - off < a->bs ? a->size - off : a->bs;
}

int gw_fleece_area_copy(struct gw_fleece_area *a, uint64_t off, uint64_t len, gw_fleece_read_old_fn read_old,
                        void *ctx, const char *full_hint, char *why, size_t whylen)
{
    if (!len) return 0;
    for (uint64_t i = off / a->bs; i <= (off + len - 1) / a->bs && i < a->nblocks; i++) {
        if (a->state[i] != GW_FLEECE_UNTOUCHED) continue;
        uint64_t bl = gw_fleece_area_block_len(a, i);
        int r = read_old(ctx, i * a->bs, bl, a->scratch);
        if (r < 0) {
            snprintf(why, whylen, "copy-before-write of disk block %llu failed: %s", (unsigned long long)i, strerror(-r));
            return r;
        }
        if (r == 1) { a->state[i] = GW_FLEECE_ZERO; continue; }
        if (a->used + bl > a->limit) {
            snprintf(why, whylen, "fleecing area full (%llu MiB)%s", (unsigned long long)(a->limit >> 20), full_hint);
            return -ENOSPC;
        }
        if ((r = gw_pwrite_full(a->fd, a->scratch, bl, (off_t)a->used))) {
            snprintf(why, whylen, "writing the fleecing file: %s", strerror(-r));
            return r;
        }
        a->slot[i] = (uint32_t)(a->used / a->bs);
        a->used += a->bs;
        a->state[i] = GW_FLEECE_COPIED;
        a->copied++;
    }
    return 0;
}

int gw_fleece_area_read(const struct gw_fleece_area *a, uint64_t i, uint8_t *buf)
{
    return gw_pread_full(a->fd, buf, gw_fleece_area_block_len(a, i), (off_t)((uint64_t)a->slot[i] * a->bs));
}

void gw_fleece_area_waited(struct gw_fleece_area *a, uint64_t ns)
{
    a->wait_total += ns;
    if (ns > a->wait_max) a->wait_max = ns;
}
