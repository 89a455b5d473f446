/* The RDMA page path above the verbs: the RDMA_REGIONS record and its checks, RDMA WRITE bounds,
 * the written-in-place descriptors at the decoder, and whole migrations whose raw pages go by
 * RDMA WRITE into the destination's registered memory, one of them of a real KVM guest's
 * memory. No RDMA device exists on the test host, so the verbs underneath are the loopback
 * TEST DOUBLE (tests/lib/rdma_loopback.h): a WRITE is a checked copy into the peer's
 * registration, records go over TCP. The real verbs (rdma.c) are tested for their refusal
 * without a device (test_transport rdma_without_device_fails_clearly). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/codec/page_codec.h"
#include "engine/common/util.h"
#include "engine/pump/page_recv.h"
#include "engine/pump/rdma_batch.h"
#include "engine/transport/rdma_mem.h"
#include "engine/transport/session.h"
#include "engine/vm/vm.h"
#include "precopy/precopy_dest.h"
#include "precopy/precopy_source.h"
#include "tests/lib/gw_test.h"
#include "tests/lib/rdma_loopback.h"
#include "tests/unit/mig_harness.h"

#define MEM (64ull * PG)

/* ---- RDMA_REGIONS: the record and its checks ---- */

static int unpack_one(const Godwit__V1__MigRdmaRegion *const *rs, size_t n, unsigned nstreams, uint64_t mem_size,
                      struct gw_err *e)
{
    Godwit__V1__MigRdmaRegions m = GODWIT__V1__MIG_RDMA_REGIONS__INIT;
    m.n_regions = n;
    m.regions = (Godwit__V1__MigRdmaRegion **)rs;
    uint8_t *b;
    size_t len;
    if (gw_wire_pack_msg(&m.base, &b, &len)) return -ENOMEM;
    static struct gw_rdma_peer_region out[GW_WIRE_MAX_RDMA_REGIONS];
    unsigned got = 0;
    int r = gw_rdma_regions_unpack(b, len, nstreams, mem_size, out, &got, e);
    free(b);
    return r;
}

static Godwit__V1__MigRdmaRegion region(uint32_t stream, uint64_t off, uint64_t len, uint64_t addr)
{
    Godwit__V1__MigRdmaRegion g = GODWIT__V1__MIG_RDMA_REGION__INIT;
    g.stream = stream;
    g.guest_offset = off;
    g.length = len;
    g.addr = addr;
    g.rkey = 7;
    return g;
}

/* One hostile region (with a good one before it) is refused with why. */
static void refused(Godwit__V1__MigRdmaRegion bad, const char *why)
{
    Godwit__V1__MigRdmaRegion good = region(0, 0, 8 * PG, 1 << 20);
    const Godwit__V1__MigRdmaRegion *rs[2] = { &good, &bad };
    struct gw_err e = {0};
    CHECK_EQ(unpack_one(rs, 2, 2, MEM, &e), -EBADMSG);
    CHECK(strstr(e.msg, why) != NULL);
    if (!strstr(e.msg, why)) printf("  got \"%s\", wanted \"%s\"\n", e.msg, why);
}

GW_TEST(regions_round_trip_sorted)
{
    struct gw_rdma_peer_region v[3] = {
        { .stream = 1, .guest_off = 32 * PG, .r = { .addr = 0x7f0000000000, .len = 32 * PG, .rkey = 9 } },
        { .stream = 1, .guest_off = 0, .r = { .addr = 0x7f0000100000, .len = 32 * PG, .rkey = 9 } },
        { .stream = 0, .guest_off = 0, .r = { .addr = 0x7f0000200000, .len = MEM, .rkey = 5 } },
    };
    uint8_t *b;
    size_t len;
    REQUIRE(gw_rdma_regions_pack(v, 3, &b, &len) == 0);
    struct gw_rdma_peer_region out[GW_WIRE_MAX_RDMA_REGIONS];
    unsigned n = 0;
    struct gw_err e = {0};
    CHECK_EQ(gw_rdma_regions_unpack(b, len, 2, MEM, out, &n, &e), 0);
    free(b);
    CHECK_EQ(n, 3);
    CHECK(out[0].stream == 0 && out[0].r.rkey == 5 && out[0].r.len == MEM);
    CHECK(out[1].stream == 1 && out[1].guest_off == 0 && out[1].r.addr == 0x7f0000100000);
    CHECK(out[2].stream == 1 && out[2].guest_off == 32 * PG);
    /* Lookups: by stream and guest offset, none outside. */
    CHECK(gw_rdma_regions_find(out, n, 1, 40 * PG) == &out[2]);
    CHECK(gw_rdma_regions_find(out, n, 1, 31 * PG + 4095) == &out[1]);
    CHECK(gw_rdma_regions_find(out, n, 0, MEM) == NULL);
    CHECK(gw_rdma_regions_find(out, n, 2, 0) == NULL);
    CHECK_EQ(gw_rdma_regions_pack(v, 0, &b, &len), -EINVAL);
}

