/* The incremental memory digest: equal memory gives equal digests however the pages were
 * marked; a change in a marked page changes it; an unmarked change is (by design) not seen
 * until marked; holes hash as zeros without being read. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/vm/chunk_digest.h"
#include "tests/lib/gw_test.h"

#define SIZE (8u << 20)

static void fill(uint8_t *m, unsigned seed)
{
    for (size_t i = 0; i < SIZE / 2; i += 8) {
        uint64_t v = (i * 0x9e3779b97f4a7c15ull) ^ seed;
        memcpy(m + i, &v, 8);
    }
}

GW_TEST(equal_memory_equal_digest)
{
    uint8_t *a = calloc(1, SIZE), *b = calloc(1, SIZE);
    REQUIRE(a && b);
    fill(a, 1);
    fill(b, 1);
    struct gw_chunk_digest da, db;
    REQUIRE(gw_chunk_digest_init(&da, a, SIZE) == 0);
    REQUIRE(gw_chunk_digest_init(&db, b, SIZE) == 0);
    /* a: marked in one go; b: page by page, in reverse, with refreshes in between. */
    gw_chunk_digest_mark(&da, 0, SIZE / 2 / 4096);
    for (long p = SIZE / 2 / 4096 - 1; p >= 0; p--) {
        gw_chunk_digest_mark(&db, (uint64_t)p, 1);
        if (p % 100 == 0) gw_chunk_digest_refresh(&db);
    }
    uint8_t x[16], y[16];
    gw_chunk_digest_final(&da, x);
    gw_chunk_digest_final(&db, y);
    CHECK(memcmp(x, y, 16) == 0);
    /* A change in a marked page is seen. */
    b[12345] ^= 1;
    gw_chunk_digest_mark(&db, 12345 / 4096, 1);
    gw_chunk_digest_final(&db, y);
    CHECK(memcmp(x, y, 16) != 0);
    /* Marking via a page bitmap works the same; the bitmap words are taken. */
    b[12345] ^= 1;
    uint64_t bm[SIZE / 4096 / 64] = {0};
    bm[0] = 1ull << 3;
    gw_chunk_digest_mark_bitmap(&db, bm, SIZE / 4096 / 64, 1);
    CHECK_EQ(bm[0], 0);
    gw_chunk_digest_final(&db, y);
    CHECK(memcmp(x, y, 16) == 0);
    gw_chunk_digest_free(&da);
    gw_chunk_digest_free(&db);
    free(a);
    free(b);
}

GW_TEST(holes_are_never_read)
{
    /* Unreadable memory: a digest that only hashes marked chunks must not touch it. */
    uint8_t *m = mmap(NULL, SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    struct gw_chunk_digest d, z;
    REQUIRE(gw_chunk_digest_init(&d, m, SIZE) == 0);
    uint8_t *zeros = calloc(1, SIZE);
    REQUIRE(gw_chunk_digest_init(&z, zeros, SIZE) == 0);
    gw_chunk_digest_mark(&z, 0, SIZE / 4096); /* really read the zeros */
    uint8_t x[16], y[16];
    gw_chunk_digest_final(&d, x);
    gw_chunk_digest_final(&z, y);
    CHECK(memcmp(x, y, 16) == 0); /* a hole digests like zeros */
    gw_chunk_digest_free(&d);
    gw_chunk_digest_free(&z);
    munmap(m, SIZE);
    free(zeros);
}

GW_TEST(bad_sizes)
{
    struct gw_chunk_digest d;
    static uint8_t buf[4096];
    CHECK(gw_chunk_digest_init(&d, buf, 4096) != 0);
}

/* A receiver's batch: writes each page into mem in order (the later copy of a page named
 * twice wins, as in guest memory), then tells the digest where each page came from. */
static void place_batch(struct gw_chunk_digest *d, uint8_t *mem, const uint64_t *pfns, const uint8_t *const *from,
                        const uint8_t *const *bytes, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) memcpy(mem + pfns[i] * 4096, bytes[i], 4096);
    gw_chunk_digest_placed(d, pfns, from, n);
}

static bool digest_is_memory(struct gw_chunk_digest *d, const uint8_t *mem, size_t size)
{
    uint8_t x[16], y[16];
    gw_chunk_digest_final(d, x);
    return gw_chunk_digest_buffer(mem, size, y) == 0 && memcmp(x, y, 16) == 0;
}

