/* Unit tests for the contention bench's latency windows (bench/bench_disk_lat.h): a window's
 * p99 from two readings, the median and the spells, the cap, and the status parsing against
 * a stand-in `godwit-vm status` (a shell script: what is tested is the parsing, not a VM);
 * and its phases read as one (bench/bench_contention_phase.h: --rounds). */
#include "bench/bench_contention_phase.h"
#include "bench/bench_disk_lat.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A reading that has seen n more requests of ns each than then. */
static void advance(struct gw_lat_hist *h, unsigned n, uint64_t ns)
{
    for (unsigned i = 0; i < n; i++) gw_lat_hist_add(h, ns);
}

GW_TEST(a_window_is_the_p99_of_the_requests_between_two_readings)
{
    struct gw_lat_hist a = {0}, b;
    advance(&a, 1000, 50000000);   /* before the window: 50 ms, not in it */
    b = a;
    advance(&b, 990, 1000000);     /* in it: 1 ms, and 1 % at 4 ms */
    advance(&b, 10, 4000000);
    struct gw_disk_lat_windows w = {0};
    gw_disk_lat_window_add(&w, &a, &b);
    REQUIRE(w.n == 1);
    CHECK(w.p99_us[0] >= 800 && w.p99_us[0] <= 1250);
    gw_disk_lat_window_add(&w, &b, &b);   /* no request: kept as 0 */
    CHECK_EQ(w.n, 2);
    CHECK_EQ(w.p99_us[1], 0);
}

GW_TEST(the_median_skips_empty_windows_and_spells_are_counted_over_a_bound)
{
    struct gw_disk_lat_windows w = {0};
    uint32_t v[] = {4000, 0, 3000, 12000, 3500, 0};
    for (unsigned i = 0; i < 6; i++) w.p99_us[w.n++] = v[i];
    CHECK_EQ((long long)gw_disk_lat_windows_median(&w), 3750);   /* of 3000, 3500, 4000, 12000 */
    CHECK_EQ(gw_disk_lat_windows_over(&w, 2 * 3750.0), 1);
    struct gw_disk_lat_windows e = {0};
    CHECK_EQ((long long)gw_disk_lat_windows_median(&e), 0);
}

GW_TEST(windows_past_the_cap_are_dropped_and_counted)
{
    static struct gw_disk_lat_windows a, b;
    for (unsigned i = 0; i < GW_DISK_LAT_WINDOWS_MAX - 1; i++) a.p99_us[a.n++] = 100;
    b.p99_us[b.n++] = 200;
    b.p99_us[b.n++] = 300;
    b.dropped = 4;
    gw_disk_lat_windows_join(&a, &b);
    CHECK_EQ(a.n, GW_DISK_LAT_WINDOWS_MAX);
    CHECK_EQ(a.p99_us[GW_DISK_LAT_WINDOWS_MAX - 1], 200);
    CHECK_EQ(a.dropped, 5);
}

