/* Chunk encoding (see chunk.h): SHA-256/HMAC names, lz4 when it pays, AES-256-GCM. */
#include "storage/chunk.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/util.h"
#include "storage/aead.h"

#define CHUNK_MAGIC "GWCHUNK1"
#define NONCE_OFF 24u
#define TAG_OFF 36u
#define LZ4_PROBE (64u << 10)   /* bytes tried before compressing a whole chunk */

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }


static void derive(const uint8_t *key, size_t keylen, const char *label, uint8_t out[32])
{
    unsigned olen = 32;
    HMAC(EVP_sha256(), key, (int)keylen, (const uint8_t *)label, strlen(label), out, &olen);
}

int gw_chunk_keys_load(const char *path, struct gw_chunk_keys *k, char *err, size_t errlen)
{
    memset(k, 0, sizeof *k);
    uint8_t buf[256], key[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { int e = errno; snprintf(err, errlen, "key file %s: %s", path, strerror(e)); return -e; }
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0) { snprintf(err, errlen, "key file %s: %s", path, strerror(errno)); return -EIO; }
    size_t len = (size_t)n;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' ' || buf[len - 1] == '\r' || buf[len - 1] == '\t')) len--;
    int r = 0;
    if (len == 32) {
        memcpy(key, buf, 32);
    } else if (len == 64) {
        r = gw_hex_decode((const char *)buf, key, 32);
    } else {
        r = -EINVAL;
    }
    memset(buf, 0, sizeof buf);
    if (r) { snprintf(err, errlen, "key file %s: want 32 bytes or 64 hex digits", path); return r; }
    derive(key, 32, "godwit chunk name v1", k->name_key);
    derive(key, 32, "godwit chunk data v1", k->data_key);
    derive(key, 32, "godwit manifest v1", k->manifest_key);
    memset(key, 0, sizeof key);
    k->encrypted = true;
    return 0;
}

void gw_chunk_keys_wipe(struct gw_chunk_keys *k)
{
    OPENSSL_cleanse(k, sizeof *k);
}

void gw_chunk_hash(const struct gw_chunk_keys *k, const void *data, size_t len, uint8_t out[32])
{
    if (k && k->encrypted) {
        unsigned olen = 32;
        HMAC(EVP_sha256(), k->name_key, 32, data, len, out, &olen);
    } else {
        SHA256(data, len, out);
    }
}

void gw_chunk_name_hex(const uint8_t hash[32], char name[GW_CHUNK_NAME_LEN + 1])
{
    gw_hex_encode(hash, 32, name);
}

size_t gw_chunk_encoded_cap(size_t len)
{
    size_t lz = (size_t)LZ4_compressBound((int)(len > GW_CHUNK_MAX ? GW_CHUNK_MAX : len));
    return GW_CHUNK_HEADER + (lz > len ? lz : len);
}

/* AES-256-GCM in place over buf[0..len) with the header as additional data (the tag itself
 * zeroed there: it is not authenticated data). */
static int gcm(bool enc, const uint8_t key[32], uint8_t *hdr, uint8_t *buf, size_t len)
{
    uint8_t aad[GW_CHUNK_HEADER];
    memcpy(aad, hdr, GW_CHUNK_HEADER);
    memset(aad + TAG_OFF, 0, GW_AEAD_TAG);
    return enc ? gw_aead_seal(key, hdr + NONCE_OFF, aad, sizeof aad, NULL, 0, buf, len, hdr + TAG_OFF)
               : gw_aead_open(key, hdr + NONCE_OFF, aad, sizeof aad, NULL, 0, buf, len, hdr + TAG_OFF);
}

