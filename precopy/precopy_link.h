/* The pre-copy link: pre-copy's protocol (rounds, SYNC, switchover, the two-phase commit) on
 * top of the data path's pieces, on each side.
 *
 * Source: an authenticated session of N streams (engine/transport/session.h) and a page pump
 * (engine/pump/pump.h) with one lane per stream, whose sink sends lane i's PAGE_BATCH and
 * END_OF_ROUND records on stream i. Stream 0 also carries the control records. The pump
 * partitions pages by their 2 MiB chunk, so the same page always travels on the same stream
 * and a page sent in round r+1 can never be overtaken by its older copy from round r.
 * A reader thread takes what the destination says on stream 0 at any time (the return
 * path): answers are queued for the waits below; an ERROR or the end of its connection
 * fails the session at once.
 * RDMA (both ends agreed GW_WIRE_F_RDMA_WRITE on every stream): the destination registers
 * its guest memory on every stream at gw_mig_receiver_start and sends RDMA_REGIONS on stream
 * 0; the source's reader checks it (engine/transport/rdma_mem.h) and the sink then sends each
 * batch's raw pages by RDMA WRITE and its record with those pages marked written in place
 * (engine/pump/rdma_batch.h). Everything else (rounds, control records, commit) is the same.
 * Destination: one receiving thread per stream runs the page decoder
 * (engine/pump/page_recv.h), which hands pages to the direct placer
 * (engine/pump/page_placer.h); this file's threads keep the round bookkeeping.
 *
 * Source, driven by the pre-copy engine:
 *     gw_mig_sender_open(&cfg, &tx, &err);          connect N streams, handshake each
 *     for each round r:
 *         gw_mig_send_pages(tx, pfns, n);           queue dirty pages (asynchronous)
 *         gw_mig_send_end_of_round(tx, r, false, &st);  wait until every stream sent them
 *     pause vCPUs; gw_mig_send_switchover(tx, r);
 *     gw_mig_send_pages(tx, last dirty pages); gw_mig_send_end_of_round(tx, r, true, &st);
 *     gw_mig_send_state(tx, vmstate bytes); gw_mig_send_digest(tx, &digest);
 *     gw_mig_send_commit(tx, rounds);                  phase 1: "prepare"
 *     gw_mig_sender_wait_ack(tx, timeout);             destination READY (digest, state ok)
 *     gw_mig_send_go(tx);                              phase 2: the guest is the destination's
 *     gw_mig_sender_wait_running(tx, timeout);         it runs there: destroy the source copy
 *     gw_mig_sender_close(tx).
 *
 * Destination:
 *     gw_mig_receiver_accept(listener, &cfg, &rx, &err);  all N handshakes
 *       (or gw_mig_receiver_accept_conns with N streams accepted elsewhere)
 *     hello = gw_mig_receiver_hello(rx);  create the VM from hello->config, mem_size
 *     gw_mig_receiver_start(rx, mem, mem_size, &err);     receiving threads start
 *     loop gw_mig_receiver_next(rx, &ev, timeout):
 *         ROUND (every page up to round ev.round is in memory), SWITCHOVER, STATE (load it),
 *         DIGEST (compare with the chunk digest of mem, engine/vm/chunk_digest.h),
 *         COMMIT (check digest and state, then gw_mig_receiver_ack(rx) = READY, or
 *         gw_mig_receiver_abort(rx, code, why)),
 *         GO (resume the guest, then gw_mig_receiver_running(rx))
 *     gw_mig_receiver_close(rx).
 * Control events are delivered only once every stream has applied all pages up to the
 * last END_OF_ROUND, so STATE and DIGEST always see the final memory. COMMIT is refused
 * (-EPROTO) unless every stream ended its final round; after it only GO (once ACK was
 * sent) and ERROR are accepted, and no stream may carry pages after its final round.
 *
 * Two-phase commit: the guest must never run on two hosts and never be lost.
 *   - Until the source sends GO, the source owns the guest. Any failure before GO reaches
 *     the destination (ERROR, a broken link, a timeout) makes gw_mig_receiver_next return
 *     an error: the destination discards its copy. The source may resume the guest when
 *     anything up to and including gw_mig_sender_wait_ack failed (it never sent GO).
 *   - Once GO is on its way the destination owns the guest: the destination runs it as soon
 *     as it sees the GO event, whatever happens to the link afterwards.
 *   - gw_mig_sender_wait_running returning 0 means the guest runs on the destination.
 *     -EPROTO (the destination's ERROR) means the destination did not run it and discarded
 *     it: the source may resume. Any other failure of gw_mig_send_go or of
 *     gw_mig_sender_wait_running (timeout, broken link) leaves the outcome IN DOUBT: GO may
 *     or may not have arrived, so the source must keep the guest paused and intact until
 *     it learns out of band whether the destination runs it.
 *   - After RUNNING the source may hang up; that is not an error on the destination.
 *
 * Any failure (transport, hostile input, the peer's ERROR) ends the session: the failing
 * call returns -errno, gw_mig_*_error() gives the message, later calls return the same
 * error, and close releases everything. */
