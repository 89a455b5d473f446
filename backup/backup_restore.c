/* Restoring a backup's memory and disk (see backup.h): chunks are read in batches with
 * the store's full number of reads in flight, each checked before it is copied. */
#include "backup/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backup/disk_rbd.h"
#include "engine/common/checked_open.h"
#include "engine/common/util.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/guest_mem.h"
#include "storage/chunk_patch.h"
#include "storage/chunk_sink.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define BATCH 16u

/* One batch of reads; two of them alternate so the store reads batch k + 1 while batch k is
 * checked and placed (a thread per batch: the store's reads are already in flight together).
 * Chunk k of the batch is read by rd[k]: its own object, or for a page patch (chunk_patch.h)
 * the base chunk, whose patch object then follows the chunks' reads at rd[pidx[k]], and its
 * mid patch, when layered, at rd[midx[k]]. Whole chunks have cap bytes of room each, patch
 * objects pcap (a patch is at most about half a chunk). */
struct batch {
    struct gw_store *s;
    struct gw_store_read rd[3 * BATCH];
    uint64_t idx[BATCH];
    unsigned pidx[BATCH], midx[BATCH];
    char names[3 * BATCH][80];
    uint8_t *bufs;
    unsigned n, nrd;
    int rc;
    pthread_t thread;
    bool running;
};

static void *read_batch(void *arg)
{
    struct batch *b = arg;
    b->rc = b->s->ops->get_batch(b->s, b->rd, b->nrd);
    return NULL;
}

/* Fills b with the next up to BATCH non-zero chunks from *i and starts reading them. */
static int start_batch(struct batch *b, const Godwit__V1__BackupImage *im, uint64_t *i, size_t cap, size_t pcap)
{
    b->n = 0;
    unsigned np = 0, pk[BATCH];
    for (; *i < im->n_chunks && b->n < BATCH; (*i)++) {
        if (im->chunks[*i].len != 32) continue;
        bool patched = gw_manifest_patched(im, *i);
        gw_chunk_object(patched ? im->patch_bases[*i].data : im->chunks[*i].data, b->names[b->n]);
        b->rd[b->n] = (struct gw_store_read){.name = b->names[b->n], .buf = b->bufs + b->n * cap, .cap = cap};
        b->pidx[b->n] = b->midx[b->n] = 0;
        if (patched) pk[np++] = b->n;
        b->idx[b->n++] = *i;
    }
    b->nrd = b->n;
    uint8_t *pbufs = b->bufs + BATCH * cap;
    for (unsigned j = 0; j < np; j++) {
        uint64_t c = b->idx[pk[j]];
        const uint8_t *mid = gw_manifest_patch_mid(im, c);
        for (int layer = 0; layer < (mid ? 2 : 1); layer++) {
            unsigned q = b->nrd++;
            gw_chunk_object(layer ? mid : im->patches[c].data, b->names[q]);
            b->rd[q] = (struct gw_store_read){.name = b->names[q], .buf = pbufs + (q - b->n) * pcap, .cap = pcap};
            if (layer) b->midx[pk[j]] = q;
            else b->pidx[pk[j]] = q;
        }
    }
    if (!b->n) return 0;
    int r = -pthread_create(&b->thread, NULL, read_batch, b);
    b->running = r == 0;
    return r;
}

static void finish_batch(struct batch *b)
{
    if (b->running) pthread_join(b->thread, NULL);
    b->running = false;
}

/* Checking and placing a batch: SHA-256 is most of a restore's CPU, so two threads share it,
 * each with its own buffer; the first failure (in chunk order) is the one reported. */
struct decode_job {
    const struct gw_chunk_keys *keys;
    const Godwit__V1__BackupImage *im;
    struct batch *x;
    int (*place)(void *ctx, uint64_t i, const uint8_t *data, size_t len);
    uint8_t *(*direct)(void *ctx, uint64_t i, size_t len);
    void *ctx;
    uint8_t *raw;
    unsigned first, step;
    int r;
    unsigned bad_k;
    char err[512];
    uint64_t chunks, bytes_read, data_bytes;
};

