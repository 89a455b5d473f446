/* The destination side of a live migration: accept the streams, create an empty VM of the
 * shape the source announces, receive pages straight into its memory, load the state,
 * prove the memory equal with the incremental digest, and start the VM only on GO. Until GO,
 * any failure discards the copy here (the source still runs the VM). */
#ifndef GW_PRECOPY_PRECOPY_DEST_H
#define GW_PRECOPY_PRECOPY_DEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "precopy/migration_progress.h"

struct gw_conn;
struct gw_err;

struct gw_vm;
struct gw_tls_ctx;
struct gw_session;
struct gw_listener;

/* The most sockets a runner takes: the runner's own stream limit (--streams 1..16). */
#define GW_INCOMING_MAX_FDS 16u

struct gw_incoming_params {
    const char *listen_url;    /* "tcp:HOST:PORT" (port 0: any), or NULL with fds */
    /* Accepted sockets handed over (the daemon's migration port): all streams of one
     * session, in any order; taken by gw_incoming_run. nfds = 0 with listen_url. */
    int fds[GW_INCOMING_MAX_FDS];
    unsigned nfds;
    const uint8_t *secret;
    size_t secret_len;
    /* Stream security (engine/transport/tls.h): every stream starts with a preamble (TCP) and,
     * with tls (a server context, the caller's), TLS. Off: bare records (RDMA, old tests). */
    bool preamble;
    struct gw_tls_ctx *tls;
    const char *expect_name;   /* the VM this host reserved; NULL = whatever the source sends */
    uint64_t expect_memory;    /* its memory and vCPUs as reserved (checked against this host's
                                * limits there); 0 = whatever the source sends */
    unsigned expect_vcpus;
    /* The session token of this host's reservation (GW_SEC_TOKEN_SIZE bytes): on a listener,
     * a stream whose preamble lacks it is a stranger's and never defines the session. NULL =
     * any (by hand, tests). */
    const uint8_t *session_token;
    /* The VM's disk here. Never taken from the wire: a source whose VM has a disk is refused
     * when this is NULL. */
    const char *disk_path;
    const char *net;           /* network backend here ("tap:NAME"), NULL for none; never the source's */
    int console_fd;
    int timeout_ms;            /* longest wait for any record; 0 = 60 s */
    /* Post-copy (postcopy/postcopy_dest.h): when the source's HELLO asks for it, called with
     * the accepted session (taken) and the created VM (not started); returns 0 once the VM
     * runs here, or -errno with err set (the VM is then discarded). NULL: such a source is
     * refused. l: the listener the session came through (taken; NULL with fds), where a
     * source whose link broke reconnects. */
    int (*postcopy)(void *ctx, struct gw_session *ses, struct gw_listener *l, struct gw_vm *vm, char *err,
                    size_t errlen);
    void *postcopy_ctx;
    /* Called once the listener is bound, with its URL (port resolved), before waiting. */
    void (*on_listening)(void *ctx, const char *url);
    void *ctx;
    /* Tests only: the RDMA test double's hook (gw_session_cfg.attach). NULL in production. */
    int (*attach)(void *ctx, struct gw_conn *c, struct gw_err *err);
    void *attach_ctx;
};

/* Runs the incoming migration to the end. On success *vm_out is the VM, running. On failure
 * returns -errno, err says why, and nothing is left running. prog (may be NULL) gets the
 * final progress either way. */
int gw_incoming_run(const struct gw_incoming_params *p, struct gw_vm **vm_out,
                    struct gw_mig_progress *prog, char *err, size_t errlen);

#endif
