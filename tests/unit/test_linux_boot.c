/* Unit tests of the Linux loader on synthetic images: a small vmlinux ELF and bzImages around
 * it with each supported compression, then hostile variants of both (truncated, wrong magic,
 * fields pointing outside the file, segments outside RAM, overlapping or over our boot data,
 * an entry outside the kernel, corrupt or oversized payloads). Every hostile image must be
 * refused with its own reason and leave guest memory untouched. Also: the e820 map, the MP
 * table, the command line, the zero page, the initrd placement, CPUID and the BSP registers. */
#include <elf.h>
#include <errno.h>
#include <linux/kvm.h>
#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "engine/vm/cpuid.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"
#include "guest/abi.h"
#include "tests/lib/gw_test.h"

#define MEM (64ull << 20)
#define KADDR 0x1000000ull
#define FILL 0x5a

static uint8_t *ram;
static struct gw_guest_mem mem;

static void fresh_mem(void)
{
    if (!ram) ram = malloc(MEM);
    memset(ram, FILL, MEM);
    gw_guest_mem_wrap(&mem, ram, MEM);
}

static bool mem_untouched(void)
{
    for (uint64_t i = 0; i < MEM; i++) if (ram[i] != FILL) return false;
    return true;
}

/* A vmlinux-like ELF: two PT_LOAD segments (text with the entry, then data + bss) and a
 * PT_NOTE that must be ignored. Returns its length. */
struct elf_spec {
    uint64_t text_paddr, data_paddr, entry;
    uint64_t text_size, data_filesz, data_memsz;
};

static size_t make_elf(uint8_t *buf, size_t cap, const struct elf_spec *s)
{
    size_t hdrs = sizeof(Elf64_Ehdr) + 3 * sizeof(Elf64_Phdr);
    size_t len = hdrs + s->text_size + s->data_filesz;
    if (len > cap) abort();
    memset(buf, 0, len);
    Elf64_Ehdr eh = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_entry = s->entry;
    eh.e_phoff = sizeof eh;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = 3;
    memcpy(buf, &eh, sizeof eh);
    Elf64_Phdr ph[3] = {
        {.p_type = PT_LOAD, .p_offset = hdrs, .p_paddr = s->text_paddr, .p_vaddr = 0xffffffff81000000ull,
         .p_filesz = s->text_size, .p_memsz = s->text_size},
        {.p_type = PT_LOAD, .p_offset = hdrs + s->text_size, .p_paddr = s->data_paddr,
         .p_filesz = s->data_filesz, .p_memsz = s->data_memsz},
        {.p_type = PT_NOTE, .p_offset = 0, .p_paddr = 0, .p_filesz = 4, .p_memsz = 4},
    };
    memcpy(buf + sizeof eh, ph, sizeof ph);
    for (uint64_t i = 0; i < s->text_size; i++) buf[hdrs + i] = (uint8_t)(0x90 + i % 7);
    for (uint64_t i = 0; i < s->data_filesz; i++) buf[hdrs + s->text_size + i] = (uint8_t)(0x11 + i % 5);
    return len;
}

static const struct elf_spec good_elf = {
    .text_paddr = KADDR, .data_paddr = KADDR + 0x200000, .entry = KADDR + 0x40,
    .text_size = 0x3000, .data_filesz = 0x800, .data_memsz = 0x5000,
};

static uint8_t elf_buf[1 << 16];

GW_TEST(elf_loads_segments_at_physical_addresses)
{
    fresh_mem();
    size_t len = make_elf(elf_buf, sizeof elf_buf, &good_elf);
    struct gw_linux_kernel k;
    char err[256] = "";
    REQUIRE(gw_linux_load_kernel(&mem, elf_buf, len, &k, err, sizeof err) == 0);
    CHECK_EQ(k.entry, KADDR + 0x40);
    CHECK_EQ(k.load_start, KADDR);
    CHECK_EQ(k.load_end, KADDR + 0x200000 + 0x5000);
    CHECK(!k.is_bzimage);
    size_t hdrs = sizeof(Elf64_Ehdr) + 3 * sizeof(Elf64_Phdr);
    CHECK(memcmp(ram + KADDR, elf_buf + hdrs, 0x3000) == 0);
    CHECK(memcmp(ram + KADDR + 0x200000, elf_buf + hdrs + 0x3000, 0x800) == 0);
    /* .bss zeroed, bytes around the segments untouched. */
    CHECK(ram[KADDR + 0x200000 + 0x800] == 0 && ram[KADDR + 0x200000 + 0x4fff] == 0);
    CHECK(ram[KADDR + 0x200000 + 0x5000] == FILL && ram[KADDR - 1] == FILL && ram[KADDR + 0x3000] == FILL);
}

