/* Choosing a block backend by the disk spec, and the checks every backend shares
 * (see blk_backend.h). */
#include "engine/vm/blk_backend.h"

#include <errno.h>
#include <string.h>

#include "engine/common/util.h"

bool gw_blk_is_rbd(const char *spec)
{
    return spec && !strncmp(spec, "rbd:", 4);
}

int gw_blk_open(const char *spec, bool read_only, struct gw_blk **out, char *err, size_t errlen)
{
    *out = NULL;
    if (gw_blk_is_rbd(spec)) return gw_blk_rbd_open(spec, read_only, out, err, errlen);
    return gw_blk_file_open(spec, read_only, out, err, errlen);
}

bool gw_blk_range_ok(const struct gw_blk *b, uint64_t off, uint64_t len)
{
    return off % GW_BLK_SECTOR == 0 && len % GW_BLK_SECTOR == 0 && gw_range_ok(off, len, b->size);
}

int gw_blk_rw(struct gw_blk *b, bool write, void *buf, uint64_t len, uint64_t off)
{
    if (!gw_blk_range_ok(b, off, len)) return -ERANGE;
    if (write && b->read_only) return -EROFS;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct gw_blk_io io = {.write = write, .off = off, .len = len, .iov = &iov, .niov = 1};
    int r = b->ops->submit(b, &io, 1);
    return r ? r : io.rc;
}
