/* Backup concurrency slots (see slots.h). */
#include "backup/slots.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "storage/lease.h"
#include "storage/store.h"

int gw_backup_slots_take(struct gw_store *s, const char *host, unsigned host_max, unsigned cluster_max, const char *job,
                         unsigned lease_s, struct gw_backup_slots *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!gw_store_name_ok(host) || strlen(host) > 64) { snprintf(err, errlen, "bad host name '%s'", host ? host : ""); return -EINVAL; }
    char name[112];
    snprintf(name, sizeof name, "%s.%s", GW_BACKUP_SLOTS_LEASE, host);
    /* The host's own limit first: it is the one most often full, and costs the cluster nothing. */
    int r = gw_slots_acquire(s, name, host_max, job, lease_s, true, &out->host, &out->host_slot, err, errlen);
    if (r == -EBUSY) snprintf(err, errlen, "host %s runs %u backups already (its limit)", host, host_max);
    if (r) return r;
    r = gw_slots_acquire(s, GW_BACKUP_SLOTS_LEASE, cluster_max, job, lease_s, true, &out->cluster, &out->cluster_slot,
                         err, errlen);
    if (r == -EBUSY) snprintf(err, errlen, "the cluster runs %u backups already (its limit)", cluster_max);
    if (r) { gw_lease_release(out->host); out->host = NULL; }
    return r;
}

void gw_backup_slots_release(struct gw_backup_slots *sl)
{
    gw_lease_release(sl->cluster);
    gw_lease_release(sl->host);
    sl->cluster = sl->host = NULL;
}

bool gw_backup_slots_held(const struct gw_backup_slots *sl)
{
    return gw_lease_valid(sl->host, 0) && gw_lease_valid(sl->cluster, 0);
}
