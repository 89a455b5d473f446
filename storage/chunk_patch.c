/* Page patches (see chunk_patch.h): encoding, the checks before use, rebuilding a chunk. */
#include "storage/chunk_patch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/chunk_sink.h"
#include "storage/manifest.h"
#include "storage/store.h"

#define PATCH_MAGIC "GWPATCH1"

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

size_t gw_patch_size(uint32_t npages)
{
    return GW_PATCH_HEADER + (size_t)npages * (4 + GW_PATCH_PAGE);
}

uint32_t gw_patch_max_pages(size_t chunk_len)
{
    if (chunk_len == 0 || chunk_len > GW_CHUNK_MAX || chunk_len % GW_PATCH_PAGE) return 0;
    return (uint32_t)(chunk_len / GW_PATCH_PAGE / 2);
}

size_t gw_patch_max_size(size_t chunk_len)
{
    uint32_t n = gw_patch_max_pages(chunk_len);
    return n ? gw_patch_size(n) : 0;
}

long gw_patch_encode(const uint8_t base[32], const uint8_t *chunk, size_t chunk_len, const uint32_t *pages, uint32_t n,
                     uint8_t *out, size_t cap)
{
    uint32_t max = gw_patch_max_pages(chunk_len);
    if (n == 0 || n > max) return -EINVAL;
    for (uint32_t k = 0; k < n; k++)
        if (pages[k] >= chunk_len / GW_PATCH_PAGE || (k && pages[k] <= pages[k - 1])) return -EINVAL;
    size_t len = gw_patch_size(n);
    if (cap < len) return -ENOSPC;
    memset(out, 0, GW_PATCH_HEADER);
    memcpy(out, PATCH_MAGIC, 8);
    put32(out + 8, GW_PATCH_VERSION);
    put32(out + 12, (uint32_t)chunk_len);
    put32(out + 16, n);
    memcpy(out + 24, base, 32);
    uint8_t *idx = out + GW_PATCH_HEADER, *data = idx + 4 * (size_t)n;
    for (uint32_t k = 0; k < n; k++) {
        put32(idx + 4 * (size_t)k, pages[k]);
        memcpy(data + (size_t)k * GW_PATCH_PAGE, chunk + (size_t)pages[k] * GW_PATCH_PAGE, GW_PATCH_PAGE);
    }
    return (long)len;
}

int gw_patch_parse(const uint8_t *p, size_t len, size_t chunk_len, const uint8_t want_base[32], struct gw_patch *out,
                   char *err, size_t errlen)
{
#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return -EBADMSG; } while (0)
    uint32_t max = gw_patch_max_pages(chunk_len);
    if (!max) BAD("a chunk of %zu bytes cannot be patched", chunk_len);
    if (len < GW_PATCH_HEADER) BAD("patch truncated: %zu bytes, the header alone is %u", len, GW_PATCH_HEADER);
    if (memcmp(p, PATCH_MAGIC, 8)) BAD("not a patch (bad magic)");
    uint32_t ver = get32(p + 8), clen = get32(p + 12), n = get32(p + 16);
    if (ver != GW_PATCH_VERSION) BAD("patch format %u not supported", ver);
    if (get32(p + 20)) BAD("patch reserved field is not zero");
    if (clen != chunk_len) BAD("patch rebuilds %u bytes, the chunk is %zu", clen, chunk_len);
    if (n == 0 || n > max) BAD("patch carries %u pages (1..%u allowed)", n, max);
    if (len != gw_patch_size(n)) BAD("patch of %u pages is %zu bytes, not %zu", n, len, gw_patch_size(n));
    if (want_base && memcmp(p + 24, want_base, 32)) BAD("patch names another base chunk than its manifest");
    const uint8_t *idx = p + GW_PATCH_HEADER;
    for (uint32_t k = 0, prev = 0; k < n; k++) {
        uint32_t pg = get32(idx + 4 * (size_t)k);
        if (pg >= chunk_len / GW_PATCH_PAGE) BAD("patch page %u is outside its %zu-byte chunk", pg, chunk_len);
        if (k && pg <= prev) BAD("patch pages are not in increasing order (%u after %u)", pg, prev);
        prev = pg;
    }
    memcpy(out->base, p + 24, 32);
    out->chunk_len = clen;
    out->npages = n;
    out->index = idx;
    out->pages = idx + 4 * (size_t)n;
    return 0;
#undef BAD
}

