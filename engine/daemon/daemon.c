/* godwitd's lifecycle: load the configuration's state (database, VMs, jobs), re-attach to
 * the runners that survived a restart, serve the API, and shut down without touching the
 * VMs: stopping the daemon never stops a VM. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/api/grpc_health.h"
#include "engine/api/grpc_reflection.h"
#include "engine/api/grpc_server.h"
#include "engine/api/grpc_tls.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/backup_budget.h"
#include "engine/daemon/backup_sched.h"
#include "engine/daemon/cluster.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/metrics.h"
#include "engine/transport/tls.h"
#include "engine/daemon/db.h"

/* The API's FileDescriptorSet, embedded at build time (CMakeLists.txt). */
extern const unsigned char gw_godwit_descriptors[];
extern const size_t gw_godwit_descriptors_len;

uint64_t gw_unix_ms(void)
{
    return gw_wall_ns() / 1000000;
}

static int mkdirs(const char *path)
{
    char tmp[GW_CFG_STR];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return -errno;
        *p = '/';
    }
    return mkdir(tmp, 0700) && errno != EEXIST ? -errno : 0;
}

/* The state directory holds the VM records, tokens and the runners' control sockets: one that
 * already existed must be this user's and writable by nobody else (an operator's --state-dir
 * /tmp/x made by someone else would let them plant links where the daemon writes as root). */
static int state_dir_private(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) < 0) { snprintf(err, errlen, "state dir %s: %s", path, strerror(errno)); return -errno; }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
        snprintf(err, errlen, "state dir %s must be a directory of this user's that no other can write (owner %u, "
                 "mode %03o)", path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
        return -EPERM;
    }
    return 0;
}

int gw_daemon_init(struct gw_daemon *d, const struct gw_daemon_config *cfg, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    d->sup_epoll = d->sup_wake = d->lock_fd = -1;
    d->started_ns = gw_now_ns();
    pthread_mutex_init(&d->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (gw_metrics_init(d)) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }

    if (cfg->token_file[0]) {
        int r = gw_read_token_file(cfg->token_file, d->token, sizeof d->token);
        if (r) { snprintf(err, errlen, "token file %s: %s", cfg->token_file, r == -EINVAL ? "empty or too long" : strerror(-r)); return r; }
    } else if (cfg->api_no_token) {
        gw_warn("no token_file configured (api_no_token = on): the API accepts every caller");
    }
    if (cfg->secret_file[0]) {
        /* The cluster secret keys the migration TLS PSK and the peers' API credential: a short
         * one is refused at start rather than at the first migration. */
        int r = gw_read_token_file(cfg->secret_file, d->secret, sizeof d->secret);
        if (!r && strlen(d->secret) < GW_SEC_MIN_SECRET) r = -ERANGE;
        if (r) {
            snprintf(err, errlen, "secret file %s: %s", cfg->secret_file,
                     r == -ERANGE ? "shorter than 32 bytes" : r == -EINVAL ? "empty or too long" : strerror(-r));
            return r == -ERANGE ? -EINVAL : r;
        }
        if (gw_sec_peer_token((const uint8_t *)d->secret, strlen(d->secret), d->peer_token)) {
            snprintf(err, errlen, "cannot derive the peers' credential");
            return -EIO;
        }
    }
    if (access(cfg->runner, X_OK)) { snprintf(err, errlen, "runner %s: %s", cfg->runner, strerror(errno)); return -errno; }
    int r = mkdirs(cfg->state_dir);
    if (r) { snprintf(err, errlen, "state dir %s: %s", cfg->state_dir, strerror(-r)); return r; }
    if ((r = state_dir_private(cfg->state_dir, err, errlen))) return r;

    /* One daemon per state directory: a second one would fight the first over the runners. */
    char path[GW_CFG_STR + 32];
    snprintf(path, sizeof path, "%s/godwitd.lock", cfg->state_dir);
    d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_EX | LOCK_NB)) {
        snprintf(err, errlen, "%s: %s", path, errno == EWOULDBLOCK ? "another godwitd uses this state directory" : strerror(errno));
        return -EBUSY;
    }
    snprintf(d->vms_dir, sizeof d->vms_dir, "%s/vms", cfg->state_dir);
    snprintf(path, sizeof path, "%s/godwit.db", cfg->state_dir);
    r = gw_db_open(path, &d->db, err, errlen);
    if (r) return r;
    r = gw_vm_load_all(d);
    if (!r) r = gw_jobs_load(d);
    if (r) { snprintf(err, errlen, "cannot load the state from %s: %s", path, strerror(-r)); return r; }
    return gw_cluster_init(d, err, errlen);
}