GW_TEST(hostile_regions_are_refused)
{
    refused(region(2, 0, PG, 0), "names a stream the session does not have");
    refused(region(1, 100, PG, 0), "not page aligned");
    refused(region(1, 0, PG + 1, 0), "not page aligned");
    refused(region(1, 0, 0, 0), "is empty");
    refused(region(1, MEM - PG, 2 * PG, 0), "reaches beyond guest memory");
    refused(region(1, MEM, PG, 0), "reaches beyond guest memory");
    refused(region(1, UINT64_MAX - PG + 1, 2 * PG, 0), "reaches beyond guest memory"); /* offset + length wraps */
    refused(region(1, 0, 2 * PG, UINT64_MAX - PG), "wraps around");
    refused(region(0, 4 * PG, 8 * PG, 0), "overlap");   /* the good one is stream 0, [0, 8 pages) */
    /* Counts: none, and one over the limit. */
    struct gw_err e = {0};
    CHECK_EQ(unpack_one(NULL, 0, 1, MEM, &e), -EBADMSG);
    CHECK(strstr(e.msg, "0 regions") != NULL);
    static Godwit__V1__MigRdmaRegion many[GW_WIRE_MAX_RDMA_REGIONS + 1];
    static const Godwit__V1__MigRdmaRegion *pm[GW_WIRE_MAX_RDMA_REGIONS + 1];
    for (unsigned i = 0; i <= GW_WIRE_MAX_RDMA_REGIONS; i++) {
        many[i] = region(0, (uint64_t)i * PG, PG, 0);
        pm[i] = &many[i];
    }
    CHECK_EQ(unpack_one(pm, GW_WIRE_MAX_RDMA_REGIONS + 1, 1, 1024 * PG, &e), -EBADMSG);
    CHECK(strstr(e.msg, "257 regions") != NULL);
    CHECK_EQ(unpack_one(pm, GW_WIRE_MAX_RDMA_REGIONS, 1, 1024 * PG, &e), 0);
    /* Not a message at all. */
    uint8_t junk[5] = { 0x0a, 0xff, 0xff, 0xff, 0x0f };
    struct gw_rdma_peer_region out[GW_WIRE_MAX_RDMA_REGIONS];
    unsigned n;
    CHECK_EQ(gw_rdma_regions_unpack(junk, sizeof junk, 1, MEM, out, &n, &e), -EBADMSG);
    CHECK(strstr(e.msg, "malformed") != NULL);
}

/* ---- RDMA WRITE through the double: bounds ---- */

struct pair {
    struct gw_rdma_loop *f;
    struct gw_conn *a, *b;
};

static int pair_open(struct pair *p)
{
    int sv[2];
    memset(p, 0, sizeof *p);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return -1;
    p->f = gw_rdma_loop_new();
    if (!p->f || gw_conn_from_fd(sv[0], &p->a, NULL) || gw_conn_from_fd(sv[1], &p->b, NULL)) return -1;
    return gw_rdma_loop_attach(p->f, p->a, NULL) || gw_rdma_loop_attach(p->f, p->b, NULL) ? -1 : 0;
}

static void pair_close(struct pair *p)
{
    gw_conn_close(p->a);
    gw_conn_close(p->b);
    gw_rdma_loop_free(p->f);
}

GW_TEST(rdma_write_checks_both_regions)
{
    struct pair p;
    REQUIRE(pair_open(&p) == 0);
    static uint8_t src[8 * PG], dst[8 * PG], ro[PG];
    for (unsigned i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 7 + 1);
    struct gw_rdma_mr *lm = NULL, *rm = NULL, *rom = NULL;
    struct gw_rdma_region remote, ro_desc;
    struct gw_err e = {0};
    REQUIRE(gw_rdma_mem_register(p.a, src, sizeof src, false, &lm, NULL, &e) == 0);
    REQUIRE(gw_rdma_mem_register(p.b, dst, sizeof dst, true, &rm, &remote, &e) == 0);
    REQUIRE(gw_rdma_mem_register(p.b, ro, sizeof ro, false, &rom, &ro_desc, &e) == 0);
    CHECK_EQ(remote.len, sizeof dst);
    /* In range: the bytes land, nothing else moves. */
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 2 * PG, 3 * PG, &remote, 4 * PG, &e), 0);
    CHECK(memcmp(dst + 4 * PG, src + 2 * PG, 3 * PG) == 0);
    CHECK(dst[4 * PG - 1] == 0 && dst[7 * PG] == 0);
    /* Out of range on either side: refused before anything is posted. */
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 0, PG, &remote, 8 * PG, &e), -ERANGE);
    CHECK(strstr(e.msg, "outside the peer's region") != NULL);
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 0, 2 * PG, &remote, 7 * PG, &e), -ERANGE);
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, UINT64_MAX - PG + 1, 2 * PG, &remote, 0, &e), -ERANGE);
    CHECK(strstr(e.msg, "outside the local region") != NULL);
    /* A descriptor the peer never handed out, or memory it did not open for writes: the
     * "NIC" refuses it and the completion says so. */
    struct gw_rdma_region forged = remote;
    forged.rkey ^= 0x55;
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 0, PG, &forged, 0, &e), -EIO);
    CHECK(strstr(e.msg, "remote access error") != NULL);
    forged = remote;
    forged.addr -= PG;   /* claims a larger region than was registered */
    forged.len += PG;
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 0, PG, &forged, 0, &e), -EIO);
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 0, PG, &ro_desc, 0, &e), -EIO);
    CHECK(ro[0] == 0);
    uint64_t w, bytes, refusedn;
    gw_rdma_loop_counts(p.f, &w, &bytes, &refusedn);
    CHECK_EQ(w, 1);
    CHECK_EQ(bytes, 3 * PG);
    CHECK_EQ(refusedn, 3);
    gw_rdma_mem_deregister(lm);
    gw_rdma_mem_deregister(rm);
    gw_rdma_mem_deregister(rom);
    /* A deregistered region takes no more writes. */
    REQUIRE(gw_rdma_mem_register(p.a, src, sizeof src, false, &lm, NULL, &e) == 0);
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 0, PG, &remote, 0, &e), -EIO);
    gw_rdma_mem_deregister(lm);
    pair_close(&p);
}

