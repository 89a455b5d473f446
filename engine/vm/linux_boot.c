/* Linux boot set-up around a loaded kernel (see linux_boot.h): command line, initrd, zero
 * page, GDT/TSS, identity page tables, MP table and the boot processor's registers. Offsets
 * in the zero page are those of struct boot_params (arch/x86/include/uapi/asm/bootparam.h);
 * the zero page is built in a local buffer and copied into guest RAM once. */
#include "engine/vm/linux_boot.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>

#include "engine/vm/boot.h"
#include "engine/vm/guest_mem.h"
#include "guest/abi.h"

/* struct boot_params offsets */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1
#define BP_BOOT_FLAG 0x1fe
#define BP_HEADER 0x202
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS 0x211
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_CMD_LINE_PTR 0x228
#define BP_KERNEL_ALIGNMENT 0x230
#define BP_CMDLINE_SIZE 0x238
#define BP_E820_TABLE 0x2d0
#define E820_ENTRY_SIZE 20

#define LOADED_HIGH 0x01
#define LOADER_UNDEFINED 0xff  /* type_of_loader: a boot loader without an assigned id */

#define DEFAULT_CMDLINE "console=ttyS0 earlyprintk=ttyS0 reboot=k panic=-1"

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

int gw_linux_cmdline(const char *user, const struct gw_linux_mmio_dev *devs, unsigned ndevs,
                     uint32_t max_len, char *out, size_t cap)
{
    if (max_len > GW_LINUX_CMDLINE_MAX - 1) max_len = GW_LINUX_CMDLINE_MAX - 1;
    size_t n = (size_t)snprintf(out, cap, "%s", user ? user : DEFAULT_CMDLINE);
    for (unsigned d = 0; d < ndevs && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, "%svirtio_mmio.device=%lluK@%#llx:%u",
                              n ? " " : "", (unsigned long long)(devs[d].size >> 10),
                              (unsigned long long)devs[d].base, devs[d].gsi);
    if (n >= cap || n > max_len) return -E2BIG;
    return (int)n;
}

static int place_initrd(struct gw_guest_mem *m, const struct gw_linux_boot_params *p,
                        uint64_t *addr, char *err, unsigned errlen)
{
    *addr = 0;
    if (!p->initrd) return 0;
    uint64_t len = p->initrd_len;
    uint64_t top = m->regions[0].size;   /* RAM below the hole */
    uint64_t lim = (uint64_t)p->kernel->initrd_addr_max + 1;
    if (top > lim) top = lim;
    uint64_t low = (p->kernel->load_end + 4095) & ~4095ull;
    if (len > GW_LINUX_INITRD_MAX || len > top || ((top - len) & ~4095ull) < low) {
        snprintf(err, errlen, "initrd of %llu MiB does not fit in RAM between the kernel's end "
                 "(%#llx) and %#llx", (unsigned long long)(len >> 20), (unsigned long long)low,
                 (unsigned long long)top);
        return -ERANGE;
    }
    uint64_t a = (top - len) & ~4095ull;
    void *dst = gw_guest_mem_ptr(m, a, len);
    if (!dst) { snprintf(err, errlen, "initrd at %#llx is not in guest RAM", (unsigned long long)a); return -ERANGE; }
    memcpy(dst, p->initrd, len);
    *addr = a;
    return 0;
}

static int write_zero_page(struct gw_guest_mem *m, const struct gw_linux_boot_params *p,
                           uint64_t initrd_addr, char *err, unsigned errlen)
{
    uint8_t zp[4096];
    memset(zp, 0, sizeof zp);
    const struct gw_linux_kernel *k = p->kernel;
    if (k->setup_hdr_len) {
        memcpy(zp + BP_HDR, k->setup_hdr, k->setup_hdr_len);
    } else {
        /* An ELF kernel has no setup header: write the fields the kernel checks. */
        put16(zp + BP_BOOT_FLAG, 0xaa55);
        memcpy(zp + BP_HEADER, "HdrS", 4);
        put16(zp + BP_VERSION, 0x020c);
        put32(zp + BP_KERNEL_ALIGNMENT, 0x1000000);
        put32(zp + BP_CMDLINE_SIZE, GW_LINUX_CMDLINE_MAX - 1);
    }
    zp[BP_TYPE_OF_LOADER] = LOADER_UNDEFINED;
    zp[BP_LOADFLAGS] |= LOADED_HIGH;
    put32(zp + BP_CMD_LINE_PTR, (uint32_t)GW_LINUX_CMDLINE);
    put32(zp + BP_EXT_CMD_LINE_PTR, (uint32_t)(GW_LINUX_CMDLINE >> 32));
    if (initrd_addr) {
        put32(zp + BP_RAMDISK_IMAGE, (uint32_t)initrd_addr);
        put32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd_addr >> 32));
        put32(zp + BP_RAMDISK_SIZE, (uint32_t)p->initrd_len);
        put32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)p->initrd_len >> 32));
    }
    struct gw_e820_entry e820[GW_E820_MAX];
    int n = gw_e820_build(m, p->devs, p->ndevs, e820, GW_E820_MAX);
    if (n < 0) { snprintf(err, errlen, "cannot build the e820 map: %s", strerror(-n)); return n; }
    zp[BP_E820_ENTRIES] = (uint8_t)n;
    for (int i = 0; i < n; i++) {
        uint8_t *e = zp + BP_E820_TABLE + i * E820_ENTRY_SIZE;
        put64(e, e820[i].addr);
        put64(e + 8, e820[i].size);
        put32(e + 16, e820[i].type);
    }
    void *dst = gw_guest_mem_ptr(m, GW_LINUX_ZERO_PAGE, sizeof zp);
    if (!dst) { snprintf(err, errlen, "no RAM for the zero page"); return -EFAULT; }
    memcpy(dst, zp, sizeof zp);
    return 0;
}

