/* RDMA WRITE of pages into the peer's registered memory, and the record that names that
 * memory (see rdma_mem.h). Only the connection's verbs ops (rdma_verbs.h) touch the device:
 * every check here runs the same over the real verbs and over the test double. */
#include "engine/transport/rdma_mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"

struct gw_rdma_mr {
    struct gw_rdma_verbs v;   /* of the connection it was registered on */
    void *mr;
    uint8_t *base;
    uint64_t len;
};

static bool have_verbs(struct gw_conn *c, const char *what, struct gw_err *err)
{
    if (c->rdma.ops) return true;
    gw_err_set(err, -EOPNOTSUPP, "%s: %s needs an RDMA connection, this one is %s", c->peer, what, c->ops->name);
    return false;
}

int gw_rdma_mem_register(struct gw_conn *c, void *mem, uint64_t len, bool remote_write, struct gw_rdma_mr **out,
                         struct gw_rdma_region *desc, struct gw_err *err)
{
    if (!have_verbs(c, "registering guest memory", err)) return -EOPNOTSUPP;
    if (!mem || !len) return gw_err_set(err, -EINVAL, "nothing to register");
    struct gw_rdma_mr *m = calloc(1, sizeof *m);
    if (!m) return gw_err_set(err, -ENOMEM, "out of memory");
    uint32_t rkey = 0;
    int r = c->rdma.ops->reg_mem(c->rdma.dev, mem, len, remote_write, &m->mr, &rkey, err);
    if (r) {
        free(m);
        return r;
    }
    m->v = c->rdma;
    m->base = mem;
    m->len = len;
    if (desc) *desc = (struct gw_rdma_region){ .addr = (uint64_t)(uintptr_t)mem, .len = len, .rkey = rkey };
    *out = m;
    return 0;
}

/* Checks one WRITE against both regions and posts it as request wr_id. */
static int post_one(struct gw_conn *c, struct gw_rdma_mr *local, const struct gw_rdma_write *w, uint64_t wr_id,
                    struct gw_err *err)
{
    if (!local || w->off > local->len || w->len > local->len - w->off)
        return gw_err_set(err, -ERANGE, "RDMA WRITE of %llu bytes at %llu is outside the local region",
                          (unsigned long long)w->len, (unsigned long long)w->off);
    const struct gw_rdma_region *remote = w->remote;
    if (w->remote_off > remote->len || w->len > remote->len - w->remote_off)
        return gw_err_set(err, -ERANGE, "RDMA WRITE of %llu bytes at %llu is outside the peer's region of %llu",
                          (unsigned long long)w->len, (unsigned long long)w->remote_off,
                          (unsigned long long)remote->len);
    return c->rdma.ops->post_write(c->rdma.dev, local->mr, local->base + w->off, w->len,
                                   remote->addr + w->remote_off, remote->rkey, wr_id, err);
}

/* Waits for the completion of request want (requests complete in order on one queue pair). */
static int reap_one(struct gw_conn *c, uint64_t want, struct gw_err *err)
{
    uint64_t wr_id;
    int r = c->rdma.ops->poll_send(c->rdma.dev, &wr_id, err);
    if (!r && wr_id != want)
        r = gw_err_set(err, -EIO, "%s: RDMA WRITE completion for another request (%llu, wanted %llu)", c->peer,
                       (unsigned long long)wr_id, (unsigned long long)want);
    return r;
}

int gw_rdma_mem_write_list(struct gw_conn *c, struct gw_rdma_mr *local, const struct gw_rdma_write *w, unsigned n,
                           struct gw_err *err)
{
    if (!have_verbs(c, "RDMA WRITE", err)) return -EOPNOTSUPP;
    unsigned posted = 0, done = 0;
    int r = 0;
    while (done < n && !r) {
        while (!r && posted < n && posted - done < GW_RDMA_WRITES_IN_FLIGHT) {
            r = post_one(c, local, &w[posted], posted, err);
            if (!r) posted++;
        }
        if (!r && done < posted) r = reap_one(c, done++, err);
    }
    /* After a failure, what was posted still completes (with an error once the queue pair
     * broke): reap it so that no stale completion meets the next send. */
    struct gw_err ignore;
    while (done < posted) reap_one(c, done++, &ignore);
    return r;
}

int gw_rdma_mem_write(struct gw_conn *c, struct gw_rdma_mr *local, uint64_t off, uint64_t len,
                      const struct gw_rdma_region *remote, uint64_t remote_off, struct gw_err *err)
{
    struct gw_rdma_write w = { .off = off, .len = len, .remote = remote, .remote_off = remote_off };
    return gw_rdma_mem_write_list(c, local, &w, 1, err);
}

