/* The raw-file block backend (see blk_backend.h): the image is a regular file (or a block
 * device) read and written with pread/pwrite; one writer is enforced with an open file
 * description lock on the whole file, which is released at close and is not inherited by a
 * second open of the same file in this process. Requests run one after the other: the page
 * cache answers them at memory speed, so a batch gains nothing from concurrency here. */
#include "engine/common/checked_open.h"
#include "engine/vm/blk_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/util.h"

struct blk_file {
    struct gw_blk b;
    int fd;
};

static int file_io(struct blk_file *f, struct gw_blk_io *io)
{
    uint64_t off = io->off, left = io->len;
    for (unsigned i = 0; i < io->niov && left; i++) {
        size_t l = io->iov[i].iov_len < left ? io->iov[i].iov_len : (size_t)left;
        int r = io->write ? gw_pwrite_full(f->fd, io->iov[i].iov_base, l, (off_t)off)
                          : gw_pread_full(f->fd, io->iov[i].iov_base, l, (off_t)off);
        if (r) return r;
        off += l;
        left -= l;
    }
    return left ? -EINVAL : 0;
}

static int file_submit(struct gw_blk *b, struct gw_blk_io *ios, unsigned n)
{
    struct blk_file *f = (struct blk_file *)b;
    for (unsigned i = 0; i < n; i++)
        ios[i].rc = ios[i].write && b->read_only ? -EROFS : file_io(f, &ios[i]);
    return 0;
}

static int file_flush(struct gw_blk *b)
{
    return fdatasync(((struct blk_file *)b)->fd) < 0 ? -errno : 0;
}

static int file_lock(struct gw_blk *b, bool on)
{
    struct flock fl = {.l_type = on ? F_WRLCK : F_UNLCK, .l_whence = SEEK_SET};
    if (b->read_only) return -EROFS;
    if (fcntl(((struct blk_file *)b)->fd, F_OFD_SETLK, &fl) < 0) return errno == EACCES ? -EAGAIN : -errno;
    return 0;
}

static void file_close(struct gw_blk *b)
{
    struct blk_file *f = (struct blk_file *)b;
    if (f->fd >= 0) close(f->fd);
    free(f);
}

static const struct gw_blk_ops file_ops = {
    .submit = file_submit, .flush = file_flush, .lock = file_lock, .close = file_close,
};

int gw_blk_file_open(const char *path, bool read_only, struct gw_blk **out, char *err, size_t errlen)
{
    *out = NULL;
    struct blk_file *f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    f->b.ops = &file_ops;
    f->b.read_only = read_only;
    snprintf(f->b.desc, sizeof f->b.desc, "%s", path);
    /* Not through a symbolic link: the path checked by whoever named it is the file used
     * (under godwitd, no link anywhere on the way: checked_open.h). */
    f->fd = gw_checked_open(path, read_only ? O_RDONLY : O_RDWR, 0);
    int r = 0;
    if (f->fd < 0) {
        r = f->fd;
        f->fd = -1;
        snprintf(err, errlen, "cannot open image %s: %s", path, r == -ELOOP ? "it is a symbolic link" : strerror(-r));
        goto fail;
    }
    /* lseek rather than fstat so that a block device reports its size too. */
    off_t size = lseek(f->fd, 0, SEEK_END);
    if (size < 0) {
        r = -errno;
        snprintf(err, errlen, "cannot size image %s: %s", path, strerror(-r));
        goto fail;
    }
    if (size == 0 || size % GW_BLK_SECTOR) {
        snprintf(err, errlen, "image %s is %lld bytes, not a non-zero multiple of %u", path, (long long)size, GW_BLK_SECTOR);
        r = -EINVAL;
        goto fail;
    }
    f->b.size = (uint64_t)size;
    *out = &f->b;
    return 0;
fail:
    file_close(&f->b);
    return r;
}
