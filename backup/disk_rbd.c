/* RBD disks in backups: snapshot in the pause, chunks after it, diffs for incrementals
 * (see disk_rbd.h). */
#include "backup/disk_rbd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/blk_rbd.h"
#include "engine/vm/virtio_blk.h"
#include "engine/vm/vm.h"
#include "storage/chunk_sink.h"
#include "storage/store.h"

#define READ_BATCH 8u   /* chunks read from the snapshot together */

struct gw_disk_rbd {
    struct gw_vm *vm;
    struct gw_blk *live;       /* the VM's own handle (holds the lock): snapshots go through it */
    char snap[GW_RBD_SNAP_MAX + 1];
    char parent_snap[GW_RBD_SNAP_MAX + 1];   /* the diff base that was used, or "" */
    uint64_t size;
};

bool gw_disk_rbd_applies(const struct gw_vm *vm)
{
    return gw_blk_is_rbd(vm->disk_path);
}

uint64_t gw_disk_rbd_size(const struct gw_disk_rbd *d)
{
    return d->size;
}

static void snap_name(char *out, size_t cap, const char *id)
{
    snprintf(out, cap, "%s%s", GW_DISK_RBD_SNAP_PREFIX, id);
}

int gw_disk_rbd_snap(struct gw_vm *vm, struct gw_disk_rbd **out, char *err, size_t errlen)
{
    *out = NULL;
    struct gw_device *dev = gw_bus_find(&vm->bus, "vda");
    struct gw_blk *live = gw_virtio_blk_backend(dev);
    if (!live) { snprintf(err, errlen, "the VM has no RBD disk attached"); return -ENODEV; }
    struct gw_disk_rbd *d = calloc(1, sizeof *d);
    if (!d) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    d->vm = vm;
    d->live = live;
    d->size = live->size;
    /* A name no finished backup has; it takes the backup's id once the backup is listed. */
    snprintf(d->snap, sizeof d->snap, "%spending-%llu", GW_DISK_RBD_SNAP_PREFIX, (unsigned long long)gw_wall_ns());
    /* Under the device lock: no request is half served (the VM is paused anyway). */
    pthread_mutex_lock(&dev->lock);
    int r = gw_blk_rbd_snap_create(live, d->snap);
    pthread_mutex_unlock(&dev->lock);
    if (r) {
        snprintf(err, errlen, "cannot snapshot %s: %s", live->desc, strerror(-r));
        free(d);
        return r;
    }
    *out = d;
    return 0;
}

struct dirty_map {
    uint8_t *changed;
    uint32_t cs;
    uint64_t nchunks;
};

static int mark_changed(uint64_t off, uint64_t len, bool exists, void *ctx)
{
    struct dirty_map *m = ctx;
    (void)exists;   /* a hole is read like data: its chunk reads as zeros */
    uint64_t first = off / m->cs, last = (off + len - 1) / m->cs;
    if (last >= m->nchunks) return -ERANGE;   /* gw_blk_rbd_diff keeps extents inside the image */
    memset(m->changed + first, 1, last - first + 1);
    return 0;
}

/* Which chunks to read: all, or those the diff from the parent's snapshot names. */
static int plan(struct gw_disk_rbd *d, struct gw_blk *s, uint32_t cs, uint64_t nchunks,
                const Godwit__V1__BackupImage *parent, const char *parent_id, uint8_t *changed, bool *incremental)
{
    *incremental = false;
    memset(changed, 1, nchunks);
    if (!parent || !parent_id || !parent_id[0] || parent->size != d->size || parent->chunk_size != cs ||
        parent->n_chunks != nchunks)
        return 0;
    for (uint64_t i = 0; i < nchunks; i++)
        if (parent->chunks[i].len != 0 && parent->chunks[i].len != 32) return 0;   /* not a list we can reuse */
    char base[GW_RBD_SNAP_MAX + 1];
    snap_name(base, sizeof base, parent_id);
    if (!gw_rbd_snap_name_ok(base) || gw_blk_rbd_snap_exists(d->live, base) != 1) return 0;
    memset(changed, 0, nchunks);
    struct dirty_map m = {.changed = changed, .cs = cs, .nchunks = nchunks};
    int r = gw_blk_rbd_diff(s, base, mark_changed, &m);
    if (r) {
        gw_warn("backup: diff of %s from snapshot %s failed (%s): reading the whole disk", s->desc, base, strerror(-r));
        memset(changed, 1, nchunks);
        return 0;
    }
    snprintf(d->parent_snap, sizeof d->parent_snap, "%s", base);
    *incremental = true;
    return 0;
}