/* Lists of WRITEs: more than are kept in flight all land; a bad one in the middle stops the
 * list with its reason, and what was posted before it is reaped (the next WRITE's completion
 * is its own). */
GW_TEST(rdma_write_lists_keep_several_in_flight)
{
    struct pair p;
    REQUIRE(pair_open(&p) == 0);
    enum { N = 3 * GW_RDMA_WRITES_IN_FLIGHT + 5 };
    static uint8_t src[N * PG], dst[N * PG];
    for (unsigned i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 13 + 5);
    struct gw_rdma_mr *lm = NULL, *rm = NULL;
    struct gw_rdma_region remote;
    struct gw_err e = {0};
    REQUIRE(gw_rdma_mem_register(p.a, src, sizeof src, false, &lm, NULL, &e) == 0);
    REQUIRE(gw_rdma_mem_register(p.b, dst, sizeof dst, true, &rm, &remote, &e) == 0);
    struct gw_rdma_write w[N];
    for (unsigned i = 0; i < N; i++)   /* page i lands at page N - 1 - i */
        w[i] = (struct gw_rdma_write){ .off = (uint64_t)i * PG, .len = PG, .remote = &remote,
                                       .remote_off = (uint64_t)(N - 1 - i) * PG };
    CHECK_EQ(gw_rdma_mem_write_list(p.a, lm, w, N, &e), 0);
    bool all = true;
    for (unsigned i = 0; i < N; i++) all &= memcmp(dst + (N - 1 - i) * PG, src + i * PG, PG) == 0;
    CHECK(all);
    memset(dst, 0, sizeof dst);
    w[GW_RDMA_WRITES_IN_FLIGHT + 2].remote_off = N * PG;    /* beyond the peer's region */
    CHECK_EQ(gw_rdma_mem_write_list(p.a, lm, w, N, &e), -ERANGE);
    CHECK(strstr(e.msg, "outside the peer's region") != NULL);
    CHECK(memcmp(dst + (N - 1) * PG, src, PG) == 0);                          /* before it: done */
    CHECK(dst[(N - 1 - (GW_RDMA_WRITES_IN_FLIGHT + 3)) * PG] == 0);          /* after it: never */
    CHECK_EQ(gw_rdma_mem_write(p.a, lm, 0, PG, &remote, 0, &e), 0);
    gw_rdma_mem_deregister(lm);
    gw_rdma_mem_deregister(rm);
    pair_close(&p);
}

/* ---- the decoder: pages written in place ---- */

/* Sends a PAGE_BATCH of n descriptors (enc, len 0 each) for pfns[] and decodes it at the
 * other end into a direct placer over mem with a touched bitmap. */
static int decode_placed(struct pair *p, const uint64_t *pfns, uint32_t n, uint8_t enc, uint32_t len,
                         bool remote_writes, uint8_t *mem, uint64_t *touched, struct gw_err *e)
{
    uint8_t buf[GW_PAGE_BATCH_HDR + 8 * GW_PAGE_DESC_SIZE] = {0};
    uint32_t cnt = n;
    memcpy(buf, &cnt, 4);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = buf + GW_PAGE_BATCH_HDR + i * GW_PAGE_DESC_SIZE;
        memcpy(d, &pfns[i], 8);
        d[8] = enc;
        memcpy(d + 12, &len, 4);
    }
    size_t plen = GW_PAGE_BATCH_HDR + n * GW_PAGE_DESC_SIZE;
    if (gw_conn_send_record(p->a, GW_WIRE_PAGE_BATCH, buf, plen, e)) return -EIO;
    struct gw_wire_header h;
    int r = gw_conn_recv_header(p->b, &h, e);
    if (r) return r;
    struct gw_placer_direct pd = { .mem = mem, .mem_size = MEM, .touched = touched };
    struct gw_page_placer pl = gw_placer_direct(&pd);
    struct gw_page_recv pr = { .remote_writes = remote_writes };
    struct gw_codec_stats st = {0};
    uint32_t got = 0;
    r = gw_page_recv_batch(p->b, &h, &pl, &pr, &st, &got, e);
    if (!r && st.pages[GW_PAGE_PLACED] != got) r = -EPROTO;
    gw_page_recv_free(&pr);
    /* A refused batch leaves its payload unread: start the next test on fresh connections. */
    return r;
}

