/* The disk's point in time by copy-before-write into a local fleecing file (disk_snapshot.h).
 *
 * The disk is cut into blocks (64 KiB, larger for very large disks, never larger than the
 * backup's chunk so a read never splits one), kept in a fleece area (fleece_area.h). Each
 * block is in one state:
 *   UNTOUCHED  neither written by the guest nor read by the backup since the point in time:
 *              the image holds the point-in-time data;
 *   COPIED     the guest wrote it first: the old data is at slot[block] in the fleece file;
 *   ZERO       the guest wrote it first, and at the point in time it was a hole (nothing to
 *              copy: a hole only ever fills, so "hole now" at the first write means "hole then");
 *   DONE       the backup read it: later guest writes need no copy.
 * One mutex orders the two sides. The guest side (the device's before_write, on a vCPU thread
 * under the device lock) copies an UNTOUCHED block before its write lands; the backup side
 * reads a block under the same mutex, so a guest write of that block waits for one local block
 * read at most, never for the backup target. A copy that does not fit in the limit marks the
 * snapshot failed and stops copy-before-write: the guest write goes on, the backup fails. */
#include "backup/disk_snapshot.h"
#include "backup/fleece_area.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/checked_open.h"
#include "engine/common/limits.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/virtio_blk.h"
#include "engine/vm/vm.h"

#define FLEECE_BLOCK (64u << 10)

enum { UNTOUCHED = GW_FLEECE_UNTOUCHED, COPIED = GW_FLEECE_COPIED, ZERO = GW_FLEECE_ZERO, DONE = GW_FLEECE_DONE };

struct fleece {
    struct gw_disk_snapshot s;
    struct gw_vm *vm;
    int img_fd;
    struct gw_fleece_area a;     /* blocks, their states, the fleecing file */
    pthread_mutex_t m;
    bool active, hooked;
    int failed;                  /* -errno once the snapshot is lost; the reason in s.err */
};

static struct fleece *from_s(struct gw_disk_snapshot *s) { return (struct fleece *)s; }

/* True when [off, off+len) of the image is a hole now (reads as zeros, holds no data). */
static bool is_hole(int fd, uint64_t off, uint64_t len)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0) return errno == ENXIO;   /* no data after off */
    return (uint64_t)d >= off + len;
}

/* The image's old data of a block the guest is about to overwrite (gw_fleece_read_old_fn): a
 * hole now was a hole at the point in time (a hole only ever fills). */
static int read_old(void *ctx, uint64_t off, uint64_t len, uint8_t *buf)
{
    struct fleece *f = ctx;
    if (is_hole(f->img_fd, off, len)) return 1;
    return gw_pread_full(f->img_fd, buf, len, (off_t)off);
}

/* Guest side, under the device lock: copy the old blocks of [off, off+len) first. */
static void before_write(void *ctx, uint64_t off, uint64_t len)
{
    struct fleece *f = ctx;
    uint64_t t0 = gw_now_ns();
    pthread_mutex_lock(&f->m);
    char why[sizeof f->s.err];
    int r = f->active ? gw_fleece_area_copy(&f->a, off, len, read_old, f, ": the guest overwrote more of its disk than "
                                            "the backup had read; raise --fleece-limit or let the backup read faster",
                                            why, sizeof why) : 0;
    if (r && !f->failed) {
        f->failed = r;
        f->active = false;
        snprintf(f->s.err, sizeof f->s.err, "%s", why);
        gw_warn("vm %s: backup disk snapshot lost: %s (the guest keeps writing)", f->vm->name, f->s.err);
    }
    pthread_mutex_unlock(&f->m);
    gw_fleece_area_waited(&f->a, gw_now_ns() - t0);   /* guest side only, under the device lock */
}

static int fleece_freeze(struct gw_disk_snapshot *s)
{
    struct fleece *f = from_s(s);
    f->active = true;   /* no vCPU runs: no write is in flight, none starts before the hook is in */
    struct gw_blk_write_hook h = {.before_write = before_write, .ctx = f};
    int r = gw_vm_disk_set_write_hook(f->vm, &h);
    if (r) { f->active = false; snprintf(s->err, sizeof s->err, "cannot start copy-before-write: %s", strerror(-r)); return r; }
    f->hooked = true;
    return 0;
}

static int fleece_read(struct gw_disk_snapshot *s, uint64_t off, uint64_t len, uint8_t *buf, bool *hole)
{
    struct fleece *f = from_s(s);
    *hole = true;
    const uint64_t bs = f->a.bs;
    uint8_t *state = f->a.state;
    if (off % bs || !gw_range_ok(off, len, s->size) || (len % bs && off + len != s->size)) {
        snprintf(s->err, sizeof s->err, "disk read [%llu, +%llu) not on block boundaries", (unsigned long long)off,
                 (unsigned long long)len);
        return -EINVAL;
    }
    int r = 0;
    /* A whole range that is a hole and has no copied block: nothing to read at all (large
     * sparse images cost one lseek per chunk). */
    uint64_t b0 = off / bs, b1 = (off + len + bs - 1) / bs;
    pthread_mutex_lock(&f->m);
    bool all_hole = !f->failed && f->hooked;
    for (uint64_t i = b0; all_hole && i < b1; i++) all_hole = state[i] == UNTOUCHED || state[i] == ZERO;
    if (all_hole && is_hole(f->img_fd, off, len)) {
        for (uint64_t i = b0; i < b1; i++) state[i] = DONE;
        pthread_mutex_unlock(&f->m);
        return 0;
    }
    pthread_mutex_unlock(&f->m);
    for (uint64_t i = b0; !r && i < b1; i++) {
        uint8_t *p = buf + (i * bs - off);
        uint64_t bl = gw_fleece_area_block_len(&f->a, i);
        pthread_mutex_lock(&f->m);
        if (f->failed) r = f->failed;
        else if (!f->hooked) { snprintf(s->err, sizeof s->err, "disk snapshot read before its point in time"); r = -EINVAL; }
        else if (state[i] == DONE) { snprintf(s->err, sizeof s->err, "disk block %llu read twice", (unsigned long long)i); r = -EINVAL; }
        else if (state[i] == COPIED) {
            r = gw_fleece_area_read(&f->a, i, p);
            if (r) snprintf(s->err, sizeof s->err, "reading the fleecing file: %s", strerror(-r));
            *hole = false;
        } else if (state[i] == ZERO || is_hole(f->img_fd, i * bs, bl)) {
            memset(p, 0, bl);
        } else {
            r = gw_pread_full(f->img_fd, p, bl, (off_t)(i * bs));
            if (r) snprintf(s->err, sizeof s->err, "reading the disk image: %s", strerror(-r));
            *hole = false;
        }
        if (!r) state[i] = DONE;
        pthread_mutex_unlock(&f->m);
    }
    return r;
}

