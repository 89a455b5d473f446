/* The incremental memory digest: equal memory gives equal digests however the pages were
 * marked; a change in a marked page changes it; an unmarked change is (by design) not seen
 * until marked; holes hash as zeros without being read. */
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
