/* Unit tests for godwitd's configuration loader (engine/daemon/config.c): defaults, every
 * key, relative paths anchored at the file, and refusal of unknown keys, sections and bad
 * values (a typo must not fall back to a default silently). */
#include "engine/daemon/config.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static const char *write_conf(const char *text)
{
    static char path[128];
    if (!dir[0] || access(dir, F_OK)) {   /* a test may have removed it */
        snprintf(dir, sizeof dir, "/tmp/gw-cfg-XXXXXX");
        if (!mkdtemp(dir)) return NULL;
    }
    snprintf(path, sizeof path, "%s/godwitd.conf", dir);
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

GW_TEST(config_defaults_and_keys)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\nlisten = 0.0.0.0:7500\nstate_dir = state\ntoken_file = /etc/tok\n"
                               "max_migrations = 3\nmigration_host = 10.0.0.1\nhostname = h1\n"
                               "secret_file = sec\n; a comment\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK(!strcmp(c.listen, "0.0.0.0:7500"));
    char want[200];
    snprintf(want, sizeof want, "%s/state", dir);
    CHECK(!strcmp(c.state_dir, want));          /* relative: at the file's directory */
    snprintf(want, sizeof want, "%s/sec", dir);
    CHECK(!strcmp(c.secret_file, want));
    CHECK(!strcmp(c.token_file, "/etc/tok"));
    CHECK_EQ(c.max_migrations, 3);
    CHECK_EQ(c.max_incoming, 2);                /* default */
    CHECK(!strcmp(c.migration_host, "10.0.0.1"));
    CHECK(!strcmp(c.migration_advertise, "10.0.0.1"));   /* defaults to migration_host */
    CHECK(!strcmp(c.hostname, "h1"));
    CHECK(strstr(c.runner, "godwit-vm") != NULL);
}

GW_TEST(config_cluster_registry_on_ceph)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\ncluster_registry = rados:godwit/reg\ncluster_ceph_conf = ceph.conf\n"
                               "cluster_ceph_id = godwit\ncluster_keyring = /etc/ceph/k\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK(!strcmp(c.cluster, "rados:godwit/reg"));     /* the same setting as cluster = */
    char want[200];
    snprintf(want, sizeof want, "%s/ceph.conf", dir);
    CHECK(!strcmp(c.cluster_ceph_conf, want));
    CHECK(!strcmp(c.cluster_ceph_id, "godwit"));
    CHECK(!strcmp(c.cluster_keyring, "/etc/ceph/k"));
}

GW_TEST(config_refuses_mistakes)
{
    struct gw_daemon_config c;
    char err[256];
    const char *bad[] = {
        "[daemon]\nlisen = 1.2.3.4:5\n",          /* typo */
        "[deamon]\nlisten = 1.2.3.4:5\n",          /* unknown section */
        "[daemon]\nmax_migrations = 0\n",          /* out of range */
        "[daemon]\nmax_migrations = lots\n",
        "[daemon]\nworkers = 1000\n",
        "[daemon\nlisten = x\n",                   /* syntax */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = write_conf(bad[i]);
        REQUIRE(p);
        err[0] = 0;
        CHECK_EQ(gw_daemon_config_load(p, &c, err, sizeof err), -EINVAL);
        CHECK(strstr(err, "godwitd.conf:") != NULL);   /* says where */
    }
    CHECK(gw_daemon_config_load("/nonexistent/godwitd.conf", &c, err, sizeof err) < 0);
    /* Two mistakes: the first one's line and its own reason (not the last one's reason). */
    const char *p = write_conf("[daemon]\nlisen = 1\nworkers = 1000\nzz = 2\n");
    REQUIRE(p);
    CHECK_EQ(gw_daemon_config_load(p, &c, err, sizeof err), -EINVAL);
    CHECK(strstr(err, ":2: unknown key 'lisen'") != NULL);
}

GW_TEST(config_backup_host_budget)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK_EQ(c.backup_host_rate, 0);            /* defaults: no budget, adaptive */
    CHECK_EQ(c.backup_host_ops, 0);
    CHECK_EQ(c.backup_adaptive, 1);
    p = write_conf("[daemon]\nbackup_host_rate = 200M\nbackup_host_ops = 2000\nbackup_adaptive = off\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK_EQ(c.backup_host_rate, 200ull << 20);
    CHECK_EQ(c.backup_host_ops, 2000);
    CHECK_EQ(c.backup_adaptive, 0);
    REQUIRE((p = write_conf("[backup_target t]\nstore = dir:x\ncluster_rate = lots\n")));
    CHECK_EQ(gw_daemon_config_load(p, &c, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "bad value for cluster_rate") != NULL);
    const char *bad[] = {"[daemon]\nbackup_host_rate = fast\n", "[daemon]\nbackup_host_ops = 2000000\n",
                         "[daemon]\nbackup_adaptive = yes\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        REQUIRE((p = write_conf(bad[i])));
        err[0] = 0;
        CHECK_EQ(gw_daemon_config_load(p, &c, err, sizeof err), -EINVAL);
        CHECK(strstr(err, "bad value for backup_") != NULL);
    }
}