#ifndef GW_PRECOPY_PRECOPY_LINK_H
#define GW_PRECOPY_PRECOPY_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/codec/digest.h"
#include "engine/codec/page_codec.h"
#include "engine/pump/pump.h"
#include "engine/transport/conn.h"
#include "engine/transport/session.h"

#define GW_MIG_DEFAULT_BATCH_PAGES GW_PUMP_DEFAULT_BATCH_PAGES
#define GW_MIG_DEFAULT_TIMEOUT_MS GW_SESSION_DEFAULT_TIMEOUT_MS

struct gw_mig_stats {
    uint64_t bytes_wire;           /* record bytes on the wire (headers included) */
    struct gw_codec_stats codec;   /* pages by encoding, bytes in and out, codec time */
    uint64_t elapsed_ns;           /* since the session opened */
    double wire_mib_s;             /* bytes_wire per second of elapsed time */
    double pages_mib_s;            /* guest memory bytes moved per second */
    uint64_t rdma_bytes;           /* source: page bytes moved by RDMA WRITE (not in bytes_wire) */
};

struct gw_mig_sender_cfg {
    const char *url;                       /* "tcp:HOST:PORT" or "rdma:HOST:PORT" */
    unsigned nstreams;                     /* 1..GW_WIRE_MAX_STREAMS */
    const uint8_t *secret;                 /* cluster secret, caller-owned */
    size_t secret_len;
    const uint8_t *mem;                    /* guest memory, read by the sender threads */
    uint64_t mem_size;                     /* multiple of 4096 */
    const Godwit__V1__VmConfig *config;    /* sent in stream 0's HELLO; may be NULL */
    enum gw_codec_mode codec;
    int lz4_accel;                         /* 0 = 1 */
    unsigned batch_pages;                  /* 0 = GW_MIG_DEFAULT_BATCH_PAGES; max 4096 */
    int timeout_ms;                        /* connect, send, receive; 0 = default */
    /* Optional: called on the sending thread of a stream after each batch of pages pfns[]
     * went out (for work that should run alongside the transfer, such as hashing them). */
    void (*sent)(void *ctx, const uint64_t *pfns, uint32_t n);
    void *sent_ctx;
    /* Stream security (tls.h). preamble: every stream starts with one (what a destination
     * runner or migration port expects), carrying token (NULL = none); then TLS when tls is
     * set (made with gw_tls_ctx_new(client), caller-owned). Every preamble goes out before any
     * TLS handshake starts. Both unset: bare records (unit tests, RDMA). */
    bool preamble;
    struct gw_tls_ctx *tls;
    const uint8_t *token;
    /* Tests only: the RDMA test double's hook (gw_session_cfg.attach). NULL in production. */
    int (*attach)(void *ctx, struct gw_conn *c, struct gw_err *err);
    void *attach_ctx;
};

struct gw_mig_sender;

