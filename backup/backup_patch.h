/* Which memory chunks a backup stores as page patches (storage/chunk_patch.h), and the lists
 * the manifest gets for them (docs/backups.md, "Page patches").
 *
 * The base is the backup the VM's change bitmap (backup_since.h) is relative to: the VM's own
 * parent, or, for a VM restored from another VM's backup (a clone), that backup. A chunk whose
 * data differs from the base's is a candidate, compared with the base's whole chunk: the base's
 * chunk, or when the base stored it as a patch, that patch's base, unless the collector's
 * pending list names that whole chunk (storage/gc.h). When the base stored the chunk as a
 * patch, the chunk is also compared with what that patch rebuilds (the whole chunk with the
 * base's patch, or its mid when layered, applied: two levels at most), and a patch layered
 * over the base's patch is made when it carries fewer pages than one over the whole chunk: a
 * clone of a backup that was itself patched then stores only the pages the clone changed, not
 * those its template's backup had patched too (measured: 3.4 times as many pages before). The
 * base chunks (and mid patches) of a batch of candidates are read back from the store (checked
 * against their names) and compared page by page with the data read at the point in time: a
 * chunk with 1 to a quarter of its pages different becomes a patch of exactly those pages. The bitmap is not trusted for which pages differ: on this PVM host a fresh VM's dirty
 * log shows nearly every page its guest touches, reads too (docs/backups.md). It only picks
 * sure candidates (at most a quarter of the chunk's pages logged); the others are compared
 * too, but after 8 in a row that did not pay, only every 8th is, until one pays again, so a
 * busy guest's backup does not read a base for every chunk it rewrote. Write-protect backups
 * only (the chunks are read once, at leisure); the other methods store whole chunks. */
#ifndef GW_BACKUP_BACKUP_PATCH_H
#define GW_BACKUP_BACKUP_PATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "godwit/v1/backup.pb-c.h"

struct gw_backup_since;
struct gw_backup_target;
struct gw_chunk_sink;
struct gw_gc_guard;

struct gw_backup_patcher {
    const Godwit__V1__BackupImage *base;   /* the base's memory image; NULL = patch nothing */
    Godwit__V1__BackupManifest *base_man;  /* owned when the base is another VM's backup */
    const struct gw_backup_since *since;   /* not owned */
    const struct gw_gc_guard *guard;       /* not owned */
    struct gw_backup_target *t;            /* not owned: where the bases are read */
    uint32_t cs;
    uint64_t nchunks, mem_size;
    uint8_t (*patches)[32], (*bases)[32];  /* per chunk, all zero = stored whole; owned */
    uint8_t (*mids)[32];                   /* per chunk, all zero = not layered; owned */
    uint32_t *pages, *pages2;              /* page lists of the chunk being patched (flat, layered); owned */
    uint8_t *scratch;                      /* the patch being built; owned */
    size_t scratch_cap;
    uint8_t *base_data;                    /* one base chunk, decoded; owned */
    uint8_t *mid_data;                     /* that chunk with the mid patch applied; owned */
    uint8_t *enc;                          /* a batch of base objects as read; owned, on first use */
    uint8_t *mid_enc;                      /* a batch of mid patch objects as read; owned, on first use */
    size_t enc_cap, mid_cap;               /* of one object */
    unsigned misses, skipped;              /* candidates in a row that did not pay; skipped since */
    bool warned;                           /* a base could not be read: said once */
    uint64_t patched, patched_bytes;       /* chunks patched, and the patches' raw bytes */
    uint64_t layered;                      /* of those, patches over a mid patch */
    uint64_t bases_read, base_bytes_read;  /* base chunks read back to compare */
    char base_desc[160];                   /* "VM/ID" of the base, for logs */
};

/* Sets p up for a backup of VM vm (memory of mem_size bytes in nchunks chunks of cs bytes)
 * with parent (NULL = none) named parent_id, in t's store, guarded by guard. The base is
 * chosen as above; without one p->base is NULL and only kept entries (gw_backup_patcher_keep)
 * are listed. 0 or -ENOMEM. */
int gw_backup_patcher_open(struct gw_backup_patcher *p, const struct gw_backup_since *since, const char *vm,
                           struct gw_backup_target *t, const Godwit__V1__BackupManifest *parent, const char *parent_id,
                           uint32_t cs, uint64_t nchunks, uint64_t mem_size, const struct gw_gc_guard *guard);
void gw_backup_patcher_close(struct gw_backup_patcher *p);

/* Whether chunk i (len bytes, named name) is worth comparing with its base (see above). */
bool gw_backup_patcher_candidate(struct gw_backup_patcher *p, uint64_t i, size_t len, const uint8_t name[32]);

/* A batch of n chunks before it is stored: chunk k is idx[k], its data bufs + k * cs (cs bytes
 * of room), len[k] bytes named names[k]. For each cand[k], the base is read and compared;
 * a chunk that should be a patch is replaced in its buffer by the patch, and len[k],
 * names[k] (named by sink, gw_chunk_sink_name) say so. A base that cannot be read or checked
 * leaves its chunk whole (the reason is logged once). Never fails the backup. */
void gw_backup_patcher_batch(struct gw_backup_patcher *p, const struct gw_chunk_sink *sink, uint8_t *bufs,
                             const uint64_t *idx, size_t *len, uint8_t (*names)[32], const bool *cand, size_t n);

/* Chunk i is taken unread from the parent image im: so is its patch, if it has one. */
void gw_backup_patcher_keep(struct gw_backup_patcher *p, uint64_t i, const Godwit__V1__BackupImage *im);

/* Chunk i, named name, is the same as chunk i of the parent image im, which stores it as a
 * patch whose objects the collector's list does not name: it is kept (nothing to store). */
bool gw_backup_patcher_reuse(struct gw_backup_patcher *p, uint64_t i, const uint8_t name[32],
                             const Godwit__V1__BackupImage *im);

/* Fills the image's patch lists (lists of nchunks entries, owned by the caller, pointing into
 * p) when any chunk is patched, and its mid list when a patch is layered. Returns 0 (nothing
 * patched: manifest format 1), 1 (patches: format 2) or 2 (layered patches: format 3). */
int gw_backup_patcher_list(const struct gw_backup_patcher *p, Godwit__V1__BackupImage *im, ProtobufCBinaryData *patches,
                           ProtobufCBinaryData *bases, ProtobufCBinaryData *mids);

#endif
