/* Unit tests for engine/dirty on a real KVM VM running the dirtier: two consumers of one
 * tracker both see every guest write (every page whose bytes changed is in each consumer's
 * bitmaps) and every device write, harvest at their own pace under a running guest, and
 * clear independently. Skipped (exit 77) where /dev/kvm cannot be opened. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/util.h"
#include "engine/dirty/dirty.h"
#include "engine/vm/vm.h"
#include "tests/lib/gw_test.h"

#define PG 4096u

static struct gw_vm *running_vm_ring(uint32_t ring_entries)
{
    struct gw_vm_config cfg = {.name = "t", .memory_bytes = 32ull << 20, .vcpus = 1,
                               .guest_spec = "dirtier:ws=4M,rate=16M", .console_fd = -1,
                               .dirty_ring_entries = ring_entries};
    struct gw_vm *vm = NULL;
    char err[256];
    if (gw_vm_create(&cfg, &vm, err, sizeof err)) { fprintf(stderr, "create: %s\n", err); return NULL; }
    if (gw_vm_boot(vm, err, sizeof err) || gw_vm_start(vm) || gw_vm_wait_ready(vm, 20000)) {
        gw_vm_destroy(vm);
        return NULL;
    }
    return vm;
}

static struct gw_vm *running_vm(void)
{
    return running_vm_ring(0);
}

static bool bit(const uint64_t *map, uint64_t pfn)
{
    return (map[pfn / 64] >> (pfn % 64)) & 1;
}

/* ORs c's last fetch into acc. */
static void collect(const struct gw_dirty_consumer *c, uint64_t *acc)
{
    for (uint64_t w = 0; w < c->words; w++) acc[w] |= c->bitmap[w];
}

/* A fetch that takes (collects) and re-protects everything it returned, as a migration
 * round does. */
static int fetch_and_clear(struct gw_dirty_consumer *c, uint64_t *acc)
{
    int r = gw_dirty_fetch(c, NULL);
    if (!r) collect(c, acc);
    if (!r) r = gw_dirty_clear(c, 0, c->npages);
    return r;
}

/* The run every backend is checked with. From a known point (paused, both consumers emptied,
 * memory copied) the guest runs, first settle_us with no harvest at all; then a fetches
 * every 10 ms and b every 70 ms, while a device writes three pages above the guest's data
 * (it writes guest RAM, then reports it). Afterwards every page whose bytes changed must be
 * in both consumers' fetches, the device pages too. Returns the number of changed pages. */
static uint64_t check_every_write_seen(struct gw_vm *vm, struct gw_dirty_consumer *a, struct gw_dirty_consumer *b,
                                       unsigned settle_us)
{
    uint64_t npages = a->npages, words = a->words;
    uint64_t *seen_a = calloc(words, 8), *seen_b = calloc(words, 8);
    uint8_t *before = malloc(vm->mem.size);
    if (!seen_a || !seen_b || !before) { CHECK(!"out of memory"); free(seen_a); free(seen_b); free(before); return 0; }
    CHECK_EQ(gw_vm_pause(vm), 0);
    CHECK_EQ(fetch_and_clear(a, seen_a), 0);
    CHECK_EQ(fetch_and_clear(b, seen_b), 0);
    memset(seen_a, 0, words * 8);
    memset(seen_b, 0, words * 8);
    memcpy(before, vm->mem.base, vm->mem.size);
    CHECK_EQ(gw_vm_resume(vm), 0);
    usleep(settle_us);
    uint64_t dev_pfns[3] = { npages - 1, npages - 70, npages - 140 };
    for (int i = 0; i < 40; i++) {
        CHECK_EQ(fetch_and_clear(a, seen_a), 0);
        if (i % 7 == 0) CHECK_EQ(fetch_and_clear(b, seen_b), 0);
        if (i < 3) {
            uint64_t gpa = gw_guest_mem_gpa(&vm->mem, dev_pfns[i] * PG);
            memset(vm->mem.base + dev_pfns[i] * PG, 0x5a + i, 100);
            gw_dirty_mark_gpa(vm, gpa + 10, 50);
        }
        usleep(10000);
    }
    CHECK_EQ(gw_vm_pause(vm), 0);
    CHECK_EQ(fetch_and_clear(a, seen_a), 0);
    CHECK_EQ(fetch_and_clear(b, seen_b), 0);
    uint64_t changed = 0, missed_a = 0, missed_b = 0;
    for (uint64_t p = 0; p < npages; p++) {
        if (!memcmp(before + p * PG, vm->mem.base + p * PG, PG)) continue;
        changed++;
        missed_a += !bit(seen_a, p);
        missed_b += !bit(seen_b, p);
    }
    CHECK_EQ(missed_a, 0);
    CHECK_EQ(missed_b, 0);
    for (int i = 0; i < 3; i++) {
        CHECK(bit(seen_a, dev_pfns[i]));
        CHECK(bit(seen_b, dev_pfns[i]));
    }
    free(seen_a); free(seen_b); free(before);
    return changed;
}

