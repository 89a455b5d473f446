/* A throw-away Ceph cluster for unit tests (scripts/ceph-cluster), started at most once per
 * test binary and stopped when it exits. */
#ifndef GW_TEST_CEPH_H
#define GW_TEST_CEPH_H

#include <stdbool.h>

/* The ceph.conf of a memstore cluster, or NULL (with the reason printed) when none can start. */
const char *gw_test_ceph_conf(const char *source_dir);

#endif
