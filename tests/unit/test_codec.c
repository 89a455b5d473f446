/* Unit tests for engine/codec: page batches round-trip, the decoder refuses hostile input
 * without touching memory outside the guest, the adaptive lz4 switch, memory digests.
 * Prints the codec throughput on this machine (informative, not asserted). */
#include "engine/codec/digest.h"
#include "engine/codec/page_codec.h"
#include "engine/codec/wire.h"
#include "engine/common/util.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PG 4096u
#define CANARY 0x5Au

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t len)
{
    for (size_t i = 0; i + 8 <= len; i += 8) { uint64_t v = rnd(); memcpy(p + i, &v, 8); }
}

static void fill_text(uint8_t *p, size_t len)
{
    static const char *words[] = { "guest ", "memory ", "page ", "migration ", "dirty ", "round ",
                                   "the ", "of ", "and ", "kvm ", "vcpu ", "lz4 " };
    size_t i = 0;
    while (i < len) {
        const char *w = words[rnd() % GW_ARRAY_SIZE(words)];
        size_t n = strlen(w);
        if (n > len - i) n = len - i;
        memcpy(p + i, w, n);
        i += n;
    }
}

/* Page kind by index: 0 random, 1 text, 2 zero. */
static int kind_of(uint64_t pfn) { return (int)(pfn % 3); }

static void fill_mixed(uint8_t *mem, uint64_t npages)
{
    for (uint64_t i = 0; i < npages; i++) {
        uint8_t *p = mem + i * PG;
        switch (kind_of(i)) {
        case 0: fill_random(p, PG); break;
        case 1: fill_text(p, PG); break;
        default: memset(p, 0, PG); break;
        }
    }
}

/* Guest memory of npages followed by a canary page that must never change. */
static uint8_t *alloc_guarded(uint64_t npages)
{
    uint8_t *m = malloc((npages + 1) * PG);
    if (m) memset(m + npages * PG, CANARY, PG);
    return m;
}

static bool canary_ok(const uint8_t *m, uint64_t npages)
{
    for (unsigned i = 0; i < PG; i++) if (m[npages * PG + i] != CANARY) return false;
    return true;
}

GW_TEST(roundtrip_mixed_pages)
{
    enum { N = 300 };
    uint8_t *src = malloc(N * PG), *dst = alloc_guarded(N);
    size_t cap = gw_page_batch_bound(N);
    uint8_t *buf = malloc(cap);
    REQUIRE(src && dst && buf);
    fill_mixed(src, N);
    memset(dst, 0xAA, N * PG); /* zero markers must really zero the page */
    uint64_t pfns[N];
    for (unsigned i = 0; i < N; i++) pfns[i] = N - 1 - i; /* any order */
    struct gw_page_encoder e;
    gw_page_encoder_init(&e, GW_CODEC_LZ4, 1);
    size_t len = 0;
    CHECK_EQ(gw_page_encode_batch(&e, src, N * PG, pfns, N, buf, cap, &len), 0);
    CHECK(len < (size_t)N * PG);
    CHECK_EQ(e.st.pages[GW_PAGE_ZERO], N / 3);
    CHECK_EQ(e.st.pages[GW_PAGE_LZ4], N / 3);  /* text compresses */
    CHECK_EQ(e.st.pages[GW_PAGE_RAW], N / 3);  /* random does not */
    CHECK_EQ(e.st.bytes_in, (uint64_t)N * PG);
    CHECK_EQ(e.st.bytes_out, len);
    struct gw_codec_stats st = {0};
    uint32_t n = 0;
    CHECK_EQ(gw_page_decode_batch(buf, len, dst, N * PG, &st, &n), 0);
    CHECK_EQ(n, N);
    CHECK(memcmp(src, dst, N * PG) == 0);
    CHECK_EQ(st.pages[GW_PAGE_ZERO], N / 3);
    CHECK_EQ(st.pages[GW_PAGE_LZ4], N / 3);
    CHECK_EQ(st.pages[GW_PAGE_RAW], N / 3);
    CHECK(canary_ok(dst, N));
    free(src); free(dst); free(buf);
}