long gw_chunk_encode(const struct gw_chunk_keys *k, const void *data, size_t len, bool compress,
                     uint8_t *out, size_t cap)
{
    if (len == 0 || len > GW_CHUNK_MAX || cap < gw_chunk_encoded_cap(len)) return -EINVAL;
    uint8_t *payload = out + GW_CHUNK_HEADER;
    uint32_t flags = 0;
    size_t plen = len;
    if (compress && len > 2 * LZ4_PROBE) {
        /* A probe first: random data (most of a busy guest's memory) fails it in a 16th of
         * the time a whole-chunk attempt takes. */
        int p = LZ4_compress_default(data, (char *)payload, LZ4_PROBE, LZ4_PROBE - LZ4_PROBE / 8);
        if (p <= 0) compress = false;
    }
    if (compress) {
        /* Worth it only when it saves an eighth: below that the decode cost is not repaid. */
        int max = (int)(len - len / 8);
        int n = LZ4_compress_default(data, (char *)payload, (int)len, max);
        if (n > 0) { plen = (size_t)n; flags |= GW_CHUNK_FLAG_LZ4; }
    }
    if (!(flags & GW_CHUNK_FLAG_LZ4)) memcpy(payload, data, len);
    memset(out, 0, GW_CHUNK_HEADER);
    memcpy(out, CHUNK_MAGIC, 8);
    if (k && k->encrypted) flags |= GW_CHUNK_FLAG_AES;
    put32(out + 8, flags);
    put32(out + 12, (uint32_t)len);
    put32(out + 16, (uint32_t)plen);
    if (flags & GW_CHUNK_FLAG_AES) {
        if (RAND_bytes(out + NONCE_OFF, 12) != 1) return -EIO;
        if (gcm(true, k->data_key, out, payload, plen)) return -EIO;
    }
    return (long)(GW_CHUNK_HEADER + plen);
}

long gw_chunk_decode(const struct gw_chunk_keys *k, const uint8_t hash[32], const uint8_t *obj, size_t objlen,
                     uint8_t *out, size_t cap, size_t want_len, char *err, size_t errlen)
{
    return gw_chunk_decode_base(k, hash, obj, objlen, out, cap, want_len, err, errlen);
}

long gw_chunk_decode_base(const struct gw_chunk_keys *k, const uint8_t *hash, const uint8_t *obj, size_t objlen,
                          uint8_t *out, size_t cap, size_t want_len, char *err, size_t errlen)
{
#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); r = -EBADMSG; goto done; } while (0)
    long r = 0;
    uint8_t *tmp = NULL;
    if (objlen < GW_CHUNK_HEADER) BAD("chunk truncated: %zu bytes, the header alone is %u", objlen, GW_CHUNK_HEADER);
    if (memcmp(obj, CHUNK_MAGIC, 8)) BAD("not a chunk (bad magic)");
    uint32_t flags = get32(obj + 8), raw = get32(obj + 12), plen = get32(obj + 16);
    bool enc = k && k->encrypted;
    if (flags & ~(GW_CHUNK_FLAG_LZ4 | GW_CHUNK_FLAG_AES)) BAD("unknown chunk flags %#x", flags);
    if (!!(flags & GW_CHUNK_FLAG_AES) != enc)
        BAD(enc ? "chunk is not encrypted but the store is" : "chunk is encrypted: a key file is needed");
    if (raw == 0 || raw > GW_CHUNK_MAX || raw > cap) BAD("chunk claims %u bytes (limit %zu)", raw, cap < GW_CHUNK_MAX ? cap : (size_t)GW_CHUNK_MAX);
    if (want_len && raw != want_len) BAD("chunk holds %u bytes, the manifest says %zu", raw, want_len);
    if (plen != objlen - GW_CHUNK_HEADER) BAD("chunk payload is %zu bytes, its header says %u (truncated?)", objlen - GW_CHUNK_HEADER, plen);
    if (!(flags & GW_CHUNK_FLAG_LZ4) && plen != raw) BAD("uncompressed chunk of %u bytes has %u", raw, plen);
    if (plen > gw_chunk_encoded_cap(raw)) BAD("chunk payload larger than any encoding of %u bytes", raw);
    const uint8_t *payload = obj + GW_CHUNK_HEADER;
    if (enc) {
        tmp = malloc(plen ? plen : 1);
        if (!tmp) { snprintf(err, errlen, "out of memory"); r = -ENOMEM; goto done; }
        memcpy(tmp, payload, plen);
        uint8_t hdr[GW_CHUNK_HEADER];
        memcpy(hdr, obj, GW_CHUNK_HEADER);
        if (gcm(false, k->data_key, hdr, tmp, plen)) BAD("chunk fails authentication (wrong key or altered)");
        payload = tmp;
    }
    if (flags & GW_CHUNK_FLAG_LZ4) {
        int n = LZ4_decompress_safe((const char *)payload, (char *)out, (int)plen, (int)raw);
        if (n != (int)raw) BAD("chunk does not decompress to its %u bytes", raw);
    } else {
        memcpy(out, payload, raw);
    }
    uint8_t h[32];
    if (hash) gw_chunk_hash(k, out, raw, h);
    if (hash && memcmp(h, hash, 32)) BAD("chunk data does not match its name (corrupt)");
    r = raw;
done:
    free(tmp);
    return r;
#undef BAD
}
