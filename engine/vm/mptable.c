/* An Intel MultiProcessor Specification 1.4 table (see linux_boot.h): how a guest without
 * ACPI learns its processors, its IOAPIC and which IOAPIC pin each interrupt arrives on. The
 * layout is byte-exact, so entries are written field by field into a local buffer, the
 * checksums computed, and the result copied into guest RAM once. */
#include <errno.h>
#include <string.h>

#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"
#include "guest/abi.h"

#define MPF_SIZE 16u
#define MPC_HDR_SIZE 44u
#define MP_CPU_SIZE 20u
#define MP_ENTRY_SIZE 8u
#define MP_APIC_VERSION 0x14u
#define MP_IOAPIC_VERSION 0x11u
#define MP_IRQ_LEVEL_HIGH 0x0du  /* trigger level (11), polarity active high (01) */
#define MP_IRQ_DEFAULT 0x00u     /* conforms to the bus (ISA: edge, high) */

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_INTSRC = 3, MP_LINTSRC = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }

static uint8_t checksum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--) s = (uint8_t)(s + *p++);
    return (uint8_t)-s;
}

static uint8_t *intsrc(uint8_t *p, uint8_t type, uint16_t flags, uint8_t irq, uint8_t ioapic, uint8_t pin)
{
    p[0] = MP_INTSRC; p[1] = type; put16(p + 2, flags); p[4] = 0 /* ISA bus */;
    p[5] = irq; p[6] = ioapic; p[7] = pin;
    return p + MP_ENTRY_SIZE;
}

int gw_mptable_write(struct gw_guest_mem *m, uint64_t gpa, unsigned ncpus,
                     const struct gw_linux_mmio_dev *devs, unsigned ndevs)
{
    if (ncpus == 0 || ncpus > GW_MAX_VCPUS || ndevs > GW_LINUX_MAX_MMIO_DEVS) return -EINVAL;
    for (unsigned d = 0; d < ndevs; d++)
        if (devs[d].gsi >= GW_IOAPIC_PINS) return -EINVAL;
    uint8_t buf[MPF_SIZE + MPC_HDR_SIZE + GW_MAX_VCPUS * MP_CPU_SIZE +
                (3 + GW_IOAPIC_PINS + 2) * MP_ENTRY_SIZE];
    memset(buf, 0, sizeof buf);
    uint8_t *mpf = buf, *mpc = buf + MPF_SIZE, *p = mpc + MPC_HDR_SIZE;
    uint8_t ioapic_id = (uint8_t)ncpus;
    unsigned count = 0;

    for (unsigned i = 0; i < ncpus; i++, count++) {
        p[0] = MP_PROCESSOR; p[1] = (uint8_t)i; p[2] = MP_APIC_VERSION;
        p[3] = (uint8_t)(1u | (i == 0 ? 2u : 0u));   /* enabled, boot processor */
        put32(p + 4, 0x600);                           /* family 6 signature */
        put32(p + 8, 0x201);                           /* FPU, APIC */
        p += MP_CPU_SIZE;
    }
    p[0] = MP_BUS; p[1] = 0; memcpy(p + 2, "ISA   ", 6); p += MP_ENTRY_SIZE; count++;
    p[0] = MP_IOAPIC; p[1] = ioapic_id; p[2] = MP_IOAPIC_VERSION; p[3] = 1;
    put32(p + 4, (uint32_t)GW_IOAPIC_BASE); p += MP_ENTRY_SIZE; count++;
    /* Every pin, identity-routed as KVM's default GSI routing does; pins that carry a
     * virtio-mmio device are level-triggered. */
    for (unsigned pin = 0; pin < GW_IOAPIC_PINS; pin++, count++) {
        uint16_t flags = MP_IRQ_DEFAULT;
        for (unsigned d = 0; d < ndevs; d++) if (devs[d].gsi == pin) flags = MP_IRQ_LEVEL_HIGH;
        p = intsrc(p, MP_INT, flags, (uint8_t)pin, ioapic_id, (uint8_t)pin);
    }
    p[0] = MP_LINTSRC; p[1] = MP_EXTINT; p[6] = 0xff; p[7] = 0; p += MP_ENTRY_SIZE; count++;
    p[0] = MP_LINTSRC; p[1] = MP_NMI; p[6] = 0xff; p[7] = 1; p += MP_ENTRY_SIZE; count++;

    size_t mpc_len = (size_t)(p - mpc);
    memcpy(mpc, "PCMP", 4);
    put16(mpc + 4, (uint16_t)mpc_len);
    mpc[6] = 4;                                  /* spec 1.4 */
    memcpy(mpc + 8, "GODWIT  ", 8);
    memcpy(mpc + 16, "GODWIT-VM   ", 12);
    put16(mpc + 34, (uint16_t)count);
    put32(mpc + 36, (uint32_t)GW_LAPIC_BASE);
    mpc[7] = checksum(mpc, mpc_len);

    memcpy(mpf, "_MP_", 4);
    put32(mpf + 4, (uint32_t)(gpa + MPF_SIZE));
    mpf[8] = 1;                                  /* length in 16-byte units */
    mpf[9] = 4;
    mpf[10] = checksum(mpf, MPF_SIZE);

    size_t total = MPF_SIZE + mpc_len;
    if (gpa + total > GW_LINUX_KERNEL_MIN) return -E2BIG;
    uint8_t *dst = gw_guest_mem_ptr(m, gpa, total);
    if (!dst) return -EFAULT;
    memcpy(dst, buf, total);
    return (int)total;
}