/* Loads a hostile image: must fail with want and write nothing. */
static void expect_refused(const uint8_t *img, size_t len, int want, const char *needle)
{
    fresh_mem();
    struct gw_linux_kernel k;
    char err[256] = "";
    int r = gw_linux_load_kernel(&mem, img, len, &k, err, sizeof err);
    CHECK_EQ(r, want);
    CHECK(err[0] != 0);
    if (needle && !strstr(err, needle)) {
        fprintf(stderr, "  error '%s' lacks '%s'\n", err, needle);
        CHECK(!"error message names the fault");
    }
    CHECK(mem_untouched());
}

GW_TEST(elf_hostile_images_are_refused_untouched)
{
    size_t len = make_elf(elf_buf, sizeof elf_buf, &good_elf);
    static uint8_t bad[sizeof elf_buf];
    Elf64_Ehdr *eh = (Elf64_Ehdr *)bad;
    Elf64_Phdr *ph = (Elf64_Phdr *)(bad + sizeof(Elf64_Ehdr));

    expect_refused(elf_buf, 40, -EINVAL, "truncated");
    expect_refused(elf_buf, 0, -EINVAL, "neither");
    memcpy(bad, elf_buf, len); bad[1] = 'X';
    expect_refused(bad, len, -EINVAL, "neither");
    memcpy(bad, elf_buf, len); bad[EI_CLASS] = ELFCLASS32;
    expect_refused(bad, len, -EINVAL, "64-bit");
    memcpy(bad, elf_buf, len); eh->e_machine = EM_386;
    expect_refused(bad, len, -EINVAL, "x86-64");
    memcpy(bad, elf_buf, len); eh->e_phnum = 0;
    expect_refused(bad, len, -EINVAL, "program headers");
    memcpy(bad, elf_buf, len); eh->e_phnum = 1000;
    expect_refused(bad, len, -EINVAL, "program headers");
    memcpy(bad, elf_buf, len); eh->e_phoff = len - 8;
    expect_refused(bad, len, -EINVAL, "outside");
    memcpy(bad, elf_buf, len); eh->e_phoff = UINT64_MAX - 8;
    expect_refused(bad, len, -EINVAL, "outside");
    /* Program headers past the end of a truncated file. */
    expect_refused(elf_buf, sizeof(Elf64_Ehdr) + 10, -EINVAL, "outside");
    /* Segment data beyond the file, or filesz > memsz. */
    memcpy(bad, elf_buf, len); ph[0].p_filesz = len;
    expect_refused(bad, len, -EINVAL, "file");
    memcpy(bad, elf_buf, len); ph[1].p_offset = UINT64_MAX - 4;
    expect_refused(bad, len, -EINVAL, "file");
    memcpy(bad, elf_buf, len); ph[1].p_memsz = ph[1].p_filesz - 1;
    expect_refused(bad, len, -EINVAL, "exceed");
    /* Segments outside RAM, wrapping, below 1 MiB (over our boot data), overlapping. */
    memcpy(bad, elf_buf, len); ph[1].p_paddr = MEM - 0x1000;
    expect_refused(bad, len, -ERANGE, "guest RAM");
    memcpy(bad, elf_buf, len); ph[1].p_paddr = UINT64_MAX - 0x100;
    expect_refused(bad, len, -ERANGE, "guest RAM");
    memcpy(bad, elf_buf, len); ph[0].p_paddr = 0x7000; eh->e_entry = 0x7040;
    expect_refused(bad, len, -ERANGE, "1 MiB");
    memcpy(bad, elf_buf, len); ph[1].p_paddr = KADDR + 0x1000;
    expect_refused(bad, len, -ERANGE, "overlaps");
    /* Entry outside every segment, in .bss, or outside RAM. */
    memcpy(bad, elf_buf, len); eh->e_entry = KADDR + 0x100000;
    expect_refused(bad, len, -ERANGE, "entry");
    memcpy(bad, elf_buf, len); eh->e_entry = KADDR + 0x200000 + 0x1000;
    expect_refused(bad, len, -ERANGE, "entry");
    memcpy(bad, elf_buf, len); eh->e_entry = 0xffffffff81000000ull;
    expect_refused(bad, len, -ERANGE, "entry");
    /* No loadable segment at all. */
    memcpy(bad, elf_buf, len); ph[0].p_type = PT_NOTE; ph[1].p_type = PT_NOTE;
    expect_refused(bad, len, -EINVAL, "no loadable");
}

