/* Page patches: a chunk stored as the pages that differ from another chunk (its base), so that
 * a clone, or a VM's own incremental backup, that changed a few scattered pages of a chunk
 * stores those pages instead of the whole chunk (docs/backups.md, "Page patches").
 *
 * A patch is the raw content of an ordinary chunk object (chunk.h): named by its own hash (an
 * HMAC in an encrypted store), lz4 when it pays, AES-256-GCM when the store is encrypted, and
 * checked against its name before a byte of it is parsed. The manifest lists, for a patched
 * chunk, the chunk's own name (of the rebuilt data), the patch's name and the base's name
 * (manifest.h), so the collector keeps the base and verify checks it.
 *
 * Raw layout (little-endian):
 *   0  magic "GWPATCH1" (8)
 *   8  version u32 (1)
 *  12  chunk_len u32   length of the chunk it rebuilds (a multiple of 4 KiB, <= GW_CHUNK_MAX)
 *  16  npages u32      pages carried: 1 .. half the chunk's pages
 *  20  reserved u32 (0)
 *  24  base (32)       name hash of the base chunk (a full chunk), or of the mid patch (below)
 *  56  npages x u32    page numbers within the chunk, strictly increasing
 *      npages x 4096   the pages, in that order
 * The length is exactly 56 + npages * 4100.
 *
 * Rebuilding: the base chunk is read and checked against its name (exactly chunk_len bytes:
 * a patch object as a base fails that), the patch's pages are copied over it, and the result
 * must hash to the chunk's name in the manifest.
 *
 * Layered (manifest format 3): a patch may be made over a base with a mid patch applied first
 * (the patch the base backup stored for that chunk). The mid names the base chunk in its
 * header, the top patch names the mid patch object; the manifest lists all three. Rebuilding
 * applies the mid over the base, then the top, and checks only the end result against the
 * chunk's name (every object was checked against its own name when decoded). Two levels at
 * most: a writer never makes a mid of a layered patch. */
#ifndef GW_STORAGE_CHUNK_PATCH_H
#define GW_STORAGE_CHUNK_PATCH_H

#include <stddef.h>
#include <stdint.h>

#include "storage/chunk.h"

#define GW_PATCH_VERSION 1u
#define GW_PATCH_HEADER 56u
#define GW_PATCH_PAGE 4096u

struct gw_store;

/* Bytes of a patch carrying n pages. */
size_t gw_patch_size(uint32_t npages);
/* The most pages a patch of a chunk of chunk_len bytes may carry (half its pages; 0 when the
 * length cannot be patched), and the largest such patch in bytes (a decoder's capacity). */
uint32_t gw_patch_max_pages(size_t chunk_len);
size_t gw_patch_max_size(size_t chunk_len);

/* Writes the patch that rebuilds chunk[0..chunk_len) from the chunk named base: the pages
 * pages[0..n) (strictly increasing page numbers within the chunk) are taken from chunk. out
 * has cap bytes. Returns the patch's length, or -EINVAL (bad length, page list or n out of
 * 1..gw_patch_max_pages) / -ENOSPC (cap too small). The caller owns every buffer. */
long gw_patch_encode(const uint8_t base[32], const uint8_t *chunk, size_t chunk_len, const uint32_t *pages, uint32_t n,
                     uint8_t *out, size_t cap);

/* A checked patch; pointers into the buffer given to gw_patch_parse (valid while it is). */
struct gw_patch {
    uint8_t base[32];
    uint32_t chunk_len, npages;
    const uint8_t *index;         /* npages x u32 LE */
    const uint8_t *pages;         /* npages x 4096 */
};

/* Checks p[0..len) as a patch for a chunk of chunk_len bytes whose base must be want_base
 * (NULL: any): length, magic, version, reserved, chunk length, page count, exact size, every
 * page number in range and increasing, the base. 0, or -EBADMSG with the reason in err. */
int gw_patch_parse(const uint8_t *p, size_t len, size_t chunk_len, const uint8_t want_base[32], struct gw_patch *out,
                   char *err, size_t errlen);

/* Copies a parsed patch's pages over chunk[0..pt->chunk_len) (the base's data). */
void gw_patch_apply(const struct gw_patch *pt, uint8_t *chunk);

/* Decodes the patch object obj[0..objlen) stored under patch_name, checks it for a chunk of
 * len bytes over base, applies it to out[0..len) (which holds the base's checked data) and
 * checks that the result hashes to name. name NULL: a mid layer (below), applied unchecked;
 * the top patch's check covers it. 0, or -EBADMSG / -ENOMEM with the reason in err. */
int gw_patch_finish(const struct gw_chunk_keys *keys, const uint8_t patch_name[32], const uint8_t base[32],
                    const uint8_t name[32], const uint8_t *obj, size_t objlen, uint8_t *out, size_t len, char *err,
                    size_t errlen);

/* Reads the base, the mid patch when there is one (mid not NULL) and the patch from the store
 * and rebuilds chunk name into out[0..len): gw_chunk_fetch of the base, gw_patch_finish of the
 * mid (over base, unchecked), then of the patch (over mid, or base without one). 0, -ENOENT (a
 * missing object), another -errno of the store, or -EBADMSG, with the reason in err. */
int gw_patch_fetch(struct gw_store *s, const struct gw_chunk_keys *keys, const uint8_t name[32],
                   const uint8_t patch_name[32], const uint8_t base[32], const uint8_t *mid, uint8_t *out, size_t len,
                   char *err, size_t errlen);

#endif
