/* Unit tests for engine/dirty/dirty_snapshot.c, the live snapshot on the dirty tracker's
 * userfaultfd write-protect backend, on a real VM's guest memory. A writer thread plays the
 * guest (or a device: its stores go through the same mapping) rewriting random pages before,
 * across and after the point in time; then the dirtier guest itself runs. Every range read
 * through the snapshot must equal memory as it was at the freeze, with and without a KVM
 * consumer beside it, while the writer never stops for long. A side buffer too small fails
 * the snapshot with its reason and leaves the writer running. Skips (77) without /dev/kvm or
 * where userfaultfd write-protect of shared memory is unavailable. */
#include "engine/dirty/dirty.h"
#include "engine/dirty/dirty_snapshot.h"
#include "engine/common/util.h"
#include "engine/vm/vm.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MEM (32u << 20)
#define PAGES (MEM / 4096u)

struct writer {
    uint8_t *mem;
    atomic_bool run, paused, stop;
    atomic_ulong writes;
    uint64_t seed;
    pthread_t t;
};

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    while (!atomic_load(&w->stop)) {
        if (!atomic_load(&w->run)) { atomic_store(&w->paused, true); usleep(100); continue; }
        atomic_store(&w->paused, false);
        w->seed ^= w->seed << 13; w->seed ^= w->seed >> 7; w->seed ^= w->seed << 17;
        uint64_t page = w->seed % PAGES;
        memset(w->mem + page * 4096 + (w->seed >> 40) % 4000, (int)(w->seed >> 56) | 1, 64);
        atomic_fetch_add(&w->writes, 1);
    }
    return NULL;
}

static void writer_pause(struct writer *w)
{
    atomic_store(&w->run, false);
    while (!atomic_load(&w->paused)) usleep(50);
}

/* A VM whose memory only the test writes (never booted): half data, half holes. */
static struct gw_vm *quiet_vm(void)
{
    struct gw_vm_config cfg = {.name = "t", .memory_bytes = MEM, .vcpus = 1, .guest_spec = "idle", .console_fd = -1};
    struct gw_vm *vm = NULL;
    char err[256];
    if (gw_vm_create(&cfg, &vm, err, sizeof err)) { fprintf(stderr, "create: %s\n", err); return NULL; }
    for (uint32_t p = 0; p < PAGES / 2; p++) memset(vm->mem.base + (size_t)p * 4096, (int)(p & 0xff), 4096);
    return vm;
}

/* Opens a snapshot, or skips the test (false) where write-protect is unavailable. */
static bool open_or_skip(struct gw_vm *vm, uint64_t side, struct gw_dirty_snapshot **s)
{
    char err[256] = "";
    int r = gw_dirty_snapshot_open(vm, side, s, err, sizeof err);
    if (r == -ENOTSUP || r == -EPERM || r == -ENOSYS) { gw_test_skip(err); return false; }
    CHECK_EQ(r, 0);
    return r == 0;
}

static void point_in_time_under_writer(bool beside_kvm)
{
    struct gw_vm *vm = quiet_vm();
    REQUIRE(vm);
    uint8_t *mem = vm->mem.base;
    struct gw_dirty_consumer *k = NULL;
    if (beside_kvm) REQUIRE(gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &k, NULL, 0) == 0);
    struct writer w = {.mem = mem, .seed = 0x1234567};
    atomic_store(&w.run, true);
    pthread_create(&w.t, NULL, write_loop, &w);
    usleep(20000);
    struct gw_dirty_snapshot *s = NULL;
    if (!open_or_skip(vm, MEM, &s)) goto out;   /* writes go on while it protects */
    usleep(20000);
    writer_pause(&w);                           /* "the pause" */
    CHECK_EQ(gw_dirty_snapshot_freeze(s), 0);
    uint8_t *expect = malloc(MEM), *buf = malloc(1 << 20);
    REQUIRE(expect && buf);
    memcpy(expect, mem, MEM);
    atomic_store(&w.run, true);                 /* the guest runs on */
    unsigned long before = atomic_load(&w.writes);
    int bad = 0;
    for (uint64_t off = 0; off < MEM; off += 1 << 20) {
        usleep(2000);                           /* let the writer change what we have not read */
        REQUIRE(gw_dirty_snapshot_read(s, off, 1 << 20, buf) == 0);
        if (memcmp(buf, expect + off, 1 << 20)) bad++;
    }
    unsigned long after = atomic_load(&w.writes);
    CHECK_EQ(bad, 0);
    CHECK(after - before > 100);                /* the writer was not held up */
    struct gw_dirty_snapshot_stats st;
    gw_dirty_snapshot_close(s, &st);
    CHECK(st.pages_copied > 0);                 /* pages were saved before being rewritten */
    CHECK(st.faults >= st.pages_copied / 4);
    CHECK(memcmp(expect, mem, MEM) != 0);       /* memory really moved on */
    printf("  %s: %llu faults, %llu pages copied, freeze %.2f ms\n", beside_kvm ? "beside KVM" : "alone",
           (unsigned long long)st.faults, (unsigned long long)st.pages_copied, st.freeze_ns / 1e6);
    free(expect);
    free(buf);
