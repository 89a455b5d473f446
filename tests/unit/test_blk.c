/* Unit tests for the block backends (engine/vm/blk_backend.h): hostile RBD specs refused
 * with a reason; the raw-file backend's bounds; and the RBD backend against a real
 * throw-away Ceph cluster (scripts/ceph-cluster): a batch of concurrent writes and reads
 * round-trips, requests past the end are refused, one writer at a time (a second handle can
 * neither take the lock nor write), the lock hands over (the old holder cannot write after
 * it let go, the new one reads what the old one wrote), an image without the exclusive-lock
 * feature gets it, and snapshots keep their point in time with a diff that names the
 * changed extents only. */
#include "engine/vm/blk_backend.h"
#include "engine/vm/blk_rbd.h"
#include "engine/common/util.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char conf[512];

static void cluster_stop(void);

/* Starts one throw-away cluster for the whole binary (stopped at exit). */
static bool cluster_start(void)
{
    if (conf[0]) return true;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/ceph-cluster start 2>&1", GW_SOURCE_DIR);
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    char line[512] = "";
    while (fgets(line, sizeof line, p)) { line[strcspn(line, "\n")] = 0; snprintf(conf, sizeof conf, "%s", line); }
    if (pclose(p) != 0) { fprintf(stderr, "  ceph-cluster: %s\n", conf); conf[0] = 0; return false; }
    atexit(cluster_stop);
    return true;
}

static void cluster_stop(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/ceph-cluster stop %s >/dev/null 2>&1", GW_SOURCE_DIR, conf);
    if (conf[0] && system(cmd) != 0) fprintf(stderr, "  '%s' failed\n", cmd);
    conf[0] = 0;
}

static void spec(char *out, size_t cap, const char *image)
{
    snprintf(out, cap, "rbd:godwit/%s:conf=%s", image, conf);
}

GW_TEST(hostile_rbd_specs_refused)
{
    struct gw_rbd_spec s;
    char err[256];
    static const char *bad[] = {
        "rbd:", "rbd:pool", "rbd:/img", "rbd:pool/", "rbd:pool/img/x", "rbd:po ol/img", "rbd:pool/.hidden",
        "rbd:pool/img@snap", "rbd:pool/img:conf=relative", "rbd:pool/img:conf=", "rbd:pool/img:bogus=1",
        "rbd:pool/img:id=a/b", "rbd:pool/img:", "rbd:pool/img:keyring", "file:/x",
        "rbd:pool/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        if (gw_rbd_spec_parse(bad[i], &s, err, sizeof err) != -EINVAL) { fprintf(stderr, "  accepted: %s\n", bad[i]); CHECK(0); }
        CHECK(err[0] != 0);
    }
    CHECK_EQ(gw_rbd_spec_parse("rbd:vms/web-1.disk:conf=/etc/ceph/c.conf:id=godwit:keyring=/k", &s, err, sizeof err), 0);
    CHECK(!strcmp(s.pool, "vms") && !strcmp(s.image, "web-1.disk") && !strcmp(s.conf, "/etc/ceph/c.conf"));
    CHECK(!strcmp(s.id, "godwit") && !strcmp(s.keyring, "/k"));
    CHECK(!gw_rbd_snap_name_ok("a/b") && !gw_rbd_snap_name_ok("") && gw_rbd_snap_name_ok("godwit-1"));
}

GW_TEST(file_backend_bounds)
{
    char path[] = "/tmp/gw-test-blk-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, 64 * 512) == 0);
    close(fd);
    struct gw_blk *b;
    char err[256];
    REQUIRE(gw_blk_open(path, false, &b, err, sizeof err) == 0);
    CHECK_EQ(b->size, 64 * 512);
    uint8_t buf[1024] = {1, 2, 3};
    CHECK_EQ(gw_blk_rw(b, true, buf, 1024, 0), 0);
    CHECK_EQ(gw_blk_rw(b, true, buf, 1024, 63 * 512), -ERANGE);
    CHECK_EQ(gw_blk_rw(b, false, buf, 512, UINT64_MAX - 511), -ERANGE);
    CHECK_EQ(gw_blk_rw(b, false, buf, 100, 0), -ERANGE);
    gw_blk_close(b);
    unlink(path);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 13 + seed * 101 + (i >> 9));
}

