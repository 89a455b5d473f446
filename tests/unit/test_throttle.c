/* The backup throttle's pure parts with a fake clock: the token bucket holds its rate, the
 * latency histogram's quantiles, and the adaptive controller against a simulated host (a store
 * of fixed bandwidth, a VM whose block latency rises when the backup takes more than the
 * contention leaves free): it backs off within 1 s of contention, keeps making progress during
 * it, and is back at >= 80 % of the free bandwidth within 5 s after it ends; injected store
 * latency makes it back off too; a fixed cap is never exceeded. And the host bucket, shared by
 * two throttles through its file, holds the host's rate over both. The disk's recent windows
 * (lat_windows.h), and a baseline taken from them at once. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/busy_spans.h"
#include "engine/common/lat_hist.h"
#include "engine/common/lat_windows.h"
#include "engine/common/util.h"
#include "storage/store.h"
#include "storage/throttle.h"
#include "storage/throttle_ctl.h"
#include "tests/lib/gw_test.h"

#define MIB (1024.0 * 1024.0)
#define S 1000000000ull

GW_TEST(bucket_holds_its_rate)
{
    struct gw_bucket b;
    uint64_t now = 5 * S;
    gw_bucket_init(&b, 10 * MIB, 1 * MIB, now);
    /* 200 takes of 256 KiB = 50 MiB at 10 MiB/s: 4.9 s (the first MiB was in the burst). */
    for (int i = 0; i < 200; i++) now += gw_bucket_take(&b, 256 * 1024, now);
    double took = (double)(now - 5 * S) / 1e9;
    CHECK(fabs(took - 4.9) < 0.01);
    /* Idle time earns at most the burst. */
    now += 10 * S;
    CHECK_EQ(gw_bucket_take(&b, 1 * MIB, now), 0);
    CHECK(gw_bucket_take(&b, 1 * MIB, now) > 0);
    /* Unlimited never waits; a lower rate from now on. */
    gw_bucket_set_rate(&b, 0, 1 * MIB, now);
    CHECK_EQ(gw_bucket_take(&b, 100 * MIB, now), 0);
    gw_bucket_set_rate(&b, 1 * MIB, 1 * MIB, now);
    CHECK_EQ(gw_bucket_take(&b, 1 * MIB, now), 0);   /* the burst */
    CHECK(llabs((long long)gw_bucket_take(&b, 1 * MIB, now) - (long long)S) < 1000);
}

GW_TEST(lat_hist_quantiles)
{
    struct gw_lat_hist h, h0, d;
    memset(&h, 0, sizeof h);
    for (int i = 0; i < 990; i++) gw_lat_hist_add(&h, 100000);      /* 100 us */
    for (int i = 0; i < 10; i++) gw_lat_hist_add(&h, 10000000);     /* 10 ms */
    uint64_t p50 = gw_lat_hist_quantile(&h, 0.5), p99 = gw_lat_hist_quantile(&h, 0.99), p999 = gw_lat_hist_quantile(&h, 0.999);
    CHECK(p50 > 85000 && p50 < 115000);
    CHECK(p99 > 85000 && p99 < 115000);
    CHECK(p999 > 8500000 && p999 < 11500000);
    h0 = h;
    for (int i = 0; i < 100; i++) gw_lat_hist_add(&h, 2000000);
    gw_lat_hist_delta(&h, &h0, &d);
    CHECK_EQ(d.count, 100);
    uint64_t q = gw_lat_hist_quantile(&d, 0.99);
    CHECK(q > 1700000 && q < 2300000);
    /* The sum of two histograms is the histogram of both: h0 back plus the delta is h. */
    struct gw_lat_hist s = h0;
    gw_lat_hist_sum(&s, &d);
    CHECK(memcmp(&s, &h, sizeof s) == 0);
    memset(&d, 0, sizeof d);
    CHECK_EQ(gw_lat_hist_quantile(&d, 0.99), 0);
    gw_lat_hist_add(&d, 0);
    gw_lat_hist_add(&d, UINT64_MAX);
    CHECK(gw_lat_hist_quantile(&d, 1.0) > (1ull << 62));
    CHECK_EQ(gw_lat_hist_quantile_bound(&d, 1.0), UINT64_MAX);
}

GW_TEST(lat_hist_quantile_interpolates_within_its_bucket)
{
    /* Latencies spread evenly over whole buckets (98,304 to 2^22 ns): the quantile follows
     * them to 2 %, where a bucket's middle alone is up to a tenth off and moves in ~20 %
     * steps. */
    static struct gw_lat_hist h;
    memset(&h, 0, sizeof h);
    for (uint64_t v = 98304; v < 4194304; v += 101) gw_lat_hist_add(&h, v);
    uint64_t prev = 0;
    for (int pm = 100; pm <= 995; pm += 5) {
        double q = pm / 1000.0;
        uint64_t rank = (uint64_t)(q * (double)h.count + 0.5), exact = 98304 + (rank - 1) * 101;
        uint64_t got = gw_lat_hist_quantile(&h, q);
        CHECK(got >= exact - exact / 50 && got <= exact + exact / 50);
        CHECK(got >= prev);   /* monotonic in q */
        prev = got;
    }
}