/* ---- bzImages ---- */

enum comp { C_GZIP, C_XZ, C_ZSTD, C_LZ4 };

static size_t compress_payload(enum comp c, const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    size_t n = 0;
    switch (c) {
    case C_GZIP: {
        z_stream z = {0};
        if (deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
        z.next_in = (Bytef *)in; z.avail_in = (uInt)len; z.next_out = out; z.avail_out = (uInt)cap;
        if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
        n = cap - z.avail_out;
        deflateEnd(&z);
        return n; /* the gzip trailer already ends with the size */
    }
    case C_XZ:
        if (lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out, &n, cap) != LZMA_OK) abort();
        break;
    case C_ZSTD:
        n = ZSTD_compress(out, cap, in, len, 19);
        if (ZSTD_isError(n)) abort();
        break;
    case C_LZ4: {
        uint32_t magic = 0x184c2102u;
        memcpy(out, &magic, 4);
        int b = LZ4_compress_default((const char *)in, (char *)out + 8, (int)len, (int)cap - 12);
        if (b <= 0) abort();
        uint32_t bl = (uint32_t)b;
        memcpy(out + 4, &bl, 4);
        n = 8 + (size_t)b;
        break;
    }
    }
    uint32_t sz = (uint32_t)len;
    memcpy(out + n, &sz, 4);
    return n + 4;
}

#define SETUP_SECTS 3
#define SETUP_BYTES ((SETUP_SECTS + 1) * 512)

/* A bzImage: setup sectors with the header, then the payload right after them. */
static size_t make_bzimage(uint8_t *img, size_t cap, const uint8_t *payload, size_t plen)
{
    if (SETUP_BYTES + plen > cap) abort();
    memset(img, 0, SETUP_BYTES);
    img[0x1f1] = SETUP_SECTS;
    img[0x1fe] = 0x55; img[0x1ff] = 0xaa;
    img[0x200] = 0xeb; img[0x201] = 0x6a;               /* header ends at 0x26c */
    memcpy(img + 0x202, "HdrS", 4);
    img[0x206] = 0x0f; img[0x207] = 0x02;               /* protocol 2.15 */
    img[0x211] = 0x01;                                  /* LOADED_HIGH */
    uint32_t v = 0x7fffffff; memcpy(img + 0x22c, &v, 4); /* initrd_addr_max */
    v = 0x200000; memcpy(img + 0x230, &v, 4);           /* kernel_alignment */
    img[0x234] = 1;
    img[0x236] = 0x7f;                                  /* xloadflags incl. XLF_KERNEL_64 */
    v = 2047; memcpy(img + 0x238, &v, 4);               /* cmdline_size */
    v = 0; memcpy(img + 0x248, &v, 4);                  /* payload_offset */
    v = (uint32_t)plen; memcpy(img + 0x24c, &v, 4);
    uint64_t pref = KADDR; memcpy(img + 0x258, &pref, 8);
    v = 0x400000; memcpy(img + 0x260, &v, 4);           /* init_size */
    memcpy(img + SETUP_BYTES, payload, plen);
    return SETUP_BYTES + plen;
}

static uint8_t payload[1 << 16], bz[1 << 17], bad_bz[1 << 17];

static size_t good_bzimage(enum comp c)
{
    size_t elen = make_elf(elf_buf, sizeof elf_buf, &good_elf);
    size_t plen = compress_payload(c, elf_buf, elen, payload, sizeof payload - 4);
    return make_bzimage(bz, sizeof bz, payload, plen);
}