/* The iovec encoder describes exactly the payload the copying encoder builds, pointing at
 * guest memory for raw pages (merged when adjacent) and at its scratch for the rest. */
GW_TEST(iov_encoding_matches_copy_encoding)
{
    enum { N = 300 };
    uint8_t *src = malloc(N * PG), *buf = malloc(gw_page_batch_bound(N));
    uint8_t *scratch = malloc(gw_page_batch_scratch_bound(N)), *joined = malloc(gw_page_batch_bound(N));
    struct iovec iov[N + 1];
    REQUIRE(src && buf && scratch && joined);
    fill_mixed(src, N);
    for (unsigned i = 200; i < 260; i++) fill_random(src + i * PG, PG); /* a run of raw pages */
    uint64_t pfns[N];
    for (unsigned i = 0; i < N; i++) pfns[i] = i;
    struct gw_page_encoder e1, e2;
    gw_page_encoder_init(&e1, GW_CODEC_LZ4, 1);
    gw_page_encoder_init(&e2, GW_CODEC_LZ4, 1);
    size_t len1, len2;
    int cnt = 0;
    CHECK_EQ(gw_page_encode_batch(&e1, src, N * PG, pfns, N, buf, gw_page_batch_bound(N), &len1), 0);
    CHECK_EQ(gw_page_encode_batch_iov(&e2, src, N * PG, pfns, N, scratch, gw_page_batch_scratch_bound(N),
                                      iov, &cnt, &len2), 0);
    CHECK_EQ(len1, len2);
    size_t off = 0;
    bool raw_run = false;
    for (int i = 0; i < cnt && off + iov[i].iov_len <= len2; i++) {
        memcpy(joined + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
        raw_run |= iov[i].iov_base == src + 200 * PG && iov[i].iov_len == 60 * PG;
    }
    CHECK_EQ(off, len2);
    CHECK(memcmp(joined, buf, len1) == 0);
    CHECK(raw_run);                 /* 60 adjacent raw pages are one entry, read in place */
    CHECK(cnt < N);
    CHECK_EQ(gw_page_encode_batch_iov(&e2, src, N * PG, pfns, N, scratch, gw_page_batch_scratch_bound(N) - 1,
                                      iov, &cnt, &len2), -ENOBUFS);
    free(src); free(buf); free(scratch); free(joined);
}

GW_TEST(mode_none_sends_raw_and_zero_only)
{
    enum { N = 30 };
    uint8_t *src = malloc(N * PG), *dst = calloc(N, PG), *buf = malloc(gw_page_batch_bound(N));
    REQUIRE(src && dst && buf);
    fill_mixed(src, N);
    uint64_t pfns[N];
    for (unsigned i = 0; i < N; i++) pfns[i] = i;
    struct gw_page_encoder e;
    gw_page_encoder_init(&e, GW_CODEC_NONE, 1);
    size_t len;
    CHECK_EQ(gw_page_encode_batch(&e, src, N * PG, pfns, N, buf, gw_page_batch_bound(N), &len), 0);
    CHECK_EQ(e.st.pages[GW_PAGE_LZ4], 0);
    CHECK_EQ(e.st.pages[GW_PAGE_RAW], 2 * N / 3);
    CHECK_EQ(gw_page_decode_batch(buf, len, dst, N * PG, NULL, NULL), 0);
    CHECK(memcmp(src, dst, N * PG) == 0);
    free(src); free(dst); free(buf);
}

GW_TEST(zero_marker_leaves_zero_page_untouched)
{
    /* A read-only zero page: writing it would fault, so this proves the decoder only reads. */
    uint8_t *mem = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    memset(mem + PG, 7, PG);
    REQUIRE(mprotect(mem, PG, PROT_READ) == 0);
    uint8_t buf[GW_PAGE_BATCH_HDR + 2 * GW_PAGE_DESC_SIZE] = {0};
    buf[0] = 2;
    buf[GW_PAGE_BATCH_HDR + 8] = GW_PAGE_ZERO;                          /* pfn 0 */
    buf[GW_PAGE_BATCH_HDR + 16] = 1;                                    /* pfn 1 */
    buf[GW_PAGE_BATCH_HDR + 16 + 8] = GW_PAGE_ZERO;
    CHECK_EQ(gw_page_decode_batch(buf, sizeof buf, mem, 2 * PG, NULL, NULL), 0);
    CHECK(gw_is_zero(mem + PG, PG));
    munmap(mem, 2 * PG);
}

/* A valid one-page batch: header, one descriptor, data. */
static size_t one_page(uint8_t *buf, uint64_t pfn, uint8_t enc, const void *data, uint32_t len)
{
    memset(buf, 0, GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE);
    buf[0] = 1;
    uint8_t *d = buf + GW_PAGE_BATCH_HDR;
    for (int i = 0; i < 8; i++) d[i] = (uint8_t)(pfn >> (8 * i));
    d[8] = enc;
    for (int i = 0; i < 4; i++) d[12 + i] = (uint8_t)(len >> (8 * i));
    memcpy(d + GW_PAGE_DESC_SIZE, data, len);
    return GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE + len;
}

/* touched gets the bit of every page applied, in every encoding; no other bit. */
GW_TEST(touched_bitmap_marks_every_decoded_page)
{
    enum { N = 200 };
    uint8_t *src = malloc(N * PG), *dst = calloc(N, PG), *buf = malloc(gw_page_batch_bound(N));
    REQUIRE(src && dst && buf);
    fill_mixed(src, N);
    uint64_t pfns[N / 2], touched[(N + 63) / 64] = {0};
    for (unsigned i = 0; i < N / 2; i++) pfns[i] = 2 * i + 1; /* odd pages: all three kinds */
    struct gw_page_encoder e;
    gw_page_encoder_init(&e, GW_CODEC_LZ4, 1);
    size_t len;
    CHECK_EQ(gw_page_encode_batch(&e, src, N * PG, pfns, N / 2, buf, gw_page_batch_bound(N), &len), 0);
    CHECK(e.st.pages[GW_PAGE_RAW] && e.st.pages[GW_PAGE_ZERO] && e.st.pages[GW_PAGE_LZ4]);
    struct gw_page_mem sink = { .mem = dst, .mem_size = N * PG, .touched = touched };
    CHECK_EQ(gw_page_decode_batch_mem(buf, len, &sink, NULL, NULL), 0);
    for (unsigned i = 0; i < N; i++) {
        bool bit = (__atomic_load_n(&touched[i / 64], __ATOMIC_ACQUIRE) >> (i % 64)) & 1;
        if (bit != (i % 2 == 1)) { CHECK(bit == (i % 2 == 1)); break; }
    }
    /* Bits past the last page stay clear. */
    CHECK_EQ(touched[N / 64] >> (N % 64), 0);
    /* A rejected batch marks nothing: the table is checked before any page is applied. */
    memset(touched, 0, sizeof touched);
    buf[GW_PAGE_BATCH_HDR + (N / 2 - 1) * GW_PAGE_DESC_SIZE] = 0xff; /* last pfn out of range */
    buf[GW_PAGE_BATCH_HDR + (N / 2 - 1) * GW_PAGE_DESC_SIZE + 1] = 0xff;
    CHECK_EQ(gw_page_decode_batch_mem(buf, len, &sink, NULL, NULL), -ERANGE);
    for (unsigned i = 0; i < GW_ARRAY_SIZE(touched); i++) CHECK_EQ(touched[i], 0);
    free(src); free(dst); free(buf);
}

/* Fresh memory: a ZERO marker for a page never written must not even read it (a PROT_NONE
 * page would fault); once the page was written, a ZERO marker zeroes it. */
GW_TEST(zero_marker_on_fresh_memory_does_not_touch_the_page)
{
    uint8_t *mem = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mem != MAP_FAILED);
    REQUIRE(mprotect(mem, PG, PROT_NONE) == 0);                          /* pfn 0 */
    uint64_t written[1] = {0}, touched[1] = {0};
    struct gw_page_mem sink = { .mem = mem, .mem_size = 3 * PG, .touched = touched, .written = written };
    uint8_t page[PG], buf[GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE + PG];
    size_t len = one_page(buf, 0, GW_PAGE_ZERO, page, 0);
    CHECK_EQ(gw_page_decode_batch_mem(buf, len, &sink, NULL, NULL), 0);  /* no fault */
    CHECK_EQ(touched[0], 1);                                               /* still noted */
    CHECK_EQ(written[0], 0);                                               /* still a hole */
    /* pfn 1: RAW, then ZERO in a later round: it was written, so it must become zero. */
    fill_random(page, PG);
    len = one_page(buf, 1, GW_PAGE_RAW, page, PG);
    CHECK_EQ(gw_page_decode_batch_mem(buf, len, &sink, NULL, NULL), 0);
    CHECK(memcmp(mem + PG, page, PG) == 0);
    CHECK_EQ(written[0], 2);
    len = one_page(buf, 1, GW_PAGE_ZERO, page, 0);
    CHECK_EQ(gw_page_decode_batch_mem(buf, len, &sink, NULL, NULL), 0);
    CHECK(gw_is_zero(mem + PG, PG));
    CHECK_EQ(touched[0], 3);
    /* Without the written map (memory not fresh) the old rule holds: read, zero if needed. */
    memset(mem + 2 * PG, 9, PG);
    sink.written = NULL;
    len = one_page(buf, 2, GW_PAGE_ZERO, page, 0);
    CHECK_EQ(gw_page_decode_batch_mem(buf, len, &sink, NULL, NULL), 0);
    CHECK(gw_is_zero(mem + 2 * PG, PG));
    munmap(mem, 3 * PG);
}

