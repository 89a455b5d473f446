/* Latency windows (see lat_windows.h). */
#include "engine/common/lat_windows.h"

#include <stdbool.h>

void gw_lat_windows_note(struct gw_lat_windows *w, const struct gw_lat_hist *now, uint64_t now_ns)
{
    if (!w->cut_ns) {
        w->at_cut = *now;
        w->cut_ns = now_ns ? now_ns : 1;
        return;
    }
    if (now_ns < w->cut_ns || now_ns - w->cut_ns < GW_LAT_WINDOW_NS) return;
    uint64_t took = now_ns - w->cut_ns;
    struct gw_lat_hist d;
    gw_lat_hist_delta(now, &w->at_cut, &d);
    if (took <= 2 * GW_LAT_WINDOW_NS && d.count >= GW_LAT_WINDOW_MIN_REQUESTS) {
        uint64_t us = gw_lat_hist_quantile(&d, 0.99) / 1000;
        w->p99_us[w->head] = us ? (us > UINT32_MAX ? UINT32_MAX : (uint32_t)us) : 1;
        w->end_ns[w->head] = now_ns;
        w->head = (w->head + 1) % GW_LAT_WINDOWS;
        if (w->n < GW_LAT_WINDOWS) w->n++;
    }
    w->at_cut = *now;
    w->cut_ns = now_ns;
}

unsigned gw_lat_windows_recent(const struct gw_lat_windows *w, uint32_t *out, uint64_t *end_ns, unsigned max)
{
    unsigned k = w->n < max ? w->n : max;
    for (unsigned i = 0; i < k; i++) {
        unsigned at = (w->head + GW_LAT_WINDOWS - k + i) % GW_LAT_WINDOWS;
        out[i] = w->p99_us[at];
        if (end_ns) end_ns[i] = w->end_ns[at];
    }
    return k;
}

unsigned gw_lat_windows_drop(uint32_t *p99_us, uint64_t *end_ns, unsigned n, uint64_t from_ns, uint64_t to_ns)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++) {
        /* A window spans at most [end - 2 windows, end]. */
        bool overlaps = from_ns <= to_ns && end_ns[i] >= from_ns && end_ns[i] <= to_ns + 2 * GW_LAT_WINDOW_NS;
        if (!overlaps) { p99_us[k] = p99_us[i]; end_ns[k] = end_ns[i]; k++; }
    }
    return k;
}
