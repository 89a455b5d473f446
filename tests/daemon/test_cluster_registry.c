/* Unit tests for the cluster registry's readers (engine/daemon/cluster_dir.c,
 * cluster_registry.c) on a directory registry: entries that are not records (a FIFO) never
 * block a listing, and records that would cost far more memory unpacked than their bytes
 * (repeated fields past what a host publishes) are refused, and the liveness table makes
 * room for new hosts when old ones leave. Hostile records a reader must survive are built here by hand, as another
 * host or anyone with write access to the registry could. */
#include "engine/daemon/cluster.h"
#include "tests/daemon/cluster_daemon.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* A new empty registry directory under a fresh temporary directory, in path. */
static bool new_registry(char *path, size_t len)
{
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/gw-creg-XXXXXX");
    if (!mkdtemp(tmp)) return false;
    return (size_t)snprintf(path, len, "%s/reg", tmp) < len;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    remove(p);
    return 0;
}

/* Removes the temporary directory new_registry made for path. */
static void drop_registry(const char *path)
{
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s", path);
    char *slash = strrchr(tmp, '/');
    if (slash) *slash = 0;
    nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The packed record of host name (malloc'ed). */
static uint8_t *pack_host(const char *name, uint64_t heartbeat_ms, size_t *len)
{
    Godwit__V1__ClusterHost h = GODWIT__V1__CLUSTER_HOST__INIT;
    h.name = (char *)name;
    h.api_address = (char *)"127.0.0.1:1";
    h.heartbeat_unix_ms = heartbeat_ms;
    *len = godwit__v1__cluster_host__get_packed_size(&h);
    uint8_t *buf = malloc(*len);
    if (buf) godwit__v1__cluster_host__pack(&h, buf);
    return buf;
}

static int publish_host(void *be, const char *name, uint64_t heartbeat_ms)
{
    size_t len;
    uint8_t *buf = pack_host(name, heartbeat_ms, &len);
    if (!buf) return -ENOMEM;
    int r = gw_cluster_dir_ops.publish(be, name, buf, len, false);
    free(buf);
    return r;
}

static void *open_dir_registry(const char *path)
{
    char err[256];
    void *be = NULL;
    struct gw_cluster_open o = {.where = path};
    if (gw_cluster_dir_ops.open(&o, &be, err, sizeof err)) { fprintf(stderr, "  %s\n", err); return NULL; }
    return be;
}

/* A daemon "self" on a new directory registry (at path), its state beside it. */
static struct gw_daemon *daemon_on_new_registry(char *path, size_t cap)
{
    char spec[160], state[160];
    if (!new_registry(path, cap)) return NULL;
    snprintf(spec, sizeof spec, "dir:%s", path);
    snprintf(state, sizeof state, "%.120s/..", path);
    return cluster_daemon_new("self", spec, state, NULL);
}

struct names { unsigned n; char first[GW_CLUSTER_NAME_MAX + 1]; };

static bool count_one(void *arg, const char *name, const uint8_t *rec, size_t len)
{
    (void)rec; (void)len;
    struct names *c = arg;
    if (!c->n++) snprintf(c->first, sizeof c->first, "%s", name);
    return true;
}

/* A FIFO named like a record: the listing skips it instead of blocking in its open (which
 * hung every ListHosts for good). The listing runs in a child under alarm() so that a
 * regression fails here instead of hanging the suite. */
GW_TEST(dir_list_skips_fifo)
{
    char path[128], fifo[200];
    REQUIRE(new_registry(path, sizeof path));
    void *be = open_dir_registry(path);
    REQUIRE(be);
    snprintf(fifo, sizeof fifo, "%s/evil.host", path);
    REQUIRE(mkfifo(fifo, 0644) == 0);
    REQUIRE(publish_host(be, "good", 1) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        alarm(5);
        struct names c = {0};
        int r = gw_cluster_dir_ops.list(be, count_one, &c);
        _exit(r == 0 && c.n == 1 && !strcmp(c.first, "good") ? 0 : 1);
    }
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st));                 /* killed by SIGALRM: the listing blocked */
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    gw_cluster_dir_ops.close(be);
    drop_registry(path);
}

/* Publishes h on be, packed, as host h->name would. */
static int publish_record(void *be, const Godwit__V1__ClusterHost *h)
{
    size_t len = godwit__v1__cluster_host__get_packed_size(h);
    uint8_t *buf = malloc(len);
    if (!buf) return -ENOMEM;
    godwit__v1__cluster_host__pack(h, buf);
    int r = gw_cluster_dir_ops.publish(be, h->name, buf, len, false);
    free(buf);
    return r;
}

