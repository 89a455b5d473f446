/* Making a backup of a running VM (see backup.h for the method and its guarantees). */
#include "backup/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/lat_windows.h"
#include "engine/common/limits.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/dirty/dirty.h"
#include "engine/dirty/dirty_snapshot.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/mem_data.h"
#include "engine/vm/blk_dirty.h"
#include "engine/vm/virtio_attach.h"
#include "storage/throttle.h"
#include "engine/vm/vm.h"
#include "backup/disk_rbd.h"
#include "backup/backup_patch.h"
#include "backup/backup_since.h"
#include "backup/backup_disk.h"
#include "backup/disk_snapshot.h"
#include "backup/side_fill.h"
#include "storage/chunk_sink.h"
#include "storage/gc.h"
#include "storage/manifest.h"
#include "storage/store.h"

struct bk {
    struct gw_vm *vm;
    struct gw_backup_target *t;
    uint32_t cs;
    uint64_t nchunks;
    uint8_t (*names)[32];       /* memory chunk names; all zero = a zero chunk */
    uint8_t *has_data;          /* per chunk: holds data in the memfd */
    struct gw_chunk_sink sink;
    struct gw_chunk_digest cd;
    bool cd_ready;
    struct gw_dirty_consumer *dirty;
    uint64_t *pending;          /* pages dirtied and not yet re-stored */
    uint64_t words;
    uint8_t *cbuf;              /* one chunk */
    uint64_t *fpfns;            /* pages taken inside the final pause */
    uint8_t *fpages;
    uint64_t nfp;
    struct gw_disk_snapshot *ds;/* the disk's point in time, read after the pause */
    uint64_t disk_size;
    struct gw_disk_rbd *rbd;    /* an RBD disk's point in time (disk_rbd.h), instead of ds */
    uint64_t disk_snap_ns;      /* its RBD snapshot's creation, after the pause */
    uint64_t t_resumed;         /* the guest ran on after the pause (copy-before-write began) */
    uint64_t mem_pos;           /* memory bytes through the sink so far (atomic: the sink's writer
                                 * thread reads it for the side buffer's forecast) */
    struct gw_side_fill fill;   /* the side buffer's forecast (side_fill.h) */
    uint64_t pause_ns;
    unsigned rounds;
    struct gw_dirty_snapshot *wp;   /* the live snapshot (write-protect method) */
    struct gw_dirty_snapshot_stats wp_stats;
    const struct gw_backup_params *p;
    uint64_t bytes_read;        /* progress: data read and hashed */
    struct gw_backup_since *since;            /* what changed since the last backup, or NULL */
    bool inc;                   /* incremental by bitmap: unchanged chunks are not read */
    const Godwit__V1__BackupImage *parent_mem;   /* inc: the base's chunk names */
    uint64_t unread;            /* inc: chunks taken from the base unread */
    struct gw_backup_patcher pt;/* page patches (backup_patch.h) */
    const Godwit__V1__BackupImage *parent_img;   /* the parent's memory, or NULL */
    uint64_t kept_patches;      /* read, and the same as the parent's patched chunk: kept */
    struct gw_disk_snapshot_stats ds_stats;
    uint64_t *dbits;            /* disk blocks written since backup dbase (taken in the pause) */
    uint64_t dnbits;
    char dbase[GW_BLK_DIRTY_BASE_MAX];
    struct gw_throttle *th;
    struct gw_throttle_stats th_stats;
    struct gw_gc_guard *guard;  /* registered with the collector for the whole backup */
    bool cpu_raised;            /* the copy's threads went back to the normal CPU priority */
    char *err;
    size_t errlen;
};

static int fail(struct bk *b, int rc, const char *fmt, const char *detail)
{
    snprintf(b->err, b->errlen, fmt, detail);
    return rc;
}

static uint64_t chunk_len(const struct bk *b, uint64_t i, uint64_t size)
{
    uint64_t off = i * b->cs;
    return size - off < b->cs ? size - off : b->cs;
}

static int note_data(uint64_t off, uint64_t len, void *ctx)
{
    struct bk *b = ctx;
    for (uint64_t c = off / b->cs; c <= (off + len - 1) / b->cs; c++) b->has_data[c] = 1;
    if (!b->wp) gw_chunk_digest_mark(&b->cd, off / GW_PAGE_SIZE, len / GW_PAGE_SIZE);
    return 0;
}

/* Which chunks hold data at all (holes are zero chunks, never read). */
static int map_data(struct bk *b)
{
    memset(b->has_data, 0, b->nchunks);
    int r = gw_mem_for_each_data(&b->vm->mem, note_data, b);
    return r ? fail(b, r, "scanning guest memory: %s", strerror(-r)) : 0;
}

/* Tells the caller how far the copy is (chunk i done); its refusal stops the backup. */
static int report(struct bk *b, uint64_t i)
{
    __atomic_store_n(&b->mem_pos, i * b->cs + chunk_len(b, i, b->vm->mem.size), __ATOMIC_RELAXED);
    if (!b->p->progress) return 0;
    struct gw_backup_progress pr = {
        .total_bytes = b->vm->mem.size, .position = i * b->cs + chunk_len(b, i, b->vm->mem.size),
        .bytes_read = b->bytes_read, .bytes_written = b->sink.new_bytes,
        .bytes_deduplicated = (b->sink.reused_chunks + b->unread) * b->cs, .chunks = b->sink.chunks, .chunks_total = b->nchunks,
    };
    int r = b->p->progress(b->p->progress_ctx, &pr);
    return r ? fail(b, r, "%s", "backup cancelled") : 0;
}

static int put_mem_chunk(struct bk *b, uint64_t i, const uint8_t *data)
{
    bool zero;
    uint64_t len = chunk_len(b, i, b->vm->mem.size);
    int r = gw_chunk_sink_put(&b->sink, data, len, b->names[i], &zero);
    if (r) return fail(b, r, "%s", gw_store_error(b->t->store));
    b->bytes_read += len;
    return report(b, i);
}