GW_TEST(hostile_batches_are_rejected)
{
    enum { N = 16 };
    uint8_t *mem = alloc_guarded(N), *buf = malloc(3 * PG), page[PG], big[2 * PG], lz[2 * PG];
    REQUIRE(mem && buf);
    memset(mem, 0, N * PG);
    fill_random(page, PG);
    uint64_t msz = N * PG;
    size_t len;

    len = one_page(buf, 3, GW_PAGE_RAW, page, PG);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), 0);          /* control */
    len = one_page(buf, N, GW_PAGE_RAW, page, PG);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -ERANGE);    /* just past */
    len = one_page(buf, UINT64_MAX, GW_PAGE_RAW, page, PG);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -ERANGE);
    len = one_page(buf, (UINT64_MAX >> 12) + 1, GW_PAGE_RAW, page, PG);        /* *4096 wraps to 0 */
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -ERANGE);
    len = one_page(buf, 1, GW_PAGE_ZERO, page, 0);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), 0);
    len = one_page(buf, 1, GW_PAGE_ZERO, page, 8);                             /* zero with data */
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    len = one_page(buf, 1, GW_PAGE_RAW, page, PG - 1);                         /* short raw */
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    len = one_page(buf, 1, 7, page, PG);                                       /* unknown enc */
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    len = one_page(buf, 1, GW_PAGE_RAW, page, PG);
    buf[GW_PAGE_BATCH_HDR + 9] = 1;                                            /* pad bits */
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);

    /* lz4: garbage, a block of 4095 bytes, a block of 8192 bytes, an oversize length. */
    memset(lz, 0xFF, 64);
    len = one_page(buf, 2, GW_PAGE_LZ4, lz, 64);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EILSEQ);
    fill_text(big, sizeof big);
    int c = LZ4_compress_default((char *)big, (char *)lz, PG - 1, sizeof lz);
    REQUIRE(c > 0 && (unsigned)c <= GW_PAGE_LZ4_MAX);
    len = one_page(buf, 2, GW_PAGE_LZ4, lz, (uint32_t)c);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EILSEQ);
    c = LZ4_compress_default((char *)big, (char *)lz, sizeof big, sizeof lz);
    REQUIRE(c > 0 && (unsigned)c <= GW_PAGE_LZ4_MAX);
    len = one_page(buf, N - 1, GW_PAGE_LZ4, lz, (uint32_t)c);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EILSEQ);
    c = LZ4_compress_default((char *)big, (char *)lz, PG, sizeof lz);
    len = one_page(buf, 2, GW_PAGE_LZ4, lz, (uint32_t)c);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), 0);          /* control */
    CHECK(memcmp(mem + 2 * PG, big, PG) == 0);
    len = one_page(buf, 2, GW_PAGE_LZ4, page, GW_PAGE_LZ4_MAX + 1);
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);

    /* Counts: zero pages, too many pages, a table longer than the payload. */
    len = one_page(buf, 1, GW_PAGE_RAW, page, PG);
    buf[0] = 0;
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    buf[0] = 0x01; buf[1] = 0x10; /* 4097 */
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    buf[0] = 0xFF; buf[1] = 0xFF; buf[2] = 0xFF; buf[3] = 0xFF;
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    buf[0] = 2; buf[1] = buf[2] = buf[3] = 0;
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    buf[0] = 1;
    buf[4] = 1; /* reserved */
    CHECK_EQ(gw_page_decode_batch(buf, len, mem, msz, NULL, NULL), -EBADMSG);
    buf[4] = 0;

    /* Every truncation of a valid batch, and one trailing byte, are errors. */
    len = one_page(buf, 5, GW_PAGE_RAW, page, PG);
    int bad = 0;
    for (size_t l = 0; l < len; l++) bad += gw_page_decode_batch(buf, l, mem, msz, NULL, NULL) != 0;
    CHECK_EQ(bad, len);
    CHECK_EQ(gw_page_decode_batch(buf, len + 1, mem, msz, NULL, NULL), -EBADMSG);
    CHECK(canary_ok(mem, N));
    free(mem); free(buf);
}

