/* The lease object the backends share (lease.c, lease_dir.c, lease_rados.c). */
#ifndef GW_STORAGE_LEASE_INT_H
#define GW_STORAGE_LEASE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "storage/lease.h"

struct gw_lease {
    struct gw_store *store;
    const struct gw_lease_backend *be;
    char name[112], cookie[112];
    bool exclusive;
    unsigned duration_s;
    int lock_fd, holder_fd;           /* dir */
    atomic_uint_fast64_t renewed_ns;  /* CLOCK_MONOTONIC of the last successful (re)acquire */
    atomic_int lost;                  /* a renewal failed: -errno */
    pthread_t keeper;
    bool has_keeper;
    pthread_mutex_t mu;               /* stop flag and its condition */
    pthread_cond_t cv;
    bool stop;
};

#endif
