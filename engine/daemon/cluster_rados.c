/* The cluster registry on the Ceph cluster (cluster = rados:POOL[/NAMESPACE]): no extra
 * service, only an object the hosts share.
 *
 * Layout: one object, GW_CLUSTER_RADOS_OBJECT, whose omap holds one key per host (its name)
 * with its packed ClusterHost record as the value. One omap_set of one key replaces a record
 * atomically; a reader lists the keys in pages. Every host watches the object; a host whose
 * state or VMs changed notifies it after writing, so the others hear of it at once (their
 * waiters are woken) instead of at their next read. Heartbeats alone are not announced: they
 * change every second and readers judge them on their own clock (cluster_registry.c).
 *
 * Bounds: the handle comes from gw_rados_connect, so every call ends within its timeouts
 * (connect GW_CLUSTER_RADOS_MOUNT_S, each operation GW_CLUSTER_RADOS_OP_S) and a Ceph outage
 * is an error the caller reports, never a hang. Notifies are asynchronous (a watcher that died
 * holds a notify for GW_CLUSTER_RADOS_NOTIFY_MS, not the heartbeat). The daemon starts and
 * serves its local VMs while Ceph is away: connecting is retried by the next call.
 *
 * Trust: a key that is not a host name (too long, a NUL in it), or a value over
 * GW_CLUSTER_RECORD_MAX, is skipped and the listing goes on past it; the caller checks that
 * each record names its own key, and only the records it keeps count toward the cap. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/config.h"
#include "storage/rados_conn.h"

#define GW_CLUSTER_RADOS_OBJECT "godwit.cluster.hosts"
#define GW_CLUSTER_RADOS_MOUNT_S 10
#define GW_CLUSTER_RADOS_OP_S 4
#define GW_CLUSTER_RADOS_NOTIFY_MS 2000
#define GW_CLUSTER_RADOS_WATCH_S 10      /* the OSD drops a dead watcher after this */
#define GW_CLUSTER_RADOS_PAGE 32         /* records per omap read */
/* Keys one listing reads at most: keys that are no host's record are skipped, not counted
 * toward GW_CLUSTER_MAX_HOSTS, so without this bound millions of them would make every
 * listing read them all, one page after another. */
#define GW_CLUSTER_RADOS_MAX_KEYS (4 * GW_CLUSTER_MAX_HOSTS)
#define NOTIFY_SLOTS 4

struct notify_slot {
    rados_completion_t comp;             /* NULL: free */
    char *reply;
    size_t reply_len;
};

struct rados_be {
    pthread_mutex_t mu;                  /* connecting, (re)watching and the notify slots */
    const struct gw_daemon_config *cfg;
    char desc[200], pool[128], ns[101];
    void (*changed)(void *arg);
    void *arg;
    rados_t h;                           /* NULL: not connected (yet) */
    rados_ioctx_t io;
    uint64_t watch;
    bool watching;
    atomic_bool watch_lost;              /* set by librados' thread */
    int last_connect_err;
    uint64_t last_fail_ns;               /* CLOCK_MONOTONIC of the last failed connect */
    _Atomic uint64_t truncated_warn_ns;  /* when a listing last said it stopped early */
    struct notify_slot slots[NOTIFY_SLOTS];
};

static void on_notify(void *arg, uint64_t notify_id, uint64_t handle, uint64_t notifier, void *data, size_t len)
{
    (void)notifier;
    struct rados_be *b = arg;
    rados_notify_ack(b->io, GW_CLUSTER_RADOS_OBJECT, notify_id, handle, NULL, 0);
    /* Our own announcements come back to us too: only another host's change is news. */
    size_t self = strlen(b->cfg->hostname);
    if (len == self && !memcmp(data, b->cfg->hostname, len)) return;
    if (b->changed) b->changed(b->arg);
}

static void on_watch_error(void *arg, uint64_t cookie, int err)
{
    (void)cookie;
    struct rados_be *b = arg;
    atomic_store(&b->watch_lost, true);
    gw_warn("cluster: %s: the watch on the registry was lost (%s); it is set up again at the next heartbeat",
            b->desc, strerror(-err));
}

/* (Re)registers the watch (mu held). A failure leaves the registry usable: reads and
 * heartbeats work, only announcements arrive late (at the next read). */
