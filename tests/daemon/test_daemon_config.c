/* Unit tests for godwitd's configuration loader (engine/daemon/config.c): defaults, every
 * key, relative paths anchored at the file, and refusal of unknown keys, sections and bad
 * values (a typo must not fall back to a default silently). */
#include "engine/daemon/config.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static const char *write_conf(const char *text)
{
    static char path[128];
    if (!dir[0]) {
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
