/* The e820 map a Linux guest gets (see linux_boot.h): guest RAM as our memory regions lay it
 * out (below the 3-4 GiB hole and from 4 GiB up), with [EBDA, 1 MiB) reserved for the MP
 * table and the legacy BIOS area, and every MMIO window the guest must not use as RAM
 * (virtio-mmio devices, the IOAPIC, the LAPIC) reserved in the hole. */
#include <errno.h>
#include <string.h>

#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"
#include "guest/abi.h"

static int add(struct gw_e820_entry *out, unsigned max, unsigned *n, uint64_t addr, uint64_t size,
               uint32_t type)
{
    if (!size) return 0;
    if (*n == max) return -E2BIG;
    out[(*n)++] = (struct gw_e820_entry){addr, size, type};
    return 0;
}

/* RAM of one region, less the reserved low area [EBDA, 1 MiB). */
static int add_ram(struct gw_e820_entry *out, unsigned max, unsigned *n, uint64_t a, uint64_t end)
{
    int r = 0;
    if (a < GW_LINUX_EBDA) {
        uint64_t low_end = end < GW_LINUX_EBDA ? end : GW_LINUX_EBDA;
        r = add(out, max, n, a, low_end - a, GW_E820_RAM);
        a = low_end;
    }
    if (!r && a < GW_LINUX_KERNEL_MIN && end > a) {
        uint64_t res_end = end < GW_LINUX_KERNEL_MIN ? end : GW_LINUX_KERNEL_MIN;
        r = add(out, max, n, a, res_end - a, GW_E820_RESERVED);
        a = res_end;
    }
    if (!r && end > a) r = add(out, max, n, a, end - a, GW_E820_RAM);
    return r;
}

int gw_e820_build(const struct gw_guest_mem *m, const struct gw_linux_mmio_dev *devs,
                  unsigned ndevs, struct gw_e820_entry *out, unsigned max)
{
    unsigned n = 0;
    int r = 0;
    for (unsigned i = 0; i < m->nregions && !r; i++)
        r = add_ram(out, max, &n, m->regions[i].gpa, m->regions[i].gpa + m->regions[i].size);
    for (unsigned d = 0; d < ndevs && !r; d++)
        r = add(out, max, &n, devs[d].base, devs[d].size, GW_E820_RESERVED);
    if (!r) r = add(out, max, &n, GW_IOAPIC_BASE, GW_IOAPIC_SIZE, GW_E820_RESERVED);
    if (!r) r = add(out, max, &n, GW_LAPIC_BASE, GW_LAPIC_SIZE, GW_E820_RESERVED);
    if (r) return r;
    /* Insertion sort: a handful of entries. */
    for (unsigned i = 1; i < n; i++) {
        struct gw_e820_entry e = out[i];
        unsigned j = i;
        for (; j > 0 && out[j - 1].addr > e.addr; j--) out[j] = out[j - 1];
        out[j] = e;
    }
    for (unsigned i = 1; i < n; i++)
        if (out[i - 1].addr + out[i - 1].size > out[i].addr) return -EINVAL; /* a window over RAM */
    return (int)n;
}