GW_TEST(written_in_place_only_where_memory_was_registered)
{
    static uint8_t mem[MEM];
    uint64_t touched[1] = {0};
    uint64_t pfns[3] = { 5, 6, 40 };
    struct gw_err e = {0};
    struct pair p;
    /* Accepted where this side let the source write: the pages are noted (touched), their
     * bytes left as the "RDMA WRITE" put them. */
    REQUIRE(pair_open(&p) == 0);
    memset(mem + 5 * PG, 0xAB, PG);
    CHECK_EQ(decode_placed(&p, pfns, 3, GW_PAGE_PLACED, 0, true, mem, touched, &e), 0);
    CHECK_EQ(touched[0], (1ull << 5) | (1ull << 6) | (1ull << 40));
    CHECK(mem[5 * PG] == 0xAB);
    pair_close(&p);
    /* Refused on a session that registered nothing: nothing is noted. */
    touched[0] = 0;
    REQUIRE(pair_open(&p) == 0);
    CHECK_EQ(decode_placed(&p, pfns, 3, GW_PAGE_PLACED, 0, false, mem, touched, &e), -EBADMSG);
    CHECK(strstr(e.msg, "written in place") != NULL && strstr(e.msg, "registered no memory") != NULL);
    CHECK_EQ(touched[0], 0);
    pair_close(&p);
    /* Malformed: data attached to an in-place page; a page beyond memory. */
    REQUIRE(pair_open(&p) == 0);
    CHECK_EQ(decode_placed(&p, pfns, 1, GW_PAGE_PLACED, 16, true, mem, touched, &e), -EBADMSG);
    pair_close(&p);
    REQUIRE(pair_open(&p) == 0);
    uint64_t far = MEM / PG;
    CHECK_EQ(decode_placed(&p, &far, 1, GW_PAGE_PLACED, 0, true, mem, touched, &e), -ERANGE);
    CHECK_EQ(touched[0], 0);
    pair_close(&p);
    /* The buffer decoder has no registered memory at all: it refuses the encoding. */
    uint8_t batch[GW_PAGE_BATCH_HDR + GW_PAGE_DESC_SIZE] = { 1 };
    batch[GW_PAGE_BATCH_HDR + 8] = GW_PAGE_PLACED;
    CHECK_EQ(gw_page_decode_batch(batch, sizeof batch, mem, MEM, NULL, NULL), -EBADMSG);
}

/* One encoded batch through gw_rdma_batch_send to the decoder: regions that cover only part
 * of memory, in two pieces (the second at another address), so raw pages inside them go by
 * WRITE (in runs split at the region border) and the others in the record; the batch names
 * one page twice. The destination ends equal to the source either way. */
GW_TEST(rdma_batch_writes_covered_runs_and_sends_the_rest)
{
    struct pair p;
    REQUIRE(pair_open(&p) == 0);
    enum { NP = 64 };
    static uint8_t src[NP * PG], dst[NP * PG], scratch[512 * 1024];
    for (unsigned i = 0; i < NP; i++) fill_page(src + i * PG, i % 5 == 4 ? 2 : i % 5 == 3 ? 1 : 0);
    memset(dst, 0xEE, sizeof dst);
    struct gw_err e = {0};
    struct gw_rdma_mr *lm = NULL, *rm1 = NULL, *rm2 = NULL;
    struct gw_rdma_peer_region regs[2] = { { .stream = 0, .guest_off = 8 * PG }, { .stream = 0, .guest_off = 16 * PG } };
    REQUIRE(gw_rdma_mem_register(p.a, src, sizeof src, false, &lm, NULL, &e) == 0);
    REQUIRE(gw_rdma_mem_register(p.b, dst + 8 * PG, 8 * PG, true, &rm1, &regs[0].r, &e) == 0);
    REQUIRE(gw_rdma_mem_register(p.b, dst + 16 * PG, 16 * PG, true, &rm2, &regs[1].r, &e) == 0);
    uint64_t pfns[NP + 1];
    for (unsigned i = 0; i < NP; i++) pfns[i] = i;
    pfns[NP] = 10;   /* page 10 again at the end */
    struct gw_page_encoder enc;
    gw_page_encoder_init(&enc, GW_CODEC_LZ4, 1);
    struct iovec iov[NP + 3];
    int cnt;
    size_t len;
    REQUIRE(gw_page_encode_batch_iov(&enc, src, sizeof src, pfns, NP + 1, scratch, sizeof scratch, iov + 1, &cnt,
                                     &len) == 0);
    uint64_t in_records[1] = {0};
    struct gw_rdma_target t = { .mem = src, .mem_size = sizeof src, .local = lm, .regions = regs, .nregions = 2,
                                .stream = 0, .in_records = in_records };
    struct gw_rdma_batch b = {0};
    CHECK_EQ(gw_rdma_batch_send(&b, p.a, &t, iov, cnt + 1, NP + 1, &e), 0);
    struct gw_wire_header h;
    REQUIRE(gw_conn_recv_header(p.b, &h, &e) == 0);
    uint64_t touched[1] = {0};
    struct gw_placer_direct pd = { .mem = dst, .mem_size = sizeof dst, .touched = touched };
    struct gw_page_placer pl = gw_placer_direct(&pd);
    struct gw_page_recv pr = { .remote_writes = true };
    struct gw_codec_stats st = {0};
    uint32_t got = 0;
    CHECK_EQ(gw_page_recv_batch(p.b, &h, &pl, &pr, &st, &got, &e), 0);
    CHECK_EQ(got, NP + 1);
    CHECK(memcmp(dst, src, sizeof src) == 0);
    CHECK_EQ(touched[0], UINT64_MAX);
    /* Raw pages (i % 5 < 3) inside [8, 32) by WRITE, page 10 twice (its first copy was
     * written, not sent in the record, so the repeat may be written too); the rest raw in
     * the record. */
    uint64_t covered = 0, raw = 0;
    for (unsigned i = 0; i < NP; i++) {
        if (i % 5 >= 3) continue;
        raw++;
        covered += i >= 8 && i < 32;
    }
    CHECK_EQ(st.pages[GW_PAGE_PLACED], covered + 1);
    CHECK_EQ(st.pages[GW_PAGE_RAW], raw - covered);
    CHECK_EQ(b.pages_written, covered + 1);
    /* The pages that went in records are marked (0: raw outside the regions; 8: lz4), the
     * written ones are not (10, 11). */
    CHECK((in_records[0] & 1ull) && (in_records[0] & (1ull << 8)));
    CHECK(!(in_records[0] & (3ull << 10)));
    gw_page_recv_free(&pr);
    gw_rdma_batch_free(&b);
    gw_rdma_mem_deregister(lm);
    gw_rdma_mem_deregister(rm1);
    gw_rdma_mem_deregister(rm2);
    pair_close(&p);
}

