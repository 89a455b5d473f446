/* AES-256-GCM, the one cipher of the chunk store: chunks (chunk.h) and sealed manifests
 * (manifest.h) both go through these two calls, so a fix to how the cipher is driven reaches
 * both at once.
 *
 * In place over buf[0..len); len at most GW_AEAD_MAX. The additional data is aad[0..aadlen)
 * followed by aad2[0..aad2len) (aad2 may be NULL with aad2len 0): authenticated, not
 * encrypted. Nonces are 12 bytes and must never repeat under one key (callers take them from
 * RAND_bytes); tags are 16 bytes. Returns 0, -EINVAL for a length over the limit, -ENOMEM, or
 * -EBADMSG (open: the tag does not match; seal: the cipher failed). On a failed open the
 * contents of buf are unspecified and must not be used. */
#ifndef GW_STORAGE_AEAD_H
#define GW_STORAGE_AEAD_H

#include <stddef.h>
#include <stdint.h>

#define GW_AEAD_KEY 32u
#define GW_AEAD_NONCE 12u
#define GW_AEAD_TAG 16u
#define GW_AEAD_MAX (1u << 30)   /* OpenSSL's update takes an int; nothing we seal comes near */

int gw_aead_seal(const uint8_t key[GW_AEAD_KEY], const uint8_t nonce[GW_AEAD_NONCE], const uint8_t *aad, size_t aadlen,
                 const uint8_t *aad2, size_t aad2len, uint8_t *buf, size_t len, uint8_t tag[GW_AEAD_TAG]);
int gw_aead_open(const uint8_t key[GW_AEAD_KEY], const uint8_t nonce[GW_AEAD_NONCE], const uint8_t *aad, size_t aadlen,
                 const uint8_t *aad2, size_t aad2len, uint8_t *buf, size_t len, const uint8_t tag[GW_AEAD_TAG]);

#endif
