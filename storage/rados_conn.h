/* One way to open a librados handle with bounded waits, for every user of Ceph (the chunk
 * store, the cluster registry). librados waits forever by default (a one-OSD cluster never
 * marks its OSD down), so the handle gets client_mount_timeout, rados_mon_op_timeout and
 * rados_osd_op_timeout, and objecter_timeout below the op timeout with a 1 s objecter tick
 * (without those, every op after an OSD comes back keeps timing out; docs/storage.md). The
 * values are set with rados_conf_set after the conf file is read, so a ceph.conf cannot lift
 * them. */
#ifndef GW_STORAGE_RADOS_CONN_H
#define GW_STORAGE_RADOS_CONN_H

#include <rados/librados.h>
#include <stddef.h>

struct gw_rados_conn {
    const char *desc;             /* "rados:pool/ns", the prefix of every message */
    const char *ceph_conf;        /* NULL: librados' default search */
    const char *ceph_id;          /* NULL or "": "admin" */
    const char *keyring;          /* NULL: from ceph.conf */
    unsigned mount_timeout_s, mon_op_timeout_s, osd_op_timeout_s;   /* all > 0 */
};

/* Creates, configures and connects a handle (*out, the caller's: rados_shutdown). Returns 0,
 * or -errno with a one-line reason in err (nothing to free then). Blocks at most about
 * mount_timeout_s. */
int gw_rados_connect(const struct gw_rados_conn *p, rados_t *out, char *err, size_t errlen);

#endif
