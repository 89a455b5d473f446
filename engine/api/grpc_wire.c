/* gRPC wire rules shared by server and client: codes, grpc-timeout, grpc-message escaping,
 * constant-time secret comparison and the length-prefixed message deframer. Everything here
 * takes outside input, so every length is checked before it is used. */
#include "engine/api/grpc_wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const code_names[GW_GRPC_CODE_MAX + 1] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *gw_grpc_code_name(int code)
{
    if (code < 0 || code > GW_GRPC_CODE_MAX)
        return "UNKNOWN_CODE";
    return code_names[code];
}

int gw_grpc_timeout_parse(const char *s, size_t len, uint64_t *ns)
{
    /* The spec allows at most 8 digits, so the value fits easily before scaling. */
    if (len < 2 || len > 9)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    uint64_t mul;
    switch (s[len - 1]) {
    case 'H': mul = 3600ull * 1000000000ull; break;
    case 'M': mul = 60ull * 1000000000ull; break;
    case 'S': mul = 1000000000ull; break;
    case 'm': mul = 1000000ull; break;
    case 'u': mul = 1000ull; break;
    case 'n': mul = 1ull; break;
    default: return -EINVAL;
    }
    if (__builtin_mul_overflow(v, mul, ns))
        *ns = UINT64_MAX;
    return 0;
}

size_t gw_grpc_timeout_format(uint64_t ns, char out[10])
{
    static const struct { char unit; uint64_t ns; } units[] = {
        { 'n', 1ull }, { 'u', 1000ull }, { 'm', 1000000ull }, { 'S', 1000000000ull },
        { 'M', 60ull * 1000000000ull }, { 'H', 3600ull * 1000000000ull },
    };
    /* Pick the finest unit whose value fits in 8 digits; round up so that a deadline is
     * never shorter on the wire than the caller asked for. */
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        uint64_t v = ns / units[i].ns + (ns % units[i].ns != 0);
        if (v <= 99999999ull || i + 1 == sizeof units / sizeof units[0]) {
            if (v > 99999999ull)
                v = 99999999ull;
            char digits[9];
            size_t n = 0;
            do { digits[n++] = (char)('0' + v % 10); v /= 10; } while (v && n < 8);
            for (size_t k = 0; k < n; k++)
                out[k] = digits[n - 1 - k];
            out[n] = units[i].unit;
            out[n + 1] = '\0';
            return n + 1;
        }
    }
    out[0] = '\0';
    return 0;
}

size_t gw_grpc_pct_encode(const char *src, size_t len, char *dst, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        bool plain = c >= 0x20 && c <= 0x7e && c != '%';
        size_t need = plain ? 1 : 3;
        if (o + need >= cap)
            break;
        if (plain) {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '%';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    dst[o] = '\0';
    return o;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t gw_grpc_pct_decode(const char *src, size_t len, char *dst, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        if (src[i] == '%' && i + 2 < len && hexval(src[i + 1]) >= 0 && hexval(src[i + 2]) >= 0) {
            dst[o++] = (char)(hexval(src[i + 1]) << 4 | hexval(src[i + 2]));
            i += 2;
        } else {
            dst[o++] = src[i];
        }
    }
    dst[o] = '\0';
    return o;
}

bool gw_grpc_secret_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    const volatile unsigned char *pa = a, *pb = b;
    size_t n = alen > blen ? alen : blen;
    unsigned char diff = alen != blen;
    /* Walk the longer length in full, reading each side modulo its own length, so that the
     * loop never exits early on a mismatch. */
    for (size_t i = 0; i < n; i++) {
        unsigned char x = alen ? pa[i % alen] : 0;
        unsigned char y = blen ? pb[i % blen] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

void gw_grpc_prefix_write(uint8_t out[GW_GRPC_PREFIX_LEN], uint32_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

void gw_grpc_deframer_init(struct gw_grpc_deframer *d, uint32_t max_len)
{
    memset(d, 0, sizeof *d);
    d->max_len = max_len;
}

void gw_grpc_deframer_free(struct gw_grpc_deframer *d)
{
    free(d->buf);
    d->buf = NULL;
    d->buf_cap = 0;
}

uint8_t *gw_grpc_deframer_take(struct gw_grpc_deframer *d)
{
    uint8_t *b = d->buf;
    d->buf = NULL;
    d->buf_cap = 0;
    return b;
}

bool gw_grpc_deframer_idle(const struct gw_grpc_deframer *d)
{
    return d->prefix_have == 0;
}

/* Called once the 5-byte prefix is complete: validates it and readies the buffer. */
static int deframer_start(struct gw_grpc_deframer *d)
{
    if (d->prefix[0] == 1)
        return -ENOTSUP;
    if (d->prefix[0] != 0)
        return -EPROTO;
    uint32_t len = (uint32_t)d->prefix[1] << 24 | (uint32_t)d->prefix[2] << 16 |
                   (uint32_t)d->prefix[3] << 8 | d->prefix[4];
    if (len > d->max_len)
        return -EMSGSIZE;
    if (len > d->buf_cap) {
        uint8_t *nb = realloc(d->buf, len);
        if (!nb)
            return -ENOMEM;
        d->buf = nb;
        d->buf_cap = len;
    }
    d->msg_len = len;
    d->msg_have = 0;
    return 0;
}

int gw_grpc_deframer_feed(struct gw_grpc_deframer *d, const uint8_t *data, size_t len,
                          gw_grpc_msg_fn on_msg, void *arg)
{
    size_t off = 0;
    while (!d->error && off < len) {
        if (d->prefix_have < GW_GRPC_PREFIX_LEN) {
            size_t n = GW_GRPC_PREFIX_LEN - d->prefix_have;
            if (n > len - off)
                n = len - off;
            memcpy(d->prefix + d->prefix_have, data + off, n);
            d->prefix_have += (uint32_t)n;
            off += n;
            if (d->prefix_have < GW_GRPC_PREFIX_LEN)
                break;
            int rc = deframer_start(d);
            if (rc < 0) {
                d->error = rc;
                break;
            }
        }
        size_t n = d->msg_len - d->msg_have;
        if (n > len - off)
            n = len - off;
        if (n) {
            memcpy(d->buf + d->msg_have, data + off, n);
            d->msg_have += (uint32_t)n;
            off += n;
        }
        if (d->msg_have == d->msg_len) {
            d->prefix_have = 0;
            int rc = on_msg(arg, d->buf, d->msg_len);
            if (rc < 0)
                d->error = rc;
        }
    }
    return d->error;
}
