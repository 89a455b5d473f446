/* The destination's half of the post-copy page traffic: guest memory registered with
 * userfaultfd (uffd_placer.h), a fault thread that turns every missing-page fault into a
 * REQUEST on the priority channel (stream 1; a page is requested once however many threads
 * wait for it), and one receiving thread per stream (1 and the push lanes 2..) that decodes
 * PAGE_BATCH records into the placer. The pages are complete when every lane said LANE_END
 * and the priority channel PUSH_DONE: every page the source sent is then placed, and every
 * page it did not send is a hole there (zero), so unregistering lets the rest read as zero.
 * Stream 0 stays the caller's. */
#ifndef GW_POSTCOPY_PC_CLIENT_H
#define GW_POSTCOPY_PC_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/transport/session.h"
#include "postcopy/uffd_placer.h"

struct gw_pc_client_stats {
    uint64_t pages_requested;      /* pages asked for on the priority channel */
    uint64_t requests;             /* REQUEST records sent */
    uint64_t pages_received;       /* placed */
    uint64_t pages_dup;            /* arrived a second time and were refused */
    uint64_t lat_p50_us, lat_p99_us, lat_max_us;   /* request -> placed */
    uint64_t lat_hist[32];         /* bucket i: [2^i, 2^(i+1)) us */
    uint64_t blocked_ns;           /* sum of request latencies: time vCPUs and devices waited */
    uint64_t vcpu_blocked_ns[GW_PC_MAX_VCPUS];   /* per vCPU: time blocked on missing pages, when
                                                  * the vCPU's own thread took the fault */
    uint64_t pages_waiting;        /* requested and not yet placed */
    unsigned lanes_ended;
    bool push_done;
    bool complete;
    int error;
    char msg[256];
};

struct gw_pc_client;

/* Starts the receivers of streams 1 .. 1 + nlanes over mem[0..mem_size) (guest memory: a
 * memfd mapping that holds no page yet). Until PRECOPY_END each lane writes pre-copy pages
 * straight into memory; then it waits for gw_pc_client_switch. */
int gw_pc_client_start(struct gw_session *ses, uint8_t *mem, uint64_t mem_size, unsigned nlanes,
                       struct gw_pc_client **out, struct gw_err *e);

/* The switch to post-copy, once the source's DIRTY bitmap (npages bits) arrived: waits until
 * every lane ended pre-copy, drops the stale pages (holes again), registers memory with
 * userfaultfd, counts the other pre-copied pages as received, starts the fault thread and
 * lets the lanes go on with UFFDIO_COPY. Before the guest runs here. 0 or -errno. */
int gw_pc_client_switch(struct gw_pc_client *c, const uint64_t *dirty, uint64_t npages, int timeout_ms,
                        struct gw_err *e);
/* Hybrid, before DIRTY (STALE, pc_wire.h): waits up to timeout_ms until every lane passed
 * PRECOPY_END (the source sends it before STALE), then drops the pre-copied pages of stale
 * (npages bits): holes again, noted as not written, so that the switch has only the pages
 * changed since to drop. Returns the pages dropped, or -errno with e. */
int64_t gw_pc_client_drop_stale(struct gw_pc_client *c, const uint64_t *stale, uint64_t npages, int timeout_ms,
                                struct gw_err *e);

/* Waits up to timeout_ms (< 0 forever) until every page is in (0), the traffic failed
 * (its -errno; e says why) or the time ran out (-ETIMEDOUT). */
int gw_pc_client_wait(struct gw_pc_client *c, int timeout_ms, struct gw_err *e);

/* After gw_pc_client_wait returned 0: unregisters guest memory and gives the digest sum of
 * the whole memory as received (postcopy/pc_digest.h). */
int gw_pc_client_finish(struct gw_pc_client *c, uint64_t *digest_sum);

void gw_pc_client_stats(struct gw_pc_client *c, struct gw_pc_client_stats *out);

/* Fails the client from outside (the control stream broke): wakes gw_pc_client_wait. */
void gw_pc_client_fail(struct gw_pc_client *c, const struct gw_err *e);

/* Maps a faulting thread's id to its vCPU index (or -1: a device thread, KVM's own worker),
 * for the per-vCPU blocked time. Set before gw_pc_client_switch; of_tid runs on the fault
 * thread. */
void gw_pc_client_set_vcpu_map(struct gw_pc_client *c, int (*of_tid)(void *ctx, uint32_t tid), void *ctx);
/* Whether vCPU `vcpu` is being timed exactly now (it took a fault in its own thread). */
bool gw_pc_client_vcpu_timed(struct gw_pc_client *c, unsigned vcpu);

/* Recovery after a broken link (pc_resume.h). detach: joins the receivers of the old
 * session (shut it down first); the fault thread goes on noting requests. received: the
 * placed-page bitmap (atomic words; stable once detached). attach: clears the failure, takes
 * ses (not owned; same stream count) for every later request and answer, starts its
 * receivers and asks again for every page requested but not placed. 0 or -errno. */
void gw_pc_client_detach(struct gw_pc_client *c);
const uint64_t *gw_pc_client_received(struct gw_pc_client *c, uint64_t *npages);
int gw_pc_client_attach(struct gw_pc_client *c, struct gw_session *ses, struct gw_err *e);
/* Points later requests at ses (not owned) at once. The fault thread sends on the client's
 * session at any time, so the owner calls this before it closes the session it replaces. */
void gw_pc_client_use_session(struct gw_pc_client *c, struct gw_session *ses);

/* Stops the threads (shut the session down first) and frees c. abandon: post-copy did not
 * complete; every missing page is poisoned first (gw_uffd_placer_poison_missing) so nothing
 * reads it as zero. Safe on NULL. */
void gw_pc_client_close(struct gw_pc_client *c, bool abandon);

#endif