void gw_rdma_mem_deregister(struct gw_rdma_mr *m)
{
    if (!m) return;
    if (m->mr) m->v.ops->dereg_mem(m->v.dev, m->mr);
    free(m);
}

int gw_rdma_regions_pack(const struct gw_rdma_peer_region *v, unsigned n, uint8_t **out, size_t *len)
{
    if (n == 0 || n > GW_WIRE_MAX_RDMA_REGIONS) return -EINVAL;
    Godwit__V1__MigRdmaRegion rs[GW_WIRE_MAX_RDMA_REGIONS], *ps[GW_WIRE_MAX_RDMA_REGIONS];
    for (unsigned i = 0; i < n; i++) {
        godwit__v1__mig_rdma_region__init(&rs[i]);
        rs[i].stream = v[i].stream;
        rs[i].guest_offset = v[i].guest_off;
        rs[i].length = v[i].r.len;
        rs[i].addr = v[i].r.addr;
        rs[i].rkey = v[i].r.rkey;
        ps[i] = &rs[i];
    }
    Godwit__V1__MigRdmaRegions m = GODWIT__V1__MIG_RDMA_REGIONS__INIT;
    m.n_regions = n;
    m.regions = ps;
    return gw_wire_pack_msg(&m.base, out, len);
}

static int by_stream_offset(const void *a, const void *b)
{
    const struct gw_rdma_peer_region *x = a, *y = b;
    if (x->stream != y->stream) return x->stream < y->stream ? -1 : 1;
    return x->guest_off < y->guest_off ? -1 : x->guest_off > y->guest_off;
}

int gw_rdma_regions_unpack(const uint8_t *p, size_t len, unsigned nstreams, uint64_t mem_size,
                           struct gw_rdma_peer_region *out, unsigned *n, struct gw_err *err)
{
    Godwit__V1__MigRdmaRegions *m = godwit__v1__mig_rdma_regions__unpack(NULL, len, p);
    if (!m) return gw_err_set(err, -EBADMSG, "RDMA_REGIONS: malformed record");
    int r = 0;
    size_t k = m->n_regions;
    if (k == 0 || k > GW_WIRE_MAX_RDMA_REGIONS) {
        r = gw_err_set(err, -EBADMSG, "RDMA_REGIONS: %zu regions (want 1..%u)", k, GW_WIRE_MAX_RDMA_REGIONS);
        goto out;
    }
    for (size_t i = 0; i < k; i++) {
        const Godwit__V1__MigRdmaRegion *g = m->regions[i];
        const char *why = NULL;
        if (g->stream >= nstreams) why = "names a stream the session does not have";
        else if (g->guest_offset % GW_PAGE_SIZE || g->length % GW_PAGE_SIZE) why = "is not page aligned";
        else if (g->length == 0) why = "is empty";
        else if (!gw_range_ok(g->guest_offset, g->length, mem_size)) why = "reaches beyond guest memory";
        else if (g->addr > UINT64_MAX - g->length) why = "has an address range that wraps around";
        if (why) {
            r = gw_err_set(err, -EBADMSG,
                           "RDMA_REGIONS: region %zu (stream %u, guest offset %llu, %llu bytes) %s (guest memory "
                           "%llu bytes, %u streams)",
                           i, g->stream, (unsigned long long)g->guest_offset, (unsigned long long)g->length, why,
                           (unsigned long long)mem_size, nstreams);
            goto out;
        }
        out[i] = (struct gw_rdma_peer_region){ .stream = g->stream, .guest_off = g->guest_offset,
                                               .r = { .addr = g->addr, .len = g->length, .rkey = g->rkey } };
    }
    qsort(out, k, sizeof *out, by_stream_offset);
    for (size_t i = 1; i < k; i++)
        if (out[i].stream == out[i - 1].stream && out[i].guest_off < out[i - 1].guest_off + out[i - 1].r.len) {
            r = gw_err_set(err, -EBADMSG, "RDMA_REGIONS: two regions of stream %u overlap at guest offset %llu",
                           out[i].stream, (unsigned long long)out[i].guest_off);
            goto out;
        }
    *n = (unsigned)k;
out:
    godwit__v1__mig_rdma_regions__free_unpacked(m, NULL);
    return r;
}

const struct gw_rdma_peer_region *gw_rdma_regions_find(const struct gw_rdma_peer_region *v, unsigned n,
                                                       uint32_t stream, uint64_t off)
{
    for (unsigned i = 0; i < n; i++)
        if (v[i].stream == stream && off >= v[i].guest_off && off - v[i].guest_off < v[i].r.len) return &v[i];
    return NULL;
}
