/* Restoring a backup's memory and disk (see backup.h): chunks are read in batches with
 * the store's full number of reads in flight, each checked before it is copied. */
#include "backup/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/util.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/guest_mem.h"
#include "storage/chunk_sink.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define BATCH 16u

/* Calls place(i, data, len) for every non-zero chunk of im after reading and checking it. */
static int read_image(struct gw_backup_target *t, const Godwit__V1__BackupImage *im,
                      int (*place)(void *ctx, uint64_t i, const uint8_t *data, size_t len), void *ctx,
                      struct gw_restore_stats *st, char *err, size_t errlen)
{
    struct gw_store *s = t->store;
    const struct gw_chunk_keys *keys = t->keys.encrypted ? &t->keys : NULL;
    size_t cap = gw_chunk_encoded_cap(im->chunk_size);
    uint8_t *bufs = malloc(BATCH * cap), *raw = malloc(im->chunk_size ? im->chunk_size : 1);
    struct gw_store_read rd[BATCH];
    uint64_t idx[BATCH];
    char names[BATCH][80];
    int r = bufs && raw ? 0 : -ENOMEM;
    if (r) snprintf(err, errlen, "out of memory");
    for (uint64_t i = 0; !r && i < im->n_chunks;) {
        unsigned n = 0;
        for (; i < im->n_chunks && n < BATCH; i++) {
            if (im->chunks[i].len != 32) continue;
            gw_chunk_object(im->chunks[i].data, names[n]);
            rd[n] = (struct gw_store_read){.name = names[n], .buf = bufs + n * cap, .cap = cap};
            idx[n++] = i;
        }
        if (!n) break;
        r = s->ops->get_batch(s, rd, n);
        if (r) { snprintf(err, errlen, "%s", gw_store_error(s)); break; }
        for (unsigned k = 0; k < n && !r; k++) {
            uint64_t c = idx[k], off = c * im->chunk_size;
            size_t len = im->size - off < im->chunk_size ? (size_t)(im->size - off) : im->chunk_size;
            if (rd[k].rc) {
                r = rd[k].rc;
                snprintf(err, errlen, "chunk %s (number %llu): %s", names[k] + 2, (unsigned long long)c,
                         r == -ENOENT ? "missing from the store" : strerror(-r));
                break;
            }
            char why[256];
            long got = gw_chunk_decode(keys, im->chunks[c].data, rd[k].buf, rd[k].len, raw, len, len, why, sizeof why);
            if (got < 0) {
                r = (int)got;
                snprintf(err, errlen, "chunk %s (number %llu): %s", names[k] + 2, (unsigned long long)c, why);
                break;
            }
            st->chunks++;
            st->bytes_read += rd[k].len;
            st->data_bytes += len;
            r = place(ctx, c, raw, len);
            if (r) snprintf(err, errlen, "placing chunk %llu: %s", (unsigned long long)c, strerror(-r));
        }
    }
    free(bufs);
    free(raw);
    return r;
}

struct mem_ctx {
    struct gw_guest_mem *m;
    struct gw_chunk_digest *cd;
    uint32_t cs;
};

static int place_mem(void *ctx, uint64_t i, const uint8_t *data, size_t len)
{
    struct mem_ctx *c = ctx;
    uint64_t off = i * c->cs;
    if (!gw_range_ok(off, len, c->m->size)) return -ERANGE;
    memcpy(c->m->base + off, data, len);
    gw_chunk_digest_mark(c->cd, off / GW_PAGE_SIZE, (len + GW_PAGE_SIZE - 1) / GW_PAGE_SIZE);
    return 0;
}

struct disk_ctx {
    int fd;
    uint32_t cs;
};

static int place_disk(void *ctx, uint64_t i, const uint8_t *data, size_t len)
{
    struct disk_ctx *c = ctx;
    return gw_pwrite_full(c->fd, data, len, (off_t)(i * c->cs));
}

int gw_backup_restore(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, struct gw_guest_mem *m,
                      const char *disk_path, struct gw_restore_stats *st, char *err, size_t errlen)
{
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
    r = read_image(t, man->memory, place_mem, &mc, st, err, errlen);
    if (!r && man->disk->size && disk_path) {
        int fd = open(disk_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) { r = -errno; snprintf(err, errlen, "disk image %s: %s", disk_path, strerror(errno)); }
        else {
            struct disk_ctx dc = {.fd = fd, .cs = man->disk->chunk_size};
            if (ftruncate(fd, (off_t)man->disk->size) < 0) { r = -errno; snprintf(err, errlen, "disk image %s: %s", disk_path, strerror(errno)); }
            if (!r) r = read_image(t, man->disk, place_disk, &dc, st, err, errlen);
            if (!r && fsync(fd) < 0) { r = -errno; snprintf(err, errlen, "disk image %s: %s", disk_path, strerror(errno)); }
            close(fd);
            if (r) unlink(disk_path);
            st->disk_bytes = man->disk->size;
        }
    }
    if (!r) {
        uint8_t dg[16];
        gw_chunk_digest_final(&cd, dg);
        for (int i = 0; i < 16; i++) snprintf(st->digest_hex + 2 * i, 3, "%02x", dg[i]);
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
