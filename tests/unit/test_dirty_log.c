/* Unit tests of the dirty log's device marks (pages devices write into guest RAM, which
 * KVM's log cannot see): a mark survives fetches until a clear takes its page, in both
 * manual and classic modes, so a fetch whose pages are never queued (the one that decides on
 * the switchover) cannot lose it. Needs /dev/kvm (skips otherwise). */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "engine/dirty/dirty_log.h"
#include "engine/vm/vm.h"
#include "tests/lib/gw_test.h"

static struct gw_vm *make_vm(void)
{
    int fd = open("/dev/kvm", O_RDWR);
    if (fd < 0) { gw_test_skip("/dev/kvm is not usable"); return NULL; }
    close(fd);
    struct gw_vm_config cfg = {.name = "dirty", .memory_bytes = 32ull << 20, .vcpus = 1,
                               .guest_spec = "idle:ws=4M", .console_fd = -1};
    struct gw_vm *vm = NULL;
    char err[256];
    if (gw_vm_create(&cfg, &vm, err, sizeof err)) { fprintf(stderr, "create: %s\n", err); return NULL; }
    return vm;
}

static bool bit(const struct gw_dirty_log *d, uint64_t page) { return d->bitmap[page / 64] >> (page % 64) & 1; }

static void device_marks_survive_until_cleared(bool classic)
{
    struct gw_vm *vm = make_vm();
    if (!vm) return;
    struct gw_dirty_log *d;
    REQUIRE(gw_dirty_start(vm, classic, &d) == 0);
    uint64_t n;
    const uint64_t page = 0x419;          /* a receive buffer of the net-echo guest */
    gw_dirty_mark_gpa(d, page * 4096 + 0x81e, 8);
    REQUIRE(gw_dirty_fetch(d, &n) == 0);
    CHECK(bit(d, page));
    CHECK(n >= 1);
    /* Nothing queued this fetch's pages: the next fetch still has the page. */
    REQUIRE(gw_dirty_fetch(d, &n) == 0);
    CHECK(bit(d, page));
    /* A clear of another range leaves it; a clear of its range takes it. */
    CHECK_EQ(gw_dirty_clear(d, 4096, 64), 0);
    REQUIRE(gw_dirty_fetch(d, &n) == 0);
    CHECK(bit(d, page));
    CHECK_EQ(gw_dirty_clear(d, page / 64 * 64, 64), 0);
    REQUIRE(gw_dirty_fetch(d, &n) == 0);
    CHECK(!bit(d, page));
    /* A mark after the clear shows up again. */
    gw_dirty_mark_gpa(d, page * 4096, 1);
    REQUIRE(gw_dirty_fetch(d, &n) == 0);
    CHECK(bit(d, page));
    gw_dirty_stop(d);
    gw_vm_destroy(vm);
}

GW_TEST(device_marks_survive_until_cleared_manual) { device_marks_survive_until_cleared(false); }
GW_TEST(device_marks_survive_until_cleared_classic) { device_marks_survive_until_cleared(true); }
