/* RDMA WRITE of pages into the peer's registered memory (see rdma_mem.h). */
#include "engine/transport/rdma_mem.h"

#include <errno.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <rdma/rdma_verbs.h>
#include <stdlib.h>
#include <string.h>

/* rdma.c: the endpoint of an RDMA connection, NULL for any other back end. */
struct rdma_cm_id *gw_rdma_conn_id(struct gw_conn *c);

struct gw_rdma_mr {
    struct ibv_mr *mr;
    uint8_t *base;
    uint64_t len;
};

static struct rdma_cm_id *need_rdma(struct gw_conn *c, const char *what, struct gw_err *err)
{
    struct rdma_cm_id *id = gw_rdma_conn_id(c);
    if (!id) gw_err_set(err, -EOPNOTSUPP, "%s: %s needs an RDMA connection, this one is %s", c->peer, what,
                        c->ops->name);
    return id;
}

int gw_rdma_mem_register(struct gw_conn *c, void *mem, uint64_t len, bool remote_write, struct gw_rdma_mr **out,
                         struct gw_rdma_region *desc, struct gw_err *err)
{
    struct rdma_cm_id *id = need_rdma(c, "registering guest memory", err);
    if (!id) return -EOPNOTSUPP;
    if (!mem || !len) return gw_err_set(err, -EINVAL, "nothing to register");
    struct gw_rdma_mr *m = calloc(1, sizeof *m);
    if (!m) return gw_err_set(err, -ENOMEM, "out of memory");
    int access = IBV_ACCESS_LOCAL_WRITE | (remote_write ? IBV_ACCESS_REMOTE_WRITE : 0);
    m->mr = ibv_reg_mr(id->pd, mem, len, access);
    if (!m->mr) {
        int e = errno ? -errno : -EIO;
        free(m);
        return gw_err_set(err, e, "%s: cannot register %llu bytes of guest memory: %s", c->peer,
                          (unsigned long long)len, strerror(-e));
    }
    m->base = mem;
    m->len = len;
    if (desc) *desc = (struct gw_rdma_region){ .addr = (uint64_t)(uintptr_t)mem, .len = len, .rkey = m->mr->rkey };
    *out = m;
    return 0;
}

int gw_rdma_mem_write(struct gw_conn *c, struct gw_rdma_mr *local, uint64_t off, uint64_t len,
                      const struct gw_rdma_region *remote, uint64_t remote_off, struct gw_err *err)
{
    struct rdma_cm_id *id = need_rdma(c, "RDMA WRITE", err);
    if (!id) return -EOPNOTSUPP;
    if (off > local->len || len > local->len - off)
        return gw_err_set(err, -ERANGE, "RDMA WRITE of %llu bytes at %llu is outside the local region",
                          (unsigned long long)len, (unsigned long long)off);
    if (remote_off > remote->len || len > remote->len - remote_off)
        return gw_err_set(err, -ERANGE, "RDMA WRITE of %llu bytes at %llu is outside the peer's region of %llu",
                          (unsigned long long)len, (unsigned long long)remote_off, (unsigned long long)remote->len);
    if (rdma_post_write(id, NULL, local->base + off, len, local->mr, IBV_SEND_SIGNALED,
                        remote->addr + remote_off, remote->rkey))
        return gw_err_set(err, errno ? -errno : -EIO, "%s: cannot post an RDMA WRITE: %s", c->peer, strerror(errno));
    struct ibv_wc wc;
    if (rdma_get_send_comp(id, &wc) <= 0)
        return gw_err_set(err, -EIO, "%s: RDMA WRITE completion lost", c->peer);
    if (wc.status != IBV_WC_SUCCESS)
        return gw_err_set(err, -EIO, "%s: RDMA WRITE failed: %s", c->peer, ibv_wc_status_str(wc.status));
    return 0;
}

void gw_rdma_mem_deregister(struct gw_rdma_mr *m)
{
    if (!m) return;
    if (m->mr) ibv_dereg_mr(m->mr);
    free(m);
}
