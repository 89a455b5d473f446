/* Attaching the virtio-mmio devices to a VM (the disk, the network): the backend, the MMIO
 * window and the interrupt line routed to KVM's IOAPIC. */
#ifndef GW_VM_VIRTIO_ATTACH_H
#define GW_VM_VIRTIO_ATTACH_H

#include <stdbool.h>
#include <stdint.h>

struct gw_vm;

/* Adds "vda" backed by the raw image at path. -errno with a reason in err on failure. */
int gw_vm_attach_disk(struct gw_vm *vm, const char *path, bool lock, char *err, unsigned errlen);
/* Takes (on) or drops the disk image's write lock; with on, waits up to wait_ms for another
 * holder (the source of a migration, which drops it once it sent GO) to let go. 0 when the
 * VM has no disk; -EAGAIN when it is still held; -errno. */
int gw_vm_disk_lock(struct gw_vm *vm, bool on, int wait_ms);

/* Adds "net0" (virtio-net) at GW_VIRTIO_NET_MMIO_BASE for spec "tap:NAME[,mac=...]"
 * (net_spec.h): the MAC given, else one derived from the VM's name (52:54:00 and three bytes
 * of its hash), so the same VM has the same MAC wherever it is created; a loaded state brings
 * its own. */
int gw_vm_attach_net(struct gw_vm *vm, const char *spec, char *err, unsigned errlen);

/* Reports the guest-physical ranges our devices write into guest RAM (invisible to KVM's
 * dirty log) to mark(ctx, gpa, len); mark NULL stops reporting. */
void gw_vm_track_device_writes(struct gw_vm *vm, void (*mark)(void *ctx, uint64_t gpa, uint64_t len), void *ctx);

#endif
