/* The garbage collector (see gc.h for the protocol, docs/storage.md for the race analysis). */
#include "storage/gc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "storage/chunk.h"
#include "storage/lease.h"
#include "storage/manifest.h"
#include "storage/store.h"
#include "storage/store_scan.h"

#define GC_RUN_LEASE_S 600u
#define GC_BATCH 4096u

/* A set of 32-byte names: open addressing, hashed with a random seed so that names chosen by
 * whoever can write to the store cannot make it quadratic. */
struct hset {
    uint8_t *slots;
    size_t cap, n;
    uint64_t seed;
};

static const uint8_t empty[32];

static uint8_t *hs_slot(const struct hset *h, const uint8_t k[32], bool *found)
{
    for (size_t i = XXH64(k, 32, h->seed) & (h->cap - 1);; i = (i + 1) & (h->cap - 1)) {
        uint8_t *s = h->slots + i * 32;
        if (!memcmp(s, k, 32)) { *found = true; return s; }
        if (!memcmp(s, empty, 32)) { *found = false; return s; }
    }
}

static int hs_add(struct hset *h, const uint8_t k[32])
{
    if (!memcmp(k, empty, 32)) return 0;   /* the all-zero name never names a stored chunk */
    if ((h->n + 1) * 2 > h->cap) {
        struct hset old = *h;
        h->cap = old.cap ? old.cap * 2 : 1u << 16;
        h->slots = calloc(h->cap, 32);
        if (!h->slots) { *h = old; return -ENOMEM; }
        h->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (memcmp(old.slots + i * 32, empty, 32)) { bool f; memcpy(hs_slot(h, old.slots + i * 32, &f), old.slots + i * 32, 32); h->n++; }
        free(old.slots);
    }
    bool f;
    uint8_t *s = hs_slot(h, k, &f);
    if (!f) { memcpy(s, k, 32); h->n++; }
    return 0;
}

static bool hs_has(const struct hset *h, const uint8_t k[32])
{
    bool f = false;
    if (h->cap) hs_slot(h, k, &f);
    return f;
}

struct names {
    char (*v)[128];
    size_t n, cap;
};

static int names_add(struct names *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *p = realloc(l->v, cap * sizeof *l->v);
        if (!p) return -ENOMEM;
        l->v = p;
        l->cap = cap;
    }
    snprintf(l->v[l->n++], sizeof l->v[0], "%s", s);
    return 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }
static int cmp_hash(const void *a, const void *b) { return memcmp(a, b, 32); }

struct gc {
    struct gw_store *s;
    const struct gw_gc_params *p;
    struct gw_gc_stats *st;
    struct hset refs;
    struct names manifests;
    uint8_t (*chunks)[32];
    size_t nchunks, capchunks;
    bool rescan;               /* second walk: manifests only */
    struct gw_lease *run;      /* the run lease; NULL in a dry run */
    char *err;
    size_t errlen;
};

/* Whether this collector may still act: its run lease held with the guards' margin to spare.
 * One whose lease ran out (Ceph out of reach for its duration) may have been followed by
 * another, which published a newer pending list; what this one chose from the older list
 * is no longer safe to remove. */
static int still_running(struct gc *g)
{
    if (!g->run || gw_lease_valid(g->run, GW_GC_GUARD_MARGIN_S)) return 0;
    snprintf(g->err, g->errlen, "%s: this garbage collection lost its run lease (Ceph out of reach?); stopped",
             g->s->desc);
    return -ETIMEDOUT;
}

static void skipped(struct gc *g, const char *name, const char *reason)
{
    g->st->skipped++;
    if (g->p->skipped) g->p->skipped(g->p->ctx, name, reason);
}

static void scan_skip(void *ctx, const char *name, const char *reason)
{
    struct gc *g = ctx;
    if (!g->rescan) skipped(g, name, reason);
}