/* ---- whole migrations through the RDMA page path ---- */

struct mig_result {
    struct gw_mig_stats src;
    struct dest d;
    uint64_t writes, bytes, refused;
};

/* Migrates mem[0..size) on nstreams streams through the double: round 0 every page, round 1
 * every eighth page (changed first by step, when given), a final
 * round of three pages (after a SYNC with sync); checks the destination's memory, digest and
 * commit. */
static void rdma_migrate(uint8_t *mem, uint64_t size, unsigned nstreams, enum gw_codec_mode mode,
                         void (*step)(void *ctx, uint64_t pfn), void *ctx, bool sync, struct mig_result *res)
{
    uint64_t npages = size / PG, nd = 0;
    uint64_t *pfns = malloc(npages * sizeof *pfns);
    REQUIRE(pfns);
    struct gw_rdma_loop *f = gw_rdma_loop_new();
    REQUIRE(f);
    struct dest tmpl = { .secret = SECRET, .mode = DM_NORMAL, .attach = gw_rdma_loop_attach, .attach_ctx = f };
    pthread_t th;
    REQUIRE(start_dest_as(&res->d, &th, &tmpl) == 0);
    struct gw_mig_sender_cfg cfg = {
        .url = res->d.l->url, .nstreams = nstreams, .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
        .mem = mem, .mem_size = size, .codec = mode, .timeout_ms = 10000,
        .attach = gw_rdma_loop_attach, .attach_ctx = f,
    };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0};
    int r = gw_mig_sender_open(&cfg, &s, &e);
    CHECK_EQ(r, 0);
    if (r) { printf("  %s\n", e.msg); goto out; }
    for (uint64_t i = 0; i < npages; i++) pfns[i] = i;
    CHECK_EQ(gw_mig_send_pages(s, pfns, npages), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 0, false, NULL), 0);
    for (uint64_t i = 0; i < npages; i += 8) {
        if (step) step(ctx, i);
        pfns[nd++] = i;
    }
    CHECK_EQ(gw_mig_send_pages(s, pfns, nd), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 1, false, NULL), 0);
    if (sync) CHECK_EQ(gw_mig_sender_sync(s, 10000), 0);
    CHECK_EQ(gw_mig_send_switchover(s, 2), 0);
    uint64_t last[3] = { 1, npages / 2, npages - 1 };
    for (int i = 0; i < 3 && step; i++) step(ctx, last[i]);
    CHECK_EQ(gw_mig_send_pages(s, last, 3), 0);
    CHECK_EQ(gw_mig_send_end_of_round(s, 2, true, &res->src), 0);
    CHECK_EQ(gw_mig_send_state(s, "vcpu-state!", 11), 0);
    struct gw_digest dg;
    test_digest(mem, size, &dg);
    CHECK_EQ(gw_mig_send_digest(s, &dg), 0);
    CHECK_EQ(gw_mig_send_commit(s, 3), 0);
    CHECK_EQ(gw_mig_sender_wait_ack(s, 10000), 0);
    CHECK_EQ(gw_mig_send_go(s), 0);
    CHECK_EQ(gw_mig_sender_wait_running(s, 10000), 0);
    CHECK(strcmp(gw_mig_sender_error(s), "") == 0);
    if (strcmp(gw_mig_sender_error(s), "")) printf("  source: %s\n", gw_mig_sender_error(s));
