/* Attaching the virtio-mmio devices to a VM (the disk, the network): the backend, the MMIO
 * window and the interrupt line routed to KVM's IOAPIC. */
#ifndef GW_VM_VIRTIO_ATTACH_H
#define GW_VM_VIRTIO_ATTACH_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/common/lat_hist.h"

struct gw_vm;
struct gw_blk_write_hook;

/* Adds "vda" backed by the raw image at path. -errno with a reason in err on failure. */
int gw_vm_attach_disk(struct gw_vm *vm, const char *path, bool lock, char *err, unsigned errlen);
/* Takes (on) or drops the disk image's write lock; with on, waits up to wait_ms for another
 * holder (the source of a migration, which drops it once it sent GO) to let go. 0 when the
 * VM has no disk; -EAGAIN when it is still held; -errno. */
int gw_vm_disk_lock(struct gw_vm *vm, bool on, int wait_ms);

/* Sets (or, with before_write NULL, removes) the disk's copy-before-write hook under the
 * device lock (virtio_blk.h). -ENODEV when the VM has no disk. */
int gw_vm_disk_set_write_hook(struct gw_vm *vm, const struct gw_blk_write_hook *hook);
/* A copy of the disk's request-latency histogram. -ENODEV when the VM has no disk. */
int gw_vm_disk_latency(struct gw_vm *vm, struct gw_lat_hist *out);
/* The p99s (us) of the disk's last min(max, kept) 0.5 s windows and when each ended (end_ns
 * may be NULL), oldest first: their number, or -ENODEV when the VM has no disk. */
int gw_vm_disk_latency_windows(struct gw_vm *vm, uint32_t *p99_us, uint64_t *end_ns, unsigned max);

/* The disk's dirty bitmap since the last backup (engine/vm/blk_dirty.h), under the device
 * lock: take (in the pause: *bits malloc'd, *nbits blocks, base what it is relative to),
 * give back (a backup that failed), set its base (a backup that succeeded). -ENODEV when the VM
 * has no disk. */
int gw_vm_disk_dirty_take(struct gw_vm *vm, uint64_t **bits, uint64_t *nbits, char *base);
int gw_vm_disk_dirty_give_back(struct gw_vm *vm, const uint64_t *bits);
int gw_vm_disk_dirty_set_base(struct gw_vm *vm, const char *id);

/* Adds "net0" (virtio-net) at GW_VIRTIO_NET_MMIO_BASE for spec "tap:NAME[,mac=...]"
 * (net_spec.h): the MAC given, else one derived from the VM's name (52:54:00 and three bytes
 * of its hash), so the same VM has the same MAC wherever it is created; a loaded state brings
 * its own. */
int gw_vm_attach_net(struct gw_vm *vm, const char *spec, char *err, unsigned errlen);

/* Reports the guest-physical ranges our devices write into guest RAM (invisible to KVM's
 * dirty log) to mark(ctx, gpa, len); mark NULL stops reporting. */
void gw_vm_track_device_writes(struct gw_vm *vm, void (*mark)(void *ctx, uint64_t gpa, uint64_t len), void *ctx);

#endif
