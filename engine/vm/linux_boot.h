/* Booting a Linux kernel with the standard x86 boot protocol (Documentation/arch/x86/boot.rst),
 * 64-bit entry: the VM host loads the kernel, the initramfs and the command line into guest
 * RAM, writes the zero page (struct boot_params) with an e820 map of our layout, a GDT with
 * flat code at 0x10 and data at 0x18, identity page tables and an MP table, and starts the
 * boot processor in long mode at the kernel's entry with RSI pointing at the zero page.
 *
 * Two kernel formats are accepted: a vmlinux ELF (PT_LOAD segments at their physical
 * addresses, entry = e_entry) and a bzImage (setup header at 0x1f1, protocol >= 2.12, a
 * 64-bit kernel). A bzImage's compressed payload is decompressed here, by the host (gzip, xz,
 * zstd, lz4): in the guest it would run emulated under PVM for minutes and costs boot time
 * on hardware too. The payload is itself a vmlinux ELF, loaded like one.
 *
 * Every input is hostile until checked: a short file, a wrong magic, a header field that
 * points outside the file, a segment outside RAM or over another one or over our boot data,
 * an entry point outside the loaded kernel, a payload that decompresses to more than
 * GW_LINUX_KERNEL_MAX: each is refused with a one-line reason, and nothing is written
 * outside guest RAM (every host pointer comes from gw_guest_mem_ptr). */
#ifndef GW_VM_LINUX_BOOT_H
#define GW_VM_LINUX_BOOT_H

#include <stddef.h>
#include <stdint.h>

struct gw_guest_mem;
struct kvm_regs;
struct kvm_sregs;

/* ---- guest-physical layout of a Linux boot (all below 1 MiB, reported as e820 RAM or
 * reserved as noted; the identity page tables sit at GW_GPA_PML4 as for our own guests) ---- */
#define GW_LINUX_GDT 0x500ull           /* null, null, code 0x10, data 0x18, TSS 0x20 */
#define GW_LINUX_TSS 0x600ull           /* 104-byte TSS, only so that TR is valid */
#define GW_LINUX_ZERO_PAGE 0x7000ull    /* struct boot_params, 4 KiB */
#define GW_LINUX_BOOT_STACK 0x8ff0ull   /* initial RSP; the kernel sets its own at once */
#define GW_LINUX_CMDLINE 0x80000ull     /* NUL-terminated command line */
#define GW_LINUX_CMDLINE_MAX 4096u      /* bytes including the NUL */
#define GW_LINUX_EBDA 0x9fc00ull        /* [EBDA, 1 MiB) is e820-reserved */
#define GW_LINUX_MPTABLE GW_LINUX_EBDA  /* MP floating pointer + configuration table */
#define GW_LINUX_KERNEL_MIN 0x100000ull /* no kernel byte below 1 MiB (our boot data) */
#define GW_LINUX_MIN_MEMORY (64ull << 20)

/* Limits on inputs (files and their decompressed payloads). */
#define GW_LINUX_KERNEL_FILE_MAX (256ull << 20)
#define GW_LINUX_KERNEL_MAX (512ull << 20)   /* decompressed vmlinux */
#define GW_LINUX_INITRD_MAX (2ull << 30)
#define GW_LINUX_ELF_MAX_PHDRS 64u

/* MMIO windows in the 3-4 GiB hole that the e820 map reserves. */
#define GW_IOAPIC_BASE 0xfec00000ull
#define GW_IOAPIC_SIZE 0x1000ull
#define GW_LAPIC_SIZE 0x1000ull
#define GW_IOAPIC_PINS 24u

#define GW_E820_RAM 1u
#define GW_E820_RESERVED 2u
#define GW_E820_MAX 128u  /* entries the zero page holds */

struct gw_e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

/* A virtio-mmio device as the guest must learn of it (command line and MP table). */
struct gw_linux_mmio_dev {
    uint64_t base;
    uint64_t size;
    uint32_t gsi;
};

#define GW_LINUX_MAX_MMIO_DEVS 8u

/* What the loader learned from the kernel image. */
struct gw_linux_kernel {
    uint64_t entry;          /* guest-physical 64-bit entry */
    uint64_t load_start;     /* lowest byte a PT_LOAD segment occupies */
    uint64_t load_end;       /* end of the memory the kernel needs (segments, init_size) */
    int is_bzimage;
    uint16_t protocol;       /* boot protocol version of a bzImage, 0 for an ELF */
    const char *compression; /* payload compression of a bzImage ("lz4", ...), else "none" */
    uint8_t setup_hdr[0x290 - 0x1f1]; /* a bzImage's setup header, copied into the zero page */
    uint32_t setup_hdr_len;
    uint32_t cmdline_size;   /* longest command line the kernel takes (without the NUL) */
    uint32_t initrd_addr_max;
};

