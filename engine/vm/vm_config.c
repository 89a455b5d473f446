/* VM shape checks (see vm_config.h). */
#include "engine/vm/vm_config.h"

#include <errno.h>
#include <stdio.h>

#include "engine/common/limits.h"
#include "engine/vm/guest_spec.h"
#include "guest/abi.h"

_Static_assert(GW_LIMIT_VCPUS_MAX <= GW_MAX_VCPUS, "the limits table allows more vCPUs than the guest ABI has room for");
_Static_assert(GW_LIMIT_MEMORY_MIN >= GW_MIN_MEMORY, "the limits table allows less memory than the guest layout needs");

int gw_vm_size_check(uint64_t memory_bytes, unsigned vcpus, char *err, unsigned errlen)
{
    if (vcpus == 0 || vcpus > GW_LIMIT_VCPUS_MAX) {
        snprintf(err, errlen, "vcpus must be between 1 and %u", GW_LIMIT_VCPUS_MAX);
        return -EINVAL;
    }
    if (memory_bytes < GW_LIMIT_MEMORY_MIN || memory_bytes > GW_LIMIT_MEMORY_MAX ||
        memory_bytes % GW_LIMIT_MEMORY_STEP) {
        snprintf(err, errlen, "memory must be a multiple of %llu MiB between %llu MiB and %llu GiB",
                 GW_LIMIT_MEMORY_STEP >> 20, GW_LIMIT_MEMORY_MIN >> 20, GW_LIMIT_MEMORY_MAX >> 30);
        return -EINVAL;
    }
    return 0;
}

int gw_vm_config_check(uint64_t memory_bytes, unsigned vcpus, const char *guest, char *err, unsigned errlen)
{
    int r = gw_vm_size_check(memory_bytes, vcpus, err, errlen);
    if (r) return r;
    struct gw_guest_spec spec;
    char why[200];
    r = gw_guest_spec_parse(guest, &spec, why, sizeof why);
    if (!r) {
        uint64_t below = memory_bytes < GW_RAM_HOLE_START ? memory_bytes : GW_RAM_HOLE_START;
        r = gw_guest_spec_check(&spec, below, vcpus, why, sizeof why);
    }
    if (r) snprintf(err, errlen, "guest spec '%.60s': %s", guest ? guest : "", why);
    return r;
}