/* Each of the values for [daemon] key stops the load with an error that names want. */
static void refuses(const char *key, const char *const *bad, size_t n, const char *want)
{
    struct gw_daemon_config c;
    char err[256], text[128];
    for (size_t i = 0; i < n; i++) {
        snprintf(text, sizeof text, "[daemon]\n%s = %s\n", key, bad[i]);
        const char *p = write_conf(text);
        REQUIRE(p);
        err[0] = 0;
        CHECK_EQ(gw_daemon_config_load(p, &c, err, sizeof err), -EINVAL);
        CHECK(strstr(err, want) != NULL);
    }
}

GW_TEST(config_backup_cpu_priority)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK(!strcmp(c.backup_cpu_priority, "batch:10"));   /* default: batch, kept in its canonical spelling */
    const char *good[][2] = {{"idle", "idle"}, {"batch", "batch:10"}, {"batch:3", "batch:3"},
                             {"nice:19", "nice:19"}, {"normal", "normal"}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[daemon]\nbackup_cpu_priority = %s\n", good[i][0]);
        REQUIRE((p = write_conf(text)));
        REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
        CHECK(!strcmp(c.backup_cpu_priority, good[i][1]));
    }
    const char *bad[] = {"low", "nice:0", "nice:20", "batch:-1", "batch:x", "idle:1", ""};
    refuses("backup_cpu_priority", bad, sizeof bad / sizeof bad[0], ":2: bad value for backup_cpu_priority");
    refuses("backup_cpu_priority", bad, sizeof bad / sizeof bad[0], "idle, batch");   /* the spellings it takes */
}

GW_TEST(config_backup_vm_latency_target)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK_EQ(c.backup_vm_latency_target, 110);   /* the default: 1.1x the VMs' p99 before the backup */
    REQUIRE((p = write_conf("[daemon]\nbackup_vm_latency_target = 150\n")));
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK_EQ(c.backup_vm_latency_target, 150);
    const char *bad[] = {"100", "1001", "1.1", "-5", ""};
    refuses("backup_vm_latency_target", bad, sizeof bad / sizeof bad[0], "backup_vm_latency_target");
}

GW_TEST(config_backup_targets)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\nlisten = 127.0.0.1:7500\n"
                               "[backup_target local]\nstore = dir:backups\nkey_file = bk.key\n"
                               "[backup_target ceph-1]\nstore = rados:godwit/ns\nceph_conf = /etc/ceph/ceph.conf\n"
                               "ceph_id = backup\nosd_op_timeout = 7\nmon_op_timeout = 9\ninflight = 32\n"
                               "cluster_rate = 400M\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK_EQ(c.n_backup_targets, 2);
    const struct gw_backup_target_cfg *t = gw_config_backup_target(&c, "local");
    REQUIRE(t);
    char want[200];
    snprintf(want, sizeof want, "dir:%s/backups", dir);    /* anchored at the file */
    CHECK(!strcmp(t->store, want));
    snprintf(want, sizeof want, "%s/bk.key", dir);
    CHECK(!strcmp(t->key_file, want));
    t = gw_config_backup_target(&c, "ceph-1");
    REQUIRE(t);
    CHECK(!strcmp(t->store, "rados:godwit/ns"));
    CHECK(!strcmp(t->ceph_id, "backup"));
    CHECK_EQ(t->osd_op_timeout_s, 7);
    CHECK_EQ(t->mon_op_timeout_s, 9);
    CHECK_EQ(t->inflight, 32);
    CHECK_EQ(t->cluster_rate, 400ull << 20);
    CHECK_EQ(gw_config_backup_target(&c, "local")->cluster_rate, 0);   /* default: no cluster budget */
    CHECK(gw_config_backup_target(&c, "nope") == NULL);
    const char *bad[] = {
        "[backup_target x]\nstore = nfs:/x\n",                 /* unknown kind */
        "[backup_target x]\nstor = dir:/x\n",                  /* typo */
        "[backup_target x]\nceph_id = a\n",                    /* no store */
        "[backup_target ../x]\nstore = dir:/x\n",              /* unsafe name */
        "[backup_target x]\nstore = dir:/x\ninflight = 65\n", /* out of range */
        "[backup_target x]\nstore = dir:/x\nosd_op_timeout = 0\n",
        "[backup_target a]\nstore=dir:/a\n[backup_target b]\nstore=dir:/b\n[backup_target c]\nstore=dir:/c\n"
        "[backup_target d]\nstore=dir:/d\n[backup_target e]\nstore=dir:/e\n[backup_target f]\nstore=dir:/f\n"
        "[backup_target g]\nstore=dir:/g\n[backup_target h]\nstore=dir:/h\n[backup_target i]\nstore=dir:/i\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        REQUIRE((p = write_conf(bad[i])));
        CHECK_EQ(gw_daemon_config_load(p, &c, err, sizeof err), -EINVAL);
    }
}

