/* Verify (see backup.h): every chunk the chosen backups use is read once and checked; a bad
 * chunk is reported with every backup of the VM that uses it, so the operator knows which
 * restores it breaks. Chunks are read in batches with the store's reads in flight. */
#include "backup/backup.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"
#include "storage/chunk_patch.h"
#include "storage/chunk_sink.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define BATCH 16u

struct ref {
    uint8_t hash[32];
    uint32_t backup;   /* index into the id list */
    uint32_t len;      /* raw chunk length (of the chunk a patch rebuilds) */
    bool target;       /* used by a backup being verified */
    bool patch;        /* a page patch over base (chunk_patch.h) */
    bool bad;          /* found bad (reported already) */
    uint8_t base[32];
};

static int cmp_hash_only(const void *key, const void *elem)
{
    return memcmp(key, ((const struct ref *)elem)->hash, 32);
}

/* Whether the object hash was found bad on its own (refs sorted by hash). */
static bool object_bad(const struct ref *refs, size_t n, const uint8_t hash[32])
{
    const struct ref *x = n ? bsearch(hash, refs, n, sizeof *refs, cmp_hash_only) : NULL;
    return x && x->bad;
}

static int cmp_ref(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;
    int c = memcmp(x->hash, y->hash, 32);
    return c ? c : (x->backup > y->backup) - (x->backup < y->backup);
}

static struct ref *add_ref(struct ref **refs, size_t *n, size_t *cap)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        struct ref *nr = realloc(*refs, nc * sizeof *nr);
        if (!nr) return NULL;
        *refs = nr;
        *cap = nc;
    }
    struct ref *r = &(*refs)[(*n)++];
    memset(r, 0, sizeof *r);
    return r;
}

/* The objects a backup's image needs: each chunk, or for a patched chunk its patch, its base
 * and its mid patch when layered (the mid is checked as a patch over the base, the top patch
 * as one over the mid). */
static int add_refs(struct ref **refs, size_t *n, size_t *cap, const Godwit__V1__BackupImage *im, uint32_t b, bool target)
{
    for (size_t i = 0; i < im->n_chunks; i++) {
        if (im->chunks[i].len != 32) continue;
        uint64_t off = i * (uint64_t)im->chunk_size;
        uint32_t len = (uint32_t)(im->size - off < im->chunk_size ? im->size - off : im->chunk_size);
        bool patched = gw_manifest_patched(im, i);
        const uint8_t *mid = gw_manifest_patch_mid(im, i);
        for (int k = 0; k < (patched ? mid ? 3 : 2 : 1); k++) {
            struct ref *r = add_ref(refs, n, cap);
            if (!r) return -ENOMEM;
            memcpy(r->hash, !patched ? im->chunks[i].data : k == 1 ? im->patch_bases[i].data : k == 2 ? mid : im->patches[i].data, 32);
            r->backup = b;
            r->len = len;
            r->target = target;
            r->patch = patched && k != 1;
            if (patched && k == 0) memcpy(r->base, mid ? mid : im->patch_bases[i].data, 32);
            if (k == 2) memcpy(r->base, im->patch_bases[i].data, 32);
        }
    }
    return 0;
}

/* A patched chunk of a backup being verified: rebuilt from its base (and mid) and patch after
 * each object passed on its own, and checked against its name, as a restore checks it. Each
 * object alone can be sound while the chunk they make is not the one the manifest names. */
struct rebuild {
    uint8_t name[32], patch[32], base[32], mid[32];   /* mid all zero without one: the key */
    uint32_t len;
    uint32_t backup;
};

static int add_rebuilds(struct rebuild **v, size_t *n, size_t *cap, const Godwit__V1__BackupImage *im, uint32_t b)
{
    for (size_t i = 0; i < im->n_chunks; i++) {
        if (im->chunks[i].len != 32 || !gw_manifest_patched(im, i)) continue;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 256;
            struct rebuild *nv = realloc(*v, nc * sizeof *nv);
            if (!nv) return -ENOMEM;
            *v = nv;
            *cap = nc;
        }
        struct rebuild *x = &(*v)[(*n)++];
        uint64_t off = i * (uint64_t)im->chunk_size;
        x->len = (uint32_t)(im->size - off < im->chunk_size ? im->size - off : im->chunk_size);
        memcpy(x->name, im->chunks[i].data, 32);
        memcpy(x->patch, im->patches[i].data, 32);
        memcpy(x->base, im->patch_bases[i].data, 32);
        const uint8_t *mid = gw_manifest_patch_mid(im, i);
        if (mid) memcpy(x->mid, mid, 32);
        else memset(x->mid, 0, 32);
        x->backup = b;
    }
    return 0;
}