GW_TEST(placed_batches_hash_what_memory_holds)
{
    enum { PAGES = 64 };
    uint8_t *mem = calloc(PAGES, 4096), *buf = malloc(16 * 4096), *other = malloc(4 * 4096);
    REQUIRE(mem && buf && other);
    for (size_t i = 0; i < 16 * 4096; i++) buf[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < 4 * 4096; i++) other[i] = (uint8_t)(i * 13 + 5);
    struct gw_chunk_digest d;
    REQUIRE(gw_chunk_digest_init(&d, mem, PAGES * 4096) == 0);

    /* A whole run from the buffer (chunks 0 and 1), then page 5 again from elsewhere: the
     * newer copy is what memory holds, and what the digest must say. */
    uint64_t p1[9] = {0, 1, 2, 3, 4, 5, 6, 7, 5};
    const uint8_t *f1[9], *b1[9];
    for (int i = 0; i < 8; i++) f1[i] = b1[i] = buf + i * 4096;
    f1[8] = NULL;
    b1[8] = other;
    place_batch(&d, mem, p1, f1, b1, 9);
    CHECK(digest_is_memory(&d, mem, PAGES * 4096));

    /* The other order: page 9 alone first, then chunk 2 (pages 8-11) whole and newer. */
    uint64_t p2[5] = {9, 8, 9, 10, 11};
    const uint8_t *f2[5] = {NULL, buf, buf + 4096, buf + 2 * 4096, buf + 3 * 4096};
    const uint8_t *b2[5] = {other + 4096, buf, buf + 4096, buf + 2 * 4096, buf + 3 * 4096};
    place_batch(&d, mem, p2, f2, b2, 5);
    CHECK(digest_is_memory(&d, mem, PAGES * 4096));

    /* A run that starts inside a chunk: 13-15 are hashed from memory, 16-19 from the buffer. */
    uint64_t p3[7] = {13, 14, 15, 16, 17, 18, 19};
    const uint8_t *f3[7];
    for (int i = 0; i < 7; i++) f3[i] = buf + (size_t)(4 + i) * 4096;
    place_batch(&d, mem, p3, f3, f3, 7);
    CHECK(digest_is_memory(&d, mem, PAGES * 4096));

    /* A whole chunk is taken from its buffer, not read: a buffer that differs from what was
     * written shows in the digest (so the fast path above really ran). */
    uint64_t p4[4] = {32, 33, 34, 35};
    const uint8_t *f4[4] = {other, other + 4096, other + 2 * 4096, other + 3 * 4096};
    const uint8_t *b4[4] = {buf, buf + 4096, buf + 2 * 4096, buf + 3 * 4096};
    place_batch(&d, mem, p4, f4, b4, 4);
    CHECK(!digest_is_memory(&d, mem, PAGES * 4096));

    gw_chunk_digest_free(&d);
    free(mem);
    free(buf);
    free(other);
}

/* set_from over a range that cuts chunks at both ends: the whole chunks come from the data
 * given (not read), the cut ones are marked and read from memory at the end. */
GW_TEST(set_from_takes_whole_chunks_and_marks_cut_ones)
{
    enum { PAGES = 32 };
    uint8_t *mem = calloc(PAGES, 4096), *data = malloc(10 * 4096);
    REQUIRE(mem && data);
    for (size_t i = 0; i < 10 * 4096; i++) data[i] = (uint8_t)(i * 11 + 3);
    struct gw_chunk_digest d;
    REQUIRE(gw_chunk_digest_init(&d, mem, PAGES * 4096) == 0);
    /* Pages 2..11: chunk 0 cut (2, 3), chunks 1 and 2 whole (4..11). */
    memcpy(mem + 2 * 4096, data, 10 * 4096);
    gw_chunk_digest_set_from(&d, 2, 10, data);
    CHECK(digest_is_memory(&d, mem, PAGES * 4096));
    /* A range inside one chunk only marks it. */
    memset(mem + 13 * 4096, 0x77, 4096);
    gw_chunk_digest_set_from(&d, 13, 1, mem + 13 * 4096);
    CHECK(digest_is_memory(&d, mem, PAGES * 4096));
    /* Cut chunks are read from memory: a buffer that differs there does not show... */
    uint8_t *other = malloc(10 * 4096);
    REQUIRE(other);
    memcpy(other, data, 10 * 4096);
    other[0] ^= 1;                      /* page 2: in cut chunk 0 */
    gw_chunk_digest_set_from(&d, 2, 10, other);
    CHECK(digest_is_memory(&d, mem, PAGES * 4096));
    /* ...while whole chunks are taken from the buffer: a difference there does. */
    other[3 * 4096] ^= 1;               /* page 5: in whole chunk 1 */
    gw_chunk_digest_set_from(&d, 2, 10, other);
    CHECK(!digest_is_memory(&d, mem, PAGES * 4096));
    gw_chunk_digest_free(&d);
    free(mem);
    free(data);
    free(other);
}
