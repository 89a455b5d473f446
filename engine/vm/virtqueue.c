/* Split virtqueue parsing for devices (see virtqueue.h). The guest owns the rings and may
 * rewrite them while we look, so every descriptor is copied out once and the copy is what
 * gets checked and used; an index read twice could otherwise pass the check and then
 * change. Ring layout (virtio 1.x, 2.6):
 *   desc:  num x {le64 addr, le32 len, le16 flags, le16 next}     align 16
 *   avail: le16 flags, le16 idx, le16 ring[num], le16 used_event   align 2
 *   used:  le16 flags, le16 idx, {le32 id, le32 len}[num], le16 avail_event  align 4 */
#include "engine/vm/virtqueue.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "engine/vm/guest_mem.h"

#define DESC_SIZE 16u

static uint64_t desc_bytes(uint16_t num) { return (uint64_t)DESC_SIZE * num; }
static uint64_t avail_bytes(uint16_t num) { return 6 + 2ull * num; }
static uint64_t used_bytes(uint16_t num) { return 6 + 8ull * num; }

__attribute__((format(printf, 3, 4)))
static int fault(struct gw_vq *vq, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vq->err, sizeof vq->err, fmt, ap);
    va_end(ap);
    return err;
}

void gw_vq_reset(struct gw_vq *vq)
{
    vq->num = vq->num_max;
    vq->desc_addr = vq->avail_addr = vq->used_addr = 0;
    vq->ready = false;
    vq->indirect_ok = false;   /* renegotiated after every reset */
    vq->last_avail_idx = vq->used_idx = 0;
    vq->desc = vq->avail = vq->used = NULL;
    vq->err[0] = 0;
}

void gw_vq_init(struct gw_vq *vq, const struct gw_guest_mem *mem, uint16_t num_max)
{
    memset(vq, 0, sizeof *vq);
    vq->mem = mem;
    vq->num_max = num_max > GW_VQ_NUM_MAX ? GW_VQ_NUM_MAX : num_max;
    gw_vq_reset(vq);
}

/* Host pointer to a ring of len bytes at gpa with the given alignment, or NULL with err set.
 * The host address is checked too: atomics on guest fields need natural alignment, which
 * page-aligned RAM mappings give for free but a wrapped test buffer might not. */
static uint8_t *map_ring(struct gw_vq *vq, const char *what, uint64_t gpa, uint64_t len,
                         uint64_t align)
{
    if (gpa % align) {
        fault(vq, -EINVAL, "%s ring at %#llx is not %llu-byte aligned", what,
              (unsigned long long)gpa, (unsigned long long)align);
        return NULL;
    }
    uint8_t *p = gw_guest_mem_ptr(vq->mem, gpa, len);
    if (!p) {
        fault(vq, -EINVAL, "%s ring [%#llx, +%llu) is not inside guest RAM", what,
              (unsigned long long)gpa, (unsigned long long)len);
        return NULL;
    }
    if ((uintptr_t)p % align) {
        fault(vq, -EINVAL, "%s ring at %#llx maps to a misaligned host address", what,
              (unsigned long long)gpa);
        return NULL;
    }
    return p;
}

int gw_vq_activate(struct gw_vq *vq)
{
    vq->ready = false;
    vq->desc = vq->avail = vq->used = NULL;
    uint16_t n = vq->num;
    if (n == 0 || n > vq->num_max || (n & (n - 1)))
        return fault(vq, -EINVAL, "queue size %u is not a power of two in [1, %u]", n,
                     vq->num_max);
    uint8_t *d = map_ring(vq, "descriptor", vq->desc_addr, desc_bytes(n), 16);
    if (!d) return -EINVAL;
    uint8_t *a = map_ring(vq, "available", vq->avail_addr, avail_bytes(n), 2);
    if (!a) return -EINVAL;
    uint8_t *u = map_ring(vq, "used", vq->used_addr, used_bytes(n), 4);
    if (!u) return -EINVAL;
    vq->desc = d;
    vq->avail = a;
    vq->used = u;
    vq->ready = true;
    return 0;
}

static void read_desc(const uint8_t *table, uint16_t i, struct gw_virtq_desc *d)
{
    memcpy(d, table + (uint64_t)DESC_SIZE * i, sizeof *d);
    d->addr = le64toh(d->addr);
    d->len = le32toh(d->len);
    d->flags = le16toh(d->flags);
    d->next = le16toh(d->next);
}

/* Checks the descriptor that points at an indirect table and returns the table's host
 * address and entry count, or a negative errno. */
static int enter_indirect(struct gw_vq *vq, const struct gw_virtq_desc *d, uint16_t i,
                          bool nested, const uint8_t **table, uint16_t *tsize)
{
    if (nested)
        return fault(vq, -EINVAL, "nested indirect descriptor %u in an indirect table", i);
    if (!vq->indirect_ok)
        return fault(vq, -EINVAL,
                     "descriptor %u is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated", i);
    if (d->flags & GW_VIRTQ_DESC_F_NEXT)
        return fault(vq, -EINVAL, "indirect descriptor %u also has NEXT set", i);
    if (d->len == 0 || d->len % DESC_SIZE)
        return fault(vq, -EINVAL, "indirect table length %u of descriptor %u is not a "
                     "non-zero multiple of 16", d->len, i);
    if (d->len / DESC_SIZE > vq->num)
        return fault(vq, -E2BIG, "indirect table of %u entries is longer than the queue (%u)",
                     d->len / DESC_SIZE, vq->num);
    const uint8_t *t = gw_guest_mem_ptr(vq->mem, d->addr, d->len);
    if (!t)
        return fault(vq, -EINVAL, "indirect table [%#llx, +%u) of descriptor %u is not "
                     "inside guest RAM", (unsigned long long)d->addr, d->len, i);
    *table = t;
    *tsize = (uint16_t)(d->len / DESC_SIZE);
    return 0;
}