GW_TEST(lat_hist_shared_bound_is_never_below)
{
    /* Added to from several places at once (post-copy's receivers), read through a copy;
     * the bound is at or above the exact quantile, by a quarter of its power of two at most. */
    static struct gw_lat_hist h;
    struct gw_lat_hist c;
    for (uint64_t v = 1000; v <= 2000000; v += 997) gw_lat_hist_add_shared(&h, v);
    gw_lat_hist_load(&h, &c);
    CHECK_EQ(c.count, (2000000 - 1000) / 997 + 1);
    for (int pct = 1; pct <= 100; pct++) {
        double q = pct / 100.0;
        uint64_t rank = (uint64_t)(q * (double)c.count + 0.5), exact = 1000 + (rank - 1) * 997;
        uint64_t b = gw_lat_hist_quantile_bound(&c, q);
        CHECK(b > exact);
        CHECK(b <= exact + exact / 4 + 1);
    }
    memset(&c, 0, sizeof c);
    CHECK_EQ(gw_lat_hist_quantile_bound(&c, 0.99), 0);
}

/* The simulated host. */
struct sim {
    double store_bw;        /* what the store gives the backup at most */
    double free_bw;         /* what the VM's contention leaves (== store_bw when none) */
    uint64_t store_lat_ns;  /* per write */
};

/* What the backup gets at limit rate (0: none): the store is the only bound. */
static double achieved_of(const struct sim *h, double rate) { return rate > 0 && rate < h->store_bw ? rate : h->store_bw; }

/* Whether the guest feels the backup: it takes more than is free. */
static bool sim_hot(const struct sim *h, double achieved) { return achieved > h->free_bw * 1.02; }

/* The controller with its defaults and the guest's baseline p99 of the simulated host. */
static double sim_ctl_start(struct gw_throttle_ctl_params *p, struct gw_throttle_ctl *c)
{
    gw_throttle_ctl_defaults(p);
    gw_throttle_ctl_init(c, p, 200000);
    return c->rate;
}

/* What the backup achieves over one interval at limit rate, and what it measures. */
static struct gw_throttle_sample run_interval(const struct sim *h, double rate)
{
    double achieved = achieved_of(h, rate);
    struct gw_throttle_sample s = {.interval_ns = GW_THROTTLE_INTERVAL_NS};
    s.bytes = (uint64_t)(achieved * 0.1);
    s.store_n = s.bytes >> 20;
    s.store_lat_ns = h->store_lat_ns;
    s.vm_n = 100;
    /* The guest's p99 is 200 us while the backup stays within what is free, 5 ms beyond. */
    s.vm_p99_ns = sim_hot(h, achieved) ? 5000000 : 200000;
    return s;
}

GW_TEST(adaptive_backs_off_and_recovers)
{
    struct gw_throttle_ctl_params p;
    struct gw_throttle_ctl c;
    double rate = sim_ctl_start(&p, &c);
    struct sim h = {.store_bw = 200 * MIB, .free_bw = 200 * MIB, .store_lat_ns = 2000000};
    double first_backoff_t = -1, backed_t = -1, recovered_t = -1, sum_contended = 0;
    int n_contended = 0;
    for (int step = 0; step < 150; step++) {
        double t = step * 0.1;     /* the start of this interval */
        h.free_bw = t >= 2.0 && t < 5.0 ? 40 * MIB : 200 * MIB;
        double a = achieved_of(&h, rate);
        if (t >= 1.5 && t < 2.0) CHECK(a >= 200 * MIB);   /* alone, after the gentle start: all of the store */
        if (t >= 2.0 && t < 5.0 && backed_t < 0 && !sim_hot(&h, a)) backed_t = t;
        if (t >= 3.0 && t < 5.0) { sum_contended += a; n_contended++; }
        if (t >= 5.0 && recovered_t < 0 && a >= 0.8 * h.free_bw) recovered_t = t;
        struct gw_throttle_sample s = run_interval(&h, rate);
        uint64_t before = c.backoffs;
        rate = gw_throttle_ctl_step(&c, &p, &s);
        if (t >= 2.0 && first_backoff_t < 0 && c.backoffs > before) first_backoff_t = t + 0.1;
    }
    /* Back off within 1 s: the first halving one interval in, at what is free within 1 s. */
    CHECK(first_backoff_t > 2.0 && first_backoff_t <= 2.15);
    CHECK(backed_t >= 2.0 && backed_t <= 3.0);
    /* During contention it keeps going, at a good part of what is free. */
    CHECK(n_contended == 20 && sum_contended / n_contended >= 0.4 * 40 * MIB);
    /* Recovered to >= 80 % of the free bandwidth within 5 s (here: about 2 s). */
    CHECK(recovered_t >= 5.0 && recovered_t <= 10.0);
    CHECK(c.rate == 0);   /* the limit lifted entirely: the store is the limit again */
    CHECK(strstr(c.why, "VM block p99") != NULL);
}

GW_TEST(adaptive_stays_below_the_knee_under_lasting_contention)
{
    /* 40 MiB/s free for 12 s: after finding the knee the controller settles under it and
     * crosses it about once per 0.8 s, where growing by a quarter per interval crossed it
     * every 0.3-0.4 s (each crossing is a spike in the guest's p99). */
    struct gw_throttle_ctl_params p;
    struct gw_throttle_ctl c;
    double rate = sim_ctl_start(&p, &c), sum = 0;
    struct sim h = {.store_bw = 200 * MIB, .free_bw = 40 * MIB, .store_lat_ns = 2000000};
    uint64_t hot = 0, n = 0;
    for (int step = 0; step < 120; step++) {
        double t = step * 0.1, a = achieved_of(&h, rate);
        if (t >= 4.0) {
            sum += a;
            n++;
            hot += sim_hot(&h, a);
        }
        struct gw_throttle_sample s = run_interval(&h, rate);
        rate = gw_throttle_ctl_step(&c, &p, &s);
    }
    fprintf(stderr, "  knee: %llu hot intervals of %llu, mean %.1f MiB/s\n", (unsigned long long)hot,
            (unsigned long long)n, sum / n / MIB);
    CHECK(hot * 6 <= n);                  /* hot at most one interval in six */
    CHECK(sum / n >= 0.7 * 40 * MIB);     /* and still most of what is free */
}

