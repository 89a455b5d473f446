/* The collector's pending list and the backup side of the collection protocol (see gc.h). */
#include "storage/gc.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "storage/lease.h"
#include "storage/store.h"

#define PENDING_MAGIC "GWGCPND1"
#define PENDING_HEAD 32u
#define PENDING_ENTRY 56u

static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

static int cmp_entry(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

int gw_gc_pending_pack(uint64_t gen, const struct gw_gc_entry *e, size_t n, uint8_t **out, size_t *len)
{
    if (n > GW_GC_MAX_PENDING || gen >= GW_GC_MAX_GENERATION - 1) return -EINVAL;   /* readable by unpack */
    size_t total = PENDING_HEAD + n * PENDING_ENTRY + 32;
    uint8_t *b = malloc(total);
    if (!b) return -ENOMEM;
    memcpy(b, PENDING_MAGIC, 8);
    put64(b + 8, gen);
    put64(b + 16, n);
    put64(b + 24, 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = b + PENDING_HEAD + i * PENDING_ENTRY;
        memcpy(p, e[i].hash, 32);
        for (int k = 0; k < 3; k++) put64(p + 32 + 8 * k, e[i].guard[k]);
    }
    SHA256(b, total - 32, b + total - 32);
    *out = b;
    *len = total;
    return 0;
}

int gw_gc_pending_unpack(const uint8_t *buf, size_t len, uint64_t *gen, struct gw_gc_entry **e, size_t *n, char *err,
                         size_t errlen)
{
    *e = NULL;
    *n = 0;
    if (len < PENDING_HEAD + 32 || memcmp(buf, PENDING_MAGIC, 8)) { snprintf(err, errlen, "pending list: bad magic or truncated"); return -EBADMSG; }
    uint64_t cnt = get64(buf + 16);
    if (cnt > GW_GC_MAX_PENDING || len != PENDING_HEAD + cnt * PENDING_ENTRY + 32) {
        snprintf(err, errlen, "pending list: %llu entries do not fit its %zu bytes", (unsigned long long)cnt, len);
        return -EBADMSG;
    }
    uint8_t h[32];
    SHA256(buf, len - 32, h);
    if (memcmp(h, buf + len - 32, 32)) { snprintf(err, errlen, "pending list: hash mismatch (corrupt)"); return -EBADMSG; }
    /* One generation per collection: 2^48 of them is not a count any store reaches, and the
     * next run's gen + 1 must not wrap to 0 (every backup would then read as started after),
     * nor reach a generation this check refuses (the list would then be unreadable). */
    if (get64(buf + 8) >= GW_GC_MAX_GENERATION - 1) {
        snprintf(err, errlen, "pending list: generation %llu is not one a collector wrote",
                 (unsigned long long)get64(buf + 8));
        return -EBADMSG;
    }
    struct gw_gc_entry *v = malloc((cnt ? cnt : 1) * sizeof *v);
    if (!v) return -ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        const uint8_t *p = buf + PENDING_HEAD + i * PENDING_ENTRY;
        memcpy(v[i].hash, p, 32);
        for (int k = 0; k < 3; k++) v[i].guard[k] = get64(p + 32 + 8 * k);
    }
    qsort(v, cnt, sizeof *v, cmp_entry);
    *gen = get64(buf + 8);
    *e = v;
    *n = cnt;
    return 0;
}

int gw_gc_pending_load(struct gw_store *s, uint64_t *gen, struct gw_gc_entry **e, size_t *n, char *err, size_t errlen)
{
    *gen = 0;
    *e = NULL;
    *n = 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    int r = s->ops->get(s, GW_GC_PENDING_OBJECT, PENDING_HEAD + (size_t)GW_GC_MAX_PENDING * PENDING_ENTRY + 32, &buf, &len);
    if (r == -ENOENT) return 0;
    if (r) { snprintf(err, errlen, "%s", gw_store_error(s)); return r; }
    r = gw_gc_pending_unpack(buf, len, gen, e, n, err, errlen);
    free(buf);
    return r;
}

const struct gw_gc_entry *gw_gc_pending_find(const struct gw_gc_entry *e, size_t n, const uint8_t hash[32])
{
    return n ? bsearch(hash, e, n, sizeof *e, cmp_entry) : NULL;
}

/* ---- the backup side ---- */

struct gw_gc_guard {
    struct gw_lease *lease;
    uint64_t gen;
    struct gw_gc_entry *pending;
    size_t npending;
};

static int take(struct gw_store *s, const char *gen, const char *who, const char *tail, struct gw_lease **l, char *err,
                size_t errlen)
{
    char cookie[160];
    if ((size_t)snprintf(cookie, sizeof cookie, "%.24s.%.40s.%.30s", gen, who, tail) > 100) return -ENAMETOOLONG;
    return gw_lease_acquire(s, GW_GC_BACKUPS_LEASE, cookie, false, GW_GC_GUARD_LEASE_S, true, l, err, errlen);
}

int gw_gc_guard_enter(struct gw_store *s, const char *who, struct gw_gc_guard **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!gw_store_name_ok(who)) { snprintf(err, errlen, "bad name '%s' for a backup lease", who); return -EINVAL; }
    struct gw_gc_guard *g = calloc(1, sizeof *g);
    if (!g) return -ENOMEM;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = (uint32_t)getpid() * 2654435761u;
    char tail[40];
    snprintf(tail, sizeof tail, "%d.%08x", (int)getpid(), rnd);
    /* 1. Registered before anything else, as "saw nothing": blocks every removal. */
    struct gw_lease *first = NULL;
    int r = take(s, "gu", who, tail, &first, err, errlen);
    /* 2. The pending list, read after the lease is in place. */
    if (!r) r = gw_gc_pending_load(s, &g->gen, &g->pending, &g->npending, err, errlen);
    if (r == -EBADMSG) {
        /* A damaged list (or a forged one) must not stop every backup into the store: this
         * one keeps its "saw nothing" lease to the end, which holds every removal off while
         * it runs, so it may trust whatever chunk it finds. The next collection writes a new
         * list (gc.c). */
        gw_warn("backup %s: %s: holding every garbage collection off until this backup ends", who, err);
        err[0] = 0;
        g->lease = first;
        g->gen = 0;
        *out = g;
        return 0;
    }
    /* 3. Now say which generation we saw; drop the first lease only once the second holds. */
    if (!r) {
        char gen[32];
        snprintf(gen, sizeof gen, "g%llu", (unsigned long long)g->gen);
        r = take(s, gen, who, tail, &g->lease, err, errlen);
    }
    gw_lease_release(first);
    if (r) { gw_gc_guard_leave(g); return r; }
    *out = g;
    return 0;
}

bool gw_gc_guard_distrusts(const struct gw_gc_guard *g, const uint8_t hash[32])
{
    return g && gw_gc_pending_find(g->pending, g->npending, hash) != NULL;
}

int gw_gc_guard_check(struct gw_gc_guard *g, char *err, size_t errlen)
{
    if (!g || gw_lease_valid(g->lease, GW_GC_GUARD_MARGIN_S)) return 0;
    snprintf(err, errlen, "this backup's lease in the store lapsed (renewal failed or the process stalled): its chunks "
                          "may have been collected, so it is not listed");
    return -ETIMEDOUT;
}

uint64_t gw_gc_guard_generation(const struct gw_gc_guard *g)
{
    return g ? g->gen : 0;
}

void gw_gc_guard_leave(struct gw_gc_guard *g)
{
    if (!g) return;
    gw_lease_release(g->lease);
    free(g->pending);
    free(g);
}