GW_TEST(token_file)
{
    char tok[64], path[128];
    snprintf(path, sizeof path, "%s/tok", dir[0] ? dir : "/tmp");
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("  s3cret \n second line\n", f);
    fclose(f);
    CHECK_EQ(gw_read_token_file(path, tok, sizeof tok), 0);
    CHECK(!strcmp(tok, "s3cret"));
    f = fopen(path, "w");
    REQUIRE(f);
    fputs("\n", f);
    fclose(f);
    CHECK_EQ(gw_read_token_file(path, tok, sizeof tok), -EINVAL);
    CHECK_EQ(gw_read_token_file("/nonexistent/tok", tok, sizeof tok), -ENOENT);
    unlink(path);
    char conf[160];
    snprintf(conf, sizeof conf, "%s/godwitd.conf", dir);
    unlink(conf);
    rmdir(dir);
}

GW_TEST(net_taps_allow_exact_names_and_prefixes)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\nnet_taps = gwtap*, uplink0 ,*\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK(gw_config_tap_allowed(&c, "gwtap0"));
    CHECK(gw_config_tap_allowed(&c, "gwtap-vm-17"));
    CHECK(gw_config_tap_allowed(&c, "uplink0"));
    CHECK(!gw_config_tap_allowed(&c, "uplink00"));   /* exact entries are exact */
    CHECK(!gw_config_tap_allowed(&c, "uplink"));
    CHECK(!gw_config_tap_allowed(&c, "gwta"));
    CHECK(!gw_config_tap_allowed(&c, "eth0"));       /* a bare "*" allows nothing */
    CHECK(!gw_config_tap_allowed(&c, ""));
    c.net_taps[0] = 0;
    CHECK(!gw_config_tap_allowed(&c, "gwtap0"));     /* none configured: no network */
}

