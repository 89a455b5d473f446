/* KVM dirty logging (see dirty_log.h). Slot i is guest-memory region i (engine/vm/vm.c);
 * regions start at 2 MiB multiples of the memfd, so a slot's bitmap lands on whole words of
 * the global bitmap. */
#include "engine/dirty/dirty_log.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/common/log.h"
#include "engine/vm/vm.h"

static int set_logging(struct gw_vm *vm, bool on)
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

int gw_dirty_start(struct gw_vm *vm, bool force_classic, struct gw_dirty_log **out)
{
    struct gw_dirty_log *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    d->vm = vm;
    d->npages = vm->mem.size / 4096;
    d->words = (d->npages + 63) / 64;
    d->bitmap = calloc(d->words, 8);
    d->device = calloc(d->words, 8);
    d->slot_buf = calloc(d->words, 8);
    if (!d->bitmap || !d->device || !d->slot_buf) { gw_dirty_stop(d); return -ENOMEM; }
    if (!force_classic && vm->kvm.has_manual_dirty_protect) {
        /* Enable only (no INITIALLY_SET): bits start clear, round 0 sends RAM by content. */
        struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {1}};
        if (ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap) == 0) d->manual = true;
        else gw_warn("vm %s: manual dirty-log protect refused (%s); using classic mode", vm->name, strerror(errno));
    }
    int r = set_logging(vm, true);
    if (r) { gw_dirty_stop(d); return r; }
    *out = d;
    return 0;
}

int gw_dirty_fetch(struct gw_dirty_log *d, uint64_t *count)
{
    struct gw_vm *vm = d->vm;
    memset(d->bitmap, 0, d->words * 8);
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        const struct gw_mem_region *r = &vm->mem.regions[i];
        uint64_t first_word = r->offset / 4096 / 64, nwords = (r->size / 4096 + 63) / 64;
        memset(d->slot_buf, 0, nwords * 8);
        struct kvm_dirty_log log = {.slot = i, .dirty_bitmap = d->slot_buf};
        if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) return -errno;
        for (uint64_t w = 0; w < nwords; w++) d->bitmap[first_word + w] |= d->slot_buf[w];
    }
    uint64_t n = 0;
    for (uint64_t w = 0; w < d->words; w++) {
        /* Device bits stay set until gw_dirty_clear takes them, like KVM's in manual mode: a
         * fetch whose pages are never queued (the one that decides on the switchover) must
         * not lose them, or a page a device wrote (virtio-net receive) reaches the
         * destination stale. */
        d->bitmap[w] |= __atomic_load_n(&d->device[w], __ATOMIC_ACQUIRE);
        n += (uint64_t)__builtin_popcountll(d->bitmap[w]);
    }
    d->fetches++;
    *count = n;
    return 0;
}

int gw_dirty_clear(struct gw_dirty_log *d, uint64_t first, uint64_t n)
{
    if (first % 64 || first > d->npages || n > d->npages - first) return -EINVAL;
    if (n % 64 && first + n != d->npages) return -EINVAL;
    /* The pages about to be queued carry every device write made before this point. */
    for (uint64_t w = first / 64; w < (first + n + 63) / 64 && w < d->words; w++)
        __atomic_fetch_and(&d->device[w], ~d->bitmap[w], __ATOMIC_ACQ_REL);
    if (!d->manual || !n) return 0;
    struct gw_vm *vm = d->vm;
    /* Clear slot by slot: a range may span the end of one region and the start of another. */
    for (unsigned i = 0; i < vm->mem.nregions; i++) {
        const struct gw_mem_region *r = &vm->mem.regions[i];
        uint64_t s0 = r->offset / 4096, s1 = s0 + r->size / 4096;
        uint64_t a = first > s0 ? first : s0, b = first + n < s1 ? first + n : s1;
        if (a >= b) continue;
        struct kvm_clear_dirty_log c = {
            .slot = i, .num_pages = (uint32_t)(b - a), .first_page = a - s0,
            .dirty_bitmap = &d->bitmap[a / 64],
        };
        if (ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0) return -errno;
        d->clear_calls++;
    }
    return 0;
}

void gw_dirty_mark(struct gw_dirty_log *d, uint64_t off, uint64_t len)
{
    if (!len || off >= d->vm->mem.size) return;
    uint64_t end = off + len;
    if (end > d->vm->mem.size || end < off) end = d->vm->mem.size;
    for (uint64_t p = off / 4096; p <= (end - 1) / 4096; p++)
        __atomic_fetch_or(&d->device[p / 64], 1ull << (p % 64), __ATOMIC_RELEASE);
}

void gw_dirty_mark_gpa(struct gw_dirty_log *d, uint64_t gpa, uint64_t len)
{
    /* Split at page granularity: a range may cross from one region into the hole. */
    while (len) {
        uint64_t n = 4096 - (gpa & 4095);
        if (n > len) n = len;
        uint64_t off = gw_guest_mem_offset(&d->vm->mem, gpa);
        if (off != UINT64_MAX) gw_dirty_mark(d, off, n);
        gpa += n;
        len -= n;
    }
}

void gw_dirty_stop(struct gw_dirty_log *d)
{
    if (!d) return;
    if (d->vm) {
        set_logging(d->vm, false);
        if (d->manual) {
            struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {0}};
            ioctl(d->vm->vm_fd, KVM_ENABLE_CAP, &cap);
        }
    }
    free(d->bitmap);
    free(d->device);
    free(d->slot_buf);
    free(d);
}