GW_TEST(encoder_checks_its_input)
{
    uint8_t mem[2 * PG] = {0}, out[GW_PAGE_BATCH_HDR + 2 * (GW_PAGE_DESC_SIZE + PG)];
    uint64_t pfns[2] = {0, 2};
    struct gw_page_encoder e;
    gw_page_encoder_init(&e, GW_CODEC_AUTO, 0);
    size_t len;
    CHECK_EQ(gw_page_encode_batch(&e, mem, sizeof mem, pfns, 2, out, sizeof out, &len), -ERANGE);
    pfns[1] = 1;
    CHECK_EQ(gw_page_encode_batch(&e, mem, sizeof mem, pfns, 0, out, sizeof out, &len), -EINVAL);
    CHECK_EQ(gw_page_encode_batch(&e, mem, sizeof mem, pfns, 2, out, sizeof out - 1, &len), -ENOBUFS);
    CHECK_EQ(gw_page_encode_batch(&e, mem, sizeof mem, pfns, 2, out, sizeof out, &len), 0);
    CHECK_EQ(len, GW_PAGE_BATCH_HDR + 2 * GW_PAGE_DESC_SIZE);
}

static void run_batches(struct gw_page_encoder *e, const uint8_t *mem, unsigned npages, unsigned batches,
                        uint8_t *out)
{
    uint64_t pfns[64];
    for (unsigned b = 0; b < batches; b++) {
        for (unsigned i = 0; i < 64; i++) pfns[i] = (b * 64 + i) % npages;
        size_t len;
        gw_page_encode_batch(e, mem, (uint64_t)npages * PG, pfns, 64, out, gw_page_batch_bound(64), &len);
    }
}

