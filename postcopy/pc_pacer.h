/* Keeps post-copy's background push out of the way of page requests' answers.
 *
 * The answers travel on their own connection, but every connection of the migration goes
 * through the same bottleneck (a NIC's queue, a shaper, a switch port). Bulk TCP fills the
 * queue at that bottleneck (BBR keeps a few hundred KiB there, CUBIC all it can), and an
 * answer waits behind it: 2-4 ms at 1 Gbit/s, measured (docs/postcopy.md). So the push is
 * a scavenger, like LEDBAT: it watches the queueing delay its own lanes see (smoothed RTT
 * above the lowest RTT) and, when that passes a target, caps the lanes' kernel pacing
 * (SO_MAX_PACING_RATE) below the rate they achieved, so that the bottleneck drains and
 * stays nearly empty; without a queue it creeps back up towards what the link carried.
 * Just after a cut the cap is lower for a few ms, by as much as drains the queue seen, so
 * that answers do not wait behind it while 85% drains it slowly. The first cut needs two
 * readings in a row with a queue: the lanes' first milliseconds on an idle link (slow
 * start) deliver much less than the link carries, and a ceiling learnt there would hold the
 * push far below it.
 *
 * gw_pc_pacer_decide is the controller alone (no sockets: unit-tested); gw_pc_pacer_tick
 * reads the lanes, decides, and applies the cap. One thread owns a pacer. */
#ifndef GW_POSTCOPY_PC_PACER_H
#define GW_POSTCOPY_PC_PACER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/transport/conn.h"

#define GW_PC_PACER_TICK_MS 5u           /* how often the lanes are read, and the cap creeps up */
#define GW_PC_PACER_FAST_TICK_MS 1u      /* ... in the push's first GW_PC_PACER_FAST_MS */
#define GW_PC_PACER_FAST_MS 100u
#define GW_PC_PACER_TARGET_US 300u       /* queueing delay the push tolerates */
#define GW_PC_PACER_HOLD_MS 60u          /* after a cut, time to see its effect */
#define GW_PC_PACER_CUT_PCT 85u          /* a cut: this share of the rate achieved */
#define GW_PC_PACER_TOP_PCT 95u          /* creeping up stops at this share of the ceiling */
#define GW_PC_PACER_PROBE_MS 300u        /* calm at the top that long: try 5% more */
#define GW_PC_PACER_DRAIN_MS 10u         /* after a cut, a lower cap this long drains the queue */
#define GW_PC_PACER_DRAIN_MAX_PCT 45u    /* ... lower by at most this many points */
#define GW_PC_PACER_FLOOR 1000000ull     /* never below 1 MB/s: the push must finish */

struct gw_pc_pacer_state {
    uint64_t cap;          /* bytes/s over all lanes; 0 = none (no queue seen yet) */
    uint64_t ceiling;      /* the rate achieved when a queue was last seen */
    uint64_t hold_until;   /* ns: no new cut before */
    uint64_t top_since;    /* ns: at the top without a queue since (0 = not at the top) */
    uint64_t cuts;         /* how many times a queue made it cut */
    uint64_t drain_cap;    /* the cap until drain_until (ns), just after a cut */
    uint64_t drain_until;
    bool queued;           /* the last reading saw a queue */
    uint64_t crept_at;     /* ns: the last step up (at most one per GW_PC_PACER_TICK_MS) */
};

/* One step: queue_us is the largest queueing delay a lane saw, rate the bytes/s all lanes
 * delivered since the last step, now in ns (CLOCK_MONOTONIC). Returns the new cap. */
uint64_t gw_pc_pacer_decide(struct gw_pc_pacer_state *st, uint32_t queue_us, uint64_t rate, uint64_t now);

struct gw_pc_pacer {
    struct gw_conn *lanes[GW_WIRE_MAX_STREAMS];   /* not owned */
    unsigned n;
    bool off;              /* no TCP stats here (RDMA): nothing to do */
    uint64_t lane_acked[GW_WIRE_MAX_STREAMS];
    uint64_t last_acked, last_ns, applied;
    struct gw_pc_pacer_state st;
};

void gw_pc_pacer_init(struct gw_pc_pacer *p, struct gw_conn *const *lanes, unsigned n);
/* Reads the lanes and applies the decision; call every GW_PC_PACER_TICK_MS. */
void gw_pc_pacer_tick(struct gw_pc_pacer *p, uint64_t now);

/* The threads on a request's path (the destination's fault thread and priority receiver,
 * the source's request server) each run this first: on a host whose cores are busy with the
 * guest's vCPUs and the push's encryption, a waking thread of higher weight runs sooner
 * (EEVDF), so an answer does not wait for a time slice. Best effort (needs CAP_SYS_NICE). */
#define GW_PC_URGENT_NICE (-10)
void gw_pc_thread_urgent(void);

#endif
