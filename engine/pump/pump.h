/* The page pump: N lanes, each a worker thread with its own encoder, read guest pages, encode
 * them (zero markers, lz4 when it pays, raw pages pointed at in place) and hand the batches
 * to a sink (page_sink.h). Used by pre-copy now, by post-copy and backups next.
 *
 * Ordering: pages are partitioned across lanes by their 2 MiB chunk
 * (lane = (pfn >> GW_PUMP_CHUNK_SHIFT) % N), and each lane hands its batches over in the
 * order they were queued. So a page queued again (a newer copy) always reaches the sink after
 * its older copy, on the same lane: a receiver that applies each lane in order never lets an
 * older copy overtake a newer one.
 *
 *     gw_pump_open(&cfg, &p, &err);
 *     gw_pump_pages(p, pfns, n);             queue pages (asynchronous; blocks while full)
 *     gw_pump_barrier(p, tag, flags);        every lane: pending pages, then the sink's
 *                                            barrier(tag, flags); waits until all are done
 *     gw_pump_drain(p);                      waits until every lane is idle (no barrier)
 *     gw_pump_flush(p);                      drain, then the sink's flush
 *     gw_pump_close(p).
 *
 * Any failure (a lane's sink or encoder error, or gw_pump_fail) fails the pump: queued work
 * is dropped, the sink's abort op runs once, and every call returns the first error. */
#ifndef GW_PUMP_PUMP_H
#define GW_PUMP_PUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/codec/page_codec.h"
#include "engine/pump/page_sink.h"

#define GW_PUMP_CHUNK_SHIFT 9u           /* 2 MiB of pages per partition chunk */
#define GW_PUMP_MAX_LANES 64u
/* 4 MiB of pages per batch: few records and syscalls per second, and still a short wait for
 * the last batch of a round. */
#define GW_PUMP_DEFAULT_BATCH_PAGES 1024u

struct gw_pump_cfg {
    const uint8_t *mem;                  /* guest memory, read by the workers */
    uint64_t mem_size;                   /* multiple of 4096 */
    unsigned nlanes;                     /* 1..GW_PUMP_MAX_LANES */
    unsigned batch_pages;                /* 0 = default; at most GW_WIRE_MAX_BATCH_PAGES */
    enum gw_codec_mode codec;
    int lz4_accel;                       /* 0 = 1 */
    const struct gw_page_sink_ops *sink;
    void *sink_ctx;
};

struct gw_pump;

/* Starts the lanes. mem must stay mapped and the sink valid until gw_pump_close. */
int gw_pump_open(const struct gw_pump_cfg *cfg, struct gw_pump **out, struct gw_err *err);

/* Lane of a page. */
static inline unsigned gw_pump_lane(uint64_t pfn, unsigned nlanes)
{
    return (unsigned)((pfn >> GW_PUMP_CHUNK_SHIFT) % nlanes);
}

/* Queues pfns[0..n) (each < mem_size / 4096, else -ERANGE and nothing after it is queued).
 * The list is copied; pages are read when their batch is encoded. */
int gw_pump_pages(struct gw_pump *p, const uint64_t *pfns, size_t n);
/* Sends the pending pages of every lane, then the sink's barrier(tag, flags) on each, and
 * waits until all lanes have done it. */
int gw_pump_barrier(struct gw_pump *p, uint64_t tag, uint32_t flags);
/* Sends the pending pages and waits until every lane is idle. */
int gw_pump_drain(struct gw_pump *p);
/* gw_pump_drain, then the sink's flush. */
int gw_pump_flush(struct gw_pump *p);

/* Drops every page and barrier not yet started (a cancel: nothing more goes out) and waits
 * for the batches already in the sink's hands. Returns the pump's error, 0 when none. */
int gw_pump_discard(struct gw_pump *p);

/* Link speed estimate (bytes/s, 0 = unknown) for the encoders' adaptive lz4 switch. */
void gw_pump_set_link_rate(struct gw_pump *p, uint64_t bytes_per_s);
/* Sum of the lanes' encoder counters. */
void gw_pump_stats(struct gw_pump *p, struct gw_codec_stats *out);

/* Fails the pump with e (the first error wins); wakes every waiter. */
void gw_pump_fail(struct gw_pump *p, const struct gw_err *e);
/* The same without the sink's abort: the sink stays usable by the caller (to say why it
 * stops); the lanes drop their queued work and only finish what they hold. */
void gw_pump_stop(struct gw_pump *p, const struct gw_err *e);
/* The first error (0 when none) and its message (valid until close). */
int gw_pump_error(struct gw_pump *p, const char **msg);

/* Stops the lanes (queued work is dropped) and frees p. Safe on NULL. */
void gw_pump_close(struct gw_pump *p);

#endif
