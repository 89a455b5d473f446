/* The chunk-store sink (see chunk_sink.h). */
#include "storage/chunk_sink.h"
#include "storage/gc.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"
#include "storage/manifest.h"
#include "storage/store.h"
#include "storage/throttle.h"

static const uint8_t empty_slot[32];

int gw_chunk_sink_init(struct gw_chunk_sink *k, struct gw_store *s, const struct gw_chunk_keys *keys,
                       size_t max_chunk, bool compress)
{
    memset(k, 0, sizeof *k);
    k->store = s;
    k->keys = keys && keys->encrypted ? keys : NULL;
    k->compress = compress;
    k->enc_cap = gw_chunk_encoded_cap(max_chunk);
    k->max_chunk = max_chunk;
    k->enc = malloc(k->enc_cap);
    k->copy = malloc(max_chunk ? max_chunk : 1);
    k->known_cap = 4096;
    k->known = calloc(k->known_cap, 32);
    if (!k->enc || !k->copy || !k->known) { gw_chunk_sink_free(k); return -ENOMEM; }
    return 0;
}

void gw_chunk_sink_free(struct gw_chunk_sink *k)
{
    free(k->enc);
    free(k->known);
    free(k->copy);
    k->enc = k->known = k->copy = NULL;
}

/* Names are uniformly random bytes: their first 8 bytes are a good slot hash. The all-zero
 * name marks an empty slot (a real chunk with that SHA-256 will not be met). */
static uint8_t *find(const struct gw_chunk_sink *k, const uint8_t h[32], bool *found)
{
    uint64_t x;
    memcpy(&x, h, 8);
    for (size_t i = x % k->known_cap;; i = (i + 1) % k->known_cap) {
        uint8_t *slot = k->known + i * 32;
        if (!memcmp(slot, h, 32)) { *found = true; return slot; }
        if (!memcmp(slot, empty_slot, 32)) { *found = false; return slot; }
    }
}

int gw_chunk_sink_know(struct gw_chunk_sink *k, const uint8_t hash[32])
{
    if (!memcmp(hash, empty_slot, 32)) return 0;
    if ((k->known_n + 1) * 2 > k->known_cap) {
        struct gw_chunk_sink old = *k;
        k->known_cap *= 2;
        k->known = calloc(k->known_cap, 32);
        if (!k->known) { k->known = old.known; k->known_cap = old.known_cap; return -ENOMEM; }
        k->known_n = 0;
        for (size_t i = 0; i < old.known_cap; i++) {
            const uint8_t *slot = old.known + i * 32;
            if (memcmp(slot, empty_slot, 32)) { bool f; memcpy(find(k, slot, &f), slot, 32); k->known_n++; }
        }
        free(old.known);
    }
    bool found;
    uint8_t *slot = find(k, hash, &found);
    if (!found) { memcpy(slot, hash, 32); k->known_n++; }
    return 0;
}

int gw_chunk_sink_put(struct gw_chunk_sink *k, const void *data, size_t len, uint8_t hash[32], bool *is_zero)
{
    k->chunks++;
    if (len > k->max_chunk) return gw_store_fail(k->store, -EINVAL, "chunk larger than the sink's");
    memcpy(k->copy, data, len);
    data = k->copy;
    if (gw_is_zero(data, len)) {
        memset(hash, 0, 32);
        *is_zero = true;
        k->zero_chunks++;
        return 0;
    }
    *is_zero = false;
    gw_chunk_hash(k->keys, data, len, hash);
    bool found;
    find(k, hash, &found);
    if (found) { k->reused_chunks++; return 0; }
    char obj[80];
    gw_chunk_object(hash, obj);
    k->lookups++;
    int r = k->store->ops->stat(k->store, obj, NULL);
    if (r < 0) return r;
    /* A chunk on the collector's pending list may be removed under us: write it again. */
    if (r == 0 || gw_gc_guard_distrusts(k->guard, hash)) {
        long n = gw_chunk_encode(k->keys, data, len, k->compress, k->enc, k->enc_cap);
        if (n < 0) return gw_store_fail(k->store, (int)n, "cannot encode a chunk: %s", strerror((int)-n));
        gw_throttle_take(k->throttle, (uint64_t)n);
        r = k->store->ops->put(k->store, obj, k->enc, (size_t)n);
        if (r) return r;
        k->new_chunks++;
        k->new_bytes += (uint64_t)n;
        k->raw_new_bytes += len;
    } else {
        k->reused_chunks++;
    }
    return gw_chunk_sink_know(k, hash);
}

struct hash_job {
    const struct gw_chunk_keys *keys;
    const uint8_t *const *data;
    const size_t *len;
    uint8_t (*hash)[32];
    bool *is_zero;
    size_t first, step, n;
};