static void rewatch(struct rados_be *b)
{
    if (b->watching && !atomic_load(&b->watch_lost)) return;
    if (b->watching) rados_unwatch2(b->io, b->watch);
    b->watching = false;
    atomic_store(&b->watch_lost, false);
    int r = rados_watch3(b->io, GW_CLUSTER_RADOS_OBJECT, &b->watch, on_notify, on_watch_error, GW_CLUSTER_RADOS_WATCH_S, b);
    if (r < 0) {
        atomic_store(&b->watch_lost, true);
        return;
    }
    b->watching = true;
}

static void disconnect(struct rados_be *b)
{
    if (!b->h) return;
    for (unsigned i = 0; i < NOTIFY_SLOTS; i++) {
        struct notify_slot *s = &b->slots[i];
        if (!s->comp) continue;
        rados_aio_wait_for_complete(s->comp);   /* bounded by GW_CLUSTER_RADOS_NOTIFY_MS */
        rados_aio_release(s->comp);
        if (s->reply) rados_buffer_free(s->reply);
        *s = (struct notify_slot){0};
    }
    if (b->watching) rados_unwatch2(b->io, b->watch);
    b->watching = false;
    rados_watch_flush(b->h);   /* no callback runs after this */
    if (b->io) rados_ioctx_destroy(b->io);
    rados_shutdown(b->h);
    b->h = NULL;
    b->io = NULL;
}

/* Connects when not connected (mu held): the handle, the pool, the object (created empty if
 * absent, so that it can be watched) and the watch. */
static int connect_locked(struct rados_be *b, char *err, size_t errlen)
{
    if (b->h) { rewatch(b); return 0; }
    /* Callers queue behind a connect: after a failure, the next GW_CLUSTER_HEARTBEAT_MS get
     * its answer at once instead of one connect timeout each. */
    if (b->last_connect_err && gw_now_ns() - b->last_fail_ns < GW_CLUSTER_HEARTBEAT_MS * 1000000ull) {
        snprintf(err, errlen, "%s: not connected to the Ceph cluster: %s", b->desc, strerror(-b->last_connect_err));
        return b->last_connect_err;
    }
    struct gw_rados_conn p = {
        .desc = b->desc, .ceph_conf = b->cfg->cluster_ceph_conf[0] ? b->cfg->cluster_ceph_conf : NULL,
        .ceph_id = b->cfg->cluster_ceph_id, .keyring = b->cfg->cluster_keyring[0] ? b->cfg->cluster_keyring : NULL,
        .mount_timeout_s = GW_CLUSTER_RADOS_MOUNT_S, .mon_op_timeout_s = GW_CLUSTER_RADOS_OP_S,
        .osd_op_timeout_s = GW_CLUSTER_RADOS_OP_S,
    };
    int r = gw_rados_connect(&p, &b->h, err, errlen);
    if (r < 0) {
        b->h = NULL;
        if (r != b->last_connect_err) gw_warn("cluster: %s", err);
        b->last_connect_err = r;
        b->last_fail_ns = gw_now_ns();
        return r;
    }
    r = rados_ioctx_create(b->h, b->pool, &b->io);
    if (r < 0) {
        b->io = NULL;
        snprintf(err, errlen, "%s: pool %s: %s", b->desc, b->pool, r == -ENOENT ? "no such pool" : strerror(-r));
        if (r != b->last_connect_err) gw_warn("cluster: %s", err);
        goto fail;
    }
    rados_ioctx_set_namespace(b->io, b->ns);
    rados_write_op_t op = rados_create_write_op();
    if (!op) { r = -ENOMEM; goto fail; }
    rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
    r = rados_write_op_operate(op, b->io, GW_CLUSTER_RADOS_OBJECT, NULL, LIBRADOS_OPERATION_FULL_TRY);
    rados_release_write_op(op);
    if (r < 0) { snprintf(err, errlen, "%s: cannot create its object: %s", b->desc, strerror(-r)); goto fail; }
    rewatch(b);
    if (b->last_connect_err) gw_info("cluster: %s: connected", b->desc);
    b->last_connect_err = 0;
    return 0;
fail:
    b->last_connect_err = r;
    b->last_fail_ns = gw_now_ns();
    disconnect(b);
    return r;
}

