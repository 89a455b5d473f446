/* Unit tests for backup/wp_snapshot.c on a real memfd mapping: a writer thread plays the
 * guest, rewriting random pages before, across and after the point in time; every range read
 * through the snapshot must equal memory as it was at the freeze, while the writer never
 * stops for long. A side buffer too small fails the snapshot with its reason and leaves the
 * writer running. Skips where userfaultfd write-protect of shared memory is unavailable. */
#include "backup/wp_snapshot.h"
#include "engine/common/util.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

static uint8_t *make_mem(void)
{
    int fd = memfd_create("wp-test", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, MEM) < 0) return NULL;
    uint8_t *m = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return NULL;
    for (uint32_t p = 0; p < PAGES / 2; p++) memset(m + (size_t)p * 4096, (int)(p & 0xff), 4096); /* half data, half holes */
    return m;
}

GW_TEST(reads_equal_the_point_in_time_while_writes_continue)
{
    uint8_t *mem = make_mem();
    REQUIRE(mem);
    struct gw_wp_snapshot *s = NULL;
    char err[256] = "";
    int r = gw_wp_open(mem, MEM, MEM, &s, err, sizeof err);
    if (r == -ENOTSUP || r == -EPERM || r == -ENOSYS) { gw_test_skip(err); munmap(mem, MEM); return; }
    REQUIRE(r == 0);
    struct writer w = {.mem = mem, .seed = 0x1234567};
    atomic_store(&w.run, true);
    pthread_create(&w.t, NULL, write_loop, &w);
    usleep(20000);
    CHECK_EQ(gw_wp_arm(s), 0);            /* writes go on while armed */
    usleep(20000);
    writer_pause(&w);                       /* "the pause" */
    CHECK_EQ(gw_wp_freeze(s), 0);
    uint8_t *expect = malloc(MEM);
    memcpy(expect, mem, MEM);
    atomic_store(&w.run, true);             /* the guest runs on */
    unsigned long before = atomic_load(&w.writes);
    uint8_t *buf = malloc(1 << 20);
    int bad = 0;
    for (uint64_t off = 0; off < MEM; off += 1 << 20) {
        usleep(2000);                       /* let the writer change what we have not read */
        REQUIRE(gw_wp_read(s, off, 1 << 20, buf) == 0);
        if (memcmp(buf, expect + off, 1 << 20)) bad++;
    }
    unsigned long after = atomic_load(&w.writes);
    atomic_store(&w.stop, true);
    pthread_join(w.t, NULL);
    CHECK_EQ(bad, 0);
    CHECK(after - before > 100);            /* the writer was not held up */
    struct gw_wp_stats st;
    gw_wp_close(s, &st);
    CHECK(st.pages_copied > 0);             /* pages were saved before being rewritten */
    /* Memory really moved on: the copy the snapshot gave is not today's memory. */
    CHECK(memcmp(expect, mem, MEM) != 0);
    free(expect);
    free(buf);
    munmap(mem, MEM);
}

GW_TEST(full_side_buffer_fails_and_never_blocks_the_writer)
{
    uint8_t *mem = make_mem();
    REQUIRE(mem);
    struct gw_wp_snapshot *s = NULL;
    char err[256] = "";
    int r = gw_wp_open(mem, MEM, 64 * 4096, &s, err, sizeof err);
    if (r == -ENOTSUP || r == -EPERM || r == -ENOSYS) { gw_test_skip(err); munmap(mem, MEM); return; }
    REQUIRE(r == 0);
    CHECK_EQ(gw_wp_protect_all(s), 0);
    /* Rewrite every page: far more than 64 pages of side buffer. */
    uint64_t t0 = gw_now_ns();
    for (uint32_t p = 0; p < PAGES; p++) mem[(size_t)p * 4096] ^= 1;
    CHECK((gw_now_ns() - t0) / 1e9 < 10);
    char why[160];
    CHECK(gw_wp_failed(s, why, sizeof why));
    CHECK(strstr(why, "changed more than") != NULL);
    uint8_t page[4096];
    CHECK_EQ(gw_wp_read(s, 0, 4096, page), -ENOSPC);
    gw_wp_close(s, NULL);
    munmap(mem, MEM);
}

/* The bound is on copies not read yet: reading a range gives its copies' room back, so a guest
 * that rewrites far more than the side buffer in total, but never more than it ahead of the
 * reader, does not fail the snapshot, and every read still equals the point in time. */
GW_TEST(read_ranges_give_their_side_buffer_back)
{
    uint8_t *mem = make_mem();
    REQUIRE(mem);
    struct gw_wp_snapshot *s = NULL;
    char err[256] = "";
    const uint64_t side = 2u << 20;   /* 512 pages; the loop below copies 4096 in all */
    int r = gw_wp_open(mem, MEM, side, &s, err, sizeof err);
    if (r == -ENOTSUP || r == -EPERM || r == -ENOSYS) { gw_test_skip(err); munmap(mem, MEM); return; }
    REQUIRE(r == 0);
    CHECK_EQ(gw_wp_protect_all(s), 0);
    uint8_t *expect = malloc(MEM), *buf = malloc(1 << 20);
    REQUIRE(expect && buf);
    memcpy(expect, mem, MEM);
    for (uint64_t off = 0; off < MEM / 2; off += 1 << 20) {   /* the half with data */
        /* The guest rewrites every page of the next MiB (256 pages copied), then we read it. */
        for (uint64_t p = off / 4096; p < (off + (1 << 20)) / 4096; p++) mem[p * 4096 + 7] ^= 0x5a;
        CHECK(gw_wp_pressure(s) > 0.4 && gw_wp_pressure(s) <= 0.5);
        REQUIRE(gw_wp_read(s, off, 1 << 20, buf) == 0);
        CHECK(memcmp(buf, expect + off, 1 << 20) == 0);
        CHECK(gw_wp_pressure(s) == 0);    /* that MiB's copies are free again */
    }
    char why[160];
    CHECK(!gw_wp_failed(s, why, sizeof why));
    /* Skipping a range frees its copies too. */
    gw_wp_close(s, NULL);
    REQUIRE(gw_wp_open(mem, MEM, side, &s, err, sizeof err) == 0);
    CHECK_EQ(gw_wp_protect_all(s), 0);
    for (uint64_t p = 0; p < 256; p++) mem[p * 4096 + 9] ^= 0x33;
    CHECK(gw_wp_pressure(s) > 0.4);
    gw_wp_skip(s, 0, 1 << 20);
    CHECK(gw_wp_pressure(s) == 0);
    struct gw_wp_stats st;
    gw_wp_close(s, &st);
    CHECK_EQ(st.pages_copied, 256);
    free(expect);
    free(buf);
    munmap(mem, MEM);
}
