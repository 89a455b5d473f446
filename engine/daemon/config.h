/* godwitd's configuration: an INI file (parsed by libinih) with one [daemon] section.
 *
 *   [daemon]
 *   listen = 127.0.0.1:7400          ; gRPC API ("host:port" or "unix:/path")
 *   state_dir = /var/lib/godwit       ; SQLite database, runner sockets and logs
 *   token_file = /etc/godwit/token    ; bearer token of the API (and of peers); none = no auth
 *   runner = /usr/lib/godwit/godwit-vm ; default: godwit-vm next to godwitd
 *   migration_host = 127.0.0.1        ; address of the migration port (and of per-migration listeners)
 *   migration_port = 7410             ; the host's migration port; 0 = none (per-migration listeners)
 *   migration_advertise = 10.0.0.2    ; the address sources connect to (default: migration_host)
 *   secret_file = /etc/godwit/secret  ; cluster secret (>= 32 bytes): migration TLS PSK and handshakes
 *   migration_tls = on                ; TLS 1.3 on migration streams; "off" = plaintext (explicit only)
 *   tls_cert = host.pem               ; X.509 instead of the PSK: all three of tls_cert,
 *   tls_key = host.key                ;   tls_key and tls_ca (the operator's CA; any cert it
 *   tls_ca = ca.pem                   ;   signed is a cluster member)
 *   peers = 10.0.0.3:7400, host-c:7400 ; the only destinations MigrateVm takes (API addresses)
 *   api_cert = api.pem                ; TLS on the API (ALPN h2) with this certificate and key;
 *   api_key = api.key                 ;   without them the API speaks h2c, which a non-loopback
 *   api_client_ca = clients.pem       ;   listen address refuses unless api_h2c = on. With
 *   api_h2c = off                     ;   api_client_ca, clients need a certificate it signed.
 *   api_no_token = off                ; "on": a loopback TCP API without token_file starts
 *                                     ;   (every local user may call it); a unix: listen
 *                                     ;   address needs no token (its socket is mode 0600)
 *   peer_ca = cluster-api-ca.pem      ; peers' APIs speak TLS: trust this CA for them (and show
 *                                     ;   api_cert/api_key as our client certificate)
 *   image_roots = /srv/images, /var/lib/godwit/images ; where VM disks may live (incoming VMs
 *                                     ;   with a disk need it; CreateVm checks it when set), and
 *                                     ;   the only place Linux guests' kernels and initrds are taken from
 *   net_taps = gwtap*, vm-uplink      ; the taps VMs may use (entries ending in * are prefixes);
 *                                     ;   none = VMs get no network. The taps are the operator's:
 *                                     ;   the daemon opens them, never creates or bridges them
 *   rbd_pools = vms, images           ; Ceph pools whose RBD images may be VM disks
 *                                     ;   (disk "rbd:POOL/IMAGE"; docs/rbd.md); "" = none
 *   rbd_conf = /etc/ceph/ceph.conf    ; this host's Ceph client settings for those disks: the
 *   rbd_id = godwit                   ;   API names only POOL/IMAGE, never a file to open
 *   rbd_keyring = /etc/ceph/ceph.client.godwit.keyring
 *   max_migrations = 2                ; concurrent outgoing migrations; more are queued
 *   max_incoming = 2                  ; concurrent incoming migrations
 *   hostname = host-a                 ; default: gethostname()
 *   workers = 8                       ; gRPC handler threads (StartVm/StopVm hold one while they wait)
 *   cluster = dir:/var/lib/godwit-cluster ; the cluster registry (docs/cluster.md); "" = none
 *                                     ;   or rados:POOL[/NAMESPACE] (Ceph); also cluster_registry =
 *   cluster_ceph_conf = /etc/ceph/ceph.conf ; rados registry: Ceph's conf (default: librados' search),
 *   cluster_ceph_id = godwit          ;   client id (default admin) and keyring (default: the conf's)
 *   cluster_keyring = /etc/ceph/ceph.client.godwit.keyring
 *   capacity_memory = 64G             ; memory offered to VMs (default: the machine's)
 *   capacity_vcpus = 32               ; vCPUs offered to VMs (default: the online CPUs)
 *   metrics_listen = 127.0.0.1:9400   ; Prometheus metrics over HTTP; "" = none
 *
 * Backup targets (docs/backups.md), each in a section of its own; the API names them only:
 *
 *   [backup_target local]
 *   store = dir:/var/lib/godwit/backups   ; or rados:POOL[/NAMESPACE]
 *   ceph_conf = /etc/ceph/ceph.conf       ; rados: librados' config, client id and keyring
 *   ceph_id = backup
 *   keyring = /etc/ceph/ceph.client.backup.keyring
 *   key_file = /etc/godwit/backup.key     ; client-side encryption (AES-256-GCM); none = plain
 *   osd_op_timeout = 10                   ; seconds per OSD operation (1..3600)
 *   mon_op_timeout = 10                   ; seconds per monitor operation, and to connect
 *   inflight = 16                         ; store operations in flight (1..64)
 *   cluster_rate = 400M                   ; bytes/s of store writes for the backups of every host
 *                                         ;   sharing this target, divided among the hosts running
 *                                         ;   backups into it (leases in its store); 0 = none (default)
 *
 *   [daemon] max_backups = 1          ; scheduled backups at once on this host (1..64, default 1)
 *   cluster_max_backups = 4            ; ... across the hosts sharing a target (1..1024, default 1024)
 *   backup_cpu_priority = batch        ; CPU priority of the threads of every backup and ordinary
 *                                      ;   restore this host runs: idle, batch (default), batch:N,
 *                                      ;   nice:N or normal (engine/common/cpu_prio.h)
 *   backup_vm_latency_target = 110     ; adaptive backups keep the VMs' block-request p99 within
 *                                      ;   this percent of their p99 before the backup (101..1000)
 *   backup_side_limit = 512M           ; write-protect backups: the memory side buffer (copies of
 *                                      ;   pages rewritten before the backup read them), 1M..1T;
 *                                      ;   0 (default) = a quarter of each VM's RAM
 *   test_clock_file = clock            ; test builds only: the scheduler's "now" (Unix seconds) from it
 *
 *   [daemon] test_runner_fault = drop-go ; test builds (GODWIT_TEST_HOOKS) only: a fault for runners
 *
 * Unknown keys are errors (a typo must not silently fall back to a default). */