out:
    gw_mig_sender_close(s);
    __atomic_store_n(&res->d.src_closed, true, __ATOMIC_RELEASE);
    finish_dest(&res->d, th);
    CHECK_EQ(res->d.r, 0);
    if (res->d.r) printf("  destination: %s\n", res->d.err);
    CHECK(res->d.digest_ok && res->d.state_ok && res->d.final_seen && res->d.running);
    CHECK(res->d.mem && memcmp(res->d.mem, mem, size) == 0);
    CHECK_EQ(res->d.pages, npages + nd + 3);
    gw_rdma_loop_counts(f, &res->writes, &res->bytes, &res->refused);
    gw_rdma_loop_free(f);
    free(res->d.mem);
    free(pfns);
}

static void change_page(void *ctx, uint64_t pfn)
{
    uint8_t *mem = ctx;
    fill_page(mem + pfn * PG, (int)(pfn / 8 % 3));
}

/* Raw pages by RDMA WRITE, zero markers and lz4 blocks in the records; the destination
 * counts the written-in-place pages, the source's records carry none of their bytes. */
static void migrate_mixed(unsigned nstreams, enum gw_codec_mode mode)
{
    uint64_t size = 16 * GW_MIB, npages = size / PG;
    uint8_t *mem = malloc(size);
    REQUIRE(mem);
    for (uint64_t i = 0; i < npages; i++) fill_page(mem + i * PG, (int)(rnd() % 3));
    struct mig_result res;
    memset(&res, 0, sizeof res);
    rdma_migrate(mem, size, nstreams, mode, change_page, mem, false, &res);
    const struct gw_codec_stats *src = &res.src.codec, *dst = &res.d.st.codec;
    printf("  %u streams: %llu raw pages by RDMA WRITE (%llu writes), zero/lz4 in records %llu/%llu, "
           "record bytes %.1f MiB\n", nstreams, (unsigned long long)dst->pages[GW_PAGE_PLACED],
           (unsigned long long)res.writes, (unsigned long long)dst->pages[GW_PAGE_ZERO],
           (unsigned long long)dst->pages[GW_PAGE_LZ4], (double)res.src.bytes_wire / GW_MIB);
    /* Raw pages went in place, except those whose older copy went in a record (changed
     * zero or text pages of round 0): those follow it in the records. The fabric moved
     * exactly the others. */
    CHECK(src->pages[GW_PAGE_RAW] > 0 && dst->pages[GW_PAGE_PLACED] > 0 && dst->pages[GW_PAGE_RAW] > 0);
    CHECK_EQ(dst->pages[GW_PAGE_PLACED] + dst->pages[GW_PAGE_RAW], src->pages[GW_PAGE_RAW]);
    CHECK_EQ(res.bytes, dst->pages[GW_PAGE_PLACED] * PG);
    CHECK_EQ(res.src.rdma_bytes, res.bytes);
    CHECK_EQ(res.refused, 0);
    CHECK(res.writes < src->pages[GW_PAGE_RAW]);   /* runs of consecutive pages: one WRITE each */
    CHECK(src->pages[GW_PAGE_ZERO] > 0 && dst->pages[GW_PAGE_ZERO] == src->pages[GW_PAGE_ZERO]);
    CHECK_EQ(dst->pages[GW_PAGE_LZ4], src->pages[GW_PAGE_LZ4]);
    CHECK(mode == GW_CODEC_NONE || dst->pages[GW_PAGE_LZ4] > 0);
    /* The records hold what the encoder made minus the raw pages' bytes (descriptors, lz4
     * blocks), plus record headers and the few control records. */
    uint64_t in_records = src->bytes_out - dst->pages[GW_PAGE_PLACED] * PG;
    CHECK(res.src.bytes_wire >= in_records);
    CHECK(res.src.bytes_wire < in_records + 64 * 1024);
    free(mem);
}

GW_TEST(migrate_16mib_three_streams_through_rdma_double) { migrate_mixed(3, GW_CODEC_LZ4); }
GW_TEST(migrate_16mib_one_stream_raw_through_rdma_double) { migrate_mixed(1, GW_CODEC_NONE); }

struct opener {
    const struct gw_mig_sender_cfg *cfg;
    struct gw_mig_sender **s;
    struct gw_err *e;
    int r;
};

static void *open_main(void *arg)
{
    struct opener *op = arg;
    op->r = gw_mig_sender_open(op->cfg, op->s, op->e);
    return NULL;
}

static void randomize_page(void *ctx, uint64_t pfn)
{
    fill_page((uint8_t *)ctx + pfn * PG, 0);
}

/* The destination may not yet have applied a record when a later WRITE lands: a page whose
 * older copy went in a record (here: a zero marker) must follow it in the records, never
 * overtake it by WRITE, until a SYNC says the destination applied everything. */
static void older_copy_first(bool sync)
{
    uint64_t size = 2 * GW_MIB, npages = size / PG;
    uint8_t *mem = calloc(1, size);
    REQUIRE(mem);
    struct mig_result res;
    memset(&res, 0, sizeof res);
    rdma_migrate(mem, size, 1, GW_CODEC_NONE, randomize_page, mem, sync, &res);
    const struct gw_codec_stats *dst = &res.d.st.codec;
    CHECK_EQ(dst->pages[GW_PAGE_ZERO], npages);     /* round 0 */
    /* Round 1: every eighth page, zero before, random now: raw in the record. Round 2: three
     * pages (zero markers in round 0); after the SYNC by WRITE, else in the record too. */
    CHECK_EQ(dst->pages[GW_PAGE_RAW], npages / 8 + (sync ? 0 : 3));
    CHECK_EQ(dst->pages[GW_PAGE_PLACED], sync ? 3 : 0);
    free(mem);
}

