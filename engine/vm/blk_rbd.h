/* The RBD block backend's own calls, beyond the ops table (blk_backend.h): creating an image,
 * snapshots and their diffs, for backups (backup/disk_rbd.c) and restores.
 *
 * Spec: rbd:POOL/IMAGE[:conf=PATH][:id=NAME][:keyring=PATH]
 *   POOL and IMAGE: 1..GW_RBD_NAME_MAX bytes of [A-Za-z0-9._-], not starting with '.';
 *   conf and keyring: absolute paths without ':' (default: Ceph's own search for ceph.conf);
 *   id: the cephx user without "client." (default admin).
 * Every librados/librbd wait is bounded: the monitor connect and monitor ops by
 * GW_RBD_MOUNT_TIMEOUT_S, each OSD op by GW_RBD_OSD_OP_TIMEOUT_S (then -ETIMEDOUT). */
#ifndef GW_VM_BLK_RBD_H
#define GW_VM_BLK_RBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/vm/blk_backend.h"

#define GW_RBD_NAME_MAX 96u
#define GW_RBD_PATH_MAX 255u
#define GW_RBD_SNAP_MAX 96u
#define GW_RBD_MOUNT_TIMEOUT_S 15u
#define GW_RBD_OSD_OP_TIMEOUT_S 30u

/* A parsed spec. */
struct gw_rbd_spec {
    char pool[GW_RBD_NAME_MAX + 1], image[GW_RBD_NAME_MAX + 1];
    char conf[GW_RBD_PATH_MAX + 1], keyring[GW_RBD_PATH_MAX + 1], id[GW_RBD_NAME_MAX + 1];
};

/* Parses and checks spec. 0 or -EINVAL with the reason in err. */
int gw_rbd_spec_parse(const char *spec, struct gw_rbd_spec *out, char *err, size_t errlen);

/* Creates the image spec names, of size bytes (a non-zero multiple of GW_BLK_SECTOR), with
 * the default features (exclusive-lock, object-map, fast-diff among them). -EEXIST when it
 * exists already. 0 or -errno with the reason in err. */
int gw_blk_rbd_create(const char *spec, uint64_t size, char *err, size_t errlen);
/* Removes the image spec names (a restore's own image that it could not fill: no snapshots,
 * nobody else opened it). 0, -ENOENT when missing, or -errno with the reason in err. */
int gw_blk_rbd_remove(const char *spec, char *err, size_t errlen);

/* Opens the snapshot snap of the image spec names, read-only. As gw_blk_open. */
int gw_blk_rbd_open_snap(const char *spec, const char *snap, struct gw_blk **out, char *err, size_t errlen);

/* Snapshots of the image b (an RBD handle from gw_blk_open, not read-only) has open. Names
 * are 1..GW_RBD_SNAP_MAX bytes of [A-Za-z0-9._-]. create: the image as it is now (librbd
 * flushes b's writes first); -EEXIST when the name is taken. remove: -ENOENT when missing.
 * exists: 1, 0, or -errno. -EINVAL when b is not an RBD handle. */
int gw_blk_rbd_snap_create(struct gw_blk *b, const char *snap);
int gw_blk_rbd_snap_remove(struct gw_blk *b, const char *snap);
int gw_blk_rbd_snap_rename(struct gw_blk *b, const char *from, const char *to);
int gw_blk_rbd_snap_exists(struct gw_blk *b, const char *snap);

/* Calls fn for each extent of the snapshot handle s (from gw_blk_rbd_open_snap) that may
 * differ from its older snapshot from_snap: [off, off+len), exists = 0 when the extent is
 * now a hole (reads as zeros). Extents lie inside s->size. A non-zero return of fn stops the
 * walk and is returned. 0 or -errno (-ENOENT when from_snap is gone). */
int gw_blk_rbd_diff(struct gw_blk *s, const char *from_snap,
                    int (*fn)(uint64_t off, uint64_t len, bool exists, void *ctx), void *ctx);

/* Whether name is a valid snapshot name. */
bool gw_rbd_snap_name_ok(const char *name);

#endif