/* The same chunk from the same objects: the four names (no padding among them). */
static int cmp_rebuild(const void *a, const void *b)
{
    return memcmp(a, b, offsetof(struct rebuild, len));
}

static bool has_mid(const struct rebuild *x)
{
    static const uint8_t none[32];
    return memcmp(x->mid, none, 32) != 0;
}

/* Checks one object read back: a chunk, or a patch (decoded and parsed against its base). */
static long check_object(const struct gw_chunk_keys *keys, const struct ref *x, const struct gw_store_read *rd,
                         uint8_t *raw, char *why, size_t whylen)
{
    if (!x->patch) return gw_chunk_decode(keys, x->hash, rd->buf, rd->len, raw, x->len, x->len, why, whylen);
    size_t cap = gw_patch_max_size(x->len);
    long got = gw_chunk_decode(keys, x->hash, rd->buf, rd->len, raw, cap, 0, why, whylen);
    if (got < 0) return got;
    struct gw_patch pt;
    char bad[200];
    int r = gw_patch_parse(raw, (size_t)got, x->len, x->base, &pt, bad, sizeof bad);
    if (r) snprintf(why, whylen, "patch: %s", bad);
    return r ? r : got;
}

/* Reports the group refs[g0..g1) (one chunk) as bad. */
static void report_bad(struct ref *refs, size_t g0, size_t g1, char (*ids)[GW_BACKUP_ID_BUF], const char *why,
                       gw_verify_report_fn report, void *ctx)
{
    const char *users[64];
    size_t nu = 0;
    for (size_t k = g0; k < g1 && nu < 64; k++)
        if (!nu || strcmp(users[nu - 1], ids[refs[k].backup])) users[nu++] = ids[refs[k].backup];
    char hex[65];
    gw_chunk_name_hex(refs[g0].hash, hex);
    if (report) report(ctx, hex, why, users, nu);
}

int gw_backup_verify(struct gw_backup_target *t, const char *vm, const char *id, gw_verify_report_fn report,
                     void *ctx, struct gw_verify_stats *st, char *err, size_t errlen)
{
    return gw_backup_verify_ex(t, vm, id, report, NULL, ctx, st, err, errlen);
}