out:
    atomic_store(&w.stop, true);
    pthread_join(w.t, NULL);
    gw_dirty_detach(k);
    gw_vm_destroy(vm);
}

GW_TEST(reads_equal_the_point_in_time_while_writes_continue)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    point_in_time_under_writer(false);
    point_in_time_under_writer(true);
}

GW_TEST(full_side_buffer_fails_and_never_blocks_the_writer)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = quiet_vm();
    REQUIRE(vm);
    uint8_t *mem = vm->mem.base;
    struct gw_dirty_snapshot *s = NULL, *s2 = NULL;
    if (!open_or_skip(vm, 64 * 4096, &s)) { gw_vm_destroy(vm); return; }
    CHECK_EQ(gw_dirty_snapshot_freeze(s), 0);
    /* One snapshot per VM at a time: a second one opens (another consumer) but cannot freeze. */
    char err[256];
    REQUIRE(gw_dirty_snapshot_open(vm, 64 * 4096, &s2, err, sizeof err) == 0);
    CHECK_EQ(gw_dirty_snapshot_freeze(s2), -EBUSY);
    gw_dirty_snapshot_close(s2, NULL);
    /* Rewrite every page: far more than 64 pages of side buffer. */
    uint64_t t0 = gw_now_ns();
    for (uint32_t p = 0; p < PAGES; p++) mem[(size_t)p * 4096] ^= 1;
    CHECK((gw_now_ns() - t0) / 1e9 < 10);
    char why[160];
    CHECK(gw_dirty_snapshot_failed(s, why, sizeof why));
    CHECK(strstr(why, "changed more than") != NULL);
    uint8_t page[4096];
    CHECK_EQ(gw_dirty_snapshot_read(s, 0, 4096, page), -ENOSPC);
    CHECK_EQ(gw_dirty_snapshot_read(s, 100, 4096, page), -EINVAL);
    CHECK_EQ(gw_dirty_snapshot_read(s, MEM - 4096, 8192, page), -EINVAL);
    gw_dirty_snapshot_close(s, NULL);
    gw_vm_destroy(vm);
}

/* A lone fault copies its own page; a writer moving through memory gets whole 16 KiB blocks.
 * Scattered writes (one page in every 32) copy exactly the pages written, one fault each; a
 * sequential sweep of 1 MiB faults about once per block. Both still read as the point in
 * time. */