static void *decode_some(void *arg)
{
    struct decode_job *j = arg;
    struct batch *x = j->x;
    for (unsigned k = j->first; k < x->n && !j->r; k += j->step) {
        uint64_t c = x->idx[k], off = c * j->im->chunk_size;
        size_t len = j->im->size - off < j->im->chunk_size ? (size_t)(j->im->size - off) : j->im->chunk_size;
        j->bad_k = k;
        bool patched = x->pidx[k] != 0;
        const char *what = patched ? "base chunk" : "chunk", *objname = x->names[k];
        const struct gw_store_read *failed = x->rd[k].rc ? &x->rd[k] : patched && x->rd[x->pidx[k]].rc ? &x->rd[x->pidx[k]]
                                           : x->midx[k] && x->rd[x->midx[k]].rc ? &x->rd[x->midx[k]] : NULL;
        if (failed) {
            j->r = failed->rc;
            snprintf(j->err, sizeof j->err, "%s %s (number %llu): %s",
                     failed == &x->rd[k] ? what : failed == &x->rd[x->pidx[k]] ? "patch" : "mid patch", failed->name + 2,
                     (unsigned long long)c, j->r == -ENOENT ? "missing from the store" : strerror(-j->r));
            break;
        }
        char why[256];
        /* Straight into its place when the destination allows (guest memory): no bounce. */
        uint8_t *dst = j->direct ? j->direct(j->ctx, c, len) : NULL;
        if (!dst) dst = j->raw;
        const uint8_t *name = patched ? j->im->patch_bases[c].data : j->im->chunks[c].data;
        /* A patch's base is checked by the rebuilt chunk's own name below (one SHA-256 of the
         * chunk instead of two); against its own name only to say which object is bad. */
        long got = gw_chunk_decode_base(j->keys, patched ? NULL : name, x->rd[k].buf, x->rd[k].len, dst, len, len, why,
                                        sizeof why);
        const uint8_t *mid = x->midx[k] ? gw_manifest_patch_mid(j->im, c) : NULL;
        if (got >= 0 && mid) {   /* the layer under the patch (chunk_patch.h), checked with the result */
            const struct gw_store_read *mrd = &x->rd[x->midx[k]];
            got = gw_patch_finish(j->keys, mid, name, NULL, mrd->buf, mrd->len, dst, len, why, sizeof why);
            what = "mid patch";
            objname = mrd->name;
            j->bytes_read += mrd->len;
            name = mid;
        }
        if (got >= 0 && patched) {
            const struct gw_store_read *prd = &x->rd[x->pidx[k]];
            got = gw_patch_finish(j->keys, j->im->patches[c].data, name, j->im->chunks[c].data, prd->buf, prd->len, dst,
                                  len, why, sizeof why);
            what = "patch";
            objname = prd->name;
            j->bytes_read += prd->len;
        }
        if (got < 0 && patched && strcmp(what, "base chunk") &&
            gw_chunk_decode(j->keys, j->im->patch_bases[c].data, x->rd[k].buf, x->rd[k].len, j->raw, len, len, why,
                            sizeof why) < 0) {
            what = "base chunk";   /* the rebuilt chunk failed because its base is bad */
            objname = x->names[k];
        }
        if (got < 0) {
            j->r = (int)got;
            snprintf(j->err, sizeof j->err, "%s %s (number %llu): %s", what, objname + 2, (unsigned long long)c, why);
            break;
        }
        j->chunks++;
        j->bytes_read += x->rd[k].len;
        j->data_bytes += len;
        j->r = j->place(j->ctx, c, dst, len);
        if (j->r) snprintf(j->err, sizeof j->err, "placing chunk %llu: %s", (unsigned long long)c, strerror(-j->r));
    }
    return NULL;
}

struct progress {
    gw_restore_progress_fn fn;   /* NULL = none */
    void *ctx;
};

