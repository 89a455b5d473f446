/* Unit tests for the chunk store's two backends against the same contract (storage/store.h):
 * put/wait/stat/get/batch reads/remove and indexes on a directory and on a real throw-away Ceph
 * cluster (scripts/ceph-cluster); then the RADOS failure bounds: a pool at its quota fails a
 * write at once with -EDQUOT, a stopped OSD fails it within the configured timeout, and the
 * same store works again once the OSD is back. */
#include "storage/gc.h"
#include "storage/lease.h"
#include "storage/store.h"
#include "storage/store_scan.h"
#include "engine/common/util.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char cluster_conf[512];

/* Starts a throw-away cluster (once per binary); false when Ceph cannot run here. */
static bool cluster(const char *store_kind, char *conf, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/ceph-cluster start --store %s 2>&1", GW_SOURCE_DIR, store_kind);
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    char line[512] = "";
    conf[0] = 0;
    while (fgets(line, sizeof line, p)) { line[strcspn(line, "\n")] = 0; snprintf(conf, cap, "%s", line); }
    int st = pclose(p);
    if (st != 0) { fprintf(stderr, "  ceph-cluster: %s\n", conf); conf[0] = 0; return false; }
    return true;
}

static void cluster_cmd(const char *verb, const char *conf, const char *extra)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/ceph-cluster %s %s %s >/dev/null 2>&1", GW_SOURCE_DIR, verb, conf, extra);
    if (system(cmd) != 0) fprintf(stderr, "  '%s' failed\n", cmd);
}

static int count_keys(const char *key, const char *val, void *ctx)
{
    (void)key;
    (void)val;
    (*(int *)ctx)++;
    return 0;
}

static void contract(struct gw_store *s)
{
    const struct gw_store_ops *o = s->ops;
    uint8_t a[5000], b[5000];
    for (size_t i = 0; i < sizeof a; i++) a[i] = (uint8_t)(i * 7);
    CHECK_EQ(o->stat(s, "c.00aa", NULL), 0);
    CHECK_EQ(o->put(s, "c.00aa", a, sizeof a), 0);
    CHECK_EQ(o->put(s, "c.00bb", a, 100), 0);
    CHECK_EQ(o->put(s, "m.vm.x", "manifest", 8), 0);
    CHECK_EQ(o->wait(s), 0);
    uint64_t sz = 0;
    CHECK_EQ(o->stat(s, "c.00aa", &sz), 1);
    CHECK_EQ(sz, sizeof a);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ(o->get(s, "m.vm.x", 100, &buf, &len), 0);
    CHECK(len == 8 && !memcmp(buf, "manifest", 8));
    free(buf);
    CHECK_EQ(o->get(s, "c.00aa", 100, &buf, &len), -EFBIG);
    CHECK_EQ(o->get(s, "m.vm.none", 100, &buf, &len), -ENOENT);
    struct gw_store_read rd[3] = {
        {.name = "c.00aa", .buf = b, .cap = sizeof b},
        {.name = "c.00ff", .buf = b, .cap = sizeof b},
        {.name = "c.00bb", .buf = b, .cap = 50},
    };
    CHECK_EQ(o->get_batch(s, rd, 3), 0);
    CHECK_EQ(rd[0].rc, 0);
    CHECK_EQ(rd[0].len, sizeof a);
    CHECK_EQ(rd[1].rc, -ENOENT);
    CHECK_EQ(rd[2].rc, 0);
    CHECK_EQ(rd[2].len, 50);   /* cut at the capacity: the decoder then reports it */
    const char *names[3] = {"c.00aa", "c.00ff", "m.vm.x"};
    int present[3] = {-1, -1, -1};
    CHECK_EQ(o->exists_batch(s, names, 3, present), 0);
    CHECK(present[0] == 1 && present[1] == 0 && present[2] == 1);
    CHECK_EQ(o->remove(s, "c.00bb"), 0);
    CHECK_EQ(o->wait(s), 0);
    CHECK_EQ(o->stat(s, "c.00bb", NULL), 0);
    /* Indexes: set, replace, delete, list. */
    CHECK_EQ(o->index_set(s, "b.vm", "id1", "v1"), 0);
    CHECK_EQ(o->index_set(s, "b.vm", "id2", "v2"), 0);
    CHECK_EQ(o->index_set(s, "b.vm", "id1", "v1b"), 0);
    int n = 0;
    CHECK_EQ(o->index_list(s, "b.vm", count_keys, &n), 0);
    CHECK_EQ(n, 2);
    CHECK_EQ(o->index_del(s, "b.vm", "id2"), 0);
    n = 0;
    CHECK_EQ(o->index_list(s, "b.vm", count_keys, &n), 0);
    CHECK_EQ(n, 1);
    n = 0;
    CHECK_EQ(o->index_list(s, "b.other", count_keys, &n), 0);
    CHECK_EQ(n, 0);
    CHECK_EQ(o->index_set(s, "../x", "k", "v"), -EINVAL);
}

