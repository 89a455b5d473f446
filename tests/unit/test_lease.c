/* Unit tests for leases and slot semaphores (storage/lease.h) on a directory store and on a
 * real throw-away Ceph cluster: exclusive and shared holders, holders listed by cookie, at most
 * M holders of M slots across processes, and a holder killed with SIGKILL whose lease comes
 * free (dir: at once; rados: when its duration runs out, not before). */
#include "storage/lease.h"
#include "storage/store.h"
#include "engine/common/util.h"
#include "tests/lib/gw_ceph.h"
#include "tests/lib/gw_test.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];
static int ns_id;   /* one namespace per run, shared with the child processes */
static char child_conf[512];   /* a child uses its parent's cluster */

static struct gw_store *open_store(const char *kind)
{
    char spec[128], err[512];
    struct gw_store_params p = {.osd_op_timeout_s = 5};
    if (!strcmp(kind, "dir")) {
        if (!tmpdir[0]) { snprintf(tmpdir, sizeof tmpdir, "/tmp/gw-lease-XXXXXX"); if (!mkdtemp(tmpdir)) return NULL; }
        snprintf(spec, sizeof spec, "dir:%s/s", tmpdir);
    } else {
        p.ceph_conf = child_conf[0] ? child_conf : gw_test_ceph_conf(GW_SOURCE_DIR);
        if (!p.ceph_conf) return NULL;
        if (!ns_id) ns_id = (int)getpid();
        snprintf(spec, sizeof spec, "rados:godwit/lease%d", ns_id);
    }
    p.spec = spec;
    struct gw_store *s = NULL;
    if (gw_store_open(&p, &s, err, sizeof err)) { fprintf(stderr, "  %s\n", err); return NULL; }
    return s;
}


/* Children run in a fresh process image (exec of this binary), as another host's process would:
 * a fork of a process that has used librados is not a clean client. */
static void spawn_child(const char *role, const char *kind, int i, int out_fd, int in_fd)
{
    char env[1024];
    const char *conf = strcmp(kind, "rados") ? "-" : gw_test_ceph_conf(GW_SOURCE_DIR);
    snprintf(env, sizeof env, "%s %s %d %d %d %d %s %s", role, kind, ns_id, i, out_fd, in_fd, tmpdir[0] ? tmpdir : "-",
             conf ? conf : "-");
    setenv("GW_LEASE_CHILD", env, 1);
    execl("/proc/self/exe", "test_lease", "none", (char *)NULL);
    _exit(127);
}

static void child_slots(const char *kind, int i, int out_fd, int in_fd)
{
    struct gw_store *s = open_store(kind);
    char cookie[32], err[256], got = 'n';
    snprintf(cookie, sizeof cookie, "job%d", i);
    struct gw_lease *l = NULL;
    unsigned slot = 0;
    int r = s ? gw_slots_acquire(s, "backups", 2, cookie, 30, true, &l, &slot, err, sizeof err) : -EIO;
    if (r == 0) got = (char)('0' + slot);
    else if (r == -EBUSY) got = 'b';
    else fprintf(stderr, "  child %d: %s\n", i, s ? err : "no store");
    if (write(out_fd, &got, 1) != 1) _exit(3);
    char x;
    if (read(in_fd, &x, 1) < 0) _exit(3);
    gw_lease_release(l);
    gw_store_close(s);
    _exit(0);
}

static void child_crash(const char *kind, int out_fd)
{
    struct gw_store *s = open_store(kind);
    struct gw_lease *l = NULL, *sh = NULL;
    char err[256], ok = 'n';
    if (s && !gw_lease_acquire(s, "crash", "doomed", true, 4, true, &l, err, sizeof err) &&
        !gw_lease_acquire(s, "crash-sh", "doomed", false, 4, true, &sh, err, sizeof err))
        ok = 'y';
    if (write(out_fd, &ok, 1) != 1) _exit(3);
    for (;;) pause();
}

