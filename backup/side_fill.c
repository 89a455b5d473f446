/* The side buffer's forecast (see side_fill.h). */
#include "backup/side_fill.h"

#include <math.h>
#include <string.h>

#include "engine/common/util.h"

void gw_side_fill_init(struct gw_side_fill *f, uint64_t t0_ns)
{
    memset(f, 0, sizeof *f);
    f->t0_ns = t0_ns;
}

/* The newest sample taken at or before t_ns; the point in time itself (nothing copied) when
 * none is that old. */
static struct gw_side_fill_sample at_or_before(const struct gw_side_fill *f, uint64_t t_ns)
{
    for (unsigned i = 1; i <= f->n; i++) {
        const struct gw_side_fill_sample *s = &f->ring[(f->next + GW_SIDE_FILL_SAMPLES - i) % GW_SIDE_FILL_SAMPLES];
        if (s->t_ns <= t_ns) return *s;
    }
    return (struct gw_side_fill_sample){.t_ns = f->t0_ns};
}

/* The copies' speed at now (0: none coming) and their decay rate (per second; 0: not
 * decaying) from the windows a..b and b..now (b before now), each speed the mean over its
 * window, so the speed at its middle. */
static double copy_speed(struct gw_side_fill_sample a, struct gw_side_fill_sample b, struct gw_side_fill_sample now,
                         double *lambda)
{
    double dt2 = (double)(now.t_ns - b.t_ns) / 1e9;
    double v2 = (now.copied - b.copied) / dt2;
    *lambda = 0;
    if (v2 <= 0) return 0;
    if (b.t_ns <= a.t_ns) return v2;
    double dt1 = (double)(b.t_ns - a.t_ns) / 1e9;
    double v1 = (b.copied - a.copied) / dt1;
    if (v1 <= 0 || v2 >= v1 * 0.9) return v2;
    *lambda = log(v1 / v2) / ((dt1 + dt2) / 2);
    return v2 * exp(-*lambda * dt2 / 2);
}

/* Where the copies held lie beyond the read front: beyond[j] the copies in bins j and after,
 * over those beyond the front (the part of its bin past it counted); the fraction still
 * unread when the front is at x (0..1 of memory) is then read off by interpolating in a bin.
 * With no bins, the even spread: (1 - x) / (1 - done). */
struct spread {
    double beyond[GW_SIDE_FILL_MAX_BINS + 1];
    unsigned bins;
    double done;
};

static void spread_init(struct spread *sp, const struct gw_side_fill_state *st)
{
    sp->bins = 0;
    sp->done = st->done;
    if (!st->held || !st->bins || st->bins > GW_SIDE_FILL_MAX_BINS) return;
    unsigned n = st->bins;
    sp->beyond[n] = 0;
    for (unsigned j = n; j-- > 0;) sp->beyond[j] = sp->beyond[j + 1] + (st->held[j] > 0 ? st->held[j] : 0);
    sp->bins = n;
    /* Normalise by what lies beyond the front now (copies in the front's own bin count for
     * their part past it). */
    unsigned j = (unsigned)fmin(floor(st->done * n), n - 1);
    double total = sp->beyond[j + 1] + (sp->beyond[j] - sp->beyond[j + 1]) * (j + 1 - st->done * n);
    if (total <= 0) { sp->bins = 0; return; }
    for (unsigned k = 0; k <= n; k++) sp->beyond[k] /= total;
}

static double unread_part(const struct spread *sp, double x)
{
    if (x >= 1) return 0;
    if (!sp->bins) return sp->done < 1 ? (1 - x) / (1 - sp->done) : 0;
    double pos = x * sp->bins;
    unsigned j = (unsigned)fmin(floor(pos), sp->bins - 1);
    double h = sp->beyond[j + 1] + (sp->beyond[j] - sp->beyond[j + 1]) * (j + 1 - pos);
    return h < 1 ? h : 1;
}

/* The buffer's peak if the rest of memory is read evenly over t seconds from now (see
 * side_fill.h): max over s of unread(front at s) x (full + copies made by s). */
static double peak_if_read_in(double t, double full, double v, double lambda, const struct spread *sp)
{
    double peak = full;
    for (int i = 1; i < GW_SIDE_FILL_STEPS; i++) {
        double s = t * i / GW_SIDE_FILL_STEPS;
        double made = lambda > 0 ? v * (1 - exp(-lambda * s)) / lambda : v * s;
        double p = unread_part(sp, sp->done + (1 - sp->done) * s / t) * (full + made);
        if (p > peak) peak = p;
    }
    return peak;
}

double gw_side_fill_need(struct gw_side_fill *f, const struct gw_side_fill_state *st, uint64_t now_ns)
{
    double full = st->full, copied = st->copied, done = st->done;
    if (!f->t0_ns || now_ns <= f->t0_ns || !(full >= 0 && full < 1) || !(done >= 0 && done < 1) || !(copied >= full))
        return 0;
    double elapsed = (double)(now_ns - f->t0_ns) / 1e9;
    if (elapsed < 0.1) return 0;
    /* Sampled from the start, so that a slowing shows by the time it matters. */
    struct gw_side_fill_sample cur = {.t_ns = now_ns, .copied = copied};
    const struct gw_side_fill_sample *last = f->n ? &f->ring[(f->next + GW_SIDE_FILL_SAMPLES - 1) % GW_SIDE_FILL_SAMPLES] : NULL;
    if (!last || now_ns - last->t_ns >= GW_SIDE_FILL_STEP_NS) {
        f->ring[f->next] = cur;
        f->next = (f->next + 1) % GW_SIDE_FILL_SAMPLES;
        if (f->n < GW_SIDE_FILL_SAMPLES) f->n++;
    }
    if (full < GW_SIDE_FILL_FROM) return 0;
    double win = fmin(fmax(elapsed / 2, GW_SIDE_FILL_WIN_MIN), GW_SIDE_FILL_WIN_MAX);
    uint64_t win_ns = gw_u64_of_double(win * 1e9);
    struct gw_side_fill_sample b = at_or_before(f, now_ns - win_ns);
    struct gw_side_fill_sample a = at_or_before(f, now_ns > f->t0_ns + 2 * win_ns ? now_ns - 2 * win_ns : f->t0_ns);
    double lambda, v = copy_speed(a, b, cur, &lambda);   /* b is at least a window before now */
    if (v <= 0) return 0;                                   /* no copies coming */
    v *= GW_SIDE_FILL_MARGIN;
    /* Even unread, the copies still to come stay short of the mark. */
    double mark = full < GW_SIDE_FILL_SAFE ? GW_SIDE_FILL_SAFE : (1 + full) / 2;
    if (lambda > 0 && full + v / lambda < mark) return 0;
    /* The longest time to read the rest in that keeps the peak under the mark: the peak only
     * grows with that time, so halve the interval between a time that does and one that does
     * not. */
    struct spread sp;
    spread_init(&sp, st);
    double lo = 0, hi = GW_SIDE_FILL_LONGEST;
    if (peak_if_read_in(hi, full, v, lambda, &sp) <= mark) return 0;   /* any steady pace will do */
    for (int i = 0; i < 50 && hi - lo > 0.01; i++) {
        double mid = (lo + hi) / 2;
        if (peak_if_read_in(mid, full, v, lambda, &sp) <= mark) lo = mid;
        else hi = mid;
    }
    double t = lo > 0.01 ? lo : 0.01;
    /* Early on (or crawling) the ratio says little: assume every byte left is written. */
    double left = (1 - done) * st->mem_bytes;
    if (done >= 0.05) left = st->stored_bytes * (1 - done) / done;
    return left / t;
}
