/* The source's half of the post-copy page traffic, once the guest is paused here and its
 * memory frozen:
 *   - the request server: one thread that reads the priority channel (stream 1) and answers
 *     each REQUEST at once with the pages as a PAGE_BATCH on the same stream, ahead of
 *     everything else (the background push never writes there);
 *   - the background push: one thread that queues every page still to send into a page pump
 *     whose lane i writes to stream 2 + i, in 32 KiB steps, jumping to the neighbourhood of
 *     the latest request (a guest that faults there will likely touch the next pages too).
 *     When done, every lane says LANE_END and the priority channel PUSH_DONE.
 *   - the pacer (pc_pacer.h): keeps the lanes from filling the queue at the link's
 *     bottleneck, where the answers would wait behind them; lanes hold at most 32 KiB
 *     unsent in their sockets (TCP_NOTSENT_LOWAT) and the priority channel is marked urgent
 *     (SO_PRIORITY, DSCP EF) for the queues that know it.
 * A page is sent once: a bitmap (test-and-set) decides whether the request server or the
 * push sends it. The push takes a page only when its lane is about to encode it, so a request
 * for a page still queued in the pump is answered at once; a request for a page a lane
 * already took is not answered again (counted as in_flight: it arrives with its batch).
 * Requests are checked: a wrong length, a pfn out of memory, or any request after PUSH_DONE
 * is refused (counted) and changes nothing. */
#ifndef GW_POSTCOPY_PC_SERVER_H
#define GW_POSTCOPY_PC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/codec/page_codec.h"
#include "engine/transport/session.h"

struct gw_pc_server_cfg {
    struct gw_session *ses;        /* streams 0..1 + nlanes; not owned */
    const uint8_t *mem;            /* frozen guest memory, read only */
    uint64_t mem_size;
    const uint64_t *push;          /* pages to push (bitmap, caller-owned, valid until close) */
    unsigned nlanes;               /* 1..GW_WIRE_MAX_STREAMS - 2 */
    enum gw_codec_mode codec;
    uint64_t rate_bps;             /* background push limit (guest bytes/s), 0 = none */
    /* The benchmark's baseline: answers go on the first push lane, queued behind the bulk
     * pages already in that socket, as on a single-channel post-copy (and, as there, the
     * lanes' sockets are neither kept shallow nor paced). */
    bool no_priority;
};

struct gw_pc_server_stats {
    uint64_t requests;             /* REQUEST records accepted */
    uint64_t pages_requested;      /* pages named in them */
    uint64_t pages_answered;       /* sent on the priority channel */
    uint64_t pages_in_flight;      /* requested but already taken by a push lane */
    uint64_t pages_pushed;         /* sent by the background push */
    uint64_t pages_resent;         /* sent a second time (must stay 0) */
    uint64_t refused;              /* malformed, out of range, or after PUSH_DONE */
    bool push_done;                /* every lane ended and PUSH_DONE is sent */
    int error;                     /* first failure (transport), 0 when none */
    char msg[256];
};

struct gw_pc_server;

/* Opens the pump (cfg->push may still be NULL); no thread of our own runs yet. */
int gw_pc_server_open(const struct gw_pc_server_cfg *cfg, struct gw_pc_server **out, struct gw_err *e);
/* Pre-copy (hybrid): queues pages on the lanes while the guest still runs here. */
int gw_pc_server_precopy(struct gw_pc_server *s, const uint64_t *pfns, size_t n, struct gw_err *e);
/* Waits until every pre-copy page queued so far is handed to the wire (while the guest still
 * runs: what is in flight at the pause would otherwise be sent during it). */
int gw_pc_server_precopy_drain(struct gw_pc_server *s, struct gw_err *e);
/* Ends pre-copy: PRECOPY_END on every lane once everything queued is sent. */
int gw_pc_server_precopy_end(struct gw_pc_server *s, struct gw_err *e);
/* Starts the request server and the push of the pages in push (bitmap, caller-owned, valid
 * until close). After gw_pc_server_precopy_end. */
int gw_pc_server_run(struct gw_pc_server *s, const uint64_t *push, struct gw_err *e);
/* Before run: the push waits for release_push, so that nothing bulky shares the link with
 * the state, READY and GO (the switchover's pause); requests are answered meanwhile. */
void gw_pc_server_hold_push(struct gw_pc_server *s);
void gw_pc_server_release_push(struct gw_pc_server *s);
/* open + precopy_end + run, for a plain post-copy. Returns 0 or -errno (e says why). */
int gw_pc_server_start(const struct gw_pc_server_cfg *cfg, struct gw_pc_server **out, struct gw_err *e);
void gw_pc_server_stats(struct gw_pc_server *s, struct gw_pc_server_stats *out);
/* Stops both threads (the session is shut down by the caller first when they may block)
 * and frees s. Safe on NULL. */
void gw_pc_server_close(struct gw_pc_server *s);

#endif
