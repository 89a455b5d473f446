/* Minimal ACPI tables for a Linux guest (see linux_boot.h): RSDP -> XSDT -> FADT (hardware-
 * reduced: no PM timer, no SCI, no legacy fixed hardware to emulate), MADT (one local APIC per
 * vCPU, the IOAPIC, level/active-high overrides for the virtio lines) and a DSDT that
 * describes each virtio-mmio device as LNRO0005 with its window and interrupt, which is how
 * kernels without virtio_mmio's command-line option (Debian's) find them; kernels built
 * without MP-table support (Debian's cloud flavour) find their vCPUs in the MADT. Tables are
 * built in a local buffer, checksummed, and copied into guest RAM once. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"
#include "guest/abi.h"

#define HDR 36u                         /* the standard table header */
#define RSDP_LEN 36u
#define FADT_LEN 276u                   /* revision 6 */
#define FADT_HW_REDUCED (1u << 20)
#define MADT_PCAT_COMPAT 1u
#define MP_IRQ_LEVEL_HIGH 0x000du       /* MPS INTI flags: active high (01), level (11) */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

static uint8_t checksum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--) s = (uint8_t)(s + *p++);
    return (uint8_t)-s;
}

/* Writes a table header at t for a table of len bytes and fills in its checksum last. */
static void header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    put32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, "GODWIT", 6);
    memcpy(t + 16, "GODWITVM", 8);
    put32(t + 24, 1);
    memcpy(t + 28, "GWIT", 4);
    put32(t + 32, 1);
}

static void seal(uint8_t *t, uint32_t len) { t[9] = 0; t[9] = checksum(t, len); }

/* AML package length of a body of n bytes (the length counts its own bytes). */
static size_t pkglen(uint8_t *p, size_t n)
{
    if (n + 1 < 64) { p[0] = (uint8_t)(n + 1); return 1; }
    size_t total = n + 2;               /* two bytes cover up to 4095 */
    p[0] = (uint8_t)(0x40 | (total & 0xf));
    p[1] = (uint8_t)(total >> 4);
    return 2;
}

/* Device(VRnn) { Name(_HID, "LNRO0005") Name(_UID, n) Name(_CRS, ResourceTemplate() {
 *   Memory32Fixed(ReadWrite, base, size) Interrupt(ResourceConsumer, Level, ActiveHigh,
 *   Exclusive) { gsi } }) } */
static size_t aml_device(uint8_t *out, unsigned n, const struct gw_linux_mmio_dev *d)
{
    uint8_t body[128], crs[32];
    size_t b = 0, c = 0;
    crs[c++] = 0x86; put16(crs + c, 9); c += 2; crs[c++] = 1;          /* Memory32Fixed, RW */
    put32(crs + c, (uint32_t)d->base); c += 4;
    put32(crs + c, (uint32_t)d->size); c += 4;
    crs[c++] = 0x89; put16(crs + c, 6); c += 2; crs[c++] = 0x01;       /* consumer, level, high */
    crs[c++] = 1; put32(crs + c, d->gsi); c += 4;
    crs[c++] = 0x79; crs[c++] = 0;                                     /* end tag */

    memcpy(body + b, "VR0", 3); body[b + 3] = (uint8_t)('0' + n); b += 4;
    body[b++] = 0x08; memcpy(body + b, "_HID", 4); b += 4;
    body[b++] = 0x0d; memcpy(body + b, "LNRO0005", 9); b += 9;         /* string + NUL */
    body[b++] = 0x08; memcpy(body + b, "_UID", 4); b += 4;
    body[b++] = 0x0a; body[b++] = (uint8_t)n;
    body[b++] = 0x08; memcpy(body + b, "_CRS", 4); b += 4;
    uint8_t buf[48];
    size_t k = 0;
    buf[k++] = 0x0a; buf[k++] = (uint8_t)c;                            /* BufferSize */
    memcpy(buf + k, crs, c); k += c;
    body[b++] = 0x11;                                                  /* BufferOp */
    b += pkglen(body + b, k);
    memcpy(body + b, buf, k); b += k;

    size_t o = 0;
    out[o++] = 0x5b; out[o++] = 0x82;                                  /* DeviceOp */
    o += pkglen(out + o, b);
    memcpy(out + o, body, b);
    return o + b;
}

static uint32_t build_dsdt(uint8_t *t, const struct gw_linux_mmio_dev *devs, unsigned ndevs)
{
    uint8_t scope[512];
    size_t s = 0;
    memcpy(scope + s, "\\_SB_", 5); s += 5;
    for (unsigned i = 0; i < ndevs; i++) s += aml_device(scope + s, i, &devs[i]);
    size_t o = HDR;
    t[o++] = 0x10;                                                     /* ScopeOp */
    o += pkglen(t + o, s);
    memcpy(t + o, scope, s);
    o += s;
    header(t, "DSDT", (uint32_t)o, 2);
    seal(t, (uint32_t)o);
    return (uint32_t)o;
}

