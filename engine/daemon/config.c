/* Loading godwitd's INI configuration (see config.h). */
#include "engine/daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/backup.h"
#include "engine/common/cpu_prio.h"
#include "engine/common/limits.h"
#include "engine/common/util.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/blk_rbd.h"

struct load_ctx {
    struct gw_daemon_config *cfg;
    char dir[PATH_MAX];
    char *err;
    size_t errlen;
};

/* Copies a path value, anchoring a relative one at the config file's directory. */
static int set_path(struct load_ctx *c, char *dst, const char *v)
{
    int n = v[0] == '/' ? snprintf(dst, GW_CFG_STR, "%s", v)
                        : snprintf(dst, GW_CFG_STR, "%s/%s", c->dir, v);
    return n < 0 || n >= GW_CFG_STR ? -ENAMETOOLONG : 0;
}

static int set_str(char *dst, size_t cap, const char *v)
{
    return (size_t)snprintf(dst, cap, "%s", v) >= cap ? -ENAMETOOLONG : 0;
}

static int set_u32(uint32_t *dst, const char *v, uint64_t min, uint64_t max)
{
    uint64_t x;
    int r = gw_parse_u64(v, min, max, &x);
    if (!r) *dst = (uint32_t)x;
    return r;
}

static bool target_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > GW_CFG_TARGET_NAME_MAX || s[0] == '.' || s[0] == '-') return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i])) return false;
    return true;
}

/* A key of a [backup_target NAME] section (1 taken, 0 refused with the reason in c->err). */
static int on_target_key(struct load_ctx *c, const char *name, const char *key, const char *value)
{
    struct gw_daemon_config *cfg = c->cfg;
    if (!target_name_ok(name)) {
        snprintf(c->err, c->errlen, "backup target name '%.80s' is not 1-63 of [A-Za-z0-9._-]", name);
        return 0;
    }
    struct gw_backup_target_cfg *t = NULL;
    for (unsigned i = 0; i < cfg->n_backup_targets; i++)
        if (!strcmp(cfg->backup_targets[i].name, name)) t = &cfg->backup_targets[i];
    if (!t) {
        if (cfg->n_backup_targets == GW_CFG_MAX_BACKUP_TARGETS) {
            snprintf(c->err, c->errlen, "more than %d backup targets", GW_CFG_MAX_BACKUP_TARGETS);
            return 0;
        }
        t = &cfg->backup_targets[cfg->n_backup_targets++];
        snprintf(t->name, sizeof t->name, "%s", name);
    }
    int r;
    if (!strcmp(key, "store")) {
        /* dir: paths are anchored at the config's directory like every other path. */
        if (!strncmp(value, "dir:", 4) && value[4]) {
            char path[GW_CFG_STR];
            r = set_path(c, path, value + 4);
            if (!r) r = (size_t)snprintf(t->store, sizeof t->store, "dir:%s", path) >= sizeof t->store ? -ENAMETOOLONG : 0;
        } else if (!strncmp(value, "rados:", 6) && value[6]) {
            r = set_str(t->store, sizeof t->store, value);
        } else r = -EINVAL;
    }
    else if (!strcmp(key, "ceph_conf")) r = set_path(c, t->ceph_conf, value);
    else if (!strcmp(key, "ceph_id")) r = set_str(t->ceph_id, sizeof t->ceph_id, value);
    else if (!strcmp(key, "keyring")) r = set_path(c, t->keyring, value);
    else if (!strcmp(key, "key_file")) r = set_path(c, t->key_file, value);
    else if (!strcmp(key, "osd_op_timeout")) r = set_u32(&t->osd_op_timeout_s, value, 1, 3600);
    else if (!strcmp(key, "mon_op_timeout")) r = set_u32(&t->mon_op_timeout_s, value, 1, 3600);
    else if (!strcmp(key, "inflight")) r = set_u32(&t->inflight, value, 1, 64);
    else if (!strcmp(key, "cluster_rate")) r = gw_parse_size(value, &t->cluster_rate);
    else {
        snprintf(c->err, c->errlen, "unknown key '%s' in [backup_target %s]", key, name);
        return 0;
    }
    if (r) {
        snprintf(c->err, c->errlen, "bad value for %s of backup target %s: '%s'", key, name, value);
        return 0;
    }
    return 1;
}