GW_TEST(adaptive_backs_off_on_store_latency)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    struct gw_throttle_ctl c;
    gw_throttle_ctl_init(&c, &p, 0);   /* no VM baseline: learnt from quiet intervals */
    struct sim h = {.store_bw = 100 * MIB, .free_bw = 1e12, .store_lat_ns = 3000000};
    double rate = c.rate, lowest = 1e18, recovered_t = -1;
    for (int step = 0; step < 120; step++) {
        double t = step * 0.1;
        /* Injected: every write takes 40 ms for [3 s, 6 s) (Veeam throttles at 30 ms). */
        h.store_lat_ns = t >= 3.0 && t < 6.0 ? 40000000 : 3000000;
        struct gw_throttle_sample s = run_interval(&h, rate);
        rate = gw_throttle_ctl_step(&c, &p, &s);
        if (t >= 3.0 && t < 4.0 && rate > 0 && rate < lowest) lowest = rate;
        if (t >= 6.0 && recovered_t < 0 && achieved_of(&h, rate) >= 0.8 * h.store_bw) recovered_t = t;
        if (t >= 2.0 && t < 3.0) CHECK(rate == 0);   /* lifted after the gentle start */
    }
    CHECK(c.store_base_ns == 3000000);
    CHECK(lowest <= 100 * MIB / 8);          /* three halvings in the first second */
    CHECK(lowest >= p.min_rate);
    CHECK(recovered_t >= 6.0 && recovered_t <= 11.0);
    CHECK(strstr(c.why, "store write") != NULL);
}

GW_TEST(adaptive_respects_a_fixed_ceiling_and_a_floor)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    p.max_rate = 50 * MIB;
    struct gw_throttle_ctl c;
    gw_throttle_ctl_init(&c, &p, 200000);
    struct sim h = {.store_bw = 200 * MIB, .free_bw = 200 * MIB, .store_lat_ns = 1000000};
    double rate = c.rate;
    CHECK(rate == p.start_rate);   /* the gentle start, below the cap */
    for (int step = 0; step < 100; step++) {
        h.free_bw = step >= 20 && step < 60 ? 0 : 200 * MIB;   /* any write hurts the VM */
        struct gw_throttle_sample s = run_interval(&h, rate);
        rate = gw_throttle_ctl_step(&c, &p, &s);
        CHECK(rate > 0 && rate <= 50 * MIB);
        CHECK(rate >= p.min_rate);
    }
    CHECK(rate == 50 * MIB);
    /* A VM that does no I/O gives no signal: no back-off from noise. */
    gw_throttle_ctl_init(&c, &p, 200000);
    struct gw_throttle_sample s = {.bytes = 5 << 20, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 2, .vm_p99_ns = 50000000};
    gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.backoffs, 0);
}

/* A measured VM baseline is kept (the lowest of many noisy intervals would make every later
 * one look congested); a congested interval with the copy buffer half full holds the rate,
 * three quarters full lifts it: a backup that fails helps nobody. */
/* The start is gentle (no burst before the first measurement), and one spike in the VM's
 * window backs off once, not once per interval while the window remembers it. */
GW_TEST(adaptive_starts_gently_and_backs_off_once_per_spike)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    struct gw_throttle_ctl c;
    gw_throttle_ctl_init(&c, &p, 2000000);
    CHECK(c.rate == p.start_rate);
    struct gw_throttle_sample s = {.bytes = 800 << 10, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 2000,
                                   .vm_p99_ns = 9000000, .vm_last_p99_ns = 9000000};
    gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.backoffs, 1);
    s.vm_last_p99_ns = 1500000;         /* the window still holds the spike; the last interval is calm */
    for (int i = 0; i < 4; i++) gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.backoffs, 1);
}

GW_TEST(adaptive_keeps_a_measured_baseline_and_gives_way_to_buffer_pressure)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    struct gw_throttle_ctl c;
    p.start_rate = 0;
    gw_throttle_ctl_init(&c, &p, 2000000);
    struct gw_throttle_sample s = {.bytes = 10 << 20, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 500,
                                   .vm_p99_ns = 1000000};
    gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.vm_base_ns, 2000000);   /* a quieter interval does not lower it */
    s.vm_p99_ns = 2150000;              /* within 1.1x */
    gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.backoffs, 0);
    s.vm_p99_ns = 2600000;              /* beyond 1.1x: backs off from what was achieved */
    double rate = gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.backoffs, 1);
    CHECK(rate > 49 * MIB && rate < 51 * MIB);
    s.pressure = 0.85;                  /* congested again, but the buffer is nearly full: hold */
    CHECK(gw_throttle_ctl_step(&c, &p, &s) == rate);
    CHECK_EQ(c.backoffs, 1);
    s.pressure = 0.95;                  /* about to fail the backup: no limit */
    CHECK(gw_throttle_ctl_step(&c, &p, &s) == 0);
    s.vm_p99_ns = 1000000;              /* quiet and still nearly full: stays lifted */
    CHECK(gw_throttle_ctl_step(&c, &p, &s) == 0);
}

