/* Shared pieces of the transport tests (test_transport, test_transport_commit): test data,
 * a destination that runs a whole session in a thread, and a hand-driven source stream. */
#ifndef GW_TESTS_MIG_HARNESS_H
#define GW_TESTS_MIG_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/transport/conn.h"
#include "precopy/precopy_link.h"

#define PG 4096u
#define SECRET "s3cret-cluster-key"

/* xorshift; the tests' data only needs to be varied and repeatable. */
uint64_t rnd(void);
/* Fills a page: kind 0 random, 1 text (compresses), 2 zero. */
void fill_page(uint8_t *p, int kind);
/* The memory digest (engine/vm/chunk_digest.h) of mem[0..size), size a multiple of 16 KiB. */
void test_digest(const uint8_t *mem, uint64_t size, struct gw_digest *out);
/* A MAP_SHARED mapping of a new memfd of size bytes (all holes), or NULL. */
uint8_t *fresh_memfd_map(uint64_t size);

/* A destination that runs a whole session in a thread (dest_main), as mode says. */
enum dest_mode {
    DM_NORMAL,             /* check the digest at COMMIT, ACK, run at GO, send RUNNING */
    DM_ABORT_AT_COMMIT,    /* refuse COMMIT with ERROR */
    DM_ERROR_AT_GO,        /* ACK, then answer GO with ERROR (the guest could not start) */
    DM_BENCH,              /* fresh memfd memory, no digest; note when round 0 is complete */
};

struct dest {
    struct gw_listener *l;
    const char *secret;
    enum dest_mode mode;
    bool handoff;          /* accept stream 0 by hand, as a daemon handing over the socket */
    unsigned handover;     /* > 0: accept this many streams by hand and hand them all over,
                            * in reverse order (gw_mig_receiver_accept_conns) */
    bool started, done;    /* atomics: receiving threads run / dest_main returned */
    bool src_closed;       /* atomic, set by the test: the source closed its session */
    uint64_t t_round;      /* gw_now_ns() at the first ROUND event */
    bool acked, go_seen, running;
    uint8_t *given_mem;    /* receive into this (test-owned) instead of allocating */
    uint64_t *touched;     /* passed to the receiver */
    bool fresh_memory;     /* passed to the receiver */
    bool no_digest;        /* memory the digest must not read (PROT_NONE pages) */
    bool prefault;         /* DM_BENCH: populate the memfd first (pages already there) */
    int after_running;     /* gw_mig_receiver_next once the source hung up after RUNNING */
    /* passed to the receiver: the RDMA test double's hook (tests/lib/rdma_loopback.h) */
    int (*attach)(void *ctx, struct gw_conn *c, struct gw_err *err);
    void *attach_ctx;
    /* results */
    int r;
    char err[256];
    uint8_t *mem;
    uint64_t mem_size;
    unsigned nstreams;
    uint64_t rounds_seen, last_round, pages;
    bool digest_ok, state_ok, final_seen;
    struct gw_mig_stats st;
};

/* Starts a destination set up as tmpl (its options; results cleared) on a new listener. */
int start_dest_as(struct dest *d, pthread_t *th, const struct dest *tmpl);
int start_dest(struct dest *d, pthread_t *th, const char *secret, bool handoff, enum dest_mode mode);
/* Joins the destination thread and closes its listener; d->mem stays the caller's. */
void finish_dest(struct dest *d, pthread_t th);
/* A hand-driven source stream that only said HELLO (session id sid[0] = sid). */
struct gw_conn *fake_hello(const char *url, uint8_t sid, uint64_t mem_size, unsigned nstreams, unsigned idx);
/* A hand-driven source: one authenticated stream idx of an nstreams session. */
struct gw_conn *fake_stream(const char *url, uint64_t mem_size, unsigned nstreams, unsigned idx);

#endif
