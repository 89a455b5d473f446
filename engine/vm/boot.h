/* Boot set-up for our guest workloads: the host writes identity page tables, a GDT with one
 * TSS per vCPU, the boot-info page and the guest image into guest memory, and computes each
 * vCPU's initial registers, so that every vCPU starts directly in 64-bit mode at CPL0
 * (no real-mode code runs: under PVM it would be emulated, and it is simply not needed). */
#ifndef GW_VM_BOOT_H
#define GW_VM_BOOT_H

#include <stdint.h>

#include "guest/abi.h"

struct gw_guest_mem;
struct kvm_regs;
struct kvm_sregs;

/* Writes page tables mapping [0, 4 GiB + ram_above_hole) with 2 MiB pages (the 3-4 GiB hole
 * uncached). Returns 0, or -E2BIG when the tables would not fit in their area. */
int gw_boot_build_page_tables(struct gw_guest_mem *m);

/* Walks the tables the guest would use: returns the guest-physical address va maps to, or
 * UINT64_MAX when unmapped. Used by tests and by diagnostics. */
uint64_t gw_boot_translate(const struct gw_guest_mem *m, uint64_t va);

/* Writes the GDT (fixed segments + nvcpus TSS descriptors) and the TSSs. */
int gw_boot_build_gdt(struct gw_guest_mem *m, unsigned nvcpus);

/* Copies the guest image to GW_GPA_CODE; -E2BIG when it is larger than the code area. */
int gw_boot_load_image(struct gw_guest_mem *m, const void *image, uint64_t len);

/* Copies *bi into the boot-info page. */
int gw_boot_write_info(struct gw_guest_mem *m, const struct gw_boot_info *bi);

/* Long mode at CPL0 with flat segments cs/ds (and es, fs, gs, ss), a 64-bit busy TSS at tss
 * as tr, the GDT at gdt, no IDT, the identity tables at GW_GPA_PML4; CR0 PG|NE|ET|PE, CR4
 * PAE, EFER LME|LMA. Callers add what their guest needs. */
struct kvm_sregs;
void gw_boot_long_mode(struct kvm_sregs *sregs, uint16_t cs, uint16_t ds, uint16_t tr, uint64_t tss,
                       uint64_t gdt, uint16_t gdt_limit);

/* Initial registers of vCPU cpu: long mode, CPL0, entry at GW_GPA_CODE. */
void gw_boot_vcpu_regs(unsigned cpu, struct kvm_regs *regs, struct kvm_sregs *sregs);

/* The guest image linked into this binary (guest/godwit-guest.bin). */
const uint8_t *gw_boot_guest_image(uint64_t *len);

#endif
