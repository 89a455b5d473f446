/* bzImage parsing (see linux_boot.h): the real-mode setup header at 0x1f1 is checked field by
 * field against the file (boot flag, "HdrS", protocol >= 2.12, a 64-bit kernel, the setup
 * sectors and the payload inside the file), the payload is decompressed by the host and the
 * vmlinux inside it loaded as an ELF. The setup header is kept for the zero page, as
 * boot.rst asks a boot loader to copy it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/checked_open.h"
#include "engine/common/util.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"

#define HDR_START 0x1f1u
#define HDR_END_MAX 0x290u
#define MIN_PROTOCOL 0x020cu
#define XLF_KERNEL_64 0x1u

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static bool is_bzimage(const uint8_t *img, size_t len)
{
    return len >= 0x206 && le16(img + 0x1fe) == 0xaa55 && !memcmp(img + 0x202, "HdrS", 4);
}

static int load_bzimage(struct gw_guest_mem *m, const uint8_t *img, size_t len,
                        struct gw_linux_kernel *k, char *err, unsigned errlen)
{
    if (len < HDR_END_MAX) { snprintf(err, errlen, "bzImage truncated: %zu bytes", len); return -EINVAL; }
    k->protocol = le16(img + 0x206);
    if (k->protocol < MIN_PROTOCOL) {
        snprintf(err, errlen, "bzImage boot protocol %u.%02u is older than 2.12", k->protocol >> 8,
                 k->protocol & 0xff);
        return -EINVAL;
    }
    if (!(le16(img + 0x236) & XLF_KERNEL_64)) {
        snprintf(err, errlen, "bzImage has no 64-bit entry (XLF_KERNEL_64 clear): not a 64-bit kernel");
        return -EINVAL;
    }
    unsigned sects = img[0x1f1] ? img[0x1f1] : 4;
    uint64_t setup_bytes = (uint64_t)(sects + 1) * 512;
    uint32_t poff = le32(img + 0x248), plen = le32(img + 0x24c);
    if (setup_bytes > len || !gw_range_ok(setup_bytes + poff, plen, len)) {
        snprintf(err, errlen, "bzImage payload (%u bytes at %llu) lies outside the %zu-byte file",
                 plen, (unsigned long long)(setup_bytes + poff), len);
        return -EINVAL;
    }
    uint32_t hdr_end = 0x202u + img[0x201];
    if (hdr_end > HDR_END_MAX) hdr_end = HDR_END_MAX;
    k->setup_hdr_len = hdr_end - HDR_START;
    memcpy(k->setup_hdr, img + HDR_START, k->setup_hdr_len);
    k->cmdline_size = le32(img + 0x238);
    k->initrd_addr_max = le32(img + 0x22c);
    k->is_bzimage = 1;

    uint8_t *elf;
    size_t elf_len;
    int r = gw_linux_decompress(img + setup_bytes + poff, plen, &elf, &elf_len, &k->compression,
                                err, errlen);
    if (r) return r;
    r = gw_linux_load_elf(m, elf, elf_len, k, err, errlen);
    free(elf);
    if (r) return r;
    /* The kernel uses init_size bytes from where it was loaded (early page tables, brk). */
    uint64_t pref = le64(img + 0x258), init_size = le32(img + 0x260), need_end;
    uint64_t base = k->load_start < pref ? k->load_start : pref;
    if (!gw_add_ok(base, init_size, &need_end) || !gw_guest_mem_ptr(m, base, init_size)) {
        snprintf(err, errlen, "the kernel needs %llu MiB of RAM from %#llx (init_size); guest RAM "
                 "is too small", (unsigned long long)(init_size >> 20), (unsigned long long)base);
        return -ERANGE;
    }
    if (need_end > k->load_end) k->load_end = need_end;
    return 0;
}

int gw_linux_load_kernel(struct gw_guest_mem *m, const uint8_t *img, size_t len,
                         struct gw_linux_kernel *k, char *err, unsigned errlen)
{
    memset(k, 0, sizeof *k);
    k->compression = "none";
    k->cmdline_size = GW_LINUX_CMDLINE_MAX - 1;
    k->initrd_addr_max = 0x7fffffffu;
    if (len > GW_LINUX_KERNEL_FILE_MAX) {
        snprintf(err, errlen, "kernel image of %zu bytes is larger than %llu MiB", len,
                 GW_LINUX_KERNEL_FILE_MAX >> 20);
        return -E2BIG;
    }
    if (is_bzimage(img, len)) return load_bzimage(m, img, len, k, err, errlen);
    if (len >= 4 && !memcmp(img, "\177ELF", 4)) return gw_linux_load_elf(m, img, len, k, err, errlen);
    snprintf(err, errlen, "kernel image is neither a bzImage (no \"HdrS\" at 0x202) nor an ELF vmlinux");
    return -EINVAL;
}

int gw_linux_read_file(const char *path, uint64_t max, uint8_t **out, size_t *len, char *err,
                       unsigned errlen)
{
    *out = NULL;
    *len = 0;
    /* O_NOFOLLOW, as for disks: godwitd checks that a path is canonical inside its
     * image_roots; a link swapped in after that check is refused here, not followed. */
    int fd = gw_checked_open(path, O_RDONLY, 0);
    if (fd < 0) {
        int e = fd;
        snprintf(err, errlen, "%s: %s", path, e == -ELOOP ? "is a symbolic link (refused)" : strerror(-e));
        return e;
    }
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0) { r = -errno; snprintf(err, errlen, "%s: %s", path, strerror(-r)); goto out; }
    if (!S_ISREG(st.st_mode)) { r = -EINVAL; snprintf(err, errlen, "%s: not a regular file", path); goto out; }
    if ((uint64_t)st.st_size > max) {
        r = -E2BIG;
        snprintf(err, errlen, "%s: %lld bytes, more than the limit of %llu MiB", path,
                 (long long)st.st_size, (unsigned long long)(max >> 20));
        goto out;
    }
    uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) { r = -ENOMEM; snprintf(err, errlen, "%s: out of memory", path); goto out; }
    r = gw_pread_full(fd, buf, (size_t)st.st_size, 0);
    if (r) { free(buf); snprintf(err, errlen, "%s: read failed: %s", path, strerror(-r)); goto out; }
    *out = buf;
    *len = (size_t)st.st_size;
out:
    close(fd);
    return r;
}
