/* Unit tests for the side buffer's forecast (backup/side_fill.h) on simulated fills. */
#include "backup/side_fill.h"
#include "tests/lib/gw_test.h"

#include <math.h>
#include <stdio.h>

#define MIB 1048576.0
#define MEM (1024 * MIB)
#define T0 1000000000ull

static uint64_t at(double s) { return T0 + (uint64_t)(s * 1e9); }

/* A random dirtier's fill: fast at the point in time, slowing as its pages are used up, and
 * ending at 45 %. A quarter full, the slowing shows already: nothing is needed at any time.
 * The same fill had it not slowed (a line at its speed when a quarter full) needs a rate. */
GW_TEST(a_fill_that_slows_needs_nothing)
{
    struct gw_side_fill f, line;
    gw_side_fill_init(&f, T0);
    gw_side_fill_init(&line, T0);
    double line_need = 0;
    for (double t = 0.1; t <= 5.0 + 1e-9; t += 0.1) {
        double full = 0.45 * (1 - exp(-t / 1.0)), done = 0.01 * t;
        double need = gw_side_fill_need(&f, full, done, MEM, done * MEM * 0.5, at(t));
        CHECK(need == 0);
        double lfull = t < 0.8 ? full : 0.45 * (1 - exp(-0.8)) + 0.45 * exp(-0.8) * (t - 0.8);
        if (lfull < 0.9) line_need = gw_side_fill_need(&line, lfull, done, MEM, done * MEM * 0.5, at(t));
    }
    fprintf(stderr, "  slowing: nothing needed; not slowing: %.1f MiB/s at 85 %% full\n", line_need / MIB);
    CHECK(line_need > 50 * MIB);
}

/* Under a quarter full nothing is needed, however fast the start. */
GW_TEST(a_quarter_full_is_room_enough)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    CHECK(gw_side_fill_need(&f, 0.24, 0.01, MEM, 0, at(0.3)) == 0);
    CHECK(gw_side_fill_need(&f, 0.26, 0.01, MEM, 0, at(0.35)) > 100 * MIB);   /* 0.26 in 0.35 s: a line */
}

/* A fill that does not slow (a guest writing new pages at a steady pace) is projected as a
 * straight line: the store bytes left over the time the buffer has left. */
GW_TEST(a_steady_fill_is_projected)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    double need = 0;
    for (double t = 0.1; t <= 4.0 + 1e-9; t += 0.1) {
        double full = 0.1 * t, done = 0.02 * t;
        need = gw_side_fill_need(&f, full, done, MEM, done * MEM * 0.5, at(t));
        if (full >= GW_SIDE_FILL_FROM) CHECK(need > 0);
    }
    /* At 4 s: 40 % full at 10 %/s leaves 6 s; 8 % read, half of it stored: 0.46 GiB left. */
    double want = 0.5 * MEM * 0.92 / 6;
    fprintf(stderr, "  steady: need %.1f MiB/s, expected %.1f\n", need / MIB, want / MIB);
    CHECK(fabs(need - want) < want * 0.05);
}

/* Slowing, but not enough: a fill heading for 90 % still needs a rate. */
GW_TEST(a_slowing_fill_that_would_end_high_still_needs_a_rate)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    double need = 0;
    for (double t = 0.1; t <= 2.0 + 1e-9; t += 0.1) {
        double full = 0.9 * (1 - exp(-t / 2.0)), done = 0.01 * t;
        need = gw_side_fill_need(&f, full, done, MEM, done * MEM * 0.5, at(t));
    }
    CHECK(need > 0);
}

/* Copies read give their slots back: a falling fill needs nothing; out-of-range inputs
 * neither. */
GW_TEST(falling_and_out_of_range_fills_need_nothing)
{
    struct gw_side_fill f;
    gw_side_fill_init(&f, T0);
    CHECK(gw_side_fill_need(&f, 0.3, 0.1, MEM, 0.05 * MEM, at(0.5)) > 0);
    CHECK(gw_side_fill_need(&f, 0.2, 0.3, MEM, 0.15 * MEM, at(1.1)) == 0);   /* fell over the window */
    CHECK(gw_side_fill_need(&f, 0.01, 0.3, MEM, 0.15 * MEM, at(1.7)) == 0);  /* under a quarter */
    CHECK(gw_side_fill_need(&f, 1.0, 0.3, MEM, 0.15 * MEM, at(1.8)) == 0);   /* full: the backup has failed */
    CHECK(gw_side_fill_need(&f, 0.5, 1.0, MEM, MEM, at(1.9)) == 0);          /* all read */
    CHECK(gw_side_fill_need(&f, 0.5, 0.5, MEM, MEM, T0) == 0);               /* no time yet */
    struct gw_side_fill none;
    gw_side_fill_init(&none, 0);                                            /* no point in time */
    CHECK(gw_side_fill_need(&none, 0.5, 0.5, MEM, MEM, at(1)) == 0);
}