/* Round 0: every chunk that holds data. */
static int copy_all(struct bk *b)
{
    int r = map_data(b);
    if (r) return r;
    for (uint64_t i = 0; i < b->nchunks; i++) {
        if (!b->has_data[i]) { memset(b->names[i], 0, 32); b->sink.chunks++; b->sink.zero_chunks++; continue; }
        if ((r = put_mem_chunk(b, i, b->vm->mem.base + i * b->cs))) return r;
    }
    return 0;
}

static bool chunk_pending(const struct bk *b, uint64_t i)
{
    uint64_t p0 = i * b->cs / GW_PAGE_SIZE, p1 = (i * b->cs + chunk_len(b, i, b->vm->mem.size)) / GW_PAGE_SIZE;
    for (uint64_t p = p0; p < p1; p += 64 - (p % 64)) {
        uint64_t w = b->pending[p / 64];
        if (p % 64) w >>= p % 64;
        if (w) return true;
    }
    return false;
}

static void fold_fetch(struct bk *b)
{
    for (uint64_t w = 0; w < b->words; w++) b->pending[w] |= b->dirty->bitmap[w];
}

/* Rounds 1..n over the dirty log while the guest runs; returns when little is left. */
static int dirty_rounds(struct bk *b, unsigned max_rounds)
{
    for (unsigned round = 1; round <= max_rounds; round++) {
        uint64_t count;
        int r = gw_dirty_fetch(b->dirty, &count);
        if (r) return fail(b, r, "reading the dirty log: %s", strerror(-r));
        fold_fetch(b);
        uint64_t npend = 0, nchunks = 0, ndata = 0;
        for (uint64_t w = 0; w < b->words; w++) npend += (uint64_t)__builtin_popcountll(b->pending[w]);
        for (uint64_t i = 0; i < b->nchunks; i++) { nchunks += chunk_pending(b, i); ndata += b->has_data[i]; }
        /* Few pages left: their copies in the pause cost less than another round. Writes
         * spread over more than a quarter of the chunks: another round would rewrite them
         * all and find as many again, so it cannot converge. */
        if (npend * GW_PAGE_SIZE <= 4ull * b->cs || nchunks * 4 > ndata || round == max_rounds) break;
        r = gw_dirty_clear(b->dirty, 0, b->dirty->npages);
        if (r) return fail(b, r, "clearing the dirty log: %s", strerror(-r));
        b->rounds = round;
        for (uint64_t i = 0; i < b->nchunks; i++) {
            if (!chunk_pending(b, i)) continue;
            if ((r = put_mem_chunk(b, i, b->vm->mem.base + i * b->cs))) return r;
        }
        gw_chunk_digest_mark_bitmap(&b->cd, b->pending, b->words, 1);
        gw_chunk_digest_refresh(&b->cd);
    }
    return 0;
}

/* The pause: last dirty pages to a side buffer, digest, state, the disk's point in time. */
static int take_point_in_time(struct bk *b, enum gw_backup_method method, Godwit__V1__VmState **st, uint8_t digest[16])
{
    struct gw_vm *vm = b->vm;
    bool was_paused = gw_vm_is_paused(vm);
    gw_vm_flush_devices(vm);   /* while the guest runs: the pause then has little to flush */
    uint64_t t0 = gw_now_ns();
    int r = gw_vm_pause(vm);
    if (r) return fail(b, r, "cannot pause the VM: %s", strerror(-r));
    uint64_t t_paused = gw_now_ns(), t_mem = 0, t_state = 0;
    if (method == GW_BACKUP_PAUSE) {
        r = copy_all(b);
    } else if (method == GW_BACKUP_WP) {
        /* The data map is taken after the pause (wp_copy): holes only ever fill, and a hole
         * the guest fills after the point in time faults like any page, so its copy is zeros. */
        t_mem = gw_now_ns();
        if ((r = gw_dirty_snapshot_freeze(b->wp))) fail(b, r, "cannot write-protect guest memory: %s", strerror(-r));
    } else {
        uint64_t count;
        r = gw_dirty_fetch(b->dirty, &count);
        if (r) fail(b, r, "reading the dirty log: %s", strerror(-r));
        else {
            fold_fetch(b);
            uint64_t n = 0;
            for (uint64_t w = 0; w < b->words; w++) n += (uint64_t)__builtin_popcountll(b->pending[w]);
            b->fpfns = malloc((n ? n : 1) * sizeof *b->fpfns);
            b->fpages = malloc((n ? n : 1) * GW_PAGE_SIZE);
            if (!b->fpfns || !b->fpages) r = fail(b, -ENOMEM, "out of memory%s", "");
            for (uint64_t w = 0; !r && w < b->words; w++) {
                for (uint64_t bits = b->pending[w]; bits; bits &= bits - 1) {
                    uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(bits);
                    memcpy(b->fpages + b->nfp * GW_PAGE_SIZE, vm->mem.base + pfn * GW_PAGE_SIZE, GW_PAGE_SIZE);
                    b->fpfns[b->nfp++] = pfn;
                }
            }
            gw_chunk_digest_mark_bitmap(&b->cd, b->pending, b->words, 0);
        }
    }
    if (!r && method != GW_BACKUP_WP) gw_chunk_digest_final(&b->cd, digest);
    /* The core state only: the bitmap is the runner's business, not the backup's. */
    if (!r && (r = gw_vm_save_state_core(vm, st))) fail(b, r, "cannot read the VM state: %s", strerror(-r));
    t_state = gw_now_ns();
    /* An RBD disk: only copy-before-write starts here; the snapshot follows the resume. */
    if (!r && b->rbd) r = gw_disk_rbd_freeze(b->rbd, b->err, b->errlen);
    if (!r && b->ds && (r = b->ds->ops->freeze(b->ds))) fail(b, r, "disk: %s", b->ds->err);
    /* The disk's dirty bitmap at the same point in time; without it the disk is read whole. */
    if (!r && b->ds && gw_vm_disk_dirty_take(vm, &b->dbits, &b->dnbits, b->dbase)) b->dbits = NULL;
    uint64_t t_disk = gw_now_ns();
    if (b->since) gw_backup_since_take(b->since);   /* the point in time of the bitmap too */
    if (!was_paused) gw_vm_resume(vm);
    b->t_resumed = gw_now_ns();
    gw_side_fill_init(&b->fill, b->t_resumed);
    b->pause_ns = b->t_resumed - t0;
    gw_debug("backup pause: stop vCPUs %.2f ms, memory %.2f ms, protect and state %.2f ms, disk %.2f ms, total %.2f ms",
             (t_paused - t0) / 1e6, t_mem ? (t_mem - t_paused) / 1e6 : 0.0, (t_state - (t_mem ? t_mem : t_paused)) / 1e6,
             (t_disk - t_state) / 1e6, b->pause_ns / 1e6);
    if (!r && b->rbd) {
        r = gw_disk_rbd_snap(b->rbd, b->err, b->errlen);
        gw_disk_rbd_stats(b->rbd, NULL, &b->disk_snap_ns);
        gw_debug("backup: RBD snapshot %.2f ms after the pause", b->disk_snap_ns / 1e6);
    }
    return r;
}