__attribute__((constructor)) static void child_main(void)
{
    const char *e = getenv("GW_LEASE_CHILD");
    if (!e) return;
    char role[16], kind[16], dir[64] = "", conf[512] = "";
    int i, out_fd, in_fd;
    if (sscanf(e, "%15s %15s %d %d %d %d %63s %511s", role, kind, &ns_id, &i, &out_fd, &in_fd, dir, conf) != 8) _exit(2);
    if (strcmp(dir, "-")) snprintf(tmpdir, sizeof tmpdir, "%s", dir);
    if (strcmp(conf, "-")) snprintf(child_conf, sizeof child_conf, "%s", conf);
    if (!strcmp(role, "slots")) child_slots(kind, i, out_fd, in_fd);
    child_crash(kind, out_fd);
}

struct names {
    char list[16][112];
    int n;
};

static int collect(const char *cookie, void *ctx)
{
    struct names *n = ctx;
    if (n->n < 16) snprintf(n->list[n->n++], sizeof n->list[0], "%s", cookie);
    return 0;
}

static bool listed(struct names *n, const char *c)
{
    for (int i = 0; i < n->n; i++)
        if (!strcmp(n->list[i], c)) return true;
    return false;
}

static void exclusive_and_shared(struct gw_store *s)
{
    char err[256];
    struct gw_lease *a = NULL, *b = NULL, *c = NULL;
    CHECK_EQ(gw_lease_acquire(s, "x1", "a", true, 30, false, &a, err, sizeof err), 0);
    CHECK_EQ(gw_lease_acquire(s, "x1", "b", true, 30, false, &b, err, sizeof err), -EBUSY);
    CHECK(strstr(err, "held"));
    CHECK_EQ(gw_lease_acquire(s, "x1", "b", false, 30, false, &b, err, sizeof err), -EBUSY);
    CHECK_EQ(gw_lease_renew(a), 0);
    CHECK(gw_lease_valid(a, 5));
    gw_lease_release(a);
    CHECK_EQ(gw_lease_acquire(s, "x1", "b", true, 30, false, &b, err, sizeof err), 0);
    gw_lease_release(b);
    /* Shared: many holders, listed by cookie; an exclusive taker waits for all of them. */
    CHECK_EQ(gw_lease_acquire(s, "sh", "g1.host-a.1", false, 30, true, &a, err, sizeof err), 0);
    CHECK_EQ(gw_lease_acquire(s, "sh", "g2.host-b.2", false, 30, false, &b, err, sizeof err), 0);
    CHECK_EQ(gw_lease_acquire(s, "sh", "gc", true, 30, false, &c, err, sizeof err), -EBUSY);
    struct names n = {0};
    CHECK_EQ(gw_lease_holders(s, "sh", collect, &n), 0);
    CHECK_EQ(n.n, 2);
    CHECK(listed(&n, "g1.host-a.1") && listed(&n, "g2.host-b.2"));
    gw_lease_release(a);
    n.n = 0;
    CHECK_EQ(gw_lease_holders(s, "sh", collect, &n), 0);
    CHECK_EQ(n.n, 1);
    gw_lease_release(b);
    n.n = 0;
    CHECK_EQ(gw_lease_holders(s, "sh", collect, &n), 0);
    CHECK_EQ(n.n, 0);
    CHECK_EQ(gw_lease_holders(s, "never-taken", collect, &n), 0);
    /* Hostile names and bounds. */
    CHECK_EQ(gw_lease_acquire(s, "../x", "a", true, 30, false, &a, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_lease_acquire(s, "x2", "a/b", true, 30, false, &a, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_lease_acquire(s, "x2", "a", true, 1, false, &a, err, sizeof err), -EINVAL);
    unsigned slot;
    CHECK_EQ(gw_slots_acquire(s, "sem", 0, "a", 30, false, &a, &slot, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_slots_acquire(s, "sem", GW_SLOTS_MAX + 1, "a", 30, false, &a, &slot, err, sizeof err), -EINVAL);
}

/* Six processes want one of two slots and hold what they get until told to go: exactly two get
 * one. Then per-host limits: a second semaphore of one slot in front of the cluster's two. */
static void slots_across_processes(const char *kind)
{
    int res[2], go[2];
    REQUIRE(pipe(res) == 0 && pipe(go) == 0);
    pid_t kids[6];
    for (int i = 0; i < 6; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            close(res[0]);
            close(go[1]);
            spawn_child("slots", kind, i, res[1], go[0]);
        }
    }
    close(res[1]);
    close(go[0]);
    int taken[2] = {0}, busy = 0;
    for (int i = 0; i < 6; i++) {
        char c = 0;
        CHECK_EQ(read(res[0], &c, 1), 1);
        if (c == '0' || c == '1') taken[c - '0']++;
        else if (c == 'b') busy++;
    }
    CHECK_EQ(taken[0], 1);
    CHECK_EQ(taken[1], 1);
    CHECK_EQ(busy, 4);
    close(go[1]);   /* everyone goes */
    for (int i = 0; i < 6; i++) { int st; waitpid(kids[i], &st, 0); CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0); }
    close(res[0]);
    /* All released: the slots are free again. */
    struct gw_store *s = open_store(kind);
    REQUIRE(s);
    char err[256];
    struct gw_lease *a = NULL, *b = NULL, *c = NULL;
    unsigned sa, sb;
    CHECK_EQ(gw_slots_acquire(s, "backups", 2, "p1", 30, false, &a, &sa, err, sizeof err), 0);
    CHECK_EQ(gw_slots_acquire(s, "backups", 2, "p2", 30, false, &b, &sb, err, sizeof err), 0);
    CHECK(sa != sb);
    CHECK_EQ(gw_slots_acquire(s, "backups", 2, "p3", 30, false, &c, &sa, err, sizeof err), -EBUSY);
    CHECK(strstr(err, "all 2 slots"));
    gw_lease_release(a);
    gw_lease_release(b);
    gw_store_close(s);
}

/* A holder killed with SIGKILL: its lease comes free (and is not listed) once the kernel (dir)
 * or the duration (rados) says so, and not before its duration on rados. */
static void killed_holder(const char *kind, unsigned duration)
{
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t kid = fork();
    if (kid == 0) spawn_child("crash", kind, 0, ready[1], -1);
    char ok = 0;
    CHECK_EQ(read(ready[0], &ok, 1), 1);
    CHECK_EQ(ok, 'y');
    struct gw_store *s = open_store(kind);
    REQUIRE(s);
    char err[256];
    struct gw_lease *l = NULL;
    CHECK_EQ(gw_lease_acquire(s, "crash", "heir", true, duration, false, &l, err, sizeof err), -EBUSY);
    uint64_t t0 = gw_now_ns();
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    int r = -EBUSY;
    while (r == -EBUSY && gw_now_ns() - t0 < (duration + 10) * 1000000000ull) {
        r = gw_lease_acquire(s, "crash", "heir", true, duration, false, &l, err, sizeof err);
        if (r == -EBUSY) usleep(100000);
    }
    double secs = (gw_now_ns() - t0) / 1e9;
    printf("  %s: a killed holder's lease (duration %u s) was taken over after %.1f s\n", kind, duration, secs);
    CHECK_EQ(r, 0);
    if (!strcmp(kind, "rados")) CHECK(secs >= duration - 1.0);
    else CHECK(secs < 1.0);
    struct names n = {0};
    CHECK_EQ(gw_lease_holders(s, "crash-sh", collect, &n), 0);
    CHECK_EQ(n.n, 0);
    gw_lease_release(l);
    gw_store_close(s);
    close(ready[0]);
    close(ready[1]);
}

static int count_holder(const char *cookie, void *ctx)
{
    (void)cookie;
    ++*(int *)ctx;
    return 0;
}

/* Runs fn in a child that dies of SIGALRM when fn blocks; returns fn's result, or -ETIME. */
static int within_5s(int (*fn)(struct gw_store *), struct gw_store *s)
{
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5);
        _exit(fn(s) == 0 ? 0 : 1);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return -ECHILD;
    if (WIFSIGNALED(st)) return -ETIME;
    return WEXITSTATUS(st) ? -EIO : 0;
}

