/* Choosing page patches for a backup's memory chunks (see backup_patch.h). */
#include "backup/backup_patch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"
#include "backup/backup_since.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "storage/chunk_patch.h"
#include "storage/chunk_sink.h"
#include "storage/gc.h"
#include "storage/manifest.h"
#include "storage/store.h"

static const uint8_t zero32[32];

/* The base image when the bitmap is relative to a backup of the same shape in this store. */
static const Godwit__V1__BackupImage *pick_base(struct gw_backup_patcher *p, const char *vm, struct gw_backup_target *t,
                                                const Godwit__V1__BackupManifest *parent, const char *parent_id)
{
    const struct gw_backup_since *s = p->since;
    if (!s || !s->dirty || !s->base_id[0] || strcmp(s->base_store, t->store->desc)) return NULL;
    const char *bvm = gw_backup_since_base_vm(s);
    const Godwit__V1__BackupImage *im = NULL;
    if (!strcmp(bvm, vm)) {
        if (!parent || strcmp(s->base_id, parent_id)) return NULL;
        im = parent->memory;
    } else {
        char why[400];
        if (gw_manifest_load(t->store, &t->keys, bvm, s->base_id, &p->base_man, why, sizeof why)) {
            gw_warn("backup: no page patches over the restored backup (%s)", why);
            return NULL;
        }
        if (p->base_man->encrypted != t->keys.encrypted) return NULL;
        im = p->base_man->memory;
    }
    if (im->chunk_size != p->cs || im->n_chunks != p->nchunks || im->size != p->mem_size) return NULL;
    snprintf(p->base_desc, sizeof p->base_desc, "%s/%s", bvm, s->base_id);
    return im;
}

int gw_backup_patcher_open(struct gw_backup_patcher *p, const struct gw_backup_since *since, const char *vm,
                           struct gw_backup_target *t, const Godwit__V1__BackupManifest *parent, const char *parent_id,
                           uint32_t cs, uint64_t nchunks, uint64_t mem_size, const struct gw_gc_guard *guard)
{
    memset(p, 0, sizeof *p);
    p->since = since;
    p->guard = guard;
    p->cs = cs;
    p->nchunks = nchunks;
    p->mem_size = mem_size;
    size_t n = nchunks ? nchunks : 1;
    p->patches = calloc(n, 32);
    p->bases = calloc(n, 32);
    p->mids = calloc(n, 32);
    if (!p->patches || !p->bases || !p->mids) { gw_backup_patcher_close(p); return -ENOMEM; }
    if (!gw_patch_max_pages(cs)) return 0;
    p->scratch_cap = gw_patch_max_size(cs);
    p->pages = malloc(gw_patch_max_pages(cs) * sizeof *p->pages);
    p->pages2 = malloc(gw_patch_max_pages(cs) * sizeof *p->pages2);
    p->scratch = malloc(p->scratch_cap);
    p->base_data = malloc(cs);
    p->mid_data = malloc(cs);
    p->enc_cap = gw_chunk_encoded_cap(cs);
    p->mid_cap = gw_chunk_encoded_cap(p->scratch_cap);
    p->t = t;
    if (!p->pages || !p->pages2 || !p->scratch || !p->base_data || !p->mid_data) { gw_backup_patcher_close(p); return -ENOMEM; }
    p->base = pick_base(p, vm, t, parent, parent_id);
    if (p->base) gw_debug("backup: chunks with few changed pages become patches over backup %s", p->base_desc);
    return 0;
}

void gw_backup_patcher_close(struct gw_backup_patcher *p)
{
    if (p->base_man) godwit__v1__backup_manifest__free_unpacked(p->base_man, NULL);
    free(p->patches);
    free(p->bases);
    free(p->mids);
    free(p->pages);
    free(p->pages2);
    free(p->scratch);
    free(p->base_data);
    free(p->mid_data);
    free(p->enc);
    free(p->mid_enc);
    memset(p, 0, sizeof *p);
}

/* The whole chunk a patch of chunk i is made over: the base backup's chunk, or, when that is a
 * patch itself, its base. */
static const uint8_t *base_of(const Godwit__V1__BackupImage *im, uint64_t i)
{
    return gw_manifest_patched(im, i) ? im->patch_bases[i].data : im->chunks[i].data;
}

/* The patch that may be layered between that whole chunk and a new patch (chunk_patch.h): the
 * base backup's patch of chunk i, or its mid when it is layered itself (two levels at most),
 * NULL when the base stored the chunk whole. */
static const uint8_t *mid_of(const Godwit__V1__BackupImage *im, uint64_t i)
{
    if (!gw_manifest_patched(im, i)) return NULL;
    const uint8_t *mid = gw_manifest_patch_mid(im, i);
    return mid ? mid : im->patches[i].data;
}

