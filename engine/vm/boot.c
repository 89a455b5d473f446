/* Page tables, GDT/TSS, boot info and initial vCPU registers (see boot.h). */
#include "engine/vm/boot.h"

#include <errno.h>
#include <linux/kvm.h>
#include <string.h>

#include "engine/vm/guest_mem.h"

#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_US 0x4ull
#define PTE_PWT 0x8ull
#define PTE_PCD 0x10ull
#define PTE_PS 0x80ull
#define PTE_ADDR 0x000ffffffffff000ull

extern const uint8_t gw_guest_image_start[];
extern const uint8_t gw_guest_image_end[];

const uint8_t *gw_boot_guest_image(uint64_t *len)
{
    *len = (uint64_t)(gw_guest_image_end - gw_guest_image_start);
    return gw_guest_image_start;
}

static uint64_t *table(struct gw_guest_mem *m, uint64_t gpa)
{
    return gw_guest_mem_ptr(m, gpa, 4096);
}

int gw_boot_build_page_tables(struct gw_guest_mem *m)
{
    uint64_t top = GW_RAM_HOLE_END;
    for (unsigned i = 0; i < m->nregions; i++) {
        uint64_t end = m->regions[i].gpa + m->regions[i].size;
        if (end > top) top = end;
    }
    uint64_t gib = (top + (1ull << 30) - 1) >> 30;
    uint64_t pd_first = GW_GPA_PML4 + 2 * 4096;
    if (gib > 512 || pd_first + gib * 4096 > GW_GPA_PT_END) return -E2BIG;

    uint64_t *pml4 = table(m, GW_GPA_PML4);
    uint64_t *pdpt = table(m, GW_GPA_PML4 + 4096);
    if (!pml4 || !pdpt) return -EFAULT;
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    /* Every page user-accessible: the workload runs at CPL3 over all of RAM, and CR4 leaves
     * SMEP/SMAP off so the CPL0 part may run from the same pages. */
    pml4[0] = (GW_GPA_PML4 + 4096) | PTE_P | PTE_RW | PTE_US;
    for (uint64_t g = 0; g < gib; g++) {
        uint64_t pd_gpa = pd_first + g * 4096;
        uint64_t *pd = table(m, pd_gpa);
        if (!pd) return -EFAULT;
        pdpt[g] = pd_gpa | PTE_P | PTE_RW | PTE_US;
        for (uint64_t e = 0; e < 512; e++) {
            uint64_t pa = (g << 30) | (e << 21);
            uint64_t flags = PTE_P | PTE_RW | PTE_US | PTE_PS;
            if (pa >= GW_RAM_HOLE_START && pa < GW_RAM_HOLE_END) flags |= PTE_PCD | PTE_PWT;
            pd[e] = pa | flags;
        }
    }
    return 0;
}

uint64_t gw_boot_translate(const struct gw_guest_mem *m, uint64_t va)
{
    if (va >> 48) return UINT64_MAX; /* our guests use the lower half only */
    const uint64_t *pml4 = gw_guest_mem_ptr(m, GW_GPA_PML4, 4096);
    if (!pml4) return UINT64_MAX;
    uint64_t e = pml4[(va >> 39) & 511];
    if (!(e & PTE_P)) return UINT64_MAX;
    const uint64_t *pdpt = gw_guest_mem_ptr(m, e & PTE_ADDR, 4096);
    if (!pdpt) return UINT64_MAX;
    e = pdpt[(va >> 30) & 511];
    if (!(e & PTE_P)) return UINT64_MAX;
    if (e & PTE_PS) return (e & PTE_ADDR & ~((1ull << 30) - 1)) | (va & ((1ull << 30) - 1));
    const uint64_t *pd = gw_guest_mem_ptr(m, e & PTE_ADDR, 4096);
    if (!pd) return UINT64_MAX;
    e = pd[(va >> 21) & 511];
    if (!(e & PTE_P)) return UINT64_MAX;
    if (e & PTE_PS) return (e & PTE_ADDR & ~((1ull << 21) - 1)) | (va & ((1ull << 21) - 1));
    const uint64_t *pt = gw_guest_mem_ptr(m, e & PTE_ADDR, 4096);
    if (!pt) return UINT64_MAX;
    e = pt[(va >> 12) & 511];
    if (!(e & PTE_P)) return UINT64_MAX;
    return (e & PTE_ADDR) | (va & 4095);
}

