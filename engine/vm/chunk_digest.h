/* The memory digest: one definition for migrations (incrementally, below) and snapshots
 * (gw_mem_digest, engine/vm/mem_digest.h, computes the same value in one pass).
 *
 * An incremental digest of all guest memory, cheap enough to finish inside a migration's
 * downtime. Memory is cut into 16 KiB chunks, each with its own XXH3-128; chunks form groups
 * of 256 whose digest is the XXH3-128 of their chunk digests; the memory digest is the
 * XXH3-128 of the group digests in order. Chunks start out as holes (the digest of 16 KiB of
 * zeros, nothing read); the caller marks pages it sends or receives, and refresh rehashes
 * only the marked chunks and their groups, so the final digest after a few hundred dirty
 * pages costs well under a millisecond on any memory size. Both migration ends keep one: the source marks what it sends (and
 * the final dirty pages), the destination what it decodes, so at switchover each side only
 * rehashes the last round's chunks, and equal digests prove equal memory. */
#ifndef GW_VM_CHUNK_DIGEST_H
#define GW_VM_CHUNK_DIGEST_H

#include <stdint.h>

#define GW_CHUNK_DIGEST_PAGES 4u
#define GW_CHUNK_DIGEST_GROUP 256u

struct gw_chunk_digest {
    const uint8_t *mem;
    uint64_t mem_size;
    uint64_t nchunks;
    uint64_t *hashes;     /* 2 words per chunk (high, low), owned */
    uint64_t ngroups;
    uint64_t *group_hashes; /* 2 words per group, owned */
    uint64_t *group_stale;  /* one bit per group whose chunks changed, owned */
    uint64_t *stale;      /* one bit per chunk, owned; set with atomics from any thread */
    uint64_t stale_words;
    uint64_t zero_hi, zero_lo;
    uint64_t rehashed;    /* chunks rehashed so far (work counter) */
};

/* mem_size must be a multiple of 16 KiB. All chunks start as holes. 0 or -ENOMEM. */
int gw_chunk_digest_init(struct gw_chunk_digest *d, const uint8_t *mem, uint64_t mem_size);
void gw_chunk_digest_free(struct gw_chunk_digest *d);

/* Marks the chunks holding pages [pfn, pfn + n) stale; thread-safe. */
void gw_chunk_digest_mark(struct gw_chunk_digest *d, uint64_t pfn, uint64_t n);
/* Marks the chunks of every page set in a page bitmap (words 64-bit words); if clear is
 * non-zero the bitmap words are atomically taken (set to 0) as they are read. */
void gw_chunk_digest_mark_bitmap(struct gw_chunk_digest *d, uint64_t *bitmap, uint64_t words, int clear);

/* Hashes now the stale chunks that hold pages pfns[0..n) (each taken atomically, so a mark
 * racing with it is not lost), so that the work is spread over the threads that move the
 * pages instead of waiting for refresh. Thread-safe against marks and against other calls on
 * other chunks; not against refresh or final (call those when nobody hashes). */
void gw_chunk_digest_hash_pages(struct gw_chunk_digest *d, const uint64_t *pfns, uint32_t n);

/* Hashes data (a copy of memory pages [pfn, pfn + n)) into the digest instead of reading
 * memory: how a live snapshot records the contents of its point in time while the guest has
 * already moved on, or how a restore records what it wrote into memory without reading it
 * back. Only whole chunks are taken from data; a chunk the range cuts at either end (or a
 * range inside one chunk) is only marked, to be hashed from memory later, since data lacks its
 * other pages. Thread-safe against other calls on other chunks; a call that marks a chunk
 * leaves it to whoever hashes later (refresh, or one thread), so two calls that share a cut
 * chunk never both write its hash. */
void gw_chunk_digest_set_from(struct gw_chunk_digest *d, uint64_t pfn, uint64_t n, const uint8_t *data);

/* Pages pfns[0..n) were just written into memory, in that order (a receiver's batch; a page may
 * be named twice, the later copy the newer), page pfns[i] from from[i] when from[i] is not NULL.
 * A whole chunk written from one contiguous buffer is hashed from that buffer: its bytes are in
 * cache, and reading them back through a shared mapping would first map every page the write
 * just allocated (a fault per 16 pages, a tenth of a migration receiver's time in a profile).
 * Every other page's chunk is marked and hashed from memory, after all the whole chunks, so a
 * chunk that also has a later copy in the same batch ends with the hash of what memory holds.
 * Thread-safe as gw_chunk_digest_hash_pages. */
void gw_chunk_digest_placed(struct gw_chunk_digest *d, const uint64_t *pfns, const uint8_t *const *from, uint32_t n);

/* Rehashes every stale chunk from memory. */
void gw_chunk_digest_refresh(struct gw_chunk_digest *d);

/* Refreshes, then writes the memory digest (canonical big-endian XXH3-128) into out[16]. */
void gw_chunk_digest_final(struct gw_chunk_digest *d, uint8_t out[16]);

/* The same digest of mem[0..mem_size) in one go, every chunk read (mem_size a multiple of
 * 16 KiB). Returns 0, -EINVAL or -ENOMEM. */
int gw_chunk_digest_buffer(const uint8_t *mem, uint64_t mem_size, uint8_t out[16]);

#endif