/* The limit never goes below what the backup needs to finish before its buffer fills. */
GW_TEST(adaptive_never_limits_below_what_finishing_needs)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    struct gw_throttle_ctl c;
    gw_throttle_ctl_init(&c, &p, 2000000);
    struct gw_throttle_sample s = {.bytes = 4 << 20, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 500,
                                   .vm_p99_ns = 9000000, .pressure = 0.3, .need_rate = 16 * MIB};
    for (int i = 0; i < 20; i++) CHECK(gw_throttle_ctl_step(&c, &p, &s) >= 20 * MIB);
    CHECK(c.backoffs > 0);   /* it did back off, down to the floor */
    s.store_n = 4;            /* but a store in trouble gets no floor: the backup gives way */
    s.store_lat_ns = 40000000;
    double rate = 0;
    for (int i = 0; i < 10; i++) rate = gw_throttle_ctl_step(&c, &p, &s);
    CHECK(rate > 0 && rate < 2 * MIB);
}

/* The host bucket: two backups (two throttles mapping one file, as two runners do) share one
 * budget; each alone would be unlimited. Real time: 36 MiB at 36 MiB/s after a 4 MiB burst. */
GW_TEST(host_bucket_is_shared)
{
    char dir[] = "/tmp/gw-throttle-test.XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s/host", dir);
    struct gw_store fake = {0};   /* only its latency counters are read (adaptive mode) */
    struct gw_throttle_cfg cfg = {.mode = GW_THROTTLE_OFF, .host_path = path, .host_rate = 36 * MIB};
    struct gw_throttle *a, *b;
    char err[256];
    REQUIRE(gw_throttle_open(&cfg, &fake, &a, err, sizeof err) == 0);
    REQUIRE(gw_throttle_open(&cfg, &fake, &b, err, sizeof err) == 0);
    uint64_t t0 = gw_now_ns();
    for (int i = 0; i < 20; i++) {
        gw_throttle_take(a, 1 << 20);
        gw_throttle_take(b, 1 << 20);
    }
    double took = (gw_now_ns() - t0) / 1e9;
    struct gw_throttle_stats sa, sb;
    gw_throttle_close(a, &sa);
    gw_throttle_close(b, &sb);
    CHECK(took > 36.0 / 36 * 0.95 && took < 36.0 / 36 * 1.25);
    CHECK_EQ(sa.bytes, 20 << 20);
    CHECK_EQ(sb.bytes, 20 << 20);
    CHECK(sa.wait_ns > 0 && sb.wait_ns > 0);
    /* Bad limits are refused with a reason. */
    struct gw_throttle *c;
    struct gw_throttle_cfg bad = {.mode = GW_THROTTLE_FIXED, .rate = -1};
    CHECK(gw_throttle_open(&bad, &fake, &c, err, sizeof err) == -EINVAL && strstr(err, "negative"));
    unlink(path);
    rmdir(dir);
}

/* An adaptive backup is paced from its first byte: its bucket holds one chunk, not 4 MiB (a full
 * 4 MiB bucket let the first 100 ms send seven objects, 50 MiB/s against a start at 8). Real
 * time: 3 MiB past the first chunk at 8 MiB/s, growing by a quarter per 100 ms, take ~0.3 s. */
GW_TEST(adaptive_first_writes_are_paced_from_the_first_byte)
{
    struct gw_store fake = {0};
    struct gw_throttle_cfg cfg = {.mode = GW_THROTTLE_ADAPTIVE};
    struct gw_throttle *t;
    char err[256];
    REQUIRE(gw_throttle_open(&cfg, &fake, &t, err, sizeof err) == 0);
    uint64_t t0 = gw_now_ns();
    for (int i = 0; i < 4; i++) gw_throttle_take(t, 1 << 20);
    double took = (gw_now_ns() - t0) / 1e9;
    gw_throttle_close(t, NULL);
    CHECK(took > 0.2 && took < 1.0);
}

/* A cancel ends a throttle's wait within a slice: at 1 MiB/s, 4 MiB past the burst would take
 * 4 s; the cancel comes after ~100 ms of it, and that write and every later one is refused. */
static bool cancel_after(void *ctx)
{
    const uint64_t *at = ctx;
    return gw_now_ns() >= *at;
}

GW_TEST(a_cancel_ends_the_wait_within_a_slice)
{
    struct gw_store fake = {0};
    uint64_t at = UINT64_MAX;
    struct gw_throttle_cfg cfg = {.mode = GW_THROTTLE_FIXED, .rate = 1 << 20, .cancelled = cancel_after, .cancel_ctx = &at};
    struct gw_throttle *t;
    char err[256];
    REQUIRE(gw_throttle_open(&cfg, &fake, &t, err, sizeof err) == 0);
    int r = 0;
    for (int i = 0; i < 4 && !r; i++) r = gw_throttle_take(t, 1 << 20);   /* the burst: no wait yet */
    CHECK_EQ(r, 0);
    uint64_t t0 = gw_now_ns();
    at = t0 + 100000000ull;
    for (int i = 0; i < 4 && !r; i++) r = gw_throttle_take(t, 1 << 20);
    double took = (gw_now_ns() - t0) / 1e9;
    CHECK_EQ(r, -ECANCELED);
    CHECK(took >= 0.09 && took < 0.5);
    CHECK_EQ(gw_throttle_take(t, 1), -ECANCELED);
    gw_throttle_close(t, NULL);
}

/* A guest slow for its own reasons (its p99 over the target whatever the backup writes): the
 * controller backs off to its floor, sees the guest no better there for a whole window, takes
 * the baseline again and grows; a guest slowed by our writes (quiet at the floor) does not. */