int gw_daemon_start(struct gw_daemon *d, char *err, size_t errlen)
{
    /* A TCP port, even on loopback, is open to every local user, and the API defines VMs that
     * a root runner starts: it needs a token unless the operator said otherwise. A unix
     * socket is the operator's to share (mode 0600, root's). */
    if (!d->token[0] && strncmp(d->cfg.listen, "unix:", 5) && !d->cfg.api_no_token) {
        snprintf(err, errlen, "listen = %s: a token_file is required (any local user can reach a TCP port); "
                 "listen on a unix: socket, or set api_no_token = on to accept every caller", d->cfg.listen);
        return -EINVAL;
    }
    /* Beyond this machine the API needs a token, and TLS unless the operator said h2c. */
    if (!gw_grpc_addr_is_loopback(d->cfg.listen)) {
        if (!d->token[0]) {
            snprintf(err, errlen, "listen = %s is not a loopback address: a token_file is required", d->cfg.listen);
            return -EINVAL;
        }
        if (!d->cfg.api_cert[0] && !d->cfg.api_h2c) {
            snprintf(err, errlen, "listen = %s is not a loopback address: configure api_cert and api_key (TLS), "
                     "or api_h2c = on for plaintext", d->cfg.listen);
            return -EINVAL;
        }
    }
    struct gw_grpc_server_config sc = {.listen = d->cfg.listen, .token = d->token, .peer_token = d->peer_token,
                                     .workers = d->cfg.workers, .tls_cert = d->cfg.api_cert,
                                     .tls_key = d->cfg.api_key, .tls_client_ca = d->cfg.api_client_ca};
    int r = gw_grpc_server_new(&sc, &d->srv);
    if (!r) r = gw_grpc_health_new(d->srv, false, &d->health);
    if (!r) r = gw_service_register_vm(d);
    if (!r) r = gw_service_register_job(d);
    if (!r) r = gw_service_register_backup(d);
    if (!r) r = gw_service_register_peer(d);
    if (!r) r = gw_service_register_owner(d);
    if (!r) r = gw_service_register_cluster(d);
    if (!r) r = gw_grpc_reflection_new(d->srv, gw_godwit_descriptors, gw_godwit_descriptors_len, &d->reflection);
    if (r) { snprintf(err, errlen, "cannot set up the API: %s", strerror(-r)); return r; }
    gw_sup_reattach(d);
    r = gw_sup_start_thread(d);
    if (r) { snprintf(err, errlen, "cannot start the supervisor: %s", strerror(-r)); return r; }
    d->sup_started = true;
    r = gw_migport_start(d, err, errlen);
    if (r) return r;
    r = gw_budget_start(d);   /* before the API: every backup job finds it */
    if (r) { snprintf(err, errlen, "cannot start the backup budget keeper: %s", strerror(-r)); return r; }
    r = gw_grpc_server_start(d->srv);
    if (r) { snprintf(err, errlen, "cannot listen on %s: %s", d->cfg.listen, strerror(-r)); return r; }
    gw_grpc_health_set(d->health, "godwit.v1.Godwit", GW_HEALTH_SERVING);
    r = gw_cluster_start(d, err, errlen);
    if (!r) r = gw_metrics_start(d, err, errlen);
    if (r) return r;
    gw_evac_resume_all(d);
    r = gw_sched_start(d);
    if (r) { snprintf(err, errlen, "cannot start the backup scheduler: %s", strerror(-r)); return r; }
    return 0;
}

void gw_daemon_shutdown(struct gw_daemon *d)
{
    if (d->health) gw_grpc_health_set(d->health, "", GW_HEALTH_NOT_SERVING);
    if (d->srv) gw_grpc_server_stop(d->srv);
    gw_cluster_stop(d);
    gw_metrics_stop(d);
    gw_migport_stop(d);
    gw_sched_stop(d);
    gw_jobs_shutdown(d);
    gw_budget_stop(d);   /* after the jobs: none joins or leaves any more */
    gw_owner_shutdown(d);
    if (d->sup_started) gw_sup_stop_thread(d);
    if (d->health) gw_grpc_health_free(d->health);
    if (d->srv) gw_grpc_server_free(d->srv);
    gw_grpc_reflection_free(d->reflection);
    /* The runners go on: only our handles on them are released. */
    while (d->vms) {
        struct gw_vm_rec *r = d->vms;
        d->vms = r->next;
        if (r->proc.pidfd >= 0) close(r->proc.pidfd);
        free(r);
    }
    gw_cluster_free(d);
    gw_metrics_free(d);
    gw_db_close(d->db);
    if (d->lock_fd >= 0) close(d->lock_fd);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
}