/* A script that prints one status line, as `godwit-vm status --json` would. */
static int stand_in(char *path, size_t cap, const char *line)
{
    snprintf(path, cap, "/tmp/gw-test-disk-lat.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -errno;
    dprintf(fd, "#!/bin/sh\necho '%s'\n", line);
    close(fd);
    return chmod(path, 0700) ? -errno : 0;
}

GW_TEST(the_status_histogram_is_read_and_a_malformed_one_refused)
{
    char path[64];
    struct gw_lat_hist h;
    REQUIRE(stand_in(path, sizeof path, "{\"ok\":true,\"disk_latency_buckets\":\"80:5,84:2\"}") == 0);
    CHECK_EQ(gw_disk_lat_read(path, "unused.sock", &h), 0);
    CHECK_EQ(h.count, 7);
    CHECK_EQ(h.b[80], 5);
    CHECK_EQ(h.b[84], 2);
    unlink(path);
    REQUIRE(stand_in(path, sizeof path, "{\"ok\":true,\"disk_latency_buckets\":\"256:1\"}") == 0);
    CHECK_EQ(gw_disk_lat_read(path, "unused.sock", &h), -EBADMSG);
    unlink(path);
    REQUIRE(stand_in(path, sizeof path, "{\"ok\":true,\"disk_latency_buckets\":\"3:1;4:1\"}") == 0);
    CHECK_EQ(gw_disk_lat_read(path, "unused.sock", &h), -EBADMSG);
    unlink(path);
    REQUIRE(stand_in(path, sizeof path, "{\"ok\":true,\"disk_latency_buckets\":\"80:5,80:2\"}") == 0);
    CHECK_EQ(gw_disk_lat_read(path, "unused.sock", &h), -EBADMSG);   /* a bucket twice */
    unlink(path);
    REQUIRE(stand_in(path, sizeof path, "{\"ok\":true,\"disk_latency_buckets\":\"80:-1\"}") == 0);
    CHECK_EQ(gw_disk_lat_read(path, "unused.sock", &h), -EBADMSG);   /* no count */
    unlink(path);
    REQUIRE(stand_in(path, sizeof path, "{\"ok\":true}") == 0);
    CHECK_EQ(gw_disk_lat_read(path, "unused.sock", &h), -ENOENT);
    unlink(path);
    /* The runner gone: its status command fails. */
    CHECK_EQ(gw_disk_lat_read("/bin/false", "unused.sock", &h), -EIO);
}

GW_TEST(rounds_read_as_one_take_the_p99_of_all_their_requests)
{
    static struct gw_cphase r1, r2, all, again;
    advance(&r1.d, 1000, 1000000);   /* round 1: every request 1 ms */
    advance(&r2.d, 985, 1000000);    /* round 2: 1.5 % at 10 ms, so its own p99 is 10 ms */
    advance(&r2.d, 15, 10000000);
    r1.bytes = 10u << 20, r1.elapsed_ms = 2000, r1.backoffs = 3, r1.wp_faults = 100;
    r2.bytes = 30u << 20, r2.elapsed_ms = 4000, r2.backoffs = 1, r2.wp_faults = 50;
    r1.win.p99_us[r1.win.n++] = 1000;
    r2.win.p99_us[r2.win.n++] = 10000;
    r2.win.p99_us[r2.win.n++] = 1000;
    gw_cphase_add(&all, &r1);
    gw_cphase_add(&all, &r2);
    CHECK_EQ(all.requests, 2000);
    /* 15 of 2000 requests are 0.75 %: the p99 of both rounds is 1 ms, neither the slower
     * round's 10 ms nor a mean of the two rounds' p99s. */
    CHECK(all.p99_us >= 800 && all.p99_us <= 1250);
    CHECK_EQ(all.bytes, 40u << 20);
    CHECK_EQ((long long)all.elapsed_ms, 6000);
    CHECK_EQ(all.backoffs, 4);
    CHECK_EQ(all.wp_faults, 150);
    CHECK(all.mib_s > 6.66 && all.mib_s < 6.67);   /* 40 MiB in 6 s, not the mean of 5 and 7.5 */
    CHECK_EQ(all.win.n, 3);
    CHECK_EQ(all.win.p99_us[1], 10000);
    /* A merge starts afresh: out holds x and y only. */
    again.bytes = 99, again.d.count = 7;
    gw_cphase_merge(&r1, &r2, &again);
    CHECK_EQ(again.requests, 2000);
    CHECK_EQ(again.bytes, 40u << 20);
    /* And the histograms alone: the quantiles of both, nothing else. */
    gw_cphase_hist_merge(&r2.d, &r2.d, &again);
    CHECK_EQ(again.requests, 2000);
    CHECK(again.p99_us >= 8000 && again.p99_us <= 12500);
    CHECK_EQ(again.bytes, 0);
}