const struct gw_backup_target_cfg *gw_config_backup_target(const struct gw_daemon_config *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->n_backup_targets; i++)
        if (!strcmp(cfg->backup_targets[i].name, name)) return &cfg->backup_targets[i];
    return NULL;
}

static int on_key(void *arg, const char *section, const char *key, const char *value)
{
    struct load_ctx *c = arg;
    struct gw_daemon_config *cfg = c->cfg;
    int r;
    /* After the first refusal ini_parse_file still reads on but reports that refusal's line:
     * its reason must stay with it (a later bad key named at the first one's line misled). */
    if (c->err[0]) return 0;
    if (!strncmp(section, "backup_target ", 14)) return on_target_key(c, section + 14, key, value);
    if (strcmp(section, "daemon")) {
        snprintf(c->err, c->errlen, "unknown section [%s]", section);
        return 0;
    }
    if (!strcmp(key, "listen")) r = set_str(cfg->listen, sizeof cfg->listen, value);
    else if (!strcmp(key, "state_dir")) r = set_path(c, cfg->state_dir, value);
    else if (!strcmp(key, "token_file")) r = set_path(c, cfg->token_file, value);
    else if (!strcmp(key, "runner")) r = set_path(c, cfg->runner, value);
    else if (!strcmp(key, "secret_file")) r = set_path(c, cfg->secret_file, value);
    else if (!strcmp(key, "tls_cert")) r = set_path(c, cfg->tls_cert, value);
    else if (!strcmp(key, "tls_key")) r = set_path(c, cfg->tls_key, value);
    else if (!strcmp(key, "tls_ca")) r = set_path(c, cfg->tls_ca, value);
    else if (!strcmp(key, "peers")) r = set_str(cfg->peers, sizeof cfg->peers, value);
    else if (!strcmp(key, "api_cert")) r = set_path(c, cfg->api_cert, value);
    else if (!strcmp(key, "api_key")) r = set_path(c, cfg->api_key, value);
    else if (!strcmp(key, "api_client_ca")) r = set_path(c, cfg->api_client_ca, value);
    else if (!strcmp(key, "peer_ca")) r = set_path(c, cfg->peer_ca, value);
    else if (!strcmp(key, "api_h2c")) {
        r = !strcmp(value, "on") || !strcmp(value, "off") ? 0 : -EINVAL;
        cfg->api_h2c = !strcmp(value, "on");
    }
    else if (!strcmp(key, "api_no_token")) {
        r = !strcmp(value, "on") || !strcmp(value, "off") ? 0 : -EINVAL;
        cfg->api_no_token = !strcmp(value, "on");
    }
    else if (!strcmp(key, "image_roots")) r = set_str(cfg->image_roots, sizeof cfg->image_roots, value);
    else if (!strcmp(key, "net_taps")) r = set_str(cfg->net_taps, sizeof cfg->net_taps, value);
    else if (!strcmp(key, "rbd_pools")) r = set_str(cfg->rbd_pools, sizeof cfg->rbd_pools, value);
    else if (!strcmp(key, "rbd_conf")) r = set_path(c, cfg->rbd_conf, value);
    else if (!strcmp(key, "rbd_keyring")) r = set_path(c, cfg->rbd_keyring, value);
    else if (!strcmp(key, "rbd_id")) r = set_str(cfg->rbd_id, sizeof cfg->rbd_id, value);
    else if (!strcmp(key, "migration_tls")) {
        r = !strcmp(value, "on") ? 0 : !strcmp(value, "off") ? 0 : -EINVAL;
        cfg->migration_tls = !strcmp(value, "on");
    }
    else if (!strcmp(key, "migration_host")) r = set_str(cfg->migration_host, sizeof cfg->migration_host, value);
    else if (!strcmp(key, "migration_advertise")) r = set_str(cfg->migration_advertise, sizeof cfg->migration_advertise, value);
    else if (!strcmp(key, "hostname")) r = set_str(cfg->hostname, sizeof cfg->hostname, value);
    else if (!strcmp(key, "migration_port")) r = set_u32(&cfg->migration_port, value, 0, 65535);
    else if (!strcmp(key, "max_migrations")) r = set_u32(&cfg->max_migrations, value, 1, 64);
    else if (!strcmp(key, "max_incoming")) r = set_u32(&cfg->max_incoming, value, 1, 64);
    else if (!strcmp(key, "workers")) r = set_u32(&cfg->workers, value, 1, 64);
    else if (!strcmp(key, "max_backups")) r = set_u32(&cfg->max_backups, value, 1, 64);
    else if (!strcmp(key, "cluster_max_backups")) r = set_u32(&cfg->cluster_max_backups, value, 1, 1024);
    else if (!strcmp(key, "backup_host_rate")) r = gw_parse_size(value, &cfg->backup_host_rate);
    else if (!strcmp(key, "backup_host_ops")) r = set_u32(&cfg->backup_host_ops, value, 0, 1000000);
    else if (!strcmp(key, "backup_cpu_priority")) {
        struct gw_cpu_prio p;
        r = *value ? gw_cpu_prio_parse(value, &p) : -EINVAL;   /* empty would read as normal */
        if (!r) gw_cpu_prio_name(&p, cfg->backup_cpu_priority, sizeof cfg->backup_cpu_priority);
        if (r) {
            snprintf(c->err, c->errlen, "bad value for backup_cpu_priority: '%.64s' (idle, batch, batch:N with N 0..19, "
                     "nice:N with N 1..19, or normal)", value);
            return 0;
        }
    }
    else if (!strcmp(key, "backup_side_limit")) {
        r = gw_parse_size(value, &cfg->backup_side_limit);
        if (!r && cfg->backup_side_limit && (cfg->backup_side_limit < GW_LIMIT_SIDE_MIN || cfg->backup_side_limit > GW_LIMIT_SIDE_MAX))
            r = -EINVAL;
    }
    else if (!strcmp(key, "backup_vm_latency_target"))
        r = set_u32(&cfg->backup_vm_latency_target, value, GW_LIMIT_VM_LAT_PCT_MIN, GW_LIMIT_VM_LAT_PCT_MAX);
    else if (!strcmp(key, "backup_adaptive")) {
        r = !strcmp(value, "on") || !strcmp(value, "off") ? 0 : -EINVAL;
        cfg->backup_adaptive = !strcmp(value, "on");
    }
#ifdef GODWIT_TEST_HOOKS
    else if (!strcmp(key, "test_clock_file")) r = set_path(c, cfg->test_clock_file, value);
    else if (!strcmp(key, "test_runner_fault")) r = set_str(cfg->test_runner_fault, sizeof cfg->test_runner_fault, value);
#endif
    else if (!strcmp(key, "cluster") || !strcmp(key, "cluster_registry"))
        r = set_str(cfg->cluster, sizeof cfg->cluster, value);
    else if (!strcmp(key, "cluster_ceph_conf")) r = set_path(c, cfg->cluster_ceph_conf, value);
    else if (!strcmp(key, "cluster_ceph_id")) r = set_str(cfg->cluster_ceph_id, sizeof cfg->cluster_ceph_id, value);
    else if (!strcmp(key, "cluster_keyring")) r = set_path(c, cfg->cluster_keyring, value);
    else if (!strcmp(key, "capacity_memory")) r = gw_parse_size(value, &cfg->capacity_memory);
    else if (!strcmp(key, "capacity_vcpus")) r = set_u32(&cfg->capacity_vcpus, value, 1, 4096);
    else if (!strcmp(key, "metrics_listen")) r = set_str(cfg->metrics_listen, sizeof cfg->metrics_listen, value);
    else {
        snprintf(c->err, c->errlen, "unknown key '%s'", key);
        return 0;
    }
    if (r) {
        snprintf(c->err, c->errlen, "bad value for %s: '%s'", key, value);
        return 0;
    }
    return 1;
}

