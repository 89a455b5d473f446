/* Busy spans of a host (see busy_spans.h). */
#include "engine/common/busy_spans.h"

#include <stddef.h>

uint64_t gw_busy_spans_begin(struct gw_busy_spans *b, uint64_t now_ns)
{
    struct gw_busy_span *pick = NULL;
    for (unsigned i = 0; i < GW_BUSY_SPANS; i++) {
        struct gw_busy_span *s = &b->s[i];
        if (!s->id) { pick = s; break; }
        if (!pick) { pick = s; continue; }
        /* An ended span before a running one; among ended ones the earliest end; among running
         * ones the earliest start. */
        bool ended = s->to_ns, pick_ended = pick->to_ns;
        if (ended != pick_ended ? ended
                                : ended ? s->to_ns < pick->to_ns : s->from_ns < pick->from_ns)
            pick = s;
    }
    *pick = (struct gw_busy_span){.from_ns = now_ns, .to_ns = 0, .id = ++b->last_id};
    return pick->id;
}

void gw_busy_spans_end(struct gw_busy_spans *b, uint64_t id, uint64_t now_ns)
{
    for (unsigned i = 0; id && i < GW_BUSY_SPANS; i++)
        if (b->s[i].id == id && !b->s[i].to_ns) b->s[i].to_ns = now_ns > b->s[i].from_ns ? now_ns : b->s[i].from_ns + 1;
}

static uint64_t age_ms(uint64_t now_ns, uint64_t t_ns)
{
    return now_ns > t_ns ? (now_ns - t_ns) / 1000000 : 0;
}

unsigned gw_busy_spans_ages(const struct gw_busy_spans *b, uint64_t now_ns, uint64_t horizon_ns,
                            struct gw_busy_age *out, unsigned max)
{
    const struct gw_busy_span *pick[GW_BUSY_SPANS];
    unsigned n = 0;
    for (unsigned i = 0; i < GW_BUSY_SPANS; i++) {
        const struct gw_busy_span *s = &b->s[i];
        if (!s->id) continue;
        if (s->to_ns && now_ns > s->to_ns && now_ns - s->to_ns > horizon_ns) continue;
        /* Kept in order of start (insertion: at most 16). */
        unsigned at = n++;
        while (at && pick[at - 1]->from_ns > s->from_ns) { pick[at] = pick[at - 1]; at--; }
        pick[at] = s;
    }
    /* More than max: the newest matter most (the oldest fall out of the past first). */
    unsigned first = n > max ? n - max : 0;
    for (unsigned i = first; i < n; i++) {
        const struct gw_busy_span *s = pick[i];
        out[i - first] = (struct gw_busy_age){.started_age_ms = age_ms(now_ns, s->from_ns),
                                              .ended_age_ms = s->to_ns ? age_ms(now_ns, s->to_ns) : 0,
                                              .running = !s->to_ns};
    }
    return n - first;
}

void gw_busy_span_of_ages(uint64_t now_ns, const struct gw_busy_age *a, uint64_t *from_ns, uint64_t *to_ns)
{
    uint64_t reach = now_ns / 1000000;   /* the largest age this clock can take back */
    uint64_t started = a->started_age_ms < reach ? a->started_age_ms : reach;
    uint64_t ended = a->running ? 0 : a->ended_age_ms < started ? a->ended_age_ms : started;
    *from_ns = now_ns - started * 1000000;
    *to_ns = now_ns - ended * 1000000;
}