static int rados_be_open(const struct gw_cluster_open *o, void **out, char *err, size_t errlen)
{
    const char *slash = strchr(o->where, '/');
    size_t plen = slash ? (size_t)(slash - o->where) : strlen(o->where);
    const char *ns = slash ? slash + 1 : "";
    struct rados_be *b = calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    if (plen == 0 || plen >= sizeof b->pool || strlen(ns) >= sizeof b->ns) {
        snprintf(err, errlen, "cluster = rados:%s: want rados:POOL[/NAMESPACE]", o->where);
        free(b);
        return -EINVAL;
    }
    memcpy(b->pool, o->where, plen);
    snprintf(b->ns, sizeof b->ns, "%s", ns);
    snprintf(b->desc, sizeof b->desc, "registry rados:%.150s", o->where);
    b->cfg = o->cfg;
    b->changed = o->changed;
    b->arg = o->arg;
    pthread_mutex_init(&b->mu, NULL);
    /* Not connecting now is not an error: the daemon serves its VMs while Ceph is away, and
     * the heartbeat connects once it is back. A configuration error still is one. */
    pthread_mutex_lock(&b->mu);
    int r = connect_locked(b, err, errlen);
    pthread_mutex_unlock(&b->mu);
    if (r == -EINVAL || r == -ENOENT) {   /* no such pool or ceph.conf, a bad setting */
        pthread_mutex_destroy(&b->mu);
        free(b);
        return r;
    }
    *out = b;
    return 0;
}

/* Frees the finished notify slots and returns a free one, or NULL (mu held). */
static struct notify_slot *notify_slot(struct rados_be *b)
{
    struct notify_slot *free_slot = NULL;
    for (unsigned i = 0; i < NOTIFY_SLOTS; i++) {
        struct notify_slot *s = &b->slots[i];
        if (s->comp && rados_aio_is_complete(s->comp)) {
            rados_aio_release(s->comp);
            if (s->reply) rados_buffer_free(s->reply);
            *s = (struct notify_slot){0};
        }
        if (!s->comp && !free_slot) free_slot = s;
    }
    return free_slot;
}

static int rados_be_publish(void *be, const char *name, const uint8_t *rec, size_t len, bool announce)
{
    struct rados_be *b = be;
    if (!gw_cluster_name_ok(name) || len > GW_CLUSTER_RECORD_MAX) return -EINVAL;
    char err[300];
    pthread_mutex_lock(&b->mu);
    int r = connect_locked(b, err, sizeof err);
    pthread_mutex_unlock(&b->mu);
    if (r < 0) return r;
    rados_write_op_t op = rados_create_write_op();
    if (!op) return -ENOMEM;
    const char *keys[1] = {name}, *vals[1] = {(const char *)rec};
    size_t klen[1] = {strlen(name)}, vlen[1] = {len};
    rados_write_op_omap_set2(op, keys, vals, klen, vlen, 1);
    r = rados_write_op_operate(op, b->io, GW_CLUSTER_RADOS_OBJECT, NULL, LIBRADOS_OPERATION_FULL_TRY);
    rados_release_write_op(op);
    if (r < 0 || !announce) return r < 0 ? r : 0;
    pthread_mutex_lock(&b->mu);
    struct notify_slot *s = notify_slot(b);
    /* All slots busy (watchers that died hold notifies until they time out): the others see
     * the change at their next read; the record itself is written. */
    if (s && !rados_aio_create_completion2(NULL, NULL, &s->comp) &&
        rados_aio_notify(b->io, GW_CLUSTER_RADOS_OBJECT, s->comp, name, (int)strlen(name), GW_CLUSTER_RADOS_NOTIFY_MS,
                         &s->reply, &s->reply_len) < 0) {
        rados_aio_release(s->comp);
        *s = (struct notify_slot){0};
    }
    pthread_mutex_unlock(&b->mu);
    return 0;
}

/* Where a listing stands: the key the next page starts after, and what it has read. */
struct list_pos {
    char *after;                         /* malloc'ed, NUL-terminated; NULL: from the start */
    size_t cap;
    unsigned kept, keys;
};

/* Moves pos past key k (kl bytes, any bytes: anyone with write access sets keys). A key with
 * a NUL cannot be a start_after (a C string): its part before the NUL followed by \x01 is the
 * first string past every key that starts with that part and a NUL, none of which is a host
 * name; the one key it skips besides them, that part and \x01, is none either. */