int gw_disk_rbd_store(struct gw_disk_rbd *d, struct gw_chunk_sink *sink, uint32_t cs,
                      const Godwit__V1__BackupImage *parent, const char *parent_id, uint8_t (*names)[32],
                      uint64_t *bytes_read, bool *incremental, char *err, size_t errlen)
{
    *bytes_read = 0;
    uint64_t nchunks = (d->size + cs - 1) / cs;
    struct gw_blk *s = NULL;
    uint8_t *changed = calloc(nchunks ? nchunks : 1, 1), *bufs = malloc((size_t)READ_BATCH * cs);
    int r = changed && bufs ? 0 : -ENOMEM;
    if (r) { snprintf(err, errlen, "out of memory"); goto out; }
    char why[512];
    r = gw_blk_rbd_open_snap(d->vm->disk_path, d->snap, &s, why, sizeof why);
    if (r) { snprintf(err, errlen, "reading the disk snapshot: %s", why); goto out; }
    if (s->size != d->size) { r = -EIO; snprintf(err, errlen, "the disk snapshot changed size"); goto out; }
    plan(d, s, cs, nchunks, parent, parent_id, changed, incremental);
    for (uint64_t i = 0; i < nchunks && !r;) {
        struct iovec iov[READ_BATCH];
        struct gw_blk_io ios[READ_BATCH];
        uint64_t idx[READ_BATCH];
        unsigned n = 0;
        for (; i < nchunks && n < READ_BATCH; i++) {
            if (!changed[i]) {
                if (parent->chunks[i].len == 32) memcpy(names[i], parent->chunks[i].data, 32);
                else memset(names[i], 0, 32);
                continue;
            }
            uint64_t off = i * cs, len = d->size - off < cs ? d->size - off : cs;
            iov[n] = (struct iovec){.iov_base = bufs + (size_t)n * cs, .iov_len = len};
            ios[n] = (struct gw_blk_io){.off = off, .len = len, .iov = &iov[n], .niov = 1};
            idx[n++] = i;
        }
        if (!n) break;
        r = s->ops->submit(s, ios, n);
        for (unsigned k = 0; !r && k < n; k++)
            if (ios[k].rc) { r = ios[k].rc; snprintf(err, errlen, "reading the disk snapshot at %llu: %s", (unsigned long long)ios[k].off, strerror(-r)); }
        if (r) break;
        const uint8_t *data[READ_BATCH];
        size_t len[READ_BATCH];
        uint8_t hash[READ_BATCH][32];
        bool zero[READ_BATCH];
        for (unsigned k = 0; k < n; k++) { data[k] = bufs + (size_t)k * cs; len[k] = ios[k].len; *bytes_read += ios[k].len; }
        r = gw_chunk_sink_put_many(sink, data, len, n, true, hash, zero);
        if (r) { snprintf(err, errlen, "%s", gw_store_error(sink->store)); break; }
        for (unsigned k = 0; k < n; k++) {
            if (zero[k]) memset(names[idx[k]], 0, 32);
            else memcpy(names[idx[k]], hash[k], 32);
        }
    }
    if (!r) gw_debug("backup: disk %s: %s, %llu of %llu bytes read", d->live->desc,
                               *incremental ? "incremental from the parent's snapshot" : "full",
                               (unsigned long long)*bytes_read, (unsigned long long)d->size);
out:
    gw_blk_close(s);
    free(changed);
    free(bufs);
    return r;
}

void gw_disk_rbd_finish(struct gw_disk_rbd *d, const char *backup_id)
{
    if (!d) return;
    struct gw_device *dev = gw_bus_find(&d->vm->bus, "vda");
    char keep[GW_RBD_SNAP_MAX + 1];
    int r;
    pthread_mutex_lock(&dev->lock);
    if (!backup_id) {
        if ((r = gw_blk_rbd_snap_remove(d->live, d->snap)) && r != -ENOENT)
            gw_warn("backup: cannot remove snapshot %s of %s: %s", d->snap, d->live->desc, strerror(-r));
        pthread_mutex_unlock(&dev->lock);
        return;
    }
    snap_name(keep, sizeof keep, backup_id);
    if ((r = gw_blk_rbd_snap_rename(d->live, d->snap, keep)))
        gw_warn("backup: cannot rename snapshot %s of %s to %s: %s (the next backup reads the whole disk)", d->snap,
                d->live->desc, keep, strerror(-r));
    /* Only the last backup's snapshot is kept: it is the next one's diff base. */
    if (d->parent_snap[0] && (r = gw_blk_rbd_snap_remove(d->live, d->parent_snap)) && r != -ENOENT)
        gw_warn("backup: cannot remove the previous snapshot %s of %s: %s", d->parent_snap, d->live->desc,
                strerror(-r));
    pthread_mutex_unlock(&dev->lock);
}

void gw_disk_rbd_free(struct gw_disk_rbd *d)
{
    free(d);
}

int gw_disk_rbd_restore_open(const char *spec, uint64_t size, struct gw_blk **out, char *err, size_t errlen)
{
    int r = gw_blk_open(spec, false, out, err, errlen);
    if (r) return r;
    if ((*out)->size != size) {
        snprintf(err, errlen, "%s is %llu bytes, the backup's disk %llu", spec, (unsigned long long)(*out)->size,
                 (unsigned long long)size);
        r = -EINVAL;
    } else if ((r = (*out)->ops->lock(*out, true))) {
        snprintf(err, errlen, "%s: %s", spec, r == -EAGAIN ? "in use: another VM or host holds its lock" : strerror(-r));
    }
    if (r) { gw_blk_close(*out); *out = NULL; }
    return r;
}

int gw_disk_rbd_restore_close(struct gw_blk *b, const char *spec, bool ok, char *err, size_t errlen)
{
    int r = ok ? b->ops->flush(b) : 0;
    if (r) snprintf(err, errlen, "%s: flushing the restored disk: %s", spec, strerror(-r));
    gw_blk_close(b);   /* lets the lock go: the VM takes it next */
    return r;
}