/* Connects cfg->nstreams streams to cfg->url, authenticates each and starts the sender
 * threads. mem must stay mapped until gw_mig_sender_close. */
int gw_mig_sender_open(const struct gw_mig_sender_cfg *cfg, struct gw_mig_sender **out,
                       struct gw_err *err);

/* Queues pages pfns[0..n) (each < mem_size / 4096, else -ERANGE and nothing after it is
 * queued). The list is copied; pages are read from memory when their batch is encoded.
 * Blocks only while the stream queues are full. */
int gw_mig_send_pages(struct gw_mig_sender *s, const uint64_t *pfns, size_t n);

/* Sends what is queued, then END_OF_ROUND(round, final) on every stream, and waits until all
 * of it is on the wire. *st (may be NULL) gets the session counters at that point. */
int gw_mig_send_end_of_round(struct gw_mig_sender *s, uint64_t round, bool final,
                             struct gw_mig_stats *st);

/* Control records on stream 0, each sent in order after everything queued before it;
 * they return once the record is on the wire. state is a packed VmState (<= 16 MiB). */
int gw_mig_send_switchover(struct gw_mig_sender *s, uint64_t round);
int gw_mig_send_state(struct gw_mig_sender *s, const void *state, size_t len);
int gw_mig_send_digest(struct gw_mig_sender *s, const struct gw_digest *d);
int gw_mig_send_commit(struct gw_mig_sender *s, uint64_t rounds);

/* Sends SYNC after everything queued and waits until the destination answers SYNCED, which
 * it does once every stream has applied all of it. Only before COMMIT. Returns 0, -ETIMEDOUT,
 * -EPROTO (the destination's ERROR), or a transport error (the session has failed). */
int gw_mig_sender_sync(struct gw_mig_sender *s, int timeout_ms);

/* Waits for the destination's ACK of COMMIT (the destination is READY: digest and state
 * checked, guest not yet running). Returns 0; -EPROTO with the destination's message when
 * it sent ERROR, or "unexpected record" for anything but ACK; -EINVAL when no COMMIT was
 * sent; -ETIMEDOUT; or a transport error. Any error fails the session. */
int gw_mig_sender_wait_ack(struct gw_mig_sender *s, int timeout_ms);

/* Sends GO on stream 0 and returns once it is on the wire: from here on the destination
 * owns the guest (see "Two-phase commit" above). Only after gw_mig_sender_wait_ack returned
 * 0, else -EINVAL (and the session fails, no GO leaves). Returns 0 or the session's error;
 * a failure after the ACK leaves the outcome in doubt. */
int gw_mig_send_go(struct gw_mig_sender *s);

/* Waits for the destination's RUNNING after GO. Returns 0 (the guest runs there); -EPROTO
 * with the destination's message when it sent ERROR (it did not run the guest), or
 * "unexpected record" for anything but RUNNING; -EINVAL when GO was not sent; -ETIMEDOUT;
 * or a transport error (-ESHUTDOWN, -ECONNRESET, ...). Any error fails the session; every
 * error but -EPROTO leaves the outcome in doubt. */
int gw_mig_sender_wait_running(struct gw_mig_sender *s, int timeout_ms);

/* Link speed estimate (bytes/s) for the encoders' adaptive lz4 switch; 0 = unknown. */
void gw_mig_sender_set_link_rate(struct gw_mig_sender *s, uint64_t bytes_per_s);

void gw_mig_sender_stats(struct gw_mig_sender *s, struct gw_mig_stats *out);
/* Message of the first error, "" when none. Valid until close. */
const char *gw_mig_sender_error(struct gw_mig_sender *s);
/* The session's error (-errno) or 0 while it is well; safe while another thread aborts it
 * (gw_mig_sender_error's text may still be written until the error is set). */
int gw_mig_sender_failed(struct gw_mig_sender *s);
/* Tells the destination why we stop (ERROR record) and fails the session. After GO the
 * ERROR is not sent: the guest is the destination's and cannot be called back. */