static void default_runner(char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) { snprintf(out, cap, "godwit-vm"); return; }
    self[n] = 0;
    snprintf(out, cap, "%s/godwit-vm", dirname(self));
}

int gw_daemon_config_load(const char *path, struct gw_daemon_config *cfg, char *err, size_t errlen)
{
    /* 8 workers: StartVm and StopVm hold one for seconds, reads must still find a free one. */
    *cfg = (struct gw_daemon_config){.max_migrations = 2, .max_incoming = 2, .workers = 8, .migration_tls = 1,
                                     .max_backups = 1, .cluster_max_backups = 1024, .backup_adaptive = 1,
                                     .backup_vm_latency_target = GW_LIMIT_VM_LAT_PCT_DEFAULT};
    snprintf(cfg->listen, sizeof cfg->listen, "127.0.0.1:7400");
    snprintf(cfg->state_dir, sizeof cfg->state_dir, "/var/lib/godwit");
    snprintf(cfg->migration_host, sizeof cfg->migration_host, "127.0.0.1");
    default_runner(cfg->runner, sizeof cfg->runner);
    struct gw_cpu_prio batch;
    gw_cpu_prio_parse(GW_BACKUP_CPU_DEFAULT, &batch);
    gw_cpu_prio_name(&batch, cfg->backup_cpu_priority, sizeof cfg->backup_cpu_priority);
    if (gethostname(cfg->hostname, sizeof cfg->hostname - 1)) snprintf(cfg->hostname, sizeof cfg->hostname, "localhost");

    struct load_ctx c = {.cfg = cfg, .err = err, .errlen = errlen};
    /* Relative paths in the file are anchored at its directory, made absolute: runners
     * get them on their command line and must not depend on the daemon's cwd. */
    char tmp[PATH_MAX];
    if (!realpath(path, tmp)) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    snprintf(c.dir, sizeof c.dir, "%s", dirname(tmp));
    c.err[0] = 0;
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    /* ini_parse_file returns the first line whose handler refused it (or a syntax error). */
    err[0] = 0;
    int line = ini_parse_file(f, on_key, &c);
    fclose(f);
    if (line) {
        char why[256];
        snprintf(why, sizeof why, "%s", err[0] ? err : "syntax error");
        snprintf(err, errlen, "%s:%d: %s", path, line, why);
        return -EINVAL;
    }
    if (!!cfg->api_cert[0] != !!cfg->api_key[0] || (cfg->api_client_ca[0] && !cfg->api_cert[0])) {
        snprintf(err, errlen, "%s: api_cert and api_key go together (and api_client_ca needs them)", path);
        return -EINVAL;
    }
    int nx = !!cfg->tls_cert[0] + !!cfg->tls_key[0] + !!cfg->tls_ca[0];
    if (nx != 0 && nx != 3) {
        snprintf(err, errlen, "%s: tls_cert, tls_key and tls_ca go together (all three or none)", path);
        return -EINVAL;
    }
    for (unsigned i = 0; i < cfg->n_backup_targets; i++) {
        if (!cfg->backup_targets[i].store[0]) {
            snprintf(err, errlen, "%s: backup target %s has no store", path, cfg->backup_targets[i].name);
            return -EINVAL;
        }
    }
    if (!cfg->migration_advertise[0])
        snprintf(cfg->migration_advertise, sizeof cfg->migration_advertise, "%s", cfg->migration_host);
    return 0;
}

