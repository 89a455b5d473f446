/* Block backends: where the virtio disk's sectors live. One small ops table, two backends
 * chosen by the disk spec in one place (gw_blk_open):
 *   a raw image file ("/path/disk.img", blk_file.c): pread/pwrite, an OFD lock for one writer;
 *   an RBD image ("rbd:POOL/IMAGE[:conf=PATH][:id=NAME][:keyring=PATH]", blk_rbd.c): librbd,
 *     RBD's exclusive lock held in managed mode for one writer across hosts.
 *
 * Contract for every backend:
 *  - size is fixed at open, a non-zero multiple of GW_BLK_SECTOR; every I/O is checked
 *    against it here (gw_blk_range_ok) before it reaches the backend, so a backend never
 *    sees a request past the end.
 *  - submit runs a batch of independent reads and writes and returns only when every one
 *    has finished (each with its own rc): nothing is ever in flight between calls, so a
 *    caller that serves requests synchronously stays synchronous. A backend may run the
 *    batch concurrently (RBD: aio), so the caller must not put two I/Os that overlap, or a
 *    flush, into one batch.
 *  - lock(on) takes or drops the exclusive write lock; -EAGAIN while another holder has it.
 *    A backend whose lock another holder took refuses writes (RBD: -EROFS).
 *  - Errors are -errno. -ETIMEDOUT (RBD) means the cluster did not answer in time: the
 *    outcome of a write is unknown.
 * Thread-safety: one caller at a time per handle (the device lock). */
#ifndef GW_VM_BLK_BACKEND_H
#define GW_VM_BLK_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define GW_BLK_SECTOR 512u
#define GW_BLK_DESC_MAX 320u        /* "rbd:pool/image@snap" or the path, for messages */
#define GW_BLK_BATCH_MAX 32u        /* I/Os in one submit */
#define GW_BLK_IOV_MAX 256u         /* buffers in one I/O (a virtqueue's longest chain) */

struct gw_blk;

/* One read or write of iov[0..niov) (lengths sum to len) at byte offset off. */
struct gw_blk_io {
    bool write;
    uint64_t off, len;
    const struct iovec *iov;
    unsigned niov;
    int rc;                         /* set by submit: 0 or -errno */
};

struct gw_blk_ops {
    /* Runs ios[0..n) (n <= GW_BLK_BATCH_MAX, checked and non-overlapping); returns when all
     * are done. Returns 0 (each io's rc says how it went) or -errno if none could start. */
    int (*submit)(struct gw_blk *b, struct gw_blk_io *ios, unsigned n);
    int (*flush)(struct gw_blk *b);
    int (*lock)(struct gw_blk *b, bool on);
    void (*close)(struct gw_blk *b);
};

struct gw_blk {
    const struct gw_blk_ops *ops;
    uint64_t size;                  /* bytes */
    bool read_only;
    char desc[GW_BLK_DESC_MAX];     /* what the operator named, for messages */
};

/* Opens the disk named by spec (a path, or rbd:...) for reading and writing (read_only:
 * reading only; no lock is ever taken then). The lock is not taken here. On success *out
 * owns the handle (release with gw_blk_close). 0 or -errno with the reason in err. */
int gw_blk_open(const char *spec, bool read_only, struct gw_blk **out, char *err, size_t errlen);
static inline void gw_blk_close(struct gw_blk *b) { if (b) b->ops->close(b); }

/* Whether spec names an RBD image (starts with "rbd:"). */
bool gw_blk_is_rbd(const char *spec);

/* Whether [off, off+len) is whole sectors inside b. */
bool gw_blk_range_ok(const struct gw_blk *b, uint64_t off, uint64_t len);

/* One synchronous read or write of a flat buffer (bounds-checked). 0 or -errno. */
int gw_blk_rw(struct gw_blk *b, bool write, void *buf, uint64_t len, uint64_t off);

/* The backends (gw_blk_open chooses). */
int gw_blk_file_open(const char *path, bool read_only, struct gw_blk **out, char *err, size_t errlen);
int gw_blk_rbd_open(const char *spec, bool read_only, struct gw_blk **out, char *err, size_t errlen);

#endif
