/* Checking a VM's shape against the limits table (engine/common/limits.h) and its guest spec
 * against its size: the one check the API, the runner and a migration's destination share.
 * No KVM here, so that godwitd can link it. */
#ifndef GW_VM_VM_CONFIG_H
#define GW_VM_VM_CONFIG_H

#include <stdint.h>

/* Memory and vCPU count only. 0 or -EINVAL with the reason in err. */
int gw_vm_size_check(uint64_t memory_bytes, unsigned vcpus, char *err, unsigned errlen);
/* Size, then the guest spec: it must parse and fit the VM's RAM and vCPUs. 0 or -EINVAL. */
int gw_vm_config_check(uint64_t memory_bytes, unsigned vcpus, const char *guest, char *err, unsigned errlen);

#endif
