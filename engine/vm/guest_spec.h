/* Parsing the guest workload spec an operator types, e.g.
 *   dirtier:ws=256M,rate=64M,pattern=random
 *   idle:ws=512M,pattern=text
 *   disk:blocks=4K
 * into the boot-info fields the guest reads. */
#ifndef GW_VM_GUEST_SPEC_H
#define GW_VM_GUEST_SPEC_H

#include <stdint.h>

#include "guest/abi.h"

struct gw_guest_spec {
    uint32_t workload;          /* enum gw_workload */
    uint32_t pattern;           /* enum gw_pattern */
    uint64_t ws_bytes;
    uint64_t rate_bytes_per_s;
    uint64_t seed;
    uint32_t tick_hz;
    uint32_t verify_pages_per_tick;
    uint64_t disk_block_bytes;
};

/* Parses spec; on error returns -EINVAL and writes the reason into err. Defaults: ws=16M,
 * rate=0 (idle) or 32M (dirtier), pattern=random, seed=1, hz=1000, verify=32 pages/tick. */
int gw_guest_spec_parse(const char *spec, struct gw_guest_spec *out, char *err, unsigned errlen);

/* Checks the spec against the VM's RAM (below the hole) and vCPU count. */
int gw_guest_spec_check(const struct gw_guest_spec *s, uint64_t ram_below_hole, unsigned nvcpus,
                        char *err, unsigned errlen);

#endif