GW_TEST(adaptive_lz4_switch)
{
    enum { N = 256 };
    uint8_t *rnd_mem = malloc(N * PG), *txt = malloc(N * PG), *out = malloc(gw_page_batch_bound(64));
    REQUIRE(rnd_mem && txt && out);
    fill_random(rnd_mem, N * PG);
    fill_text(txt, N * PG);
    struct gw_page_encoder e;
    gw_page_encoder_init(&e, GW_CODEC_AUTO, 1);
    run_batches(&e, rnd_mem, N, 10, out);
    CHECK(!e.last_compressed);                 /* random data: lz4 did not pay, skipped */
    uint64_t tried = e.st.batches;
    run_batches(&e, rnd_mem, N, 32, out);
    CHECK(e.st.batches == tried + 32);
    run_batches(&e, txt, N, 40, out);          /* a probe notices text compresses again */
    CHECK(e.last_compressed);
    CHECK(e.ratio < 0.9);

    gw_page_encoder_init(&e, GW_CODEC_AUTO, 1);
    run_batches(&e, txt, N, 4, out);
    CHECK(e.last_compressed);
    gw_page_encoder_set_link_rate(&e, 1000ull * GW_GIB); /* a link faster than any compressor */
    run_batches(&e, txt, N, 2, out);
    CHECK(!e.last_compressed);
    gw_page_encoder_set_link_rate(&e, 1 * GW_MIB);       /* a slow link: compress */
    run_batches(&e, txt, N, 1, out);
    CHECK(e.last_compressed);
    free(rnd_mem); free(txt); free(out);
}