GW_TEST(adaptive_takes_the_baseline_again_when_the_floor_does_not_help)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    struct gw_throttle_ctl c;
    gw_throttle_ctl_init(&c, &p, 1000000);
    double rate = c.rate, top = 0;
    int at_floor = 0;
    for (int i = 0; i < 60; i++) {
        double a = rate > 0 && rate < 200 * MIB ? rate : 200 * MIB;
        struct gw_throttle_sample s = {.bytes = (uint64_t)(a * 0.1), .interval_ns = GW_THROTTLE_INTERVAL_NS,
                                       .vm_n = 1000, .vm_p99_ns = 3000000, .vm_last_p99_ns = 3000000};
        rate = gw_throttle_ctl_step(&c, &p, &s);
        at_floor += rate > 0 && rate <= p.min_rate;
        if (i >= 30 && (rate == 0 || rate > top)) top = rate == 0 ? 1e12 : rate;
    }
    CHECK(at_floor >= 1 && at_floor <= 10);      /* it did back off, and left the floor */
    CHECK_EQ(c.rebases, 1);
    CHECK_EQ(c.vm_base_ns, 3000000);
    CHECK(top >= 8 * MIB);                         /* growing again */
    CHECK(strstr(c.why, "taken again") != NULL);
    /* The guest calms down: the baseline falls back to the measured one, not below. */
    struct gw_throttle_sample q = {.bytes = 1 << 20, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 1000,
                                   .vm_p99_ns = 800000};
    gw_throttle_ctl_step(&c, &p, &q);
    CHECK_EQ(c.vm_base_ns, 1000000);

    /* Slowed by our writes: hot above the floor, quiet at it; the baseline stays. */
    gw_throttle_ctl_init(&c, &p, 1000000);
    rate = c.rate;
    for (int i = 0; i < 60; i++) {
        double a = rate > 0 && rate < 200 * MIB ? rate : 200 * MIB;
        uint64_t lat = a > 2 * MIB ? 3000000 : 900000;
        struct gw_throttle_sample s = {.bytes = (uint64_t)(a * 0.1), .interval_ns = GW_THROTTLE_INTERVAL_NS,
                                       .vm_n = 1000, .vm_p99_ns = lat, .vm_last_p99_ns = lat};
        rate = gw_throttle_ctl_step(&c, &p, &s);
    }
    CHECK_EQ(c.rebases, 0);
    CHECK_EQ(c.vm_base_ns, 1000000);
}

/* In-flight writes by Little's law: just what the limit needs, at least one; the store's
 * maximum when unlimited. */
GW_TEST(inflight_follows_the_limit)
{
    CHECK_EQ(gw_throttle_ctl_inflight(0, 2000000, 1 << 20, 16), 0);           /* unlimited */
    CHECK_EQ(gw_throttle_ctl_inflight(8 * MIB, 0, 0, 16), 1);                 /* nothing measured yet */
    CHECK_EQ(gw_throttle_ctl_inflight(32 * MIB, 3000000, 1 << 20, 16), 1);    /* 0.14 -> 1 */
    CHECK_EQ(gw_throttle_ctl_inflight(200 * MIB, 10000000, 1 << 20, 16), 3);  /* 1.5 x 2.0 = 3 */
    CHECK_EQ(gw_throttle_ctl_inflight(210 * MIB, 10000000, 1 << 20, 16), 4);  /* 3.15 -> 4 */
    CHECK_EQ(gw_throttle_ctl_inflight(2000 * MIB, 50000000, 1 << 20, 16), 16);/* capped */
}

/* The VM's baseline is the median of its windows' p99s: a window that caught a spike, or one
 * with too few requests (0), does not set it. */
GW_TEST(baseline_is_the_median_of_the_windows)
{
    CHECK_EQ(gw_throttle_ctl_baseline((uint64_t[]){3000000, 4900000, 2900000, 3100000}, 4), 3050000);
    CHECK_EQ(gw_throttle_ctl_baseline((uint64_t[]){3000000, 9000000, 0, 3200000}, 4), 3200000);
    CHECK_EQ(gw_throttle_ctl_baseline((uint64_t[]){0, 2500000, 0, 0}, 4), 2500000);
    CHECK_EQ(gw_throttle_ctl_baseline((uint64_t[]){0, 0, 0, 0}, 4), 0);
    CHECK_EQ(gw_throttle_ctl_baseline(NULL, 0), 0);
}

/* The floor of what finishing needs does not become the controller's own limit: when the need
 * goes, the limit is back where the guests had put it, not grown from the floor, and an
 * interval the backup spent reading (little written) does not lift it. */
GW_TEST(adaptive_steps_from_its_own_limit_not_the_floor)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    struct gw_throttle_ctl c;
    gw_throttle_ctl_init(&c, &p, 2000000);
    struct gw_throttle_sample hot = {.bytes = 1 << 20, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 500,
                                     .vm_p99_ns = 9000000};
    for (int i = 0; i < 6; i++) gw_throttle_ctl_step(&c, &p, &hot);
    double own = c.rate;
    CHECK(own > 0 && own <= 2 * MIB);   /* the guests put it near the floor */
    struct gw_throttle_sample need = {.bytes = 1 << 20, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 500,
                                      .vm_p99_ns = 1500000, .pressure = 0.3, .need_rate = 40 * MIB};
    CHECK(gw_throttle_ctl_step(&c, &p, &need) >= 50 * MIB);
    CHECK(gw_throttle_ctl_step(&c, &p, &need) >= 50 * MIB);
    need.need_rate = 0;   /* the need is gone; ~10 MiB/s achieved, the guest quiet */
    double after = gw_throttle_ctl_step(&c, &p, &need);
    CHECK(after > 0);                  /* not lifted */
    CHECK(after < 4 * MIB);            /* and not grown from the floor */
}

