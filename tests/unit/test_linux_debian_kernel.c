/* The Linux loader against a real, stock Debian kernel (linux-image-<ver>-amd64, downloaded
 * from the Debian mirror at test time by tests/lib/debian_kernel.sh into the build tree's
 * cache, never committed). Skips, and says so, only when the mirror cannot be reached. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/linux_boot.h"
#include "guest/abi.h"
#include "tests/lib/gw_test.h"

static char kpath[1024];
static uint8_t *img;
static size_t img_len;

/* Fetches the kernel once; false (test skipped) when the mirror is unreachable. */
static bool have_kernel(void)
{
    if (img) return true;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/tests/lib/debian_kernel.sh %s", GW_SOURCE_DIR, GW_KERNEL_CACHE);
    FILE *f = popen(cmd, "r");
    if (!f) { gw_test_fail(__FILE__, __LINE__, "popen debian_kernel.sh"); return false; }
    bool got = fgets(kpath, sizeof kpath, f) != NULL;
    int st = pclose(f);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        gw_test_skip("the Debian mirror is unreachable: cannot download a stock kernel");
        return false;
    }
    if (!got || st != 0) { gw_test_fail(__FILE__, __LINE__, "debian_kernel.sh failed"); return false; }
    kpath[strcspn(kpath, "\n")] = 0;
    char err[256];
    if (gw_linux_read_file(kpath, GW_LINUX_KERNEL_FILE_MAX, &img, &img_len, err, sizeof err)) {
        fprintf(stderr, "  %s\n", err);
        gw_test_fail(__FILE__, __LINE__, "read the kernel");
        return false;
    }
    fprintf(stderr, "  kernel: %s (%zu bytes)\n", kpath, img_len);
    return true;
}

static bool contains(const uint8_t *p, size_t n, const char *s)
{
    return memmem(p, n, s, strlen(s)) != NULL;
}

GW_TEST(debian_bzimage_loads_and_boot_data_is_laid_out)
{
    if (!have_kernel()) return;
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, 256ull << 20, "debian") == 0);
    struct gw_linux_kernel k;
    char err[256] = "";
    int r = gw_linux_load_kernel(&m, img, img_len, &k, err, sizeof err);
    if (r) fprintf(stderr, "  %s\n", err);
    REQUIRE(r == 0);
    CHECK(k.is_bzimage);
    CHECK(k.protocol >= 0x020c);
    CHECK(!strcmp(k.compression, "xz") || !strcmp(k.compression, "zstd") ||
          !strcmp(k.compression, "gzip") || !strcmp(k.compression, "lz4"));
    fprintf(stderr, "  protocol %u.%02u, %s payload, entry %#llx, needs RAM up to %#llx\n",
            k.protocol >> 8, k.protocol & 0xff, k.compression, (unsigned long long)k.entry,
            (unsigned long long)k.load_end);
    /* Debian links at LOAD_PHYSICAL_ADDR = 16 MiB; startup_64 is the first byte. */
    CHECK_EQ(k.load_start, 0x1000000);
    CHECK_EQ(k.entry, 0x1000000);
    CHECK(k.load_end > k.load_start + (8u << 20));
    CHECK(k.cmdline_size >= 2047);
    /* The decompressed kernel is in guest RAM: its banner string is there. */
    const uint8_t *kmem = gw_guest_mem_ptr(&m, k.load_start, k.load_end - k.load_start);
    REQUIRE(kmem != NULL);
    CHECK(contains(kmem, k.load_end - k.load_start, "Linux version "));
    CHECK(gw_is_zero(gw_guest_mem_ptr(&m, 0, GW_LINUX_KERNEL_MIN), GW_LINUX_KERNEL_MIN));

    struct gw_linux_mmio_dev devs[1] = {{GW_VIRTIO_MMIO_BASE, 0x1000, GW_VIRTIO_BLK_GSI}};
    char cmdline[GW_LINUX_CMDLINE_MAX];
    REQUIRE(gw_linux_cmdline("console=ttyS0", devs, 1, k.cmdline_size, cmdline, sizeof cmdline) > 0);
    struct gw_linux_boot_params p = {.kernel = &k, .cmdline = cmdline, .ncpus = 2, .devs = devs, .ndevs = 1};
    r = gw_linux_setup(&m, &p, err, sizeof err);
    if (r) fprintf(stderr, "  %s\n", err);
    REQUIRE(r == 0);
    const uint8_t *zp = gw_guest_mem_ptr(&m, GW_LINUX_ZERO_PAGE, 4096);
    /* The kernel's own setup header, as boot.rst asks, with our loader fields. */
    CHECK(!memcmp(zp + 0x1f1, img + 0x1f1, 0x210 - 0x1f1));
    CHECK(!memcmp(zp + 0x22c, img + 0x22c, 0x4) && !memcmp(zp + 0x236, img + 0x236, 2));
    CHECK(zp[0x210] == 0xff);
    CHECK(zp[0x1e8] == 6);
    CHECK(!strcmp((const char *)gw_guest_mem_ptr(&m, GW_LINUX_CMDLINE, 1),
                  "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"));
    gw_guest_mem_destroy(&m);
}

/* Loads a damaged copy of the real kernel: refused, guest memory untouched. */
static void expect_refused(const uint8_t *bad, size_t len, const char *what)
{
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, 256ull << 20, "debian-bad") == 0);
    struct gw_linux_kernel k;
    char err[256] = "";
    int r = gw_linux_load_kernel(&m, bad, len, &k, err, sizeof err);
    fprintf(stderr, "  %s: %s\n", what, err);
    CHECK(r < 0);
    CHECK(err[0] != 0);
    CHECK(gw_is_zero(m.base, m.size));
    gw_guest_mem_destroy(&m);
}

GW_TEST(debian_bzimage_damaged_copies_are_refused)
{
    if (!have_kernel()) return;
    uint8_t *bad = malloc(img_len);
    REQUIRE(bad != NULL);
    expect_refused(img, img_len / 2, "cut in half");
    expect_refused(img, 0x300, "only the setup header");
    memcpy(bad, img, img_len);
    bad[0x202] = 'X';
    expect_refused(bad, img_len, "HdrS magic broken");
    memcpy(bad, img, img_len);
    bad[0x206] = 0x0b; bad[0x207] = 0x02;
    expect_refused(bad, img_len, "protocol 2.11");
    /* The payload: after the setup sectors, at payload_offset, payload_length bytes. */
    uint32_t poff, plen;
    memcpy(&poff, img + 0x248, 4);
    memcpy(&plen, img + 0x24c, 4);
    size_t start = ((size_t)(img[0x1f1] ? img[0x1f1] : 4) + 1) * 512 + poff;
    REQUIRE(start + plen <= img_len && plen > 4096);
    memcpy(bad, img, img_len);
    for (size_t i = 0; i < 64; i++) bad[start + plen / 2 + i] ^= 0xa5;
    expect_refused(bad, img_len, "payload bytes flipped");
    memcpy(bad, img, img_len);
    memset(bad + start + plen - 4, 0xff, 4);
    expect_refused(bad, img_len, "payload size trailer 4 GiB");
    memcpy(bad, img, img_len);
    memset(bad + start + plen - 4, 0x00, 2);
    expect_refused(bad, img_len, "payload size trailer too small");
    free(bad);
}