static int unhex(const char *h, uint8_t out[32])
{
    for (int i = 0; i < 32; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = h[2 * i + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) return -1;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

static int on_object(const char *name, void *ctx)
{
    struct gc *g = ctx;
    if (!strncmp(name, "m.", 2)) return names_add(&g->manifests, name);
    if (g->rescan) return 0;
    if (!strncmp(name, "c.", 2)) {
        uint8_t h[32];
        if (strlen(name) != 2 + GW_CHUNK_NAME_LEN || unhex(name + 2, h)) { skipped(g, name, "not a chunk name (c.<64 hex digits>)"); return 0; }
        if (g->nchunks == g->capchunks) {
            size_t cap = g->capchunks ? g->capchunks * 2 : 65536;
            void *p = realloc(g->chunks, cap * 32);
            if (!p) return -ENOMEM;
            g->chunks = p;
            g->capchunks = cap;
        }
        memcpy(g->chunks[g->nchunks++], h, 32);
        g->st->chunks_scanned++;
        return 0;
    }
    if (!strcmp(name, GW_GC_PENDING_OBJECT)) return 0;
    skipped(g, name, "not an object godwit writes (neither chunk nor manifest)");
    return 0;
}

/* A patched chunk (chunk_patch.h) keeps its patch, its mid patch when layered and the base, not its own
 * name: no object of this backup has it (a backup that stored it whole names it itself), and
 * `referenced` then counts objects a collection keeps. */
static int add_image(struct gc *g, const Godwit__V1__BackupImage *im)
{
    for (size_t i = 0; im && i < im->n_chunks; i++) {
        int r = 0;
        bool patched = gw_manifest_patched(im, i);
        if (im->chunks[i].len == 32 && !patched) r = hs_add(&g->refs, im->chunks[i].data);
        if (!r && patched) {
            r = hs_add(&g->refs, im->patches[i].data);
            if (!r) r = hs_add(&g->refs, im->patch_bases[i].data);
            if (!r && gw_manifest_patch_mid(im, i)) r = hs_add(&g->refs, gw_manifest_patch_mid(im, i));
        }
        if (r) return r;
    }
    return 0;
}

/* Loads manifests[from..] and adds what they name. A manifest that cannot be read stops the
 * collection: its chunks may be in use and we cannot tell which. */
static int load_manifests(struct gc *g, size_t from)
{
    for (size_t i = from; i < g->manifests.n; i++) {
        const char *name = g->manifests.v[i];
        uint8_t *buf = NULL;
        size_t len = 0;
        int r = g->s->ops->get(g->s, name, GW_MANIFEST_MAX, &buf, &len);
        if (r == -ENOENT) continue;   /* deleted meanwhile (pruned): it names nothing any more */
        if (r) { snprintf(g->err, g->errlen, "refusing to collect: manifest %s cannot be read: %s", name, gw_store_error(g->s)); return r; }
        Godwit__V1__BackupManifest *m = NULL;
        char why[256];
        /* Only to learn what to keep, a plain manifest is read in an encrypted store too (one
         * written before manifests were sealed): whatever it names is kept, so a forged one can
         * only keep more. Everything that acts on a manifest's contents refuses it. */
        const struct gw_chunk_keys *k = gw_manifest_sealed(buf, len) ? g->p->keys : NULL;
        r = gw_manifest_unpack(buf, len, k, name, &m, why, sizeof why);
        free(buf);
        if (r) {
            snprintf(g->err, g->errlen, "refusing to collect: manifest %s is damaged (%s); its chunks may be in use", name, why);
            return r;
        }
        r = add_image(g, m->memory);
        if (!r) r = add_image(g, m->disk);
        godwit__v1__backup_manifest__free_unpacked(m, NULL);
        if (r) return r;
        g->st->manifests++;
    }
    return 0;
}

struct live {
    uint64_t min_gen, max_gen, count;
};

/* Cookie "g<gen>.<who>...": the generation that backup saw; anything else saw nothing. */
static int on_holder(const char *cookie, void *ctx)
{
    struct live *l = ctx;
    uint64_t gen = 0;
    if (cookie[0] == 'g' && cookie[1] >= '0' && cookie[1] <= '9') {
        const char *p = cookie + 1;
        while (*p >= '0' && *p <= '9' && gen < (1ull << 60)) gen = gen * 10 + (uint64_t)(*p++ - '0');
        if (*p != '.' || gen >= GW_GC_MAX_GENERATION - 1) gen = 0;   /* no list had it: saw nothing */
    }
    if (gen < l->min_gen) l->min_gen = gen;
    if (gen > l->max_gen) l->max_gen = gen;
    l->count++;
    return 0;
}

/* Candidates: unreferenced chunks, with their guards and sizes (one batched lookup). */
static int candidates(struct gc *g, struct gw_gc_entry **out, uint64_t **sizes, size_t *n)
{
    size_t max = g->nchunks;   /* at most every chunk is a candidate */
    struct gw_gc_entry *e = malloc((max ? max : 1) * sizeof *e);
    uint64_t *sz = malloc((max ? max : 1) * sizeof *sz);
    char (*nm)[80] = malloc(GC_BATCH * sizeof *nm);
    const char **np = malloc(GC_BATCH * sizeof *np);
    int *rc = malloc(GC_BATCH * sizeof *rc);
    uint64_t *bsz = malloc(GC_BATCH * sizeof *bsz);
    struct gw_obj_guard *gd = malloc(GC_BATCH * sizeof *gd);
    size_t *which = malloc(GC_BATCH * sizeof *which);
    int r = e && sz && nm && np && rc && bsz && gd && which ? 0 : -ENOMEM;
    size_t k = 0;
    uint64_t max_obj = gw_chunk_encoded_cap(GW_CHUNK_MAX);
    for (size_t base = 0; !r && base < g->nchunks; base += GC_BATCH) {
        size_t m = 0;
        for (size_t i = base; i < g->nchunks && i < base + GC_BATCH; i++) {
            if (hs_has(&g->refs, g->chunks[i])) continue;
            gw_chunk_object(g->chunks[i], nm[m]);
            np[m] = nm[m];
            which[m++] = i;
        }
        if (!m) continue;
        if ((r = gw_store_stat_guarded(g->s, np, m, rc, bsz, gd))) break;
        for (size_t j = 0; j < m && !r; j++) {
            if (rc[j] == 0) continue;   /* gone meanwhile */
            if (rc[j] < 0) {
                r = gw_store_fail_op(g->s, rc[j], "looking up", nm[j]);
                snprintf(g->err, g->errlen, "%s", gw_store_error(g->s));
                break;
            }
            if (bsz[j] > max_obj) { skipped(g, nm[j], "larger than any chunk godwit writes"); continue; }
            memcpy(e[k].hash, g->chunks[which[j]], 32);
            e[k].guard[0] = gd[j].a;
            e[k].guard[1] = gd[j].b;
            e[k].guard[2] = gd[j].c;
            sz[k++] = bsz[j];
        }
    }
    free(nm); free(np); free(rc); free(bsz); free(gd); free(which);
    if (r) { free(e); free(sz); if (r == -ENOMEM) snprintf(g->err, g->errlen, "out of memory"); return r; }
    *out = e;
    *sizes = sz;
    *n = k;
    return 0;
}

/* Removes sel[0..n) (guards from guard_of) in batches; counts what went. */
static int sweep(struct gc *g, const struct gw_gc_entry *sel, const uint64_t *sel_size, size_t n)
{
    char (*nm)[80] = malloc(GC_BATCH * sizeof *nm);
    const char **np = malloc(GC_BATCH * sizeof *np);
    struct gw_obj_guard *gd = malloc(GC_BATCH * sizeof *gd);
    int *rc = malloc(GC_BATCH * sizeof *rc);
    int r = nm && np && gd && rc ? 0 : -ENOMEM;
    for (size_t base = 0; !r && base < n; base += GC_BATCH) {
        if ((r = still_running(g))) break;
        size_t m = n - base < GC_BATCH ? n - base : GC_BATCH;
        for (size_t j = 0; j < m; j++) {
            gw_chunk_object(sel[base + j].hash, nm[j]);
            np[j] = nm[j];
            gd[j] = (struct gw_obj_guard){sel[base + j].guard[0], sel[base + j].guard[1], sel[base + j].guard[2]};
        }
        if ((r = gw_store_remove_guarded(g->s, np, gd, m, rc))) break;
        for (size_t j = 0; j < m; j++) {
            if (rc[j] == 1) { g->st->removed++; g->st->bytes_freed += sel_size[base + j]; }
            else if (rc[j] == 0) g->st->kept_changed++;
            else if (!r) {
                r = gw_store_fail_op(g->s, rc[j], "removing", nm[j]);
                snprintf(g->err, g->errlen, "%s", gw_store_error(g->s));
            }
        }
    }
    free(nm); free(np); free(gd); free(rc);
    return r;
}

int gw_gc_run(struct gw_store *s, const struct gw_gc_params *p, struct gw_gc_stats *st, char *err, size_t errlen)
{
    uint64_t t0 = gw_now_ns();
    memset(st, 0, sizeof *st);
    struct gc g = {.s = s, .p = p, .st = st, .err = err, .errlen = errlen};
    if (getrandom(&g.refs.seed, sizeof g.refs.seed, 0) != sizeof g.refs.seed) g.refs.seed = t0;
    struct gw_lease *run = NULL;
    struct gw_gc_entry *old = NULL, *cand = NULL, *sel = NULL;
    uint64_t *cand_size = NULL, *sel_size = NULL, gen_old = 0;
    size_t nold = 0, ncand = 0, nsel = 0;
    int r = 0;
    err[0] = 0;
    if (!p->dry_run) {
        char cookie[64];
        snprintf(cookie, sizeof cookie, "gc.%d", (int)getpid());
        r = gw_lease_acquire(s, GW_GC_RUN_LEASE, cookie, true, GC_RUN_LEASE_S, true, &run, err, errlen);
        if (r == -EBUSY) snprintf(err, errlen, "another garbage collection is running on %s", s->desc);
        if (r) goto out;
        g.run = run;
    }
    /* A damaged list (or a forged one) is replaced, never obeyed nor left to stop every
     * collection: the new one must be of a later generation than any running backup saw, or
     * those backups would read as having seen it and its candidates would go at once; and this
     * run removes nothing, as no earlier list can be trusted. */
    bool restart = false;
    r = gw_gc_pending_load(s, &gen_old, &old, &nold, err, errlen);
    if (!r && gen_old + 1 >= GW_GC_MAX_GENERATION - 1) {   /* the last generation: start over */
        snprintf(err, errlen, "pending list: generation %llu is the last", (unsigned long long)gen_old);
        r = -EBADMSG;
    }
    if (r == -EBADMSG) {
        struct live seen = {.min_gen = UINT64_MAX};
        gw_warn("gc: %s: writing a new list, removing nothing this run", err);
        if ((r = gw_lease_holders(s, GW_GC_BACKUPS_LEASE, on_holder, &seen))) { snprintf(err, errlen, "%s", gw_store_error(s)); goto out; }
        err[0] = 0;
        gen_old = seen.max_gen;
        restart = true;
        free(old);
        old = NULL;
        nold = 0;
        if (gen_old + 1 >= GW_GC_MAX_GENERATION - 1) {
            r = -EOVERFLOW;
            snprintf(err, errlen, "a running backup saw the last generation of the pending list: collect after it ends");
            goto out;
        }
        st->pending_replaced = true;
    }
    if (r) goto out;
    /* Mark: every manifest, every chunk. */
    if ((r = gw_store_scan(s, 0, on_object, scan_skip, &g))) { if (!err[0]) snprintf(err, errlen, "%s", gw_store_error(s)); goto out; }
    if ((r = load_manifests(&g, 0))) goto out;
    /* In hash order from the start, so that the candidates come out sorted with their sizes
     * beside them (sorting the candidates afterwards left the sizes behind). */
    qsort(g.chunks, g.nchunks, sizeof *g.chunks, cmp_hash);
    if ((r = candidates(&g, &cand, &cand_size, &ncand))) goto out;
    if (ncand > GW_GC_MAX_PENDING) ncand = GW_GC_MAX_PENDING;   /* the rest waits for the next run */
    st->referenced = g.refs.n;
    st->candidates = ncand;
    st->generation = gen_old + 1;
    /* Publish the new candidates before looking at who is running. */
    if ((r = still_running(&g))) goto out;
    if (!p->dry_run) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if ((r = gw_gc_pending_pack(gen_old + 1, cand, ncand, &buf, &len))) goto out;
        r = s->ops->put(s, GW_GC_PENDING_OBJECT, buf, len);
        if (!r) r = s->ops->wait(s);
        free(buf);
        if (r) { snprintf(err, errlen, "%s", gw_store_error(s)); goto out; }
    }
    struct live live = {.min_gen = UINT64_MAX};
    if ((r = gw_lease_holders(s, GW_GC_BACKUPS_LEASE, on_holder, &live))) { snprintf(err, errlen, "%s", gw_store_error(s)); goto out; }
    st->live_backups = live.count;
    /* Choose what may go (see gc.h). */
    sel = malloc((ncand ? ncand : 1) * sizeof *sel);
    sel_size = malloc((ncand ? ncand : 1) * sizeof *sel_size);
    if (!sel || !sel_size) { r = -ENOMEM; snprintf(err, errlen, "out of memory"); goto out; }
    if (restart) {
        /* nothing: see above */
    } else if (live.min_gen >= gen_old + 1) {
        memcpy(sel, cand, ncand * sizeof *sel);
        memcpy(sel_size, cand_size, ncand * sizeof *sel_size);
        nsel = ncand;
    } else if (gen_old > 0 && live.min_gen >= gen_old) {
        for (size_t i = 0; i < ncand; i++) {
            const struct gw_gc_entry *o = gw_gc_pending_find(old, nold, cand[i].hash);
            if (!o) continue;
            if (memcmp(o->guard, cand[i].guard, sizeof o->guard)) { st->kept_changed++; continue; }
            sel[nsel] = *o;
            sel_size[nsel++] = cand_size[i];
        }
    }
    /* Backups that ended since the mark wrote their manifests before dropping their leases:
     * read the manifests that appeared meanwhile and keep what they name. */
    size_t seen = g.manifests.n;
    if (seen) qsort(g.manifests.v, seen, sizeof *g.manifests.v, cmp_name);
    g.rescan = true;
    struct names before = g.manifests;
    g.manifests = (struct names){0};
    r = gw_store_scan(s, GW_SCAN_MANIFESTS, on_object, scan_skip, &g);
    size_t fresh = 0;
    for (size_t i = 0; !r && i < g.manifests.n; i++)
        if (!seen || !bsearch(g.manifests.v[i], before.v, seen, sizeof *before.v, cmp_name)) {
            memcpy(g.manifests.v[fresh++], g.manifests.v[i], sizeof g.manifests.v[0]);
        }
    g.manifests.n = fresh;
    free(before.v);
    if (!r) r = load_manifests(&g, 0);
    if (r) { if (!err[0]) snprintf(err, errlen, "%s", gw_store_error(s)); goto out; }
    size_t keep = 0;
    for (size_t i = 0; i < nsel; i++)
        if (!hs_has(&g.refs, sel[i].hash)) { sel[keep] = sel[i]; sel_size[keep++] = sel_size[i]; }
    nsel = keep;
    st->referenced = g.refs.n;
    st->deferred = ncand - nsel - st->kept_changed;
    if (p->dry_run) {
        st->removed = nsel;
        for (size_t i = 0; i < nsel; i++) st->bytes_freed += sel_size[i];
    } else {
        r = sweep(&g, sel, sel_size, nsel);
        st->deferred = ncand - st->removed - st->kept_changed;
    }
out:
    gw_lease_release(run);
    free(old);
    free(cand);
    free(cand_size);
    free(sel);
    free(sel_size);
    free(g.refs.slots);
    free(g.manifests.v);
    free(g.chunks);
    st->elapsed_ns = gw_now_ns() - t0;
    return r;
}