/* Write-protect: every chunk as it was at the point in time, read while the guest runs.
 * A batch is named here and stored by the sink's writer while the next one is read and
 * named (gw_chunk_sink_submit): reading, hashing and writing overlap instead of taking turns. */
static int put_batch(struct bk *b, uint8_t *bufs, const uint64_t *idx, const size_t *len, size_t n,
                     const uint8_t (*names)[32], const bool *zero)
{
    const uint8_t *data[GW_CHUNK_SINK_BATCH] = {0};
    for (size_t k = 0; k < n; k++) data[k] = bufs + k * b->cs;
    int r = gw_chunk_sink_submit(&b->sink, data, len, n, names, zero);
    if (r) return fail(b, r, "%s", gw_store_error(b->t->store));
    return report(b, idx[n - 1]);
}

/* The copy runs at the backup's lowered CPU priority (gw_cpu_prio_run) until the side buffer
 * is nearly full: then this thread, and the writers it starts from now on, go back to normal,
 * so that a busy host does not starve a backup into failing. */
static void raise_if_pressed(struct bk *b)
{
    if (b->cpu_raised || gw_dirty_snapshot_pressure(b->wp) < GW_BACKUP_CPU_RAISE_AT || !gw_cpu_prio_lowered()) return;
    b->cpu_raised = true;
    int e = gw_cpu_prio_raise();
    if (e) gw_warn("vm %s: backup side buffer %.0f%% full, but its threads cannot go back to the normal CPU priority: %s",
                   b->vm->name, gw_dirty_snapshot_pressure(b->wp) * 100, strerror(-e));
    else gw_info("vm %s: backup side buffer %.0f%% full: its threads are back at the normal CPU priority", b->vm->name,
                 gw_dirty_snapshot_pressure(b->wp) * 100);
}

/* Chunks that may be page patches (backup_patch.h) are compared with their bases first; the
 * bases are read from the store, so the writer of the previous batch must be done. The
 * buffers keep the chunks' own names in b->names; names[k] becomes the patch's. */
static int patch_and_put(struct bk *b, uint8_t *bufs, const uint64_t *idx, size_t *lens, size_t n,
                         uint8_t (*names)[32], const bool *zero, const bool *cand)
{
    bool any = false;
    for (size_t k = 0; k < n; k++) any |= cand[k];
    if (any) {
        int dr = gw_chunk_sink_drain(&b->sink);
        if (dr) return fail(b, dr, "%s", gw_store_error(b->t->store));
        gw_backup_patcher_batch(&b->pt, &b->sink, bufs, idx, lens, names, cand, n);
    }
    return put_batch(b, bufs, idx, lens, n, (const uint8_t (*)[32])names, zero);
}

