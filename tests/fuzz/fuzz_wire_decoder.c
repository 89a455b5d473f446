/* libFuzzer target for the decoders of outside input: the record splitter and header checks,
 * the control message unpackers, post-copy's records and the page-batch decoder, against a small guest memory
 * with a guard region behind it that must never change. The first input byte picks the
 * mode: even = a stream of framed records, odd = one bare PAGE_BATCH payload (so the fuzzer
 * reaches deep into the batch layout without having to learn the header first). Bit 1 of
 * that byte adds the receiver's touched and written bitmaps, and for framed records sends
 * them through a socket to the streaming decoder with the direct placer (page bodies
 * straight into memory); bit 2 then lets it accept pages written in place (an RDMA session). */
#include "engine/codec/page_codec.h"
#include "engine/codec/wire.h"
#include "engine/common/util.h"
#include "engine/transport/conn.h"
#include "engine/transport/rdma_mem.h"
#include "engine/pump/page_recv.h"
#include "postcopy/pc_wire.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NPAGES 16u
#define GUARD 4096u

static uint8_t mem[NPAGES * 4096 + GUARD];

static void check_guard(void)
{
    for (unsigned i = 0; i < GUARD; i++)
        if (mem[NPAGES * 4096 + i] != 0xA5) abort();
}

