/* Latency histogram (see lat_hist.h). */
#include "engine/common/lat_hist.h"

#include <stddef.h>

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

void gw_lat_hist_sum(struct gw_lat_hist *acc, const struct gw_lat_hist *x)
{
    acc->count += x->count;
    acc->sum_ns += x->sum_ns;
    for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) acc->b[i] += x->b[i];
}

void gw_lat_hist_delta(const struct gw_lat_hist *now, const struct gw_lat_hist *before, struct gw_lat_hist *out)
{
    out->count = now->count - before->count;
    out->sum_ns = now->sum_ns - before->sum_ns;
    for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) out->b[i] = now->b[i] - before->b[i];
}

/* The bucket holding the q-quantile; -1 when the histogram is empty. *pos (may be NULL): where
 * in the bucket, as the fraction of its samples up to the quantile's rank, less a half (the
 * rank's sample sits in the middle of its share of the bucket). */
static int quantile_bucket(const struct gw_lat_hist *h, double q, double *pos)
{
    if (!h->count) return -1;
    if (q > 1) q = 1;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < GW_LAT_HIST_BUCKETS; i++) {
        if (seen + h->b[i] >= rank) {
            if (pos) *pos = ((double)(rank - seen) - 0.5) / (double)h->b[i];
            return (int)i;
        }
        seen += h->b[i];
    }
    return -1;
}

uint64_t gw_lat_hist_quantile(const struct gw_lat_hist *h, double q)
{
    double pos = 0.5;
    int i = quantile_bucket(h, q, &pos);
    if (i < 0) return 0;
    uint64_t lo, w;
    bucket_range((unsigned)i, &lo, &w);
    double v = (double)lo + (double)w * pos;   /* in double: the last bucket ends at 2^64 */
    return v >= 18446744073709549568.0 ? UINT64_MAX : (uint64_t)v;
}

uint64_t gw_lat_hist_quantile_bound(const struct gw_lat_hist *h, double q)
{
    int i = quantile_bucket(h, q, NULL);
    if (i < 0) return 0;
    uint64_t lo, w;
    bucket_range((unsigned)i, &lo, &w);
    return lo + w < lo ? UINT64_MAX : lo + w;   /* the last bucket ends at 2^64 */
}