/* Loads a vmlinux ELF or a bzImage from img[0..len) into guest memory. Returns 0 with *k
 * filled, or a negative errno with a one-line reason in err: -EINVAL (malformed or
 * unsupported image), -E2BIG (larger than the limits), -ERANGE (a segment or the entry
 * outside RAM, over our boot data or over another segment), -ENOMEM. */
int gw_linux_load_kernel(struct gw_guest_mem *m, const uint8_t *img, size_t len,
                         struct gw_linux_kernel *k, char *err, unsigned errlen);

/* Loads the PT_LOAD segments of the ELF in img[0..len) (see gw_linux_load_kernel). */
int gw_linux_load_elf(struct gw_guest_mem *m, const uint8_t *img, size_t len,
                      struct gw_linux_kernel *k, char *err, unsigned errlen);

/* Decompresses a bzImage payload (format recognised by its magic) into a new heap buffer
 * of at most GW_LINUX_KERNEL_MAX bytes (*out, *out_len; free with free()). *name gets the
 * format's name. Returns 0, -EINVAL (unknown format or corrupt data, with err), -E2BIG. */
int gw_linux_decompress(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len,
                        const char **name, char *err, unsigned errlen);

/* Fills out[0..max) with the e820 map of m: RAM regions, the reserved area from the EBDA to
 * 1 MiB, the given MMIO windows, the IOAPIC and the LAPIC. Returns the number of entries
 * (sorted by address, non-overlapping) or -E2BIG. */
int gw_e820_build(const struct gw_guest_mem *m, const struct gw_linux_mmio_dev *devs,
                  unsigned ndevs, struct gw_e820_entry *out, unsigned max);

/* Writes an MP table (floating pointer at gpa, configuration table right after) for ncpus
 * processors (APIC ids 0..ncpus-1, 0 the boot processor), one IOAPIC (id ncpus, at
 * GW_IOAPIC_BASE) with ISA IRQs 0-15 on pins 0-15, and the devices' GSIs as level-triggered,
 * active-high lines. Returns the bytes written, or -E2BIG / -EINVAL / -EFAULT. */
int gw_mptable_write(struct gw_guest_mem *m, uint64_t gpa, unsigned ncpus,
                     const struct gw_linux_mmio_dev *devs, unsigned ndevs);

/* Builds the command line the guest gets: user's (or a default console line when NULL)
 * followed by one virtio_mmio.device=<size>@<base>:<gsi> per device. Returns its length, or
 * -E2BIG when it does not fit in cap bytes (with the NUL) or in max_len. */
int gw_linux_cmdline(const char *user, const struct gw_linux_mmio_dev *devs, unsigned ndevs,
                     uint32_t max_len, char *out, size_t cap);

/* Everything a boot needs besides the kernel, which is already loaded into m. */
struct gw_linux_boot_params {
    const struct gw_linux_kernel *kernel;
    const uint8_t *initrd;     /* NULL: none */
    size_t initrd_len;
    const char *cmdline;       /* final command line (from gw_linux_cmdline) */
    unsigned ncpus;
    const struct gw_linux_mmio_dev *devs;
    unsigned ndevs;
};

/* Places the initrd (as high as allowed below the hole and initrd_addr_max, above the
 * kernel), writes the command line, the zero page, the GDT/TSS, the page tables and the MP
 * table. Returns 0 or a negative errno with err. */
int gw_linux_setup(struct gw_guest_mem *m, const struct gw_linux_boot_params *p, char *err,
                   unsigned errlen);

/* Boot processor registers for the 64-bit entry: long mode, CS 0x10, DS/ES/SS 0x18,
 * interrupts off, RIP at the entry, RSI at the zero page. sregs arrives from KVM_GET_SREGS. */
void gw_linux_bsp_regs(const struct gw_linux_kernel *k, struct kvm_regs *regs,
                       struct kvm_sregs *sregs);

/* Reads a whole file (at most max bytes) into a heap buffer. -E2BIG above max. */
int gw_linux_read_file(const char *path, uint64_t max, uint8_t **out, size_t *len, char *err,
                       unsigned errlen);

#endif