int gw_backup_verify_ex(struct gw_backup_target *t, const char *vm, const char *id, gw_verify_report_fn report,
                        gw_verify_progress_fn progress, void *ctx, struct gw_verify_stats *st, char *err, size_t errlen)
{
    uint64_t t0 = gw_now_ns();
    memset(st, 0, sizeof *st);
    char (*ids)[GW_BACKUP_ID_BUF] = NULL;
    size_t nids = 0, nrefs = 0, cap = 0, nreb = 0, rebcap = 0;
    struct ref *refs = NULL;
    struct rebuild *reb = NULL;
    int r = gw_backup_list(t, vm, &ids, &nids);
    if (r) { snprintf(err, errlen, "%s", gw_store_error(t->store)); return r; }
    bool found = !id;
    for (size_t b = 0; b < nids && !r; b++) {
        bool target = !id || !strcmp(id, ids[b]);
        found |= target;
        Godwit__V1__BackupManifest *m = NULL;
        char why[512];
        int lr = gw_manifest_load(t->store, &t->keys, vm, ids[b], &m, why, sizeof why);
        if (lr) {
            if (target) { st->bad_manifests++; if (report) report(ctx, "", why, (const char *const[]){ids[b]}, 1); }
            continue;
        }
        if (target) st->backups++;
        r = add_refs(&refs, &nrefs, &cap, m->memory, (uint32_t)b, target);
        if (!r) r = add_refs(&refs, &nrefs, &cap, m->disk, (uint32_t)b, target);
        if (!r && target) r = add_rebuilds(&reb, &nreb, &rebcap, m->memory, (uint32_t)b);
        if (!r && target) r = add_rebuilds(&reb, &nreb, &rebcap, m->disk, (uint32_t)b);
        godwit__v1__backup_manifest__free_unpacked(m, NULL);
    }
    if (r) { snprintf(err, errlen, "out of memory"); goto out; }
    if (!found) { snprintf(err, errlen, "no backup %s of VM %s in %s", id, vm, t->store->desc); r = -ENOENT; goto out; }
    if (nrefs) qsort(refs, nrefs, sizeof *refs, cmp_ref);
    for (size_t g = 0; g < nrefs;) {   /* what there is to check: for progress */
        size_t g1 = g;
        bool target = false;
        while (g1 < nrefs && !memcmp(refs[g1].hash, refs[g].hash, 32)) target |= refs[g1++].target;
        if (target) { st->total_unique++; st->total_raw_bytes += refs[g].len; }
        g = g1;
    }
    const struct gw_chunk_keys *keys = t->keys.encrypted ? &t->keys : NULL;
    size_t ecap = gw_chunk_encoded_cap(GW_CHUNK_MAX);
    uint8_t *raw = malloc(GW_CHUNK_MAX);
    struct gw_store_read rd[BATCH];
    size_t grp[BATCH][2];
    char names[BATCH][80];
    uint8_t *bufs[BATCH] = {0};
    size_t bufcap = 0;
    if (!raw) { r = -ENOMEM; snprintf(err, errlen, "out of memory"); goto out; }
    for (size_t g = 0; g < nrefs && !r;) {
        unsigned n = 0;
        while (g < nrefs && n < BATCH) {
            size_t g1 = g;
            bool target = false;
            while (g1 < nrefs && !memcmp(refs[g1].hash, refs[g].hash, 32)) target |= refs[g1++].target;
            if (target) {
                grp[n][0] = g;
                grp[n][1] = g1;
                gw_chunk_object(refs[g].hash, names[n]);
                st->chunks += g1 - g;
                n++;
            }
            g = g1;
        }
        if (!n) break;
        size_t want = 0;
        for (unsigned k = 0; k < n; k++) {
            size_t c = gw_chunk_encoded_cap(refs[grp[k][0]].len);
            if (c > want) want = c;
        }
        if (want > bufcap) {
            for (unsigned k = 0; k < BATCH; k++) { free(bufs[k]); bufs[k] = malloc(want < ecap ? want : ecap); if (!bufs[k]) r = -ENOMEM; }
            bufcap = want;
            if (r) { snprintf(err, errlen, "out of memory"); break; }
        }
        for (unsigned k = 0; k < n; k++) rd[k] = (struct gw_store_read){.name = names[k], .buf = bufs[k], .cap = bufcap};
        r = t->store->ops->get_batch(t->store, rd, n);
        if (r) { snprintf(err, errlen, "%s", gw_store_error(t->store)); break; }
        for (unsigned k = 0; k < n; k++) {
            struct ref *x = &refs[grp[k][0]];
            st->unique_chunks++;
            st->raw_bytes_checked += x->len;
            char why[256];
            if (rd[k].rc) snprintf(why, sizeof why, "%s", rd[k].rc == -ENOENT ? "missing from the store" : strerror(-rd[k].rc));
            else {
                st->bytes_read += rd[k].len;
                long got = check_object(keys, x, &rd[k], raw, why, sizeof why);
                if (got >= 0) continue;
            }
            st->bad_chunks++;
            for (size_t j = grp[k][0]; j < grp[k][1]; j++) refs[j].bad = true;
            report_bad(refs, grp[k][0], grp[k][1], ids, why, report, ctx);
        }
        st->elapsed_ns = gw_now_ns() - t0;
        if (progress && progress(ctx, st)) { r = -ECANCELED; snprintf(err, errlen, "verify cancelled"); }
    }
    /* The patched chunks, each distinct one once. */
    if (nreb) qsort(reb, nreb, sizeof *reb, cmp_rebuild);
    uint8_t *chunk = !r && nreb ? malloc(GW_CHUNK_MAX) : NULL;
    if (!r && nreb && !chunk) { r = -ENOMEM; snprintf(err, errlen, "out of memory"); }
    for (size_t i = 0; !r && i < nreb; i++) {
        if (i && !cmp_rebuild(&reb[i - 1], &reb[i])) continue;
        /* One whose patch, base or mid is bad was reported with it. */
        if (object_bad(refs, nrefs, reb[i].patch) || object_bad(refs, nrefs, reb[i].base) ||
            (has_mid(&reb[i]) && object_bad(refs, nrefs, reb[i].mid)))
            continue;
        char why[300], what[256];
        int pr = gw_patch_fetch(t->store, keys, reb[i].name, reb[i].patch, reb[i].base, has_mid(&reb[i]) ? reb[i].mid : NULL,
                                chunk, reb[i].len, what, sizeof what);
        if (!pr) continue;
        snprintf(why, sizeof why, "rebuilt from its patch: %s", what);
        char hex[65];
        gw_chunk_name_hex(reb[i].name, hex);
        st->bad_chunks++;
        if (report) report(ctx, hex, why, (const char *const[]){ids[reb[i].backup]}, 1);
    }
    free(chunk);
    for (unsigned k = 0; k < BATCH; k++) free(bufs[k]);
    free(raw);
out:
    free(reb);
    free(refs);
    free(ids);
    st->elapsed_ns = gw_now_ns() - t0;
    return r;
}
