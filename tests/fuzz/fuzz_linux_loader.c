/* libFuzzer target: the Linux kernel loader (engine/vm/linux_boot.h) on hostile images. The
 * first byte picks how the rest is used: as a whole image, or XORed over a valid vmlinux ELF
 * or a valid lz4 bzImage built here, so that mutations reach the deep checks (program
 * headers, setup header fields, payload blocks) and not only the magic. Whatever the input,
 * the loader must not touch memory outside guest RAM (ASan) and, when it accepts an image,
 * the entry must lie in the kernel it loaded, above our boot data. */
#include <elf.h>
#include <lz4.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"

#define RAM (24u << 20)
#define KADDR 0x1000000u

static uint8_t *ram, elf[4096], bz[8192], img[1 << 16];
static size_t elf_len, bz_len;

static void build_templates(void)
{
    Elf64_Ehdr eh = {0};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_entry = KADDR;
    eh.e_phoff = sizeof eh;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = 2;
    Elf64_Phdr ph[2] = {
        {.p_type = PT_LOAD, .p_offset = 512, .p_paddr = KADDR, .p_filesz = 1024, .p_memsz = 4096},
        {.p_type = PT_LOAD, .p_offset = 1536, .p_paddr = KADDR + 0x10000, .p_filesz = 512, .p_memsz = 8192},
    };
    memcpy(elf, &eh, sizeof eh);
    memcpy(elf + sizeof eh, ph, sizeof ph);
    for (int i = 512; i < 2048; i++) elf[i] = (uint8_t)i;
    elf_len = 2048;
    memset(bz, 0, 1024);
    bz[0x1f1] = 1;                       /* setup: 2 sectors */
    bz[0x1fe] = 0x55; bz[0x1ff] = 0xaa;
    bz[0x201] = 0x6a;
    memcpy(bz + 0x202, "HdrS", 4);
    bz[0x206] = 0x0f; bz[0x207] = 0x02;
    bz[0x236] = 0x01;
    uint32_t v = 2047; memcpy(bz + 0x238, &v, 4);
    v = 0x100000; memcpy(bz + 0x260, &v, 4);
    uint64_t pref = KADDR; memcpy(bz + 0x258, &pref, 8);
    uint8_t *p = bz + 1024;
    uint32_t magic = 0x184c2102u;
    memcpy(p, &magic, 4);
    int c = LZ4_compress_default((const char *)elf, (char *)p + 8, (int)elf_len, (int)(sizeof bz - 1024 - 16));
    uint32_t cl = (uint32_t)c, sz = (uint32_t)elf_len;
    memcpy(p + 4, &cl, 4);
    memcpy(p + 8 + c, &sz, 4);
    uint32_t plen = 12 + cl;
    memcpy(bz + 0x24c, &plen, 4);
    bz_len = 1024 + plen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ram) { ram = malloc(RAM); build_templates(); }
    if (size == 0) return 0;
    size_t len;
    const uint8_t *in = data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: len = n < sizeof img ? n : sizeof img; memcpy(img, in, len); break;
    case 1: len = elf_len; memcpy(img, elf, len); for (size_t i = 0; i < n && i < len; i++) img[i] ^= in[i]; break;
    default:
        len = bz_len; memcpy(img, bz, len);
        for (size_t i = 0; i + 1 < n; i += 2) img[(in[i] * 37u + i) % len] ^= in[i + 1];  /* sparse flips */
        if (n && data[0] & 0x80) len = len * in[0] / 255;                            /* truncation */
        break;
    }
    struct gw_guest_mem m;
    gw_guest_mem_wrap(&m, ram, RAM);
    struct gw_linux_kernel k;
    char err[256];
    if (gw_linux_load_kernel(&m, img, len, &k, err, sizeof err) == 0 &&
        (k.entry < k.load_start || k.entry >= k.load_end || k.load_start < GW_LINUX_KERNEL_MIN || k.load_end > RAM))
        __builtin_trap();
    return 0;
}