/* Calls place(i, data, len) for every non-zero chunk of im after reading and checking it,
 * and pg's function after each batch. direct, when not NULL, gives where chunk i may be decoded in place (NULL: decode into a
 * buffer); place is then called with that pointer. A chunk that fails its check may have
 * written there: the restore fails and the VM never runs. */
static int read_image(struct gw_backup_target *t, const Godwit__V1__BackupImage *im,
                      int (*place)(void *ctx, uint64_t i, const uint8_t *data, size_t len),
                      uint8_t *(*direct)(void *ctx, uint64_t i, size_t len), void *ctx,
                      const struct progress *pg, struct gw_restore_stats *st, char *err, size_t errlen)
{
    struct gw_store *s = t->store;
    const struct gw_chunk_keys *keys = t->keys.encrypted ? &t->keys : NULL;
    size_t cap = gw_chunk_encoded_cap(im->chunk_size);
    size_t pcap = gw_patch_max_pages(im->chunk_size) ? gw_chunk_encoded_cap(gw_patch_max_size(im->chunk_size)) : 0;
    struct batch *b = calloc(2, sizeof *b);
    uint8_t *raw = malloc(im->chunk_size ? im->chunk_size : 1), *raw2 = malloc(im->chunk_size ? im->chunk_size : 1);
    int r = b && raw && raw2 ? 0 : -ENOMEM;
    for (int k = 0; !r && k < 2; k++) {
        b[k].s = s;
        if (!(b[k].bufs = malloc(BATCH * cap + 2 * BATCH * pcap))) r = -ENOMEM;
    }
    if (r) { snprintf(err, errlen, "out of memory"); goto out; }
    uint64_t next = 0;
    unsigned cur = 0;
    if ((r = start_batch(&b[cur], im, &next, cap, pcap))) { snprintf(err, errlen, "cannot start a reader: %s", strerror(-r)); goto out; }
    while (b[cur].n) {
        finish_batch(&b[cur]);
        if (b[cur].rc) { r = b[cur].rc; snprintf(err, errlen, "%s", gw_store_error(s)); break; }
        if ((r = start_batch(&b[cur ^ 1], im, &next, cap, pcap))) { snprintf(err, errlen, "cannot start a reader: %s", strerror(-r)); break; }
        struct decode_job jobs[2];
        for (unsigned q = 0; q < 2; q++)
            jobs[q] = (struct decode_job){.keys = keys, .im = im, .x = &b[cur], .place = place, .direct = direct, .ctx = ctx,
                                          .raw = q ? raw2 : raw, .first = q, .step = 2};
        pthread_t helper;
        bool threaded = b[cur].n > 1 && pthread_create(&helper, NULL, decode_some, &jobs[1]) == 0;
        if (!threaded) jobs[0].step = 1;
        decode_some(&jobs[0]);
        if (threaded) pthread_join(helper, NULL);
        for (unsigned q = 0; q < 2; q++) {
            st->chunks += jobs[q].chunks;
            st->bytes_read += jobs[q].bytes_read;
            st->data_bytes += jobs[q].data_bytes;
        }
        const struct decode_job *bad = NULL;
        for (unsigned q = 0; q < 2; q++)
            if (jobs[q].r && (!bad || jobs[q].bad_k < bad->bad_k)) bad = &jobs[q];
        if (bad) { r = bad->r; snprintf(err, errlen, "%s", bad->err); }
        if (!r && pg && pg->fn && pg->fn(pg->ctx, st)) { r = -ECANCELED; snprintf(err, errlen, "restore cancelled"); }
        if (r) break;
        cur ^= 1;
    }
out:
    if (b) {
        for (int k = 0; k < 2; k++) { finish_batch(&b[k]); free(b[k].bufs); }
        free(b);
    }
    free(raw);
    free(raw2);
    return r;
}

