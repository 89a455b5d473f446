/* Garbage collection of chunks no backup references, safe while backups run on other hosts.
 * docs/storage.md ("Garbage collection") has the race analysis; in short:
 *
 * A backup may reuse any chunk it finds in the store (deduplication), including one that no
 * manifest references at that moment (left by a deleted backup). So "unreferenced" alone is not
 * "garbage": a backup in progress may be about to list it in its manifest. The collector
 * therefore works in generations:
 *
 *  - Every backup holds a shared lease "gc.backups" for its whole run (gw_gc_guard_enter),
 *    first with an "unknown generation" cookie, then, after reading the pending list
 *    ("gc.pending", generation g), with a cookie that says "saw g". A backup never trusts the
 *    presence of a chunk on the pending list it saw: it writes such a chunk again (which
 *    changes the chunk's version) instead of reusing it.
 *  - A collection (one at a time: exclusive lease "gc.run") reads every manifest, lists every
 *    chunk, and writes the unreferenced ones with their versions (guards) as the pending list
 *    of generation g+1. It then reads the live backups' leases: if every live backup saw g+1,
 *    it may remove the new candidates at once; else, if every live backup saw at least g, it
 *    may remove the previous run's candidates that are still unreferenced; else it removes
 *    nothing this time ("deferred").
 *  - Before removing, manifests are read again (a backup that ended meanwhile wrote its
 *    manifest before it dropped its lease), and each removal is guarded by the version on the
 *    pending list: a chunk written again since is kept.
 *  - A backup checks that its lease is still valid just before it writes its manifest; a
 *    backup whose lease expired (hung for longer than the lease) fails instead of listing
 *    chunks that may be gone.
 *
 * Hostile contents: objects whose names godwit never writes are skipped with a reason (never
 * removed); a chunk-named object larger than any chunk we write is skipped; a manifest that
 * cannot be read or checked stops the collection before anything is removed (its chunks might
 * be in use, and we cannot tell which). */
#ifndef GW_STORAGE_GC_H
#define GW_STORAGE_GC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_store;
struct gw_chunk_keys;

#define GW_GC_PENDING_OBJECT "gc.pending"
#define GW_GC_BACKUPS_LEASE "gc.backups"
#define GW_GC_RUN_LEASE "gc.run"
#define GW_GC_MAX_PENDING 2000000u           /* candidates one pending list holds (112 MB) */
#define GW_GC_MAX_GENERATION (1ull << 48)    /* a pending list's generation is below this */
#define GW_GC_GUARD_LEASE_S 300u             /* a backup's lease; renewed every 100 s */
#define GW_GC_GUARD_MARGIN_S 30u             /* a lease this close to expiry is not trusted */

/* ---- the backup side ---- */
struct gw_gc_guard;

/* Registers a backup in progress (who: the VM name, for the cookie) and reads the pending list.
 * Returns 0 or -errno with a reason in err. Must come before the backup looks at any chunk. */
int gw_gc_guard_enter(struct gw_store *s, const char *who, struct gw_gc_guard **out, char *err, size_t errlen);
/* True when the backup must not trust that the store holds this chunk (it is on the pending
 * list it saw): write it again instead. NULL guard: false. */
bool gw_gc_guard_distrusts(const struct gw_gc_guard *g, const uint8_t hash[32]);
/* 0 while the lease is valid (check before writing the manifest); else -ETIMEDOUT and a reason. */
int gw_gc_guard_check(struct gw_gc_guard *g, char *err, size_t errlen);
/* The generation the backup saw. */
uint64_t gw_gc_guard_generation(const struct gw_gc_guard *g);
void gw_gc_guard_leave(struct gw_gc_guard *g);

/* ---- the collector ---- */
struct gw_gc_params {
    bool dry_run;               /* decide and count; write and remove nothing */
    const struct gw_chunk_keys *keys;   /* the store's keys; NULL for a plain store (an
                                         * encrypted store's manifests are sealed) */
    void (*skipped)(void *ctx, const char *name, const char *reason);
    void *ctx;
};

struct gw_gc_stats {
    uint64_t manifests, chunks_scanned, referenced, candidates, removed, bytes_freed;
    uint64_t deferred;          /* unreferenced, kept for now: a backup in progress may use them */
    uint64_t kept_changed;      /* on the list, but written again since: kept */
    uint64_t skipped;           /* objects not ours (see above) */
    uint64_t live_backups, generation;
    bool pending_replaced;      /* the pending list was unreadable: replaced, nothing removed */
    uint64_t elapsed_ns;
};

/* One collection (see above). 0, -EBUSY (another collection runs), or -errno with the reason
 * in err; on failure nothing more is removed. */
int gw_gc_run(struct gw_store *s, const struct gw_gc_params *p, struct gw_gc_stats *st, char *err, size_t errlen);

/* The pending list's encoding (gc_pending.c), for the collector, the guard and the fuzzer. */
struct gw_gc_entry {
    uint8_t hash[32];
    uint64_t guard[3];
};
/* Layout: "GWGCPND1", u64 generation, u64 count, u64 0, count x (hash 32, guard 3 x u64),
 * SHA-256 of all before it; little-endian. */
int gw_gc_pending_pack(uint64_t gen, const struct gw_gc_entry *e, size_t n, uint8_t **out, size_t *len);
/* Checks length, magic, count against the length and GW_GC_MAX_PENDING, and the hash; entries
 * sorted by hash into *e (freed by the caller). -EBADMSG with a reason. */
int gw_gc_pending_unpack(const uint8_t *buf, size_t len, uint64_t *gen, struct gw_gc_entry **e, size_t *n, char *err,
                         size_t errlen);
/* Reads the store's pending list; an absent list is generation 0 with no entries. */
int gw_gc_pending_load(struct gw_store *s, uint64_t *gen, struct gw_gc_entry **e, size_t *n, char *err, size_t errlen);
/* The entry for hash in a sorted list, or NULL. */
const struct gw_gc_entry *gw_gc_pending_find(const struct gw_gc_entry *e, size_t n, const uint8_t hash[32]);

#endif
