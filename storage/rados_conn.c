/* Bounded librados connections (see rados_conn.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "storage/rados_conn.h"

static int set_u(rados_t c, const char *key, unsigned v)
{
    char b[32];
    snprintf(b, sizeof b, "%u", v);
    return rados_conf_set(c, key, b);
}

int gw_rados_connect(const struct gw_rados_conn *p, rados_t *out, char *err, size_t errlen)
{
    char user[128];
    rados_t c = NULL;
    snprintf(user, sizeof user, "client.%s", p->ceph_id && *p->ceph_id ? p->ceph_id : "admin");
    int r = rados_create2(&c, "ceph", user, 0);
    if (r < 0) { snprintf(err, errlen, "%s: cannot create a librados handle: %s", p->desc, strerror(-r)); return r; }
    r = rados_conf_read_file(c, p->ceph_conf);
    if (r < 0) {
        snprintf(err, errlen, "%s: cannot read %s: %s", p->desc, p->ceph_conf ? p->ceph_conf : "ceph.conf", strerror(-r));
        goto fail;
    }
    if (p->keyring && (r = rados_conf_set(c, "keyring", p->keyring)) < 0) {
        snprintf(err, errlen, "%s: keyring %s: %s", p->desc, p->keyring, strerror(-r));
        goto fail;
    }
    /* A client never writes Ceph's logs or admin socket next to the cluster's. */
    rados_conf_set(c, "admin_socket", "");
    unsigned objecter = p->osd_op_timeout_s > 2 ? p->osd_op_timeout_s - 1 : 1;
    if ((r = set_u(c, "client_mount_timeout", p->mount_timeout_s)) < 0 ||
        (r = set_u(c, "rados_mon_op_timeout", p->mon_op_timeout_s)) < 0 ||
        (r = set_u(c, "rados_osd_op_timeout", p->osd_op_timeout_s)) < 0 ||
        (r = set_u(c, "objecter_timeout", objecter)) < 0 || (r = set_u(c, "objecter_tick_interval", 1)) < 0) {
        snprintf(err, errlen, "%s: setting timeouts: %s", p->desc, strerror(-r));
        goto fail;
    }
    r = rados_connect(c);
    if (r < 0) {
        snprintf(err, errlen, "%s: cannot connect to the Ceph cluster within %u s: %s", p->desc, p->mount_timeout_s,
                 strerror(-r));
        goto fail;
    }
    *out = c;
    return 0;
fail:
    rados_shutdown(c);
    return r;
}
