/* vmlinux ELF loading (see linux_boot.h): the ELF header and every program header are
 * checked against the file before use, every PT_LOAD segment against guest RAM, our boot
 * data below 1 MiB and every other segment, and the entry against the loaded segments.
 * Nothing is written until the whole image has passed. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/common/util.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"

struct seg {
    uint64_t paddr, memsz, off, filesz;
};

static int check_header(const Elf64_Ehdr *eh, size_t len, char *err, unsigned errlen)
{
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG)) { snprintf(err, errlen, "not an ELF file (bad magic)"); return -EINVAL; }
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB) {
        snprintf(err, errlen, "ELF kernel is not 64-bit little-endian");
        return -EINVAL;
    }
    if (eh->e_machine != EM_X86_64 || (eh->e_type != ET_EXEC && eh->e_type != ET_DYN)) {
        snprintf(err, errlen, "ELF kernel is not an x86-64 executable (machine %u, type %u)",
                 eh->e_machine, eh->e_type);
        return -EINVAL;
    }
    if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 ||
        eh->e_phnum > GW_LINUX_ELF_MAX_PHDRS) {
        snprintf(err, errlen, "ELF kernel has %u program headers of %u bytes (want 1..%u of %zu)",
                 eh->e_phnum, eh->e_phentsize, GW_LINUX_ELF_MAX_PHDRS, sizeof(Elf64_Phdr));
        return -EINVAL;
    }
    if (!gw_range_ok(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), len)) {
        snprintf(err, errlen, "ELF program headers at offset %llu lie outside the %zu-byte file",
                 (unsigned long long)eh->e_phoff, len);
        return -EINVAL;
    }
    return 0;
}

/* Collects and checks the PT_LOAD segments; returns their count or -errno. */
static int collect(struct gw_guest_mem *m, const uint8_t *img, size_t len, const Elf64_Ehdr *eh,
                   struct seg *segs, char *err, unsigned errlen)
{
    int n = 0;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, img + eh->e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
        if (ph.p_filesz > ph.p_memsz || !gw_range_ok(ph.p_offset, ph.p_filesz, len)) {
            snprintf(err, errlen, "ELF segment %u: %llu file bytes at offset %llu lie outside "
                     "the %zu-byte file or exceed its memory size %llu", i,
                     (unsigned long long)ph.p_filesz, (unsigned long long)ph.p_offset, len,
                     (unsigned long long)ph.p_memsz);
            return -EINVAL;
        }
        uint64_t end;
        if (!gw_add_ok(ph.p_paddr, ph.p_memsz, &end) || ph.p_paddr < GW_LINUX_KERNEL_MIN ||
            !gw_guest_mem_ptr(m, ph.p_paddr, ph.p_memsz)) {
            snprintf(err, errlen, "ELF segment %u at [%#llx, +%#llx) is not wholly in guest RAM "
                     "above 1 MiB", i, (unsigned long long)ph.p_paddr,
                     (unsigned long long)ph.p_memsz);
            return -ERANGE;
        }
        for (int j = 0; j < n; j++) {
            if (ph.p_paddr < segs[j].paddr + segs[j].memsz && segs[j].paddr < end) {
                snprintf(err, errlen, "ELF segment %u at [%#llx, +%#llx) overlaps an earlier "
                         "segment at [%#llx, +%#llx)", i, (unsigned long long)ph.p_paddr,
                         (unsigned long long)ph.p_memsz, (unsigned long long)segs[j].paddr,
                         (unsigned long long)segs[j].memsz);
                return -ERANGE;
            }
        }
        segs[n++] = (struct seg){ph.p_paddr, ph.p_memsz, ph.p_offset, ph.p_filesz};
    }
    if (n == 0) { snprintf(err, errlen, "ELF kernel has no loadable segment"); return -EINVAL; }
    return n;
}

int gw_linux_load_elf(struct gw_guest_mem *m, const uint8_t *img, size_t len,
                      struct gw_linux_kernel *k, char *err, unsigned errlen)
{
    Elf64_Ehdr eh;
    if (len < sizeof eh) { snprintf(err, errlen, "ELF kernel truncated: %zu bytes", len); return -EINVAL; }
    memcpy(&eh, img, sizeof eh);
    int r = check_header(&eh, len, err, errlen);
    if (r) return r;
    struct seg segs[GW_LINUX_ELF_MAX_PHDRS];
    int n = collect(m, img, len, &eh, segs, err, errlen);
    if (n < 0) return n;
    uint64_t lo = UINT64_MAX, hi = 0;
    bool entry_ok = false;
    for (int i = 0; i < n; i++) {
        if (segs[i].paddr < lo) lo = segs[i].paddr;
        if (segs[i].paddr + segs[i].memsz > hi) hi = segs[i].paddr + segs[i].memsz;
        if (eh.e_entry >= segs[i].paddr && eh.e_entry - segs[i].paddr < segs[i].filesz) entry_ok = true;
    }
    if (!entry_ok) {
        snprintf(err, errlen, "ELF entry point %#llx is not inside a loaded segment",
                 (unsigned long long)eh.e_entry);
        return -ERANGE;
    }
    /* Everything checked: copy, and zero what the file does not cover (.bss). */
    for (int i = 0; i < n; i++) {
        uint8_t *dst = gw_guest_mem_ptr(m, segs[i].paddr, segs[i].memsz);
        memcpy(dst, img + segs[i].off, segs[i].filesz);
        memset(dst + segs[i].filesz, 0, segs[i].memsz - segs[i].filesz);
    }
    k->entry = eh.e_entry;
    k->load_start = lo;
    if (hi > k->load_end) k->load_end = hi;
    return 0;
}