GW_TEST(two_consumers_see_every_guest_and_device_write)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = running_vm();
    REQUIRE(vm);
    struct gw_dirty_consumer *a = NULL, *b = NULL;
    char why[200] = "";
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &a, why, sizeof why) == 0);
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_KVM_CLASSIC, &b, why, sizeof why) == 0); /* joins a's */
    uint64_t changed = check_every_write_seen(vm, a, b, 0);
    CHECK(changed > 50);   /* the guest did write */
    printf("  %llu pages changed, manual protect %s\n", (unsigned long long)changed, gw_dirty_manual(a) ? "on" : "off");
    gw_dirty_detach(a);
    gw_dirty_detach(b);
    gw_vm_destroy(vm);
}

/* Whether userfaultfd write-protect tracking can start here; false (the test skipped, with
 * the reason) when it cannot. */
static bool have_uffd_wp(struct gw_vm *vm)
{
    struct gw_dirty_consumer *c = NULL;
    char why[200] = "";
    int r = gw_dirty_attach(vm, GW_DIRTY_UFFD_WP, &c, why, sizeof why);
    gw_dirty_detach(c);
    if (r == -ENOTSUP || r == -EPERM || r == -ENOSYS) { gw_test_skip(why); return false; }
    CHECK_EQ(r, 0);
    return r == 0;
}

/* Device writes only (the VM paused): a and b asked for backends ka and kb. */
static void check_clear_independently(enum gw_dirty_backend ka, enum gw_dirty_backend kb)
{
    struct gw_vm *vm = running_vm();
    REQUIRE(vm);
    REQUIRE(gw_vm_pause(vm) == 0);   /* only device writes from here */
    if ((ka == GW_DIRTY_UFFD_WP || kb == GW_DIRTY_UFFD_WP) && !have_uffd_wp(vm)) { gw_vm_destroy(vm); return; }
    struct gw_dirty_consumer *a = NULL, *b = NULL;
    REQUIRE(gw_dirty_attach(vm, ka, &a, NULL, 0) == 0);
    uint64_t n;
    CHECK_EQ(gw_dirty_fetch(a, &n), 0);
    REQUIRE(gw_dirty_attach(vm, kb, &b, NULL, 0) == 0);
    uint64_t gpa = gw_guest_mem_gpa(&vm->mem, 100 * PG);
    gw_dirty_mark_gpa(vm, gpa, 2 * PG);            /* pages 100 and 101 */
    CHECK_EQ(gw_dirty_fetch(a, &n), 0);             /* a harvests: b must still get them */
    CHECK_EQ(n, 2);
    CHECK(bit(a->bitmap, 100) && bit(a->bitmap, 101));
    CHECK_EQ(gw_dirty_clear(a, 64, 64), 0);
    CHECK_EQ(gw_dirty_fetch(a, &n), 0);             /* a's next fetch: nothing new */
    CHECK_EQ(n, 0);
    gw_dirty_mark_gpa(vm, gw_guest_mem_gpa(&vm->mem, 5 * PG), 1);
    CHECK_EQ(gw_dirty_fetch(b, &n), 0);             /* b: both writes since it attached */
    CHECK_EQ(n, 3);
    CHECK(bit(b->bitmap, 5) && bit(b->bitmap, 100) && bit(b->bitmap, 101));
    CHECK_EQ(gw_dirty_fetch(a, &n), 0);             /* a: only the one after its fetch */
    CHECK_EQ(n, 1);
    CHECK(bit(a->bitmap, 5));
    /* A consumer attached late sees nothing from before; a bad clear range is refused. */
    CHECK_EQ(gw_dirty_clear(b, 3, 64), -EINVAL);
    CHECK_EQ(gw_dirty_clear(b, 0, a->npages + 64), -EINVAL);
    /* Fetched but not cleared: b's pages stay until it clears them. */
    gw_dirty_mark_gpa(vm, gw_guest_mem_gpa(&vm->mem, 6 * PG), 1);
    CHECK_EQ(gw_dirty_fetch(b, &n), 0);
    CHECK_EQ(n, 4);
    CHECK(bit(b->bitmap, 5) && bit(b->bitmap, 6) && bit(b->bitmap, 100));
    CHECK_EQ(gw_dirty_clear(b, 0, b->npages), 0);
    gw_dirty_detach(a);
    /* b keeps tracking alone. */
    gw_dirty_mark_gpa(vm, gw_guest_mem_gpa(&vm->mem, 7 * PG), 1);
    CHECK_EQ(gw_dirty_fetch(b, &n), 0);
    CHECK_EQ(n, 1);
    gw_dirty_detach(b);
    gw_vm_destroy(vm);
}