GW_TEST(dir_store_contract)
{
    char dir[] = "/tmp/gwstoreXXXXXX";
    REQUIRE(mkdtemp(dir));
    char spec[64], err[256];
    snprintf(spec, sizeof spec, "dir:%s/s", dir);
    struct gw_store_params p = {.spec = spec};
    struct gw_store *s = NULL;
    REQUIRE(gw_store_open(&p, &s, err, sizeof err) == 0);
    contract(s);
    CHECK_EQ(s->ops->put(s, "../escape", "x", 1), -EINVAL);
    /* An index file left without its last newline, or with a NUL in a line (damaged by hand
     * or by a disk): updates keep every good line and the listing sees them all. */
    char path[128];
    snprintf(path, sizeof path, "%s/s/index/b.cut", dir);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("k1\tv1\nk2\tv2", f);
    fclose(f);
    CHECK_EQ(s->ops->index_set(s, "b.cut", "k3", "v3"), 0);
    CHECK_EQ(s->ops->index_set(s, "b.cut", "k4", "v4"), 0);
    int n = 0;
    CHECK_EQ(s->ops->index_list(s, "b.cut", count_keys, &n), 0);
    CHECK_EQ(n, 4);
    f = fopen(path, "a");
    REQUIRE(f != NULL);
    fwrite("bad\0line\n", 1, 9, f);
    fclose(f);
    CHECK_EQ(s->ops->index_set(s, "b.cut", "k5", "v5"), 0);
    n = 0;
    CHECK_EQ(s->ops->index_list(s, "b.cut", count_keys, &n), 0);
    CHECK_EQ(n, 5);
    /* What others planted in the store: a link out of it and a FIFO are not objects. The
     * reads fail at once (a FIFO would block a reader for ever; alarm guards the test). */
    char planted[160];
    snprintf(planted, sizeof planted, "%s/s/objects/m.link", dir);
    REQUIRE(symlink("/etc/hostname", planted) == 0);
    snprintf(planted, sizeof planted, "%s/s/chunks/0f", dir);
    mkdir(planted, 0755);
    snprintf(planted, sizeof planted, "%s/s/chunks/0f/c.0ff1f0", dir);
    REQUIRE(mkfifo(planted, 0600) == 0);
    alarm(10);
    uint8_t *got = NULL;
    size_t glen = 0;
    CHECK(s->ops->get(s, "m.link", 1 << 20, &got, &glen) < 0);
    CHECK(s->ops->get(s, "c.0ff1f0", 1 << 20, &got, &glen) < 0);
    uint8_t rbuf[64];
    struct gw_store_read rd[2] = {{.name = "m.link", .buf = rbuf, .cap = sizeof rbuf},
                                  {.name = "c.0ff1f0", .buf = rbuf, .cap = sizeof rbuf}};
    CHECK_EQ(s->ops->get_batch(s, rd, 2), 0);
    CHECK(rd[0].rc < 0 && rd[1].rc < 0);
    alarm(0);
    CHECK_EQ(s->ops->stat(s, "m.link", NULL), 0);     /* absent: a backup writes it anew */
    CHECK_EQ(s->ops->put(s, "m.link", "mine", 4), 0);
    CHECK_EQ(s->ops->wait(s), 0);
    CHECK_EQ(s->ops->get(s, "m.link", 100, &got, &glen), 0);
    CHECK(glen == 4 && !memcmp(got, "mine", 4));
    free(got);
    gw_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
}

GW_TEST(bad_specs_refused)
{
    char err[256];
    struct gw_store *s;
    struct gw_store_params p = {.spec = "ftp:x"};
    CHECK_EQ(gw_store_open(&p, &s, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "dir:PATH") != NULL);
    p.spec = "rados:";
    CHECK_EQ(gw_store_open(&p, &s, err, sizeof err), -EINVAL);
    p.spec = "dir:/tmp/x";
    p.max_inflight = 1000;
    CHECK_EQ(gw_store_open(&p, &s, err, sizeof err), -EINVAL);
}