struct mem_ctx {
    struct gw_guest_mem *m;
    struct gw_chunk_digest *cd;
    uint32_t cs;
};

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Guest memory takes a chunk in place. Its pages are faulted in with one call first (a
 * fresh VM's memory is all holes: 256 page faults per MiB otherwise). */
static uint8_t *direct_mem(void *ctx, uint64_t i, size_t len)
{
    struct mem_ctx *c = ctx;
    uint64_t off = i * c->cs;
    if (!gw_range_ok(off, len, c->m->size)) return NULL;
    madvise(c->m->base + off, len, MADV_POPULATE_WRITE);   /* a hint: faults do the same */
    return c->m->base + off;
}

/* The digest of a placed chunk (data: its bytes, in memory or in the buffer that filled it).
 * Whole digest chunks belong to this chunk alone: hashed now, on this decoding thread, while
 * the bytes are in cache, instead of one thread rereading all memory at the end. A chunk
 * smaller than the digest's 16 KiB (a manifest may say 4 or 8 KiB) shares its digest chunk
 * with the other decoding thread's chunks: set_from only marks it, and one thread rehashes it
 * at the end (hashing it here raced: two threads wrote one digest chunk's hash, the later from
 * older bytes). */
static void digest_placed(struct mem_ctx *c, uint64_t off, size_t len, const uint8_t *data)
{
    uint64_t p0 = off / GW_PAGE_SIZE;
    if (len % GW_PAGE_SIZE) gw_chunk_digest_mark(c->cd, p0, (len + GW_PAGE_SIZE - 1) / GW_PAGE_SIZE);
    else gw_chunk_digest_set_from(c->cd, p0, len / GW_PAGE_SIZE, data);
}

static int place_mem(void *ctx, uint64_t i, const uint8_t *data, size_t len)
{
    struct mem_ctx *c = ctx;
    uint64_t off = i * c->cs;
    if (!gw_range_ok(off, len, c->m->size)) return -ERANGE;
    if (data != c->m->base + off) memcpy(c->m->base + off, data, len);
    digest_placed(c, off, len, c->m->base + off);
    return 0;
}

/* Guest memory backed by a memfd takes a chunk by pwrite from the buffer it was checked in:
 * the kernel allocates each new page and fills it in the same pass, where faulting the
 * mapping in first (direct_mem) takes the fault path for every page and zeroes it before
 * the copy overwrites it. Measured in a restore of 512 MiB: the populate was a third of both
 * cores. */
static int place_mem_fd(void *ctx, uint64_t i, const uint8_t *data, size_t len)
{
    struct mem_ctx *c = ctx;
    uint64_t off = i * c->cs;
    if (!gw_range_ok(off, len, c->m->size)) return -ERANGE;
    int r = gw_pwrite_full(c->m->memfd, data, len, (off_t)off);
    if (r) return r;
    digest_placed(c, off, len, data);
    return 0;
}

struct disk_ctx {
    int fd;
    struct gw_blk *blk;         /* instead of fd: an RBD image */
    uint32_t cs;
};

static int place_disk(void *ctx, uint64_t i, const uint8_t *data, size_t len)
{
    struct disk_ctx *c = ctx;
    return gw_pwrite_full(c->fd, data, len, (off_t)(i * c->cs));
}

static int place_blk(void *ctx, uint64_t i, const uint8_t *data, size_t len)
{
    struct disk_ctx *c = ctx;
    return gw_blk_rw(c->blk, true, (void *)data, len, i * c->cs);
}

/* The disk into an RBD image made beforehand (disk_rbd.h). */
static int restore_rbd(struct gw_backup_target *t, const Godwit__V1__BackupImage *im, const char *spec,
                       const struct progress *pg, struct gw_restore_stats *st, char *err, size_t errlen)
{
    struct disk_ctx dc = {.cs = im->chunk_size};
    int r = gw_disk_rbd_restore_open(spec, im->size, &dc.blk, err, errlen);
    if (r) return r;
    r = read_image(t, im, place_blk, NULL, &dc, pg, st, err, errlen);
    int c = gw_disk_rbd_restore_close(dc.blk, spec, r == 0, err, errlen);
    st->disk_bytes = im->size;
    return r ? r : c;
}

static int restore_disk(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, const char *disk_path,
                        const struct progress *pg, struct gw_restore_stats *st, char *err, size_t errlen)
{
    if (gw_blk_is_rbd(disk_path)) return restore_rbd(t, man->disk, disk_path, pg, st, err, errlen);
    int fd = gw_checked_open(disk_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "disk image %s: %s", disk_path, strerror(-fd));
        return fd;
    }
    int r = 0;
    struct disk_ctx dc = {.fd = fd, .cs = man->disk->chunk_size};
    if (ftruncate(fd, (off_t)man->disk->size) < 0) { r = -errno; snprintf(err, errlen, "disk image %s: %s", disk_path, strerror(errno)); }
    if (!r) r = read_image(t, man->disk, place_disk, NULL, &dc, pg, st, err, errlen);
    if (!r && fsync(fd) < 0) { r = -errno; snprintf(err, errlen, "disk image %s: %s", disk_path, strerror(errno)); }
    close(fd);
    if (r) unlink(disk_path);
    st->disk_bytes = man->disk->size;
    return r;
}