static int wp_copy(struct bk *b, uint8_t digest[16])
{
    uint64_t t_start = gw_now_ns(), read_ns = 0, hash_ns = 0;
    int r = map_data(b);
    if (r) return r;
    /* Two sets of batch buffers: the writer stores one while the other fills. */
    uint8_t *bufs = malloc(2 * (size_t)GW_CHUNK_SINK_BATCH * b->cs);
    if (!bufs) return fail(b, -ENOMEM, "out of memory%s", "");
    uint64_t idx[GW_CHUNK_SINK_BATCH];
    size_t lens[GW_CHUNK_SINK_BATCH];
    uint8_t names[GW_CHUNK_SINK_BATCH][32];
    bool zero[GW_CHUNK_SINK_BATCH], cand[GW_CHUNK_SINK_BATCH];
    size_t n = 0, set = 0;
    uint64_t skip_off = 0, skip_len = 0;   /* a run of unread chunks, unprotected at once */
    for (uint64_t i = 0; i < b->nchunks && !r; i++) {
        uint64_t off = i * b->cs, len = chunk_len(b, i, b->vm->mem.size);
        if (!b->has_data[i]) {
            memset(b->names[i], 0, 32);
            continue;
        }
        if (b->inc && gw_backup_since_unchanged(b->since, off / GW_PAGE_SIZE, len / GW_PAGE_SIZE)) {
            /* As at the base's point in time: its name, and its digest already in b->cd. */
            const ProtobufCBinaryData *pn = &b->parent_mem->chunks[i];
            if (pn->len == 32) memcpy(b->names[i], pn->data, 32);
            else memset(b->names[i], 0, 32);
            gw_backup_patcher_keep(&b->pt, i, b->parent_mem);
            if (skip_len && skip_off + skip_len != off) { gw_dirty_snapshot_skip(b->wp, skip_off, skip_len); skip_len = 0; }
            if (!skip_len) skip_off = off;
            skip_len += len;
            b->unread++;
            b->sink.chunks++;
            continue;
        }
        uint8_t *setbuf = bufs + set * GW_CHUNK_SINK_BATCH * (size_t)b->cs, *buf = setbuf + n * b->cs;
        uint64_t t_read = gw_now_ns();
        r = gw_dirty_snapshot_read(b->wp, off, len, buf);
        if (r) {
            char why[160];
            gw_dirty_snapshot_failed(b->wp, why, sizeof why);
            fail(b, r, "live snapshot failed: %s", why);
            break;
        }
        gw_chunk_digest_set_from(&b->cd, off / GW_PAGE_SIZE, len / GW_PAGE_SIZE, buf);
        uint64_t t_hash = gw_now_ns();
        read_ns += t_hash - t_read;
        /* Named now, while the copy is still in cache. */
        gw_chunk_sink_name(&b->sink, buf, len, names[n], &zero[n]);
        hash_ns += gw_now_ns() - t_hash;
        memcpy(b->names[i], names[n], 32);
        b->bytes_read += len;
        lens[n] = len;
        if (!zero[n] && gw_backup_patcher_reuse(&b->pt, i, names[n], b->parent_img)) {
            b->kept_patches++;   /* the parent's patch rebuilds it: nothing to store */
            b->sink.chunks++;
            continue;
        }
        cand[n] = !zero[n] && gw_backup_patcher_candidate(&b->pt, i, len, names[n]);
        idx[n++] = i;
        if (n == GW_CHUNK_SINK_BATCH) {
            r = patch_and_put(b, setbuf, idx, lens, n, names, zero, cand);
            n = 0;
            set ^= 1;
            raise_if_pressed(b);
        }
    }
    if (!r && n) r = patch_and_put(b, bufs + set * GW_CHUNK_SINK_BATCH * (size_t)b->cs, idx, lens, n, names, zero, cand);
    /* The writer reads bufs: it finishes before they go, on every path. */
    int dr = gw_chunk_sink_drain(&b->sink);
    if (!r && dr) r = fail(b, dr, "%s", gw_store_error(b->t->store));
    if (skip_len) gw_dirty_snapshot_skip(b->wp, skip_off, skip_len);
    free(bufs);
    if (!r) gw_chunk_digest_final(&b->cd, digest);
    const struct gw_chunk_sink *k = &b->sink;
    gw_debug("backup memory copy %.1f ms: read and digest %.1f ms, hash %.1f ms, waiting for the writer %.1f ms; "
             "writer: lookups %.1f ms (%llu chunks written without one), encode %.1f ms, puts %.1f ms",
             (gw_now_ns() - t_start) / 1e6, read_ns / 1e6, hash_ns / 1e6, k->drain_wait_ns / 1e6, k->lookup_ns / 1e6,
             (unsigned long long)k->blind_chunks, k->encode_ns / 1e6, k->put_ns / 1e6);
    return r;
}

struct wp_job {
    struct bk *b;
    uint8_t *digest;
};

static int wp_copy_job(void *arg)
{
    struct wp_job *j = arg;
    return wp_copy(j->b, j->digest);
}

/* After the pause: chunks touched by the last pages, rebuilt from their stored version. */
static int rebuild_final_chunks(struct bk *b)
{
    int r = b->t->store->ops->wait(b->t->store);  /* earlier versions must be readable */
    if (r) return fail(b, r, "%s", gw_store_error(b->t->store));
    uint64_t pages_per_chunk = b->cs / GW_PAGE_SIZE;
    for (uint64_t k = 0; k < b->nfp;) {
        uint64_t i = b->fpfns[k] / pages_per_chunk, len = chunk_len(b, i, b->vm->mem.size);
        static const uint8_t zero[32];
        if (!memcmp(b->names[i], zero, 32)) memset(b->cbuf, 0, len);
        else {
            char why[256];
            r = gw_chunk_fetch(b->t->store, &b->t->keys, b->names[i], b->cbuf, len, why, sizeof why);
            if (r) return fail(b, r, "re-reading a chunk to finish it: %s", why);
        }
        for (; k < b->nfp && b->fpfns[k] / pages_per_chunk == i; k++)
            memcpy(b->cbuf + (b->fpfns[k] % pages_per_chunk) * GW_PAGE_SIZE, b->fpages + k * GW_PAGE_SIZE, GW_PAGE_SIZE);
        if ((r = put_mem_chunk(b, i, b->cbuf))) return r;
    }
    return 0;
}

/* Incremental disk: chunk i is unchanged since the parent when no block in it was written. */
static bool disk_chunk_clean(void *ctx, uint64_t i)
{
    const struct bk *b = ctx;
    uint64_t off = i * b->cs, len = b->disk_size - off < b->cs ? b->disk_size - off : b->cs;
    return !gw_blk_dirty_any(b->dbits, b->dnbits, off, len);
}

/* The parent's disk chunk names when the dirty bitmap is relative to that parent and its disk
 * has our shape; NULL otherwise (the disk is read whole). */
static uint8_t (*parent_disk_names(const struct bk *b, const Godwit__V1__BackupManifest *parent, const char *parent_id))[32]
{
    const Godwit__V1__BackupImage *d = parent ? parent->disk : NULL;
    uint64_t n = (b->disk_size + b->cs - 1) / b->cs;
    /* We store no disk patches; a parent whose disk lists some is read whole (safe). */
    if (!b->dbits || !d || d->n_patches || !b->dbase[0] || strcmp(b->dbase, parent_id) || d->size != b->disk_size ||
        d->chunk_size != b->cs || d->n_chunks != n)
        return NULL;
    uint8_t (*names)[32] = calloc(n ? n : 1, 32);
    for (uint64_t i = 0; names && i < n; i++) {
        if (d->chunks[i].len == 32) memcpy(names[i], d->chunks[i].data, 32);
        else if (d->chunks[i].len != 0) { free(names); return NULL; }
    }
    return names;
}

/* The write-protect side buffer's bound (backup.h, side_limit). */
static uint64_t side_limit(const struct gw_vm *vm, const struct gw_backup_params *p)
{
    uint64_t side = p->side_limit ? p->side_limit : vm->mem.size / GW_BACKUP_SIDE_DEFAULT_DIV;
    return side < vm->mem.size ? side : vm->mem.size;
}

