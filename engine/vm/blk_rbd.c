/* The RBD block backend (see blk_backend.h and blk_rbd.h), through librbd's C API.
 *
 * One writer: the image's exclusive-lock feature, taken with rbd_lock_acquire, which holds it
 * in "managed" mode: librbd then never hands it to a peer that asks for it, and a peer's
 * writes and lock requests fail at once with -EROFS (instead of the default cooperative mode,
 * where two writers would pass the lock back and forth on every write). A writable handle
 * that does not hold the lock refuses writes itself, so that a migration's destination
 * (which takes the lock only at GO) never makes librbd fetch the lock from the source.
 *
 * I/O: a batch (blk_backend.h) is submitted as one aio op per request (readv/writev straight
 * from the guest's buffers), then waited for in full. A virtio-blk driver puts several
 * requests in one kick; running them together costs one cluster round trip, not one each.
 *
 * Bounds: librados waits forever by default; the connection sets client_mount_timeout,
 * rados_mon_op_timeout and rados_osd_op_timeout (with objecter_timeout below it and a 1 s
 * objecter tick, as storage/store_rados.c does, or ops after an OSD returns keep timing out). */
#include "engine/vm/blk_rbd.h"

#include <errno.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct blk_rbd {
    struct gw_blk b;
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t img;
    bool locked;              /* we hold the exclusive lock (managed) */
};

static const struct gw_blk_ops rbd_ops;

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

/* Copies [s, s+len) into out (cap bytes) if it is a valid name. */
static bool take_name(const char *s, size_t len, char *out, size_t cap)
{
    if (len == 0 || len >= cap || len > GW_RBD_NAME_MAX || s[0] == '.') return false;
    for (size_t i = 0; i < len; i++)
        if (!name_char(s[i])) return false;
    memcpy(out, s, len);
    out[len] = 0;
    return true;
}

bool gw_rbd_snap_name_ok(const char *name)
{
    char tmp[GW_RBD_SNAP_MAX + 1];
    return name && take_name(name, strlen(name), tmp, sizeof tmp);
}

static bool take_path(const char *s, size_t len, char *out, size_t cap)
{
    if (len == 0 || len >= cap || s[0] != '/') return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20) return false;
    memcpy(out, s, len);
    out[len] = 0;
    return true;
}

int gw_rbd_spec_parse(const char *spec, struct gw_rbd_spec *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (!spec || strncmp(spec, "rbd:", 4)) { snprintf(err, errlen, "not an RBD disk spec (rbd:POOL/IMAGE)"); return -EINVAL; }
    const char *p = spec + 4, *end = p + strcspn(p, ":"), *slash = memchr(p, '/', (size_t)(end - p));
    if (!slash || !take_name(p, (size_t)(slash - p), o->pool, sizeof o->pool) ||
        !take_name(slash + 1, (size_t)(end - slash - 1), o->image, sizeof o->image)) {
        snprintf(err, errlen, "rbd disk '%.60s': want rbd:POOL/IMAGE, names of 1..%u characters [A-Za-z0-9._-]",
                 spec, GW_RBD_NAME_MAX);
        return -EINVAL;
    }
    while (*end == ':') {
        const char *opt = end + 1, *eq = strchr(opt, '=');
        end = opt + strcspn(opt, ":");
        bool ok = eq && eq < end;
        size_t vlen = ok ? (size_t)(end - eq - 1) : 0;
        if (ok && !strncmp(opt, "conf=", 5)) ok = take_path(eq + 1, vlen, o->conf, sizeof o->conf);
        else if (ok && !strncmp(opt, "keyring=", 8)) ok = take_path(eq + 1, vlen, o->keyring, sizeof o->keyring);
        else if (ok && !strncmp(opt, "id=", 3)) ok = take_name(eq + 1, vlen, o->id, sizeof o->id);
        else ok = false;
        if (!ok) {
            snprintf(err, errlen, "rbd disk '%.60s': bad option '%.*s' (conf=/PATH, keyring=/PATH, id=NAME)", spec,
                     (int)(end - opt > 40 ? 40 : end - opt), opt);
            return -EINVAL;
        }
    }
    return 0;
}

static int set_u(rados_t c, const char *key, unsigned v)
{
    char b[32];
    snprintf(b, sizeof b, "%u", v);
    return rados_conf_set(c, key, b);
}

