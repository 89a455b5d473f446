/* Convergence control (see convergence.h). */
#include "precopy/convergence.h"

#include <stdio.h>
#include <string.h>

#include "engine/common/util.h"

/* Fixed cost of a switchover besides the pages: state, digest, two round trips. */
#define SWITCHOVER_OVERHEAD_NS 1000000ull
/* When the pages left take less than this to send, another round buys nothing. */
#define TINY_DOWNTIME_NS 500000ull
/* Rounds allowed to keep shrinking under the limit before we switch anyway. */
#define MAX_SHRINK_ROUNDS 30u

static const unsigned throttle_steps[] = {20, 40, 60, 80, 95};

void gw_conv_policy_defaults(struct gw_conv_policy *p)
{
    if (!p->downtime_limit_ns) p->downtime_limit_ns = 50ull * 1000000;
    if (!p->timeout_ns) p->timeout_ns = 600ull * 1000000000;
}

void gw_conv_init(struct gw_conv_state *s)
{
    memset(s, 0, sizeof *s);
    s->prev_dirty_pages = UINT64_MAX;
}

void gw_conv_round_sent(struct gw_conv_state *s, uint64_t bytes, uint64_t ns)
{
    /* Round 0's pages are the first "dirty set" the next round is compared with. */
    if (s->prev_dirty_pages == UINT64_MAX) s->prev_dirty_pages = bytes / 4096;
    s->moved_bytes += bytes;
    s->moved_ns += ns;
    if (s->moved_ns) s->bandwidth_bps = gw_u64_of_double((double)s->moved_bytes * 1e9 / (double)s->moved_ns);
}

static void step_throttle(struct gw_conv_state *s)
{
    for (size_t i = 0; i < sizeof throttle_steps / sizeof throttle_steps[0]; i++)
        if (throttle_steps[i] > s->throttle_pct) { s->throttle_pct = throttle_steps[i]; return; }
}

enum gw_conv_decision gw_conv_decide(struct gw_conv_state *s, const struct gw_conv_policy *p,
                                     uint64_t dirty_pages, uint64_t round_ns, uint32_t round,
                                     uint64_t elapsed_ns)
{
    uint64_t bytes = dirty_pages * 4096;
    s->dirty_rate_bps = round_ns ? gw_u64_of_double((double)bytes * 1e9 / (double)round_ns) : 0;
    uint64_t bw = s->bandwidth_bps ? s->bandwidth_bps : 1;
    s->expected_downtime_ns = gw_u64_of_double((double)bytes * 1e9 / (double)bw + SWITCHOVER_OVERHEAD_NS);
    bool fits = s->expected_downtime_ns <= p->downtime_limit_ns;
    bool first = s->prev_dirty_pages == UINT64_MAX;
    bool shrinking_fast = !first && dirty_pages * 2 < s->prev_dirty_pages;
    bool shrinking = first || dirty_pages * 10 < s->prev_dirty_pages * 9;
    s->not_shrinking = shrinking ? 0 : s->not_shrinking + 1;
    s->prev_dirty_pages = dirty_pages;

    if (p->timeout_ns && elapsed_ns >= p->timeout_ns) {
        snprintf(s->reason, sizeof s->reason, "did not converge within %llu s",
                 (unsigned long long)(p->timeout_ns / 1000000000ull));
        return GW_CONV_CANCEL;
    }
    if (fits) {
        if (dirty_pages == 0 || s->expected_downtime_ns - SWITCHOVER_OVERHEAD_NS <= TINY_DOWNTIME_NS) {
            snprintf(s->reason, sizeof s->reason, "%llu dirty pages left: switching over",
                     (unsigned long long)dirty_pages);
            return GW_CONV_SWITCHOVER;
        }
        if (shrinking_fast && round < MAX_SHRINK_ROUNDS && (!p->max_rounds || round + 1 < p->max_rounds)) {
            snprintf(s->reason, sizeof s->reason, "fits the limit but still shrinking: another round");
            return GW_CONV_CONTINUE;
        }
        snprintf(s->reason, sizeof s->reason, "expected downtime %.1f ms fits the limit: switching over",
                 s->expected_downtime_ns / 1e6);
        return GW_CONV_SWITCHOVER;
    }
    if (p->max_rounds && round + 1 >= p->max_rounds) {
        snprintf(s->reason, sizeof s->reason, "did not converge in %u rounds", p->max_rounds);
        return GW_CONV_CANCEL;
    }
    /* The guest dirties as fast as we send: slow it down in growing steps. */
    if (p->auto_converge && s->not_shrinking >= 2) {
        step_throttle(s);
        s->not_shrinking = 0;
        snprintf(s->reason, sizeof s->reason, "dirty rate %.0f MiB/s outruns the link: throttling vCPUs to %u%%",
                 s->dirty_rate_bps / 1048576.0, 100 - s->throttle_pct);
        return GW_CONV_CONTINUE;
    }
    snprintf(s->reason, sizeof s->reason, "expected downtime %.1f ms over the limit: another round",
             s->expected_downtime_ns / 1e6);
    return GW_CONV_CONTINUE;
}
