/* The KVM dirty-bitmap backend (see dirty.h): manual-protect mode where available, classic
 * otherwise. Slot i is guest-memory region i (engine/vm/vm.c); regions start at 2 MiB
 * multiples of the memfd, so a slot's bitmap lands on whole words of the global bitmap. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/common/log.h"
#include "engine/dirty/dirty_backend.h"
#include "engine/vm/vm.h"

int gw_dirty_kvm_set_logging(struct gw_vm *vm, bool on)
{
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        const struct gw_mem_region *r = &vm->mem.regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i, .flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0, .guest_phys_addr = r->gpa,
            .memory_size = r->size, .userspace_addr = (uint64_t)(uintptr_t)r->hva,
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) return -errno;
    }
    return 0;
}

static int kvm_start(struct gw_dirty_tracker *t, char *why, unsigned whylen)
{
    struct gw_vm *vm = t->vm;
    if (t->kind == GW_DIRTY_KVM_BITMAP && vm->kvm.has_manual_dirty_protect) {
        /* Enable only (no INITIALLY_SET): bits start clear, consumers see writes from now. */
        struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {1}};
        if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) == 0) t->manual = true;
        else gw_warn("vm %s: manual dirty-log protect refused (%s); using classic mode", vm->name, strerror(errno));
    }
    int r = gw_dirty_kvm_set_logging(vm, true);
    if (r && why) snprintf(why, whylen, "cannot start KVM dirty logging: %s", strerror(-r));
    return r;
}

static int kvm_get(struct gw_dirty_tracker *t, uint64_t *out)
{
    struct gw_vm *vm = t->vm;
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        const struct gw_mem_region *r = &vm->mem.regions[i];
        uint64_t first_word = r->offset / 4096 / 64, nwords = (r->size / 4096 + 63) / 64;
        memset(t->slot_buf, 0, nwords * 8);
        struct kvm_dirty_log log = {.slot = i, .dirty_bitmap = t->slot_buf};
        if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) return -errno;
        for (uint64_t w = 0; w < nwords; w++) out[first_word + w] |= t->slot_buf[w];
    }
    return 0;
}

static int kvm_clear(struct gw_dirty_tracker *t, uint64_t first, uint64_t n, uint64_t *bits)
{
    if (!t->manual) return 0;
    struct gw_vm *vm = t->vm;
    /* Clear slot by slot: a range may span the end of one region and the start of another. */
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        const struct gw_mem_region *r = &vm->mem.regions[i];
        uint64_t s0 = r->offset / 4096, s1 = s0 + r->size / 4096;
        uint64_t a = first > s0 ? first : s0, b = first + n < s1 ? first + n : s1;
        if (a >= b) continue;
        struct kvm_clear_dirty_log c = {
            .slot = i, .num_pages = (uint32_t)(b - a), .first_page = a - s0, .dirty_bitmap = &bits[a / 64],
        };
        if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0) return -errno;
        t->clear_calls++;
    }
    return 0;
}

static void kvm_stop(struct gw_dirty_tracker *t)
{
    gw_dirty_kvm_set_logging(t->vm, false);
    if (t->manual) {
        struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {0}};
        ioctl(t->vm->vm_fd, KVM_ENABLE_CAP, &cap);
    }
}

const struct gw_dirty_backend_ops gw_dirty_kvm_bitmap_ops = {
    .name = "kvm-bitmap", .start = kvm_start, .get = kvm_get, .clear = kvm_clear, .stop = kvm_stop,
};
