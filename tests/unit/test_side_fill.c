/* Unit tests for the side buffer's forecast (backup/side_fill.h) on simulated fills. */
#include "backup/side_fill.h"
#include "tests/lib/gw_test.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define MIB 1048576.0
#define MEM (1024 * MIB)
#define T0 1000000000ull

static uint64_t at(double s) { return T0 + (uint64_t)(s * 1e9); }

/* The need with the copies held spread evenly over the memory not read yet. */
static double need_at(struct gw_side_fill *f, double full, double copied, double done, double stored, uint64_t now)
{
    struct gw_side_fill_state st = {
        .full = full, .copied = copied, .done = done, .mem_bytes = MEM, .stored_bytes = stored};
    return gw_side_fill_need(f, &st, now);
}

/* A random dirtier's copies: fast at the point in time, slowing as its pages are used up,
 * the buffer ending at 45 % (no copies read). A quarter full, the slowing shows already:
 * nothing is needed at any time. The same fill had it not slowed (a line at its speed when a
 * quarter full) needs a rate. */
GW_TEST(a_fill_that_slows_needs_nothing)
{
    struct gw_side_fill f, line;
    gw_side_fill_init(&f, T0);
    gw_side_fill_init(&line, T0);
    double line_need = 0;
    for (double t = 0.1; t <= 5.0 + 1e-9; t += 0.1) {
        double full = 0.45 * (1 - exp(-t / 1.0)), done = 0.01 * t;
        double need = need_at(&f, full, full, done, done * MEM * 0.5, at(t));
        CHECK(need == 0);
        double lfull = t < 0.8 ? full : 0.45 * (1 - exp(-0.8)) + 0.45 * exp(-0.8) * (t - 0.8);
        if (lfull < 0.9) line_need = need_at(&line, lfull, lfull, done, done * MEM * 0.5, at(t));
    }
    fprintf(stderr, "  slowing: nothing needed; not slowing: %.1f MiB/s at 85 %% full\n", line_need / MIB);
    CHECK(line_need > 50 * MIB);
}

/* The run the forecast failed in (bench contention, 1 December): the copies slowed (tau about
 * 5 s, then a trickle), while the backup's reads freed slots in bursts, so the buffer's fill
 * rose and fell from one 0.5 s window to the next on its way to a peak under half full.
 * Judged by the copies made, the slowing is plain: nothing is needed while they decay, and
 * once only the trickle is left (a line through the fill) no more than a few MiB/s. */
GW_TEST(a_fill_swinging_with_reads_while_copies_slow_needs_nothing)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    double peak = 0, first_need_at = -1, most = 0;
    for (double t = 0.1; t <= 40.0 + 1e-9; t += 0.1) {
        double copied = 0.5 * (1 - exp(-t / 5.0)) + 0.003 * t;
        double burst = fmod(t, 0.7) < 0.35 ? 0 : 0.02;   /* a read of 20 % of a window's copies */
        double full = copied - 0.004 * t - burst, done = 0.01 * t;
        if (full < 0) full = 0;
        double need = need_at(&f, full, copied, done, done * MEM * 0.5, at(t));
        if (need > 0 && first_need_at < 0) first_need_at = t;
        if (need > most) most = need;
        if (full > peak) peak = full;
    }
    fprintf(stderr, "  swinging: peak %.0f %%, first need at %.1f s, at most %.1f MiB/s\n", peak * 100, first_need_at,
            most / MIB);
    CHECK(peak > 0.4);
    CHECK(first_need_at < 0 || first_need_at > 20);
    CHECK(most < 4 * MIB);
}

/* Under a quarter full nothing is needed, however fast the start. */
GW_TEST(a_quarter_full_is_room_enough)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    CHECK(need_at(&f, 0.24, 0.24, 0.01, 0, at(0.3)) == 0);
    CHECK(need_at(&f, 0.26, 0.26, 0.01, 0, at(0.35)) > 100 * MIB);   /* 0.26 in 0.35 s: a line */
}

/* Copies that do not slow (a guest writing new pages at a steady pace): with the guest's
 * writes spread over the unread memory, the buffer's peak when the rest is read in t seconds
 * is (full + v t)^2 / (4 v t) for t past full / v (v the copies' speed, with the margin); the
 * need is the store bytes left over the t that puts it at the mark. */
GW_TEST(a_steady_fill_is_read_before_its_peak_passes_the_mark)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    double need = 0;
    for (double t = 0.1; t <= 4.0 + 1e-9; t += 0.1) {
        double full = 0.1 * t, done = 0.02 * t;
        need = need_at(&f, full, full, done, done * MEM * 0.5, at(t));
        if (full >= GW_SIDE_FILL_FROM) CHECK(need > 0);
    }
    /* At 4 s: 40 % full, copies at 10 %/s; 8 % read, half of it stored: 0.46 GiB left. */
    double v = 0.1 * GW_SIDE_FILL_MARGIN, p = 0.4, m = GW_SIDE_FILL_SAFE;
    double qa = v * v, qb = 2 * p * v - 4 * v * m, qc = p * p;   /* (p + v t)^2 = 4 v t m */
    double t = (-qb + sqrt(qb * qb - 4 * qa * qc)) / (2 * qa);
    double want = 0.5 * MEM * 0.92 / t;
    fprintf(stderr, "  steady: need %.1f MiB/s (read in %.1f s), expected %.1f\n", need / MIB, t, want / MIB);
    CHECK(fabs(need - want) < want * 0.02);
    /* A straight line to a full buffer, which ignores what the reads free, asked for twice that. */
    CHECK(need < 0.5 * MEM * 0.92 / ((1 - p) / 0.1) * 0.6);
}