void gw_patch_apply(const struct gw_patch *pt, uint8_t *chunk)
{
    for (uint32_t k = 0; k < pt->npages; k++)
        memcpy(chunk + (size_t)get32(pt->index + 4 * (size_t)k) * GW_PATCH_PAGE, pt->pages + (size_t)k * GW_PATCH_PAGE,
               GW_PATCH_PAGE);
}

int gw_patch_finish(const struct gw_chunk_keys *keys, const uint8_t patch_name[32], const uint8_t base[32],
                    const uint8_t name[32], const uint8_t *obj, size_t objlen, uint8_t *out, size_t len, char *err,
                    size_t errlen)
{
    size_t cap = gw_patch_max_size(len);
    if (!cap) { snprintf(err, errlen, "a chunk of %zu bytes cannot be patched", len); return -EBADMSG; }
    uint8_t *raw = malloc(cap);
    if (!raw) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    char why[256];
    struct gw_patch pt;
    long got = gw_chunk_decode(keys && keys->encrypted ? keys : NULL, patch_name, obj, objlen, raw, cap, 0, why, sizeof why);
    int r = got < 0 ? (int)got : gw_patch_parse(raw, (size_t)got, len, base, &pt, why, sizeof why);
    if (r) {
        snprintf(err, errlen, "%spatch: %s", name ? "" : "mid ", why);
    } else {
        gw_patch_apply(&pt, out);
        uint8_t h[32];
        if (name) gw_chunk_hash(keys, out, len, h);
        if (name && memcmp(h, name, 32)) { snprintf(err, errlen, "patched chunk does not match its name (corrupt)"); r = -EBADMSG; }
    }
    free(raw);
    return r;
}

/* Reads the patch object patch_name and applies it over out (see gw_patch_finish). */
static int fetch_layer(struct gw_store *s, const struct gw_chunk_keys *keys, const uint8_t patch_name[32],
                       const uint8_t base[32], const uint8_t *name, uint8_t *out, size_t len, char *err, size_t errlen)
{
    char obj[80];
    gw_chunk_object(patch_name, obj);
    size_t cap = gw_chunk_encoded_cap(gw_patch_max_size(len));
    uint8_t *buf = malloc(cap);
    if (!buf) { snprintf(err, errlen, "out of memory"); return -ENOMEM; }
    struct gw_store_read rd = {.name = obj, .buf = buf, .cap = cap};
    int r = s->ops->get_batch(s, &rd, 1);
    if (!r) r = rd.rc;
    if (r == -ENOENT) snprintf(err, errlen, "%spatch %s is missing", name ? "" : "mid ", obj + 2);
    else if (r) snprintf(err, errlen, "reading patch %s: %s", obj + 2, strerror(-r));
    else r = gw_patch_finish(keys, patch_name, base, name, buf, rd.len, out, len, err, errlen);
    free(buf);
    return r;
}

int gw_patch_fetch(struct gw_store *s, const struct gw_chunk_keys *keys, const uint8_t name[32],
                   const uint8_t patch_name[32], const uint8_t base[32], const uint8_t *mid, uint8_t *out, size_t len,
                   char *err, size_t errlen)
{
    char why[320];
    int r = gw_chunk_fetch(s, keys, base, out, len, why, sizeof why);
    if (r) { snprintf(err, errlen, "base %s", why); return r; }
    if (mid && (r = fetch_layer(s, keys, mid, base, NULL, out, len, err, errlen))) return r;
    return fetch_layer(s, keys, patch_name, mid ? mid : base, name, out, len, err, errlen);
}
