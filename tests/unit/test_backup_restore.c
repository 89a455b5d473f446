/* An ordinary restore of memory (gw_backup_restore) from a directory store, built here chunk by
 * chunk: into memfd-backed guest memory (placed by pwrite, the digest taken from the checked
 * buffer) and into a plain buffer (placed in the mapping), with chunks of 64 KiB and of 4 KiB
 * (smaller than the digest's 16 KiB: rehashed from memory at the end), and a damaged chunk,
 * which fails the restore. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "engine/vm/chunk_digest.h"
#include "engine/vm/guest_mem.h"
#include "storage/chunk.h"
#include "storage/manifest.h"
#include "storage/store.h"
#include "tests/lib/gw_test.h"

#define MEM (8ull << 20)   /* GW_MIN_MEMORY */

/* Guest memory with random pages and holes (every third 64 KiB run left zero). */
static void fill(uint8_t *m)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (uint64_t off = 0; off < MEM; off += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        uint64_t v = (off / 65536) % 3 == 2 ? 0 : x;
        memcpy(m + off, &v, 8);
    }
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) if (p[i]) return false;
    return true;
}

struct backup {
    Godwit__V1__BackupManifest man;
    Godwit__V1__BackupImage mem, disk;
    ProtobufCBinaryData chunks[MEM / 4096];
    uint8_t names[MEM / 4096][32], digest[16];
    char first_obj[80];   /* the first non-zero chunk's object */
};

/* Stores src in chunks of cs bytes (zero chunks are not stored) and describes it in b. */
static int store_backup(struct gw_store *s, const uint8_t *src, uint32_t cs, struct backup *b)
{
    memset(b, 0, sizeof *b);
    godwit__v1__backup_manifest__init(&b->man);
    godwit__v1__backup_image__init(&b->mem);
    godwit__v1__backup_image__init(&b->disk);
    size_t cap = gw_chunk_encoded_cap(cs);
    uint8_t *obj = malloc(cap);
    if (!obj) return -ENOMEM;
    int r = 0;
    for (uint64_t i = 0; i < MEM / cs && !r; i++) {
        if (all_zero(src + i * cs, cs)) continue;
        gw_chunk_hash(NULL, src + i * cs, cs, b->names[i]);
        long len = gw_chunk_encode(NULL, src + i * cs, cs, true, obj, cap);
        char name[80];
        gw_chunk_object(b->names[i], name);
        if (!b->first_obj[0]) memcpy(b->first_obj, name, sizeof name);
        r = len < 0 ? (int)len : s->ops->put(s, name, obj, (size_t)len);
        b->chunks[i] = (ProtobufCBinaryData){.len = 32, .data = b->names[i]};
    }
    if (!r) r = s->ops->wait(s);
    free(obj);
    b->mem.size = MEM;
    b->mem.chunk_size = cs;
    b->mem.n_chunks = MEM / cs;
    b->mem.chunks = b->chunks;
    b->man.memory = &b->mem;
    b->man.disk = &b->disk;
    gw_chunk_digest_buffer(src, MEM, b->digest);
    b->man.memory_digest = (ProtobufCBinaryData){.len = 16, .data = b->digest};
    return r;
}

/* Restores b into fresh memory (memfd-backed or a plain buffer) and compares it with src. */
static void restore_and_compare(struct gw_backup_target *t, struct backup *b, const uint8_t *src, bool memfd)
{
    struct gw_guest_mem m;
    uint8_t *buf = NULL;
    if (memfd) {
        REQUIRE(gw_guest_mem_create(&m, MEM, "restore-test") == 0);
        REQUIRE(m.memfd >= 0);
    } else {
        buf = calloc(1, MEM);
        REQUIRE(buf);
        gw_guest_mem_wrap(&m, buf, MEM);
    }
    struct gw_restore_stats st;
    char err[512] = "";
    int r = gw_backup_restore(t, &b->man, &m, NULL, &st, err, sizeof err);
    if (r) fprintf(stderr, "  restore (chunk %u, %s): %s\n", b->mem.chunk_size, memfd ? "memfd" : "buffer", err);
    CHECK_EQ(r, 0);
    CHECK(!memcmp(m.base, src, MEM));
    CHECK_EQ(st.memory_bytes, MEM);
    CHECK(st.chunks > 0 && st.chunks < MEM / b->mem.chunk_size);   /* the holes were not read */
    gw_guest_mem_destroy(&m);
    free(buf);
}

GW_TEST(restore_places_memory_by_memfd_and_by_mapping)
{
    char dir[] = "/tmp/gw-restore-test.XXXXXX";
    REQUIRE(mkdtemp(dir));
    char spec[64];
    snprintf(spec, sizeof spec, "dir:%s", dir);
    struct gw_store *s;
    char err[512] = "";
    REQUIRE(gw_store_open(&(struct gw_store_params){.spec = spec}, &s, err, sizeof err) == 0);
    struct gw_backup_target t = {.store = s};
    uint8_t *src = malloc(MEM);
    static struct backup b;
    REQUIRE(src);
    fill(src);
    const uint32_t sizes[] = {65536, 4096};   /* whole digest chunks, and pages smaller than one */
    for (size_t k = 0; k < 2; k++) {
        REQUIRE(store_backup(s, src, sizes[k], &b) == 0);
        restore_and_compare(&t, &b, src, true);
        restore_and_compare(&t, &b, src, false);
    }

    /* A chunk whose object holds other data: its check fails, and so does the restore. */
    REQUIRE(store_backup(s, src, 65536, &b) == 0);
    uint8_t other[65536], *obj = malloc(gw_chunk_encoded_cap(sizeof other));
    REQUIRE(obj);
    memset(other, 0x5a, sizeof other);
    long len = gw_chunk_encode(NULL, other, sizeof other, false, obj, gw_chunk_encoded_cap(sizeof other));
    REQUIRE(len > 0);
    REQUIRE(s->ops->put(s, b.first_obj, obj, (size_t)len) == 0 && s->ops->wait(s) == 0);
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, MEM, "restore-test") == 0);
    struct gw_restore_stats st;
    CHECK(gw_backup_restore(&t, &b.man, &m, NULL, &st, err, sizeof err) < 0);
    CHECK(strstr(err, "chunk") != NULL);
    gw_guest_mem_destroy(&m);

    free(obj);
    free(src);
    gw_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK_EQ(system(cmd), 0);
}