static void fleece_skip(struct gw_disk_snapshot *s, uint64_t off, uint64_t len)
{
    struct fleece *f = from_s(s);
    pthread_mutex_lock(&f->m);
    for (uint64_t i = off / f->a.bs; i * f->a.bs < off + len && i < f->a.nblocks; i++) f->a.state[i] = DONE;
    pthread_mutex_unlock(&f->m);
}

static void fleece_close(struct gw_disk_snapshot *s, struct gw_disk_snapshot_stats *st)
{
    if (!s) return;
    struct fleece *f = from_s(s);
    if (f->hooked) {
        struct gw_blk_write_hook none = {0};
        gw_vm_disk_set_write_hook(f->vm, &none);   /* after this no guest write calls us */
    }
    if (st) {
        *st = (struct gw_disk_snapshot_stats){.blocks_copied = f->a.copied, .fleece_bytes = f->a.used,
                                              .fleece_limit = f->a.limit, .guest_wait_ns_max = f->a.wait_max,
                                              .guest_wait_ns_total = f->a.wait_total};
    }
    if (f->img_fd >= 0) close(f->img_fd);
    gw_fleece_area_free(&f->a);
    pthread_mutex_destroy(&f->m);
    free(f);
}

static const struct gw_disk_snapshot_ops fleece_ops = {
    .freeze = fleece_freeze,
    .read = fleece_read,
    .skip = fleece_skip,
    .close = fleece_close,
};

/* An unnamed file in dir: nothing is left behind when the runner dies. */
int gw_disk_fleece_file(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd < 0 ? -errno : fd;
    char path[4200];
    snprintf(path, sizeof path, "%s/fleece.XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) return -errno;
    unlink(path);
    return fd;
}

int gw_disk_fleece_geometry(uint64_t size, const struct gw_disk_snapshot_params *p, uint64_t *limit, uint64_t *bs,
                            uint64_t *align, char *err, size_t errlen)
{
    *limit = p->fleece_limit ? p->fleece_limit : GW_LIMIT_FLEECE_DEFAULT;
    if (*limit < GW_LIMIT_FLEECE_MIN || *limit > GW_LIMIT_FLEECE_MAX) {
        snprintf(err, errlen, "fleece limit must be %llu KiB..%llu GiB", GW_LIMIT_FLEECE_MIN >> 10, GW_LIMIT_FLEECE_MAX >> 30);
        return -EINVAL;
    }
    *bs = FLEECE_BLOCK;
    while ((size + *bs - 1) / *bs > GW_LIMIT_FLEECE_BLOCKS_MAX) *bs *= 2;
    *align = p->align ? p->align : *bs;
    if (*bs > *align) {
        snprintf(err, errlen, "a disk of %llu GiB needs a chunk size of at least %llu KiB", (unsigned long long)(size >> 30),
                 (unsigned long long)(*bs >> 10));
        return -EINVAL;
    }
    if (*align % *bs) *bs = *align;   /* a non-power-of-two chunk: one block per chunk */
    return 0;
}

int gw_disk_fleece_open(struct gw_vm *vm, const char *path, uint64_t size, const struct gw_disk_snapshot_params *p,
                        struct gw_disk_snapshot **out, char *err, size_t errlen)
{
    *out = NULL;
    uint64_t limit, bs, align;
    int r = gw_disk_fleece_geometry(size, p, &limit, &bs, &align, err, errlen);
    if (r) return r;
    struct fleece *f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    f->s.ops = &fleece_ops;
    f->s.size = size;
    f->s.align = align;
    f->vm = vm;
    f->img_fd = -1;
    f->a.fd = -1;
    pthread_mutex_init(&f->m, NULL);
    /* Our own descriptor of the image: reads share the page cache with the device's. */
    f->img_fd = gw_checked_open(path, O_RDONLY, 0);
    if (f->img_fd < 0) {
        r = f->img_fd;
        f->img_fd = -1;
        snprintf(err, errlen, "cannot read the disk image %s: %s", path, strerror(-r));
        goto fail;
    }
    r = gw_fleece_area_init(&f->a, size, bs, limit, p->fleece_dir && *p->fleece_dir ? p->fleece_dir : "/tmp", err, errlen);
    if (r) goto fail;
    *out = &f->s;
    return 0;
fail:
    fleece_close(&f->s, NULL);
    return r;
}
