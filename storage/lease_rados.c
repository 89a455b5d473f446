/* Leases on a RADOS store (see lease.h): Ceph's object locks (cls_lock) on "l.<name>", lock
 * name "gw", with a duration. The OSD drops a holder whose duration ran out when it next reads
 * the lock, so an expired holder is neither listed nor blocks a new taker. Renewal is the same
 * lock call with MUST_RENEW: it fails (-ENOENT) once the lease has been lost, instead of
 * silently taking it again after someone else may have held it. */
#include <errno.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "storage/lease_int.h"
#include "storage/store.h"

#define LOCK_NAME "gw"
#define LOCK_TAG "gw"

static int lock(struct gw_lease *l, uint8_t flags)
{
    rados_ioctx_t io = gw_store_rados_ioctx(l->store);
    char obj[128];
    snprintf(obj, sizeof obj, "l.%s", l->name);
    struct timeval tv = {.tv_sec = l->duration_s};
    if (l->exclusive) return rados_lock_exclusive(io, obj, LOCK_NAME, l->cookie, "godwit", &tv, flags);
    return rados_lock_shared(io, obj, LOCK_NAME, l->cookie, LOCK_TAG, "godwit", &tv, flags);
}

static int count_one(const char *cookie, void *ctx)
{
    (void)cookie;
    (*(int *)ctx)++;
    return 0;
}

static int rados_holders(struct gw_store *s, const char *name, int (*fn)(const char *, void *), void *ctx);

static int rados_acquire(struct gw_lease *l, char *err, size_t errlen)
{
    /* An exclusive lease that has holders is busy: learn that from a read rather than from a
     * lock write that fails (the OSD logs every failed write). */
    int held = 0;
    int hr = l->exclusive ? rados_holders(l->store, l->name, count_one, &held) : 0;
    if (hr == -ETIMEDOUT) {   /* Ceph is not answering: the lock would wait as long again */
        snprintf(err, errlen, "%s", gw_store_error(l->store));
        return hr;
    }
    if (hr == 0 && held) {
        snprintf(err, errlen, "lease %s is held", l->name);
        return -EBUSY;
    }
    int r = lock(l, 0);
    if (r == -EEXIST) r = -EBUSY;   /* this very cookie holds it already: a second taker must not */
    if (r == -EBUSY) snprintf(err, errlen, "lease %s is held%s", l->name, l->exclusive ? "" : " exclusively");
    else if (r == -EDQUOT || r == -ENOSPC)
        snprintf(err, errlen, "%s: %s: lease %s refused", l->store->desc,
                 r == -EDQUOT ? "the pool is full (quota reached)" : "the Ceph cluster is full", l->name);
    else if (r < 0) {
        char obj[128];
        snprintf(obj, sizeof obj, "lease %s", l->name);
        gw_store_fail_op(l->store, r, "taking", obj);
        snprintf(err, errlen, "%s", gw_store_error(l->store));
    }
    return r < 0 ? r : 0;
}

static int rados_renew(struct gw_lease *l)
{
    int r = lock(l, LIBRADOS_LOCK_FLAG_MUST_RENEW);
    return r < 0 ? r : 0;
}

static void rados_release(struct gw_lease *l)
{
    char obj[128];
    snprintf(obj, sizeof obj, "l.%s", l->name);
    rados_unlock(gw_store_rados_ioctx(l->store), obj, LOCK_NAME, l->cookie);
}

static int rados_holders(struct gw_store *s, const char *name, int (*fn)(const char *, void *), void *ctx)
{
    rados_ioctx_t io = gw_store_rados_ioctx(s);
    char obj[128];
    snprintf(obj, sizeof obj, "l.%s", name);
    size_t cap = 4096;
    for (int tries = 0; tries < 8; tries++) {
        char tag[256];
        size_t taglen = sizeof tag, clen = cap, klen = cap, alen = cap;
        char *clients = malloc(cap), *cookies = malloc(cap), *addrs = malloc(cap);
        int excl = 0;
        ssize_t n = clients && cookies && addrs
                        ? rados_list_lockers(io, obj, LOCK_NAME, &excl, tag, &taglen, clients, &clen, cookies, &klen, addrs, &alen)
                        : -ENOMEM;
        if (n == -ERANGE) {
            free(clients); free(cookies); free(addrs);
            size_t need = clen > klen ? clen : klen;
            need = need > alen ? need : alen;
            if (need > (16u << 20)) return gw_store_fail(s, -EFBIG, "%s: lease %s lists too many holders", s->desc, name);
            cap = need > cap ? need : cap * 2;
            continue;
        }
        int r = 0;
        if (n == -ENOENT) n = 0;
        if (n < 0) {
            char what[128];
            snprintf(what, sizeof what, "lease %s", name);
            r = gw_store_fail_op(s, (int)n, "listing the holders of", what);
        }
        /* cookies: n NUL-terminated strings within klen bytes (checked, never trusted). */
        size_t off = 0;
        for (ssize_t i = 0; !r && i < n && off < klen; i++) {
            const char *c = cookies + off;
            size_t len = strnlen(c, klen - off);
            if (len == klen - off) break;
            off += len + 1;
            if (gw_store_name_ok(c)) r = fn(c, ctx);
        }
        free(clients); free(cookies); free(addrs);
        return r;
    }
    return gw_store_fail(s, -EAGAIN, "%s: lease %s: holder list keeps growing", s->desc, name);
}

const struct gw_lease_backend gw_lease_rados_backend = {
    .acquire = rados_acquire, .renew = rados_renew, .release = rados_release, .holders = rados_holders,
};