int gw_read_token_file(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "re");
    if (!f) return -errno;
    char buf[1100];
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    char *s = buf;
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    if (!n || n >= 1024 || n >= outlen) return -EINVAL;
    memcpy(out, s, n + 1);
    return 0;
}

/* Calls fn for each entry of a comma-separated list (spaces around entries dropped) until
 * it returns true; returns whether one did. */
static bool list_any(const char *list, bool (*fn)(const char *entry, size_t n, const void *arg), const void *arg)
{
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        size_t n = (size_t)(e - p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n && fn(p, n, arg)) return true;
        p = e;
    }
    return false;
}

static bool entry_is(const char *entry, size_t n, const void *arg)
{
    return strlen(arg) == n && !memcmp(entry, arg, n);
}

static bool first_entry(const char *entry, size_t n, const void *arg)
{
    char *out = (char *)arg;   /* PATH_MAX bytes */
    char name[GW_CFG_STR];
    if (n >= sizeof name) return true;   /* the first entry decides, even a bad one */
    memcpy(name, entry, n);
    name[n] = 0;
    if (!realpath(name, out)) out[0] = 0;
    return true;
}

int gw_config_image_root(const struct gw_daemon_config *cfg, char *out, size_t cap)
{
    char real[PATH_MAX] = "";
    if (!list_any(cfg->image_roots, first_entry, real)) return -ENOENT;
    if (!real[0]) return -ENOTDIR;
    if (strlen(real) >= cap) return -ENAMETOOLONG;
    memcpy(out, real, strlen(real) + 1);
    return 0;
}

bool gw_config_is_peer(const struct gw_daemon_config *cfg, const char *addr)
{
    return list_any(cfg->peers, entry_is, addr);
}