static int list_fifo_lease(struct gw_store *s)
{
    int n = 0;
    int r = gw_lease_holders(s, "hx", count_holder, &n);
    return r ? r : n == 0 ? 0 : -EPROTO;
}

static int take_fifo_lease(struct gw_store *s)
{
    struct gw_lease *l = NULL;
    char err[256];
    int r = gw_lease_acquire(s, "fx", "me", true, 30, false, &l, err, sizeof err);
    gw_lease_release(l);
    return r == -EINVAL ? 0 : -EPROTO;   /* refused, not taken and not blocked */
}

/* What anyone who can write the shared directory may plant: a FIFO under a holder's or a lock's
 * name (once, a lister or a taker blocked on it forever, holding its mutex), and a symbolic link
 * in place of the leases directory (once followed: leases taken outside the store). */
static void planted_files(void)
{
    struct gw_store *s = open_store("dir");
    REQUIRE(s);
    char path[256], other[256];
    struct gw_lease *l = NULL;
    char err[256];
    REQUIRE(gw_lease_acquire(s, "hx", "real", false, 30, false, &l, err, sizeof err) == 0);   /* makes leases/ */
    snprintf(path, sizeof path, "%s/s/leases/hx.h.evil", tmpdir);
    REQUIRE(mkfifo(path, 0600) == 0);
    snprintf(path, sizeof path, "%s/s/leases/fx.lock", tmpdir);
    REQUIRE(mkfifo(path, 0600) == 0);
    gw_lease_release(l);
    CHECK_EQ(within_5s(list_fifo_lease, s), 0);
    CHECK_EQ(within_5s(take_fifo_lease, s), 0);
    gw_store_close(s);
    /* A second store whose leases directory is a link to somewhere else. */
    char spec[300];
    snprintf(other, sizeof other, "%s/elsewhere", tmpdir);
    REQUIRE(mkdir(other, 0700) == 0);
    snprintf(path, sizeof path, "%s/t", tmpdir);
    REQUIRE(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/t/leases", tmpdir);
    REQUIRE(symlink(other, path) == 0);
    snprintf(spec, sizeof spec, "dir:%s/t", tmpdir);
    struct gw_store_params p = {.spec = spec};
    struct gw_store *t = NULL;
    REQUIRE(gw_store_open(&p, &t, err, sizeof err) == 0);
    CHECK(gw_lease_acquire(t, "gc.run", "me", true, 30, false, &l, err, sizeof err) < 0);
    int n = 0;
    CHECK(gw_lease_holders(t, "gc.run", count_holder, &n) < 0);
    DIR *d = opendir(other);
    REQUIRE(d);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') files++;
    closedir(d);
    CHECK_EQ(files, 0);
    gw_store_close(t);
}

GW_TEST(dir_leases)
{
    struct gw_store *s = open_store("dir");
    REQUIRE(s);
    exclusive_and_shared(s);
    gw_store_close(s);
    slots_across_processes("dir");
    killed_holder("dir", 4);
    planted_files();
}

GW_TEST(rados_leases)
{
    struct gw_store *s = open_store("rados");
    if (!s) { gw_test_skip("no Ceph cluster can start here"); return; }
    exclusive_and_shared(s);
    /* The keeper renews a short lease past its duration. */
    char err[256];
    struct gw_lease *a = NULL, *b = NULL;
    CHECK_EQ(gw_lease_acquire(s, "kept", "a", true, 3, true, &a, err, sizeof err), 0);
    sleep(5);
    CHECK(gw_lease_valid(a, 1));
    CHECK_EQ(gw_lease_acquire(s, "kept", "b", true, 3, false, &b, err, sizeof err), -EBUSY);
    gw_lease_release(a);
    /* Without a keeper it expires, and a renewal after that fails. */
    CHECK_EQ(gw_lease_acquire(s, "lapse", "a", true, 2, false, &a, err, sizeof err), 0);
    sleep(3);
    CHECK(!gw_lease_valid(a, 0));
    CHECK_EQ(gw_lease_acquire(s, "lapse", "b", true, 30, false, &b, err, sizeof err), 0);
    CHECK(gw_lease_renew(a) < 0);
    gw_lease_release(a);
    gw_lease_release(b);
    gw_store_close(s);
    slots_across_processes("rados");
    killed_holder("rados", 4);
}

GW_TEST(cleanup)
{
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        CHECK_EQ(system(cmd), 0);
    }
}