GW_TEST(consumers_clear_independently)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    check_clear_independently(GW_DIRTY_KVM_BITMAP, GW_DIRTY_KVM_BITMAP);
}

/* The same with the write-protect backend: alone, and beside KVM (in both orders). */
GW_TEST(uffd_wp_consumers_clear_independently)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    check_clear_independently(GW_DIRTY_UFFD_WP, GW_DIRTY_UFFD_WP);
    check_clear_independently(GW_DIRTY_UFFD_WP, GW_DIRTY_KVM_BITMAP);
    check_clear_independently(GW_DIRTY_KVM_BITMAP, GW_DIRTY_UFFD_WP);
}

GW_TEST(unavailable_backends_say_why)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = running_vm();
    REQUIRE(vm);
    struct gw_dirty_consumer *c = NULL;
    char why[200] = "";
    CHECK_EQ(gw_dirty_attach(vm, GW_DIRTY_KVM_RING, &c, why, sizeof why), -ENOTSUP);
    CHECK(strstr(why, "dirty ring") != NULL);
    gw_vm_destroy(vm);
}

/* The dirty ring: two consumers, a ring small enough (256 entries, 1 MiB of pages) that the
 * dirtier fills it between harvests, so vCPUs collect on KVM_EXIT_DIRTY_RING_FULL too. Every
 * page whose bytes changed is seen by both, device writes included. */
GW_TEST(ring_backend_sees_every_write)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm_config probe = {.name = "t", .memory_bytes = 32ull << 20, .vcpus = 1, .guest_spec = "idle",
                                 .console_fd = -1, .dirty_ring_entries = 256};
    struct gw_vm *vm = NULL;
    char err[256] = "";
    int r = gw_vm_create(&probe, &vm, err, sizeof err);
    gw_vm_destroy(vm);
    if (r == -ENOTSUP) { gw_test_skip(err); return; }
    REQUIRE(r == 0);
    vm = running_vm_ring(256);
    REQUIRE(vm);
    struct gw_dirty_consumer *a = NULL, *b = NULL;
    char why[200] = "";
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_KVM_RING, &a, why, sizeof why) == 0);
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &b, why, sizeof why) == 0);   /* fed by the ring */
    CHECK(!strcmp(gw_dirty_backend_name(a), "kvm-ring"));
    CHECK(!strcmp(gw_dirty_backend_name(b), "kvm-ring"));
    /* ~1200 pages written with no harvest first: the 256-entry ring fills. */
    uint64_t changed = check_every_write_seen(vm, a, b, 300000);
    char msg[256];
    CHECK_EQ(gw_vm_fatal(vm, msg, sizeof msg), 0);
    CHECK(changed > 256);
    CHECK(__atomic_load_n(&vm->ring_full_exits, __ATOMIC_RELAXED) > 0);   /* vCPUs collected too */
    CHECK_EQ(vm->ring_bad_entries, 0);
    printf("  ring: %llu pages changed, %llu full-ring exits\n", (unsigned long long)changed,
           (unsigned long long)vm->ring_full_exits);
    gw_dirty_detach(a);
    gw_dirty_detach(b);
    gw_vm_destroy(vm);
}

