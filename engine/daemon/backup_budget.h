/* The cluster-wide backup budget of a target (config.h: [backup_target NAME] cluster_rate),
 * kept in the target's own store: no extra service (docs/backups.md "Throttling").
 *
 * Every host that runs backups into the target holds a shared lease "backup-budget" in its
 * store (storage/lease.h; cookie: the host name) while it does, and its share is the budget
 * divided by the lease's live holders. A keeper thread looks every second: when a host starts
 * its first backup into the target or ends its last, every host's share follows within a
 * second; a crashed host stops renewing and its share expires with its lease (rados: after
 * BUDGET_LEASE_S; dir: at once, the kernel drops the flock). This host's share is a token
 * bucket in a file of the state directory (backup-<target>.cluster.bucket) that every runner
 * backing up into the target maps beside the host's bucket (storage/throttle.h), and whose
 * rate the keeper sets: all of this host's backups into the target share its share. */
#ifndef GW_DAEMON_BACKUP_BUDGET_H
#define GW_DAEMON_BACKUP_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "engine/daemon/config.h"

struct gw_daemon;
struct gw_budget;

#define GW_BUDGET_PATH_MAX (GW_CFG_STR + GW_CFG_TARGET_NAME_MAX + 32)

int gw_budget_start(struct gw_daemon *d);
/* After the last backup job has ended: releases every lease and the thread. */
void gw_budget_stop(struct gw_daemon *d);

/* A backup into t begins on this host. t without a cluster_rate: path "" and *rate 0, 0. Else
 * joins t's budget (the lease taken by the first backup into t) and gives this host's bucket
 * file in path (cap >= GW_BUDGET_PATH_MAX) and its share now in *rate: 0, or -errno with the
 * reason in err (the store cannot be reached: the backup could not write either). Each
 * successful join with a path is ended by one gw_budget_leave. */
int gw_budget_join(struct gw_daemon *d, const struct gw_backup_target_cfg *t, char *path, size_t cap, uint64_t *rate,
                   char *err, size_t errlen);
void gw_budget_leave(struct gw_daemon *d, const struct gw_backup_target_cfg *t);
/* One host's share of a cluster rate held by holders hosts: at least rate over
 * GW_CLUSTER_MAX_HOSTS (holders past that are not hosts), and never 0 (which means
 * "unlimited" to a bucket). */
uint64_t gw_budget_share(uint64_t rate, unsigned holders);

#endif