GW_TEST(bzimage_each_compression_loads)
{
    static const char *names[] = {"gzip", "xz", "zstd", "lz4"};
    for (int c = C_GZIP; c <= C_LZ4; c++) {
        size_t len = good_bzimage((enum comp)c);
        fresh_mem();
        struct gw_linux_kernel k;
        char err[256] = "";
        int r = gw_linux_load_kernel(&mem, bz, len, &k, err, sizeof err);
        if (r) fprintf(stderr, "  %s: %s\n", names[c], err);
        CHECK_EQ(r, 0);
        CHECK(k.is_bzimage);
        CHECK(!strcmp(k.compression, names[c]));
        CHECK_EQ(k.protocol, 0x020f);
        CHECK_EQ(k.entry, KADDR + 0x40);
        CHECK_EQ(k.cmdline_size, 2047);
        CHECK_EQ(k.load_end, KADDR + 0x400000);  /* init_size beyond the segments */
        CHECK_EQ(k.setup_hdr_len, 0x26c - 0x1f1);
        CHECK(memcmp(ram + KADDR, elf_buf + sizeof(Elf64_Ehdr) + 3 * sizeof(Elf64_Phdr), 0x3000) == 0);
    }
}

GW_TEST(bzimage_hostile_headers_and_payloads_are_refused)
{
    size_t len = good_bzimage(C_LZ4);
    size_t plen = len - SETUP_BYTES;
    uint32_t v;
#define RESET() memcpy(bad_bz, bz, len)
    RESET(); expect_refused(bad_bz, 0x250, -EINVAL, "truncated");
    RESET(); bad_bz[0x206] = 0x0b;                           /* protocol 2.11 */
    expect_refused(bad_bz, len, -EINVAL, "2.11");
    RESET(); bad_bz[0x236] = 0x7e;                           /* no 64-bit entry */
    expect_refused(bad_bz, len, -EINVAL, "64-bit");
    RESET(); bad_bz[0x1f1] = 0xff;                           /* setup beyond the file */
    expect_refused(bad_bz, 4096, -EINVAL, "outside");
    RESET(); v = 0xfffffff0; memcpy(bad_bz + 0x248, &v, 4);  /* payload offset */
    expect_refused(bad_bz, len, -EINVAL, "outside");
    RESET(); v = (uint32_t)plen + 1; memcpy(bad_bz + 0x24c, &v, 4);
    expect_refused(bad_bz, len, -EINVAL, "outside");
    /* Payload truncated (file cut short, header and size trailer fixed up to match). */
    RESET(); v = (uint32_t)(plen - 100); memcpy(bad_bz + 0x24c, &v, 4);
    memcpy(bad_bz + len - 104, bz + len - 4, 4);
    expect_refused(bad_bz, len - 100, -EINVAL, "lz4");
    /* A block whose length runs past the payload. */
    RESET(); v = 0x100000; memcpy(bad_bz + SETUP_BYTES + 4, &v, 4);
    expect_refused(bad_bz, len, -EINVAL, "runs past");
    /* Corrupt compressed bytes. */
    RESET(); memset(bad_bz + SETUP_BYTES + 8, 0xff, 64);
    expect_refused(bad_bz, len, -EINVAL, NULL);
    /* Announced size larger than the limit, or smaller than the data. */
    RESET(); v = 0xffffffffu; memcpy(bad_bz + len - 4, &v, 4);
    expect_refused(bad_bz, len, -E2BIG, "limit");
    RESET(); v = 100; memcpy(bad_bz + len - 4, &v, 4);
    expect_refused(bad_bz, len, -EINVAL, "lz4");
    /* Unsupported and unknown compressions. */
    RESET(); memcpy(bad_bz + SETUP_BYTES, "BZh9", 4);
    expect_refused(bad_bz, len, -EINVAL, "bzip2");
    RESET(); memset(bad_bz + SETUP_BYTES, 0, 8);
    expect_refused(bad_bz, len, -EINVAL, "not supported");
    /* The payload decompresses to something that is not an ELF. */
    static uint8_t junk[4096];
    memset(junk, 'J', sizeof junk);
    size_t jl = compress_payload(C_ZSTD, junk, sizeof junk, payload, sizeof payload - 4);
    size_t l2 = make_bzimage(bad_bz, sizeof bad_bz, payload, jl);
    expect_refused(bad_bz, l2, -EINVAL, "ELF");
    /* init_size larger than RAM. */
    len = good_bzimage(C_GZIP);
    RESET(); v = 0x7ff00000; memcpy(bad_bz + 0x260, &v, 4);
    fresh_mem();
    struct gw_linux_kernel k;
    char err[256] = "";
    CHECK_EQ(gw_linux_load_kernel(&mem, bad_bz, len, &k, err, sizeof err), -ERANGE);
    CHECK(strstr(err, "init_size") != NULL);
#undef RESET
}

