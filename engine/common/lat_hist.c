/* Latency histogram (see lat_hist.h). */
#include "engine/common/lat_hist.h"

static unsigned bucket_of(uint64_t ns)
{
    if (ns < 4) return (unsigned)ns;   /* 0..3: exact */
    unsigned p = 63u - (unsigned)__builtin_clzll(ns);
    return p * 4u + (unsigned)((ns >> (p - 2)) & 3u);
}

/* The smallest value of bucket i and its width. */
static void bucket_range(unsigned i, uint64_t *lo, uint64_t *width)
{
    if (i < 4) { *lo = i; *width = 1; return; }
    unsigned p = i / 4, sub = i % 4;
    *lo = (1ull << p) + (uint64_t)sub * (1ull << (p - 2));
    *width = 1ull << (p - 2);
}

void gw_lat_hist_add(struct gw_lat_hist *h, uint64_t ns)
{
    h->b[bucket_of(ns)]++;
    h->count++;
    h->sum_ns += ns;
}

void gw_lat_hist_add_shared(struct gw_lat_hist *h, uint64_t ns)
{
    __atomic_fetch_add(&h->b[bucket_of(ns)], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
}

void gw_lat_hist_load(const struct gw_lat_hist *h, struct gw_lat_hist *out)
{
    /* count is the sum of the buckets as copied, so that a quantile's rank always exists. */
    out->count = 0;
    out->sum_ns = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) out->count += out->b[i] = __atomic_load_n(&h->b[i], __ATOMIC_RELAXED);
}

void gw_lat_hist_delta(const struct gw_lat_hist *now, const struct gw_lat_hist *before, struct gw_lat_hist *out)
{
    out->count = now->count - before->count;
    out->sum_ns = now->sum_ns - before->sum_ns;
    for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) out->b[i] = now->b[i] - before->b[i];
}

/* The bucket holding the q-quantile; -1 when the histogram is empty. */
static int quantile_bucket(const struct gw_lat_hist *h, double q)
{
    if (!h->count) return -1;
    if (q > 1) q = 1;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) return (int)i;
    }
    return -1;
}

uint64_t gw_lat_hist_quantile(const struct gw_lat_hist *h, double q)
{
    int i = quantile_bucket(h, q);
    if (i < 0) return 0;
    uint64_t lo, w;
    bucket_range((unsigned)i, &lo, &w);
    return lo + w / 2;
}

uint64_t gw_lat_hist_quantile_bound(const struct gw_lat_hist *h, double q)
{
    int i = quantile_bucket(h, q);
    if (i < 0) return 0;
    uint64_t lo, w;
    bucket_range((unsigned)i, &lo, &w);
    return lo + w < lo ? UINT64_MAX : lo + w;   /* the last bucket ends at 2^64 */
}