#ifndef GW_DAEMON_CONFIG_H
#define GW_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_CFG_STR 512
#define GW_CFG_MAX_BACKUP_TARGETS 8
#define GW_CFG_TARGET_NAME_MAX 63

/* One [backup_target NAME] section. */
struct gw_backup_target_cfg {
    char name[GW_CFG_TARGET_NAME_MAX + 1];
    char store[GW_CFG_STR];         /* "dir:/abs/path" or "rados:POOL[/NS]" */
    char ceph_conf[GW_CFG_STR], ceph_id[64], keyring[GW_CFG_STR], key_file[GW_CFG_STR];
    uint32_t osd_op_timeout_s, mon_op_timeout_s, inflight;   /* 0 = the store's defaults */
    uint64_t cluster_rate;          /* bytes/s for all hosts' backups into it; 0 = none (backup_budget.c) */
};

struct gw_daemon_config {
    char listen[GW_CFG_STR];
    char state_dir[GW_CFG_STR];
    char token_file[GW_CFG_STR];
    char runner[GW_CFG_STR];
    char migration_host[GW_CFG_STR];
    char migration_advertise[GW_CFG_STR];
    char secret_file[GW_CFG_STR];
    char tls_cert[GW_CFG_STR], tls_key[GW_CFG_STR], tls_ca[GW_CFG_STR];
    char peers[4 * GW_CFG_STR];     /* comma-separated API addresses; "" = none */
    int migration_tls;              /* 1 on (default), 0 off */
    char image_roots[4 * GW_CFG_STR]; /* comma-separated directories; "" = none */
    char net_taps[4 * GW_CFG_STR];  /* comma-separated tap names or NAME* prefixes; "" = none */
    char rbd_pools[GW_CFG_STR];     /* comma-separated Ceph pools for RBD disks; "" = none */
    char rbd_conf[GW_CFG_STR], rbd_keyring[GW_CFG_STR], rbd_id[128];
    char api_cert[GW_CFG_STR], api_key[GW_CFG_STR], api_client_ca[GW_CFG_STR];
    char peer_ca[GW_CFG_STR];
    int api_h2c;                    /* 1: plaintext API allowed on a non-loopback address */
    int api_no_token;               /* 1: a loopback TCP API without token_file accepts every
                                     * local caller (an explicit choice, never the default) */
    char hostname[256];
    uint32_t migration_port;
    uint32_t max_migrations;
    uint32_t max_incoming;
    uint32_t workers;
    uint32_t max_backups, cluster_max_backups;   /* the backup scheduler's slots (backup_sched.c) */
    uint64_t backup_host_rate;      /* bytes/s for all backups on this host; 0 = none */
    uint32_t backup_host_ops;       /* store writes/s for all backups on this host; 0 = none */
    uint32_t backup_vm_latency_target;  /* percent (GW_LIMIT_VM_LAT_PCT_*), for every adaptive backup */
    uint64_t backup_side_limit;     /* bytes (GW_LIMIT_SIDE_*), for every backup; 0 = the runner's default */
    int backup_adaptive;            /* 1 (default): backups throttle adaptively; 0: fixed rates only */
    char backup_cpu_priority[32];   /* canonical (gw_cpu_prio_name): for every backup and ordinary restore */
    char test_clock_file[GW_CFG_STR];   /* GODWIT_TEST_HOOKS builds only: the scheduler's clock */
    char test_runner_fault[64];   /* GODWIT_TEST_HOOKS builds only: `--test-fault` for every runner */
    char cluster[GW_CFG_STR];       /* "dir:/path" or "rados:pool[/ns]"; "" = no registry */
    char cluster_ceph_conf[GW_CFG_STR], cluster_ceph_id[64], cluster_keyring[GW_CFG_STR];
    uint64_t capacity_memory;       /* 0 = the machine's */
    uint32_t capacity_vcpus;        /* 0 = the online CPUs */
    char metrics_listen[GW_CFG_STR];
    struct gw_backup_target_cfg backup_targets[GW_CFG_MAX_BACKUP_TARGETS];
    unsigned n_backup_targets;
};