static int list_skip(struct list_pos *pos, const char *k, size_t kl)
{
    const char *nul = memchr(k, 0, kl);
    size_t n = nul ? (size_t)(nul - k) + 1 : kl;
    if (n + 1 > pos->cap) {
        char *p = realloc(pos->after, n + 1);
        if (!p) return -ENOMEM;
        pos->after = p;
        pos->cap = n + 1;
    }
    memcpy(pos->after, k, n);
    if (nul) pos->after[n - 1] = '\x01';
    pos->after[n] = 0;
    return 0;
}

/* Hands one key and its value to fn when the key is a host name and the value a plausible
 * size; only what fn keeps counts toward GW_CLUSTER_MAX_HOSTS (junk must not hide hosts). */
static void list_one(struct list_pos *pos, const char *k, size_t kl, const char *v, size_t vl,
                     gw_cluster_record_fn fn, void *arg)
{
    char name[GW_CLUSTER_NAME_MAX + 1];
    if (kl > GW_CLUSTER_NAME_MAX || memchr(k, 0, kl) || !vl || vl > GW_CLUSTER_RECORD_MAX) return;
    memcpy(name, k, kl);
    name[kl] = 0;
    if (gw_cluster_name_ok(name) && fn(arg, name, (const uint8_t *)v, vl)) pos->kept++;
}

/* Reads one page after pos and hands its keys on; *more: the object holds keys past it. */
static int list_page(struct rados_be *b, struct list_pos *pos, gw_cluster_record_fn fn, void *arg, unsigned char *more)
{
    rados_read_op_t op = rados_create_read_op();
    if (!op) return -ENOMEM;
    rados_omap_iter_t it = NULL;
    int prval = 0;
    rados_read_op_omap_get_vals2(op, pos->after ? pos->after : "", "", GW_CLUSTER_RADOS_PAGE, &it, more, &prval);
    int r = rados_read_op_operate(op, b->io, GW_CLUSTER_RADOS_OBJECT, 0);
    rados_release_read_op(op);
    if (r < 0 || prval < 0) {
        if (it) rados_omap_get_end(it);
        if (r == -ENOENT) { *more = 0; return 0; }   /* no object yet: no hosts */
        return r < 0 ? r : prval;
    }
    unsigned got = 0;
    for (;;) {
        char *k = NULL, *v = NULL;
        size_t kl = 0, vl = 0;
        if (rados_omap_get_next2(it, &k, &v, &kl, &vl) < 0 || !k) break;
        got++;
        pos->keys++;
        if ((r = list_skip(pos, k, kl)) < 0) break;
        if (pos->kept < GW_CLUSTER_MAX_HOSTS) list_one(pos, k, kl, v, vl, fn, arg);
    }
    rados_omap_get_end(it);
    if (!got) *more = 0;
    return r < 0 ? r : 0;
}

/* The listing stopped at GW_CLUSTER_RADOS_MAX_KEYS: said at most once a minute (every
 * ListHosts would say it again). */
static void list_truncated(struct rados_be *b, const struct list_pos *pos)
{
    uint64_t now = gw_now_ns(), last = atomic_load(&b->truncated_warn_ns);
    if (last && now - last < 60 * 1000000000ull) return;
    if (!atomic_compare_exchange_strong(&b->truncated_warn_ns, &last, now)) return;
    gw_warn("cluster: %s: the registry holds more than %u keys (%u of them host records); hosts past them are not "
            "listed: remove the keys no host wrote", b->desc, GW_CLUSTER_RADOS_MAX_KEYS, pos->kept);
}

static int rados_be_list(void *be, gw_cluster_record_fn fn, void *arg)
{
    struct rados_be *b = be;
    char err[300];
    pthread_mutex_lock(&b->mu);
    int r = connect_locked(b, err, sizeof err);
    pthread_mutex_unlock(&b->mu);
    if (r < 0) return r;
    struct list_pos pos = {0};
    unsigned char more = 1;
    while (!r && more && pos.kept < GW_CLUSTER_MAX_HOSTS) {
        if (pos.keys >= GW_CLUSTER_RADOS_MAX_KEYS) { list_truncated(b, &pos); break; }
        r = list_page(b, &pos, fn, arg, &more);
    }
    free(pos.after);
    return r;
}

static void rados_be_close(void *be)
{
    struct rados_be *b = be;
    pthread_mutex_lock(&b->mu);
    disconnect(b);
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

const struct gw_cluster_ops gw_cluster_rados_ops = {
    .scheme = "rados", .open = rados_be_open, .publish = rados_be_publish, .list = rados_be_list, .close = rados_be_close,
};