static void *hash_some(void *arg)
{
    struct hash_job *j = arg;
    for (size_t i = j->first; i < j->n; i += j->step) {
        j->is_zero[i] = gw_is_zero(j->data[i], j->len[i]);
        if (j->is_zero[i]) memset(j->hash[i], 0, 32);
        else gw_chunk_hash(j->keys, j->data[i], j->len[i], j->hash[i]);
    }
    return NULL;
}

int gw_chunk_sink_put_many(struct gw_chunk_sink *k, const uint8_t *const *data, const size_t *len, size_t n,
                           bool stable, uint8_t (*hash)[32], bool *is_zero)
{
    if (n > GW_CHUNK_SINK_BATCH) return gw_store_fail(k->store, -EINVAL, "batch too large");
    if (!stable) {
        /* Live memory: one chunk at a time through the private copy. */
        for (size_t i = 0; i < n; i++) {
            int r = gw_chunk_sink_put(k, data[i], len[i], hash[i], &is_zero[i]);
            if (r) return r;
        }
        return 0;
    }
    char names[GW_CHUNK_SINK_BATCH][80];
    const char *ask[GW_CHUNK_SINK_BATCH];
    size_t which[GW_CHUNK_SINK_BATCH], nask = 0;
    int present[GW_CHUNK_SINK_BATCH];
    for (size_t i = 0; i < n; i++)
        if (len[i] > k->max_chunk) return gw_store_fail(k->store, -EINVAL, "chunk larger than the sink's");
    /* Hashing is most of the CPU a backup costs: the batch is hashed by two threads. */
    struct hash_job jobs[2] = {
        {.keys = k->keys, .data = data, .len = len, .hash = hash, .is_zero = is_zero, .first = 0, .step = 2, .n = n},
        {.keys = k->keys, .data = data, .len = len, .hash = hash, .is_zero = is_zero, .first = 1, .step = 2, .n = n},
    };
    pthread_t helper;
    bool threaded = n > 1 && pthread_create(&helper, NULL, hash_some, &jobs[1]) == 0;
    if (!threaded) jobs[0].step = 1;
    hash_some(&jobs[0]);
    if (threaded) pthread_join(helper, NULL);
    for (size_t i = 0; i < n; i++) {
        k->chunks++;
        if (is_zero[i]) { k->zero_chunks++; continue; }
        bool found;
        find(k, hash[i], &found);
        /* The same chunk twice in one batch is looked up once. */
        for (size_t j = 0; !found && j < nask; j++) found = !memcmp(hash[which[j]], hash[i], 32);
        if (found) { k->reused_chunks++; continue; }
        gw_chunk_object(hash[i], names[nask]);
        ask[nask] = names[nask];
        which[nask++] = i;
    }
    if (!nask) return 0;
    k->lookups += nask;
    int r = k->store->ops->exists_batch(k->store, ask, nask, present);
    if (r) return r;
    for (size_t j = 0; j < nask; j++) {
        size_t i = which[j];
        if (present[j] == 0 || gw_gc_guard_distrusts(k->guard, hash[i])) {
            long e = gw_chunk_encode(k->keys, data[i], len[i], k->compress, k->enc, k->enc_cap);
            if (e < 0) return gw_store_fail(k->store, (int)e, "cannot encode a chunk: %s", strerror((int)-e));
            gw_throttle_take(k->throttle, (uint64_t)e);
            if ((r = k->store->ops->put(k->store, names[j], k->enc, (size_t)e))) return r;
            k->new_chunks++;
            k->new_bytes += (uint64_t)e;
            k->raw_new_bytes += len[i];
        } else {
            k->reused_chunks++;
        }
        if ((r = gw_chunk_sink_know(k, hash[i]))) return r;
    }
    return 0;
}

int gw_chunk_fetch(struct gw_store *s, const struct gw_chunk_keys *keys, const uint8_t hash[32], uint8_t *out,
                   size_t len, char *err, size_t errlen)
{
    char obj[80];
    gw_chunk_object(hash, obj);
    size_t cap = gw_chunk_encoded_cap(len);
    uint8_t *buf = malloc(cap);
    if (!buf) return -ENOMEM;
    struct gw_store_read rd = {.name = obj, .buf = buf, .cap = cap};
    int r = s->ops->get_batch(s, &rd, 1);
    if (!r) r = rd.rc;
    if (r == -ENOENT) snprintf(err, errlen, "chunk %s is missing", obj + 2);
    else if (r) snprintf(err, errlen, "reading chunk %s: %s", obj + 2, strerror(-r));
    else {
        long n = gw_chunk_decode(keys && keys->encrypted ? keys : NULL, hash, buf, rd.len, out, len, len, err, errlen);
        r = n < 0 ? (int)n : 0;
    }
    free(buf);
    return r;
}
