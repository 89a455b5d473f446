/* The CPUID a vCPU gets: what KVM_GET_SUPPORTED_CPUID offers, with this vCPU's APIC id in
 * every leaf that reports one and the hypervisor bit set. KVM's own leaves (0x40000000 on:
 * kvmclock, PV EOI, ...) are kept as KVM filled them, so a Linux guest finds its clock. */
#ifndef GW_VM_CPUID_H
#define GW_VM_CPUID_H

#include <stdint.h>

struct kvm_cpuid_entry2;

/* Adjusts entries[0..n) (a copy of the supported table) for vCPU id of nvcpus. */
void gw_cpuid_for_vcpu(struct kvm_cpuid_entry2 *entries, uint32_t n, unsigned id, unsigned nvcpus);

#endif
