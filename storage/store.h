/* The chunk store: one interface (an ops table), two backends chosen in one place.
 *
 *   dir:PATH              a local directory (the embedded default): one file per object
 *   rados:POOL[/NS]       a Ceph pool (and namespace) through librados, with aio
 *
 * A store holds named objects (chunks "c.<hex>", manifests, ...) and small per-VM indexes
 * (key -> short text value). Writes are asynchronous with at most max_inflight operations in
 * flight: put copies the caller's buffer and returns once it is queued; wait reports the first
 * failure of any write since the last wait and, once it returns 0, everything put before it is
 * durable. Put replaces an object of the same name whole, so retrying a put is always safe
 * (chunk objects are content-addressed, a retry writes the same bytes).
 *
 * Failure is bounded: every librados call is bounded by the timeouts below (set with
 * rados_conf_set, so a ceph.conf cannot lift them); a write that timed out is retried
 * write_retries times; a full pool fails the write at once with -EDQUOT (FULL_TRY) instead of
 * blocking. Every error leaves a one-line reason in gw_store_error(). */
#ifndef GW_STORAGE_STORE_H
#define GW_STORAGE_STORE_H

#include <stddef.h>
#include <stdint.h>

struct gw_store_params {
    const char *spec;             /* "dir:PATH" or "rados:POOL[/NAMESPACE]" */
    const char *ceph_conf;        /* rados: ceph.conf path (NULL: librados' default search) */
    const char *ceph_id;          /* rados: client id, e.g. "admin" (NULL: "admin") */
    const char *keyring;          /* rados: keyring path (NULL: from ceph.conf) */
    unsigned max_inflight;        /* operations in flight (0: GW_STORE_DEFAULT_INFLIGHT) */
    unsigned mount_timeout_s;     /* connect (0: default below) */
    unsigned mon_op_timeout_s;    /* monitor calls */
    unsigned osd_op_timeout_s;    /* each OSD read/write */
    unsigned write_retries;       /* retries of a write that timed out (0: default; ~0u: none) */
};

#define GW_STORE_DEFAULT_INFLIGHT 16u
#define GW_STORE_MAX_INFLIGHT 64u
#define GW_STORE_DEFAULT_MOUNT_TIMEOUT_S 10u
#define GW_STORE_DEFAULT_MON_OP_TIMEOUT_S 10u
#define GW_STORE_DEFAULT_OSD_OP_TIMEOUT_S 10u
#define GW_STORE_DEFAULT_WRITE_RETRIES 1u
#define GW_STORE_INDEX_SHARDS 16u     /* omap objects per VM index (Ceph warns at 200,000 keys) */
#define GW_STORE_MAX_OBJECT (128u << 20)

struct gw_store;

/* One read of a batch: the caller fills name, buf and cap; the store fills len (bytes read,
 * at most cap; an object longer than cap is cut, which the decoder reports) and rc. */
struct gw_store_read {
    const char *name;
    uint8_t *buf;
    size_t cap;
    size_t len;
    int rc;          /* 0, -ENOENT, -ETIMEDOUT, ... */
};

struct gw_store_ops {
    int (*put)(struct gw_store *s, const char *obj, const void *buf, size_t len);
    int (*wait)(struct gw_store *s);
    /* 1 present (with *size), 0 absent, -errno. */
    int (*stat)(struct gw_store *s, const char *obj, uint64_t *size);
    /* Looks up n objects at once (all in flight together): present[i] = 1, 0 or -errno. */
    int (*exists_batch)(struct gw_store *s, const char *const *names, size_t n, int *present);
    /* Reads all of obj into a new buffer (*buf, freed by the caller); -EFBIG above max. */
    int (*get)(struct gw_store *s, const char *obj, size_t max, uint8_t **buf, size_t *len);
    /* Reads n objects with up to max_inflight reads in flight; returns -errno only when the
     * store itself fails (each read has its own rc). */
    int (*get_batch)(struct gw_store *s, struct gw_store_read *rd, size_t n);
    int (*remove)(struct gw_store *s, const char *obj);
    int (*index_set)(struct gw_store *s, const char *index, const char *key, const char *val);
    int (*index_del)(struct gw_store *s, const char *index, const char *key);
    /* Calls fn for every key in index (any order); fn's non-zero return stops and is returned. */
    int (*index_list)(struct gw_store *s, const char *index,
                      int (*fn)(const char *key, const char *val, void *ctx), void *ctx);
    void (*close)(struct gw_store *s);
};

struct gw_store {
    const struct gw_store_ops *ops;
    char desc[256];          /* "dir:/path" or "rados:pool/ns" for messages */
    char err[512];           /* reason of the last failure */
    unsigned max_inflight;
    /* Writes in flight allowed now (0 or above max_inflight: max_inflight). The backup
     * throttle lowers it to what its rate needs (storage/throttle.h): every write queued in
     * the OSD beyond that only sits in front of the guests' requests there. Set and read on
     * the writing thread. */
    unsigned inflight_cap;
    uint64_t bytes_written, objects_written, bytes_read, objects_read, write_retries;
    /* Sum and count of object write latencies (queued to durable-in-the-backend), on the
     * caller's thread: the backup throttle's store signal (storage/throttle.h). */
    uint64_t write_lat_ns, write_lat_n;
    /* Test builds (GODWIT_TEST_HOOKS) only, dir store only: each put sleeps this long first
     * until test_put_delay_until_ns (CLOCK_MONOTONIC); production builds never read them. */
    uint64_t test_put_delay_ns, test_put_delay_until_ns;
};

/* Opens the store named by p->spec. Returns 0 or -errno with a reason in err. */
int gw_store_open(const struct gw_store_params *p, struct gw_store **out, char *err, size_t errlen);
void gw_store_close(struct gw_store *s);
const char *gw_store_error(const struct gw_store *s);

/* Records a reason (printf) in s->err and returns rc (for "return gw_store_fail(...)"). */
int gw_store_fail(struct gw_store *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* True when name is a safe index or object name component: [A-Za-z0-9._-], 1..100 chars,
 * not starting with '.'. Names from outside are checked with it before use. */
int gw_store_name_ok(const char *name);

/* Backends (store_dir.c, store_rados.c). */
/* A backend's own handle for the modules that go beside the ops table (listing, leases, gc):
 * the root directory fd of a dir store (-1 for another backend) and the rados_ioctx_t of a
 * rados store (NULL for another backend). The store keeps ownership. */
int gw_store_dir_fd(const struct gw_store *s);
void *gw_store_rados_ioctx(const struct gw_store *s);
/* Sets s's reason for operation what ("listing", "removing", ...) on object obj failing with
 * rc, in the words every store path uses: a RADOS op that timed out says that Ceph did not
 * answer within the store's OSD timeout; a full pool or cluster says so. Returns rc. For the
 * modules beside the ops table (listing, leases, gc), whose calls go to librados directly. */
int gw_store_fail_op(struct gw_store *s, int rc, const char *what, const char *obj);
/* Stats names[0..n) in the rados ioctx io, GW_STORE_MAX_INFLIGHT at a time: rc[i] = 1 present
 * (size[i] and version[i] set when those are not NULL), 0 missing, -errno. */
void gw_store_rados_stat_batch(void *io, const char *const *names, size_t n, int *rc, uint64_t *size,
                               uint64_t *version);
int gw_store_dir_open(const char *path, const struct gw_store_params *p, struct gw_store **out, char *err, size_t errlen);
int gw_store_rados_open(const char *pool_ns, const struct gw_store_params *p, struct gw_store **out, char *err, size_t errlen);

#endif