void gw_mig_sender_abort(struct gw_mig_sender *s, int code, const char *why);
/* From any thread: stops the migration before GO at once. Nothing queued is sent any more
 * (only the batches already being written finish), ERROR(code, why) goes to the
 * destination, every stream is shut down and every call of the session's own thread
 * returns the error. After GO (or a failure) it does nothing: the guest is the
 * destination's. A GO attempted after it is refused. */
void gw_mig_sender_cancel(struct gw_mig_sender *s, int code, const char *why);
/* Stops the threads and closes every stream. Safe on NULL. */
void gw_mig_sender_close(struct gw_mig_sender *s);

struct gw_mig_receiver_cfg {
    const uint8_t *secret;
    size_t secret_len;
    int timeout_ms;          /* handshake, accept and per-record receive; 0 = default */
    /* Optional, caller-owned: one bit per 4 KiB page of guest memory (bit pfn % 64 of word
     * pfn / 64; mem_size / 4096 bits rounded up to 64), zeroed by the caller. The receiving
     * threads atomically OR in (__atomic_fetch_or, release) the bit of every page they
     * decode, in any encoding, zero markers included, after the page is in memory. Bits of
     * the pages of a round are visible once its ROUND event is delivered. Must stay valid
     * until gw_mig_receiver_close. */
    uint64_t *touched;
    /* The guest memory given to gw_mig_receiver_start is fresh: all holes of a memfd (or
     * otherwise all zero), and nothing but this receiver writes it until the session ends.
     * A ZERO marker for a page not yet written in this session then leaves the page alone
     * entirely (no read, no write), so it stays a hole; and (with gw_mig_receiver_start)
     * runs of raw pages not yet written are faulted in with one madvise(MADV_POPULATE_WRITE)
     * before they arrive. A page someone else wrote would keep that content when the
     * source says it is zero. */
    bool fresh_memory;
    /* Tests only: the RDMA test double's hook (gw_session_cfg.attach). NULL in production. */
    int (*attach)(void *ctx, struct gw_conn *c, struct gw_err *err);
    void *attach_ctx;
};

enum gw_mig_event_type {
    GW_MIG_EV_ROUND = 1,     /* round, pages (total so far), final */
    GW_MIG_EV_SWITCHOVER,    /* round */
    GW_MIG_EV_STATE,         /* data, len: a packed VmState */
    GW_MIG_EV_DIGEST,        /* digest */
    GW_MIG_EV_COMMIT,        /* round = rounds; answer with ack (READY) or abort */
    GW_MIG_EV_GO,            /* round = rounds; resume the guest, then receiver_running */
    GW_MIG_EV_SYNC,          /* round = seq; answer with gw_mig_receiver_synced */
};

struct gw_mig_event {
    enum gw_mig_event_type type;
    uint64_t round;
    uint64_t pages;
    bool final;
    const uint8_t *data;     /* owned by the receiver, valid until the next call */
    size_t len;
    struct gw_digest digest;
};

struct gw_mig_receiver;

/* Accepts stream 0 on l, runs its handshake, then accepts and authenticates the other
 * streams of the same session. l stays the caller's. */
int gw_mig_receiver_accept(struct gw_listener *l, const struct gw_mig_receiver_cfg *cfg,
                           struct gw_mig_receiver **out, struct gw_err *err);
/* The same for a stream 0 accepted elsewhere (handed over by the daemon); c is taken even
 * on error. l may be NULL when the session has one stream. */
int gw_mig_receiver_accept_conn(struct gw_conn *c, struct gw_listener *l,
                                const struct gw_mig_receiver_cfg *cfg,
                                struct gw_mig_receiver **out, struct gw_err *err);

/* The same for all n streams of a session, connected elsewhere (handed over by the daemon's
 * migration port) and not yet handshaken, in any order. Reads every stream's HELLO first (a
 * source over TCP sends them all before waiting for an answer), then finishes the handshakes
 * in stream order. The streams must be exactly 0..n-1, each once, all of one session (same
 * session id, nstreams and mem_size) with nstreams == n; else -EPROTO with the cause in err
 * (and an ERROR to the source). n is 1..GW_WIRE_MAX_STREAMS, else -EINVAL. Every conn is
 * taken even on error; the array itself stays the caller's. */
