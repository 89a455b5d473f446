/* Disk attachment (see virtio_attach.h). Interrupts go to KVM_IRQ_LINE on the in-kernel
 * IOAPIC; the device itself lives in virtio_blk.c. */
#include "engine/vm/virtio_attach.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "engine/vm/virtio_blk.h"
#include "engine/vm/vm.h"

static int irq_line(void *ctx, uint32_t gsi, int level)
{
    struct gw_vm *vm = ctx;
    struct kvm_irq_level l = {.irq = gsi, .level = (uint32_t)level};
    return ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

int gw_vm_attach_disk(struct gw_vm *vm, const char *path, char *err, unsigned errlen)
{
    struct gw_device *d;
    struct gw_irq_sink irq = {.set_level = irq_line, .ctx = vm};
    int r = gw_virtio_blk_create(path, &vm->mem, irq, GW_VIRTIO_MMIO_BASE, &d);
    if (r) { snprintf(err, errlen, "disk %s: %s", path, strerror(-r)); return r; }
    r = gw_bus_add(&vm->bus, d);
    if (r) snprintf(err, errlen, "disk %s: cannot attach: %s", path, strerror(-r));
    return r;
}

void gw_vm_track_device_writes(struct gw_vm *vm, void (*mark)(void *ctx, uint64_t gpa, uint64_t len), void *ctx)
{
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (!d) return;
    struct gw_guest_write_sink sink = {.mark = mark, .ctx = ctx};
    pthread_mutex_lock(&d->lock);
    gw_virtio_blk_set_write_sink(d, sink);
    pthread_mutex_unlock(&d->lock);
}