/* Connects to the cluster of s and opens its pool into d. 0 or -errno with err set. */
static int connect_pool(struct blk_rbd *d, const struct gw_rbd_spec *s, char *err, size_t errlen)
{
    char user[GW_RBD_NAME_MAX + 8];
    snprintf(user, sizeof user, "client.%s", s->id[0] ? s->id : "admin");
    int r = rados_create2(&d->cluster, "ceph", user, 0);
    if (r < 0) { d->cluster = NULL; snprintf(err, errlen, "%s: cannot create a librados handle: %s", d->b.desc, strerror(-r)); return r; }
    r = rados_conf_read_file(d->cluster, s->conf[0] ? s->conf : NULL);
    if (r < 0) { snprintf(err, errlen, "%s: cannot read %s: %s", d->b.desc, s->conf[0] ? s->conf : "ceph.conf", strerror(-r)); return r; }
    if (s->keyring[0] && (r = rados_conf_set(d->cluster, "keyring", s->keyring)) < 0) {
        snprintf(err, errlen, "%s: keyring %s: %s", d->b.desc, s->keyring, strerror(-r));
        return r;
    }
    /* A client never writes Ceph's admin socket next to the cluster's. */
    rados_conf_set(d->cluster, "admin_socket", "");
    unsigned osd = GW_RBD_OSD_OP_TIMEOUT_S;
    if ((r = set_u(d->cluster, "client_mount_timeout", GW_RBD_MOUNT_TIMEOUT_S)) < 0 ||
        (r = set_u(d->cluster, "rados_mon_op_timeout", GW_RBD_MOUNT_TIMEOUT_S)) < 0 ||
        (r = set_u(d->cluster, "rados_osd_op_timeout", osd)) < 0 ||
        (r = set_u(d->cluster, "objecter_timeout", osd > 2 ? osd - 1 : 1)) < 0 ||
        (r = set_u(d->cluster, "objecter_tick_interval", 1)) < 0) {
        snprintf(err, errlen, "%s: setting timeouts: %s", d->b.desc, strerror(-r));
        return r;
    }
    r = rados_connect(d->cluster);
    if (r < 0) {
        snprintf(err, errlen, "%s: cannot connect to the Ceph cluster within %u s: %s", d->b.desc,
                 GW_RBD_MOUNT_TIMEOUT_S, strerror(-r));
        return r;
    }
    r = rados_ioctx_create(d->cluster, s->pool, &d->io);
    if (r < 0) {
        d->io = NULL;
        snprintf(err, errlen, "%s: pool %s: %s", d->b.desc, s->pool, r == -ENOENT ? "no such pool" : strerror(-r));
    }
    return r;
}

static void rbd_close_blk(struct gw_blk *b)
{
    struct blk_rbd *d = (struct blk_rbd *)b;
    if (d->img) rbd_close(d->img);   /* drops the lock too */
    if (d->io) rados_ioctx_destroy(d->io);
    if (d->cluster) rados_shutdown(d->cluster);
    free(d);
}

/* Opens the image of spec (at snapshot snap, read-only, when snap is set). */
static int open_image(const char *spec, bool read_only, const char *snap, struct blk_rbd **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    struct gw_rbd_spec s;
    int r = gw_rbd_spec_parse(spec, &s, err, errlen);
    if (r) return r;
    struct blk_rbd *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    d->b.ops = &rbd_ops;
    d->b.read_only = read_only || snap;
    snprintf(d->b.desc, sizeof d->b.desc, "rbd:%s/%s%s%s", s.pool, s.image, snap ? "@" : "", snap ? snap : "");
    r = connect_pool(d, &s, err, errlen);
    if (r) goto fail;
    r = d->b.read_only ? rbd_open_read_only(d->io, s.image, &d->img, snap) : rbd_open(d->io, s.image, &d->img, NULL);
    if (r < 0) {
        d->img = NULL;
        snprintf(err, errlen, "%s: cannot open the image: %s", d->b.desc, r == -ENOENT ? "no such image or snapshot" : strerror(-r));
        goto fail;
    }
    uint64_t size = 0, features = 0;
    if ((r = rbd_get_size(d->img, &size)) < 0 || (r = rbd_get_features(d->img, &features)) < 0) {
        snprintf(err, errlen, "%s: cannot read the image header: %s", d->b.desc, strerror(-r));
        goto fail;
    }
    if (size == 0 || size % GW_BLK_SECTOR) {
        snprintf(err, errlen, "%s: image is %llu bytes, not a non-zero multiple of %u", d->b.desc,
                 (unsigned long long)size, GW_BLK_SECTOR);
        r = -EINVAL;
        goto fail;
    }
    /* The lock is what keeps two hosts off one image: a writable image must have it. */
    if (!d->b.read_only && !(features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
        r = rbd_update_features(d->img, RBD_FEATURE_EXCLUSIVE_LOCK, 1);
        if (r < 0) {
            snprintf(err, errlen, "%s: the image lacks the exclusive-lock feature and enabling it failed: %s",
                     d->b.desc, strerror(-r));
            goto fail;
        }
        /* This handle learns of the new feature only on a later refresh: open it again. */
        rbd_close(d->img);
        r = rbd_open(d->io, s.image, &d->img, NULL);
        if (r < 0) { d->img = NULL; snprintf(err, errlen, "%s: cannot open the image again: %s", d->b.desc, strerror(-r)); goto fail; }
    }
    d->b.size = size;
    *out = d;
    return 0;
fail:
    rbd_close_blk(&d->b);
    return r;
}

int gw_blk_rbd_open(const char *spec, bool read_only, struct gw_blk **out, char *err, size_t errlen)
{
    struct blk_rbd *d;
    int r = open_image(spec, read_only, NULL, &d, err, errlen);
    *out = r ? NULL : &d->b;
    return r;
}

int gw_blk_rbd_open_snap(const char *spec, const char *snap, struct gw_blk **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!gw_rbd_snap_name_ok(snap)) { snprintf(err, errlen, "bad snapshot name"); return -EINVAL; }
    struct blk_rbd *d;
    int r = open_image(spec, true, snap, &d, err, errlen);
    if (!r) *out = &d->b;
    return r;
}