int gw_mig_receiver_accept_conns(struct gw_conn **conns, unsigned n, const struct gw_mig_receiver_cfg *cfg,
                                 struct gw_mig_receiver **out, struct gw_err *err);

/* Stream 0's HELLO: config, mem_size, nstreams. Owned by rx. */
const Godwit__V1__MigHello *gw_mig_receiver_hello(const struct gw_mig_receiver *rx);

/* Starts receiving into mem[0..mem_size); mem_size must equal the HELLO's. mem must stay
 * mapped until gw_mig_receiver_close. */
int gw_mig_receiver_start(struct gw_mig_receiver *rx, uint8_t *mem, uint64_t mem_size,
                          struct gw_err *err);
/* Optional, before start: fn(ctx, pfns, from, n) is called on a receiving thread after each
 * batch of pages pfns[0..n) is in place (for work that should run alongside the transfer,
 * such as hashing them). from[i] is where page pfns[i]'s bytes were written from (a buffer
 * valid during the call: the same bytes as guest memory now holds, still in cache), or NULL
 * when the page has to be read in guest memory. Calls of different threads name different
 * pages. */
typedef void gw_mig_placed_fn(void *ctx, const uint64_t *pfns, const uint8_t *const *from, uint32_t n);
void gw_mig_receiver_on_placed(struct gw_mig_receiver *rx, gw_mig_placed_fn *fn, void *ctx);

/* The same for memory that is a MAP_SHARED mapping of memfd (from offset 0): raw pages are
 * written into the memfd with pwrite instead of received in place (new pages are then not
 * zeroed first; see gw_placer_direct_fd). memfd stays the caller's. */
int gw_mig_receiver_start_memfd(struct gw_mig_receiver *rx, uint8_t *mem, int memfd, uint64_t mem_size,
                                struct gw_err *err);

/* Next event, waiting up to timeout_ms (< 0 forever): 0, -ETIMEDOUT, or the session's
 * error (-EPROTO for the peer's ERROR, -EBADMSG/-ERANGE for bad input, transport errors). */
int gw_mig_receiver_next(struct gw_mig_receiver *rx, struct gw_mig_event *ev, int timeout_ms);

/* Answers a GW_MIG_EV_SYNC event: everything sent so far is in memory. */
int gw_mig_receiver_synced(struct gw_mig_receiver *rx, uint64_t seq);

/* Acknowledges COMMIT: the destination is READY (it checked digest and state) but does not
 * run the guest until GO. Only after the COMMIT event, else -EINVAL. Returns 0 or the
 * session's error (then discard the copy: the source keeps the guest). */
int gw_mig_receiver_ack(struct gw_mig_receiver *rx);
/* Tells the source that the guest runs here (RUNNING). Only after the GO event, else
 * -EINVAL. After it the source may hang up without that being an error. An error here
 * (the link broke after GO) does not take the guest back: it keeps running here, and the
 * source is left in doubt until told out of band. */
int gw_mig_receiver_running(struct gw_mig_receiver *rx);
/* Sends ERROR(code, why) to the source and fails the session. Before GO this is the
 * refusal; after GO it tells the source that the guest could not be started here and
 * that this copy is discarded. */
void gw_mig_receiver_abort(struct gw_mig_receiver *rx, int code, const char *why);

/* Before gw_mig_receiver_start: hands the accepted session to another protocol (post-copy,
 * when the HELLO asks for GW_WIRE_F_POSTCOPY) and leaves rx without one; close rx after.
 * NULL once started. */
struct gw_session *gw_mig_receiver_take_session(struct gw_mig_receiver *rx);

void gw_mig_receiver_stats(struct gw_mig_receiver *rx, struct gw_mig_stats *out);
const char *gw_mig_receiver_error(struct gw_mig_receiver *rx);
void gw_mig_receiver_close(struct gw_mig_receiver *rx);

#endif