static int vm_disk_latency(void *ctx, struct gw_lat_hist *out) { return gw_vm_disk_latency(ctx, out); }
static int vm_disk_history(void *ctx, uint64_t *p99_ns, unsigned max)
{
    uint32_t us[GW_LAT_WINDOWS];
    int n = gw_vm_disk_latency_windows(ctx, us, NULL, max < GW_LAT_WINDOWS ? max : GW_LAT_WINDOWS);
    for (int i = 0; i < n; i++) p99_ns[i] = (uint64_t)us[i] * 1000;
    return n;
}

/* The write-protect side buffer's fill, and the store rate that finishes the memory before it
 * is full (side_fill.h). The throttle never limits below it. */
_Static_assert(GW_DIRTY_SNAPSHOT_BINS <= GW_SIDE_FILL_MAX_BINS, "the forecast reads every bin of the snapshot");

static void wp_pressure(void *ctx, double *full, double *need)
{
    struct bk *b = ctx;
    struct gw_dirty_snapshot_fill fl;
    gw_dirty_snapshot_fill(b->wp, &fl);
    *full = fl.full;
    *need = 0;
    if (!b->wp || !b->t_resumed) return;
    struct gw_side_fill_state st = {
        .full = fl.full,
        .copied = fl.copied,
        .held = fl.held,
        .bins = GW_DIRTY_SNAPSHOT_BINS,
        .done = b->vm->mem.size ? (double)__atomic_load_n(&b->mem_pos, __ATOMIC_RELAXED) / (double)b->vm->mem.size : 1,
        .mem_bytes = (double)b->vm->mem.size,
        .stored_bytes = (double)b->sink.new_bytes,
    };
    *need = gw_side_fill_need(&b->fill, &st, gw_now_ns());
}

/* The disk's point in time into the store (run at the backup's CPU priority). */
struct disk_job {
    struct bk *b;
    const Godwit__V1__BackupManifest *parent;
    const char *parent_id;
    uint8_t (*dnames)[32];
    struct gw_backup_result *res;
    bool incremental;
};

static int disk_job(void *arg)
{
    struct disk_job *j = arg;
    struct bk *b = j->b;
    int r = 0;
    if (b->rbd) {
        uint64_t disk_read = 0;
        r = gw_disk_rbd_store(b->rbd, &b->sink, b->cs, j->parent ? j->parent->disk : NULL, j->parent_id, j->dnames,
                              &disk_read, &j->incremental, b->err, b->errlen);
        j->res->pb.disk_read_bytes = disk_read;
        gw_disk_rbd_stats(b->rbd, &b->ds_stats, &b->disk_snap_ns);
    }
    if (b->ds) {
        struct gw_backup_disk_stats dst;
        uint8_t (*pnames)[32] = parent_disk_names(b, j->parent, j->parent_id);
        struct gw_backup_disk_reuse reuse = {.clean = disk_chunk_clean, .ctx = b, .names = (const uint8_t (*)[32])pnames};
        r = gw_backup_disk_copy(b->ds, &b->sink, b->cs, j->dnames, pnames ? &reuse : NULL, &dst, b->err, b->errlen);
        free(pnames);
        j->res->pb.disk_read_bytes = dst.read_bytes;
        b->ds->ops->close(b->ds, &b->ds_stats);
        b->ds = NULL;
    }
    return r;
}

static void make_id(char *id)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%04d%02d%02d-%02d%02d%02d-%06ld", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
    snprintf(id, GW_BACKUP_ID_BUF, "%.40s", tmp);
}

static void know(struct bk *b, const uint8_t *hash)
{
    if (!gw_gc_guard_distrusts(b->sink.guard, hash)) gw_chunk_sink_know(&b->sink, hash);
}

/* What the parent's manifest says the store holds: its chunks, and for a patched chunk its
 * patch, base and mid patch (the chunk's own name is no object then). */
static void seed_known(struct bk *b, const Godwit__V1__BackupImage *im)
{
    for (size_t i = 0; im && i < im->n_chunks; i++) {
        if (im->chunks[i].len != 32) continue;
        if (!gw_manifest_patched(im, i)) { know(b, im->chunks[i].data); continue; }
        know(b, im->patches[i].data);
        know(b, im->patch_bases[i].data);
        if (gw_manifest_patch_mid(im, i)) know(b, gw_manifest_patch_mid(im, i));
    }
}

static int write_manifest(struct bk *b, Godwit__V1__BackupManifest *m, struct gw_backup_result *res)
{
    struct gw_store *s = b->t->store;
    uint8_t *buf;
    size_t len;
    char obj[160], index[160], val[256];
    int r = gw_manifest_pack(m, &b->t->keys, &buf, &len);
    if (r == -EFBIG) return fail(b, r, "manifest over its 64 MiB limit (GW_MANIFEST_MAX)%s", "");
    if (r) return fail(b, r, "cannot pack the manifest: %s", strerror(-r));
    r = gw_manifest_object(m->vm_name, m->id, obj, sizeof obj);
    if (!r) r = gw_backup_index_name(m->vm_name, index, sizeof index);
    if (r) { free(buf); return fail(b, r, "VM name '%s' cannot name a backup", m->vm_name); }
    /* Every chunk durable first, then the manifest, then the index entry that lists it; and
     * only while this backup's lease still keeps the collector off its chunks. */
    r = s->ops->wait(s);
    if (!r && (r = gw_gc_guard_check(b->guard, b->err, b->errlen))) { free(buf); return r; }
    if (!r) r = s->ops->put(s, obj, buf, len);
    if (!r) r = s->ops->wait(s);
    free(buf);
    if (r) return fail(b, r, "%s", gw_store_error(s));
    snprintf(val, sizeof val, "parent=%s memory=%llu disk=%llu new_bytes=%llu", m->parent[0] ? m->parent : "-",
             (unsigned long long)m->memory->size, (unsigned long long)m->disk->size, (unsigned long long)m->new_bytes);
    r = s->ops->index_set(s, index, m->id, val);
    if (r) return fail(b, r, "%s", gw_store_error(s));
    res->pb.new_bytes += len;
    return 0;
}