GW_TEST(older_record_copy_is_not_overtaken_by_a_write) { older_copy_first(false); }
GW_TEST(after_sync_changed_pages_go_by_write_again) { older_copy_first(true); }

/* A destination that offers memory beyond the guest's: the source refuses to write a page
 * and fails the migration with the reason, before any WRITE. */
GW_TEST(source_refuses_regions_beyond_guest_memory)
{
    struct gw_rdma_loop *f = gw_rdma_loop_new();
    struct gw_listener *l = NULL;
    REQUIRE(f && gw_listen("tcp:127.0.0.1:0", &l, NULL) == 0);
    uint64_t size = 64 * PG;
    uint8_t *mem = calloc(1, size), *far = calloc(1, 2 * size);
    REQUIRE(mem && far);
    memset(mem, 0x5A, size);
    struct gw_mig_sender_cfg cfg = {
        .url = l->url, .nstreams = 1, .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
        .mem = mem, .mem_size = size, .codec = GW_CODEC_NONE, .timeout_ms = 5000,
        .attach = gw_rdma_loop_attach, .attach_ctx = f,
    };
    /* The source connects from a thread; the hand-driven destination answers here. */
    struct gw_session_cfg dc = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
                                 .features = GW_WIRE_F_ALL, .timeout_ms = 5000,
                                 .attach = gw_rdma_loop_attach, .attach_ctx = f };
    struct gw_mig_sender *s = NULL;
    struct gw_err e = {0}, de = {0};
    struct gw_session *ds = NULL;
    pthread_t th;
    struct opener op = { &cfg, &s, &e, 0 };
    REQUIRE(pthread_create(&th, NULL, open_main, &op) == 0);
    CHECK_EQ(gw_session_accept(l, &dc, &ds, &de), 0);
    pthread_join(th, NULL);
    CHECK_EQ(op.r, 0);
    if (op.r || !ds) goto out;
    CHECK(gw_session_features(ds, 0) & GW_WIRE_F_RDMA_WRITE);
    struct gw_rdma_mr *rm = NULL;
    struct gw_rdma_peer_region v = { .stream = 0, .guest_off = 0 };
    REQUIRE(gw_rdma_mem_register(gw_session_conn(ds, 0), far, 2 * size, true, &rm, &v.r, &de) == 0);
    /* The destination's registration is larger than the guest: it names it all. */
    uint8_t *b;
    size_t len;
    REQUIRE(gw_rdma_regions_pack(&v, 1, &b, &len) == 0);
    CHECK_EQ(gw_session_send(ds, 0, GW_WIRE_RDMA_REGIONS, b, len, &de), 0);
    free(b);
    uint64_t pfn = 3;
    int r = gw_mig_send_pages(s, &pfn, 1);
    if (!r) r = gw_mig_send_end_of_round(s, 0, false, NULL);
    CHECK_EQ(r, -EBADMSG);
    CHECK(strstr(gw_mig_sender_error(s), "reaches beyond guest memory") != NULL);
    if (!strstr(gw_mig_sender_error(s), "reaches beyond guest memory")) printf("  got: %s\n", gw_mig_sender_error(s));
    uint64_t w, bytes, refusedn;
    gw_rdma_loop_counts(f, &w, &bytes, &refusedn);
    CHECK_EQ(w, 0);
    CHECK(far[3 * PG] == 0);
    gw_mig_sender_close(s);
    gw_rdma_mem_deregister(rm);
out:
    gw_session_close(ds);
    gw_listener_close(l);
    gw_rdma_loop_free(f);
    free(mem);
    free(far);
}

/* ---- a real KVM guest's memory through the RDMA sink ---- */

/* A booted 32 MiB VM running the dirtier, ready (working set written once); NULL with the
 * reason printed when it does not start. */
static struct gw_vm *dirtier_vm(const char *name)
{
    struct gw_vm_config vc = { .name = name, .memory_bytes = 32ull << 20, .vcpus = 1,
                               .guest_spec = "dirtier:ws=4M,rate=8M", .console_fd = -1 };
    struct gw_vm *vm = NULL;
    char err[256] = "";
    if (gw_vm_create(&vc, &vm, err, sizeof err) || gw_vm_boot(vm, err, sizeof err) || gw_vm_start(vm) ||
        gw_vm_wait_ready(vm, 20000)) {
        printf("  the guest did not start: %s\n", err);
        gw_vm_destroy(vm);
        return NULL;
    }
    return vm;
}

/* The guest booted and ran its dirtier, then paused: its memory (guest code, page tables,
 * the dirtier's working set, untouched zero pages) migrates through the RDMA page path.
 * The guest stays paused meanwhile (no dirty tracking here), so nothing changes between
 * rounds: the later rounds re-send pages already there. */