/* Fills cfg with the defaults, then the file's values. Returns 0, or -EINVAL / -errno with a
 * one-line reason in err. Relative paths in the file are taken relative to its directory. */
int gw_daemon_config_load(const char *path, struct gw_daemon_config *cfg, char *err, size_t errlen);

/* Reads a secret file (a token): its first line without surrounding white space, 1..1023
 * bytes. Returns 0, -EINVAL (empty or too long) or -errno. */
int gw_read_token_file(const char *path, char *out, size_t outlen);

/* NULL when path may be a VM's disk here: absolute, already canonical (no symbolic link,
 * no "." or ".." on the way: realpath(path) is path) and inside one of cfg's image_roots;
 * else why not. With no image_roots configured every disk is refused. */
const char *gw_config_disk_refused(const struct gw_daemon_config *cfg, const char *path);

/* The same rule for any image a VM is given (what: "disk", "kernel", "initrd"), with a
 * machine-readable reason for the API's ErrorInfo in *reason: IMAGE_PATH_INVALID,
 * NO_IMAGE_ROOTS, IMAGE_MISSING, IMAGE_NOT_CANONICAL, IMAGE_NOT_REGULAR, IMAGE_OUTSIDE_ROOTS.
 * The message is the calling thread's until its next call. */
const char *gw_config_image_refused(const struct gw_daemon_config *cfg, const char *path, const char *what,
                                    const char **reason);

/* The first of cfg's image_roots, canonical (realpath), into out: where the daemon makes the
 * images it creates itself (a restored VM's disk). 0, -ENOENT (no image_roots), -ENOTDIR (it
 * does not resolve to a directory that exists) or -ENAMETOOLONG. */
int gw_config_image_root(const struct gw_daemon_config *cfg, char *out, size_t cap);

/* Whether tap is one of cfg's net_taps (an exact entry, or a prefix entry "NAME*"). */
bool gw_config_tap_allowed(const struct gw_daemon_config *cfg, const char *tap);

/* The backup target of that name, or NULL. */
const struct gw_backup_target_cfg *gw_config_backup_target(const struct gw_daemon_config *cfg, const char *name);

/* An RBD disk ("rbd:POOL/IMAGE", docs/rbd.md) is refused unless it names no options (conf=,
 * keyring= and id= come from this host's rbd_* keys, never from the API) and POOL is one of
 * rbd_pools. */

/* The runner's --disk argument for disk into out: a path as it is; an RBD disk with this
 * host's rbd_conf, rbd_id and rbd_keyring appended. 0, or -ENAMETOOLONG. */
int gw_config_disk_arg(const struct gw_daemon_config *cfg, const char *disk, char *out, size_t cap);

/* Whether addr is one of cfg's peers (exact match of an entry, spaces ignored). */
bool gw_config_is_peer(const struct gw_daemon_config *cfg, const char *addr);

#endif
