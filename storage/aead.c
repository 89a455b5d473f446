/* AES-256-GCM in place (see aead.h). */
#include "storage/aead.h"

#include <errno.h>
#include <openssl/evp.h>

static int run(int enc, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aadlen, const uint8_t *aad2,
               size_t aad2len, uint8_t *buf, size_t len, uint8_t *tag)
{
    if (len > GW_AEAD_MAX || aadlen > GW_AEAD_MAX || aad2len > GW_AEAD_MAX) return -EINVAL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c) return -ENOMEM;
    int n = 0;
    int ok = EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, enc) &&
             (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, (int)GW_AEAD_TAG, tag)) &&
             (!aadlen || EVP_CipherUpdate(c, NULL, &n, aad, (int)aadlen)) &&
             (!aad2len || EVP_CipherUpdate(c, NULL, &n, aad2, (int)aad2len)) &&
             (!len || EVP_CipherUpdate(c, buf, &n, buf, (int)len)) &&
             EVP_CipherFinal_ex(c, buf + len, &n) > 0 &&
             (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, (int)GW_AEAD_TAG, tag));
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -EBADMSG;
}

int gw_aead_seal(const uint8_t key[GW_AEAD_KEY], const uint8_t nonce[GW_AEAD_NONCE], const uint8_t *aad, size_t aadlen,
                 const uint8_t *aad2, size_t aad2len, uint8_t *buf, size_t len, uint8_t tag[GW_AEAD_TAG])
{
    return run(1, key, nonce, aad, aadlen, aad2, aad2len, buf, len, tag);
}

int gw_aead_open(const uint8_t key[GW_AEAD_KEY], const uint8_t nonce[GW_AEAD_NONCE], const uint8_t *aad, size_t aadlen,
                 const uint8_t *aad2, size_t aad2len, uint8_t *buf, size_t len, const uint8_t tag[GW_AEAD_TAG])
{
    /* OpenSSL takes the expected tag through a non-const pointer; it only reads it. */
    return run(0, key, nonce, aad, aadlen, aad2, aad2len, buf, len, (uint8_t *)tag);
}