/* A baseline measured in a disturbance (the whole 2 s before the backup at 9 ms) falls to the
 * guest's own p99 once four whole windows in a row show it well under (4 ms): the target is
 * then 4.4 ms, and a backup pushing the guest to 6 ms backs off. Windows under a sound
 * baseline by less than a third (0.65x), or a single quiet window, leave it as measured. */
GW_TEST(a_baseline_taken_in_a_disturbance_falls_to_the_guests_own_p99)
{
    struct gw_throttle_ctl_params p;
    gw_throttle_ctl_defaults(&p);
    struct gw_throttle_ctl c;
    gw_throttle_ctl_init(&c, &p, 9000000);
    struct gw_throttle_sample s = {.bytes = 1 << 20, .interval_ns = GW_THROTTLE_INTERVAL_NS, .vm_n = 1000,
                                   .vm_p99_ns = 6000000, .vm_last_p99_ns = 6000000};
    for (int i = 0; i < 4; i++) gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.backoffs, 0);                       /* 6 ms is under 1.1 x 9 ms */
    CHECK_EQ(c.vm_base_ns, 9000000);
    s.vm_p99_ns = s.vm_last_p99_ns = 4000000;
    for (int i = 0; i < 20; i++) gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.base_falls, 1);
    CHECK_EQ(c.vm_base_ns, 4000000);
    CHECK(strstr(c.why, "disturbance") != NULL);
    s.vm_p99_ns = s.vm_last_p99_ns = 6000000;
    gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.backoffs, 1);

    gw_throttle_ctl_init(&c, &p, 3000000);         /* a sound baseline */
    s.vm_p99_ns = s.vm_last_p99_ns = 1950000;      /* 0.65x: the guest's own swing */
    for (int i = 0; i < 60; i++) gw_throttle_ctl_step(&c, &p, &s);
    s.vm_p99_ns = s.vm_last_p99_ns = 1000000;      /* one quiet window among them */
    for (int i = 0; i < 5; i++) gw_throttle_ctl_step(&c, &p, &s);
    s.vm_p99_ns = s.vm_last_p99_ns = 1950000;
    for (int i = 0; i < 15; i++) gw_throttle_ctl_step(&c, &p, &s);
    CHECK_EQ(c.base_falls, 0);
    CHECK_EQ(c.vm_base_ns, 3000000);
}

static void add_n(struct gw_lat_hist *h, unsigned n, uint64_t ns)
{
    for (unsigned i = 0; i < n; i++) gw_lat_hist_add(h, ns);
}

/* A disk's windows: cut every 0.5 s at the first request after it, with their p99; one with
 * too few requests, or one that lasted over twice its length (an idle disk), left out; the
 * last 64 kept, oldest first. */
GW_TEST(lat_windows_are_cut_every_half_second_and_skip_idle_ones)
{
    static struct gw_lat_windows w;
    static struct gw_lat_hist h;
    uint32_t out[GW_LAT_WINDOWS];
    uint64_t t = 10 * S;
    gw_lat_windows_note(&w, &h, t);                  /* the first window begins */
    add_n(&h, 200, 1000000);
    gw_lat_windows_note(&w, &h, t + S / 4);          /* 0.25 s: not yet */
    CHECK_EQ(gw_lat_windows_recent(&w, out, NULL, GW_LAT_WINDOWS), 0);
    gw_lat_windows_note(&w, &h, t + S / 2);
    REQUIRE(gw_lat_windows_recent(&w, out, NULL, GW_LAT_WINDOWS) == 1);
    CHECK(out[0] >= 900 && out[0] <= 1100);
    add_n(&h, 3, 9000000);                           /* too few to say */
    gw_lat_windows_note(&w, &h, t + S);
    CHECK_EQ(gw_lat_windows_recent(&w, out, NULL, GW_LAT_WINDOWS), 1);
    add_n(&h, 200, 9000000);                         /* 1.5 s since the last cut: idle in between */
    gw_lat_windows_note(&w, &h, t + 5 * S / 2);
    CHECK_EQ(gw_lat_windows_recent(&w, out, NULL, GW_LAT_WINDOWS), 1);
    add_n(&h, 100, 2000000);
    add_n(&h, 100, 4000000);
    gw_lat_windows_note(&w, &h, t + 3 * S);
    REQUIRE(gw_lat_windows_recent(&w, out, NULL, GW_LAT_WINDOWS) == 2);
    CHECK(out[0] >= 900 && out[0] <= 1100);
    CHECK(out[1] >= 3500 && out[1] <= 4500);
    for (unsigned i = 0; i < 70; i++) {              /* 1, 2, ... 70 ms: the ring keeps 7..70 */
        add_n(&h, 50, (i + 1) * 1000000ull);
        gw_lat_windows_note(&w, &h, t + 3 * S + (i + 1) * (S / 2));
    }
    REQUIRE(gw_lat_windows_recent(&w, out, NULL, GW_LAT_WINDOWS) == GW_LAT_WINDOWS);
    CHECK(out[0] >= 6300 && out[0] <= 7700);
    CHECK(out[GW_LAT_WINDOWS - 1] >= 63000 && out[GW_LAT_WINDOWS - 1] <= 84000);   /* its bucket: 67-84 ms */
    CHECK_EQ(gw_lat_windows_recent(&w, out, NULL, 3), 3);
    CHECK(out[2] >= 63000 && out[2] <= 84000);
}

/* Each window knows when it ended; the windows of a time known to be no baseline (a backup
 * and the store's settling after it) are left out, and one that may have begun inside it too
 * (a kept window lasts at most 1 s), the others kept in order. */