/* The write-protect backend alone feeds two consumers under the running dirtier: every page
 * whose bytes changed (guest and device writes) is in both, each clearing (re-protecting) at
 * its own pace. */
GW_TEST(uffd_wp_backend_sees_every_write)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = running_vm();
    REQUIRE(vm);
    if (!have_uffd_wp(vm)) { gw_vm_destroy(vm); return; }
    struct gw_dirty_consumer *a = NULL, *b = NULL;
    char why[200] = "";
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_UFFD_WP, &a, why, sizeof why) == 0);
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_UFFD_WP, &b, why, sizeof why) == 0);
    CHECK(!strcmp(gw_dirty_backend_name(a), "uffd-wp"));
    uint64_t changed = check_every_write_seen(vm, a, b, 0);
    CHECK(changed > 50);
    char msg[256];
    CHECK_EQ(gw_vm_fatal(vm, msg, sizeof msg), 0);
    printf("  uffd-wp: %llu pages changed\n", (unsigned long long)changed);
    gw_dirty_detach(a);
    gw_dirty_detach(b);
    gw_vm_destroy(vm);
}

/* A write-protect consumer beside a KVM one: both see every write while both backends run;
 * once the KVM consumer leaves, the pages left open for KVM are protected again and a new
 * write-protect consumer and the first still see every write between them. */
GW_TEST(uffd_wp_beside_kvm_and_after_it_leaves)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = running_vm();
    REQUIRE(vm);
    if (!have_uffd_wp(vm)) { gw_vm_destroy(vm); return; }
    struct gw_dirty_consumer *w = NULL, *k = NULL, *w2 = NULL;
    char why[200] = "";
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &k, why, sizeof why) == 0);
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_UFFD_WP, &w, why, sizeof why) == 0);
    CHECK(!strcmp(gw_dirty_backend_name(w), "kvm-bitmap+uffd-wp"));
    CHECK(check_every_write_seen(vm, w, k, 0) > 50);   /* clears left the written pages open */
    /* Paused: KVM leaves; the guest then writes with no clear in between. */
    uint8_t *before = malloc(vm->mem.size);
    REQUIRE(before);
    memcpy(before, vm->mem.base, vm->mem.size);
    gw_dirty_detach(k);
    CHECK(!strcmp(gw_dirty_backend_name(w), "uffd-wp"));
    REQUIRE(gw_vm_resume(vm) == 0);
    usleep(100000);
    REQUIRE(gw_vm_pause(vm) == 0);
    CHECK_EQ(gw_dirty_fetch(w, NULL), 0);
    uint64_t changed = 0, missed = 0;
    for (uint64_t p = 0; p < w->npages; p++) {
        if (!memcmp(before + p * PG, vm->mem.base + p * PG, PG)) continue;
        changed++;
        missed += !bit(w->bitmap, p);
    }
    free(before);
    CHECK(changed > 50);
    CHECK_EQ(missed, 0);
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_UFFD_WP, &w2, why, sizeof why) == 0);
    CHECK(check_every_write_seen(vm, w, w2, 0) > 50);
    char msg[256];
    CHECK_EQ(gw_vm_fatal(vm, msg, sizeof msg), 0);
    gw_dirty_detach(w);
    gw_dirty_detach(w2);
    gw_vm_destroy(vm);
}