static bool tap_matches(const char *entry, size_t n, const void *arg)
{
    const char *tap = arg;
    if (entry[n - 1] == '*') return n > 1 && !strncmp(tap, entry, n - 1);   /* a bare "*" allows nothing */
    return entry_is(entry, n, tap);
}

bool gw_config_tap_allowed(const struct gw_daemon_config *cfg, const char *tap)
{
    return tap[0] && list_any(cfg->net_taps, tap_matches, tap);
}

/* Whether real (canonical) lies inside the root directory entry. */
static bool under_root(const char *entry, size_t n, const void *arg)
{
    char name[GW_CFG_STR], root[PATH_MAX];
    const char *real = arg;
    if (n >= sizeof name) return false;
    memcpy(name, entry, n);
    name[n] = 0;
    size_t k;
    return realpath(name, root) && (k = strlen(root)) && !strncmp(real, root, k) &&
           (real[k] == '/' || (k == 1 && root[0] == '/'));
}

static const char *rbd_disk_refused(const struct gw_daemon_config *cfg, const char *disk)
{
    struct gw_rbd_spec s;
    char why[256];
    if (gw_rbd_spec_parse(disk, &s, why, sizeof why)) return "the disk is not rbd:POOL/IMAGE with names of [A-Za-z0-9._-]";
    if (strchr(disk + 4, ':')) return "an RBD disk names no options here: conf, id and keyring are this host's";
    if (!cfg->rbd_pools[0]) return "this host has no rbd_pools configured: it takes no RBD disks";
    if (!list_any(cfg->rbd_pools, entry_is, s.pool)) return "the disk's pool is not in this host's rbd_pools";
    return NULL;
}

int gw_config_disk_arg(const struct gw_daemon_config *cfg, const char *disk, char *out, size_t cap)
{
    int n;
    if (!gw_blk_is_rbd(disk)) n = snprintf(out, cap, "%s", disk);
    else
        n = snprintf(out, cap, "%s%s%s%s%s%s%s", disk, cfg->rbd_conf[0] ? ":conf=" : "", cfg->rbd_conf,
                     cfg->rbd_id[0] ? ":id=" : "", cfg->rbd_id, cfg->rbd_keyring[0] ? ":keyring=" : "", cfg->rbd_keyring);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

const char *gw_config_image_refused(const struct gw_daemon_config *cfg, const char *path, const char *what,
                                    const char **reason)
{
    static __thread char why[160];   /* per thread: handlers run on several */
    char real[PATH_MAX];
    struct stat st;
    const char *r = NULL;
    const char *rbd_why;
    if (!strcmp(what, "disk") && gw_blk_is_rbd(path)) {
        if ((rbd_why = rbd_disk_refused(cfg, path))) {
            r = "RBD_DISK_REFUSED";
            snprintf(why, sizeof why, "%s", rbd_why);
        }
    } else if (path[0] != '/' || strlen(path) > GW_LIMIT_DISK_PATH_MAX) {
        r = "IMAGE_PATH_INVALID";
        snprintf(why, sizeof why, "the %s path must be absolute and under %u bytes", what, GW_LIMIT_DISK_PATH_MAX + 1);
    } else if (!cfg->image_roots[0]) {
        r = "NO_IMAGE_ROOTS";
        snprintf(why, sizeof why, "this host has no image_roots configured: it takes no VM %ss", what);
    } else if (!realpath(path, real)) {
        r = "IMAGE_MISSING";
        snprintf(why, sizeof why, "the %s image does not exist here", what);
    } else if (strcmp(real, path)) {
        r = "IMAGE_NOT_CANONICAL";
        snprintf(why, sizeof why, "the %s path goes through a symbolic link or is not canonical", what);
    } else if (strcmp(what, "disk") && (stat(real, &st) || !S_ISREG(st.st_mode))) {   /* disks may be devices */
        r = "IMAGE_NOT_REGULAR";
        snprintf(why, sizeof why, "the %s image is not a regular file", what);
    } else if (!list_any(cfg->image_roots, under_root, real)) {
        r = "IMAGE_OUTSIDE_ROOTS";
        snprintf(why, sizeof why, "the %s image is not inside this host's image_roots", what);
    }
    if (reason) *reason = r;
    return r ? why : NULL;
}

const char *gw_config_disk_refused(const struct gw_daemon_config *cfg, const char *path)
{
    return gw_config_image_refused(cfg, path, "disk", NULL);
}
