/* The KVM dirty ring (see dirty_ring.h). */
#include "engine/vm/dirty_ring.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/common/limits.h"
#include "engine/common/log.h"
#include "engine/vm/vcpu.h"
#include "engine/vm/vm.h"

/* A vCPU whose ring KVM calls full while nothing is in it is retried this often (another
 * thread may be between its collection and KVM's reset) before the VM is stopped. */
#define STUCK_TRIES 1000u
#define STUCK_WAIT_US 100u

int gw_dirty_ring_enable(struct gw_vm *vm, uint32_t entries, char *err, unsigned errlen)
{
    if (entries < GW_LIMIT_DIRTY_RING_MIN || entries > GW_LIMIT_DIRTY_RING_MAX || (entries & (entries - 1))) {
        snprintf(err, errlen, "dirty ring of %u entries: a power of two from %u to %u", entries,
                 GW_LIMIT_DIRTY_RING_MIN, GW_LIMIT_DIRTY_RING_MAX);
        return -EINVAL;
    }
    uint64_t bytes = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
    int max = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
    if (max <= 0 || bytes > (uint64_t)max) {
        snprintf(err, errlen, "this KVM offers %s", max <= 0 ? "no dirty ring" : "smaller dirty rings");
        return -ENOTSUP;
    }
    uint64_t words = (vm->mem.size / 4096 + 63) / 64;
    vm->ring_pending = calloc(words, 8);
    if (!vm->ring_pending) { snprintf(err, errlen, "no memory for the dirty ring's bitmap"); return -ENOMEM; }
    struct kvm_enable_cap cap = {.cap = KVM_CAP_DIRTY_LOG_RING, .args = {bytes}};
    if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
        int e = -errno;
        snprintf(err, errlen, "cannot enable the KVM dirty ring: %s", strerror(errno));
        free(vm->ring_pending);
        vm->ring_pending = NULL;
        return e;
    }
    vm->dirty_ring_entries = entries;
    return 0;
}

int gw_dirty_ring_map(struct gw_vcpu *v)
{
    size_t len = (size_t)v->vm->dirty_ring_entries * sizeof(struct kvm_dirty_gfn);
    long pg = sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * pg);
    if (p == MAP_FAILED) return -errno;
    v->ring = p;
    return 0;
}

void gw_dirty_ring_unmap(struct gw_vcpu *v)
{
    if (v->ring) munmap(v->ring, (size_t)v->vm->dirty_ring_entries * sizeof(struct kvm_dirty_gfn));
    v->ring = NULL;
}

/* One entry: slot and offset come from KVM, checked against our memory map all the same. */
static void note(struct gw_vm *vm, uint32_t slot, uint64_t offset)
{
    uint32_t as = slot >> 16, id = slot & 0xffff;
    if (as != 0 || id >= vm->mem.nregions || offset >= vm->mem.regions[id].size / 4096) {
        vm->ring_bad_entries++;
        return;
    }
    uint64_t pfn = vm->mem.regions[id].offset / 4096 + offset;
    __atomic_fetch_or(&vm->ring_pending[pfn / 64], 1ull << (pfn % 64), __ATOMIC_RELEASE);
}

int gw_dirty_ring_collect(struct gw_vm *vm, uint64_t *n)
{
    uint64_t taken = 0;
    int r = 0;
    pthread_mutex_lock(&vm->ring_mu);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        struct gw_vcpu *v = vm->vcpus[i];
        if (!v || !v->ring) continue;
        for (;;) {
            struct kvm_dirty_gfn *e = &v->ring[v->ring_fetch & (vm->dirty_ring_entries - 1)];
            /* Acquire: KVM fills slot and offset before it sets DIRTY. */
            if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY)) break;
            note(vm, e->slot, e->offset);
            __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
            v->ring_fetch++;
            taken++;
        }
    }
    /* Reset write-protects the pages again: a write from now on makes a new entry. */
    if (taken && ioctl(vm->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0) r = -errno;
    pthread_mutex_unlock(&vm->ring_mu);
    if (n) *n = taken;
    return r;
}

void gw_dirty_ring_take(struct gw_vm *vm, uint64_t *out)
{
    uint64_t words = (vm->mem.size / 4096 + 63) / 64;
    for (uint64_t w = 0; w < words; w++)
        if (__atomic_load_n(&vm->ring_pending[w], __ATOMIC_RELAXED))
            out[w] |= __atomic_exchange_n(&vm->ring_pending[w], 0, __ATOMIC_ACQ_REL);
}

int gw_dirty_ring_full(struct gw_vcpu *v)
{
    uint64_t n = 0;
    __atomic_fetch_add(&v->vm->ring_full_exits, 1, __ATOMIC_RELAXED);
    int r = gw_dirty_ring_collect(v->vm, &n);
    if (r) {
        gw_vm_set_fatal(v->vm, r, "vcpu %u: cannot reset the KVM dirty rings: %s", v->id, strerror(-r));
        return r;
    }
    if (n) { v->ring_stuck = 0; return 0; }
    if (++v->ring_stuck < STUCK_TRIES) { usleep(STUCK_WAIT_US); return 0; }
    gw_vm_set_fatal(v->vm, -EIO, "vcpu %u: KVM calls its dirty ring full but it holds no entries (KVM lost "
                    "them; seen under PVM while the guest runs kernel-mode code): use the dirty bitmap", v->id);
    return -EIO;
}
