/* A daemon with nothing but a cluster registry, for the registry's unit tests: enough for
 * gw_cluster_init, gw_cluster_hosts and gw_cluster_free (no API, no VMs, no database). */
#ifndef GW_TEST_CLUSTER_DAEMON_H
#define GW_TEST_CLUSTER_DAEMON_H

#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A daemon named hostname on registry spec (dir:PATH or rados:POOL/NS) with its state in
 * state_dir; ceph_conf for a rados registry (NULL otherwise). NULL (reason printed) on error. */
static inline struct gw_daemon *cluster_daemon_new(const char *hostname, const char *spec, const char *state_dir,
                                                   const char *ceph_conf)
{
    struct gw_daemon *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    snprintf(d->cfg.hostname, sizeof d->cfg.hostname, "%s", hostname);
    snprintf(d->cfg.cluster, sizeof d->cfg.cluster, "%s", spec);
    snprintf(d->cfg.state_dir, sizeof d->cfg.state_dir, "%s", state_dir);
    if (ceph_conf) snprintf(d->cfg.cluster_ceph_conf, sizeof d->cfg.cluster_ceph_conf, "%s", ceph_conf);
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->cond, NULL);
    char err[512];
    if (gw_cluster_init(d, err, sizeof err)) {
        fprintf(stderr, "  %s\n", err);
        gw_cluster_free(d);
        free(d);
        return NULL;
    }
    return d;
}

static inline void cluster_daemon_free(struct gw_daemon *d)
{
    if (!d) return;
    gw_cluster_free(d);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* Whether a listing of d's registry holds host name (-1: the listing failed); *down its
 * liveness when it does. */
static inline int cluster_daemon_lists(struct gw_daemon *d, const char *name, bool *down)
{
    Godwit__V1__ClusterHost **hosts;
    size_t n;
    if (gw_cluster_hosts(d, &hosts, &n)) return -1;
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(hosts[i]->name, name)) { found = 1; if (down) *down = hosts[i]->down; }
    gw_cluster_hosts_free(hosts, n);
    return found;
}

#endif