/* ---- e820, MP table, command line, zero page ---- */

GW_TEST(e820_matches_the_memory_layout)
{
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, 4ull << 30, "e820") == 0);  /* 3 GiB low + 1 GiB high */
    struct gw_linux_mmio_dev devs[2] = {{GW_VIRTIO_MMIO_BASE, 0x1000, 5}, {GW_VIRTIO_NET_MMIO_BASE, 0x1000, 6}};
    struct gw_e820_entry e[GW_E820_MAX];
    int n = gw_e820_build(&m, devs, 2, e, GW_E820_MAX);
    REQUIRE(n == 8);
    CHECK(e[0].addr == 0 && e[0].size == GW_LINUX_EBDA && e[0].type == GW_E820_RAM);
    CHECK(e[1].addr == GW_LINUX_EBDA && e[1].size == 0x100000 - GW_LINUX_EBDA && e[1].type == GW_E820_RESERVED);
    CHECK(e[2].addr == 0x100000 && e[2].size == GW_RAM_HOLE_START - 0x100000 && e[2].type == GW_E820_RAM);
    CHECK(e[3].addr == GW_VIRTIO_MMIO_BASE && e[3].type == GW_E820_RESERVED);
    CHECK(e[4].addr == GW_VIRTIO_NET_MMIO_BASE && e[4].type == GW_E820_RESERVED);
    CHECK(e[5].addr == GW_IOAPIC_BASE && e[5].type == GW_E820_RESERVED);
    CHECK(e[6].addr == GW_LAPIC_BASE && e[6].type == GW_E820_RESERVED);
    CHECK(e[7].addr == GW_RAM_HOLE_END && e[7].size == 1ull << 30 && e[7].type == GW_E820_RAM);
    /* Nothing in the hole is RAM; total RAM matches. */
    uint64_t ram_total = 0;
    for (int i = 0; i < n; i++) {
        if (e[i].type == GW_E820_RAM) {
            ram_total += e[i].size;
            CHECK(e[i].addr + e[i].size <= GW_RAM_HOLE_START || e[i].addr >= GW_RAM_HOLE_END);
        }
        if (i) CHECK(e[i - 1].addr + e[i - 1].size <= e[i].addr);
    }
    CHECK_EQ(ram_total, (4ull << 30) - (0x100000 - GW_LINUX_EBDA));
    CHECK_EQ(gw_e820_build(&m, devs, 2, e, 5), -E2BIG);
    /* A device window over RAM is refused. */
    struct gw_linux_mmio_dev over = {0x200000, 0x1000, 5};
    CHECK_EQ(gw_e820_build(&m, &over, 1, e, GW_E820_MAX), -EINVAL);
    gw_guest_mem_destroy(&m);
}

static uint8_t sum(const uint8_t *p, size_t n) { uint8_t s = 0; while (n--) s = (uint8_t)(s + *p++); return s; }