GW_TEST(lat_windows_of_a_busy_time_are_left_out)
{
    static struct gw_lat_windows w;
    static struct gw_lat_hist h;
    uint32_t out[GW_LAT_WINDOWS];
    uint64_t ends[GW_LAT_WINDOWS];
    uint64_t t = 100 * S;
    gw_lat_windows_note(&w, &h, t);
    for (unsigned i = 0; i < 20; i++) {              /* 20 windows ending at t + 0.5 s ... t + 10 s */
        add_n(&h, 50, (i + 1) * 1000000ull);
        gw_lat_windows_note(&w, &h, t + (i + 1) * (S / 2));
    }
    REQUIRE(gw_lat_windows_recent(&w, out, ends, GW_LAT_WINDOWS) == 20);
    CHECK_EQ(ends[0], t + S / 2);
    CHECK_EQ(ends[19], t + 10 * S);
    /* Busy from t + 3 s to t + 5 s: the windows ending at 3.0-6.0 s may overlap it. */
    unsigned n = gw_lat_windows_drop(out, ends, 20, t + 3 * S, t + 5 * S);
    REQUIRE(n == 13);
    CHECK_EQ(ends[4], t + 5 * S / 2);                /* the last before it */
    CHECK_EQ(ends[5], t + 13 * S / 2);               /* the first after it */
    CHECK(out[4] >= 4500 && out[4] <= 5500);         /* its p99 went with it */
    CHECK(out[5] >= 12000 && out[5] <= 16500);       /* 13 ms, within its bucket */
    /* Busy before every window or after them all: none left out. */
    CHECK_EQ(gw_lat_windows_drop(out, ends, n, t - 10 * S, t - 2 * S), n);
    CHECK_EQ(gw_lat_windows_drop(out, ends, n, t + 11 * S, t + 12 * S), n);
}

/* The host's record of its backups (busy_spans.h): what a new backup is told, as ages, and
 * what its runner makes of them; the windows of either span are then left out of the past. */
GW_TEST(host_backups_told_as_ages_leave_their_windows_out)
{
    static struct gw_busy_spans b;
    uint64_t t = 1000 * S;
    uint64_t a = gw_busy_spans_begin(&b, t);            /* 1000-1004 s */
    gw_busy_spans_end(&b, a, t + 4 * S);
    uint64_t old = gw_busy_spans_begin(&b, t - 200 * S);  /* long over: past the horizon */
    gw_busy_spans_end(&b, old, t - 190 * S);
    uint64_t c = gw_busy_spans_begin(&b, t + 6 * S);    /* still running */
    /* A new backup reads the others before it records its own (gw_bkjob_spans_begin). */
    struct gw_busy_age ages[GW_BUSY_SPANS];
    uint64_t now = t + 10 * S;
    REQUIRE(gw_busy_spans_ages(&b, now, 80 * S, ages, GW_BUSY_SPANS) == 2);
    CHECK_EQ(ages[0].started_age_ms, 10000);
    CHECK_EQ(ages[0].ended_age_ms, 6000);
    CHECK(!ages[0].running);
    CHECK_EQ(ages[1].started_age_ms, 4000);
    CHECK_EQ(ages[1].ended_age_ms, 0);
    CHECK(ages[1].running);
    /* With room for one: the newest. */
    REQUIRE(gw_busy_spans_ages(&b, now, 80 * S, ages, 1) == 1);
    CHECK_EQ(ages[0].started_age_ms, 4000);
    /* An end for a span no longer there changes nothing; its own end counts once. */
    gw_busy_spans_end(&b, 999, now);
    gw_busy_spans_end(&b, c, t + 8 * S);
    gw_busy_spans_end(&b, c, t + 9 * S);
    REQUIRE(gw_busy_spans_ages(&b, now, 80 * S, ages, GW_BUSY_SPANS) == 2);
    CHECK_EQ(ages[1].ended_age_ms, 2000);

    /* The runner reads them back at its own moment, 50 ms later. */
    uint64_t rnow = now + 50000000ull, from, to;
    gw_busy_span_of_ages(rnow, &ages[0], &from, &to);
    CHECK_EQ(from, rnow - 10 * S);
    CHECK_EQ(to, rnow - 6 * S);
    struct gw_busy_age running = {.started_age_ms = 3000, .ended_age_ms = 77, .running = true};
    gw_busy_span_of_ages(rnow, &running, &from, &to);
    CHECK_EQ(from, rnow - 3 * S);
    CHECK_EQ(to, rnow);
    /* Hostile ages: older than the clock, an end before the start. */
    struct gw_busy_age bad = {.started_age_ms = UINT64_MAX, .ended_age_ms = UINT64_MAX};
    gw_busy_span_of_ages(5 * S, &bad, &from, &to);
    CHECK_EQ(from, 0);
    CHECK_EQ(to, 0);
    struct gw_busy_age inverted = {.started_age_ms = 1000, .ended_age_ms = 4000};
    gw_busy_span_of_ages(rnow, &inverted, &from, &to);
    CHECK_EQ(from, rnow - S);
    CHECK_EQ(to, rnow - S);

    /* A guest's 30 windows ending at 990.5 s to 1005 s; the two spans (each with the runner's
     * 10 s of settling) leave only those that ended before the first began, at 1000 s. */
    static struct gw_lat_windows w;
    static struct gw_lat_hist h;
    uint32_t out[GW_LAT_WINDOWS];
    uint64_t ends[GW_LAT_WINDOWS];
    gw_lat_windows_note(&w, &h, t - 10 * S);
    for (unsigned i = 0; i < 30; i++) {
        add_n(&h, 50, 1000000ull);
        gw_lat_windows_note(&w, &h, t - 10 * S + (i + 1) * (S / 2));
    }
    REQUIRE(gw_lat_windows_recent(&w, out, ends, GW_LAT_WINDOWS) == 30);
    unsigned n = 30;
    gw_busy_span_of_ages(now, &ages[0], &from, &to);
    n = gw_lat_windows_drop(out, ends, n, from, to + 10 * S);
    gw_busy_span_of_ages(now, &ages[1], &from, &to);
    n = gw_lat_windows_drop(out, ends, n, from, to + 10 * S);
    CHECK_EQ(n, 19);                                   /* those ending at 990.5-999.5 s */
    CHECK_EQ(ends[n - 1], t - S / 2);
}

