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
 *   secret_file = /etc/godwit/secret  ; cluster secret for migration handshakes
 *   max_migrations = 2                ; concurrent outgoing migrations; more are queued
 *   max_incoming = 2                  ; concurrent incoming migrations
 *   hostname = host-a                 ; default: gethostname()
 *   workers = 8                       ; gRPC handler threads (StartVm/StopVm hold one while they wait)
 *
 *   test_runner_fault = drop-go       ; test builds (GODWIT_TEST_HOOKS) only: a fault for runners
 *
 * Unknown keys are errors (a typo must not silently fall back to a default). */
#ifndef GW_DAEMON_CONFIG_H
#define GW_DAEMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define GW_CFG_STR 512

struct gw_daemon_config {
    char listen[GW_CFG_STR];
    char state_dir[GW_CFG_STR];
    char token_file[GW_CFG_STR];
    char runner[GW_CFG_STR];
    char migration_host[GW_CFG_STR];
    char migration_advertise[GW_CFG_STR];
    char secret_file[GW_CFG_STR];
    char hostname[256];
    uint32_t migration_port;
    uint32_t max_migrations;
    uint32_t max_incoming;
    uint32_t workers;
    char test_runner_fault[64];   /* GODWIT_TEST_HOOKS builds only: `--test-fault` for every runner */
};

/* Fills cfg with the defaults, then the file's values. Returns 0, or -EINVAL / -errno with a
 * one-line reason in err. Relative paths in the file are taken relative to its directory. */
int gw_daemon_config_load(const char *path, struct gw_daemon_config *cfg, char *err, size_t errlen);

/* Reads a secret file (a token): its first line without surrounding white space, 1..1023
 * bytes. Returns 0, -EINVAL (empty or too long) or -errno. */
int gw_read_token_file(const char *path, char *out, size_t outlen);

#endif
