/* The chunk-store sink: the seam between whatever reads guest data (today backup/, later the
 * page pump) and a chunk store. Give it a chunk; it names it, skips it when the store already
 * has it, else encodes and queues it (store.h: put is asynchronous, wait makes it durable).
 *
 * Deduplication: a set of names known to be in the store (seeded from the parent backup's
 * manifest and grown as chunks are written or found); a name not in the set is looked up in
 * the store once (stat) before any byte is sent, so a chunk the store holds is never sent again,
 * whichever VM or backup wrote it. All-zero chunks are never stored: their name is empty.
 * Batches (put_many, submit) skip the lookup while the recent ones all missed, and write
 * instead (idempotent): then a chunk the store had may be written again and counted new. */
#ifndef GW_STORAGE_CHUNK_SINK_H
#define GW_STORAGE_CHUNK_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/chunk.h"

struct gw_store;
struct gw_throttle;
struct gw_gc_guard;
struct gw_chunk_sink_pipe;

struct gw_chunk_sink {
    struct gw_store *store;          /* not owned */
    const struct gw_chunk_keys *keys;/* not owned; NULL = plain */
    bool compress;
    const struct gw_gc_guard *guard; /* not owned; NULL = trust every chunk found (storage/gc.h) */
    uint8_t *enc;                    /* encode buffer, owned */
    uint8_t *copy;                   /* private copy of the chunk being put, owned */
    size_t enc_cap, max_chunk;
    uint8_t *known;                  /* open-addressing set of 32-byte names, owned */
    size_t known_cap, known_n;
    struct gw_throttle *throttle;    /* not owned; NULL = none: every store write takes from it */
    struct gw_chunk_sink_pipe *pipe; /* the writer of gw_chunk_sink_submit, owned; NULL until used */
    uint64_t encoded, lz4_refused;   /* chunks encoded; lz4 refusals in a row (compress skipped after some) */
    uint64_t batches, lookup_misses; /* batches stored; looked-up batches in a row that found nothing */
    /* where the time goes (ns; on the writer's thread for lookup, encode and put) */
    uint64_t hash_ns, lookup_ns, encode_ns, put_ns, drain_wait_ns;
    /* counters */
    uint64_t chunks, zero_chunks, new_chunks, reused_chunks, new_bytes, raw_new_bytes, lookups;
    uint64_t blind_chunks;           /* written without a lookup (the recent ones all missed) */
};

/* max_chunk: the largest chunk that will be put. 0 or -ENOMEM. */
int gw_chunk_sink_init(struct gw_chunk_sink *k, struct gw_store *s, const struct gw_chunk_keys *keys,
                       size_t max_chunk, bool compress);
void gw_chunk_sink_free(struct gw_chunk_sink *k);

/* Records a name as present in the store (from a manifest that lists it). */
int gw_chunk_sink_know(struct gw_chunk_sink *k, const uint8_t hash[32]);

/* Stores data[0..len) (1..GW_CHUNK_MAX bytes) unless the store has it. data may be memory a
 * running guest writes: it is copied once first, and the name and the object are both made
 * from that copy, so they always agree; hash gets its name and
 * *is_zero whether it was all zeros (then nothing is stored and the name is meaningless).
 * Returns 0 or -errno (the reason in the store's error). */
int gw_chunk_sink_put(struct gw_chunk_sink *k, const void *data, size_t len, uint8_t hash[32], bool *is_zero);

/* The same for n chunks (n <= GW_CHUNK_SINK_BATCH) at once: their names are looked up in the
 * store together, so one round trip serves the batch. stable: the data cannot change while
 * we read it (a private copy), so it is not copied again. */
#define GW_CHUNK_SINK_BATCH 16u
int gw_chunk_sink_put_many(struct gw_chunk_sink *k, const uint8_t *const *data, const size_t *len, size_t n,
                           bool stable, uint8_t (*hash)[32], bool *is_zero);

/* Names a stable chunk (its hash, or *is_zero): the caller names each chunk as it reads it,
 * while its bytes are still in cache, then submits them in batches. */
void gw_chunk_sink_name(const struct gw_chunk_sink *k, const void *data, size_t len, uint8_t hash[32], bool *is_zero);

/* Pipelined put_many for stable, named chunks (gw_chunk_sink_name): hands the batch to a
 * writer thread that looks it up and stores it while the caller reads and names the next
 * one. The writer reads data[i] until the next submit or drain returns: the caller keeps two
 * sets of buffers and alternates. Returns 0 or the first failure of the PREVIOUS batch's
 * writer (or of this batch's checks), with the reason in the store's error. Counters are
 * updated when a writer is joined (submit, drain), so the caller may read them between
 * calls. No other sink or store call while a writer runs: drain first. */
int gw_chunk_sink_submit(struct gw_chunk_sink *k, const uint8_t *const *data, const size_t *len, size_t n,
                         const uint8_t (*hash)[32], const bool *is_zero);
/* Waits for the writer; returns its result (0 when none ran). gw_chunk_sink_free drains too. */
int gw_chunk_sink_drain(struct gw_chunk_sink *k);

/* Reads and checks one chunk back (name hash, expected raw length len) into out[0..len).
 * Returns 0, -ENOENT, or -EBADMSG with the reason in err. */
int gw_chunk_fetch(struct gw_store *s, const struct gw_chunk_keys *keys, const uint8_t hash[32], uint8_t *out,
                   size_t len, char *err, size_t errlen);

#endif
