/* TEST DOUBLE of the RDMA verbs: see rdma_loopback.h (no RDMA hardware on the test host). */
#include "tests/lib/rdma_loopback.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CQ_DEPTH 64u

struct loop_mr {
    struct loop_mr *next;
    uint8_t *base;
    uint64_t len;
    uint32_t rkey;
    bool remote_write;
};

struct loop_cqe {
    uint64_t wr_id;
    bool ok;
};

struct loop_ep {
    struct loop_ep *next;
    struct gw_rdma_loop *f;
    struct loop_cqe cq[CQ_DEPTH];   /* the connection's send completions (its send lock held) */
    unsigned head, count;
};

struct gw_rdma_loop {
    pthread_mutex_t mu;
    struct loop_mr *mrs;
    struct loop_ep *eps;
    uint32_t next_rkey;
    uint64_t writes, bytes, refused;
};

struct gw_rdma_loop *gw_rdma_loop_new(void)
{
    struct gw_rdma_loop *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    pthread_mutex_init(&f->mu, NULL);
    f->next_rkey = 0x1000;
    return f;
}

void gw_rdma_loop_free(struct gw_rdma_loop *f)
{
    if (!f) return;
    for (struct loop_mr *m = f->mrs, *n; m; m = n) { n = m->next; free(m); }
    for (struct loop_ep *e = f->eps, *n; e; e = n) { n = e->next; free(e); }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void gw_rdma_loop_counts(struct gw_rdma_loop *f, uint64_t *writes, uint64_t *bytes, uint64_t *refused)
{
    pthread_mutex_lock(&f->mu);
    *writes = f->writes;
    *bytes = f->bytes;
    *refused = f->refused;
    pthread_mutex_unlock(&f->mu);
}

static int loop_reg(void *dev, void *mem, uint64_t len, bool remote_write, void **mr, uint32_t *rkey,
                    struct gw_err *err)
{
    struct loop_ep *e = dev;
    struct loop_mr *m = calloc(1, sizeof *m);
    if (!m) return gw_err_set(err, -ENOMEM, "rdma-loopback: out of memory");
    m->base = mem;
    m->len = len;
    m->remote_write = remote_write;
    pthread_mutex_lock(&e->f->mu);
    m->rkey = e->f->next_rkey++;
    m->next = e->f->mrs;
    e->f->mrs = m;
    pthread_mutex_unlock(&e->f->mu);
    *mr = m;
    *rkey = m->rkey;
    return 0;
}

static void loop_dereg(void *dev, void *mr)
{
    struct loop_ep *e = dev;
    pthread_mutex_lock(&e->f->mu);
    for (struct loop_mr **p = &e->f->mrs; *p; p = &(*p)->next)
        if (*p == mr) {
            *p = ((struct loop_mr *)mr)->next;
            break;
        }
    pthread_mutex_unlock(&e->f->mu);
    free(mr);
}

/* The "DMA": a NIC's write is not seen by the thread sanitizer either, and the receiver only
 * reads the bytes after the record that follows them on the same connection. */
__attribute__((no_sanitize("thread"))) static void dma_copy(uint8_t *dst, const uint8_t *src, uint64_t len)
{
    /* volatile: the compiler must not turn the loop back into a (sanitizer-intercepted)
     * memcpy call. Words where both ends allow it; the WRITEs here are whole pages. */
    uint64_t i = 0;
    if (!((uintptr_t)dst % 8) && !((uintptr_t)src % 8)) {
        volatile uint64_t *d = (volatile uint64_t *)(void *)dst;
        const uint64_t *s = (const uint64_t *)(const void *)src;
        for (; i + 8 <= len; i += 8) d[i / 8] = s[i / 8];
    }
    volatile uint8_t *d = dst;
    for (; i < len; i++) d[i] = src[i];
}

static bool inside(const struct loop_mr *m, uint64_t addr, uint64_t len)
{
    uint64_t base = (uint64_t)(uintptr_t)m->base;
    return addr >= base && addr - base <= m->len && len <= m->len - (addr - base);
}

static int loop_post_write(void *dev, void *mr, const void *local, uint64_t len, uint64_t remote_addr, uint32_t rkey,
                           uint64_t wr_id, struct gw_err *err)
{
    struct loop_ep *e = dev;
    if (e->count == CQ_DEPTH) return gw_err_set(err, -ENOMEM, "rdma-loopback: send queue full");
    struct loop_mr *target = NULL;
    pthread_mutex_lock(&e->f->mu);
    for (struct loop_mr *m = e->f->mrs; m; m = m->next)
        if (m->rkey == rkey) target = m;
    bool ok = target && target->remote_write && inside(target, remote_addr, len) &&
              inside(mr, (uint64_t)(uintptr_t)local, len);
    if (ok) {
        dma_copy((uint8_t *)(uintptr_t)remote_addr, local, len);
        e->f->writes++;
        e->f->bytes += len;
    } else {
        e->f->refused++;
    }
    pthread_mutex_unlock(&e->f->mu);
    e->cq[(e->head + e->count++) % CQ_DEPTH] = (struct loop_cqe){ .wr_id = wr_id, .ok = ok };
    return 0;
}

static int loop_post_send(void *dev, void *mr, const void *buf, size_t len, uint64_t wr_id, struct gw_err *err)
{
    (void)dev, (void)mr, (void)buf, (void)len, (void)wr_id;
    return gw_err_set(err, -EOPNOTSUPP, "rdma-loopback: records go over the connection's TCP stream");
}

static int loop_poll_send(void *dev, uint64_t *wr_id, struct gw_err *err)
{
    struct loop_ep *e = dev;
    if (!e->count) return gw_err_set(err, -EIO, "rdma-loopback: no send completion pending");
    struct loop_cqe c = e->cq[e->head];
    e->head = (e->head + 1) % CQ_DEPTH;
    e->count--;
    *wr_id = c.wr_id;
    if (!c.ok) return gw_err_set(err, -EIO, "rdma-loopback: RDMA WRITE failed: remote access error");
    return 0;
}

static const struct gw_rdma_verbs_ops loop_ops = {
    .name = "rdma-loopback (test double)", .reg_mem = loop_reg, .dereg_mem = loop_dereg,
    .post_write = loop_post_write, .post_send = loop_post_send, .poll_send = loop_poll_send,
};

int gw_rdma_loop_attach(void *fabric, struct gw_conn *c, struct gw_err *err)
{
    struct gw_rdma_loop *f = fabric;
    struct loop_ep *e = calloc(1, sizeof *e);
    if (!e) return gw_err_set(err, -ENOMEM, "rdma-loopback: out of memory");
    e->f = f;
    pthread_mutex_lock(&f->mu);
    e->next = f->eps;
    f->eps = e;
    pthread_mutex_unlock(&f->mu);
    c->rdma = (struct gw_rdma_verbs){ .ops = &loop_ops, .dev = e };
    return 0;
}