static int rbd_submit(struct gw_blk *b, struct gw_blk_io *ios, unsigned n)
{
    struct blk_rbd *d = (struct blk_rbd *)b;
    rbd_completion_t comp[GW_BLK_BATCH_MAX];
    if (n > GW_BLK_BATCH_MAX) return -EINVAL;
    for (unsigned i = 0; i < n; i++) {
        comp[i] = NULL;
        struct gw_blk_io *io = &ios[i];
        io->rc = 0;
        if (io->write && (b->read_only || !d->locked)) { io->rc = -EROFS; continue; }
        if (io->niov == 0 || io->niov > GW_BLK_IOV_MAX) { io->rc = -EINVAL; continue; }
        int r = rbd_aio_create_completion(NULL, NULL, &comp[i]);
        if (r < 0) { comp[i] = NULL; io->rc = r; continue; }
        r = io->write ? rbd_aio_writev(d->img, io->iov, (int)io->niov, io->off, comp[i])
                      : rbd_aio_readv(d->img, io->iov, (int)io->niov, io->off, comp[i]);
        if (r < 0) { rbd_aio_release(comp[i]); comp[i] = NULL; io->rc = r; }
    }
    for (unsigned i = 0; i < n; i++) {
        if (!comp[i]) continue;
        rbd_aio_wait_for_complete(comp[i]);
        ssize_t r = rbd_aio_get_return_value(comp[i]);
        rbd_aio_release(comp[i]);
        if (r < 0) ios[i].rc = (int)r;
        else if (!ios[i].write && (uint64_t)r != ios[i].len) ios[i].rc = -EIO;   /* a short read */
    }
    return 0;
}

static int rbd_flush_blk(struct gw_blk *b)
{
    return rbd_flush(((struct blk_rbd *)b)->img);
}

static int rbd_lock_blk(struct gw_blk *b, bool on)
{
    struct blk_rbd *d = (struct blk_rbd *)b;
    if (b->read_only) return -EROFS;
    if (!on) {
        if (!d->locked) return 0;
        /* Written data first: whoever takes the lock next reads what the guest wrote. */
        int r = rbd_flush(d->img);
        if (r < 0) return r;
        r = rbd_lock_release(d->img);
        d->locked = false;   /* on failure too: we write nothing more either way */
        return r < 0 && r != -EINVAL ? r : 0;
    }
    if (d->locked) return 0;
    int r = rbd_lock_acquire(d->img, RBD_LOCK_MODE_EXCLUSIVE);
    /* -EROFS: a peer holds it in managed mode; -EBUSY: a peer's lock is being taken over. */
    if (r == -EROFS || r == -EBUSY) return -EAGAIN;
    if (r < 0) return r;
    d->locked = true;
    return 0;
}

static const struct gw_blk_ops rbd_ops = {
    .submit = rbd_submit, .flush = rbd_flush_blk, .lock = rbd_lock_blk, .close = rbd_close_blk,
};

static struct blk_rbd *as_rbd(struct gw_blk *b)
{
    return b && b->ops == &rbd_ops ? (struct blk_rbd *)b : NULL;
}

