/* The KVM system handle: opening /dev/kvm, checking what this kernel offers, and the
 * host-wide tables (supported CPUID, MSR index list) every VM and vCPU needs. */
#ifndef GW_VM_KVM_H
#define GW_VM_KVM_H

#include <stdbool.h>
#include <stdint.h>

struct kvm_cpuid2;
struct kvm_msr_list;

struct gw_kvm {
    int fd;                      /* /dev/kvm, owned */
    int vcpu_mmap_size;
    struct kvm_cpuid2 *cpuid;    /* KVM_GET_SUPPORTED_CPUID, owned */
    struct kvm_msr_list *msrs;   /* KVM_GET_MSR_INDEX_LIST, owned */
    bool has_sregs2;
    bool has_xsave;
    bool has_xsave2;             /* KVM_CAP_XSAVE2: size of the xsave buffer may exceed 4 KiB */
    int xsave_size;
    bool has_xcrs;
    bool has_debugregs;
    bool has_manual_dirty_protect;
    bool has_pit;
    bool has_tsc_control;
};

/* Default device path; GODWIT_KVM_DEVICE in the environment overrides it (tests use that to
 * simulate a host without KVM). */
const char *gw_kvm_device_path(void);

/* Opens KVM and reads its capabilities. On failure returns -errno and writes a one-line
 * explanation an operator can act on into err (e.g. "/dev/kvm: No such file or directory:
 * KVM is not available on this host (load kvm_intel/kvm_amd or enable nested virtualisation)"). */
int gw_kvm_open(struct gw_kvm *k, char *err, unsigned errlen);
void gw_kvm_close(struct gw_kvm *k);

#endif