static uint32_t build_madt(uint8_t *t, unsigned ncpus, const struct gw_linux_mmio_dev *devs, unsigned ndevs)
{
    size_t o = HDR;
    put32(t + o, (uint32_t)GW_LAPIC_BASE); put32(t + o + 4, MADT_PCAT_COMPAT); o += 8;
    for (unsigned i = 0; i < ncpus; i++) {
        t[o] = 0; t[o + 1] = 8; t[o + 2] = (uint8_t)i; t[o + 3] = (uint8_t)i;
        put32(t + o + 4, 1);                                           /* enabled */
        o += 8;
    }
    t[o] = 1; t[o + 1] = 12; t[o + 2] = (uint8_t)ncpus; t[o + 3] = 0;  /* IOAPIC, id after the CPUs */
    put32(t + o + 4, (uint32_t)GW_IOAPIC_BASE); put32(t + o + 8, 0);
    o += 12;
    for (unsigned i = 0; i < ndevs; i++) {                             /* ISA line i -> GSI, level */
        t[o] = 2; t[o + 1] = 10; t[o + 2] = 0; t[o + 3] = (uint8_t)devs[i].gsi;
        put32(t + o + 4, devs[i].gsi); put16(t + o + 8, MP_IRQ_LEVEL_HIGH);
        o += 10;
    }
    header(t, "APIC", (uint32_t)o, 5);
    seal(t, (uint32_t)o);
    return (uint32_t)o;
}

static void build_fadt(uint8_t *t, uint64_t dsdt)
{
    memset(t, 0, FADT_LEN);
    header(t, "FACP", FADT_LEN, 6);
    put32(t + 40, (uint32_t)dsdt);                                     /* DSDT */
    put32(t + 112, FADT_HW_REDUCED);                                   /* Flags */
    t[131] = 5;                                                        /* FADT minor revision */
    put64(t + 140, dsdt);                                              /* X_DSDT */
    memcpy(t + 268, "GODWITVM", 8);                                    /* hypervisor vendor */
    seal(t, FADT_LEN);
}

int gw_acpi_write(struct gw_guest_mem *m, uint64_t gpa, unsigned ncpus,
                  const struct gw_linux_mmio_dev *devs, unsigned ndevs)
{
    if (ncpus == 0 || ncpus > GW_MAX_VCPUS || ndevs > GW_LINUX_MAX_MMIO_DEVS || gpa % 16) return -EINVAL;
    for (unsigned i = 0; i < ndevs; i++)
        if (devs[i].gsi >= GW_IOAPIC_PINS || devs[i].base >> 32 || devs[i].size >> 32) return -EINVAL;
    static const uint32_t xsdt_off = 0x40, fadt_off = 0x80;
    uint8_t buf[GW_ACPI_MAX_BYTES];
    memset(buf, 0, sizeof buf);
    uint32_t dsdt_off = fadt_off + FADT_LEN;
    dsdt_off = (dsdt_off + 15) & ~15u;
    uint32_t dsdt_len = build_dsdt(buf + dsdt_off, devs, ndevs);
    uint32_t madt_off = (dsdt_off + dsdt_len + 15) & ~15u;
    uint32_t madt_len = build_madt(buf + madt_off, ncpus, devs, ndevs);
    uint32_t total = madt_off + madt_len;
    if (total > sizeof buf) return -E2BIG;   /* cannot happen within the limits; kept honest */
    build_fadt(buf + fadt_off, gpa + dsdt_off);
    uint8_t *x = buf + xsdt_off;
    header(x, "XSDT", HDR + 16, 1);
    put64(x + HDR, gpa + fadt_off);
    put64(x + HDR + 8, gpa + madt_off);
    seal(x, HDR + 16);
    uint8_t *r = buf;                                                   /* RSDP, revision 2 */
    memcpy(r, "RSD PTR ", 8);
    memcpy(r + 9, "GODWIT", 6);
    r[15] = 2;
    put32(r + 20, RSDP_LEN);
    put64(r + 24, gpa + xsdt_off);
    r[8] = checksum(r, 20);
    r[32] = checksum(r, RSDP_LEN);
    if (gpa + total > GW_LINUX_KERNEL_MIN) return -E2BIG;
    uint8_t *dst = gw_guest_mem_ptr(m, gpa, total);
    if (!dst) return -EFAULT;
    memcpy(dst, buf, total);
    return (int)total;
}