int gw_backup_create(struct gw_vm *vm, struct gw_backup_target *t, const struct gw_backup_params *p,
                     struct gw_backup_result *res, char *err, size_t errlen)
{
    uint64_t t0 = gw_now_ns();
    memset(res, 0, sizeof *res);
    godwit__v1__runner_backup_result__init(&res->pb);
    struct bk b = {.vm = vm, .t = t, .p = p, .err = err, .errlen = errlen};
    b.cs = p->chunk_size ? p->chunk_size : GW_BACKUP_CHUNK_SIZE;
    if (b.cs < 4096 || b.cs > GW_CHUNK_MAX || (b.cs & (b.cs - 1))) { snprintf(err, errlen, "chunk size must be a power of two in 4 KiB..16 MiB"); return -EINVAL; }
    if (!gw_store_name_ok(vm->name)) { snprintf(err, errlen, "VM name '%s' cannot name a backup", vm->name); return -EINVAL; }
    b.nchunks = (vm->mem.size + b.cs - 1) / b.cs;
    b.words = (vm->mem.size / GW_PAGE_SIZE + 63) / 64;
    Godwit__V1__BackupManifest *parent = NULL;
    Godwit__V1__VmState *st = NULL;
    char parent_id[GW_BACKUP_ID_BUF] = "";
    int r = 0;
    if (!p->parent || !*p->parent) {
        if (gw_backup_latest(t, vm->name, parent_id)) parent_id[0] = 0;
    } else if (strcmp(p->parent, "none")) {
        snprintf(parent_id, sizeof parent_id, "%s", p->parent);
    }
    /* Before the parent's chunk list or any lookup: the collector must know we are here. */
    if ((r = gw_gc_guard_enter(t->store, vm->name, &b.guard, err, errlen))) return r;
    if (parent_id[0] && (r = gw_manifest_load(t->store, &t->keys, vm->name, parent_id, &parent, err, errlen))) {
        /* The newest backup, taken by default, only saves work: when its manifest is damaged
         * (or unsealed in an encrypted store) a full backup is taken rather than none, so one
         * bad manifest does not stop every scheduled backup of the VM. A parent the caller
         * named, or a store that cannot be read, fails the backup. */
        if (r != -EBADMSG || (p->parent && *p->parent)) {
            gw_gc_guard_leave(b.guard);
            return r;
        }
        gw_warn("vm %s: backup: newest backup %s unusable as the parent (%s): taking a full backup", vm->name,
                parent_id, err);
        parent_id[0] = 0;
        err[0] = 0;
        r = 0;
    }

    b.names = calloc(b.nchunks, 32);
    b.has_data = calloc(b.nchunks, 1);
    b.pending = calloc(b.words, 8);
    b.cbuf = malloc(b.cs);
    if (!b.names || !b.has_data || !b.pending || !b.cbuf) { r = fail(&b, -ENOMEM, "out of memory%s", ""); goto out; }
    if ((r = gw_chunk_sink_init(&b.sink, t->store, &t->keys, b.cs, true))) { fail(&b, r, "out of memory%s", ""); goto out; }
    b.since = p->since;
    if (b.since) gw_backup_since_arm(b.since);
    b.inc = b.since && b.since->dirty && b.since->cd_valid && parent && b.since->base_id[0] &&
            !strcmp(b.since->base_id, parent_id) && !strcmp(b.since->base_store, t->store->desc) && parent->memory &&
            parent->memory->chunk_size == b.cs && parent->memory->n_chunks == b.nchunks && p->method == GW_BACKUP_WP;
    if (b.inc) {
        b.cd = b.since->cd;   /* taken over: given back on success */
        b.parent_mem = parent->memory;
    } else {
        if (b.since && b.since->cd_valid) gw_chunk_digest_free(&b.since->cd);
        if ((r = gw_chunk_digest_init(&b.cd, vm->mem.base, vm->mem.size))) { fail(&b, r, "digest: %s", strerror(-r)); goto out; }
    }
    if (b.since) b.since->cd_valid = false;
    b.sink.guard = b.guard;
    b.cd_ready = true;
    if (parent) { seed_known(&b, parent->memory); seed_known(&b, parent->disk); }
    b.parent_img = parent ? parent->memory : NULL;
    if ((r = gw_backup_patcher_open(&b.pt, p->method == GW_BACKUP_WP ? b.since : NULL, vm->name, t, parent, parent_id,
                                    b.cs, b.nchunks, vm->mem.size, b.guard))) {
        fail(&b, r, "out of memory%s", "");
        goto out;
    }
    struct gw_throttle_cfg tc = p->throttle;
    if (!tc.vm_latency) { tc.vm_latency = vm_disk_latency; tc.vm_history = vm_disk_history; tc.vm_ctx = vm; }
    tc.pressure = wp_pressure;
    tc.pressure_ctx = &b;
    if ((r = gw_throttle_open(&tc, t->store, &b.th, err, errlen))) goto out;
    b.sink.throttle = b.th;
    struct gw_disk_snapshot_params dp = {.fleece_dir = p->fleece_dir, .fleece_limit = p->fleece_limit, .align = b.cs};
    if (gw_disk_rbd_applies(vm)) r = gw_disk_rbd_open(vm, &dp, &b.rbd, err, errlen);
    else r = gw_disk_snapshot_open(vm, &dp, &b.ds, err, errlen);
    if (r) goto out;
    b.disk_size = b.ds ? b.ds->size : b.rbd ? gw_disk_rbd_size(b.rbd) : 0;