GW_TEST(rbd_io_lock_and_handover)
{
    if (!cluster_start()) { gw_test_skip("no Ceph cluster can start here"); return; }
    char sp[768], err[512];
    spec(sp, sizeof sp, "t1");
    REQUIRE(gw_blk_rbd_create(sp, 16 << 20, err, sizeof err) == 0);
    CHECK_EQ(gw_blk_rbd_create(sp, 16 << 20, err, sizeof err), -EEXIST);
    struct gw_blk *a = NULL, *b = NULL;
    REQUIRE(gw_blk_open(sp, false, &a, err, sizeof err) == 0);
    REQUIRE(gw_blk_open(sp, false, &b, err, sizeof err) == 0);
    CHECK_EQ(a->size, 16 << 20);
    /* Without the lock, nothing is written (a destination before GO). */
    uint8_t x[4096];
    fill(x, sizeof x, 9);
    CHECK_EQ(gw_blk_rw(a, true, x, sizeof x, 0), -EROFS);
    CHECK_EQ(a->ops->lock(a, true), 0);
    CHECK_EQ(b->ops->lock(b, true), -EAGAIN);
    CHECK_EQ(gw_blk_rw(b, true, x, sizeof x, 0), -EROFS);

    /* A batch of 8 writes of 64 KiB, each from two buffers, run together; then read back. */
    enum { N = 8, LEN = 64 << 10 };
    uint8_t *w = malloc(N * LEN), *r = calloc(N, LEN);
    struct iovec wiov[N][2], riov[N];
    struct gw_blk_io ios[N];
    for (int i = 0; i < N; i++) {
        fill(w + i * LEN, LEN, (unsigned)i);
        wiov[i][0] = (struct iovec){w + i * LEN, 4096};
        wiov[i][1] = (struct iovec){w + i * LEN + 4096, LEN - 4096};
        ios[i] = (struct gw_blk_io){.write = true, .off = (uint64_t)i * 1048576, .len = LEN, .iov = wiov[i], .niov = 2};
    }
    CHECK_EQ(a->ops->submit(a, ios, N), 0);
    for (int i = 0; i < N; i++) CHECK_EQ(ios[i].rc, 0);
    for (int i = 0; i < N; i++) {
        riov[i] = (struct iovec){r + i * LEN, LEN};
        ios[i] = (struct gw_blk_io){.write = false, .off = (uint64_t)i * 1048576, .len = LEN, .iov = &riov[i], .niov = 1};
    }
    CHECK_EQ(a->ops->submit(a, ios, N), 0);
    for (int i = 0; i < N; i++) CHECK_EQ(ios[i].rc, 0);
    CHECK(memcmp(w, r, N * LEN) == 0);
    /* Past the end: refused before librbd sees it. */
    CHECK_EQ(gw_blk_rw(a, false, x, 4096, (16 << 20) - 512), -ERANGE);
    CHECK_EQ(gw_blk_rw(a, true, x, 512, 16 << 20), -ERANGE);

    /* Hand-over: a lets go, b takes it; a cannot write any more, b reads a's data. */
    CHECK_EQ(a->ops->lock(a, false), 0);
    CHECK_EQ(b->ops->lock(b, true), 0);
    CHECK_EQ(gw_blk_rw(a, true, x, sizeof x, 0), -EROFS);
    CHECK_EQ(a->ops->lock(a, true), -EAGAIN);
    memset(r, 0, LEN);
    CHECK_EQ(gw_blk_rw(b, false, r, LEN, 3 * 1048576), 0);
    CHECK(memcmp(r, w + 3 * LEN, LEN) == 0);
    CHECK_EQ(gw_blk_rw(b, true, x, sizeof x, 0), 0);
    CHECK_EQ(b->ops->flush(b), 0);
    gw_blk_close(a);
    gw_blk_close(b);
    free(w);
    free(r);
}

static int count_diff(uint64_t off, uint64_t len, bool exists, void *ctx)
{
    uint64_t *c = ctx;
    (void)exists;
    c[0]++;
    c[1] += len;
    if (off <= 5ull << 20 && 5ull << 20 < off + len) c[2] = 1;   /* covers the one changed block */
    return 0;
}

