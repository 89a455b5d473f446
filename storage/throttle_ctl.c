/* The adaptive throttle's controller (see throttle_ctl.h). */
#include "storage/throttle_ctl.h"

#include "engine/common/limits.h"

#include <stdio.h>
#include <string.h>

void gw_throttle_ctl_defaults(struct gw_throttle_ctl_params *p)
{
    *p = (struct gw_throttle_ctl_params){
        .max_rate = 0, .min_rate = 1 << 20,
        .store_factor = 4.0, .store_floor_ns = 20000000, .store_ceiling_ns = 30000000,
        .vm_factor = GW_LIMIT_VM_LAT_PCT_DEFAULT / 100.0, .vm_floor_ns = 500000, .vm_ceiling_ns = 20000000,
        .vm_min_requests = 5, .pressure_hold = 0.8, .pressure_lift = 0.9,
        .start_rate = 8 << 20,
    };
}

uint64_t gw_throttle_ctl_baseline(const uint64_t *p99s, unsigned n)
{
    uint64_t v[GW_THROTTLE_BASE_MAX];
    unsigned k = 0;
    for (unsigned i = 0; i < n && k < GW_THROTTLE_BASE_MAX; i++) {
        if (!p99s[i]) continue;
        unsigned j = k++;   /* insertion sort: at most GW_THROTTLE_BASE_MAX values */
        while (j && v[j - 1] > p99s[i]) { v[j] = v[j - 1]; j--; }
        v[j] = p99s[i];
    }
    if (!k) return 0;
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

void gw_throttle_ctl_init(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p, uint64_t vm_baseline_ns)
{
    memset(c, 0, sizeof *c);
    c->rate = p->max_rate;
    if (p->start_rate > 0 && (c->rate <= 0 || p->start_rate < c->rate)) c->rate = p->start_rate;
    c->own = c->rate;
    c->vm_base_ns = c->vm_base0_ns = vm_baseline_ns;
    c->vm_base_measured = vm_baseline_ns != 0;
}

static uint64_t target(uint64_t base, double factor, uint64_t floor, uint64_t ceiling)
{
    double t = base ? (double)base * factor : (double)ceiling;
    if (t < (double)floor) t = (double)floor;
    if (t > (double)ceiling) t = (double)ceiling;
    return (uint64_t)t;
}

/* Never below what finishing needs (the caller's estimate, with a quarter to spare). */
static double floor_need(const struct gw_throttle_ctl_params *p, const struct gw_throttle_sample *s, double rate)
{
    double need = s->need_rate * 1.25;
    if (rate > 0 && need > rate) rate = need;
    if (p->max_rate > 0 && rate > p->max_rate) rate = p->max_rate;
    return rate;
}

static double step(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p, const struct gw_throttle_sample *s);

unsigned gw_throttle_ctl_inflight(double rate, uint64_t lat_ns, double obj_bytes, unsigned max)
{
    if (rate <= 0) return 0;
    if (!lat_ns || obj_bytes <= 0) return 1;
    double n = 1.5 * rate * ((double)lat_ns / 1e9) / obj_bytes;
    if (n < 1) return 1;
    if (max && n >= max) return max;
    return (unsigned)n + (n > (unsigned)n);
}

double gw_throttle_ctl_step(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p,
                            const struct gw_throttle_sample *s)
{
    /* The controller steps from its own limit, not from the floor: a limit raised for the side
     * buffer says nothing of what the guests allow. Grown from the floor, it stayed high after
     * the need went, and read as "something else limits the backup" (4x what it achieved in an
     * interval it was idle) it lifted entirely: 420 MiB/s and the guest's p99 at 12-16 ms. */
    c->rate = c->own;
    double rate = step(c, p, s);
    c->own = rate;
    /* A store over its absolute target is in trouble for every VM on it: no floor then. */
    c->rate = c->store_hot ? rate : floor_need(p, s, rate);
    return c->rate;
}

/* A measured VM baseline taken in a disturbance falls to the guest's own p99 since (.h). */
static void vm_window_end(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p, const struct gw_throttle_sample *s)
{
    if (c->intervals % GW_THROTTLE_VM_WINDOW) return;   /* the sliding window is a whole new one */
    c->vm_wins[c->vm_nwins++ % GW_THROTTLE_BASE_WINDOWS] = s->vm_n >= p->vm_min_requests ? s->vm_p99_ns : 0;
    if (!c->vm_base_measured || c->vm_nwins < GW_THROTTLE_BASE_WINDOWS) return;
    uint64_t m = gw_throttle_ctl_baseline(c->vm_wins, GW_THROTTLE_BASE_WINDOWS);
    if (!m || (double)m >= (double)c->vm_base0_ns * GW_THROTTLE_BASE_FALL) return;
    snprintf(c->why, sizeof c->why, "VM baseline %.2f ms was taken in a disturbance: %.2f ms since", c->vm_base0_ns / 1e6,
             m / 1e6);
    /* A baseline taken again at the floor (higher) falls back to the new one on its own. */
    if (c->vm_base_ns == c->vm_base0_ns) c->vm_base_ns = m;
    c->vm_base0_ns = m;
    c->base_falls++;
}

static double step(struct gw_throttle_ctl *c, const struct gw_throttle_ctl_params *p, const struct gw_throttle_sample *s)
{
    c->intervals++;
    vm_window_end(c, p, s);
    double achieved = s->interval_ns ? (double)s->bytes * 1e9 / (double)s->interval_ns : 0;
    uint64_t st = target(c->store_base_ns, p->store_factor, p->store_floor_ns, p->store_ceiling_ns);
    uint64_t vt = target(c->vm_base_ns, p->vm_factor, p->vm_floor_ns, p->vm_ceiling_ns);
    bool store_hot = s->store_n && s->store_lat_ns > st;
    bool vm_hot = s->vm_n >= p->vm_min_requests && s->vm_p99_ns > vt && (!s->vm_last_p99_ns || s->vm_last_p99_ns > vt);
    /* Hot by the VM only for a whole window with our limit at the floor: not ours (see .h). */
    bool at_floor = c->rate > 0 && c->rate <= p->min_rate * 1.5;
    c->floor_hot = vm_hot && !store_hot && at_floor ? c->floor_hot + 1 : 0;
    if (c->floor_hot >= GW_THROTTLE_VM_WINDOW) {
        snprintf(c->why, sizeof c->why, "VM block p99 %.2f ms with the backup at its floor: baseline taken again",
                 s->vm_p99_ns / 1e6);
        c->vm_base_ns = s->vm_p99_ns;
        c->floor_hot = 0;
        c->rebases++;
        vm_hot = false;
    }
    c->congested = store_hot || vm_hot;
    c->store_hot = store_hot;
    if (c->congested && s->pressure >= p->pressure_hold) {
        /* Backing off further would fail the backup (its buffer fills): hold, or lift. */
        snprintf(c->why, sizeof c->why, "%s over target, but the copy buffer is %.0f%% full: %s",
                 vm_hot ? "VM block p99" : "store write", s->pressure * 100,
                 s->pressure >= p->pressure_lift ? "limit lifted" : "holding");
        if (s->pressure >= p->pressure_lift) c->rate = p->max_rate;
        return c->rate;
    }
    if (c->congested) {
        snprintf(c->why, sizeof c->why, "%s %.2f ms > %.2f ms", vm_hot ? "VM block p99" : "store write",
                 (vm_hot ? s->vm_p99_ns : s->store_lat_ns) / 1e6, (vm_hot ? vt : st) / 1e6);
        double from = c->rate > 0 && c->rate < achieved ? c->rate : achieved;
        if (from <= 0) from = c->rate > 0 ? c->rate : p->min_rate * 2;
        c->knee = from;
        c->since_hot = 0;
        c->rate = from / 2;
        if (c->rate < p->min_rate) c->rate = p->min_rate;
        c->backoffs++;
        c->hold = 1;
        return c->rate;
    }
    /* Quiet: a knee not met again for a while is gone with its contention. */
    if (c->since_hot < GW_THROTTLE_KNEE_FORGET) c->since_hot++;
    if (c->since_hot >= GW_THROTTLE_KNEE_FORGET) c->knee = 0;
    /* The baselines learn from quiet intervals only (the lowest seen). */
    if (s->store_n && (!c->store_base_ns || s->store_lat_ns < c->store_base_ns)) c->store_base_ns = s->store_lat_ns;
    if (!c->vm_base_measured && s->vm_n >= p->vm_min_requests && (!c->vm_base_ns || s->vm_p99_ns < c->vm_base_ns))
        c->vm_base_ns = s->vm_p99_ns;
    /* A baseline taken again at the floor falls back as the guest calms down. */
    if (c->vm_base_measured && c->rebases && s->vm_n >= p->vm_min_requests && s->vm_p99_ns < c->vm_base_ns)
        c->vm_base_ns = s->vm_p99_ns > c->vm_base0_ns ? s->vm_p99_ns : c->vm_base0_ns;
    if (s->pressure >= p->pressure_lift) { c->rate = p->max_rate; return c->rate; }
    if (c->hold) { c->hold--; return c->rate; }
    if (c->rate > 0) {
        double plateau = c->knee * GW_THROTTLE_KNEE_PLATEAU;
        if (c->knee <= 0) c->rate *= 1.25;
        else if (c->rate < plateau) c->rate = c->rate * 1.25 < plateau ? c->rate * 1.25 : plateau;
        else c->rate *= GW_THROTTLE_KNEE_PROBE;
        /* Well above what we achieve: something else limits the backup; lift the limit. */
        if (achieved > 0 && c->rate > 4 * achieved) c->rate = p->max_rate;
        if (p->max_rate > 0 && c->rate > p->max_rate) c->rate = p->max_rate;
    }
    return c->rate;
}