/* A handle on spec's pool only (no image open), for whole-image operations; *s gets the
 * parsed spec. 0 or -errno with err set (nothing to close then). */
static int pool_handle(const char *spec, struct gw_rbd_spec *s, struct blk_rbd **out, char *err, size_t errlen)
{
    int r = gw_rbd_spec_parse(spec, s, err, errlen);
    if (r) return r;
    struct blk_rbd *d = calloc(1, sizeof *d);
    if (!d) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    d->b.ops = &rbd_ops;
    snprintf(d->b.desc, sizeof d->b.desc, "rbd:%s/%s", s->pool, s->image);
    if ((r = connect_pool(d, s, err, errlen))) { rbd_close_blk(&d->b); return r; }
    *out = d;
    return 0;
}

int gw_blk_rbd_create(const char *spec, uint64_t size, char *err, size_t errlen)
{
    if (size == 0 || size % GW_BLK_SECTOR) { snprintf(err, errlen, "%s: size %llu is not a non-zero multiple of %u", spec, (unsigned long long)size, GW_BLK_SECTOR); return -EINVAL; }
    struct gw_rbd_spec s;
    struct blk_rbd *d;
    int r = pool_handle(spec, &s, &d, err, errlen);
    if (r) return r;
    int order = 0;
    if ((r = rbd_create2(d->io, s.image, size, RBD_FEATURES_DEFAULT, &order)) < 0)
        snprintf(err, errlen, "%s: cannot create the image: %s", d->b.desc, r == -EEXIST ? "it exists already" : strerror(-r));
    rbd_close_blk(&d->b);
    return r < 0 ? r : 0;
}

int gw_blk_rbd_remove(const char *spec, char *err, size_t errlen)
{
    struct gw_rbd_spec s;
    struct blk_rbd *d;
    int r = pool_handle(spec, &s, &d, err, errlen);
    if (r) return r;
    if ((r = rbd_remove(d->io, s.image)) < 0)
        snprintf(err, errlen, "%s: cannot remove the image: %s", d->b.desc, strerror(-r));
    rbd_close_blk(&d->b);
    return r < 0 ? r : 0;
}

int gw_blk_rbd_snap_create(struct gw_blk *b, const char *snap)
{
    struct blk_rbd *d = as_rbd(b);
    if (!d || b->read_only || !gw_rbd_snap_name_ok(snap)) return -EINVAL;
    return rbd_snap_create(d->img, snap);
}

int gw_blk_rbd_snap_remove(struct gw_blk *b, const char *snap)
{
    struct blk_rbd *d = as_rbd(b);
    if (!d || b->read_only || !gw_rbd_snap_name_ok(snap)) return -EINVAL;
    return rbd_snap_remove(d->img, snap);
}

int gw_blk_rbd_snap_rename(struct gw_blk *b, const char *from, const char *to)
{
    struct blk_rbd *d = as_rbd(b);
    if (!d || b->read_only || !gw_rbd_snap_name_ok(from) || !gw_rbd_snap_name_ok(to)) return -EINVAL;
    return rbd_snap_rename(d->img, from, to);
}

int gw_blk_rbd_snap_exists(struct gw_blk *b, const char *snap)
{
    struct blk_rbd *d = as_rbd(b);
    if (!d || !gw_rbd_snap_name_ok(snap)) return -EINVAL;
    bool e = false;
    int r = rbd_snap_exists(d->img, snap, &e);
    return r < 0 ? r : e;
}

struct diff_ctx {
    int (*fn)(uint64_t, uint64_t, bool, void *);
    void *ctx;
    uint64_t size;
};

static int diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
    struct diff_ctx *c = arg;
    /* librbd's extents: still checked, the caller indexes its chunk table with them. */
    if (off > c->size || len > c->size - off) return -ERANGE;
    return len ? c->fn(off, len, exists != 0, c->ctx) : 0;
}

int gw_blk_rbd_diff(struct gw_blk *s, const char *from_snap,
                    int (*fn)(uint64_t off, uint64_t len, bool exists, void *ctx), void *ctx)
{
    struct blk_rbd *d = as_rbd(s);
    if (!d || !gw_rbd_snap_name_ok(from_snap)) return -EINVAL;
    struct diff_ctx c = {.fn = fn, .ctx = ctx, .size = s->size};
    /* whole_object: with fast-diff that reads the object map only, no object is listed. */
    return rbd_diff_iterate2(d->img, from_snap, 0, s->size, 1, 1, diff_cb, &c);
}
