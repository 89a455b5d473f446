/* The RADOS backend of the chunk store (see store.h), through librados' C API.
 *
 * Writes: a ring of max_inflight slots, each owning a copy of its object and one aio write op
 * (write_full, so a retry replaces the object whole). A put that finds the ring full reaps the
 * oldest slot first; a slot whose write timed out is submitted again (the outcome of a timed-out
 * write is unknown, and writing the same bytes again is harmless). Every write carries
 * LIBRADOS_OPERATION_FULL_TRY: a pool at its quota answers -EDQUOT at once instead of blocking.
 *
 * Bounds: the handle comes from gw_rados_connect (rados_conn.h), which bounds every wait.
 *
 * Indexes: omap keys on GW_STORE_INDEX_SHARDS objects "i.<index>.<shard>", a key's shard being
 * a hash of the key, so even 1,000,000 backups of one VM keep each object far below Ceph's
 * 200,000-key warning. */
#include <errno.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "engine/common/util.h"
#include "storage/rados_conn.h"
#include "storage/store.h"

struct wslot {
    bool busy;
    char name[160];
    uint8_t *buf;
    size_t len, cap;
    unsigned retries_left;
    uint64_t submit_ns, done_ns;   /* write latency for the throttle (done_ns: librados' thread) */
    rados_completion_t comp;
    rados_write_op_t op;
};

struct rados_store {
    struct gw_store s;
    rados_t cluster;
    rados_ioctx_t io;
    char pool[128];
    unsigned osd_timeout_s, retries;
    struct wslot *slots;
    unsigned nslots, head;   /* head: the oldest slot, reaped first */
    int first_err;           /* sticky write error since the last wait */
};

static int describe(struct rados_store *d, int rc, const char *what, const char *obj)
{
    struct gw_store *s = &d->s;
    if (rc == -ETIMEDOUT)
        return gw_store_fail(s, rc, "%s: Ceph did not answer within %u s %s %s (OSD or monitor down?)", s->desc,
                             d->osd_timeout_s, what, obj);
    if (rc == -EDQUOT)
        return gw_store_fail(s, rc, "%s: pool %s is full (quota reached): %s %s refused", s->desc, d->pool, what, obj);
    if (rc == -ENOSPC)
        return gw_store_fail(s, rc, "%s: the Ceph cluster is full: %s %s refused", s->desc, what, obj);
    return gw_store_fail(s, rc, "%s: %s %s: %s", s->desc, what, obj, strerror(-rc));
}

static void write_done(rados_completion_t c, void *arg)
{
    struct wslot *w = arg;
    __atomic_store_n(&w->done_ns, gw_now_ns(), __ATOMIC_RELEASE);
}

static int submit(struct rados_store *d, struct wslot *w)
{
    if (w->op) rados_release_write_op(w->op);
    if (w->comp) rados_aio_release(w->comp);
    w->op = rados_create_write_op();
    __atomic_store_n(&w->done_ns, 0, __ATOMIC_RELAXED);
    w->submit_ns = gw_now_ns();
    int r = w->op ? rados_aio_create_completion2(w, write_done, &w->comp) : -ENOMEM;
    if (r) { w->comp = NULL; return r; }
    rados_write_op_write_full(w->op, (const char *)w->buf, w->len);
    return rados_aio_write_op_operate(w->op, d->io, w->comp, w->name, NULL, LIBRADOS_OPERATION_FULL_TRY);
}

/* Ends slot w with result r (frees its op). */
static int settle(struct rados_store *d, struct wslot *w, int r)
{
    rados_aio_release(w->comp);
    rados_release_write_op(w->op);
    w->comp = NULL;
    w->op = NULL;
    w->busy = false;
    if (r < 0) {
        if (!d->first_err) d->first_err = describe(d, r, "writing", w->name);
    } else {
        d->s.bytes_written += w->len;
        d->s.objects_written++;
        /* The callback may not have run yet when the wait returns: then it ends about now. */
        uint64_t done = __atomic_load_n(&w->done_ns, __ATOMIC_ACQUIRE);
        if (!done || done < w->submit_ns) done = gw_now_ns();
        d->s.write_lat_ns += done - w->submit_ns;
        d->s.write_lat_n++;
    }
    return r < 0 ? r : 0;
}

/* A write that timed out is retried, unless an earlier write has already failed for good:
 * then the whole batch is failing and retrying one by one would only multiply the wait. */