static void control(unsigned type, const uint8_t *p, size_t len)
{
    int err;
    switch (type) {
    case GW_WIRE_HELLO: {
        Godwit__V1__MigHello *m = gw_wire_unpack_hello(p, len, &err);
        if (m) godwit__v1__mig_hello__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_CHALLENGE: {
        Godwit__V1__MigChallenge *m = gw_wire_unpack_challenge(p, len, &err);
        if (m) godwit__v1__mig_challenge__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_AUTH: {
        Godwit__V1__MigAuth *m = gw_wire_unpack_auth(p, len, &err);
        if (m) godwit__v1__mig_auth__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_END_OF_ROUND: {
        Godwit__V1__MigEndOfRound *m = gw_wire_unpack_end_of_round(p, len, &err);
        if (m) godwit__v1__mig_end_of_round__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_DIGEST: {
        Godwit__V1__MigDigest *m = gw_wire_unpack_digest(p, len, &err);
        if (m) godwit__v1__mig_digest__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_ERROR: {
        Godwit__V1__MigError *m = gw_wire_unpack_error(p, len, &err);
        if (m) godwit__v1__mig_error__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_GO: {
        Godwit__V1__MigGo *m = godwit__v1__mig_go__unpack(NULL, len, p);
        if (m) godwit__v1__mig_go__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_RUNNING: {
        Godwit__V1__MigRunning *m = godwit__v1__mig_running__unpack(NULL, len, p);
        if (m) godwit__v1__mig_running__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_STATE: {
        Godwit__V1__VmState *m = godwit__v1__vm_state__unpack(NULL, len, p);
        if (m) godwit__v1__vm_state__free_unpacked(m, NULL);
        break;
    }
    case GW_WIRE_RDMA_REGIONS: {
        /* What the source accepts must lie inside guest memory and in a stream it has. */
        static struct gw_rdma_peer_region v[GW_WIRE_MAX_RDMA_REGIONS];
        unsigned n = 0;
        if (gw_rdma_regions_unpack(p, len, 4, NPAGES * 4096, v, &n, NULL) == 0) {
            if (n == 0 || n > GW_WIRE_MAX_RDMA_REGIONS) abort();
            for (unsigned i = 0; i < n; i++)
                if (v[i].stream >= 4 || !v[i].r.len || !gw_range_ok(v[i].guest_off, v[i].r.len, NPAGES * 4096))
                    abort();
        }
        break;
    }
    case GW_WIRE_POSTCOPY: {
        /* What gw_pc_parse accepts has the exact length its op promises, and a bitmap's
         * page count is within the bound a receiver then checks against its memory. */
        struct gw_pc_msg m;
        if (gw_pc_parse(p, len, &m) == 0) {
            if (m.op == 0 || m.op > GW_PC_OP_MAX) abort();
            if (m.op == GW_PC_REQUEST) {
                if (!m.count || m.count > GW_PC_MAX_REQ_PAGES || len != GW_PC_HDR + 8u * m.count) abort();
            } else if (m.count) {
                abort();
            } else if (m.op == GW_PC_DIRTY || m.op == GW_PC_RECEIVED || m.op == GW_PC_STALE) {
                if (!m.a || m.a > (1ull << 40) || len != GW_PC_HDR + 8 * ((m.a + 63) / 64)) abort();
            } else if (len != GW_PC_HDR + (m.op == GW_PC_RESUME_PROOF ? GW_PC_PROOF_SIZE : 0)) {
                abort();
            }
            uint8_t back[GW_PC_HDR];
            gw_pc_pack(&m, back);
            if (memcmp(back, p, GW_PC_HDR)) abort();   /* the header reads back as it came */
        }
        break;
    }
    default:
        break;
    }
}

/* The destination's path for page batches: records read from a socket by
 * gw_conn_recv_header and gw_page_recv_batch, page bodies received straight into mem. */
static void stream(const uint8_t *data, size_t size, const struct gw_page_mem *sink, bool remote_writes)
{
    struct gw_placer_direct d = { .mem = sink->mem, .mem_size = sink->mem_size, .touched = sink->touched,
                                  .written = sink->written };
    struct gw_page_placer pl = gw_placer_direct(&d);
    int sv[2];
    /* The whole input must fit the socket buffer: this thread writes, then reads. */
    if (size > 100000 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return;
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (gw_write_full(sv[0], data, size)) { close(sv[0]); close(sv[1]); return; }
    close(sv[0]); /* the reader then sees the end of the stream */
    struct gw_conn *c;
    if (gw_conn_from_fd(sv[1], &c, NULL)) { close(sv[1]); return; }
    struct gw_page_recv pr = { .remote_writes = remote_writes };
    struct gw_rbuf buf = {0};
    for (;;) {
        struct gw_wire_header h;
        struct gw_codec_stats st = {0};
        uint32_t n;
        if (gw_conn_recv_header(c, &h, NULL)) break;
        if (h.type == GW_WIRE_PAGE_BATCH) {
            if (gw_page_recv_batch(c, &h, &pl, &pr, &st, &n, NULL)) break;
        } else {
            uint8_t *nb = realloc(buf.data, h.length ? h.length : 1);
            if (!nb) break;
            buf.data = nb;
            struct iovec v = { buf.data, h.length };
            if (gw_conn_recv_payload(c, &v, 1, NULL)) break;
            control(h.type, buf.data, h.length);
        }
        check_guard();
    }
    check_guard();
    free(buf.data);
    gw_page_recv_free(&pr);
    gw_conn_close(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(mem + NPAGES * 4096, 0xA5, GUARD);
    if (size < 1) return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    /* Bit 1 adds the receiver's bitmaps (touched, and written for fresh memory). */
    uint64_t touched[1] = {0}, written[1] = {0};
    struct gw_page_mem sink = { .mem = mem, .mem_size = NPAGES * 4096 };
    if (mode & 2) {
        sink.touched = touched;
        sink.written = written;
    }
    if (mode & 1) {
        struct gw_codec_stats st = {0};
        uint32_t n;
        gw_page_decode_batch_mem(data, size, &sink, &st, &n);
        check_guard();
        return 0;
    }
    if (mode & 2) {
        stream(data, size, &sink, mode & 4);
        return 0;
    }
    while (size) {
        struct gw_wire_header h;
        const uint8_t *p;
        size_t used;
        if (gw_wire_record_split(data, size, &h, &p, &used)) break;
        if (h.type == GW_WIRE_PAGE_BATCH) gw_page_decode_batch(p, h.length, mem, NPAGES * 4096, NULL, NULL);
        else control(h.type, p, h.length);
        check_guard();
        data += used;
        size -= used;
    }
    return 0;
}
