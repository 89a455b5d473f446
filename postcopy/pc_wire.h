/* Post-copy's records. Every one is a GW_WIRE_POSTCOPY record (engine/codec/wire.h) whose
 * payload starts with this fixed header (little-endian):
 *
 *   off size field
 *     0    4 op       enum gw_pc_op
 *     4    4 count    REQUEST: pfns that follow (1..GW_PC_MAX_REQ_PAGES); else 0
 *     8    8 a        op's first value (below)
 *    16    8 b        op's second value
 *    24    8 c        reserved, 0
 *    32  8*n pfns     REQUEST only: the pages asked for
 *
 * Streams of a post-copy session (engine/transport/session.h):
 *   0        control: STATE (GW_WIRE_STATE), READY, GO, DIGEST, DONE, ERROR
 *   1        the priority channel: REQUEST (destination -> source), the answers as
 *            PAGE_BATCH (source -> destination) and PUSH_DONE; nothing bulky ever queues here
 *   2..N-1   the background push, one pump lane each: PAGE_BATCH, then LANE_END
 *
 * Every migration starts with pre-copy pages on the lanes (none for plain post-copy, rounds
 * for hybrid), which the destination writes straight into memory; then PRECOPY_END on every
 * lane and DIRTY on stream 0: a = the page count, followed by the bitmap (one bit per page,
 * (a + 63) / 64 little-endian words) of the pages whose copy there is stale or missing and
 * that the source sends again after the switch. The destination drops those, registers
 * memory with userfaultfd, and every later page is placed with UFFDIO_COPY.
 *
 * Hybrid with GW_WIRE_F_PC_STALE: after its last round and before the pause, the source sends
 * PRECOPY_END on every lane, then STALE on stream 0 (a and the bitmap as DIRTY's: the pages
 * changed since it sent them, so far) and waits for STALE_DROPPED (a = pages dropped). The
 * destination waits for every PRECOPY_END (no receiver writes memory after it) and drops those
 * it holds, while the guest still runs at the source; STALE may come again. The pause then
 * drops only what changed since: DIRTY still names every stale page, STALE's too.
 *
 * Values: READY (a = 0), GO, DIGEST (a = the page-hash sum, postcopy/pc_digest.h), DONE (a =
 * pages received), LANE_END (a = pages this lane carried), PUSH_DONE (a = pages sent in all).
 * KEEPALIVE (either way on stream 0 after GO, every few hundred ms): a silent link is a broken
 * one (postcopy/pc_resume.h).
 *
 * Recovery after a broken link, on stream 0 of the source's new session (pc_resume.h):
 * RESUME_CHALLENGE (destination: a, b = its 16-byte nonce), RESUME_PROOF (source: a, b = its
 * nonce, then a 32-byte MAC; destination: a = b = 0, then its MAC), then RECEIVED (destination:
 * a = the page count and a bitmap as DIRTY's, the pages it holds) or DONE when it completed.
 * A receiver checks op, count, the exact length and every pfn before it acts. */
#ifndef GW_POSTCOPY_PC_WIRE_H
#define GW_POSTCOPY_PC_WIRE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define GW_PC_HDR 32u
#define GW_PC_MAX_REQ_PAGES 64u
#define GW_PC_PROOF_SIZE 32u
#define GW_PC_STREAM_CONTROL 0u
#define GW_PC_STREAM_PRIORITY 1u
#define GW_PC_FIRST_LANE 2u

enum gw_pc_op {
    GW_PC_REQUEST = 1,
    GW_PC_READY = 2,
    GW_PC_GO = 3,
    GW_PC_DIGEST = 4,
    GW_PC_DONE = 5,
    GW_PC_LANE_END = 6,
    GW_PC_PUSH_DONE = 7,
    GW_PC_PRECOPY_END = 8,
    GW_PC_DIRTY = 9,
    GW_PC_KEEPALIVE = 10,
    GW_PC_RESUME_CHALLENGE = 11,
    GW_PC_RESUME_PROOF = 12,
    GW_PC_RECEIVED = 13,
    GW_PC_STALE = 14,
    GW_PC_STALE_DROPPED = 15,
    GW_PC_OP_MAX = GW_PC_STALE_DROPPED,
};

struct gw_pc_msg {
    uint32_t op, count;
    uint64_t a, b;
};

static inline void gw_pc_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t gw_pc_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Packs m's header into out[GW_PC_HDR]. */
static inline void gw_pc_pack(const struct gw_pc_msg *m, uint8_t out[GW_PC_HDR])
{
    memset(out, 0, GW_PC_HDR);
    gw_pc_put64(out, (uint64_t)m->op | (uint64_t)m->count << 32);
    gw_pc_put64(out + 8, m->a);
    gw_pc_put64(out + 16, m->b);
}

/* Parses a payload of len bytes: known op, reserved zero, count within bounds for REQUEST
 * (0 otherwise) and len exactly GW_PC_HDR + 8 * count. Returns 0 or -EBADMSG. The pfns are
 * not checked here (the caller knows the memory size): read them with gw_pc_get64. */
static inline int gw_pc_parse(const uint8_t *p, size_t len, struct gw_pc_msg *m)
{
    if (len < GW_PC_HDR) return -EBADMSG;
    uint64_t w = gw_pc_get64(p);
    m->op = (uint32_t)w;
    m->count = (uint32_t)(w >> 32);
    m->a = gw_pc_get64(p + 8);
    m->b = gw_pc_get64(p + 16);
    if (m->op == 0 || m->op > GW_PC_OP_MAX || gw_pc_get64(p + 24)) return -EBADMSG;
    if (m->op == GW_PC_REQUEST ? (m->count == 0 || m->count > GW_PC_MAX_REQ_PAGES) : m->count != 0)
        return -EBADMSG;
    if (m->op == GW_PC_RESUME_PROOF) return len == GW_PC_HDR + GW_PC_PROOF_SIZE ? 0 : -EBADMSG;
    if (m->op == GW_PC_DIRTY || m->op == GW_PC_RECEIVED || m->op == GW_PC_STALE)   /* the caller checks a against memory */
        return m->a && m->a <= (1ull << 40) && len == GW_PC_HDR + 8 * ((m->a + 63) / 64) ? 0 : -EBADMSG;
    return len == GW_PC_HDR + 8ull * m->count ? 0 : -EBADMSG;
}

/* Whether a receive on c that returned r may simply be tried again: only a timeout that
 * consumed no byte (c->bytes_recv was `before`); a timeout inside a record leaves the stream
 * out of step, which is a failure like any other. */
#define GW_PC_QUIET_TIMEOUT(r, c, before) ((r) == -ETIMEDOUT && (c)->bytes_recv == (before))

#endif