GW_TEST(scattered_writes_copy_their_pages_sweeps_their_blocks)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = quiet_vm();
    REQUIRE(vm);
    uint8_t *mem = vm->mem.base;
    uint8_t *expect = malloc(MEM), *buf = malloc(8u << 20);
    REQUIRE(expect && buf);
    struct gw_dirty_snapshot_stats st[2] = {{0}};
    for (int sweep = 0; sweep < 2; sweep++) {
        struct gw_dirty_snapshot *s = NULL;
        if (!open_or_skip(vm, 8u << 20, &s)) { free(expect); free(buf); gw_vm_destroy(vm); return; }
        CHECK_EQ(gw_dirty_snapshot_freeze(s), 0);
        memcpy(expect, mem, MEM);
        if (!sweep) for (uint64_t p = 0; p < 2048; p += 32) mem[p * 4096 + 11] ^= 0x21;   /* 64 pages, 128 KiB apart */
        else for (uint64_t p = 2048; p < 2048 + 256; p++) mem[p * 4096 + 13] ^= 0x42;     /* a 1 MiB sweep */
        REQUIRE(gw_dirty_snapshot_read(s, 0, 8u << 20, buf) == 0);   /* the data half's first 8 MiB... */
        CHECK(memcmp(buf, expect, 8u << 20) == 0);
        REQUIRE(gw_dirty_snapshot_read(s, 8u << 20, 8u << 20, buf) == 0);   /* ...and the rest */
        CHECK(memcmp(buf, expect + (8u << 20), 8u << 20) == 0);
        gw_dirty_snapshot_close(s, &st[sweep]);
    }
    printf("  scattered: %llu faults, %llu pages copied for 64 pages; sweep: %llu faults, %llu copied for 256\n",
           (unsigned long long)st[0].faults, (unsigned long long)st[0].pages_copied,
           (unsigned long long)st[1].faults, (unsigned long long)st[1].pages_copied);
    CHECK_EQ(st[0].pages_copied, 64);
    CHECK_EQ(st[0].faults, 64);
    CHECK_EQ(st[1].pages_copied, 256);
    CHECK(st[1].faults <= 256 / 4 + 2);
    free(expect);
    free(buf);
    gw_vm_destroy(vm);
}

/* The bound is on copies not read yet: reading a range gives its copies' room back, so a guest
 * that rewrites far more than the side buffer in total, but never more than it ahead of the
 * reader, does not fail the snapshot, and every read still equals the point in time. */
GW_TEST(read_ranges_give_their_side_buffer_back)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = quiet_vm();
    REQUIRE(vm);
    uint8_t *mem = vm->mem.base;
    struct gw_dirty_snapshot *s = NULL;
    const uint64_t side = 2u << 20;   /* 512 pages; the loop below copies 4096 in all */
    if (!open_or_skip(vm, side, &s)) { gw_vm_destroy(vm); return; }
    CHECK_EQ(gw_dirty_snapshot_freeze(s), 0);
    uint8_t *expect = malloc(MEM), *buf = malloc(1 << 20);
    REQUIRE(expect && buf);
    memcpy(expect, mem, MEM);
    for (uint64_t off = 0; off < MEM / 2; off += 1 << 20) {   /* the half with data */
        /* The guest rewrites every page of the next MiB (256 pages copied), then we read it. */
        for (uint64_t p = off / 4096; p < (off + (1 << 20)) / 4096; p++) mem[p * 4096 + 7] ^= 0x5a;
        CHECK(gw_dirty_snapshot_pressure(s) > 0.4 && gw_dirty_snapshot_pressure(s) <= 0.5);
        /* The copies held lie where their pages do: in that MiB's bins, and nowhere else. */
        struct gw_dirty_snapshot_fill fl;
        gw_dirty_snapshot_fill(s, &fl);
        double mine = 0, elsewhere = 0;
        for (unsigned i = 0; i < GW_DIRTY_SNAPSHOT_BINS; i++) {
            uint64_t at = (uint64_t)i * (MEM / GW_DIRTY_SNAPSHOT_BINS);
            if (at >= off && at < off + (1 << 20)) mine += fl.held[i];
            else elsewhere += fl.held[i];
        }
        CHECK(fl.full == gw_dirty_snapshot_pressure(s) && mine == fl.full && elsewhere == 0);
        REQUIRE(gw_dirty_snapshot_read(s, off, 1 << 20, buf) == 0);
        CHECK(memcmp(buf, expect + off, 1 << 20) == 0);
        CHECK(gw_dirty_snapshot_pressure(s) == 0);    /* that MiB's copies are free again, */
        gw_dirty_snapshot_fill(s, &fl);
        double mibs = (double)(off >> 20) + 1, held = 0;
        for (unsigned i = 0; i < GW_DIRTY_SNAPSHOT_BINS; i++) held += fl.held[i];
        CHECK(held == 0 && fl.copied > 0.4 * mibs && fl.copied <= 0.5 * mibs);   /* and still counted as made */
    }
    char why[160];
    CHECK(!gw_dirty_snapshot_failed(s, why, sizeof why));
    /* Skipping a range frees its copies too. */
    gw_dirty_snapshot_close(s, NULL);
    REQUIRE(open_or_skip(vm, side, &s));
    CHECK_EQ(gw_dirty_snapshot_freeze(s), 0);
    for (uint64_t p = 0; p < 256; p++) mem[p * 4096 + 9] ^= 0x33;
    CHECK(gw_dirty_snapshot_pressure(s) > 0.4);
    gw_dirty_snapshot_skip(s, 0, 1 << 20);
    CHECK(gw_dirty_snapshot_pressure(s) == 0);
    struct gw_dirty_snapshot_stats st;
    gw_dirty_snapshot_close(s, &st);
    CHECK_EQ(st.pages_copied, 256);
    free(expect);
    free(buf);
    gw_vm_destroy(vm);
}