static bool retry(struct rados_store *d, struct wslot *w, int r)
{
    if (r != -ETIMEDOUT || !w->retries_left || d->first_err) return false;
    w->retries_left--;
    d->s.write_retries++;
    return submit(d, w) == 0;
}

/* Waits for slot w, retrying a timed-out write; frees it. Returns its final result. */
static int reap(struct rados_store *d, struct wslot *w)
{
    int r;
    do {
        rados_aio_wait_for_complete_and_cb(w->comp);   /* our callback too: it writes w */
        r = rados_aio_get_return_value(w->comp);
    } while (retry(d, w, r));
    return settle(d, w, r);
}

static int rados_put(struct gw_store *s, const char *obj, const void *buf, size_t len)
{
    struct rados_store *d = (struct rados_store *)s;
    if (d->first_err) return d->first_err;   /* the reason is in s->err already */
    if (strlen(obj) >= sizeof d->slots[0].name) return gw_store_fail(s, -ENAMETOOLONG, "object name too long");
    /* Below the cap (store.h): the oldest writes are reaped until one more fits under it. */
    unsigned cap = s->inflight_cap && s->inflight_cap < d->nslots ? s->inflight_cap : d->nslots, busy = 0;
    for (unsigned i = 0; i < d->nslots; i++) busy += d->slots[i].busy;
    for (unsigned i = 0; busy >= cap && i < d->nslots; i++) {
        struct wslot *o = &d->slots[(d->head + i) % d->nslots];
        if (!o->busy) continue;
        if (reap(d, o)) return d->first_err;
        busy--;
    }
    struct wslot *w = &d->slots[d->head];
    if (w->busy && reap(d, w)) return d->first_err;
    if (w->cap < len) {
        uint8_t *nb = realloc(w->buf, len ? len : 1);
        if (!nb) return gw_store_fail(s, -ENOMEM, "out of memory");
        w->buf = nb;
        w->cap = len;
    }
    memcpy(w->buf, buf, len);
    w->len = len;
    snprintf(w->name, sizeof w->name, "%s", obj);
    w->retries_left = d->retries;
    int r = submit(d, w);
    if (r) return describe(d, r, "submitting", obj);
    w->busy = true;
    d->head = (d->head + 1) % d->nslots;
    return 0;
}

static int rados_wait(struct gw_store *s)
{
    struct rados_store *d = (struct rados_store *)s;
    /* Every slot completes first, then every timed-out one is submitted again at once: the
     * retries run in parallel, so a dead OSD costs (retries + 1) op timeouts, not one per slot. */
    for (bool again = true; again;) {
        again = false;
        for (unsigned i = 0; i < d->nslots; i++)
            if (d->slots[i].busy) rados_aio_wait_for_complete_and_cb(d->slots[i].comp);
        for (unsigned i = 0; i < d->nslots; i++) {
            struct wslot *w = &d->slots[(d->head + i) % d->nslots];
            if (!w->busy) continue;
            int r = rados_aio_get_return_value(w->comp);
            if (retry(d, w, r)) again = true;
            else settle(d, w, r);
        }
    }
    int r = d->first_err;
    d->first_err = 0;
    return r;
}

static int rados_stat_obj(struct gw_store *s, const char *obj, uint64_t *size)
{
    struct rados_store *d = (struct rados_store *)s;
    uint64_t sz = 0;
    time_t mt;
    int r = rados_stat(d->io, obj, &sz, &mt);
    if (r == -ENOENT) return 0;
    if (r < 0) return describe(d, r, "looking up", obj);
    if (size) *size = sz;
    return 1;
}

void gw_store_rados_stat_batch(void *io, const char *const *names, size_t n, int *rc, uint64_t *size,
                               uint64_t *version)
{
    rados_completion_t comp[GW_STORE_MAX_INFLIGHT];
    uint64_t sz[GW_STORE_MAX_INFLIGHT];
    time_t mt[GW_STORE_MAX_INFLIGHT];
    for (size_t base = 0; base < n; base += GW_STORE_MAX_INFLIGHT) {
        size_t k = n - base < GW_STORE_MAX_INFLIGHT ? n - base : GW_STORE_MAX_INFLIGHT;
        for (size_t i = 0; i < k; i++) {
            comp[i] = NULL;
            if (size) size[base + i] = 0;
            if (version) version[base + i] = 0;
            int r = rados_aio_create_completion2(NULL, NULL, &comp[i]);
            if (!r) r = rados_aio_stat(io, names[base + i], comp[i], &sz[i], &mt[i]);
            rc[base + i] = r;
            if (r && comp[i]) { rados_aio_release(comp[i]); comp[i] = NULL; }
        }
        for (size_t i = 0; i < k; i++) {
            if (!comp[i]) continue;
            rados_aio_wait_for_complete(comp[i]);
            int r = rados_aio_get_return_value(comp[i]);
            if (version) version[base + i] = rados_aio_get_version(comp[i]);
            if (size) size[base + i] = sz[i];
            rados_aio_release(comp[i]);
            rc[base + i] = r == 0 ? 1 : r == -ENOENT ? 0 : r;
        }
    }
}

