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
