/* Attaching the virtio-mmio block device to a VM: the image, the MMIO window and the
 * interrupt line routed to KVM's IOAPIC. */
#ifndef GW_VM_VIRTIO_ATTACH_H
#define GW_VM_VIRTIO_ATTACH_H

struct gw_vm;

/* Adds "vda" backed by the raw image at path. -errno with a reason in err on failure. */
int gw_vm_attach_disk(struct gw_vm *vm, const char *path, char *err, unsigned errlen);

#endif
