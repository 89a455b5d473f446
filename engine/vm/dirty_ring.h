/* The KVM dirty ring of a VM (KVM_CAP_DIRTY_LOG_RING): one ring of dirtied guest frames per
 * vCPU, shared with KVM through a mapping of the vCPU's fd. It must be enabled after the VM
 * exists and before its vCPUs do, so it is a property of the VM (gw_vm_config's
 * dirty_ring_entries), not of a tracker; engine/dirty's ring backend reads it.
 *
 * Collection takes every dirty entry of every vCPU's ring into the VM's pending bitmap (one
 * bit per 4 KiB page of guest RAM, numbered by memfd offset as everywhere), marks the entries
 * for reset and asks KVM to reset them (which write-protects those pages again, so the next
 * write is logged anew). It runs from the harvester and from a vCPU thread whose ring filled
 * up (KVM_EXIT_DIRTY_RING_FULL: the vCPU may not re-enter before its ring has room). Slot and
 * offset of each entry are checked against the VM's memory map before use.
 *
 * Measured under PVM (docs/data-path.md): exact while the guest runs CPL3 code; entries are
 * lost while CPL0 code is emulated. The bitmap stays the default for that reason. */
#ifndef GW_VM_DIRTY_RING_H
#define GW_VM_DIRTY_RING_H

#include <stdint.h>

struct gw_vm;
struct gw_vcpu;

/* Enables rings of `entries` on vm (before any vCPU exists); sizes from the limits table
 * (GW_LIMIT_DIRTY_RING_MIN..MAX, a power of two). 0, -EINVAL (size), -ENOTSUP
 * (KVM without the capability, or a smaller maximum), or -errno; err says which. */
int gw_dirty_ring_enable(struct gw_vm *vm, uint32_t entries, char *err, unsigned errlen);
/* Maps v's ring (gw_vcpu_create calls it when the VM has rings). 0 or -errno. */
int gw_dirty_ring_map(struct gw_vcpu *v);
void gw_dirty_ring_unmap(struct gw_vcpu *v);
/* Collects every vCPU's dirty entries into the pending bitmap and resets them; *n (may be
 * NULL) gets how many entries were taken. 0 or -errno from KVM_RESET_DIRTY_RINGS. */
int gw_dirty_ring_collect(struct gw_vm *vm, uint64_t *n);
/* ORs the pending bitmap into out (vm->mem.size / 4096 bits) and empties it. */
void gw_dirty_ring_take(struct gw_vm *vm, uint64_t *out);
/* A vCPU exited with KVM_EXIT_DIRTY_RING_FULL: collect so that it can run on. Returns 0, or
 * -EIO with the VM marked fatal when the ring stays full with nothing to collect (KVM lost
 * entries: seen under PVM when the guest runs CPL0 code). */
int gw_dirty_ring_full(struct gw_vcpu *v);

#endif