    uint8_t digest[16];
    uint64_t side = 0;   /* the write-protect side buffer's bound (0: not that method) */
    enum gw_backup_method method = p->method;
    if (method == GW_BACKUP_WP) {
        char why[256];
        /* Opening protects all memory while the guest runs; the pause then only protects
         * again what was written since (gw_dirty_snapshot_freeze). */
        side = side_limit(vm, p);
        r = gw_dirty_snapshot_open(vm, side, &b.wp, why, sizeof why);
        if (r) { side = 0; gw_warn("backup: %s: using dirty-log rounds", why); method = GW_BACKUP_DIRTY_LOG; r = 0; b.inc = false; }
    }
    if (method == GW_BACKUP_DIRTY_LOG) {
        /* A consumer of its own: a migration may track the same VM at the same time, and
         * device writes reach every consumer through the tracker. */
        char why[200] = "";
        r = gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &b.dirty, why, sizeof why);
        if (r) { gw_warn("backup: dirty logging unavailable (%s): pausing for the copy", why[0] ? why : strerror(-r)); method = GW_BACKUP_PAUSE; r = 0; }
    }
    if (method == GW_BACKUP_DIRTY_LOG) {
        r = copy_all(&b);
        if (!r) { gw_chunk_digest_refresh(&b.cd); r = dirty_rounds(&b, p->max_rounds ? p->max_rounds : GW_BACKUP_MAX_ROUNDS); }
    }
    uint64_t t_setup = gw_now_ns();
    if (!r) r = take_point_in_time(&b, method, &st, digest);
    gw_dirty_detach(b.dirty);
    b.dirty = NULL;
    if (!r && method == GW_BACKUP_DIRTY_LOG) r = rebuild_final_chunks(&b);
    if (!r && method == GW_BACKUP_WP) r = gw_cpu_prio_run(&p->cpu, wp_copy_job, &(struct wp_job){&b, digest});
    if (b.wp) { gw_dirty_snapshot_close(b.wp, &b.wp_stats); b.wp = NULL; }
    if (!r && b.nchunks) r = report(&b, b.nchunks - 1);   /* memory done: the final figures */
    if (r) goto out;

    /* The disk's point in time, read now while the guest runs. */
    uint64_t dchunks = (b.disk_size + b.cs - 1) / b.cs;
    ProtobufCBinaryData *mem_list = calloc(b.nchunks ? b.nchunks : 1, sizeof *mem_list);
    ProtobufCBinaryData *patch_list = calloc(b.nchunks ? b.nchunks : 1, sizeof *patch_list);
    ProtobufCBinaryData *base_list = calloc(b.nchunks ? b.nchunks : 1, sizeof *base_list);
    ProtobufCBinaryData *mid_list = calloc(b.nchunks ? b.nchunks : 1, sizeof *mid_list);
    ProtobufCBinaryData *disk_list = calloc(dchunks ? dchunks : 1, sizeof *disk_list);
    uint8_t (*dnames)[32] = calloc(dchunks ? dchunks : 1, 32);
    if (!mem_list || !disk_list || !dnames || !patch_list || !base_list || !mid_list) { r = fail(&b, -ENOMEM, "out of memory%s", ""); goto out_lists; }
    static const uint8_t zero32[32];
    bool disk_incremental = false;
    struct disk_job dj = {.b = &b, .parent = parent, .parent_id = parent_id, .dnames = dnames, .res = res};
    r = gw_cpu_prio_run(&p->cpu, disk_job, &dj);
    disk_incremental = dj.incremental;
    for (uint64_t i = 0; i < dchunks; i++) {
        disk_list[i].data = dnames[i];
        disk_list[i].len = memcmp(dnames[i], zero32, 32) ? 32 : 0;
    }
    uint64_t zero_count = 0;
    for (uint64_t i = 0; i < b.nchunks; i++) {
        mem_list[i].data = b.names[i];
        mem_list[i].len = memcmp(b.names[i], zero32, 32) ? 32 : 0;
        zero_count += mem_list[i].len == 0;
    }
    for (uint64_t i = 0; i < dchunks; i++) zero_count += disk_list[i].len == 0;
    if (r) goto out_lists;

    if (b.nchunks && (r = report(&b, b.nchunks - 1))) goto out_lists;   /* the last chance to stop */
    make_id(res->id);
    Godwit__V1__BackupManifest m = GODWIT__V1__BACKUP_MANIFEST__INIT;
    Godwit__V1__BackupImage mi = GODWIT__V1__BACKUP_IMAGE__INIT, di = GODWIT__V1__BACKUP_IMAGE__INIT;
    mi.size = vm->mem.size;
    mi.chunk_size = b.cs;
    mi.n_chunks = b.nchunks;
    mi.chunks = mem_list;
    di.size = b.disk_size;
    di.chunk_size = b.disk_size ? b.cs : 0;
    di.n_chunks = dchunks;
    di.chunks = disk_list;
    /* Format 2 only when a chunk is patched, 3 when a patch is layered: the others stay
     * readable by older readers. */
    int patched = gw_backup_patcher_list(&b.pt, &mi, patch_list, base_list, mid_list);
    m.format_version = patched == 2 ? GW_MANIFEST_VERSION_LAYERS : patched ? GW_MANIFEST_VERSION_PATCHES : GW_MANIFEST_VERSION;
    m.id = res->id;
    m.vm_name = vm->name;
    m.created_unix_ns = gw_wall_ns();
    m.parent = parent_id;
    m.state = st;
    m.memory = &mi;
    m.disk = &di;
    m.memory_digest.data = digest;
    m.memory_digest.len = 16;
    m.encrypted = t->keys.encrypted;
    m.new_bytes = b.sink.new_bytes;
    m.reused_chunks = b.sink.reused_chunks + b.unread + b.kept_patches;   /* unread chunks are the base's */
    m.pause_ns = b.pause_ns;
    m.method = method == GW_BACKUP_WP ? "wp" : method == GW_BACKUP_PAUSE ? "pause" : "dirty-log";
    res->pb.new_bytes = b.sink.new_bytes;
    uint64_t t_manifest = gw_now_ns();
    r = write_manifest(&b, &m, res);
    gw_debug("backup phases: setup %.1f ms, point in time and data %.1f ms, manifest and index %.1f ms",
             (t_setup - t0) / 1e6, (t_manifest - t_setup) / 1e6, (gw_now_ns() - t_manifest) / 1e6);
    if (r) goto out_lists;
    gw_disk_rbd_finish(b.rbd, res->id);   /* listed: its snapshot is the next diff base */
    gw_disk_rbd_free(b.rbd);
    b.rbd = NULL;
    if (b.since && b.since->dirty) {
        /* The new base, with its digest state: every method finished it at the point in time
         * (write-protect from the point-in-time copies, the others inside the pause). */
        b.since->cd = b.cd;
        b.since->cd_valid = true;
        b.cd_ready = false;
        gw_backup_since_rebase(b.since, res->id, t->store->desc);
    }

    gw_hex_encode(digest, 16, res->digest_hex);
    res->pb.id = res->id;
    res->pb.memory_bytes = vm->mem.size;
    res->pb.disk_bytes = b.disk_size;
    res->pb.chunks = b.nchunks + dchunks;
    res->pb.new_chunks = b.sink.new_chunks;
    res->pb.reused_chunks = b.sink.reused_chunks + b.unread + b.kept_patches;
    res->pb.patched_chunks = b.pt.patched;
    res->pb.patched_bytes = b.pt.patched_bytes;
    res->pb.layered_chunks = b.pt.layered;
    res->pb.zero_chunks = zero_count;
    res->pb.pause_ns = b.pause_ns;
    res->pb.elapsed_ns = gw_now_ns() - t0;
    res->pb.memory_digest = res->digest_hex;
    res->pb.rounds = b.rounds;
    res->pb.method = (char *)m.method;
    res->pb.disk_source = (char *)(!b.disk_size ? "" : !gw_disk_rbd_applies(vm) ? "file"
                                   : disk_incremental ? "rbd-diff" : "rbd-snapshot");
    res->pb.chunks_unread = b.unread;
    res->pb.bytes_read = b.bytes_read;
    res->pb.fleece_bytes = b.ds_stats.fleece_bytes;
    res->pb.fleece_blocks = b.ds_stats.blocks_copied;
    res->pb.guest_write_wait_max_ns = b.ds_stats.guest_wait_ns_max;
    res->pb.disk_snap_ns = b.disk_snap_ns;
    res->pb.wp_faults = b.wp_stats.faults;
    res->pb.wp_pages_copied = b.wp_stats.pages_copied;
    res->pb.wp_side_limit = side;
    res->pb.wp_side_peak_bytes = b.wp_stats.side_peak_bytes;
    gw_throttle_close(b.th, &b.th_stats);
    b.th = NULL;
    /* Listed: the disk's bitmap is relative to this backup from now on. */
    if (b.dbits) { gw_vm_disk_dirty_set_base(vm, res->id); free(b.dbits); b.dbits = NULL; }
    static const char *const modes[] = {"adaptive", "fixed", "off"};
    res->pb.throttle = (char *)modes[p->throttle.mode <= GW_THROTTLE_OFF ? p->throttle.mode : 0];
    res->pb.throttle_bytes = b.th_stats.bytes;
    res->pb.throttle_elapsed_ns = b.th_stats.elapsed_ns;
    res->pb.throttle_wait_ns = b.th_stats.wait_ns;
    res->pb.throttle_backoffs = b.th_stats.backoffs;
    res->pb.throttle_min_rate = (uint64_t)b.th_stats.min_rate;
    res->pb.throttle_end_rate = (uint64_t)b.th_stats.end_rate;
    res->pb.throttle_vm_target_pct = b.th_stats.vm_target_pct;
    res->pb.throttle_vm_base_us = b.th_stats.vm_base0_ns / 1000;
    res->pb.throttle_vm_base_windows = b.th_stats.vm_base_windows;
    res->pb.throttle_vm_base_from_history = b.th_stats.vm_base_from_history;
    snprintf(res->throttle_why, sizeof res->throttle_why, "%s", b.th_stats.why);
    res->pb.throttle_why = res->throttle_why;
    gw_info("vm %s: %s backup %s to %s: %llu chunks (%llu unread, unchanged), %llu new (%llu KiB), %llu reused, "
            "pause %.2f ms, %.0f ms; wp faults %llu, pages copied %llu", vm->name, m.method,
            res->id, t->store->desc, (unsigned long long)res->pb.chunks, (unsigned long long)b.unread,
            (unsigned long long)b.sink.new_chunks,
            (unsigned long long)(res->pb.new_bytes >> 10), (unsigned long long)b.sink.reused_chunks, b.pause_ns / 1e6,
            res->pb.elapsed_ns / 1e6, (unsigned long long)b.wp_stats.faults, (unsigned long long)b.wp_stats.pages_copied);
