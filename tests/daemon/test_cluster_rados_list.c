/* Unit tests for the cluster registry on a throw-away Ceph cluster (engine/daemon/
 * cluster_rados.c): keys on the registry's omap object that no host wrote (too long, with a
 * NUL, valid names with junk values, a flood of them) never hide the hosts that did. Each test
 * has its own namespace, so its own registry object. */
#include "engine/daemon/cluster.h"
#include "storage/rados_conn.h"
#include "tests/daemon/cluster_daemon.h"
#include "tests/lib/gw_ceph.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REGISTRY_OBJECT "godwit.cluster.hosts"   /* cluster_rados.c's */

static char state_dir[64];

static void drop_state_dir(void)
{
    rmdir(state_dir);   /* empty: the host state is only read */
}

/* A daemon called self on the registry in namespace ns (published: host self); NULL and the
 * test skipped when no Ceph cluster can start. */
static struct gw_daemon *open_registry(const char *ns, const char **conf)
{
    *conf = gw_test_ceph_conf(GW_SOURCE_DIR);
    if (!*conf) { gw_test_skip("no Ceph cluster"); return NULL; }
    if (!state_dir[0]) {
        snprintf(state_dir, sizeof state_dir, "/tmp/gw-cradl-XXXXXX");
        if (!mkdtemp(state_dir)) return NULL;
        atexit(drop_state_dir);
    }
    char spec[128];
    snprintf(spec, sizeof spec, "rados:godwit/%s%d", ns, (int)getpid());
    return cluster_daemon_new("self", spec, state_dir, *conf);
}

/* Sets n keys (klen bytes each, any bytes) with values on the registry object of ns. */
static int set_keys(const char *conf, const char *ns, const char *const *keys, const size_t *klen,
                    const char *const *vals, const size_t *vlen, size_t n)
{
    struct gw_rados_conn p = {.desc = "test", .ceph_conf = conf, .mount_timeout_s = 10, .mon_op_timeout_s = 10,
                              .osd_op_timeout_s = 10};
    char err[256], nsp[64];
    rados_t h;
    int r = gw_rados_connect(&p, &h, err, sizeof err);
    if (r) { fprintf(stderr, "  %s\n", err); return r; }
    rados_ioctx_t io;
    r = rados_ioctx_create(h, "godwit", &io);
    if (!r) {
        snprintf(nsp, sizeof nsp, "%s%d", ns, (int)getpid());
        rados_ioctx_set_namespace(io, nsp);
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_omap_set2(op, keys, vals, klen, vlen, n);
        r = rados_write_op_operate(op, io, REGISTRY_OBJECT, NULL, 0);
        rados_release_write_op(op);
        rados_ioctx_destroy(io);
    }
    rados_shutdown(h);
    return r;
}

/* Publishes a record of host name (its heartbeat now) on d's registry, as that host would. */
static int publish_other(struct gw_daemon *d, const char *name)
{
    Godwit__V1__ClusterHost h = GODWIT__V1__CLUSTER_HOST__INIT;
    h.name = (char *)name;
    h.api_address = (char *)"127.0.0.1:1";
    h.heartbeat_unix_ms = gw_unix_ms();
    size_t len = godwit__v1__cluster_host__get_packed_size(&h);
    uint8_t *buf = malloc(len);
    if (!buf) return -ENOMEM;
    godwit__v1__cluster_host__pack(&h, buf);
    int r = d->cluster->ops->publish(d->cluster->be, name, buf, len, false);
    free(buf);
    return r;
}

/* A 300-byte key sorting before host b: the listing stopped at it (more = 0) and hid b. */
GW_TEST(rados_list_past_long_key)
{
    const char *conf;
    struct gw_daemon *d = open_registry("long", &conf);
    if (!d) return;
    REQUIRE(publish_other(d, "b") == 0);
    char key[300];
    memset(key, 'a', sizeof key);
    const char *keys[] = {key}, *vals[] = {"x"};
    size_t klen[] = {sizeof key}, vlen[] = {1};
    REQUIRE(set_keys(conf, "long", keys, klen, vals, vlen, 1) == 0);
    CHECK_EQ(cluster_daemon_lists(d, "b", NULL), 1);
    cluster_daemon_free(d);
}

/* Keys with a NUL (one at the start, one after a host's name) sorting before host b: the
 * listing resumes past them. */
GW_TEST(rados_list_past_nul_keys)
{
    const char *conf;
    struct gw_daemon *d = open_registry("nul", &conf);
    if (!d) return;
    REQUIRE(publish_other(d, "a") == 0);
    REQUIRE(publish_other(d, "b") == 0);
    const char *keys[] = {"\0evil", "a\0evil", "a\0\xff", "a\x01"}, *vals[] = {"x", "x", "x", "x"};
    size_t klen[] = {5, 6, 3, 2}, vlen[] = {1, 1, 1, 1};
    REQUIRE(set_keys(conf, "nul", keys, klen, vals, vlen, 4) == 0);
    CHECK_EQ(cluster_daemon_lists(d, "a", NULL), 1);
    CHECK_EQ(cluster_daemon_lists(d, "b", NULL), 1);
    cluster_daemon_free(d);
}

/* 300 keys that are valid host names with values that are no record, sorting before host b:
 * they counted toward the 256-host cap and hid b. */
GW_TEST(rados_list_junk_values_do_not_count)
{
    const char *conf;
    struct gw_daemon *d = open_registry("junk", &conf);
    if (!d) return;
    REQUIRE(publish_other(d, "b") == 0);
    enum { N = 300 };
    static char names[N][16];
    const char *keys[N], *vals[N];
    size_t klen[N], vlen[N];
    for (int i = 0; i < N; i++) {
        klen[i] = (size_t)snprintf(names[i], sizeof names[i], "a-junk-%03d", i);
        keys[i] = names[i];
        vals[i] = "\xff\xff\xff";   /* no protobuf message */
        vlen[i] = 3;
    }
    REQUIRE(set_keys(conf, "junk", keys, klen, vals, vlen, N) == 0);
    CHECK_EQ(cluster_daemon_lists(d, "b", NULL), 1);
    cluster_daemon_free(d);
}

/* A flood of keys that are no host name: a listing reads a bounded number of keys (and says
 * so in the log) instead of all of them; hosts before the flood are still listed. */
GW_TEST(rados_list_bounded_by_keys)
{
    const char *conf;
    struct gw_daemon *d = open_registry("flood", &conf);
    if (!d) return;
    REQUIRE(publish_other(d, "b") == 0);
    REQUIRE(publish_other(d, "zzz") == 0);
    enum { N = 5000 };
    static char names[N][16];
    static const char *keys[N], *vals[N];
    static size_t klen[N], vlen[N];
    for (int i = 0; i < N; i++) {
        klen[i] = (size_t)snprintf(names[i], sizeof names[i], "y junk %04d", i);   /* a space: no name */
        keys[i] = names[i];
        vals[i] = "x";
        vlen[i] = 1;
    }
    REQUIRE(set_keys(conf, "flood", keys, klen, vals, vlen, N) == 0);
    CHECK_EQ(cluster_daemon_lists(d, "b", NULL), 1);
    CHECK_EQ(cluster_daemon_lists(d, "zzz", NULL), 0);   /* past the bound */
    cluster_daemon_free(d);
}
