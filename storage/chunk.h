/* Chunk encoding for the chunk store: how one fixed-size piece of a backup becomes one stored
 * object, and how a stored object is checked before a byte of it is trusted.
 *
 * Name: the SHA-256 of the raw chunk (64 hex digits), or, when the store is encrypted, an
 * HMAC-SHA256 of it under a key derived from the key file, so the store learns nothing about
 * contents from names. Equal data gives equal names: a chunk already stored is never sent again.
 *
 * Object layout (little-endian):
 *   0  magic "GWCHUNK1" (8)
 *   8  flags u32: bit 0 lz4, bit 1 AES-256-GCM
 *  12  raw_len u32      length of the chunk before compression (1..GW_CHUNK_MAX)
 *  16  payload_len u32  bytes that follow the header
 *  20  reserved u32 (0)
 *  24  nonce (12) and tag (16) when encrypted, zeros otherwise
 *  52  payload: the chunk, lz4-compressed when that saved at least 1/8 (and a 64 KiB probe
 *      of it did), then encrypted
 * The header (its first 52 bytes) is the GCM additional data, so flags and lengths cannot be
 * changed without the tag failing.
 *
 * Decoding checks, in order: object length, magic, flags, raw_len against GW_CHUNK_MAX and
 * the caller's capacity, payload_len against the object, the tag, that lz4 produced exactly
 * raw_len bytes, and finally that the data hashes to the name it was stored under. */
#ifndef GW_STORAGE_CHUNK_H
#define GW_STORAGE_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_CHUNK_HEADER 52u
#define GW_CHUNK_MAX (16u << 20)     /* largest raw chunk we write or accept */
#define GW_CHUNK_NAME_LEN 64u        /* hex digits of a chunk name */
#define GW_CHUNK_FLAG_LZ4 1u
#define GW_CHUNK_FLAG_AES 2u

/* Keys for an encrypted store; all zero and unused when plain. */
struct gw_chunk_keys {
    bool encrypted;
    uint8_t name_key[32];   /* HMAC key for names */
    uint8_t data_key[32];   /* AES-256-GCM key */
    uint8_t manifest_key[32];   /* AES-256-GCM key for sealed manifests (manifest.h) */
};

/* Reads a key file (32 raw bytes, or 64 hex digits and optional whitespace) and derives the
 * name, data and manifest keys from it (HMAC-SHA256 of a label each, so no key serves two
 * purposes). Returns 0 or -errno with a reason in err. */
int gw_chunk_keys_load(const char *path, struct gw_chunk_keys *k, char *err, size_t errlen);
void gw_chunk_keys_wipe(struct gw_chunk_keys *k);

/* The 32-byte hash that names data (SHA-256, or HMAC-SHA256 when k->encrypted). */
void gw_chunk_hash(const struct gw_chunk_keys *k, const void *data, size_t len, uint8_t out[32]);
/* 64 lowercase hex digits and a NUL into name[65]. */
void gw_chunk_name_hex(const uint8_t hash[32], char name[GW_CHUNK_NAME_LEN + 1]);

/* Bytes an encoded object of a raw chunk of len bytes may need (the capacity for encode). */
size_t gw_chunk_encoded_cap(size_t len);

/* Encodes data[0..len) (1 <= len <= GW_CHUNK_MAX) into out (capacity gw_chunk_encoded_cap(len)).
 * compress: try lz4. Returns the object length or -errno (-EINVAL for a bad length, -EIO when
 * the cipher fails). The caller owns both buffers. */
long gw_chunk_encode(const struct gw_chunk_keys *k, const void *data, size_t len, bool compress,
                     uint8_t *out, size_t cap);

/* Decodes an object read from the store under the name hash into out (capacity cap; the chunk
 * must be exactly want_len bytes when want_len is not 0). Returns the raw length or -EBADMSG
 * with the reason in err (truncated, bad magic, lengths, tag, lz4, hash). The object is never
 * trusted beyond obj[0..objlen). */
long gw_chunk_decode(const struct gw_chunk_keys *k, const uint8_t hash[32], const uint8_t *obj, size_t objlen,
                     uint8_t *out, size_t cap, size_t want_len, char *err, size_t errlen);

/* gw_chunk_decode for the base of a page patch whose rebuilt chunk the caller checks against
 * its own name before a byte is used (chunk_patch.h): hash NULL skips the base's own name
 * check, which that final check covers (a base that is not what its name says cannot rebuild
 * data with the chunk's name), saving a SHA-256 of a whole chunk. Every other check stays
 * (lengths, tag, lz4). hash not NULL: exactly gw_chunk_decode. */
long gw_chunk_decode_base(const struct gw_chunk_keys *k, const uint8_t *hash, const uint8_t *obj, size_t objlen,
                          uint8_t *out, size_t cap, size_t want_len, char *err, size_t errlen);

#endif