out_lists:
    free(mem_list);
    free(patch_list);
    free(mid_list);
    free(base_list);
    free(disk_list);
    free(dnames);
out:
    if (b.wp) gw_dirty_snapshot_close(b.wp, NULL);   /* never leave the guest write-protected */
    if (b.rbd) gw_disk_rbd_finish(b.rbd, NULL);   /* not listed: its snapshot goes */
    gw_disk_rbd_free(b.rbd);
    gw_dirty_detach(b.dirty);
    if (r) gw_error("vm %s: backup to %s failed: %s", vm->name, t->store->desc, err);
    if (r) t->store->ops->wait(t->store);  /* nothing of ours stays in flight */
    if (b.cd_ready) gw_chunk_digest_free(&b.cd);
    gw_chunk_sink_free(&b.sink);
    gw_backup_patcher_close(&b.pt);
    gw_gc_guard_leave(b.guard);
    gw_vm_state_free(st);
    if (parent) godwit__v1__backup_manifest__free_unpacked(parent, NULL);
    free(b.names);
    free(b.has_data);
    free(b.pending);
    free(b.cbuf);
    free(b.fpfns);
    free(b.fpages);
    if (b.ds) b.ds->ops->close(b.ds, NULL);   /* ends copy-before-write on every path */
    gw_throttle_close(b.th, NULL);
    if (b.dbits) gw_vm_disk_dirty_give_back(vm, b.dbits);   /* not listed: those blocks stay dirty */
    free(b.dbits);
    return r;
}