static int rados_exists_batch(struct gw_store *s, const char *const *names, size_t n, int *present)
{
    struct rados_store *d = (struct rados_store *)s;
    gw_store_rados_stat_batch(d->io, names, n, present, NULL, NULL);
    for (size_t i = 0; i < n; i++)
        if (present[i] < 0) return describe(d, present[i], "looking up", names[i]);
    return 0;
}

static int rados_get(struct gw_store *s, const char *obj, size_t max, uint8_t **buf, size_t *len)
{
    struct rados_store *d = (struct rados_store *)s;
    /* One byte more than the stat said: an object replaced by a larger one between the stat
     * and the read (the collector's pending list, say) is read again, not cut short. */
    uint8_t *b = NULL;
    int n = 0;
    for (int tries = 0;; tries++) {
        uint64_t sz = 0;
        int r = rados_stat_obj(s, obj, &sz);
        if (r == 0) return gw_store_fail(s, -ENOENT, "%s: %s does not exist", s->desc, obj);
        if (r < 0) return r;
        if (sz > max || sz >= INT32_MAX) return gw_store_fail(s, -EFBIG, "%s: %s is larger than %zu bytes", s->desc, obj, max);
        if (!(b = malloc(sz + 1))) return gw_store_fail(s, -ENOMEM, "out of memory");
        n = rados_read(d->io, obj, (char *)b, sz + 1, 0);
        if (n < 0) { free(b); return describe(d, n, "reading", obj); }
        if ((uint64_t)n <= sz) break;
        free(b);
        if (tries == 3) return gw_store_fail(s, -EAGAIN, "%s: %s kept growing while it was read", s->desc, obj);
    }
    s->bytes_read += (uint64_t)n;
    s->objects_read++;
    *buf = b;
    *len = (size_t)n;
    return 0;
}

static int rados_get_batch(struct gw_store *s, struct gw_store_read *rd, size_t n)
{
    struct rados_store *d = (struct rados_store *)s;
    rados_completion_t comp[GW_STORE_MAX_INFLIGHT];
    size_t idx[GW_STORE_MAX_INFLIGHT];
    unsigned depth = d->nslots, inflight = 0, oldest = 0;
    for (size_t next = 0; next < n || inflight;) {
        if (next < n && inflight < depth) {
            unsigned k = (oldest + inflight) % depth;
            rd[next].len = 0;
            comp[k] = NULL;   /* a failed create may leave it unset: never release what was not made */
            int r = rados_aio_create_completion2(NULL, NULL, &comp[k]);
            if (!r) r = rados_aio_read(d->io, rd[next].name, comp[k], (char *)rd[next].buf, rd[next].cap, 0);
            if (r) { rd[next].rc = r; if (comp[k]) rados_aio_release(comp[k]); next++; continue; }
            idx[k] = next++;
            inflight++;
            continue;
        }
        rados_aio_wait_for_complete(comp[oldest]);
        int r = rados_aio_get_return_value(comp[oldest]);
        rados_aio_release(comp[oldest]);
        struct gw_store_read *x = &rd[idx[oldest]];
        if (r >= 0) {
            x->len = (size_t)r;
            x->rc = 0;
            /* Atomic: instant restore's workers read with one batch each at the same time. */
            __atomic_fetch_add(&s->bytes_read, (uint64_t)r, __ATOMIC_RELAXED);
            __atomic_fetch_add(&s->objects_read, 1, __ATOMIC_RELAXED);
        }
        else x->rc = r;
        oldest = (oldest + 1) % depth;
        inflight--;
    }
    return 0;
}

static int rados_remove_obj(struct gw_store *s, const char *obj)
{
    struct rados_store *d = (struct rados_store *)s;
    rados_write_op_t op = rados_create_write_op();
    if (!op) return -ENOMEM;
    rados_write_op_remove(op);
    int r = rados_write_op_operate(op, d->io, obj, NULL, LIBRADOS_OPERATION_FULL_TRY);
    rados_release_write_op(op);
    if (r < 0 && r != -ENOENT) return describe(d, r, "removing", obj);
    return 0;
}

