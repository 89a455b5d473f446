/* Leases in the chunk store: named locks that a crashed holder cannot keep, and counting
 * semaphores made of them. No extra service: the store that holds the backups holds the locks.
 *
 *   rados: Ceph's object locks (cls_lock) on object "l.<name>" with a duration: a holder that
 *          stops renewing (killed, hung, cut off) loses the lease when the duration runs out;
 *          the OSD itself trims expired holders. Renew with gw_lease_renew (or let the keeper
 *          thread do it every duration/3).
 *   dir:   flock(2) on files under PATH/leases/: the kernel drops the lock the moment its
 *          holder dies, so a dir lease never needs renewing and has no duration.
 *
 * Shared leases may have many holders at once, each named by its cookie ([A-Za-z0-9._-],
 * 1..100 chars, unique per holder); an exclusive lease has one. gw_lease_holders lists the
 * cookies of the live holders: this is how garbage collection sees the backups in progress.
 *
 * A counting semaphore of M slots is M exclusive leases "<name>.<i>": gw_slots_acquire takes
 * the first free one. Nothing is queued: -EBUSY when all M are held (the caller retries). */
#ifndef GW_STORAGE_LEASE_H
#define GW_STORAGE_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_store;
struct gw_lease;

#define GW_LEASE_DEFAULT_S 60u
#define GW_LEASE_MIN_S 2u
#define GW_LEASE_MAX_S 86400u
#define GW_SLOTS_MAX 1024u

/* Takes lease name (a store name, see gw_store_name_ok) for cookie. duration_s: how long the
 * lease outlives its last renewal (rados; 0 = GW_LEASE_DEFAULT_S); keeper: renew it from a
 * thread of its own until released. Returns 0, -EBUSY when held by another (exclusive) or held
 * exclusively (shared), or -errno, with a reason in err. */
int gw_lease_acquire(struct gw_store *s, const char *name, const char *cookie, bool exclusive, unsigned duration_s,
                     bool keeper, struct gw_lease **out, char *err, size_t errlen);
/* Renews the lease now. 0, or -errno when the renewal failed. The lease is lost (and every
 * later renewal fails at once) when the store refused it (expired and taken, or broken) or
 * when it failed after the duration had passed since the last success; a renewal that only
 * timed out before that leaves it held, and gw_lease_valid counts from the last success. */
int gw_lease_renew(struct gw_lease *l);
/* True while the lease is held: it is not lost and (rados) the last success is less than
 * duration - margin_s ago. What a holder checks before an action the lease protects. */
bool gw_lease_valid(struct gw_lease *l, unsigned margin_s);
/* Releases and frees (NULL is fine). */
void gw_lease_release(struct gw_lease *l);

/* Calls fn for each live holder's cookie; fn's non-zero return stops and is returned. A lease
 * nobody holds has no holders (0). -errno with the reason in the store's error. */
int gw_lease_holders(struct gw_store *s, const char *name, int (*fn)(const char *cookie, void *ctx), void *ctx);

/* One of slots "<name>.0" .. "<name>.<m-1>" (m <= GW_SLOTS_MAX), exclusively, for cookie.
 * *slot gets its number. -EBUSY when all are held. */
int gw_slots_acquire(struct gw_store *s, const char *name, unsigned m, const char *cookie, unsigned duration_s,
                     bool keeper, struct gw_lease **out, unsigned *slot, char *err, size_t errlen);

/* Backend entry points (lease_dir.c, lease_rados.c); the common part is lease.c. */
struct gw_lease_backend {
    int (*acquire)(struct gw_lease *l, char *err, size_t errlen);
    int (*renew)(struct gw_lease *l);
    void (*release)(struct gw_lease *l);
    int (*holders)(struct gw_store *s, const char *name, int (*fn)(const char *, void *), void *ctx);
};
extern const struct gw_lease_backend gw_lease_dir_backend, gw_lease_rados_backend;

#endif