GW_TEST(images_must_be_canonical_regular_files_inside_the_roots)
{
    struct gw_daemon_config c;
    char err[256], roots[128], in[160], out[160], link[160], sub[160], dotdot[200];
    snprintf(roots, sizeof roots, "/tmp/gw-img-XXXXXX");
    REQUIRE(mkdtemp(roots));
    snprintf(in, sizeof in, "%s/vmlinuz", roots);
    snprintf(sub, sizeof sub, "%s/dir", roots);
    snprintf(link, sizeof link, "%s/link", roots);
    snprintf(out, sizeof out, "%s-outside", roots);
    snprintf(dotdot, sizeof dotdot, "%s/../%s", roots, strrchr(out, '/') + 1);
    FILE *f = fopen(in, "w");
    REQUIRE(f);
    fclose(f);
    f = fopen(out, "w");
    REQUIRE(f);
    fclose(f);
    REQUIRE(mkdir(sub, 0700) == 0);
    REQUIRE(symlink(in, link) == 0);
    char text[300];
    snprintf(text, sizeof text, "[daemon]\nimage_roots = /nonexistent, %s\n", roots);
    REQUIRE(gw_daemon_config_load(write_conf(text), &c, err, sizeof err) == 0);
    const char *reason = "x";
    CHECK(gw_config_image_refused(&c, in, "kernel", &reason) == NULL);
    CHECK(reason == NULL);
    struct { const char *path, *reason; } bad[] = {
        /* out shares the root's name as a prefix: "inside" means under root + "/" */
        {"vmlinuz", "IMAGE_PATH_INVALID"}, {out, "IMAGE_OUTSIDE_ROOTS"}, {link, "IMAGE_NOT_CANONICAL"},
        {dotdot, "IMAGE_NOT_CANONICAL"}, {sub, "IMAGE_NOT_REGULAR"}, {"/nonexistent/k", "IMAGE_MISSING"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *why = gw_config_image_refused(&c, bad[i].path, "kernel", &reason);
        CHECK(why != NULL);
        CHECK(reason && !strcmp(reason, bad[i].reason));
        if (why) CHECK(strstr(why, "kernel") != NULL);
    }
    CHECK(gw_config_disk_refused(&c, sub) == NULL);   /* disks may be devices: no regular-file rule */
    c.image_roots[0] = 0;
    CHECK(gw_config_image_refused(&c, in, "initrd", &reason) && !strcmp(reason, "NO_IMAGE_ROOTS"));
    unlink(link);
    unlink(in);
    unlink(out);
    rmdir(sub);
    rmdir(roots);
    snprintf(text, sizeof text, "%s/godwitd.conf", dir);
    unlink(text);
    rmdir(dir);
}

GW_TEST(image_root_is_the_first_root_canonical)
{
    /* Where the daemon makes a restored VM's disk: the first entry, resolved; never a later
     * one when the first is missing (the operator's order decides). */
    struct gw_daemon_config c;
    char err[256], root[128], via[200], text[400], out[4096];
    snprintf(root, sizeof root, "/tmp/gw-root-XXXXXX");
    REQUIRE(mkdtemp(root));
    snprintf(via, sizeof via, "%s/../%s/", root, strrchr(root, '/') + 1);   /* not canonical as written */
    snprintf(text, sizeof text, "[daemon]\nimage_roots = %s , /srv\n", via);
    REQUIRE(gw_daemon_config_load(write_conf(text), &c, err, sizeof err) == 0);
    CHECK_EQ(gw_config_image_root(&c, out, sizeof out), 0);
    CHECK(!strcmp(out, root));
    CHECK_EQ(gw_config_image_root(&c, out, 4), -ENAMETOOLONG);
    snprintf(text, sizeof text, "[daemon]\nimage_roots = /nonexistent-root, %s\n", root);
    REQUIRE(gw_daemon_config_load(write_conf(text), &c, err, sizeof err) == 0);
    CHECK_EQ(gw_config_image_root(&c, out, sizeof out), -ENOTDIR);
    c.image_roots[0] = 0;
    CHECK_EQ(gw_config_image_root(&c, out, sizeof out), -ENOENT);
    rmdir(root);
}

GW_TEST(rbd_disks_need_an_allowed_pool_and_no_options)
{
    struct gw_daemon_config c;
    char err[256], arg[2048];
    dir[0] = 0;   /* a directory of our own: another test may have removed the shared one */
    const char *p = write_conf("[daemon]\nimage_roots = /srv/images\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK(strstr(gw_config_disk_refused(&c, "rbd:vms/web1"), "no rbd_pools") != NULL);
    p = write_conf("[daemon]\nrbd_pools = vms, gold\nrbd_conf = ceph.conf\nrbd_id = godwit\n"
                   "rbd_keyring = /etc/ceph/k\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK(gw_config_disk_refused(&c, "rbd:vms/web1") == NULL);
    CHECK(gw_config_disk_refused(&c, "rbd:gold/db.disk") == NULL);
    CHECK(strstr(gw_config_disk_refused(&c, "rbd:vmsx/web1"), "not in this host's rbd_pools") != NULL);
    CHECK(strstr(gw_config_disk_refused(&c, "rbd:vms/web1:conf=/etc/shadow"), "names no options") != NULL);
    CHECK(strstr(gw_config_disk_refused(&c, "rbd:vms/web1:id=admin"), "names no options") != NULL);
    CHECK(strstr(gw_config_disk_refused(&c, "rbd:vms/../x"), "not rbd:POOL/IMAGE") != NULL);
    CHECK(gw_config_disk_refused(&c, "rbd:vms") != NULL);
    /* The runner gets this host's client settings (the conf path anchored at the file). */
    CHECK_EQ(gw_config_disk_arg(&c, "rbd:vms/web1", arg, sizeof arg), 0);
    char want[400];
    snprintf(want, sizeof want, "rbd:vms/web1:conf=%s/ceph.conf:id=godwit:keyring=/etc/ceph/k", dir);
    CHECK(!strcmp(arg, want));
    CHECK_EQ(gw_config_disk_arg(&c, "/srv/images/a.img", arg, sizeof arg), 0);
    CHECK(!strcmp(arg, "/srv/images/a.img"));
    CHECK_EQ(gw_config_disk_arg(&c, "rbd:vms/web1", arg, 20), -ENAMETOOLONG);
    unlink(p);
    rmdir(dir);
}

GW_TEST(config_backup_side_limit)
{
    struct gw_daemon_config c;
    char err[256];
    const char *p = write_conf("[daemon]\n");
    REQUIRE(p);
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK_EQ(c.backup_side_limit, 0);   /* the runner's default: a quarter of the VM's RAM */
    REQUIRE((p = write_conf("[daemon]\nbackup_side_limit = 512M\n")));
    REQUIRE(gw_daemon_config_load(p, &c, err, sizeof err) == 0);
    CHECK_EQ(c.backup_side_limit, 512ull << 20);
    const char *bad[] = {"4K", "2T", "lots", "-1M", ""};
    refuses("backup_side_limit", bad, sizeof bad / sizeof bad[0], "backup_side_limit");
}