/* Slowing, but not enough: copies heading for 90 % still need a rate. */
GW_TEST(a_slowing_fill_that_would_end_high_still_needs_a_rate)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    double need = 0;
    for (double t = 0.1; t <= 2.0 + 1e-9; t += 0.1) {
        double full = 0.9 * (1 - exp(-t / 2.0)), done = 0.01 * t;
        need = need_at(&f, full, full, done, done * MEM * 0.5, at(t));
    }
    CHECK(need > 0);
}

/* Copies that stopped coming need nothing, however full the buffer; nor do out-of-range
 * inputs. */
GW_TEST(stopped_copies_and_out_of_range_fills_need_nothing)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    CHECK(need_at(&f, 0.3, 0.3, 0.1, 0.05 * MEM, at(0.5)) > 0);
    CHECK(need_at(&f, 0.6, 0.7, 0.3, 0.15 * MEM, at(1.1)) > 0);
    CHECK(need_at(&f, 0.5, 0.7, 0.3, 0.15 * MEM, at(2.5)) == 0);     /* none since 1.1 s */
    CHECK(need_at(&f, 0.01, 0.7, 0.3, 0.15 * MEM, at(2.6)) == 0);    /* under a quarter */
    CHECK(need_at(&f, 1.0, 1.0, 0.3, 0.15 * MEM, at(2.7)) == 0);     /* full: the backup has failed */
    CHECK(need_at(&f, 0.5, 1.0, 1.0, MEM, at(2.8)) == 0);            /* all read */
    CHECK(need_at(&f, 0.5, 0.4, 0.5, MEM, at(2.9)) == 0);            /* fewer copies than held */
    CHECK(need_at(&f, 0.5, 0.5, 0.5, MEM, T0) == 0);                 /* no time yet */
    struct gw_side_fill none;
    gw_side_fill_init(&none, 0);                                                  /* no point in time */
    CHECK(need_at(&none, 0.5, 0.5, 0.5, MEM, at(1)) == 0);
}

/* A backup paced by the forecast, simulated page by page: 1 GiB of guest memory holding data
 * in every page, a 256 MiB buffer, a guest writing 16 MiB/s at random over a 512 MiB working
 * set (the contention bench's dirtier), and a backup reading memory in order at the need plus
 * a quarter (the throttle's floor), never below 1 MiB/s. The forecast is told where the copies
 * held lie (256 bins over memory, as the snapshot counts them), or not (taken as spread
 * evenly). */
struct sim {
    double peak, mib_s, seconds;
};

enum { SIM_PAGES = 262144, SIM_WS = 131072, SIM_SIDE = 65536, SIM_BINS = 256 };

static struct sim paced_backup(uint64_t ws_first, bool profile)
{
    static uint8_t state[SIM_PAGES];   /* 0 protected, 1 copied, 2 read */
    memset(state, 0, sizeof state);
    double held_bin[SIM_BINS] = {0};
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    uint64_t front = 0, held = 0, copied = 0, rng = 88172645463325252ull;
    double budget = 0, peak = 0, t = 0;
    const double dt = 0.05, writes_per_s = 4096, unit = 1.0 / SIM_SIDE;
    while (front < SIM_PAGES && t < 3600) {
        t += dt;
        for (int i = 0; i < (int)(writes_per_s * dt); i++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            uint64_t p = ws_first + rng % SIM_WS;
            if (state[p] == 0) state[p] = 1, held++, copied++, held_bin[p * SIM_BINS / SIM_PAGES] += unit;
        }
        double full = (double)held / SIM_SIDE;
        if (full > peak) peak = full;
        if (held >= SIM_SIDE) break;
        double done = (double)front / SIM_PAGES;
        struct gw_side_fill_state st = {.full = full, .copied = (double)copied * unit, .held = profile ? held_bin : NULL,
                                        .bins = SIM_BINS, .done = done, .mem_bytes = MEM, .stored_bytes = done * MEM};
        double rate = fmax(gw_side_fill_need(&f, &st, at(t)) * 1.25, MIB);
        for (budget += rate * dt; budget >= 4096 && front < SIM_PAGES; budget -= 4096, front++) {
            if (state[front] == 1) held--, held_bin[front * SIM_BINS / SIM_PAGES] -= unit;
            state[front] = 2;
        }
    }
    return (struct sim){.peak = peak, .mib_s = (double)front * 4096 / MIB / t, .seconds = t};
}

/* Told where the copies lie, the buffer stays under the throttle's hold mark (80 %) wherever
 * the working set is, and the backup takes its time. Taken as spread evenly, a working set
 * read last (so none of its copies is freed until the front gets there) passes the mark. */
GW_TEST(a_backup_paced_by_the_forecast_stays_under_the_hold_mark)
{
    struct sim first = paced_backup(0, true), last = paced_backup(SIM_PAGES - SIM_WS, true);
    struct sim blind = paced_backup(SIM_PAGES - SIM_WS, false);
    fprintf(stderr, "  working set read first: peak %.0f %%, %.1f MiB/s over %.0f s; read last: peak %.0f %%, %.1f MiB/s over %.0f s\n",
            first.peak * 100, first.mib_s, first.seconds, last.peak * 100, last.mib_s, last.seconds);
    fprintf(stderr, "  read last, the copies taken as spread evenly: peak %.0f %%\n", blind.peak * 100);
    CHECK(first.peak < 0.8);
    CHECK(last.peak < 0.8);
    CHECK(blind.peak > 0.8);
    CHECK(first.mib_s < 16 && last.mib_s < 16);   /* not the rush: 1 GiB in a minute or more */
}