static int write_gdt(struct gw_guest_mem *m)
{
    uint64_t gdt[6] = {
        0, 0,
        0x00af9b000000ffffull, /* 0x10: __BOOT_CS, 64-bit code */
        0x00cf93000000ffffull, /* 0x18: __BOOT_DS, flat data */
        0, 0,                  /* 0x20: TSS (16 bytes), filled below */
    };
    uint64_t base = GW_LINUX_TSS, limit = 103;
    gdt[4] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x8bull << 40) | ((base >> 24) & 0xff) << 56;
    gdt[5] = base >> 32;
    void *g = gw_guest_mem_ptr(m, GW_LINUX_GDT, sizeof gdt);
    void *t = gw_guest_mem_ptr(m, GW_LINUX_TSS, 104);
    if (!g || !t) return -EFAULT;
    memcpy(g, gdt, sizeof gdt);
    memset(t, 0, 104);
    return 0;
}

int gw_linux_setup(struct gw_guest_mem *m, const struct gw_linux_boot_params *p, char *err,
                   unsigned errlen)
{
    if (m->nregions == 0 || m->regions[0].gpa != 0 || m->regions[0].size < GW_LINUX_MIN_MEMORY) {
        snprintf(err, errlen, "a Linux guest needs at least %llu MiB of RAM", GW_LINUX_MIN_MEMORY >> 20);
        return -EINVAL;
    }
    size_t clen = strlen(p->cmdline);
    if (clen >= GW_LINUX_CMDLINE_MAX || clen > p->kernel->cmdline_size) {
        snprintf(err, errlen, "command line of %zu bytes is longer than the kernel takes (%u)",
                 clen, p->kernel->cmdline_size);
        return -E2BIG;
    }
    char *cl = gw_guest_mem_ptr(m, GW_LINUX_CMDLINE, clen + 1);
    if (!cl) { snprintf(err, errlen, "no RAM for the command line"); return -EFAULT; }
    memcpy(cl, p->cmdline, clen + 1);
    uint64_t initrd_addr;
    int r = place_initrd(m, p, &initrd_addr, err, errlen);
    if (!r) r = write_zero_page(m, p, initrd_addr, err, errlen);
    if (r) return r;
    r = write_gdt(m);
    if (!r) r = gw_boot_build_page_tables(m);
    if (r) { snprintf(err, errlen, "cannot write the GDT or page tables: %s", strerror(-r)); return r; }
    int n = gw_mptable_write(m, GW_LINUX_MPTABLE, p->ncpus, p->devs, p->ndevs);
    if (n < 0) { snprintf(err, errlen, "cannot write the MP table: %s", strerror(-n)); return n; }
    return 0;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, int code64)
{
    memset(s, 0, sizeof *s);
    s->selector = sel;
    s->limit = 0xffffffff;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->l = code64 ? 1 : 0;
    s->db = code64 ? 0 : 1;
    s->g = 1;
}

void gw_linux_bsp_regs(const struct gw_linux_kernel *k, struct kvm_regs *regs,
                       struct kvm_sregs *sregs)
{
    memset(regs, 0, sizeof *regs);
    regs->rip = k->entry;
    regs->rsi = GW_LINUX_ZERO_PAGE;
    regs->rsp = GW_LINUX_BOOT_STACK;
    regs->rbp = GW_LINUX_BOOT_STACK;
    regs->rflags = 0x2;  /* interrupts off */

    seg(&sregs->cs, 0x10, 0xb, 1);
    seg(&sregs->ds, 0x18, 0x3, 0);
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    memset(&sregs->tr, 0, sizeof sregs->tr);
    sregs->tr.selector = 0x20;
    sregs->tr.base = GW_LINUX_TSS;
    sregs->tr.limit = 103;
    sregs->tr.type = 0xb;
    sregs->tr.present = 1;
    memset(&sregs->ldt, 0, sizeof sregs->ldt);
    sregs->ldt.unusable = 1;
    sregs->ldt.type = 0x2;
    sregs->gdt.base = GW_LINUX_GDT;
    sregs->gdt.limit = 6 * 8 - 1;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;
    sregs->cr3 = GW_GPA_PML4;
    sregs->cr4 = 0x20;                                     /* PAE */
    sregs->cr0 = 0x80000000u | 0x20 | 0x10 | 0x1;          /* PG NE ET PE */
    sregs->efer = 0x100 | 0x400;                           /* LME, LMA */
}