GW_TEST(rbd_snapshots_and_diff)
{
    if (!cluster_start()) { gw_test_skip("no Ceph cluster can start here"); return; }
    char sp[768], err[512], cmd[1200];
    spec(sp, sizeof sp, "t2");
    /* An image made without exclusive-lock: opening it for writing enables the feature. */
    snprintf(cmd, sizeof cmd, "rbd -c %s create godwit/t2 --size 32M --image-feature layering >/dev/null 2>&1", conf);
    REQUIRE(system(cmd) == 0);
    struct gw_blk *a = NULL, *s1 = NULL, *s2 = NULL;
    REQUIRE(gw_blk_open(sp, false, &a, err, sizeof err) == 0);
    int lr = a->ops->lock(a, true);
    if (lr) { fprintf(stderr, "  lock: %s\n", strerror(-lr)); gw_blk_close(a); CHECK(0); return; }
    uint8_t blk[4096], got[4096];
    fill(blk, sizeof blk, 1);
    for (uint64_t off = 0; off < 32 << 20; off += 4 << 20) CHECK_EQ(gw_blk_rw(a, true, blk, sizeof blk, off), 0);
    CHECK_EQ(gw_blk_rbd_snap_create(a, "s1"), 0);
    CHECK_EQ(gw_blk_rbd_snap_create(a, "s1"), -EEXIST);
    CHECK_EQ(gw_blk_rbd_snap_exists(a, "s1"), 1);
    fill(blk, sizeof blk, 2);
    CHECK_EQ(gw_blk_rw(a, true, blk, sizeof blk, 5 << 20), 0);
    CHECK_EQ(gw_blk_rbd_snap_create(a, "s2-pending"), 0);
    CHECK_EQ(gw_blk_rbd_snap_rename(a, "s2-pending", "s2"), 0);
    CHECK_EQ(gw_blk_rbd_snap_exists(a, "s2-pending"), 0);
    fill(blk, sizeof blk, 3);
    CHECK_EQ(gw_blk_rw(a, true, blk, sizeof blk, 5 << 20), 0);

    REQUIRE(gw_blk_rbd_open_snap(sp, "s2", &s2, err, sizeof err) == 0);
    CHECK(s2->read_only);
    CHECK_EQ(gw_blk_rw(s2, false, got, sizeof got, 5 << 20), 0);
    fill(blk, sizeof blk, 2);
    CHECK(memcmp(got, blk, sizeof got) == 0);   /* the point in time, not the later write */
    CHECK_EQ(gw_blk_rw(s2, true, got, sizeof got, 0), -EROFS);
    uint64_t c[3] = {0};
    CHECK_EQ(gw_blk_rbd_diff(s2, "s1", count_diff, c), 0);
    printf("  diff s1..s2: %llu extents, %llu bytes\n", (unsigned long long)c[0], (unsigned long long)c[1]);
    CHECK_EQ(c[2], 1);
    CHECK(c[1] >= 4096 && c[1] <= (4u << 20));   /* one object, not the whole image */
    CHECK_EQ(gw_blk_rbd_diff(s2, "nosuch", count_diff, c), -ENOENT);
    REQUIRE(gw_blk_rbd_open_snap(sp, "s1", &s1, err, sizeof err) == 0);
    CHECK_EQ(gw_blk_rw(s1, false, got, sizeof got, 4 << 20), 0);
    fill(blk, sizeof blk, 1);
    CHECK(memcmp(got, blk, sizeof got) == 0);
    CHECK_EQ(gw_blk_rw(s1, false, got, sizeof got, 5 << 20), 0);
    memset(blk, 0, sizeof blk);
    CHECK(memcmp(got, blk, sizeof got) == 0);   /* never written before s1 */
    gw_blk_close(s1);
    gw_blk_close(s2);
    CHECK_EQ(gw_blk_rbd_snap_remove(a, "s1"), 0);
    CHECK_EQ(gw_blk_rbd_snap_remove(a, "s1"), -ENOENT);
    CHECK_EQ(gw_blk_rbd_open_snap(sp, "s1", &s1, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "no such") != NULL);
    gw_blk_close(a);
    /* Missing image and missing pool: clear errors. */
    spec(sp, sizeof sp, "absent");
    CHECK_EQ(gw_blk_open(sp, false, &a, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "no such image") != NULL);
    snprintf(sp, sizeof sp, "rbd:nopool/x:conf=%s", conf);
    CHECK_EQ(gw_blk_open(sp, false, &a, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "no such pool") != NULL);
}