/* The real thing: the dirtier guest runs across the point in time; a migration-like KVM
 * consumer harvests beside the snapshot all along and sees the guest's writes; every read
 * equals memory at the freeze, and the guest is still running at the end. */
GW_TEST(snapshot_of_a_running_guest_beside_a_kvm_consumer)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm_config cfg = {.name = "t", .memory_bytes = MEM, .vcpus = 1, .guest_spec = "dirtier:ws=4M,rate=16M",
                               .console_fd = -1};
    struct gw_vm *vm = NULL;
    char err[256];
    REQUIRE(gw_vm_create(&cfg, &vm, err, sizeof err) == 0);
    REQUIRE(gw_vm_boot(vm, err, sizeof err) == 0 && gw_vm_start(vm) == 0 && gw_vm_wait_ready(vm, 20000) == 0);
    struct gw_dirty_consumer *k = NULL;
    REQUIRE(gw_dirty_attach(vm, GW_DIRTY_KVM_BITMAP, &k, NULL, 0) == 0);
    struct gw_dirty_snapshot *s = NULL;
    if (!open_or_skip(vm, MEM, &s)) { gw_dirty_detach(k); gw_vm_destroy(vm); return; }
    usleep(20000);
    REQUIRE(gw_vm_pause(vm) == 0);
    uint64_t t0 = gw_now_ns();
    CHECK_EQ(gw_dirty_snapshot_freeze(s), 0);
    uint64_t freeze_ns = gw_now_ns() - t0;
    uint8_t *expect = malloc(MEM), *buf = malloc(1 << 20);
    REQUIRE(expect && buf);
    memcpy(expect, vm->mem.base, MEM);
    CHECK_EQ(gw_dirty_fetch(k, NULL), 0);
    CHECK_EQ(gw_dirty_clear(k, 0, k->npages), 0);
    REQUIRE(gw_vm_resume(vm) == 0);
    int bad = 0;
    for (uint64_t off = 0; off < MEM; off += 1 << 20) {
        usleep(5000);
        REQUIRE(gw_dirty_snapshot_read(s, off, 1 << 20, buf) == 0);
        if (memcmp(buf, expect + off, 1 << 20)) bad++;
    }
    usleep(20000);
    REQUIRE(gw_vm_pause(vm) == 0);
    uint64_t n = 0, changed = 0, missed = 0;
    CHECK_EQ(gw_dirty_fetch(k, &n), 0);
    for (uint64_t p = 0; p < PAGES; p++) {
        if (!memcmp(expect + p * 4096, vm->mem.base + p * 4096, 4096)) continue;
        changed++;
        missed += !((k->bitmap[p / 64] >> (p % 64)) & 1);
    }
    CHECK_EQ(bad, 0);
    CHECK(changed > 50);
    CHECK_EQ(missed, 0);
    struct gw_dirty_snapshot_stats st;
    gw_dirty_snapshot_close(s, &st);
    CHECK(st.pages_copied > 0);
    CHECK_EQ(gw_vm_fatal(vm, err, sizeof err), 0);
    printf("  running guest: %llu pages changed, %llu copied, %llu faults, freeze %.2f ms\n",
           (unsigned long long)changed, (unsigned long long)st.pages_copied, (unsigned long long)st.faults,
           freeze_ns / 1e6);
    free(expect);
    free(buf);
    gw_dirty_detach(k);
    gw_vm_destroy(vm);
}
