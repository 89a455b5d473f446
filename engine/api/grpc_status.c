/* google.rpc.Status with an ErrorInfo detail, encoded by hand (a handful of fields; no need
 * for the google/rpc protos at run time). Wire layout:
 *   Status    1: int32 code, 2: string message, 3: Any details (repeated)
 *   Any       1: string type_url, 2: bytes value
 *   ErrorInfo 1: string reason, 2: string domain */
#include "engine/api/grpc_status.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define ERRORINFO_URL "type.googleapis.com/google.rpc.ErrorInfo"

struct w {
    uint8_t *p;
    size_t len, cap;
    bool ok;
};

static void put_byte(struct w *w, uint8_t b)
{
    if (w->len < w->cap) w->p[w->len++] = b;
    else w->ok = false;
}

static void put_varint(struct w *w, uint64_t v)
{
    do {
        put_byte(w, (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
        v >>= 7;
    } while (v);
}

static void put_bytes(struct w *w, unsigned field, const void *data, size_t len)
{
    put_varint(w, (uint64_t)field << 3 | 2);
    put_varint(w, len);
    if (w->len + len > w->cap) { w->ok = false; return; }
    memcpy(w->p + w->len, data, len);
    w->len += len;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t gw_grpc_status_details(int code, const char *message, const char *reason, char *out, size_t cap)
{
    uint8_t info[2 * GW_GRPC_REASON_MAX + 32], any[sizeof info + 64], status[sizeof any + 1200];
    struct w wi = {info, 0, sizeof info, true}, wa = {any, 0, sizeof any, true}, ws = {status, 0, sizeof status, true};
    size_t rl = strnlen(reason, GW_GRPC_REASON_MAX), ml = strnlen(message, 1024);
    put_bytes(&wi, 1, reason, rl);
    put_bytes(&wi, 2, GW_GRPC_ERROR_DOMAIN, strlen(GW_GRPC_ERROR_DOMAIN));
    put_bytes(&wa, 1, ERRORINFO_URL, strlen(ERRORINFO_URL));
    put_bytes(&wa, 2, info, wi.len);
    if (code) { put_varint(&ws, 1 << 3); put_varint(&ws, (uint64_t)(uint32_t)code); }
    if (ml) put_bytes(&ws, 2, message, ml);
    put_bytes(&ws, 3, any, wa.len);
    if (!wi.ok || !wa.ok || !ws.ok) return 0;
    size_t n = 0;
    for (size_t i = 0; i < ws.len; i += 3) {
        uint32_t v = (uint32_t)status[i] << 16;
        size_t left = ws.len - i;
        if (left > 1) v |= (uint32_t)status[i + 1] << 8;
        if (left > 2) v |= status[i + 2];
        size_t chars = left >= 3 ? 4 : left + 1;
        if (n + chars + 1 > cap) return 0;
        for (size_t k = 0; k < chars; k++) out[n++] = B64[(v >> (18 - 6 * k)) & 63];
    }
    out[n] = 0;
    return n;
}
