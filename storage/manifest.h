/* Backup manifests in the chunk store: naming, framing and the checks a manifest read back
 * from a store must pass before anything trusts it.
 *
 * Object "m.<vm>.<id>", 48-byte header then the BackupManifest protobuf
 * (proto/godwit/v1/backup.proto). In a plain store: magic "GWMANIF1" (8), u32 LE protobuf
 * length, u32 0, the SHA-256 of the protobuf (32). In an encrypted store the manifest is
 * sealed: magic "GWMSEAL1" (8), u32 LE length, u32 0, a random nonce (12), the AES-256-GCM tag
 * (16), u32 0, then the protobuf encrypted under the key file's manifest key (chunk.h), with
 * the header (its tag zeroed) and the object's name as additional data. A manifest holds the
 * VM's registers and device state: sealed, the store can neither read them nor choose them,
 * and cannot move a manifest to another VM's or backup's name. Each kind of store reads only
 * its own kind: a plain manifest in an encrypted store is refused (a forger would write one).
 * A manifest is written only after every chunk it names is durable, and it is listed in the
 * VM's index ("b.<vm>", key = backup id) only after the manifest itself is durable: a backup
 * that died half-way leaves unnamed chunks behind, never a listed backup with missing chunks.
 *
 * Checks on unpack, each failing with its own reason: length and magic, the kind of manifest
 * against the store's, the protobuf's hash or tag, decoding, format version, names (VM and id
 * must be store-safe and name the object the manifest was read from), image sizes within limits,
 * chunk sizes a power of two in [4 KiB, GW_CHUNK_MAX], the chunk count exactly what size and
 * chunk size imply, every chunk name 0 or 32 bytes, the state present with the VM configuration
 * matching the memory image, and a 16-byte memory digest. Format 2 adds page patches
 * (chunk_patch.h): lists of patch and base names, one entry per chunk or none, a patched chunk
 * with all three names 32 bytes and a patchable length; format 1 with patches is refused.
 * Format 3 adds layered patches: a list of mid patch names, one per chunk or none, 32 bytes
 * only on a patched chunk; format 2 with that list is refused. Writers use the lowest format
 * that holds what they list, so older readers keep reading those backups and refuse the
 * others by their format instead of misreading them. */
#ifndef GW_STORAGE_MANIFEST_H
#define GW_STORAGE_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "godwit/v1/backup.pb-c.h"

#define GW_MANIFEST_VERSION 1u
#define GW_MANIFEST_VERSION_PATCHES 2u   /* an image lists page patches */
#define GW_MANIFEST_VERSION_LAYERS 3u    /* a patch is layered over another (patch_mids) */
#define GW_MANIFEST_MAX (64u << 20)          /* largest manifest object we read */
#define GW_BACKUP_MAX_MEMORY (64ull << 30)   /* the runner's own limit on guest RAM */
#define GW_BACKUP_MAX_DISK (1ull << 40)
#define GW_BACKUP_ID_MAX 64u

struct gw_store;
struct gw_chunk_keys;

/* Object and index names; buffers of at least 160 bytes. -EINVAL for unsafe vm or id. */
int gw_manifest_object(const char *vm, const char *id, char *buf, size_t cap);
int gw_backup_index_name(const char *vm, char *buf, size_t cap);
/* Chunk object name "c.<64 hex>" of a 32-byte hash; buf of at least 67 bytes. */
void gw_chunk_object(const uint8_t hash[32], char *buf);

/* Whether chunk i of im is stored as a page patch (im checked by gw_manifest_unpack). */
bool gw_manifest_patched(const Godwit__V1__BackupImage *im, size_t i);
/* The mid patch under chunk i's patch (format 3), or NULL when the patch is over its base. */
const uint8_t *gw_manifest_patch_mid(const Godwit__V1__BackupImage *im, size_t i);

/* Packs m into a new buffer (*out, freed by the caller), sealed when k is an encrypted
 * store's keys (k NULL: plain). Returns 0, -ENOMEM, -EFBIG (over GW_MANIFEST_MAX), -EINVAL
 * (m's VM or id cannot name an object) or -EIO (the cipher or the random source failed). */
int gw_manifest_pack(const Godwit__V1__BackupManifest *m, const struct gw_chunk_keys *k, uint8_t **out, size_t *len);
/* Checks and decodes an object read from the store as name ("m.<vm>.<id>") under keys k
 * (NULL: a plain store); *m is freed with godwit__v1__backup_manifest__free_unpacked. Returns
 * 0 or -EBADMSG with the reason in err. */
int gw_manifest_unpack(const uint8_t *obj, size_t len, const struct gw_chunk_keys *k, const char *name,
                       Godwit__V1__BackupManifest **m, char *err, size_t errlen);

/* Whether obj is a sealed manifest, by its magic alone (nothing checked or trusted). */
bool gw_manifest_sealed(const uint8_t *obj, size_t len);

/* Reads, checks and decodes the manifest of backup id of vm from store s with keys k.
 * -ENOENT when the store has no such backup. */
int gw_manifest_load(struct gw_store *s, const struct gw_chunk_keys *k, const char *vm, const char *id,
                     Godwit__V1__BackupManifest **m, char *err, size_t errlen);

#endif
