/* Disk attachment (see virtio_attach.h). Interrupts go to KVM_IRQ_LINE on the in-kernel
 * IOAPIC; the device itself lives in virtio_blk.c. */
#include "engine/vm/virtio_attach.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "engine/common/util.h"

#include "engine/vm/blk_backend.h"
#include "engine/vm/virtio_blk.h"
#include "engine/vm/virtio_net.h"
#include "engine/vm/vm.h"

static int irq_line(void *ctx, uint32_t gsi, int level)
{
    struct gw_vm *vm = ctx;
    struct kvm_irq_level l = {.irq = gsi, .level = (uint32_t)level};
    return ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

int gw_vm_attach_disk(struct gw_vm *vm, const char *path, bool lock, char *err, unsigned errlen)
{
    struct gw_device *d;
    struct gw_blk *disk;
    struct gw_irq_sink irq = {.set_level = irq_line, .ctx = vm};
    char why[512];
    int r = gw_blk_open(path, false, &disk, why, sizeof why);
    if (r) { snprintf(err, errlen, "disk: %s", why); return r; }
    r = gw_virtio_blk_create_on(disk, path, &vm->mem, irq, GW_VIRTIO_MMIO_BASE, &d);
    if (r) { snprintf(err, errlen, "disk %s: %s", path, strerror(-r)); return r; }
    r = gw_bus_add(&vm->bus, d);
    if (r) { snprintf(err, errlen, "disk %s: cannot attach: %s", path, strerror(-r)); return r; }
    r = lock ? gw_virtio_blk_lock(d, true) : 0;
    if (r) snprintf(err, errlen, "disk %s: %s", path, r == -EAGAIN ? "in use: another VM or host holds its lock"
                                                                   : strerror(-r));
    return r;
}

static bool vm_running(void *ctx) { return gw_vm_guest_running(ctx); }

int gw_vm_attach_net(struct gw_vm *vm, const char *spec, char *err, unsigned errlen)
{
    struct gw_net_spec ns;
    int r = gw_net_spec_parse(spec, vm->name, &ns, err, errlen);
    if (r) return r;
    char backend[8 + GW_NET_TAP_NAME_MAX];
    snprintf(backend, sizeof backend, "tap:%s", ns.tap);
    struct gw_irq_sink irq = {.set_level = irq_line, .ctx = vm};
    struct gw_net_gate gate = {.running = vm_running, .ctx = vm};
    struct gw_device *d;
    r = gw_virtio_net_create(backend, ns.mac, &vm->mem, irq, GW_VIRTIO_NET_MMIO_BASE,
                             GW_VIRTIO_NET_GSI, gate, &d);
    if (r) { snprintf(err, errlen, "network %s: %s", backend, strerror(-r)); return r; }
    r = gw_bus_add(&vm->bus, d);
    if (r) snprintf(err, errlen, "network %s: cannot attach: %s", backend, strerror(-r));
    return r;
}

int gw_vm_disk_lock(struct gw_vm *vm, bool on, int wait_ms)
{
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (!d) return 0;
    uint64_t end = gw_now_ns() + (uint64_t)(wait_ms > 0 ? wait_ms : 0) * 1000000ull;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        int r = gw_virtio_blk_lock(d, on);
        pthread_mutex_unlock(&d->lock);
        if (r != -EAGAIN || gw_now_ns() >= end) return r;
        usleep(20000);
    }
}

void gw_vm_track_device_writes(struct gw_vm *vm, void (*mark)(void *ctx, uint64_t gpa, uint64_t len), void *ctx)
{
    struct gw_guest_write_sink sink = {.mark = mark, .ctx = ctx};
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (d) {
        pthread_mutex_lock(&d->lock);
        gw_virtio_blk_set_write_sink(d, sink);
        pthread_mutex_unlock(&d->lock);
    }
    d = gw_bus_find(&vm->bus, "net0");
    if (d) {
        pthread_mutex_lock(&d->lock);
        gw_virtio_net_set_write_sink(d, sink);
        pthread_mutex_unlock(&d->lock);
    }
}

int gw_vm_disk_set_write_hook(struct gw_vm *vm, const struct gw_blk_write_hook *hook)
{
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (!d) return -ENODEV;
    pthread_mutex_lock(&d->lock);
    int r = gw_virtio_blk_set_write_hook(d, *hook);
    pthread_mutex_unlock(&d->lock);
    return r;
}

int gw_vm_disk_latency(struct gw_vm *vm, struct gw_lat_hist *out)
{
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (!d) return -ENODEV;
    pthread_mutex_lock(&d->lock);
    int r = gw_virtio_blk_latency(d, out);
    pthread_mutex_unlock(&d->lock);
    return r;
}

int gw_vm_disk_latency_windows(struct gw_vm *vm, uint32_t *p99_us, uint64_t *end_ns, unsigned max)
{
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (!d) return -ENODEV;
    pthread_mutex_lock(&d->lock);
    int r = gw_virtio_blk_latency_windows(d, p99_us, end_ns, max);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* Runs fn on the disk's dirty bitmap under the device lock. */
static int with_dirty(struct gw_vm *vm, int (*fn)(struct gw_blk_dirty *d, void *arg), void *arg)
{
    struct gw_device *d = gw_bus_find(&vm->bus, "vda");
    if (!d) return -ENODEV;
    pthread_mutex_lock(&d->lock);
    struct gw_blk_dirty *bd = gw_virtio_blk_dirty(d);
    int r = bd ? fn(bd, arg) : -ENODEV;
    pthread_mutex_unlock(&d->lock);
    return r;
}

struct take_arg { uint64_t **bits; uint64_t *nbits; char *base; };

static int do_take(struct gw_blk_dirty *d, void *arg)
{
    struct take_arg *a = arg;
    *a->nbits = d->nbits;
    return gw_blk_dirty_take(d, a->bits, a->base);
}

static int do_give_back(struct gw_blk_dirty *d, void *arg) { gw_blk_dirty_give_back(d, arg); return 0; }
static int do_set_base(struct gw_blk_dirty *d, void *arg) { gw_blk_dirty_set_base(d, arg); return 0; }

int gw_vm_disk_dirty_take(struct gw_vm *vm, uint64_t **bits, uint64_t *nbits, char *base)
{
    struct take_arg a = {bits, nbits, base};
    return with_dirty(vm, do_take, &a);
}

int gw_vm_disk_dirty_give_back(struct gw_vm *vm, const uint64_t *bits)
{
    return with_dirty(vm, do_give_back, (void *)bits);
}

int gw_vm_disk_dirty_set_base(struct gw_vm *vm, const char *id)
{
    return with_dirty(vm, do_set_base, (void *)id);
}