int gw_backup_restore_disk(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, const char *disk_path,
                           struct gw_restore_stats *st, char *err, size_t errlen)
{
    uint64_t t0 = gw_now_ns();
    memset(st, 0, sizeof *st);
    int r = man->disk->size ? restore_disk(t, man, disk_path, NULL, st, err, errlen) : 0;
    st->elapsed_ns = gw_now_ns() - t0;
    return r;
}

int gw_backup_restore(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, struct gw_guest_mem *m,
                      const char *disk_path, struct gw_restore_stats *st, char *err, size_t errlen)
{
    return gw_backup_restore_ex(t, man, m, disk_path, NULL, NULL, st, err, errlen);
}

int gw_backup_restore_ex(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, struct gw_guest_mem *m,
                         const char *disk_path, gw_restore_progress_fn progress, void *ctx, struct gw_restore_stats *st,
                         char *err, size_t errlen)
{
    const struct progress pg = {.fn = progress, .ctx = ctx};
    uint64_t t0 = gw_now_ns();
    memset(st, 0, sizeof *st);
    if (man->memory->size != m->size) {
        snprintf(err, errlen, "backup memory is %llu bytes, the VM has %llu", (unsigned long long)man->memory->size,
                 (unsigned long long)m->size);
        return -EINVAL;
    }
    if (man->encrypted != t->keys.encrypted) {
        snprintf(err, errlen, man->encrypted ? "the backup is encrypted: give its key file" : "the backup is not encrypted, but a key file was given");
        return -EINVAL;
    }
    struct gw_chunk_digest cd;
    int r = gw_chunk_digest_init(&cd, m->base, m->size);
    if (r) { snprintf(err, errlen, "digest: %s", strerror(-r)); return r; }
    struct mem_ctx mc = {.m = m, .cd = &cd, .cs = man->memory->chunk_size};
    r = m->memfd >= 0 ? read_image(t, man->memory, place_mem_fd, NULL, &mc, &pg, st, err, errlen)
                      : read_image(t, man->memory, place_mem, direct_mem, &mc, &pg, st, err, errlen);
    if (!r && man->disk->size && disk_path) r = restore_disk(t, man, disk_path, &pg, st, err, errlen);
    if (!r) {
        uint8_t dg[16];
        gw_chunk_digest_final(&cd, dg);
        gw_hex_encode(dg, 16, st->digest_hex);
        if (memcmp(dg, man->memory_digest.data, 16)) {
            snprintf(err, errlen, "restored memory digest %s differs from the backup's", st->digest_hex);
            r = -EBADMSG;
        }
    }
    gw_chunk_digest_free(&cd);
    st->memory_bytes = m->size;
    st->elapsed_ns = gw_now_ns() - t0;
    return r;
}
