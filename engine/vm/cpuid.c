/* Per-vCPU CPUID (see cpuid.h). */
#include "engine/vm/cpuid.h"

#include <linux/kvm.h>

void gw_cpuid_for_vcpu(struct kvm_cpuid_entry2 *entries, uint32_t n, unsigned id, unsigned nvcpus)
{
    for (uint32_t i = 0; i < n; i++) {
        struct kvm_cpuid_entry2 *e = &entries[i];
        if (e->function == 1) {
            /* Initial APIC id in EBX[31:24]; logical processors per package in EBX[23:16]. */
            e->ebx = (e->ebx & 0x0000ffffu) | (id << 24) | ((nvcpus & 0xffu) << 16);
            e->ecx |= 1u << 31;                              /* hypervisor present */
        } else if (e->function == 0xb || e->function == 0x1f) {
            e->edx = id;                                     /* x2APIC id */
        }
    }
}
