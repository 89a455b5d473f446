/* Leases: what the backends share (see lease.h): validation, the keeper thread, slots. */
#include "storage/lease_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/common/util.h"
#include "storage/store.h"

static void *keeper_main(void *arg)
{
    struct gw_lease *l = arg;
    pthread_mutex_lock(&l->mu);
    bool failed = false;
    while (!l->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        /* A third of the duration; after a renewal that failed without losing the lease, a
         * quarter of that (at least 1 s, never longer than usual), so that a few more tries
         * fit before it runs out. */
        uint64_t step_ms = l->duration_s * 1000ull / 3;
        if (failed) step_ms = step_ms / 4 > 1000 ? step_ms / 4 : step_ms < 1000 ? step_ms : 1000;
        ts.tv_sec += (time_t)(step_ms / 1000);
        ts.tv_nsec += (long)(step_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        if (l->stop) break;
        pthread_mutex_unlock(&l->mu);
        int r = gw_lease_renew(l);
        failed = r != 0;
        pthread_mutex_lock(&l->mu);
        if (r && atomic_load(&l->lost)) break;   /* nothing left to renew */
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static const struct gw_lease_backend *backend(struct gw_store *s)
{
    if (gw_store_dir_fd(s) >= 0) return &gw_lease_dir_backend;
    if (gw_store_rados_ioctx(s)) return &gw_lease_rados_backend;
    return NULL;
}

int gw_lease_acquire(struct gw_store *s, const char *name, const char *cookie, bool exclusive, unsigned duration_s,
                     bool keeper, struct gw_lease **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!duration_s) duration_s = GW_LEASE_DEFAULT_S;
    if (!gw_store_name_ok(name) || !gw_store_name_ok(cookie) || strlen(name) > 100 || strlen(cookie) > 100) {
        snprintf(err, errlen, "lease '%s' for '%s': bad name or cookie", name ? name : "", cookie ? cookie : "");
        return -EINVAL;
    }
    if (duration_s < GW_LEASE_MIN_S || duration_s > GW_LEASE_MAX_S) {
        snprintf(err, errlen, "a lease lasts %u..%u s", GW_LEASE_MIN_S, GW_LEASE_MAX_S);
        return -EINVAL;
    }
    const struct gw_lease_backend *be = backend(s);
    if (!be) { snprintf(err, errlen, "%s: this store has no leases", s->desc); return -EOPNOTSUPP; }
    struct gw_lease *l = calloc(1, sizeof *l);
    if (!l) return -ENOMEM;
    l->store = s;
    l->be = be;
    snprintf(l->name, sizeof l->name, "%s", name);
    snprintf(l->cookie, sizeof l->cookie, "%s", cookie);
    l->exclusive = exclusive;
    l->duration_s = duration_s;
    l->lock_fd = l->holder_fd = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    uint64_t t0 = gw_now_ns();
    int r = be->acquire(l, err, errlen);
    if (r) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return r;
    }
    /* As for a renewal: the store's clock started somewhere in the call, so its start (not its
     * end) bounds the lease. Counting from the end let a slow reply stretch our idea of the
     * lease past the store's, long enough for another host to take it meanwhile. */
    atomic_store(&l->renewed_ns, t0);
    if (keeper && pthread_create(&l->keeper, NULL, keeper_main, l) == 0) l->has_keeper = true;
    else if (keeper) { gw_lease_release(l); snprintf(err, errlen, "cannot start the lease keeper thread"); return -EAGAIN; }
    *out = l;
    return 0;
}

/* Whether a failed renewal says the lease is gone (someone else holds it, or the OSD dropped
 * it), rather than that Ceph did not answer this time. */
static bool renewal_refused(int r)
{
    return r == -ENOENT || r == -EBUSY || r == -EEXIST || r == -EINVAL || r == -EPERM;
}

int gw_lease_renew(struct gw_lease *l)
{
    int lost = atomic_load(&l->lost);
    if (lost) return lost;
    uint64_t t0 = gw_now_ns();
    int r = l->be->renew(l);
    if (!r) {
        atomic_store(&l->renewed_ns, t0);   /* the start of the call bounds the lease's new end */
        return 0;
    }
    /* A renewal that timed out (an OSD restarting, a slow cluster) does not lose a lease that
     * has time left: the next one may still come in time, and until then gw_lease_valid
     * counts from the last success. Once the duration has passed since then, it is lost. */
    if (renewal_refused(r) || gw_now_ns() - atomic_load(&l->renewed_ns) >= (uint64_t)l->duration_s * 1000000000ull)
        atomic_store(&l->lost, r);
    return r;
}

bool gw_lease_valid(struct gw_lease *l, unsigned margin_s)
{
    if (!l || atomic_load(&l->lost)) return false;
    if (l->be == &gw_lease_dir_backend) return true;   /* a live flock never expires */
    uint64_t age = gw_now_ns() - atomic_load(&l->renewed_ns);
    uint64_t limit = l->duration_s > margin_s ? (uint64_t)(l->duration_s - margin_s) * 1000000000ull : 0;
    return age < limit;
}

void gw_lease_release(struct gw_lease *l)
{
    if (!l) return;
    if (l->has_keeper) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->keeper, NULL);
    }
    l->be->release(l);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int gw_lease_holders(struct gw_store *s, const char *name, int (*fn)(const char *cookie, void *ctx), void *ctx)
{
    if (!gw_store_name_ok(name)) return gw_store_fail(s, -EINVAL, "bad lease name");
    const struct gw_lease_backend *be = backend(s);
    if (!be) return gw_store_fail(s, -EOPNOTSUPP, "%s: this store has no leases", s->desc);
    return be->holders(s, name, fn, ctx);
}

int gw_slots_acquire(struct gw_store *s, const char *name, unsigned m, const char *cookie, unsigned duration_s,
                     bool keeper, struct gw_lease **out, unsigned *slot, char *err, size_t errlen)
{
    *out = NULL;
    if (m == 0 || m > GW_SLOTS_MAX) { snprintf(err, errlen, "a semaphore has 1..%u slots", GW_SLOTS_MAX); return -EINVAL; }
    if (!name || strlen(name) > 90) { snprintf(err, errlen, "bad semaphore name"); return -EINVAL; }
    /* Start at a slot picked by the cookie so that many takers do not all try slot 0 first. */
    unsigned first = 0;
    for (const char *p = cookie; p && *p; p++) first = first * 31 + (unsigned char)*p;
    for (unsigned k = 0; k < m; k++) {
        unsigned i = (first + k) % m;
        char lname[112];
        snprintf(lname, sizeof lname, "%s.%u", name, i);
        int r = gw_lease_acquire(s, lname, cookie, true, duration_s, keeper, out, err, errlen);
        if (r == 0) { *slot = i; return 0; }
        if (r != -EBUSY) return r;
    }
    snprintf(err, errlen, "all %u slots of %s are taken", m, name);
    return -EBUSY;
}
