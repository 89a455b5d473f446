/* Unit tests for the boot set-up: page tables map what the guest needs (RAM, the MMIO hole,
 * the LAPIC, RAM above 4 GiB), nothing beyond, and the GDT/TSS hold what the guest loads. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>

#include "engine/vm/boot.h"
#include "engine/vm/guest_mem.h"
#include "tests/lib/gw_test.h"

GW_TEST(page_tables_identity_map_low_memory)
{
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, 64ull << 20, "test") == 0);
    REQUIRE(gw_boot_build_page_tables(&m) == 0);
    CHECK_EQ(gw_boot_translate(&m, 0), 0);
    CHECK_EQ(gw_boot_translate(&m, 0x100000), 0x100000);
    CHECK_EQ(gw_boot_translate(&m, 0x3ffffff), 0x3ffffff);
    CHECK_EQ(gw_boot_translate(&m, GW_LAPIC_BASE + 0xb0), GW_LAPIC_BASE + 0xb0);
    CHECK_EQ(gw_boot_translate(&m, GW_VIRTIO_MMIO_BASE), GW_VIRTIO_MMIO_BASE);
    /* Nothing above 4 GiB when there is no RAM there, and no non-canonical addresses. */
    CHECK(gw_boot_translate(&m, 4ull << 30) == UINT64_MAX);
    CHECK(gw_boot_translate(&m, 1ull << 48) == UINT64_MAX);
    /* Entries are user-accessible 2 MiB pages; the hole is uncached. */
    const uint64_t *pml4 = gw_guest_mem_ptr(&m, GW_GPA_PML4, 4096);
    const uint64_t *pdpt = gw_guest_mem_ptr(&m, pml4[0] & ~0xfffull, 4096);
    const uint64_t *pd3 = gw_guest_mem_ptr(&m, pdpt[3] & ~0xfffull, 4096);
    REQUIRE(pd3 != NULL);
    CHECK((pml4[0] & 7) == 7);
    CHECK((pd3[511] & 0x80) && (pd3[511] & 0x10));
    gw_guest_mem_destroy(&m);
}

GW_TEST(page_tables_cover_ram_above_the_hole)
{
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, 4ull << 30, "test") == 0); /* 3 GiB low + 1 GiB high */
    CHECK_EQ(m.nregions, 2);
    CHECK_EQ(m.regions[1].gpa, 4ull << 30);
    CHECK_EQ(m.regions[1].size, 1ull << 30);
    REQUIRE(gw_boot_build_page_tables(&m) == 0);
    CHECK_EQ(gw_boot_translate(&m, (4ull << 30) + 12345), (4ull << 30) + 12345);
    CHECK_EQ(gw_boot_translate(&m, (5ull << 30) - 1), (5ull << 30) - 1);
    CHECK(gw_boot_translate(&m, 5ull << 30) == UINT64_MAX);
    /* RAM addresses map to the right memfd offsets, the hole to none. */
    CHECK_EQ(gw_guest_mem_offset(&m, 4ull << 30), 3ull << 30);
    CHECK(gw_guest_mem_offset(&m, GW_RAM_HOLE_START) == UINT64_MAX);
    CHECK_EQ(gw_guest_mem_gpa(&m, 3ull << 30), 4ull << 30);
    gw_guest_mem_destroy(&m);
}

GW_TEST(guest_mem_ptr_refuses_ranges_outside_ram)
{
    static uint8_t buf[1 << 16];
    struct gw_guest_mem m;
    gw_guest_mem_wrap(&m, buf, sizeof buf);
    CHECK(gw_guest_mem_ptr(&m, 0, sizeof buf) == buf);
    CHECK(gw_guest_mem_ptr(&m, 1, sizeof buf) == NULL);
    CHECK(gw_guest_mem_ptr(&m, sizeof buf, 1) == NULL);
    CHECK(gw_guest_mem_ptr(&m, UINT64_MAX, 2) == NULL);
    CHECK(gw_guest_mem_ptr(&m, 100, UINT64_MAX) == NULL);
    CHECK(gw_guest_mem_ptr(&m, 4096, 4096) == buf + 4096);
}

GW_TEST(gdt_and_tss_per_vcpu)
{
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, 16ull << 20, "test") == 0);
    REQUIRE(gw_boot_build_gdt(&m, 4) == 0);
    const uint64_t *gdt = gw_guest_mem_ptr(&m, GW_GPA_GDT, 4096);
    CHECK(gdt[1] & (1ull << 53));             /* kernel code: long mode */
    CHECK(((gdt[4] >> 45) & 3) == 3);         /* user code: DPL 3 */
    for (unsigned i = 0; i < 4; i++) {
        uint64_t d = gdt[5 + 2 * i];
        uint64_t base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
        CHECK_EQ(base, GW_GPA_TSS + i * GW_TSS_STRIDE);
        uint64_t rsp0;
        memcpy(&rsp0, (uint8_t *)gw_guest_mem_ptr(&m, base, 104) + 4, 8);
        CHECK_EQ(rsp0, GW_GPA_KSTACKS + (i + 1) * GW_KSTACK_SIZE - 16);
    }
    CHECK_EQ(gw_boot_build_gdt(&m, 0), -EINVAL);
    CHECK_EQ(gw_boot_build_gdt(&m, GW_MAX_VCPUS + 1), -EINVAL);
    gw_guest_mem_destroy(&m);
}

GW_TEST(boot_registers_enter_long_mode)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    memset(&sregs, 0, sizeof sregs);
    gw_boot_vcpu_regs(2, &regs, &sregs);
    CHECK_EQ(regs.rip, GW_GPA_CODE);
    CHECK_EQ(regs.rdi, 2);
    CHECK_EQ(regs.rsi, GW_GPA_BOOTINFO);
    CHECK(sregs.efer & 0x500);
    CHECK(sregs.cr0 & 0x80000001u);
    CHECK_EQ(sregs.cs.l, 1);
    CHECK_EQ(sregs.tr.selector, GW_SEL_TSS0 + 32);
    CHECK_EQ(sregs.cr3, GW_GPA_PML4);
}

GW_TEST(guest_image_fits)
{
    uint64_t len;
    const uint8_t *img = gw_boot_guest_image(&len);
    CHECK(img != NULL);
    CHECK(len > 512 && len <= GW_GUEST_CODE_MAX);
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, 16ull << 20, "test") == 0);
    CHECK_EQ(gw_boot_load_image(&m, img, len), 0);
    CHECK_EQ(gw_boot_load_image(&m, img, GW_GUEST_CODE_MAX + 1), -E2BIG);
    CHECK(memcmp(gw_guest_mem_ptr(&m, GW_GPA_CODE, len), img, len) == 0);
    gw_guest_mem_destroy(&m);
}