/* Follows the chain from head through the descriptor table and at most one indirect
 * table. Loops are caught by a visited bitmap per table; total length by the queue size. */
static int walk_chain(struct gw_vq *vq, uint16_t head, struct gw_vq_chain *c)
{
    uint64_t seen[GW_VQ_NUM_MAX / 64];
    const uint8_t *table = vq->desc;
    uint16_t tsize = vq->num, i = head;
    bool indirect = false;
    unsigned total = 0;

    memset(c, 0, offsetof(struct gw_vq_chain, iov));
    c->head = head;
    memset(seen, 0, sizeof seen);
    if (head >= vq->num)
        return fault(vq, -EINVAL, "head descriptor %u out of range (queue size %u)", head,
                     vq->num);
    for (;;) {
        if (seen[i / 64] & (1ull << (i % 64)))
            return fault(vq, -ELOOP, "descriptor %u revisited in the chain from head %u "
                         "(loop)", i, head);
        seen[i / 64] |= 1ull << (i % 64);
        struct gw_virtq_desc d;
        read_desc(table, i, &d);

        if (d.flags & GW_VIRTQ_DESC_F_INDIRECT) {
            int r = enter_indirect(vq, &d, i, indirect, &table, &tsize);
            if (r < 0) return r;
            indirect = true;
            memset(seen, 0, sizeof seen);
            i = 0;
            continue;
        }
        if (total >= vq->num)
            return fault(vq, -E2BIG, "chain from head %u is longer than the queue size %u",
                         head, vq->num);
        uint8_t *p = gw_guest_mem_ptr(vq->mem, d.addr, d.len);
        if (!p)
            return fault(vq, -EINVAL, "buffer [%#llx, +%u) of descriptor %u is not inside "
                         "guest RAM", (unsigned long long)d.addr, d.len, i);
        c->iov[total++] = (struct gw_vq_iov){.base = p, .gpa = d.addr, .len = d.len};
        if (d.flags & GW_VIRTQ_DESC_F_WRITE) {
            c->nin++;
            c->in_bytes += d.len;
        } else {
            if (c->nin)
                return fault(vq, -EINVAL, "device-readable descriptor %u follows a "
                             "device-writable one", i);
            c->nout++;
            c->out_bytes += d.len;
        }
        if (!(d.flags & GW_VIRTQ_DESC_F_NEXT)) return 0;
        if (d.next >= tsize)
            return fault(vq, -EINVAL, "descriptor %u: next %u out of range (table size %u)",
                         i, d.next, tsize);
        i = d.next;
    }
}

int gw_vq_pop(struct gw_vq *vq, struct gw_vq_chain *chain)
{
    if (!vq->ready) return 0;
    /* Acquire pairs with the driver's write barrier before it bumps avail->idx: the ring
     * entries and descriptors it published before the bump are visible after this load. */
    uint16_t avail_idx = le16toh(__atomic_load_n((uint16_t *)(vq->avail + 2), __ATOMIC_ACQUIRE));
    uint16_t pending = (uint16_t)(avail_idx - vq->last_avail_idx);
    if (pending == 0) return 0;
    if (pending > vq->num)
        return fault(vq, -EOVERFLOW, "avail idx %u is %u entries ahead of the device's %u "
                     "(queue size %u)", avail_idx, pending, vq->last_avail_idx, vq->num);
    uint16_t slot = vq->last_avail_idx % vq->num;
    uint16_t head = le16toh(__atomic_load_n((uint16_t *)(vq->avail + 4 + 2u * slot),
                                            __ATOMIC_RELAXED));
    int r = walk_chain(vq, head, chain);
    if (r < 0) return r;
    vq->last_avail_idx++;
    return 1;
}

void gw_vq_push(struct gw_vq *vq, uint16_t head, uint32_t written)
{
    uint8_t *e = vq->used + 4 + 8u * (vq->used_idx % vq->num);
    uint32_t id = htole32(head), len = htole32(written);
    memcpy(e, &id, sizeof id);
    memcpy(e + 4, &len, sizeof len);
    vq->used_idx++;
    /* Release: the buffer contents and the entry above are visible before the new idx. */
    __atomic_store_n((uint16_t *)(vq->used + 2), htole16(vq->used_idx), __ATOMIC_RELEASE);
    gw_vq_mark_written(vq, vq->used_addr + (uint64_t)(e - vq->used), 8);
    gw_vq_mark_written(vq, vq->used_addr + 2, 2);
}

void gw_vq_mark_written(const struct gw_vq *vq, uint64_t gpa, uint64_t len)
{
    if (vq->wsink.mark && len) vq->wsink.mark(vq->wsink.ctx, gpa, len);
}

void gw_vq_unpop(struct gw_vq *vq) { vq->last_avail_idx--; }
