/* The source side of a pre-copy live migration, run in its own thread inside the runner:
 * connect N streams, round 0 over the RAM that holds data, dirty-log rounds under
 * convergence control, then the switchover: pause, last pages, state, memory digest, and the
 * two-phase commit (COMMIT -> READY -> GO -> RUNNING). Any failure before GO resumes the VM
 * here; after GO the VM is never resumed here by itself (see docs/migration-protocol.md). */
#ifndef GW_PRECOPY_PRECOPY_SOURCE_H
#define GW_PRECOPY_PRECOPY_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/codec/page_codec.h"
#include "precopy/convergence.h"
#include "precopy/migration_progress.h"

struct gw_conn;
struct gw_err;

struct gw_vm;
struct gw_tls_ctx;

/* Test-only fault injection: set by `godwit-vm --test-fault`, which exists only in builds
 * with GODWIT_TEST_HOOKS. */
enum gw_mig_fault {
    GW_FAULT_NONE = 0,
    GW_FAULT_CLOSE_BEFORE_COMMIT,  /* drop the link after the state, before COMMIT */
    GW_FAULT_CLOSE_AFTER_READY,    /* drop the link after READY, before GO */
    GW_FAULT_CORRUPT_DIGEST,       /* send a wrong digest */
    GW_FAULT_DROP_GO,              /* act as if GO went out and RUNNING was lost, without
                                    * sending GO: in doubt here, never started there */
    GW_FAULT_CLOSE_AFTER_GO,       /* send GO, then drop the link before RUNNING: in doubt
                                    * here, running there */
    GW_FAULT_DIE_AFTER_GO,         /* GO sent and RUNNING heard, then the runner dies
                                    * (SIGKILL) before it writes its hand-over record: only
                                    * the daemons can tell where the VM runs */
    /* Faults of an incoming (destination) runner, in a hybrid migration's STALE phase: the
     * source has ended pre-copy and waits for STALE_DROPPED, the VM still running there. */
    GW_FAULT_DIE_AT_STALE,         /* the runner dies (SIGKILL) as STALE arrives */
    GW_FAULT_HANG_AT_STALE,        /* the runner stops (SIGSTOP: hung, its sockets open) */
};

struct gw_precopy_params {
    const char *url;               /* "tcp:HOST:PORT" / "rdma:HOST:PORT" */
    unsigned streams;              /* 0 = chosen from the core count */
    enum gw_codec_mode codec;
    const uint8_t *secret;         /* copied */
    size_t secret_len;
    struct gw_conv_policy policy;
    enum gw_mig_fault fault;
    /* Stream security (engine/transport/tls.h): preamble on every stream (TCP), the TLS client
     * context (NULL = plaintext; taken by gw_precopy_start, even when it fails) and the
     * destination's one-time session token (all zero = none). */
    bool preamble;
    struct gw_tls_ctx *tls;
    uint8_t token[32];
    /* Tests only: the RDMA test double's hook (gw_session_cfg.attach). NULL in production. */
    int (*attach)(void *ctx, struct gw_conn *c, struct gw_err *err);
    void *attach_ctx;
};

struct gw_precopy;

/* The stream count used when the policy names none: one per core, 1..4. */
unsigned gw_precopy_default_streams(void);

/* Starts migrating vm (running) in a new thread. */
int gw_precopy_start(struct gw_vm *vm, const struct gw_precopy_params *p, struct gw_precopy **out);
/* A copy of the current progress. */
void gw_precopy_progress(struct gw_precopy *m, struct gw_mig_progress *out);
/* Asks the migration to stop (honoured before GO). */
void gw_precopy_cancel(struct gw_precopy *m);
/* True once the thread has finished (phase COMPLETED, FAILED, CANCELLED or IN_DOUBT). */
bool gw_precopy_finished(struct gw_precopy *m);
/* Joins the thread and frees m. */
void gw_precopy_free(struct gw_precopy *m);

#endif