static void shard_name(const char *index, const char *key, char *buf, size_t cap)
{
    unsigned shard = (unsigned)(XXH64(key, strlen(key), 0) % GW_STORE_INDEX_SHARDS);
    snprintf(buf, cap, "i.%s.%02u", index, shard);
}

static int rados_index_set(struct gw_store *s, const char *index, const char *key, const char *val)
{
    struct rados_store *d = (struct rados_store *)s;
    if (!gw_store_name_ok(index) || !gw_store_name_ok(key)) return gw_store_fail(s, -EINVAL, "bad index or key name");
    char oid[160];
    shard_name(index, key, oid, sizeof oid);
    rados_write_op_t op = rados_create_write_op();
    if (!op) return -ENOMEM;
    const char *keys[1] = {key}, *vals[1] = {val};
    size_t klen[1] = {strlen(key)}, vlen[1] = {strlen(val)};
    rados_write_op_omap_set2(op, keys, vals, klen, vlen, 1);
    int r = rados_write_op_operate(op, d->io, oid, NULL, LIBRADOS_OPERATION_FULL_TRY);
    if (r == -ETIMEDOUT && d->retries) r = rados_write_op_operate(op, d->io, oid, NULL, LIBRADOS_OPERATION_FULL_TRY);
    rados_release_write_op(op);
    return r < 0 ? describe(d, r, "updating index", oid) : 0;
}

static int rados_index_del(struct gw_store *s, const char *index, const char *key)
{
    struct rados_store *d = (struct rados_store *)s;
    if (!gw_store_name_ok(index) || !gw_store_name_ok(key)) return gw_store_fail(s, -EINVAL, "bad index or key name");
    char oid[160];
    shard_name(index, key, oid, sizeof oid);
    rados_write_op_t op = rados_create_write_op();
    if (!op) return -ENOMEM;
    const char *keys[1] = {key};
    size_t klen[1] = {strlen(key)};
    rados_write_op_omap_rm_keys2(op, keys, klen, 1);
    int r = rados_write_op_operate(op, d->io, oid, NULL, LIBRADOS_OPERATION_FULL_TRY);
    rados_release_write_op(op);
    return r < 0 && r != -ENOENT ? describe(d, r, "updating index", oid) : 0;
}

static int rados_index_list(struct gw_store *s, const char *index, int (*fn)(const char *, const char *, void *), void *ctx)
{
    struct rados_store *d = (struct rados_store *)s;
    if (!gw_store_name_ok(index)) return gw_store_fail(s, -EINVAL, "bad index name");
    for (unsigned shard = 0; shard < GW_STORE_INDEX_SHARDS; shard++) {
        /* Every key moves the page's start, ours or not: a page of foreign keys skipped
         * without moving it would be asked for again forever. */
        char oid[160], after[4096] = "";
        snprintf(oid, sizeof oid, "i.%s.%02u", index, shard);
        unsigned char more = 1;
        while (more) {
            rados_read_op_t op = rados_create_read_op();
            if (!op) return -ENOMEM;
            rados_omap_iter_t it = NULL;
            int prval = 0;
            rados_read_op_omap_get_vals2(op, after, "", 1000, &it, &more, &prval);
            int r = rados_read_op_operate(op, d->io, oid, 0);
            rados_release_read_op(op);
            if (r == -ENOENT) { if (it) rados_omap_get_end(it); break; }
            if (r < 0 || prval < 0) { if (it) rados_omap_get_end(it); return describe(d, r < 0 ? r : prval, "listing index", oid); }
            int stop = 0;
            bool moved = false;
            for (;;) {
                char *k = NULL, *v = NULL;
                size_t kl = 0, vl = 0;
                if (rados_omap_get_next2(it, &k, &v, &kl, &vl) < 0 || !k) break;
                if (kl >= sizeof after || memchr(k, 0, kl)) {   /* cannot be a page's start */
                    stop = gw_store_fail(s, -EBADMSG, "%s: index %s holds a key Godwit cannot list past (%zu bytes)",
                                         s->desc, oid, kl);
                    break;
                }
                memcpy(after, k, kl);
                after[kl] = 0;
                moved = true;
                char key[128], val[1024];
                if (kl >= sizeof key || vl >= sizeof val) continue; /* not ours: skip, never trust */
                memcpy(key, k, kl); key[kl] = 0;
                memcpy(val, v, vl); val[vl] = 0;
                if (!gw_store_name_ok(key)) continue;
                if ((stop = fn(key, val, ctx))) break;
            }
            rados_omap_get_end(it);
            if (stop) return stop;
            if (more && !moved)
                return gw_store_fail(s, -EBADMSG, "%s: index %s: a page of its listing made no progress", s->desc, oid);
        }
    }
    return 0;
}

