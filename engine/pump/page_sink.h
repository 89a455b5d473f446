/* Where a page pump's encoded batches go: a migration session now (one lane per stream), a
 * chunk store for backups next. A sink is an ops table and a context the pump never looks
 * into.
 *
 * Each lane has one worker thread, and a sink's ops for lane i are only called from lane i's
 * worker (write_batch, barrier) in the order the pump's caller queued the work, so a sink
 * needs no locking between the calls of one lane. Different lanes call concurrently. */
#ifndef GW_PUMP_PAGE_SINK_H
#define GW_PUMP_PAGE_SINK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "engine/transport/conn.h"

struct gw_page_sink_ops {
    /* One PAGE_BATCH payload (engine/codec/page_codec.h) of the npages pages pfns[], len
     * bytes, in iov[1..iovcnt); iov[0] is a free slot the sink may point at a header of its
     * own. The iovecs point into guest memory and into the lane's scratch, and pfns into the
     * lane's queue: valid during the call only (a sink that keeps the bytes copies them).
     * Returns 0 or -errno with err set. */
    int (*write_batch)(void *ctx, unsigned lane, struct iovec *iov, int iovcnt, size_t len,
                       const uint64_t *pfns, uint32_t npages, struct gw_err *err);
    /* Everything this lane wrote before is handed over; tag and flags are the pump caller's
     * (pre-copy: the round number, and whether it is the final round). May be NULL. */
    int (*barrier)(void *ctx, unsigned lane, uint64_t tag, uint32_t flags, struct gw_err *err);
    /* Makes everything written so far durable or delivered, from the pump caller's thread
     * once every lane is idle (gw_pump_flush). May be NULL. */
    int (*flush)(void *ctx, struct gw_err *err);
    /* Optional, called by lane's worker just before it encodes a batch: keeps in pfns[]
     * only the pages this lane should still send (in order) and returns how many; 0 skips
     * the batch. Lets a sink whose pages may also leave another way (post-copy's answers to
     * page requests) decide at the last moment, so that a queued page is not yet taken.
     * May be NULL. */
    uint32_t (*claim)(void *ctx, unsigned lane, uint64_t *pfns, uint32_t npages);
    /* The pump failed (first error of any lane, or gw_pump_fail): wake any lane blocked in
     * the sink so it returns promptly. Called once, from any thread. May be NULL. */
    void (*abort)(void *ctx);
};

#endif