GW_TEST(mptable_lists_cpus_ioapic_and_level_virtio_lines)
{
    fresh_mem();
    struct gw_linux_mmio_dev devs[1] = {{GW_VIRTIO_MMIO_BASE, 0x1000, 5}};
    int n = gw_mptable_write(&mem, GW_LINUX_MPTABLE, 4, devs, 1);
    REQUIRE(n > 0);
    const uint8_t *mpf = ram + GW_LINUX_MPTABLE;
    CHECK(!memcmp(mpf, "_MP_", 4));
    CHECK_EQ(sum(mpf, 16), 0);
    uint32_t phys;
    memcpy(&phys, mpf + 4, 4);
    CHECK_EQ(phys, GW_LINUX_MPTABLE + 16);
    const uint8_t *mpc = ram + phys;
    CHECK(!memcmp(mpc, "PCMP", 4));
    uint16_t len, count;
    memcpy(&len, mpc + 4, 2);
    memcpy(&count, mpc + 34, 2);
    CHECK_EQ(len + 16, n);
    CHECK_EQ(sum(mpc, len), 0);
    CHECK_EQ(count, 4 + 1 + 1 + GW_IOAPIC_PINS + 2);
    const uint8_t *p = mpc + 44;
    for (unsigned i = 0; i < 4; i++, p += 20) {
        CHECK(p[0] == 0 && p[1] == i && (p[3] & 1));
        CHECK(((p[3] & 2) != 0) == (i == 0));
    }
    CHECK(p[0] == 1 && !memcmp(p + 2, "ISA", 3));
    p += 8;
    uint32_t ioapic;
    memcpy(&ioapic, p + 4, 4);
    CHECK(p[0] == 2 && p[1] == 4 && ioapic == GW_IOAPIC_BASE);
    p += 8;
    for (unsigned pin = 0; pin < GW_IOAPIC_PINS; pin++, p += 8) {
        uint16_t flags;
        memcpy(&flags, p + 2, 2);
        CHECK(p[0] == 3 && p[5] == pin && p[6] == 4 && p[7] == pin);
        CHECK_EQ(flags, pin == 5 ? 0x0d : 0);
    }
    CHECK(ram[GW_LINUX_MPTABLE + n] == FILL);
    CHECK_EQ(gw_mptable_write(&mem, GW_LINUX_MPTABLE, 0, devs, 1), -EINVAL);
    CHECK_EQ(gw_mptable_write(&mem, GW_LINUX_MPTABLE, GW_MAX_VCPUS + 1, devs, 1), -EINVAL);
    devs[0].gsi = 24;
    CHECK_EQ(gw_mptable_write(&mem, GW_LINUX_MPTABLE, 1, devs, 1), -EINVAL);
    /* 16 vCPUs still fit below 1 MiB. */
    devs[0].gsi = 5;
    CHECK(gw_mptable_write(&mem, GW_LINUX_MPTABLE, GW_MAX_VCPUS, devs, 1) > 0);
}

GW_TEST(cmdline_announces_virtio_mmio_devices)
{
    char out[GW_LINUX_CMDLINE_MAX];
    struct gw_linux_mmio_dev devs[2] = {{GW_VIRTIO_MMIO_BASE, 0x1000, 5}, {GW_VIRTIO_NET_MMIO_BASE, 0x1000, 6}};
    int n = gw_linux_cmdline("console=ttyS0 root=/dev/vda", devs, 2, 2047, out, sizeof out);
    CHECK_EQ(n, (int)strlen(out));
    CHECK(!strcmp(out, "console=ttyS0 root=/dev/vda virtio_mmio.device=4K@0xd0000000:5 "
                       "virtio_mmio.device=4K@0xd0001000:6"));
    n = gw_linux_cmdline(NULL, NULL, 0, 2047, out, sizeof out);
    CHECK(n > 0 && strstr(out, "console=ttyS0"));
    char longline[3000];
    memset(longline, 'a', sizeof longline - 1);
    longline[sizeof longline - 1] = 0;
    CHECK_EQ(gw_linux_cmdline(longline, devs, 2, 2047, out, sizeof out), -E2BIG);
    CHECK_EQ(gw_linux_cmdline(longline, devs, 2, 4095, out, 100), -E2BIG);
}

static uint32_t rd32(uint64_t gpa) { uint32_t v; memcpy(&v, ram + gpa, 4); return v; }