GW_TEST(digest_compares_all_bytes_and_prints_hex)
{
    struct gw_digest a, b;
    for (unsigned i = 0; i < GW_DIGEST_SIZE; i++) a.b[i] = b.b[i] = (uint8_t)(0x10 * i + 1);
    CHECK(gw_digest_equal(&a, &b));
    b.b[15] ^= 0x80;
    CHECK(!gw_digest_equal(&a, &b));
    char hex[33];
    CHECK(strcmp(gw_digest_hex(&a, hex), "0111213141516171818191a1b1c1d1e1f1") != 0);
    CHECK(strcmp(gw_digest_hex(&a, hex), "01112131415161718191a1b1c1d1e1f1") == 0);
}

/* Throughput on one core, printed for the record. */
GW_TEST(codec_throughput)
{
    enum { N = 4096, B = 256 }; /* 16 MiB per kind */
    uint8_t *mem = malloc((size_t)N * PG), *dst = malloc((size_t)N * PG), *out = malloc(gw_page_batch_bound(B));
    REQUIRE(mem && dst && out);
    const char *names[] = { "random", "text", "zero" };
    for (int k = 0; k < 3; k++) {
        if (k == 0) fill_random(mem, (size_t)N * PG);
        else if (k == 1) fill_text(mem, (size_t)N * PG);
        else memset(mem, 0, (size_t)N * PG);
        memset(dst, 1, (size_t)N * PG);
        struct gw_page_encoder e;
        gw_page_encoder_init(&e, GW_CODEC_LZ4, 1);
        uint64_t pfns[B], enc_ns = 0, dec_ns = 0, wire = 0;
        for (unsigned b = 0; b < N / B; b++) {
            for (unsigned i = 0; i < B; i++) pfns[i] = b * B + i;
            size_t len;
            uint64_t t0 = gw_now_ns();
            CHECK_EQ(gw_page_encode_batch(&e, mem, (uint64_t)N * PG, pfns, B, out, gw_page_batch_bound(B), &len), 0);
            uint64_t t1 = gw_now_ns();
            CHECK_EQ(gw_page_decode_batch(out, len, dst, (uint64_t)N * PG, NULL, NULL), 0);
            dec_ns += gw_now_ns() - t1;
            enc_ns += t1 - t0;
            wire += len;
        }
        CHECK(memcmp(mem, dst, (size_t)N * PG) == 0);
        double mib = (double)N * PG / (1 << 20);
        printf("  %-6s encode %7.0f MiB/s  decode %7.0f MiB/s  wire/mem %.3f\n", names[k],
               mib / (enc_ns / 1e9), mib / (dec_ns / 1e9), (double)wire / ((double)N * PG));
    }
    free(mem); free(dst); free(out);
}