int gw_boot_build_gdt(struct gw_guest_mem *m, unsigned nvcpus)
{
    if (nvcpus == 0 || nvcpus > GW_MAX_VCPUS) return -EINVAL;
    uint64_t *gdt = gw_guest_mem_ptr(m, GW_GPA_GDT, 4096);
    uint8_t *tss = gw_guest_mem_ptr(m, GW_GPA_TSS, GW_MAX_VCPUS * GW_TSS_STRIDE);
    if (!gdt || !tss) return -EFAULT;
    memset(gdt, 0, 4096);
    gdt[1] = 0x00af9a000000ffffull; /* 0x08 kernel code, 64-bit */
    gdt[2] = 0x00cf92000000ffffull; /* 0x10 kernel data */
    gdt[3] = 0x00cff2000000ffffull; /* 0x18 user data, DPL 3 */
    gdt[4] = 0x00affa000000ffffull; /* 0x20 user code, 64-bit, DPL 3 */
    memset(tss, 0, GW_MAX_VCPUS * GW_TSS_STRIDE);
    for (unsigned i = 0; i < nvcpus; i++) {
        uint64_t base = GW_GPA_TSS + i * GW_TSS_STRIDE;
        uint64_t limit = 103;
        /* 64-bit busy TSS (type 0xb): it is loaded through SREGS, never with ltr. */
        gdt[5 + 2 * i] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x8bull << 40) |
                         ((base >> 24) & 0xff) << 56;
        gdt[6 + 2 * i] = base >> 32;
        uint64_t rsp0 = GW_GPA_KSTACKS + (i + 1) * GW_KSTACK_SIZE - 16;
        memcpy(tss + i * GW_TSS_STRIDE + 4, &rsp0, 8);
        uint16_t iomap = 104; /* no I/O bitmap: IOPL 3 grants the workload its ports */
        memcpy(tss + i * GW_TSS_STRIDE + 102, &iomap, 2);
    }
    return 0;
}

int gw_boot_load_image(struct gw_guest_mem *m, const void *image, uint64_t len)
{
    if (len > GW_GUEST_CODE_MAX) return -E2BIG;
    void *dst = gw_guest_mem_ptr(m, GW_GPA_CODE, len);
    if (!dst) return -EFAULT;
    memcpy(dst, image, len);
    return 0;
}

int gw_boot_write_info(struct gw_guest_mem *m, const struct gw_boot_info *bi)
{
    void *dst = gw_guest_mem_ptr(m, GW_GPA_BOOTINFO, sizeof *bi);
    if (!dst) return -EFAULT;
    memcpy(dst, bi, sizeof *bi);
    return 0;
}

/* A flat segment: base 0, 4 GiB limit, present, 4 KiB granularity; 64-bit code when code64. */
static void gw_boot_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, int code64, int dpl)
{
    memset(s, 0, sizeof *s);
    s->selector = sel;
    s->base = 0;
    s->limit = 0xffffffff;
    s->type = type;
    s->present = 1;
    s->dpl = (uint8_t)dpl;
    s->s = 1;
    s->l = code64 ? 1 : 0;
    s->db = code64 ? 0 : 1;
    s->g = 1;
}

void gw_boot_long_mode(struct kvm_sregs *sregs, uint16_t cs, uint16_t ds, uint16_t tr, uint64_t tss,
                       uint64_t gdt, uint16_t gdt_limit)
{
    gw_boot_segment(&sregs->cs, cs, 0xb, 1, 0);
    gw_boot_segment(&sregs->ds, ds, 0x3, 0, 0);
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    memset(&sregs->tr, 0, sizeof sregs->tr);
    sregs->tr.selector = tr;
    sregs->tr.base = tss;
    sregs->tr.limit = 103;
    sregs->tr.type = 0xb;
    sregs->tr.present = 1;
    memset(&sregs->ldt, 0, sizeof sregs->ldt);
    sregs->ldt.unusable = 1;
    sregs->ldt.type = 0x2;
    sregs->gdt.base = gdt;
    sregs->gdt.limit = gdt_limit;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;
    sregs->cr3 = GW_GPA_PML4;
    sregs->cr4 = 0x20;                               /* PAE */
    sregs->cr0 = 0x80000000u | 0x20 | 0x10 | 0x1;    /* PG NE ET PE */
    sregs->efer = 0x100 | 0x400;                     /* LME, LMA */
}

void gw_boot_vcpu_regs(unsigned cpu, struct kvm_regs *regs, struct kvm_sregs *sregs)
{
    memset(regs, 0, sizeof *regs);
    regs->rip = GW_GPA_CODE;
    regs->rsp = GW_GPA_KSTACKS + (cpu + 1) * GW_KSTACK_SIZE - 16;
    regs->rdi = cpu;
    regs->rsi = GW_GPA_BOOTINFO;
    regs->rflags = 0x2;

    /* sregs arrives filled by KVM_GET_SREGS (keeps the APIC base and friends); we set modes. */
    gw_boot_long_mode(sregs, GW_SEL_KCODE, GW_SEL_KDATA, (uint16_t)(GW_SEL_TSS0 + 16 * cpu),
                      GW_GPA_TSS + cpu * GW_TSS_STRIDE, GW_GPA_GDT, (uint16_t)(8 * (5 + 2 * GW_MAX_VCPUS) - 1));
    sregs->cr4 |= 0x200 | 0x400;                 /* OSFXSR, OSXMMEXCPT */
    sregs->cr0 |= 0x10000 | 0x2;                 /* WP, MP */
    sregs->efer |= 0x1;                          /* SCE */
}
