/* RBD disks in backups: copy-before-write from the pause until the snapshot exists, chunks
 * from the snapshot and the fleecing file after it, diffs for incrementals (see disk_rbd.h).
 *
 * The copy-before-write blocks live in a fleece area (fleece_area.h). Each is UNTOUCHED (the
 * snapshot holds its point-in-time data),
 * COPIED (the guest wrote it before the snapshot existed: the old data is at slot[block] in
 * the fleecing file) or ZERO (the same, and the old data was all zeros). The guest side (the
 * device's before_write, on a vCPU thread under the device lock) and the backup side meet in
 * one mutex; once the snapshot exists (or copy-before-write was lost) the tables only get
 * read. */
#include "backup/disk_rbd.h"
#include "backup/fleece_area.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/blk_rbd.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/virtio_blk.h"
#include "engine/vm/vm.h"
#include "storage/chunk_sink.h"
#include "storage/store.h"

#define READ_BATCH 8u   /* chunks read from the snapshot together */

enum { UNTOUCHED = GW_FLEECE_UNTOUCHED, COPIED = GW_FLEECE_COPIED, ZERO = GW_FLEECE_ZERO };

struct gw_disk_rbd {
    struct gw_vm *vm;
    struct gw_blk *live;       /* the VM's own handle (holds the lock): snapshots go through it */
    char snap[GW_RBD_SNAP_MAX + 1];
    char parent_snap[GW_RBD_SNAP_MAX + 1];   /* the diff base that was used, or "" */
    uint64_t size;
    bool snapped;              /* the snapshot exists */
    /* Copy-before-write between the point in time and the snapshot. */
    pthread_mutex_t m;
    bool active, hooked;
    int failed;                /* -errno once copy-before-write was lost; the reason in why */
    char why[256];
    struct gw_fleece_area a;   /* blocks, their states, the fleecing file */
    uint64_t snap_ns;
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

static bool all_zero(const uint8_t *p, uint64_t len)
{
    return len == 0 || (p[0] == 0 && !memcmp(p, p + 1, len - 1));
}

/* The old data through the live handle (gw_fleece_read_old_fn): the device lock makes this
 * thread its only user here. */
static int read_old(void *ctx, uint64_t off, uint64_t len, uint8_t *buf)
{
    struct gw_disk_rbd *d = ctx;
    int r = gw_blk_rw(d->live, false, buf, len, off);
    return r ? r : all_zero(buf, len);   /* zeros: nothing to keep */
}

/* Guest side, under the device lock, before a write of [off, off+len) lands: the old data of
 * every block it touches that no write has touched since the point in time. The read goes
 * through the live handle: the device lock makes this thread its only user here. */
static void before_write(void *ctx, uint64_t off, uint64_t len)
{
    struct gw_disk_rbd *d = ctx;
    uint64_t t0 = gw_now_ns();
    pthread_mutex_lock(&d->m);
    char why[sizeof d->why];
    int r = d->active ? gw_fleece_area_copy(&d->a, off, len, read_old, d, " before the RBD snapshot existed; raise "
                                            "--fleece-limit", why, sizeof why) : 0;
    if (r && !d->failed) {
        d->failed = r;
        d->active = false;
        snprintf(d->why, sizeof d->why, "%s", why);
        gw_warn("vm %s: backup disk snapshot lost: %s (the guest keeps writing)", d->vm->name, d->why);
    }
    pthread_mutex_unlock(&d->m);
    gw_fleece_area_waited(&d->a, gw_now_ns() - t0);   /* guest side only, under the device lock */
}

static void unhook(struct gw_disk_rbd *d)
{
    if (!d->hooked) return;
    struct gw_blk_write_hook none = {0};
    gw_vm_disk_set_write_hook(d->vm, &none);   /* after this no guest write calls us */
    d->hooked = false;
}

int gw_disk_rbd_open(struct gw_vm *vm, const struct gw_disk_snapshot_params *p, struct gw_disk_rbd **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    struct gw_device *dev = gw_bus_find(&vm->bus, "vda");
    struct gw_blk *live = gw_virtio_blk_backend(dev);
    if (!live) { snprintf(err, errlen, "the VM has no RBD disk attached"); return -ENODEV; }
    uint64_t limit, bs, align;
    int r = gw_disk_fleece_geometry(live->size, p, &limit, &bs, &align, err, errlen);
    if (r) return r;
    struct gw_disk_rbd *d = calloc(1, sizeof *d);
    if (!d) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    d->vm = vm;
    d->live = live;
    d->size = live->size;
    d->a.fd = -1;
    pthread_mutex_init(&d->m, NULL);
    /* A name no finished backup has; it takes the backup's id once the backup is listed. */
    snprintf(d->snap, sizeof d->snap, "%spending-%llu", GW_DISK_RBD_SNAP_PREFIX, (unsigned long long)gw_wall_ns());
    r = gw_fleece_area_init(&d->a, d->size, bs, limit, p->fleece_dir && *p->fleece_dir ? p->fleece_dir : "/tmp", err,
                            errlen);
    if (r) goto fail;
    *out = d;
    return 0;
fail:
    gw_disk_rbd_free(d);
    return r;
}

int gw_disk_rbd_freeze(struct gw_disk_rbd *d, char *err, size_t errlen)
{
    d->active = true;   /* no vCPU runs: no write is in flight, none starts before the hook is in */
    struct gw_blk_write_hook h = {.before_write = before_write, .ctx = d};
    int r = gw_vm_disk_set_write_hook(d->vm, &h);
    if (r) { d->active = false; snprintf(err, errlen, "cannot start copy-before-write: %s", strerror(-r)); return r; }
    d->hooked = true;
    return 0;
}

int gw_disk_rbd_snap(struct gw_disk_rbd *d, char *err, size_t errlen)
{
    /* Not under the device lock: the guest's reads and writes go on (librbd holds back
     * writes for the moment it needs, and orders each one before or after the snapshot).
     * Any write that may land before the snapshot passed before_write first, so whichever
     * side of it a write falls, its block's old data is in the fleecing file. */
    uint64_t t0 = gw_now_ns();
    int r = gw_blk_rbd_snap_create(d->live, d->snap);
    d->snap_ns = gw_now_ns() - t0;
    if (r) {
        snprintf(err, errlen, "cannot snapshot %s: %s", d->live->desc, strerror(-r));
    } else {
        d->snapped = true;
    }
    pthread_mutex_lock(&d->m);
    d->active = false;   /* every later write lands after the snapshot: nothing more to copy */
    if (!r && d->failed) { r = d->failed; snprintf(err, errlen, "disk snapshot: %s", d->why); }
    pthread_mutex_unlock(&d->m);
    unhook(d);
    return r;
}

void gw_disk_rbd_stats(const struct gw_disk_rbd *d, struct gw_disk_snapshot_stats *st, uint64_t *snap_ns)
{
    if (st)
        *st = (struct gw_disk_snapshot_stats){.blocks_copied = d->a.copied, .fleece_bytes = d->a.used,
                                              .fleece_limit = d->a.limit, .guest_wait_ns_max = d->a.wait_max,
                                              .guest_wait_ns_total = d->a.wait_total};
    *snap_ns = d->snap_ns;
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
    /* Blocks the guest wrote between the point in time and the snapshot are in the diff
     * already (the writes landed before it); marked again so that the plan never rests on
     * that alone. */
    for (uint64_t i = 0; i < d->a.nblocks; i++)
        if (d->a.state[i] != UNTOUCHED) changed[i * d->a.bs / cs] = 1;
    return 0;
}

/* Puts the point-in-time data of the blocks the guest wrote before the snapshot existed over
 * chunk buf ([off, off+len) of the disk, from the snapshot). bs divides cs, so a chunk holds
 * whole blocks. 0 or -errno with err set. */
static int overlay(struct gw_disk_rbd *d, uint64_t off, uint64_t len, uint8_t *buf, char *err, size_t errlen)
{
    for (uint64_t i = off / d->a.bs; i * d->a.bs < off + len; i++) {
        uint8_t *p = buf + (i * d->a.bs - off);
        if (d->a.state[i] == ZERO) memset(p, 0, gw_fleece_area_block_len(&d->a, i));
        if (d->a.state[i] != COPIED) continue;
        int r = gw_fleece_area_read(&d->a, i, p);
        if (r) { snprintf(err, errlen, "reading the fleecing file: %s", strerror(-r)); return r; }
    }
    return 0;
}

int gw_disk_rbd_store(struct gw_disk_rbd *d, struct gw_chunk_sink *sink, uint32_t cs,
                      const Godwit__V1__BackupImage *parent, const char *parent_id, uint8_t (*names)[32],
                      uint64_t *bytes_read, bool *incremental, char *err, size_t errlen)
{
    *bytes_read = 0;
    *incremental = false;
    uint64_t nchunks = (d->size + cs - 1) / cs;
    struct gw_blk *s = NULL;
    if (!d->snapped || cs % d->a.bs) {
        snprintf(err, errlen, "the disk snapshot was not taken, or chunks of %u bytes split its blocks", cs);
        return -EINVAL;
    }
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
        for (unsigned k = 0; !r && k < n; k++) {
            data[k] = bufs + (size_t)k * cs;
            len[k] = ios[k].len;
            *bytes_read += ios[k].len;
            r = overlay(d, ios[k].off, ios[k].len, bufs + (size_t)k * cs, err, errlen);
        }
        if (r) break;
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
    if (!d->snapped) return;
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
    if (!d) return;
    unhook(d);
    gw_fleece_area_free(&d->a);
    pthread_mutex_destroy(&d->m);
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
