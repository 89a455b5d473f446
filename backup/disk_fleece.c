/* The disk's point in time by copy-before-write into a local fleecing file (disk_snapshot.h).
 *
 * The disk is cut into blocks (64 KiB, larger for very large disks, never larger than the
 * backup's chunk so a read never splits one). Each block is in one state:
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

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/limits.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/virtio_blk.h"
#include "engine/vm/vm.h"

#define FLEECE_BLOCK (64u << 10)

enum { UNTOUCHED = 0, COPIED, ZERO, DONE };

struct fleece {
    struct gw_disk_snapshot s;
    struct gw_vm *vm;
    int img_fd, fl_fd;
    uint64_t bs, nblocks;
    uint8_t *state;
    uint32_t *slot;
    uint8_t *scratch;            /* one block, guest side */
    pthread_mutex_t m;
    bool active, hooked;
    int failed;                  /* -errno once the snapshot is lost; the reason in s.err */
    uint64_t used, limit, copied, wait_max, wait_total;
};

static struct fleece *from_s(struct gw_disk_snapshot *s) { return (struct fleece *)s; }

static uint64_t block_len(const struct fleece *f, uint64_t i)
{
    uint64_t off = i * f->bs;
    return f->s.size - off < f->bs ? f->s.size - off : f->bs;
}

/* True when [off, off+len) of the image is a hole now (reads as zeros, holds no data). */
static bool is_hole(int fd, uint64_t off, uint64_t len)
{
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0) return errno == ENXIO;   /* no data after off */
    return (uint64_t)d >= off + len;
}

static void lose(struct fleece *f, int rc, const char *fmt, unsigned long long a, const char *b)
{
    if (f->failed) return;
    f->failed = rc;
    f->active = false;
    snprintf(f->s.err, sizeof f->s.err, fmt, a, b);
    gw_warn("vm %s: backup disk snapshot lost: %s (the guest keeps writing)", f->vm->name, f->s.err);
}

/* Guest side, under the device lock: copy the old blocks of [off, off+len) first. */
static void before_write(void *ctx, uint64_t off, uint64_t len)
{
    struct fleece *f = ctx;
    uint64_t t0 = gw_now_ns();
    pthread_mutex_lock(&f->m);
    for (uint64_t i = off / f->bs; f->active && i <= (off + len - 1) / f->bs && i < f->nblocks; i++) {
        if (f->state[i] != UNTOUCHED) continue;
        uint64_t bl = block_len(f, i);
        if (is_hole(f->img_fd, i * f->bs, bl)) { f->state[i] = ZERO; continue; }
        if (f->used + bl > f->limit) {
            lose(f, -ENOSPC, "fleecing area full (%llu MiB): the guest overwrote more of its disk than the backup "
                 "had read%s; raise --fleece-limit or let the backup read faster", (unsigned long long)(f->limit >> 20), "");
            break;
        }
        int r = gw_pread_full(f->img_fd, f->scratch, bl, (off_t)(i * f->bs));
        if (!r) r = gw_pwrite_full(f->fl_fd, f->scratch, bl, (off_t)f->used);
        if (r) { lose(f, r, "copy-before-write of disk block %llu failed: %s", (unsigned long long)i, strerror(-r)); break; }
        f->slot[i] = (uint32_t)(f->used / f->bs);
        f->used += f->bs;
        f->state[i] = COPIED;
        f->copied++;
    }
    pthread_mutex_unlock(&f->m);
    uint64_t waited = gw_now_ns() - t0;
    f->wait_total += waited;                  /* guest side only, under the device lock */
    if (waited > f->wait_max) f->wait_max = waited;
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
    if (off % f->bs || !gw_range_ok(off, len, s->size) || (len % f->bs && off + len != s->size)) {
        snprintf(s->err, sizeof s->err, "disk read [%llu, +%llu) not on block boundaries", (unsigned long long)off,
                 (unsigned long long)len);
        return -EINVAL;
    }
    int r = 0;
    /* A whole range that is a hole and has no copied block: nothing to read at all (large
     * sparse images cost one lseek per chunk). */
    uint64_t b0 = off / f->bs, b1 = (off + len + f->bs - 1) / f->bs;
    pthread_mutex_lock(&f->m);
    bool all_hole = !f->failed && f->hooked;
    for (uint64_t i = b0; all_hole && i < b1; i++) all_hole = f->state[i] == UNTOUCHED || f->state[i] == ZERO;
    if (all_hole && is_hole(f->img_fd, off, len)) {
        for (uint64_t i = b0; i < b1; i++) f->state[i] = DONE;
        pthread_mutex_unlock(&f->m);
        return 0;
    }
    pthread_mutex_unlock(&f->m);
    for (uint64_t i = b0; !r && i < b1; i++) {
        uint8_t *p = buf + (i * f->bs - off);
        uint64_t bl = block_len(f, i);
        pthread_mutex_lock(&f->m);
        if (f->failed) r = f->failed;
        else if (!f->hooked) { snprintf(s->err, sizeof s->err, "disk snapshot read before its point in time"); r = -EINVAL; }
        else if (f->state[i] == DONE) { snprintf(s->err, sizeof s->err, "disk block %llu read twice", (unsigned long long)i); r = -EINVAL; }
        else if (f->state[i] == COPIED) {
            r = gw_pread_full(f->fl_fd, p, bl, (off_t)((uint64_t)f->slot[i] * f->bs));
            if (r) snprintf(s->err, sizeof s->err, "reading the fleecing file: %s", strerror(-r));
            *hole = false;
        } else if (f->state[i] == ZERO || is_hole(f->img_fd, i * f->bs, bl)) {
            memset(p, 0, bl);
        } else {
            r = gw_pread_full(f->img_fd, p, bl, (off_t)(i * f->bs));
            if (r) snprintf(s->err, sizeof s->err, "reading the disk image: %s", strerror(-r));
            *hole = false;
        }
        if (!r) f->state[i] = DONE;
        pthread_mutex_unlock(&f->m);
    }
    return r;
}

