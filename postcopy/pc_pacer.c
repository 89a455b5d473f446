/* The push's scavenger pacing (see pc_pacer.h). */
#include "postcopy/pc_pacer.h"

#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/common/util.h"

uint64_t gw_pc_pacer_decide(struct gw_pc_pacer_state *st, uint32_t queue_us, uint64_t rate, uint64_t now)
{
    bool queued_before = st->queued;
    st->queued = queue_us > GW_PC_PACER_TARGET_US;
    if (queue_us > GW_PC_PACER_TARGET_US) {
        st->top_since = 0;
        if (now < st->hold_until || !rate) return now < st->drain_until ? st->drain_cap : st->cap;
        /* What the lanes delivered while a queue stood is what the bottleneck carries: the
         * first cut waits for a second reading with a queue, since the lanes' first
         * milliseconds (slow start from an idle link) deliver far less than the link
         * carries, and a cut at that rate would hold the push there for seconds. */
        if (!st->ceiling && !queued_before) return 0;
        /* A host too busy to read its socket in time also delays ACKs, and then the rate
         * is low for another reason: one such reading lowers the ceiling by 1/8 at most, a
         * slower link takes a few cuts. */
        uint64_t floor = st->ceiling - st->ceiling / 8;
        st->ceiling = rate > floor ? rate : floor;
        uint64_t c = st->ceiling / 100 * GW_PC_PACER_CUT_PCT;
        st->cap = c < GW_PC_PACER_FLOOR ? GW_PC_PACER_FLOOR : c;
        st->hold_until = now + GW_PC_PACER_HOLD_MS * 1000000ull;
        st->cuts++;
        /* 85% of the rate drains a standing queue slowly (a 2 ms queue in 13 ms, and every
         * answer meanwhile waits behind it): for GW_PC_PACER_DRAIN_MS the cap is lower by
         * the queue's share of that time, so that the queue is gone when it ends. */
        uint32_t extra = queue_us / (GW_PC_PACER_DRAIN_MS * 10u);   /* percent */
        if (extra > GW_PC_PACER_DRAIN_MAX_PCT) extra = GW_PC_PACER_DRAIN_MAX_PCT;
        c = st->ceiling / 100 * (GW_PC_PACER_CUT_PCT - extra);
        st->drain_cap = c < GW_PC_PACER_FLOOR ? GW_PC_PACER_FLOOR : c;
        st->drain_until = now + GW_PC_PACER_DRAIN_MS * 1000000ull;
        return st->drain_cap;
    }
    if (now < st->drain_until) return st->drain_cap;
    if (!st->cap) return 0;
    /* Faster readings (the push's start) cut sooner, but creep no faster. */
    if (st->crept_at && now - st->crept_at < GW_PC_PACER_TICK_MS * 1000000ull) return st->cap;
    st->crept_at = now;
    uint64_t top = st->ceiling / 100 * GW_PC_PACER_TOP_PCT;
    if (st->cap < top) {
        st->top_since = 0;
        uint64_t c = st->cap + st->cap / 100;   /* +1% a step: ~10%/50 ms */
        st->cap = c > top ? top : c;
        return st->cap;
    }
    if (!st->top_since) st->top_since = now;
    else if (now - st->top_since >= GW_PC_PACER_PROBE_MS * 1000000ull) {
        /* The link may carry more than when it last queued: look. */
        st->ceiling += st->ceiling / 20;
        st->top_since = 0;
    }
    return st->cap;
}

void gw_pc_pacer_init(struct gw_pc_pacer *p, struct gw_conn *const *lanes, unsigned n)
{
    memset(p, 0, sizeof *p);
    if (n > GW_WIRE_MAX_STREAMS) n = GW_WIRE_MAX_STREAMS;
    for (unsigned i = 0; i < n; i++) p->lanes[i] = lanes[i];
    p->n = n;
    p->off = !n;
}

void gw_pc_pacer_tick(struct gw_pc_pacer *p, uint64_t now)
{
    if (p->off) return;
    uint64_t acked = 0;
    uint32_t queue_us = 0;
    for (unsigned i = 0; i < p->n; i++) {
        struct gw_conn_tcp_stats ts;
        if (gw_conn_tcp_stats(p->lanes[i], &ts)) { p->off = true; return; }
        acked += ts.bytes_acked;
        /* A lane that delivered nothing since the last step has a stale RTT: it says
         * nothing about the queue now. */
        uint32_t q = ts.rtt_us > ts.min_rtt_us ? ts.rtt_us - ts.min_rtt_us : 0;
        if (ts.bytes_acked != p->lane_acked[i] && q > queue_us) queue_us = q;
        p->lane_acked[i] = ts.bytes_acked;
    }
    if (!p->last_ns || now <= p->last_ns) {
        p->last_ns = now;
        p->last_acked = acked;
        return;
    }
    uint64_t rate = gw_u64_of_double((double)(acked - p->last_acked) * 1e9 / (double)(now - p->last_ns));
    p->last_ns = now;
    p->last_acked = acked;
    uint64_t cap = gw_pc_pacer_decide(&p->st, queue_us, rate, now);
    /* Re-apply only on a change of more than 1/64: each is a syscall per lane. */
    uint64_t diff = cap > p->applied ? cap - p->applied : p->applied - cap;
    if (cap && (!p->applied || diff > p->applied / 64)) {
        for (unsigned i = 0; i < p->n; i++) gw_conn_set_max_pacing(p->lanes[i], cap / p->n + 1);
        p->applied = cap;
    }
}

void gw_pc_thread_urgent(void)
{
    /* Per thread on Linux: PRIO_PROCESS with a thread id. Refused without CAP_SYS_NICE
     * (then the thread keeps its nice value: only slower, never wrong). */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), GW_PC_URGENT_NICE)) { /* best effort */ }
}
