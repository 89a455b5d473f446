/* The side buffer's forecast (see side_fill.h). */
#include "backup/side_fill.h"

#include <math.h>
#include <string.h>

void gw_side_fill_init(struct gw_side_fill *f, uint64_t t0_ns)
{
    memset(f, 0, sizeof *f);
    f->t0_ns = t0_ns;
}

/* The fill still to come from now_ns if it keeps decaying as from prev to speed (each the mean
 * over its window, so the speed at the window's middle): speed x tau, the speed falling by e
 * every tau, from the last window's middle on. -1: not decaying (or not known). */
static double decaying_rest(const struct gw_side_fill *f, uint64_t now_ns)
{
    if (f->prev <= 0 || f->speed_dt <= 0 || f->speed >= f->prev * 0.9) return -1;
    if (f->speed <= 0) return 0;
    /* The two windows' middles are (prev_dt + speed_dt) / 2 apart. */
    double tau = (f->prev_dt + f->speed_dt) / 2 / log(f->prev / f->speed);
    double since_mid = (double)(now_ns - f->win_ns) / 1e9 + f->speed_dt / 2;
    return f->speed * tau * exp(-since_mid / tau);
}

double gw_side_fill_need(struct gw_side_fill *f, double full, double done, double mem_bytes, double stored_bytes,
                         uint64_t now_ns)
{
    if (!f->t0_ns || now_ns <= f->t0_ns || full < 0 || full >= 1 || done >= 1 || done < 0) return 0;
    double elapsed = (double)(now_ns - f->t0_ns) / 1e9;
    if (elapsed < 0.1) return 0;
    /* The speed is followed from the start, so that a slowing shows by the time it matters. */
    if (!f->win_ns) {   /* until a window has passed: the average since the point in time */
        f->speed = full / elapsed;
        f->speed_dt = elapsed;
        f->win_ns = now_ns;
        f->win_at = full;
    } else if (now_ns - f->win_ns >= GW_SIDE_FILL_WINDOW_NS) {
        double dt = (double)(now_ns - f->win_ns) / 1e9;
        f->prev = f->speed;
        f->prev_dt = f->speed_dt;
        f->speed = (full - f->win_at) / dt;   /* negative: read copies gave slots back */
        f->speed_dt = dt;
        f->win_ns = now_ns;
        f->win_at = full;
    }
    if (f->speed <= 0 || full < GW_SIDE_FILL_FROM) return 0;
    double rest = decaying_rest(f, now_ns);
    if (rest >= 0 && full + GW_SIDE_FILL_MARGIN * rest < GW_SIDE_FILL_SAFE) return 0;
    double time_left = (1 - full) / f->speed;
    /* Early on (or crawling) the ratio says little: assume every byte left is written. */
    double left = (1 - done) * mem_bytes;
    if (done >= 0.05) left = stored_bytes * (1 - done) / done;
    return left / time_left;
}
