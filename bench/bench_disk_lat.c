/* The disk guest's request latency, read and cut into windows (see bench_disk_lat.h). */
#include "bench/bench_disk_lat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_proc.h"
#include "engine/common/json.h"

int gw_disk_lat_read(const char *vm_bin, const char *sock, struct gw_lat_hist *h)
{
    char *argv[] = {(char *)vm_bin, "status", "--control", (char *)sock, "--json", NULL};
    static char out[16384];   /* one status line; one caller at a time */
    char buckets[8192];
    memset(h, 0, sizeof *h);
    if (gw_bench_run(argv, out, sizeof out) != 0) return -EIO;
    if (gw_json_get_str(out, "disk_latency_buckets", buckets, sizeof buckets)) return -ENOENT;
    for (char *p = buckets; *p;) {
        char *end;
        unsigned long i = strtoul(p, &end, 10);
        /* A bucket out of range, listed twice, or without its count: the counts would not
         * add up to the histogram's total, and every quantile read from it would be wrong. */
        if (end == p || *end != ':' || i >= GW_LAT_HIST_BUCKETS || h->b[i]) return -EBADMSG;
        char *num = end + 1;
        if (*num < '0' || *num > '9') return -EBADMSG;
        unsigned long long n = strtoull(num, &end, 10);
        h->b[i] = n;
        h->count += n;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -EBADMSG;
    }
    return 0;
}

static void keep(struct gw_disk_lat_windows *w, uint32_t us)
{
    if (w->n < GW_DISK_LAT_WINDOWS_MAX) w->p99_us[w->n++] = us;
    else w->dropped++;
}

void gw_disk_lat_window_add(struct gw_disk_lat_windows *w, const struct gw_lat_hist *then, const struct gw_lat_hist *now)
{
    struct gw_lat_hist d;
    gw_lat_hist_delta(now, then, &d);
    uint64_t us = gw_lat_hist_quantile(&d, 0.99) / 1000;
    keep(w, us > UINT32_MAX ? UINT32_MAX : (uint32_t)us);
}

void gw_disk_lat_windows_join(struct gw_disk_lat_windows *w, const struct gw_disk_lat_windows *src)
{
    for (unsigned i = 0; i < src->n; i++) keep(w, src->p99_us[i]);
    w->dropped += src->dropped;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

double gw_disk_lat_windows_median(const struct gw_disk_lat_windows *w)
{
    uint32_t v[GW_DISK_LAT_WINDOWS_MAX];
    unsigned n = 0;
    for (unsigned i = 0; i < w->n; i++)
        if (w->p99_us[i]) v[n++] = w->p99_us[i];
    if (!n) return 0;
    qsort(v, n, sizeof v[0], cmp_u32);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + (double)v[n / 2]) / 2;
}

unsigned gw_disk_lat_windows_over(const struct gw_disk_lat_windows *w, double us)
{
    unsigned k = 0;
    for (unsigned i = 0; i < w->n; i++) k += w->p99_us[i] > us;
    return k;
}

void gw_disk_lat_windows_json(FILE *f, const struct gw_disk_lat_windows *w)
{
    fputc('[', f);
    for (unsigned i = 0; i < w->n; i++) fprintf(f, "%s%u", i ? "," : "", (unsigned)w->p99_us[i]);
    fputc(']', f);
}
