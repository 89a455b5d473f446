/* Decompression of a bzImage payload by the VM host (see linux_boot.h). The kernel's build
 * appends the decompressed size as a little-endian u32 to every payload (gzip carries it in
 * its own trailer), so the output buffer is sized once, up front, from that number after it
 * is checked against GW_LINUX_KERNEL_MAX; each decoder is told that capacity and must
 * produce exactly that many bytes. Input bytes are never trusted beyond their length. */
#include <errno.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "engine/vm/linux_boot.h"

#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20)

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static int gunzip(const uint8_t *in, size_t len, uint8_t *out, size_t cap, char *err, unsigned errlen)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) { snprintf(err, errlen, "gzip: cannot initialise zlib"); return -ENOMEM; }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int zr = inflate(&z, Z_FINISH);
    size_t produced = cap - z.avail_out;
    inflateEnd(&z);
    if (zr != Z_STREAM_END || produced != cap) {
        snprintf(err, errlen, "gzip payload is corrupt or has the wrong size (zlib %d, %zu of %zu bytes)",
                 zr, produced, cap);
        return -EINVAL;
    }
    return 0;
}

static int unxz(const uint8_t *in, size_t len, uint8_t *out, size_t cap, char *err, unsigned errlen)
{
    uint64_t memlimit = 256ull << 20;
    size_t in_pos = 0, out_pos = 0;
    lzma_ret lr = lzma_stream_buffer_decode(&memlimit, 0, NULL, in, &in_pos, len, out, &out_pos, cap);
    if (lr != LZMA_OK || out_pos != cap) {
        snprintf(err, errlen, "xz payload is corrupt or has the wrong size (liblzma %d, %zu of %zu bytes)",
                 (int)lr, out_pos, cap);
        return -EINVAL;
    }
    return 0;
}

static int unzstd(const uint8_t *in, size_t len, uint8_t *out, size_t cap, char *err, unsigned errlen)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d) { snprintf(err, errlen, "zstd: cannot create a context"); return -ENOMEM; }
    /* The kernel compresses with a long window (--ultra -22); the output cap bounds memory. */
    ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 31);
    size_t n = ZSTD_decompressDCtx(d, out, cap, in, len);
    ZSTD_freeDCtx(d);
    if (ZSTD_isError(n) || n != cap) {
        snprintf(err, errlen, "zstd payload is corrupt or has the wrong size (%s, want %zu bytes)",
                 ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short", cap);
        return -EINVAL;
    }
    return 0;
}

/* The lz4 "legacy" format the kernel uses: magic, then blocks of (u32 compressed size,
 * data), each decompressing to at most 8 MiB; a magic may reappear between blocks. */
static int unlz4(const uint8_t *in, size_t len, uint8_t *out, size_t cap, char *err, unsigned errlen)
{
    size_t ip = 0, op = 0;
    while (ip < len) {
        if (len - ip < 4) break;
        uint32_t v = le32(in + ip);
        ip += 4;
        if (v == LZ4_LEGACY_MAGIC) continue;
        if (v > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK) || v > len - ip) {
            snprintf(err, errlen, "lz4 payload: block of %u bytes at offset %zu runs past the "
                     "payload (%zu bytes)", v, ip - 4, len);
            return -EINVAL;
        }
        size_t room = cap - op;
        if (room > LZ4_LEGACY_BLOCK) room = LZ4_LEGACY_BLOCK;
        int n = LZ4_decompress_safe((const char *)in + ip, (char *)out + op, (int)v, (int)room);
        if (n < 0) {
            snprintf(err, errlen, "lz4 payload: block at offset %zu is corrupt or larger than "
                     "the announced size", ip - 4);
            return -EINVAL;
        }
        ip += v;
        op += (size_t)n;
    }
    if (op != cap || ip != len) {
        snprintf(err, errlen, "lz4 payload decompressed to %zu bytes, announced %zu", op, cap);
        return -EINVAL;
    }
    return 0;
}

int gw_linux_decompress(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len,
                        const char **name, char *err, unsigned errlen)
{
    *out = NULL;
    *out_len = 0;
    *name = "unknown";
    if (len < 12) { snprintf(err, errlen, "compressed payload of %zu bytes is too short", len); return -EINVAL; }
    int (*fn)(const uint8_t *, size_t, uint8_t *, size_t, char *, unsigned) = NULL;
    size_t body = len - 4; /* without the appended size (gzip: its trailer is part of it) */
    static const uint8_t xz_magic[6] = {0xfd, '7', 'z', 'X', 'Z', 0};
    if (in[0] == 0x1f && in[1] == 0x8b) { fn = gunzip; *name = "gzip"; body = len; }
    else if (!memcmp(in, xz_magic, sizeof xz_magic)) { fn = unxz; *name = "xz"; }
    else if (le32(in) == 0xfd2fb528u) { fn = unzstd; *name = "zstd"; }
    else if (le32(in) == LZ4_LEGACY_MAGIC) { fn = unlz4; *name = "lz4"; }
    else if (in[0] == 'B' && in[1] == 'Z' && in[2] == 'h') *name = "bzip2";
    else if (in[0] == 0x5d && in[1] == 0 && in[2] == 0) *name = "lzma";
    else if (in[0] == 0x89 && in[1] == 'L' && in[2] == 'Z' && in[3] == 'O') *name = "lzo";
    if (!fn) {
        snprintf(err, errlen, "bzImage payload compression %s is not supported (gzip, xz, zstd "
                 "and lz4 are)", *name);
        return -EINVAL;
    }
    uint64_t size = le32(in + len - 4);
    if (size == 0 || size > GW_LINUX_KERNEL_MAX) {
        snprintf(err, errlen, "%s payload announces %llu decompressed bytes (limit %llu MiB)",
                 *name, (unsigned long long)size, GW_LINUX_KERNEL_MAX >> 20);
        return size ? -E2BIG : -EINVAL;
    }
    uint8_t *buf = malloc(size);
    if (!buf) { snprintf(err, errlen, "cannot allocate %llu bytes for the kernel", (unsigned long long)size); return -ENOMEM; }
    int r = fn(in, body, buf, size, err, errlen);
    if (r) { free(buf); return r; }
    *out = buf;
    *out_len = size;
    return 0;
}
