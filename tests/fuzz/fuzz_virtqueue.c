/* libFuzzer target for the device side of split virtqueues (engine/vm/virtqueue.c): the
 * input supplies the queue size, ring addresses, whether indirect descriptors were
 * negotiated, and the whole guest memory (descriptor tables, rings, indirect tables). Every
 * chain popped must lie inside guest memory; a guard region behind it must never change. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/vm/guest_mem.h"
#include "engine/vm/virtqueue.h"

#define RAM_SIZE (64u * 1024)
#define GUARD 4096u

static uint8_t ram[RAM_SIZE + GUARD] __attribute__((aligned(4096)));

static uint64_t take(const uint8_t **p, size_t *n, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes && *n; i++, (*p)++, (*n)--) v |= (uint64_t)**p << (8 * i);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t n = size;
    memset(ram, 0, RAM_SIZE);
    memset(ram + RAM_SIZE, 0xA5, GUARD);
    struct gw_guest_mem mem;
    gw_guest_mem_wrap(&mem, ram, RAM_SIZE);
    struct gw_vq vq;
    gw_vq_init(&vq, &mem, GW_VQ_NUM_MAX);
    unsigned flags = (unsigned)take(&p, &n, 1);
    vq.indirect_ok = flags & 1;
    vq.num = (uint16_t)take(&p, &n, 2);
    vq.desc_addr = take(&p, &n, 3);
    vq.avail_addr = take(&p, &n, 3);
    vq.used_addr = take(&p, &n, 3);
    vq.last_avail_idx = (uint16_t)take(&p, &n, 2);
    vq.used_idx = vq.last_avail_idx;
    memcpy(ram, p, n < RAM_SIZE ? n : RAM_SIZE);   /* the rest is the guest's memory */
    if (gw_vq_activate(&vq)) return 0;
    static struct gw_vq_chain chain;
    for (unsigned i = 0; i < 2 * GW_VQ_NUM_MAX; i++) {
        int r = gw_vq_pop(&vq, &chain);
        if (r <= 0) break;
        if (chain.nout + chain.nin > GW_VQ_NUM_MAX) abort();
        uint64_t total = 0;
        for (unsigned k = 0; k < chain.nout + chain.nin; k++) {
            const struct gw_vq_iov *v = &chain.iov[k];
            if (v->base < ram || v->base + v->len > ram + RAM_SIZE) abort();
            total += v->len;
        }
        if (total != chain.out_bytes + chain.in_bytes) abort();
        if (flags & 2) gw_vq_unpop(&vq);
        else gw_vq_push(&vq, chain.head, (uint32_t)chain.in_bytes);
        if (flags & 2) break;
    }
    for (unsigned i = 0; i < GUARD; i++)
        if (ram[RAM_SIZE + i] != 0xA5) abort();
    return 0;
}
