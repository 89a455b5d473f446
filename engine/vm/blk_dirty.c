/* The disk's dirty bitmap since the last backup (see blk_dirty.h). */
#include "engine/vm/blk_dirty.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gw_blk_dirty_init(struct gw_blk_dirty *d, uint64_t bytes)
{
    memset(d, 0, sizeof *d);
    d->nbits = (bytes + GW_BLK_DIRTY_BLOCK - 1) / GW_BLK_DIRTY_BLOCK;
    d->words = (d->nbits + 63) / 64;
    d->bits = calloc(d->words ? d->words : 1, 8);
    return d->bits ? 0 : -ENOMEM;
}

void gw_blk_dirty_free(struct gw_blk_dirty *d)
{
    free(d->bits);
    d->bits = NULL;
}

void gw_blk_dirty_mark(struct gw_blk_dirty *d, uint64_t off, uint64_t len)
{
    if (!len || !d->bits) return;
    for (uint64_t i = off / GW_BLK_DIRTY_BLOCK; i <= (off + len - 1) / GW_BLK_DIRTY_BLOCK && i < d->nbits; i++)
        d->bits[i / 64] |= 1ull << (i % 64);
}

int gw_blk_dirty_take(struct gw_blk_dirty *d, uint64_t **out, char base[GW_BLK_DIRTY_BASE_MAX])
{
    *out = malloc(d->words ? d->words * 8 : 8);
    if (!*out) return -ENOMEM;
    memcpy(*out, d->bits, d->words * 8);
    memset(d->bits, 0, d->words * 8);
    memcpy(base, d->base, GW_BLK_DIRTY_BASE_MAX);
    return 0;
}

void gw_blk_dirty_give_back(struct gw_blk_dirty *d, const uint64_t *bits)
{
    for (uint64_t w = 0; w < d->words; w++) d->bits[w] |= bits[w];
}

void gw_blk_dirty_set_base(struct gw_blk_dirty *d, const char *id)
{
    snprintf(d->base, sizeof d->base, "%s", id && strlen(id) < GW_BLK_DIRTY_BASE_MAX ? id : "");
}

void gw_blk_dirty_load(struct gw_blk_dirty *d, const uint8_t *bits, uint64_t len, uint64_t block, const char *base)
{
    bool ok = bits && block == GW_BLK_DIRTY_BLOCK && len == d->words * 8 && base && *base &&
              strlen(base) < GW_BLK_DIRTY_BASE_MAX;
    if (ok) memcpy(d->bits, bits, len);
    else memset(d->bits, 0, d->words * 8);
    gw_blk_dirty_set_base(d, ok ? base : "");
}

bool gw_blk_dirty_any(const uint64_t *bits, uint64_t nbits, uint64_t off, uint64_t len)
{
    if (!len) return false;
    for (uint64_t i = off / GW_BLK_DIRTY_BLOCK; i <= (off + len - 1) / GW_BLK_DIRTY_BLOCK && i < nbits; i++)
        if (bits[i / 64] >> (i % 64) & 1) return true;
    return false;
}
