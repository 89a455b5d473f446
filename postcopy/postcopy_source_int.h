/* The source of a post-copy migration, inside: its state, shared by the phase machine
 * (postcopy_source.c) and the recovery after a broken link (postcopy_recover.c). */
#ifndef GW_POSTCOPY_POSTCOPY_SOURCE_INT_H
#define GW_POSTCOPY_POSTCOPY_SOURCE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/codec/wire.h"
#include "engine/transport/session.h"
#include "postcopy/postcopy_source.h"

#define READY_TIMEOUT_MS 15000

struct gw_pc_server;
struct gw_dirty_consumer;

struct gw_postcopy {
    struct gw_vm *vm;
    struct gw_postcopy_params p;
    char url[256];
    uint8_t *secret;
    pthread_t thread;
    pthread_mutex_t lock;          /* prog, cancel, finished, ses, the recovery requests */
    pthread_cond_t cv;             /* an operator's resume or give-up */
    struct gw_mig_progress prog;
    bool cancel, finished, go_sent;
    bool abandon;                  /* stop recovering: the operator resolves the in-doubt VM */
    bool resume_now;               /* the operator asked to reconnect now (resume_url: elsewhere) */
    char resume_url[256];
    bool peer_error;               /* the destination sent ERROR: final, no recovery */
    bool switch_now;               /* the operator asked for post-copy now */
    bool switched;                 /* pre-copy is over (under lock) */
    struct gw_session *ses;
    /* migration thread only */
    struct gw_pc_server *srv;
    struct gw_dirty_consumer *dirty;
    /* Hybrid's log after the pause's fetch: stopped only after GO (stopping dirty logging is a
     * memslot update, milliseconds the guest need not wait for). */
    struct gw_dirty_consumer *dirty_done;
    bool precopy_ended;            /* hybrid with STALE: PRECOPY_END went before the pause */
    uint64_t *push;
    uint64_t *cur_push;            /* what the current server pushes: push, or what a resume still wants */
    uint64_t npages;
    uint8_t resume_key[32];
    uint64_t base_requested, base_refused;   /* from the servers of sessions before this one */
    uint64_t t_start, t_pause, t_go, t_precopy;
    uint64_t t_paused, t_list, t_dirty, t_state;   /* the pause's steps, for the log */
    struct gw_rbuf buf;
    uint64_t pfns[4096];
};

/* The link broke after GO (why): reconnect and take the migration up again (docs/postcopy.md).
 * 0: resumed, 1: the destination had completed, -ECONNABORTED: the operator gave up on it. */
int gw_postcopy_recover(struct gw_postcopy *m, const char *why);

#endif