bool gw_backup_patcher_candidate(struct gw_backup_patcher *p, uint64_t i, size_t len, const uint8_t name[32])
{
    const Godwit__V1__BackupImage *im = p->base;
    uint32_t max = gw_patch_max_pages(len) / 2;   /* worth it up to a quarter of the chunk */
    if (!im || !max || i >= im->n_chunks || im->chunks[i].len != 32) return false;
    const uint8_t *base = base_of(im, i);
    const uint8_t *mid = mid_of(im, i);
    if (!memcmp(im->chunks[i].data, name, 32) || !memcmp(base, name, 32) || gw_gc_guard_distrusts(p->guard, base) ||
        (mid && gw_gc_guard_distrusts(p->guard, mid)))
        return false;
    /* The log never misses a write: few pages logged means few changed. */
    uint64_t p0 = i * (uint64_t)p->cs / GW_PAGE_SIZE, np = len / GW_PAGE_SIZE, logged = 0;
    const uint64_t *bits = p->since->changed;
    for (uint64_t k = 0; k < np && logged <= max; k++) logged += bits[(p0 + k) / 64] >> ((p0 + k) % 64) & 1;
    if (logged && logged <= max) return true;
    if (p->misses < 8) return true;
    return ++p->skipped % 8 == 0;
}

/* The pages of buf that differ from ref's, into pages; false when more than max. */
static bool diff_pages(const uint8_t *ref, uint32_t *pages, const uint8_t *buf, size_t len, uint32_t max, uint32_t *n)
{
    *n = 0;
    for (uint32_t pg = 0; pg < len / GW_PAGE_SIZE; pg++) {
        size_t off = (size_t)pg * GW_PAGE_SIZE;
        if (!memcmp(buf + off, ref + off, GW_PAGE_SIZE)) continue;
        if (*n == max) return false;
        pages[(*n)++] = pg;
    }
    return true;
}

/* The base backup's chunk i as it restores: the whole chunk in p->base_data with the mid
 * patch object (mid_obj, mlen bytes as read) applied, into p->mid_data. */
static int layer_mid(struct gw_backup_patcher *p, const uint8_t *base, const uint8_t *mid, const uint8_t *mid_obj,
                     size_t mlen, size_t len, char *why, size_t whylen)
{
    memcpy(p->mid_data, p->base_data, len);
    return gw_patch_finish(p->t->keys.encrypted ? &p->t->keys : NULL, mid, base, NULL, mid_obj, mlen, p->mid_data, len, why,
                           whylen);
}

static void warn_once(struct gw_backup_patcher *p, const char *what, const char *why)
{
    if (p->warned) return;
    p->warned = true;
    gw_warn("backup: base chunk %s: %s; such chunks are stored whole", what, why);
}

