/* The source side of a post-copy (and hybrid) live migration, run in its own thread inside
 * the runner: connect (2 + lanes streams, asking for GW_WIRE_F_POSTCOPY), for hybrid a few
 * pre-copy rounds on the lanes while the VM runs, then pause the VM, name the pages to send
 * again (DIRTY), start the page
 * traffic (request server and background push, pc_server.h), send the VM state, wait for the
 * destination's READY (it loaded the state and is about to run), send GO, then serve pages
 * until the destination says DONE (every page in, memory digest equal).
 *
 * Safe-abort window: until GO leaves, any failure (the destination refuses or dies, the link
 * breaks, a timeout, a cancel) resumes the VM here. From GO on the destination owns the VM
 * and this side never resumes it by itself: a failure then ends in postcopy-paused with the
 * VM paused here and every page kept (docs/postcopy.md).
 *
 * Recovery (pc_resume.h): a broken link after GO (a transport error, or no word for the link
 * timeout) pauses post-copy; the source reconnects with backoff (50 ms doubling to 500 ms) for
 * recover_timeout_ns, takes the migration up again with its resume credential, learns which
 * pages the destination holds and sends the rest. Past that time it waits, paused, for the
 * operator: gw_postcopy_resume (maybe to another address) or gw_postcopy_abandon. */
#ifndef GW_POSTCOPY_POSTCOPY_SOURCE_H
#define GW_POSTCOPY_POSTCOPY_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/codec/page_codec.h"
#include "precopy/migration_progress.h"

struct gw_vm;
struct gw_tls_ctx;

#define GW_HYBRID_DEFAULT_ROUNDS 3u

struct gw_postcopy_params {
    const char *url;               /* "tcp:HOST:PORT" */
    unsigned lanes;                /* background push streams; 0 = 2 */
    enum gw_codec_mode codec;
    const uint8_t *secret;         /* copied */
    size_t secret_len;
    uint64_t bandwidth_limit_bps;  /* pre-copy rounds and background push, 0 = unlimited */
    uint64_t timeout_ns;           /* bounds the phases before GO; 0 = 60 s */
    bool preamble;                 /* as gw_precopy_params */
    struct gw_tls_ctx *tls;        /* taken by gw_postcopy_start, even when it fails */
    uint8_t token[32];
    /* Hybrid: this many pre-copy rounds (round 0 over all data, then dirty-log rounds) while
     * the VM still runs here, then post-copy for the pages dirtied since. 0 = plain post-copy. */
    unsigned precopy_rounds;
    /* Hybrid switches earlier when the downtime a pre-copy switchover would cost (dirty bytes
     * over the measured rate) stays above downtime_limit_ns (0 = 50 ms) for
     * GW_HYBRID_SLOW_ROUNDS rounds in a row, or as soon as it fits (few pages left). */
    uint64_t downtime_limit_ns;
    /* Hybrid also switches when the guest dirties faster than dirty_rate_pct % of the rate
     * pre-copy moves memory, or once pre-copy ran ns_per_gib per GiB of guest memory (0 = off
     * for either; postcopy/hybrid_policy.h). */
    unsigned dirty_rate_pct;
    uint64_t ns_per_gib;
    uint64_t recover_timeout_ns;   /* reconnecting after a broken link, in all; 0 = 30 s */
    unsigned link_timeout_ms;      /* no word from the destination this long = broken; 0 = 2000 */
    bool no_priority;              /* baseline: answers queue behind the push (pc_server_cfg) */
};

struct gw_postcopy;

int gw_postcopy_start(struct gw_vm *vm, const struct gw_postcopy_params *p, struct gw_postcopy **out);
void gw_postcopy_progress(struct gw_postcopy *m, struct gw_mig_progress *out);
/* Asks the migration to stop: honoured before GO only. */
void gw_postcopy_cancel(struct gw_postcopy *m);
bool gw_postcopy_finished(struct gw_postcopy *m);
/* An operator's word: a hybrid migration still in pre-copy switches to post-copy at its next
 * step. 0, or -EALREADY (no pre-copy phase to end: plain post-copy, or switched already). */
int gw_postcopy_switch(struct gw_postcopy *m);
/* Reconnect now (after a broken link), to url when not NULL (the old path is gone).
 * 0, -EINVAL (bad url) or -EALREADY (post-copy is not paused). */
int gw_postcopy_resume(struct gw_postcopy *m, const char *url);
/* Stop recovering: the migration ends in postcopy-paused with the VM paused here (the
 * operator resolves it). Does nothing to a migration whose link is up. */
void gw_postcopy_abandon(struct gw_postcopy *m);
void gw_postcopy_free(struct gw_postcopy *m);

#endif
