/* How many backups run at once: at most cluster_max across every host sharing the store and
 * at most host_max on this host, as leases in the store itself (storage/lease.h): a crashed
 * holder's slots come free when its lease runs out (rados) or at once (dir). The daemon's
 * scheduler takes slots before starting a backup and gives them back when it ends. */
#ifndef GW_BACKUP_SLOTS_H
#define GW_BACKUP_SLOTS_H

#include <stdbool.h>
#include <stddef.h>

struct gw_store;
struct gw_lease;

#define GW_BACKUP_SLOTS_LEASE "backup-slots"

struct gw_backup_slots {
    struct gw_lease *host, *cluster;
    unsigned host_slot, cluster_slot;
};

/* Takes a slot of this host (host: a store-safe name) and one of the cluster for job (a
 * store-safe cookie, unique per job), renewed by keeper threads until released. -EBUSY (with
 * which limit was reached in err) when either is full; nothing is held then. */
int gw_backup_slots_take(struct gw_store *s, const char *host, unsigned host_max, unsigned cluster_max, const char *job,
                         unsigned lease_s, struct gw_backup_slots *out, char *err, size_t errlen);
void gw_backup_slots_release(struct gw_backup_slots *sl);
/* Whether both slots are still held (their leases valid: storage/lease.h). */
bool gw_backup_slots_held(const struct gw_backup_slots *sl);

#endif
