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
    gw_chunk_sink_drain(k);
    free(k->pipe);
    k->pipe = NULL;
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

/* lz4 is tried on a chunk unless the recent ones refused it: after LZ4_GIVE_UP refusals in
 * a row (random data: most of a busy guest's memory) only every LZ4_RETRY_EVERY-th chunk tries,
 * so memory that turns compressible is noticed again. */
#define LZ4_GIVE_UP 8u
#define LZ4_RETRY_EVERY 16u

static bool try_lz4(const struct gw_chunk_sink *k, uint64_t seq)
{
    return k->compress && (k->lz4_refused < LZ4_GIVE_UP || seq % LZ4_RETRY_EVERY == 0);
}

static void note_lz4(struct gw_chunk_sink *k, bool tried, long objlen, size_t len)
{
    if (!tried) return;
    if ((size_t)objlen >= GW_CHUNK_HEADER + len) k->lz4_refused++;
    else k->lz4_refused = 0;
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
        bool lz = try_lz4(k, k->encoded++);
        long n = gw_chunk_encode(k->keys, data, len, lz, k->enc, k->enc_cap);
        if (n < 0) return gw_store_fail(k->store, (int)n, "cannot encode a chunk: %s", strerror((int)-n));
        note_lz4(k, lz, n, len);
        if ((r = gw_throttle_take(k->throttle, (uint64_t)n))) return gw_store_fail(k->store, r, "backup cancelled");
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

/* Names the batch: zero test and hash, split over the caller and one helper thread. */
static void hash_batch(const struct gw_chunk_sink *k, const uint8_t *const *data, const size_t *len, size_t n,
                       uint8_t (*hash)[32], bool *is_zero)
{
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
}

/* A lookup is a round trip that, on RADOS, queues behind our own writes on the OSD (10 ms a
 * batch measured during a full backup, a third of the writer's time). When the last
 * LOOKUP_GIVE_UP batches looked up found nothing (a first backup: there is nothing to find),
 * batches are written without one: content-addressed puts are idempotent, so a chunk the
 * store had is only written again with the same bytes. Every LOOKUP_PROBE_EVERY-th batch
 * still looks up, and any hit turns lookups back on (a clone, a VM from the same template). */
#define LOOKUP_GIVE_UP 4u
#define LOOKUP_PROBE_EVERY 8u

static bool should_look_up(const struct gw_chunk_sink *k, uint64_t batch)
{
    return k->lookup_misses < LOOKUP_GIVE_UP || batch % LOOKUP_PROBE_EVERY == 0;
}

/* Counters of one batch, added to the sink's by the thread that owns the sink. */
struct batch_count {
    uint64_t chunks, zero_chunks, new_chunks, reused_chunks, new_bytes, raw_new_bytes, lookups;
    uint64_t lookup_ns, encode_ns, put_ns, blind_chunks;
};

/* Stores a named batch: chunks not known are looked up together, the missing ones encoded
 * and written. Touches the store, the known set and the encode buffer, so one thread at a
 * time runs it (the caller's, or the pipeline's writer between two joins). */
static int store_batch(struct gw_chunk_sink *k, const uint8_t *const *data, const size_t *len, size_t n,
                       const uint8_t (*hash)[32], const bool *is_zero, struct batch_count *c)
{
    char names[GW_CHUNK_SINK_BATCH][80];
    const char *ask[GW_CHUNK_SINK_BATCH];
    size_t which[GW_CHUNK_SINK_BATCH], nask = 0;
    int present[GW_CHUNK_SINK_BATCH];
    for (size_t i = 0; i < n; i++) {
        c->chunks++;
        if (is_zero[i]) { c->zero_chunks++; continue; }
        bool found;
        find(k, hash[i], &found);
        /* The same chunk twice in one batch is looked up once. */
        for (size_t j = 0; !found && j < nask; j++) found = !memcmp(hash[which[j]], hash[i], 32);
        if (found) { c->reused_chunks++; continue; }
        gw_chunk_object(hash[i], names[nask]);
        ask[nask] = names[nask];
        which[nask++] = i;
    }
    if (!nask) return 0;
    int r = 0;
    if (should_look_up(k, k->batches++)) {
        c->lookups += nask;
        uint64_t t0 = gw_now_ns();
        r = k->store->ops->exists_batch(k->store, ask, nask, present);
        c->lookup_ns += gw_now_ns() - t0;
        if (r) return r;
        bool hit = false;
        for (size_t j = 0; j < nask; j++) {
            if (present[j] < 0)   /* a back end that only said so per object: never "present" */
                return gw_store_fail(k->store, present[j], "%s: looking up %s: %s", k->store->desc, ask[j],
                                     strerror(-present[j]));
            hit |= present[j] > 0;
        }
        k->lookup_misses = hit ? 0 : k->lookup_misses + 1;
    } else {
        for (size_t j = 0; j < nask; j++) present[j] = 0;
        c->blind_chunks += nask;
    }
    for (size_t j = 0; j < nask; j++) {
        size_t i = which[j];
        if (present[j] == 0 || gw_gc_guard_distrusts(k->guard, hash[i])) {
            bool lz = try_lz4(k, k->encoded++);
            uint64_t t1 = gw_now_ns();
            long e = gw_chunk_encode(k->keys, data[i], len[i], lz, k->enc, k->enc_cap);
            uint64_t t2 = gw_now_ns();
            c->encode_ns += t2 - t1;
            if (e < 0) return gw_store_fail(k->store, (int)e, "cannot encode a chunk: %s", strerror((int)-e));
            note_lz4(k, lz, e, len[i]);
            if ((r = gw_throttle_take(k->throttle, (uint64_t)e))) return gw_store_fail(k->store, r, "backup cancelled");
            r = k->store->ops->put(k->store, names[j], k->enc, (size_t)e);
            c->put_ns += gw_now_ns() - t2;
            if (r) return r;
            c->new_chunks++;
            c->new_bytes += (uint64_t)e;
            c->raw_new_bytes += len[i];
        } else {
            c->reused_chunks++;
        }
        if ((r = gw_chunk_sink_know(k, hash[i]))) return r;
    }
    return 0;
}

static void add_count(struct gw_chunk_sink *k, const struct batch_count *c)
{
    k->chunks += c->chunks;
    k->zero_chunks += c->zero_chunks;
    k->new_chunks += c->new_chunks;
    k->reused_chunks += c->reused_chunks;
    k->new_bytes += c->new_bytes;
    k->raw_new_bytes += c->raw_new_bytes;
    k->lookups += c->lookups;
    k->lookup_ns += c->lookup_ns;
    k->blind_chunks += c->blind_chunks;
    k->encode_ns += c->encode_ns;
    k->put_ns += c->put_ns;
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
    for (size_t i = 0; i < n; i++)
        if (len[i] > k->max_chunk) return gw_store_fail(k->store, -EINVAL, "chunk larger than the sink's");
    uint64_t t0 = gw_now_ns();
    hash_batch(k, data, len, n, hash, is_zero);
    k->hash_ns += gw_now_ns() - t0;
    struct batch_count c = {0};
    int r = store_batch(k, data, len, n, (const uint8_t (*)[32])hash, is_zero, &c);
    add_count(k, &c);
    return r;
}

/* The pipeline's one batch in the writer's hands. */
struct gw_chunk_sink_pipe {
    struct gw_chunk_sink *k;
    const uint8_t *data[GW_CHUNK_SINK_BATCH];
    size_t len[GW_CHUNK_SINK_BATCH], n;
    uint8_t hash[GW_CHUNK_SINK_BATCH][32];
    bool zero[GW_CHUNK_SINK_BATCH];
    struct batch_count c;
    int rc;
    pthread_t thread;
    bool running;
};

static void *write_some(void *arg)
{
    struct gw_chunk_sink_pipe *p = arg;
    p->rc = store_batch(p->k, p->data, p->len, p->n, (const uint8_t (*)[32])p->hash, p->zero, &p->c);
    return NULL;
}

int gw_chunk_sink_drain(struct gw_chunk_sink *k)
{
    struct gw_chunk_sink_pipe *p = k->pipe;
    if (!p || !p->running) return 0;
    uint64_t t0 = gw_now_ns();
    pthread_join(p->thread, NULL);
    k->drain_wait_ns += gw_now_ns() - t0;
    p->running = false;
    add_count(k, &p->c);
    return p->rc;
}

void gw_chunk_sink_name(const struct gw_chunk_sink *k, const void *data, size_t len, uint8_t hash[32], bool *is_zero)
{
    *is_zero = gw_is_zero(data, len);
    if (*is_zero) memset(hash, 0, 32);
    else gw_chunk_hash(k->keys, data, len, hash);
}

int gw_chunk_sink_submit(struct gw_chunk_sink *k, const uint8_t *const *data, const size_t *len, size_t n,
                         const uint8_t (*hash)[32], const bool *is_zero)
{
    if (n > GW_CHUNK_SINK_BATCH) return gw_store_fail(k->store, -EINVAL, "batch too large");
    for (size_t i = 0; i < n; i++)
        if (len[i] > k->max_chunk) return gw_store_fail(k->store, -EINVAL, "chunk larger than the sink's");
    if (!k->pipe && !(k->pipe = calloc(1, sizeof *k->pipe))) return gw_store_fail(k->store, -ENOMEM, "out of memory");
    int r = gw_chunk_sink_drain(k);
    if (r) return r;
    struct gw_chunk_sink_pipe *p = k->pipe;
    p->k = k;
    p->n = n;
    memcpy(p->data, data, n * sizeof *data);
    memcpy(p->len, len, n * sizeof *len);
    memcpy(p->hash, hash, n * 32);
    memcpy(p->zero, is_zero, n * sizeof *is_zero);
    p->c = (struct batch_count){0};
    p->rc = 0;
    if (pthread_create(&p->thread, NULL, write_some, p) == 0) { p->running = true; return 0; }
    write_some(p);   /* no thread: store it now */
    add_count(k, &p->c);
    return p->rc;
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