static void fleece_skip(struct gw_disk_snapshot *s, uint64_t off, uint64_t len)
{
    struct fleece *f = from_s(s);
    pthread_mutex_lock(&f->m);
    for (uint64_t i = off / f->bs; i * f->bs < off + len && i < f->nblocks; i++) f->state[i] = DONE;
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
        *st = (struct gw_disk_snapshot_stats){.blocks_copied = f->copied, .fleece_bytes = f->used,
                                              .fleece_limit = f->limit, .guest_wait_ns_max = f->wait_max,
                                              .guest_wait_ns_total = f->wait_total};
    }
    if (f->img_fd >= 0) close(f->img_fd);
    if (f->fl_fd >= 0) close(f->fl_fd);   /* the file was never linked, or unlinked at once */
    pthread_mutex_destroy(&f->m);
    free(f->state);
    free(f->slot);
    free(f->scratch);
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
    f->bs = bs;
    f->limit = limit;
    f->nblocks = (size + bs - 1) / bs;
    f->img_fd = f->fl_fd = -1;
    pthread_mutex_init(&f->m, NULL);
    f->state = calloc(f->nblocks ? f->nblocks : 1, 1);
    f->slot = calloc(f->nblocks ? f->nblocks : 1, sizeof *f->slot);
    f->scratch = malloc(bs);
    if (!f->state || !f->slot || !f->scratch) { r = -ENOMEM; snprintf(err, errlen, "out of memory"); goto fail; }
    /* Our own descriptor of the image: reads share the page cache with the device's. */
    f->img_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f->img_fd < 0) { r = -errno; snprintf(err, errlen, "cannot read the disk image %s: %s", path, strerror(-r)); goto fail; }
    const char *dir = p->fleece_dir && *p->fleece_dir ? p->fleece_dir : "/tmp";
    f->fl_fd = gw_disk_fleece_file(dir);
    if (f->fl_fd < 0) { r = f->fl_fd; snprintf(err, errlen, "cannot create the fleecing file in %s: %s", dir, strerror(-r)); goto fail; }
    *out = &f->s;
    return 0;
fail:
    fleece_close(&f->s, NULL);
    return r;
}
