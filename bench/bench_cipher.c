/* Cipher floor (see bench_cipher.h). */
#include "bench/bench_cipher.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "engine/common/util.h"

#define REC (16u << 10)              /* TLS 1.3's largest record: what our sender builds */
#define TAG 16u
#define SPAN (64ull << 20)           /* larger than the last-level cache: pages come from memory */

/* One pass over `records` records cycling through the span: seal src into dst (and the tags
 * into tags), or open dst back into src checking the tags (after a sealing pass that
 * covered every slot the opening pass reads). */
static int pass(EVP_CIPHER_CTX *cx, bool seal, uint8_t *src, uint8_t *dst, uint8_t *tags, uint64_t records,
                uint64_t span_records)
{
    static const uint8_t hdr[5] = {0x17, 0x03, 0x03, (REC + 1 + TAG) >> 8, (REC + 1 + TAG) & 0xff};
    uint8_t nonce[12] = {0};
    for (uint64_t i = 0; i < records; i++) {
        uint64_t k = i % span_records;
        /* By slot, so that opening finds each slot's nonce again. A nonce used twice under one
         * key would be a flaw in a real channel; here nothing is secret, only timed. */
        memcpy(nonce + 4, &k, sizeof k);
        int n = 0;
        uint8_t *p = src + k * REC, *c = dst + k * REC, *t = tags + k * TAG;
        if (EVP_CipherInit_ex(cx, NULL, NULL, NULL, nonce, seal) != 1 ||
            EVP_CipherUpdate(cx, NULL, &n, hdr, sizeof hdr) != 1)
            return -EIO;
        if (seal) {
            if (EVP_CipherUpdate(cx, c, &n, p, REC) != 1 || EVP_CipherFinal_ex(cx, c + n, &n) != 1 ||
                EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_GET_TAG, TAG, t) != 1)
                return -EIO;
        } else {
            if (EVP_CipherUpdate(cx, p, &n, c, REC) != 1 || EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_SET_TAG, TAG, t) != 1 ||
                EVP_CipherFinal_ex(cx, p + n, &n) != 1)
                return -EIO;   /* a tag that does not verify: the measurement is wrong */
        }
    }
    return 0;
}

int gw_bench_cipher_ms(uint64_t bytes, double *seal_ms, double *open_ms)
{
    uint64_t records = (bytes + REC - 1) / REC;
    uint64_t span_records = SPAN / REC;
    if (records < span_records) span_records = records ? records : 1;
    if (!records) records = 1;
    uint8_t *src = malloc(span_records * REC), *dst = malloc(span_records * REC), *tags = malloc(span_records * TAG);
    EVP_CIPHER *aes = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    EVP_CIPHER_CTX *enc = EVP_CIPHER_CTX_new(), *dec = EVP_CIPHER_CTX_new();
    uint8_t key[16];
    int r = src && dst && tags ? 0 : -ENOMEM;
    if (!r && (!aes || !enc || !dec || RAND_bytes(key, sizeof key) != 1 || RAND_bytes(src, (int)REC) != 1 ||
               EVP_CipherInit_ex(enc, aes, NULL, key, NULL, 1) != 1 || EVP_CipherInit_ex(dec, aes, NULL, key, NULL, 0) != 1))
        r = -EIO;
    if (!r) {
        /* Every page of both buffers written before the clock starts: the pass measures the
         * cipher and memory, not this host's page allocation. */
        for (uint64_t k = 1; k < span_records; k++) memcpy(src + k * REC, src, REC);
        memset(dst, 0, span_records * REC);
        uint64_t t0 = gw_now_ns();
        r = pass(enc, true, src, dst, tags, records, span_records);
        uint64_t t1 = gw_now_ns();
        if (!r) r = pass(dec, false, src, dst, tags, records, span_records);
        uint64_t t2 = gw_now_ns();
        *seal_ms = (double)(t1 - t0) / 1e6;
        *open_ms = (double)(t2 - t1) / 1e6;
    }
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
    EVP_CIPHER_free(aes);
    free(src);
    free(dst);
    free(tags);
    return r;
}

int gw_bench_sha256_ms(uint64_t bytes, uint32_t chunk_bytes, double *ms)
{
    if (!chunk_bytes || chunk_bytes > SPAN) return -EINVAL;
    uint64_t chunks = (bytes + chunk_bytes - 1) / chunk_bytes, span_chunks = SPAN / chunk_bytes;
    if (chunks < span_chunks) span_chunks = chunks ? chunks : 1;
    uint8_t *buf = malloc(span_chunks * chunk_bytes);
    if (!buf) return -ENOMEM;
    memset(buf, 0x5a, span_chunks * chunk_bytes);
    int r = 0;
    uint8_t md[32];
    uint64_t t0 = gw_now_ns();
    for (uint64_t i = 0; !r && i < chunks; i++)
        if (EVP_Digest(buf + (i % span_chunks) * chunk_bytes, chunk_bytes, md, NULL, EVP_sha256(), NULL) != 1) r = -EIO;
    *ms = (double)(gw_now_ns() - t0) / 1e6;
    free(buf);
    return r;
}