/* A full record makes room: the span that ended longest ago goes first, and only when every
 * span runs, the one that began first. */
GW_TEST(host_backup_record_replaces_the_oldest)
{
    static struct gw_busy_spans b;
    uint64_t t = 100 * S, ids[GW_BUSY_SPANS];
    for (unsigned i = 0; i < GW_BUSY_SPANS; i++) ids[i] = gw_busy_spans_begin(&b, t + i * S);
    gw_busy_spans_end(&b, ids[5], t + 40 * S);
    gw_busy_spans_end(&b, ids[9], t + 30 * S);
    struct gw_busy_age ages[GW_BUSY_SPANS];
    uint64_t now = t + 50 * S;
    gw_busy_spans_begin(&b, now);                      /* takes span 9's slot (ended first) */
    gw_busy_spans_begin(&b, now);                      /* then span 5's */
    unsigned n = gw_busy_spans_ages(&b, now, 80 * S, ages, GW_BUSY_SPANS);
    REQUIRE(n == GW_BUSY_SPANS);
    for (unsigned i = 0; i < n; i++) CHECK(ages[i].running);
    gw_busy_spans_begin(&b, now + S);                  /* all running: span 0 (began first) goes */
    n = gw_busy_spans_ages(&b, now + S, 80 * S, ages, GW_BUSY_SPANS);
    REQUIRE(n == GW_BUSY_SPANS);
    CHECK_EQ(ages[0].started_age_ms, 50000);           /* span 1 now begins the list */
    gw_busy_spans_end(&b, ids[0], now + 2 * S);        /* span 0 is gone: nothing to end */
    CHECK_EQ(gw_busy_spans_ages(&b, now + 2 * S, 80 * S, ages, GW_BUSY_SPANS), GW_BUSY_SPANS);
    for (unsigned i = 0; i < GW_BUSY_SPANS; i++) CHECK(ages[i].running);
}

struct fake_vm {
    struct gw_lat_hist h;
    uint64_t past[GW_THROTTLE_BASE_MAX];
    int npast;
};

static int fake_latency(void *ctx, struct gw_lat_hist *out)
{
    struct fake_vm *v = ctx;
    add_n(&v->h, 100, 3000000);   /* requests keep coming */
    *out = v->h;
    return 0;
}

static int fake_history(void *ctx, uint64_t *p99_ns, unsigned max)
{
    struct fake_vm *v = ctx;
    int n = v->npast < (int)max ? v->npast : (int)max;
    memcpy(p99_ns, v->past, (size_t)(n > 0 ? n : 0) * sizeof *p99_ns);
    return v->npast < 0 ? v->npast : n;
}

/* With the guest's last 8 s or more at hand the baseline is their median, at once (a spike or
 * two among 40 windows does not move it); with less, or none to give, it is measured over the
 * 2 s before the first write as before. */
GW_TEST(adaptive_takes_the_baseline_from_the_vms_recent_past_at_once)
{
    static struct fake_vm v;
    struct gw_store fake = {0};
    struct gw_throttle_cfg cfg = {.mode = GW_THROTTLE_ADAPTIVE, .vm_latency = fake_latency, .vm_history = fake_history,
                                  .vm_ctx = &v};
    for (int i = 0; i < 40; i++) v.past[i] = i == 7 || i == 30 ? 25000000 : 2000000 + (uint64_t)i * 10000;
    v.npast = 40;
    struct gw_throttle *t;
    struct gw_throttle_stats st;
    char err[256];
    uint64_t t0 = gw_now_ns();
    REQUIRE(gw_throttle_open(&cfg, &fake, &t, err, sizeof err) == 0);
    double took = (gw_now_ns() - t0) / 1e9;
    gw_throttle_close(t, &st);
    CHECK(took < 0.3);
    CHECK(st.vm_base_from_history);
    CHECK_EQ(st.vm_base_windows, 40);
    CHECK_EQ(st.vm_base_ns, 2000000 + 20 * 10000 + 5000);   /* the middle two of 40: windows 20 and 21 */

    v.npast = (int)GW_THROTTLE_HISTORY_MIN - 1;       /* too short a past: measured */
    t0 = gw_now_ns();
    REQUIRE(gw_throttle_open(&cfg, &fake, &t, err, sizeof err) == 0);
    took = (gw_now_ns() - t0) / 1e9;
    gw_throttle_close(t, &st);
    CHECK(took > 1.9);
    CHECK(!st.vm_base_from_history);
    CHECK_EQ(st.vm_base_windows, GW_THROTTLE_BASE_WINDOWS);
    CHECK(st.vm_base_ns >= 2700000 && st.vm_base_ns <= 3300000);

    v.npast = -ENOTSUP;                                /* several disks: measured */
    REQUIRE(gw_throttle_open(&cfg, &fake, &t, err, sizeof err) == 0);
    gw_throttle_close(t, &st);
    CHECK(!st.vm_base_from_history);
    CHECK(st.vm_base_ns >= 2700000 && st.vm_base_ns <= 3300000);
}