static void rados_close_store(struct gw_store *s)
{
    struct rados_store *d = (struct rados_store *)s;
    if (d->slots) {
        rados_wait(s);
        for (unsigned i = 0; i < d->nslots; i++) free(d->slots[i].buf);
        free(d->slots);
    }
    if (d->io) rados_ioctx_destroy(d->io);
    if (d->cluster) rados_shutdown(d->cluster);
    free(d);
}

static const struct gw_store_ops rados_ops = {
    .put = rados_put, .wait = rados_wait, .stat = rados_stat_obj, .exists_batch = rados_exists_batch, .get = rados_get,
    .get_batch = rados_get_batch, .remove = rados_remove_obj, .index_set = rados_index_set,
    .index_del = rados_index_del, .index_list = rados_index_list, .close = rados_close_store,
};

int gw_store_fail_op(struct gw_store *s, int rc, const char *what, const char *obj)
{
    if (s->ops == &rados_ops) return describe((struct rados_store *)s, rc, what, obj);
    return gw_store_fail(s, rc, "%s: %s %s: %s", s->desc, what, obj, strerror(-rc));
}

void *gw_store_rados_ioctx(const struct gw_store *s)
{
    return s->ops == &rados_ops ? ((const struct rados_store *)s)->io : NULL;
}

int gw_store_rados_open(const char *pool_ns, const struct gw_store_params *p, struct gw_store **out, char *err, size_t errlen)
{
    struct rados_store *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    const char *slash = strchr(pool_ns, '/');
    size_t plen = slash ? (size_t)(slash - pool_ns) : strlen(pool_ns);
    const char *ns = slash ? slash + 1 : "";
    int r = 0;
    if (plen == 0 || plen >= sizeof d->pool || strlen(ns) > 100) {
        snprintf(err, errlen, "rados:%s: want rados:POOL[/NAMESPACE]", pool_ns);
        free(d);
        return -EINVAL;
    }
    memcpy(d->pool, pool_ns, plen);
    d->s.ops = &rados_ops;
    snprintf(d->s.desc, sizeof d->s.desc, "rados:%s", pool_ns);
    unsigned mount = p->mount_timeout_s ? p->mount_timeout_s : GW_STORE_DEFAULT_MOUNT_TIMEOUT_S;
    unsigned mon = p->mon_op_timeout_s ? p->mon_op_timeout_s : GW_STORE_DEFAULT_MON_OP_TIMEOUT_S;
    d->osd_timeout_s = p->osd_op_timeout_s ? p->osd_op_timeout_s : GW_STORE_DEFAULT_OSD_OP_TIMEOUT_S;
    d->retries = p->write_retries == ~0u ? 0 : p->write_retries ? p->write_retries : GW_STORE_DEFAULT_WRITE_RETRIES;
    struct gw_rados_conn conn = {.desc = d->s.desc, .ceph_conf = p->ceph_conf, .ceph_id = p->ceph_id,
                                 .keyring = p->keyring, .mount_timeout_s = mount, .mon_op_timeout_s = mon,
                                 .osd_op_timeout_s = d->osd_timeout_s};
    r = gw_rados_connect(&conn, &d->cluster, err, errlen);
    if (r < 0) { d->cluster = NULL; goto fail; }
    r = rados_ioctx_create(d->cluster, d->pool, &d->io);
    if (r < 0) {
        snprintf(err, errlen, "%s: pool %s: %s", d->s.desc, d->pool, r == -ENOENT ? "no such pool" : strerror(-r));
        d->io = NULL;
        goto fail;
    }
    rados_ioctx_set_namespace(d->io, ns);
    /* Every op, lock calls included (they take no flags), fails at once on a full pool. */
    rados_set_pool_full_try(d->io);
    d->nslots = p->max_inflight ? p->max_inflight : GW_STORE_DEFAULT_INFLIGHT;
    d->s.max_inflight = d->nslots;
    d->slots = calloc(d->nslots, sizeof *d->slots);
    if (!d->slots) { r = -ENOMEM; snprintf(err, errlen, "out of memory"); goto fail; }
    *out = &d->s;
    return 0;
fail:
    rados_close_store(&d->s);
    return r;
}