GW_TEST(zero_page_initrd_and_registers)
{
    size_t len = good_bzimage(C_XZ);
    fresh_mem();
    struct gw_linux_kernel k;
    char err[256] = "";
    REQUIRE(gw_linux_load_kernel(&mem, bz, len, &k, err, sizeof err) == 0);
    static uint8_t initrd[10000];
    for (size_t i = 0; i < sizeof initrd; i++) initrd[i] = (uint8_t)(i * 7);
    struct gw_linux_mmio_dev devs[1] = {{GW_VIRTIO_MMIO_BASE, 0x1000, 5}};
    struct gw_linux_boot_params p = {.kernel = &k, .initrd = initrd, .initrd_len = sizeof initrd,
                                     .cmdline = "console=ttyS0 quiet", .ncpus = 2, .devs = devs, .ndevs = 1};
    REQUIRE(gw_linux_setup(&mem, &p, err, sizeof err) == 0);
    const uint8_t *zp = ram + GW_LINUX_ZERO_PAGE;
    CHECK(zp[0x1fe] == 0x55 && zp[0x1ff] == 0xaa && !memcmp(zp + 0x202, "HdrS", 4));
    CHECK(zp[0x210] == 0xff);                      /* type_of_loader */
    CHECK(zp[0x211] & 1);
    CHECK_EQ(rd32(GW_LINUX_ZERO_PAGE + 0x228), GW_LINUX_CMDLINE);
    CHECK(!strcmp((char *)ram + GW_LINUX_CMDLINE, "console=ttyS0 quiet"));
    uint32_t rd = rd32(GW_LINUX_ZERO_PAGE + 0x218), rs = rd32(GW_LINUX_ZERO_PAGE + 0x21c);
    CHECK_EQ(rs, sizeof initrd);
    CHECK(rd % 4096 == 0 && rd >= k.load_end && rd + rs <= MEM);
    CHECK(!memcmp(ram + rd, initrd, sizeof initrd));
    CHECK(zp[0x1e8] == 6);                         /* e820 entries: RAM, res, RAM, virtio, IOAPIC, LAPIC */
    uint64_t a, s;
    memcpy(&a, zp + 0x2d0 + 2 * 20, 8);
    memcpy(&s, zp + 0x2d0 + 2 * 20 + 8, 8);
    CHECK(a == 0x100000 && s == MEM - 0x100000 && rd32(GW_LINUX_ZERO_PAGE + 0x2d0 + 2 * 20 + 16) == 1);
    /* GDT: code at 0x10, data at 0x18. */
    uint64_t gdt[4];
    memcpy(gdt, ram + GW_LINUX_GDT, sizeof gdt);
    CHECK(gdt[2] == 0x00af9b000000ffffull && gdt[3] == 0x00cf93000000ffffull);
    CHECK(!memcmp(ram + GW_LINUX_MPTABLE, "_MP_", 4));

    struct kvm_regs regs;
    struct kvm_sregs sregs;
    memset(&sregs, 0, sizeof sregs);
    gw_linux_bsp_regs(&k, &regs, &sregs);
    CHECK_EQ(regs.rip, KADDR + 0x40);
    CHECK_EQ(regs.rsi, GW_LINUX_ZERO_PAGE);
    CHECK(!(regs.rflags & 0x200));
    CHECK(sregs.cs.selector == 0x10 && sregs.cs.l == 1 && sregs.ds.selector == 0x18 && sregs.ss.selector == 0x18);
    CHECK((sregs.efer & 0x500) == 0x500 && (sregs.cr0 & 0x80000001u) == 0x80000001u && (sregs.cr4 & 0x20));

    /* An initrd too large to fit between the kernel and the top of RAM is refused. */
    p.initrd_len = MEM - 0x1000000;
    static uint8_t *big;
    big = calloc(1, p.initrd_len);
    p.initrd = big;
    CHECK_EQ(gw_linux_setup(&mem, &p, err, sizeof err), -ERANGE);
    CHECK(strstr(err, "initrd") != NULL);
    free(big);
    /* A command line longer than the kernel takes. */
    p.initrd = NULL;
    k.cmdline_size = 5;
    CHECK_EQ(gw_linux_setup(&mem, &p, err, sizeof err), -E2BIG);
}

GW_TEST(cpuid_gives_each_vcpu_its_apic_id_and_keeps_kvm_leaves)
{
    struct kvm_cpuid_entry2 e[4] = {
        {.function = 1, .ebx = 0xff0a0800, .ecx = 0x1},
        {.function = 0xb, .index = 0, .edx = 0x77},
        {.function = 0x40000000, .eax = 0x40000001, .ebx = 0x4b4d564b},
        {.function = 0x40000001, .eax = 0x01007afb},
    };
    gw_cpuid_for_vcpu(e, 4, 3, 4);
    CHECK_EQ(e[0].ebx >> 24, 3);
    CHECK_EQ((e[0].ebx >> 16) & 0xff, 4);
    CHECK_EQ(e[0].ebx & 0xffff, 0x0800);
    CHECK(e[0].ecx & (1u << 31));
    CHECK_EQ(e[1].edx, 3);
    CHECK(e[2].eax == 0x40000001 && e[2].ebx == 0x4b4d564b && e[3].eax == 0x01007afb);
}