/* A record of 100k empty image roots (200 KB packed, some 8 MB unpacked) is refused; a normal
 * one, and the largest a host publishes (GW_CLUSTER_MAX_VMS_PER_HOST small VMs and
 * GW_CLUSTER_MAX_IMAGE_ROOTS roots, where the unpack budget is tightest), are listed. */
GW_TEST(registry_refuses_amplifying_record)
{
    char path[128];
    struct gw_daemon *d = daemon_on_new_registry(path, sizeof path);
    REQUIRE(d);
    void *be = d->cluster->be;

    enum { EMPTY_ROOTS = 100000 };
    char **roots = calloc(EMPTY_ROOTS, sizeof *roots);
    Godwit__V1__ClusterVm *vms = calloc(GW_CLUSTER_MAX_VMS_PER_HOST, sizeof *vms);
    Godwit__V1__ClusterVm **vmp = calloc(GW_CLUSTER_MAX_VMS_PER_HOST, sizeof *vmp);
    static char vm_names[GW_CLUSTER_MAX_VMS_PER_HOST][8];
    REQUIRE(roots && vms && vmp);
    for (size_t i = 0; i < EMPTY_ROOTS; i++) roots[i] = (char *)"";
    for (size_t i = 0; i < GW_CLUSTER_MAX_VMS_PER_HOST; i++) {
        godwit__v1__cluster_vm__init(&vms[i]);
        snprintf(vm_names[i], sizeof vm_names[i], "v%zu", i);
        vms[i].name = vm_names[i];
        vms[i].memory_bytes = 1;
        vms[i].vcpus = 1;
        vmp[i] = &vms[i];
    }
    Godwit__V1__ClusterHost h = GODWIT__V1__CLUSTER_HOST__INIT;
    h.api_address = (char *)"127.0.0.1:1";
    h.heartbeat_unix_ms = gw_unix_ms();

    h.name = (char *)"fine";
    h.n_image_roots = 2;
    h.image_roots = (char *[]){(char *)"/srv/a", (char *)"/srv/b"};
    h.n_vms = 3;
    h.vms = vmp;
    REQUIRE(publish_record(be, &h) == 0);

    h.name = (char *)"full";
    h.n_image_roots = GW_CLUSTER_MAX_IMAGE_ROOTS;
    h.image_roots = roots;
    h.n_vms = GW_CLUSTER_MAX_VMS_PER_HOST;
    REQUIRE(publish_record(be, &h) == 0);

    h.name = (char *)"big";
    h.n_image_roots = EMPTY_ROOTS;
    h.n_vms = 0;
    REQUIRE(publish_record(be, &h) == 0);

    CHECK_EQ(cluster_daemon_lists(d, "fine", NULL), 1);
    CHECK_EQ(cluster_daemon_lists(d, "full", NULL), 1);
    CHECK_EQ(cluster_daemon_lists(d, "big", NULL), 0);
    free(roots);
    free(vms);
    free(vmp);
    cluster_daemon_free(d);
    drop_registry(path);
}

/* The liveness table filled with GW_CLUSTER_MAX_HOSTS hosts that then left: a new host
 * found no slot and read as down for good (until a restart), however often it beat. */
GW_TEST(liveness_table_forgets_departed_hosts)
{
    char path[128], file[200];
    struct gw_daemon *d = daemon_on_new_registry(path, sizeof path);
    REQUIRE(d);
    void *be = d->cluster->be;
    char name[16];
    for (int i = 0; i < GW_CLUSTER_MAX_HOSTS; i++) {
        snprintf(name, sizeof name, "old%03d", i);
        REQUIRE(publish_host(be, name, gw_unix_ms()) == 0);
    }
    bool down = true;
    CHECK_EQ(cluster_daemon_lists(d, "old000", &down), 1);
    CHECK(!down);
    CHECK_EQ(d->cluster->n_seen, GW_CLUSTER_MAX_HOSTS);
    for (int i = 0; i < GW_CLUSTER_MAX_HOSTS; i++) {
        snprintf(file, sizeof file, "%s/old%03d.host", path, i);
        REQUIRE(unlink(file) == 0);
    }
    REQUIRE(publish_host(be, "new", gw_unix_ms()) == 0);
    CHECK_EQ(cluster_daemon_lists(d, "new", &down), 1);
    usleep(20 * 1000);
    REQUIRE(publish_host(be, "new", gw_unix_ms()) == 0);   /* its next beat */
    down = true;
    CHECK_EQ(cluster_daemon_lists(d, "new", &down), 1);
    CHECK(!down);
    cluster_daemon_free(d);
    drop_registry(path);
}