GW_TEST(kvm_guest_memory_through_rdma_double)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = dirtier_vm("rdma");
    REQUIRE(vm);
    usleep(200 * 1000);    /* let the dirtier write its working set */
    REQUIRE(gw_vm_pause(vm) == 0);
    struct mig_result res;
    memset(&res, 0, sizeof res);
    rdma_migrate(vm->mem.base, vm->mem.size, 2, GW_CODEC_AUTO, NULL, NULL, false, &res);
    printf("  %llu MiB guest: %llu pages by RDMA WRITE, zero %llu, lz4 %llu\n",
           (unsigned long long)(vm->mem.size >> 20), (unsigned long long)res.d.st.codec.pages[GW_PAGE_PLACED],
           (unsigned long long)res.d.st.codec.pages[GW_PAGE_ZERO], (unsigned long long)res.d.st.codec.pages[GW_PAGE_LZ4]);
    CHECK(res.d.st.codec.pages[GW_PAGE_PLACED] > 0);
    CHECK_EQ(res.refused, 0);
    gw_vm_destroy(vm);
}

/* ---- a running KVM guest migrated by pre-copy over the RDMA page path ---- */

struct incoming {
    struct gw_rdma_loop *f;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char url[96];
    struct gw_vm *vm;
    struct gw_mig_progress prog;
    char err[256];
    int r;
};

static void on_listening(void *ctx, const char *url)
{
    struct incoming *in = ctx;
    pthread_mutex_lock(&in->mu);
    snprintf(in->url, sizeof in->url, "%s", url);
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

static void *incoming_main(void *arg)
{
    struct incoming *in = arg;
    struct gw_incoming_params p = {
        .listen_url = "tcp:127.0.0.1:0", .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
        .console_fd = -1, .timeout_ms = 20000, .on_listening = on_listening, .ctx = in,
        .attach = gw_rdma_loop_attach, .attach_ctx = in->f,
    };
    in->r = gw_incoming_run(&p, &in->vm, &in->prog, in->err, sizeof in->err);
    on_listening(in, "");   /* wakes the test when the listener never came up */
    return NULL;
}

/* The whole pre-copy migration of a guest whose dirtier keeps writing: dirty rounds, the SYNC
 * before the pause (which lets changed pages go by WRITE again), switchover, the digest proved
 * at COMMIT, the guest running on the destination. */
GW_TEST(kvm_running_guest_migrates_over_rdma_double)
{
    if (!gw_test_have_kvm()) { gw_test_skip("no /dev/kvm"); return; }
    struct gw_vm *vm = dirtier_vm("rdma-src");
    REQUIRE(vm);
    struct incoming in = { .f = gw_rdma_loop_new() };
    REQUIRE(in.f);
    pthread_mutex_init(&in.mu, NULL);
    pthread_cond_init(&in.cv, NULL);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, incoming_main, &in) == 0);
    pthread_mutex_lock(&in.mu);
    while (!in.url[0] && !in.r) pthread_cond_wait(&in.cv, &in.mu);
    pthread_mutex_unlock(&in.mu);
    struct gw_precopy_params p = {
        .url = in.url, .streams = 2, .codec = GW_CODEC_AUTO, .secret = (const uint8_t *)SECRET,
        .secret_len = strlen(SECRET), .attach = gw_rdma_loop_attach, .attach_ctx = in.f,
    };
    p.policy.max_rounds = 8;
    gw_conv_policy_defaults(&p.policy);
    struct gw_precopy *m = NULL;
    struct gw_mig_progress prog = {0};
    if (in.url[0] && gw_precopy_start(vm, &p, &m) == 0) {
        while (!gw_precopy_finished(m)) usleep(20 * 1000);
        gw_precopy_progress(m, &prog);
    }
    pthread_join(th, NULL);
    CHECK(m != NULL);
    CHECK_EQ(prog.phase, GW_MIG_COMPLETED);
    if (prog.phase != GW_MIG_COMPLETED) printf("  source: %s\n", prog.error);
    CHECK_EQ(in.r, 0);
    if (in.r) printf("  destination: %s\n", in.err);
    CHECK(in.vm != NULL);
    uint64_t w, bytes, refusedn;
    gw_rdma_loop_counts(in.f, &w, &bytes, &refusedn);
    printf("  %u rounds, %llu MiB by RDMA WRITE in %llu writes, %.1f MiB in records, downtime %.1f ms\n", prog.round,
           (unsigned long long)(bytes >> 20), (unsigned long long)w, (double)prog.sent_bytes / GW_MIB,
           (double)prog.measured_downtime_ns / 1e6);
    CHECK(bytes > 0);
    CHECK_EQ(refusedn, 0);
    CHECK(prog.round >= 1);
    CHECK(in.prog.pages_raw > 0);
    /* The records did not carry the written pages: far fewer bytes than were written. */
    CHECK(prog.sent_bytes < bytes);
    gw_precopy_free(m);
    if (in.vm) gw_vm_destroy(in.vm);
    gw_vm_destroy(vm);
    gw_rdma_loop_free(in.f);
    pthread_cond_destroy(&in.cv);
    pthread_mutex_destroy(&in.mu);
}