void gw_backup_patcher_batch(struct gw_backup_patcher *p, const struct gw_chunk_sink *sink, uint8_t *bufs,
                             const uint64_t *idx, size_t *len, uint8_t (*names)[32], const bool *cand, size_t n)
{
    struct gw_store_read rd[2 * GW_CHUNK_SINK_BATCH];
    char objs[2 * GW_CHUNK_SINK_BATCH][80];
    size_t which[GW_CHUNK_SINK_BATCH], midrd[GW_CHUNK_SINK_BATCH], m = 0, nrd;
    if (!p->base || n > GW_CHUNK_SINK_BATCH) return;
    if (!p->enc && !(p->enc = malloc(GW_CHUNK_SINK_BATCH * p->enc_cap))) return;
    if (!p->mid_enc && !(p->mid_enc = malloc(GW_CHUNK_SINK_BATCH * p->mid_cap))) return;
    for (size_t k = 0; k < n; k++) {
        if (!cand[k]) continue;
        gw_chunk_object(base_of(p->base, idx[k]), objs[m]);
        rd[m] = (struct gw_store_read){.name = objs[m], .buf = p->enc + m * p->enc_cap, .cap = p->enc_cap};
        which[m++] = k;
    }
    nrd = m;
    for (size_t j = 0; j < m; j++) {   /* the mids after the whole chunks, in the same batch of reads */
        const uint8_t *mid = mid_of(p->base, idx[which[j]]);
        midrd[j] = 0;
        if (!mid) continue;
        gw_chunk_object(mid, objs[nrd]);
        rd[nrd] = (struct gw_store_read){.name = objs[nrd], .buf = p->mid_enc + j * p->mid_cap, .cap = p->mid_cap};
        midrd[j] = nrd++;
    }
    struct gw_store *s = p->t->store;
    if (!m) return;
    if (s->ops->get_batch(s, rd, nrd)) { warn_once(p, "reads", gw_store_error(s)); return; }
    const struct gw_chunk_keys *keys = p->t->keys.encrypted ? &p->t->keys : NULL;
    for (size_t j = 0; j < m; j++) {
        size_t k = which[j];
        uint64_t i = idx[k];
        uint8_t *buf = bufs + k * (size_t)p->cs;
        const uint8_t *base = base_of(p->base, i), *mid = midrd[j] ? mid_of(p->base, i) : NULL;
        char why[256];
        if (rd[j].rc) { warn_once(p, objs[j] + 2, strerror(-rd[j].rc)); continue; }
        if (mid && rd[midrd[j]].rc) { warn_once(p, objs[midrd[j]] + 2, strerror(-rd[midrd[j]].rc)); continue; }
        p->bases_read++;
        p->base_bytes_read += rd[j].len;
        if (gw_chunk_decode(keys, base, rd[j].buf, rd[j].len, p->base_data, len[k], len[k], why, sizeof why) < 0) {
            warn_once(p, objs[j] + 2, why);
            continue;
        }
        /* Over the whole chunk, or over it with the base backup's own patch applied: the
         * smaller wins (a clone of a patched backup changed a few pages of what it restored;
         * a guest that rewrites the same pages every time gains nothing from the layer). */
        uint32_t max = gw_patch_max_pages(len[k]) / 2, np = 0, np2 = 0;
        bool flat = diff_pages(p->base_data, p->pages, buf, len[k], max, &np) && np;
        bool layered = false;
        if (mid) {
            p->base_bytes_read += rd[midrd[j]].len;
            if (layer_mid(p, base, mid, rd[midrd[j]].buf, rd[midrd[j]].len, len[k], why, sizeof why))
                warn_once(p, objs[midrd[j]] + 2, why);
            else
                layered = diff_pages(p->mid_data, p->pages2, buf, len[k], flat ? np - 1 : max, &np2) && np2;
        }
        long r = -1;
        if (layered) r = gw_patch_encode(mid, buf, len[k], p->pages2, np2, p->scratch, p->scratch_cap);
        else if (flat) r = gw_patch_encode(base, buf, len[k], p->pages, np, p->scratch, p->scratch_cap);
        if (r < 0) { p->misses++; continue; }
        p->misses = p->skipped = 0;
        memcpy(buf, p->scratch, (size_t)r);
        len[k] = (size_t)r;
        bool zero;
        gw_chunk_sink_name(sink, buf, len[k], names[k], &zero);
        memcpy(p->patches[i], names[k], 32);
        memcpy(p->bases[i], base, 32);
        if (layered) { memcpy(p->mids[i], mid, 32); p->layered++; }
        p->patched++;
        p->patched_bytes += (uint64_t)r;
    }
}

void gw_backup_patcher_keep(struct gw_backup_patcher *p, uint64_t i, const Godwit__V1__BackupImage *im)
{
    if (i >= p->nchunks || !gw_manifest_patched(im, i)) return;
    memcpy(p->patches[i], im->patches[i].data, 32);
    memcpy(p->bases[i], im->patch_bases[i].data, 32);
    const uint8_t *mid = gw_manifest_patch_mid(im, i);
    if (mid) memcpy(p->mids[i], mid, 32);
}

bool gw_backup_patcher_reuse(struct gw_backup_patcher *p, uint64_t i, const uint8_t name[32],
                             const Godwit__V1__BackupImage *im)
{
    if (!im || i >= p->nchunks || i >= im->n_chunks || !gw_manifest_patched(im, i) || memcmp(im->chunks[i].data, name, 32) ||
        gw_gc_guard_distrusts(p->guard, im->patches[i].data) || gw_gc_guard_distrusts(p->guard, im->patch_bases[i].data) ||
        (gw_manifest_patch_mid(im, i) && gw_gc_guard_distrusts(p->guard, gw_manifest_patch_mid(im, i))))
        return false;
    gw_backup_patcher_keep(p, i, im);
    return true;
}

int gw_backup_patcher_list(const struct gw_backup_patcher *p, Godwit__V1__BackupImage *im, ProtobufCBinaryData *patches,
                           ProtobufCBinaryData *bases, ProtobufCBinaryData *mids)
{
    bool any = false, anymid = false;
    for (uint64_t i = 0; i < p->nchunks; i++) {
        bool on = memcmp(p->patches[i], zero32, 32) != 0, mon = on && memcmp(p->mids[i], zero32, 32) != 0;
        patches[i] = (ProtobufCBinaryData){.data = p->patches[i], .len = on ? 32 : 0};
        bases[i] = (ProtobufCBinaryData){.data = p->bases[i], .len = on ? 32 : 0};
        mids[i] = (ProtobufCBinaryData){.data = p->mids[i], .len = mon ? 32 : 0};
        any |= on;
        anymid |= mon;
    }
    if (any) {
        im->n_patches = im->n_patch_bases = p->nchunks;
        im->patches = patches;
        im->patch_bases = bases;
    }
    if (anymid) {
        im->n_patch_mids = p->nchunks;
        im->patch_mids = mids;
    }
    return anymid ? 2 : any ? 1 : 0;
}