GW_TEST(rados_store_contract_and_full_pool)
{
    if (!cluster("memstore", cluster_conf, sizeof cluster_conf)) { gw_test_skip("no Ceph cluster can start here"); return; }
    char err[512];
    struct gw_store_params p = {.spec = "rados:godwit/t1", .ceph_conf = cluster_conf, .osd_op_timeout_s = 5};
    struct gw_store *s = NULL;
    int r = gw_store_open(&p, &s, err, sizeof err);
    if (r) fprintf(stderr, "  %s\n", err);
    REQUIRE(r == 0);
    contract(s);
    /* An index shard full of keys not Godwit's (longer than its keys): the listing pages past
     * them to the one it wrote, instead of asking for the same page forever. */
    {
        rados_ioctx_t io = gw_store_rados_ioctx(s);
        enum { N = 1001 };
        static char keys[N][160];
        const char *kp[N], *vp[N];
        size_t kl[N], vl[N];
        for (int i = 0; i < N; i++) {
            snprintf(keys[i], sizeof keys[i], "%0150d", i);
            kp[i] = keys[i];
            vp[i] = "x";
            kl[i] = strlen(keys[i]);
            vl[i] = 1;
        }
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_omap_set2(op, kp, vp, kl, vl, N);
        CHECK_EQ(rados_write_op_operate(op, io, "i.b.vmx.00", NULL, 0), 0);
        rados_release_write_op(op);
        CHECK_EQ(s->ops->index_set(s, "b.vmx", "zz-ours", "v"), 0);
        int n = 0;
        uint64_t t0 = gw_now_ns();
        CHECK_EQ(s->ops->index_list(s, "b.vmx", count_keys, &n), 0);
        CHECK_EQ(n, 1);
        CHECK((gw_now_ns() - t0) / 1e9 < 10);
    }
    /* A missing pool is a clear error at open. */
    struct gw_store *s2 = NULL;
    p.spec = "rados:nosuchpool";
    CHECK_EQ(gw_store_open(&p, &s2, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "no such pool") != NULL);
    /* A full pool: writes fail at once, not after a timeout. Pool quotas need a ceph-mgr
     * (it reports pool usage to the monitor), which this cluster does not run; a full OSD
     * flags the pool full the same way, so fill the OSD past a tiny full ratio. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ceph -c %s osd set-nearfull-ratio 0.0005 >/dev/null 2>&1 && ceph -c %s osd set-backfillfull-ratio 0.0008 >/dev/null 2>&1 && "
             "ceph -c %s osd set-full-ratio 0.001 >/dev/null 2>&1", cluster_conf, cluster_conf, cluster_conf);
    CHECK_EQ(system(cmd), 0);
    static uint8_t blob[1 << 20];
    memset(blob, 3, sizeof blob);
    uint64_t t0 = gw_now_ns();
    int got = 0;
    for (int i = 0; i < 300 && got != -ENOSPC && got != -EDQUOT; i++) {
        char name[32];
        snprintf(name, sizeof name, "c.q%d", i);
        s->ops->put(s, name, blob, sizeof blob);
        got = s->ops->wait(s);
        if (i > 8 && !got) usleep(50000);
    }
    CHECK(got == -ENOSPC || got == -EDQUOT);
    CHECK(strstr(gw_store_error(s), "full") != NULL);
    uint64_t t1 = gw_now_ns();
    s->ops->put(s, "c.after", blob, 4096);
    int r2 = s->ops->wait(s);
    CHECK(r2 == -ENOSPC || r2 == -EDQUOT);
    double ms = (gw_now_ns() - t1) / 1e6;
    printf("  pool full after %.0f ms; a write to the full pool failed in %.1f ms: %s\n", (t1 - t0) / 1e6, ms,
           gw_store_error(s));
    CHECK(ms < 1000);
    gw_store_close(s);
    cluster_cmd("stop", cluster_conf, "");
}

static int count_object(const char *name, void *ctx)
{
    (void)name;
    (*(int *)ctx)++;
    return 0;
}

GW_TEST(rados_osd_down_bounded_then_recovers)
{
    char conf[512];
    if (!cluster("bluestore", conf, sizeof conf)) { gw_test_skip("no Ceph cluster can start here"); return; }
    char err[512];
    struct gw_store_params p = {.spec = "rados:godwit", .ceph_conf = conf, .osd_op_timeout_s = 2, .write_retries = 1};
    struct gw_store *s = NULL;
    REQUIRE(gw_store_open(&p, &s, err, sizeof err) == 0);
    uint8_t blob[65536] = {2};
    CHECK_EQ(s->ops->put(s, "c.before", blob, sizeof blob), 0);
    CHECK_EQ(s->ops->wait(s), 0);
    /* Two leases taken before the outage: one with time to spare, one of 3 s. */
    struct gw_lease *kept = NULL, *brief = NULL;
    CHECK_EQ(gw_lease_acquire(s, "kept", "c0", true, 60, false, &kept, err, sizeof err), 0);
    CHECK_EQ(gw_lease_acquire(s, "brief", "c0", true, 3, false, &brief, err, sizeof err), 0);
    cluster_cmd("osd-stop", conf, "--kill");
    uint64_t t0 = gw_now_ns();
    CHECK_EQ(s->ops->put(s, "c.during", blob, sizeof blob), 0);
    CHECK_EQ(s->ops->wait(s), -ETIMEDOUT);
    double secs = (gw_now_ns() - t0) / 1e9;
    printf("  write to a dead OSD failed after %.1f s (timeout 2 s, 1 retry): %s\n", secs, gw_store_error(s));
    CHECK(secs >= 1.5 && secs < 8);
    CHECK(strstr(gw_store_error(s), "did not answer") != NULL);
    CHECK_EQ(s->write_retries, 1);
    /* The paths beside the ops table (listing, leases, the collector) call librados directly:
     * each fails within one timeout too, in the same words. */
    t0 = gw_now_ns();
    CHECK_EQ(gw_store_scan(s, 0, count_object, NULL, &(int){0}), -ETIMEDOUT);
    secs = (gw_now_ns() - t0) / 1e9;
    printf("  listing: %.1f s: %s\n", secs, gw_store_error(s));
    CHECK(secs < 5 && strstr(gw_store_error(s), "did not answer within 2 s listing") != NULL);
    struct gw_lease *l = NULL;
    t0 = gw_now_ns();
    CHECK_EQ(gw_lease_acquire(s, "outage", "c1", true, 30, false, &l, err, sizeof err), -ETIMEDOUT);
    secs = (gw_now_ns() - t0) / 1e9;
    printf("  lease: %.1f s: %s\n", secs, err);
    CHECK(secs < 5 && strstr(err, "did not answer within 2 s") != NULL && strstr(err, "lease outage") != NULL);
    CHECK(l == NULL);
    struct gw_gc_stats st;
    t0 = gw_now_ns();
    CHECK_EQ(gw_gc_run(s, &(struct gw_gc_params){0}, &st, err, sizeof err), -ETIMEDOUT);
    secs = (gw_now_ns() - t0) / 1e9;
    printf("  gc: %.1f s: %s\n", secs, err);
    CHECK(secs < 5 && strstr(err, "did not answer within 2 s") != NULL);
    /* A renewal that times out leaves a lease with time left held; the 3 s one has run out
     * by now (the outage's checks above took longer), so its failed renewal loses it, and
     * every later renewal fails at once. */
    CHECK_EQ(gw_lease_renew(kept), -ETIMEDOUT);
    CHECK(gw_lease_valid(kept, 0));
    CHECK(gw_lease_renew(brief) < 0);
    CHECK(!gw_lease_valid(brief, 0));
    t0 = gw_now_ns();
    CHECK(gw_lease_renew(brief) < 0);
    CHECK((gw_now_ns() - t0) / 1e9 < 0.5);
    cluster_cmd("osd-start", conf, "");
    /* Once the OSD is back the same handle works again (objecter_timeout below the op timeout). */
    int r = -1;
    uint64_t t1 = gw_now_ns();
    for (int i = 0; i < 30 && r; i++) {
        s->ops->put(s, "c.during", blob, sizeof blob);
        r = s->ops->wait(s);
    }
    printf("  writes succeed again %.1f s after the OSD restarted\n", (gw_now_ns() - t1) / 1e9);
    CHECK_EQ(r, 0);
    /* The lease that outlived the outage renews again, and nobody else can take it. */
    CHECK_EQ(gw_lease_renew(kept), 0);
    CHECK(gw_lease_valid(kept, 1));
    struct gw_lease *other = NULL;
    CHECK_EQ(gw_lease_acquire(s, "kept", "c9", true, 30, false, &other, err, sizeof err), -EBUSY);
    gw_lease_release(kept);
    gw_lease_release(brief);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ(s->ops->get(s, "c.before", sizeof blob, &buf, &len), 0);
    CHECK_EQ(len, sizeof blob);
    free(buf);
    gw_store_close(s);
    cluster_cmd("stop", conf, "");
}
