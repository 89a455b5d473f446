/* libFuzzer target for the decoders of outside input: the record splitter and header checks,
 * the control message unpackers and the page-batch decoder, against a small guest memory
 * with a guard region behind it that must never change. The first input byte picks the
 * mode: even = a stream of framed records, odd = one bare PAGE_BATCH payload (so the fuzzer
 * reaches deep into the batch layout without having to learn the header first). */
#include "engine/codec/page_codec.h"
#include "engine/codec/wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    case GW_WIRE_STATE: {
        Godwit__V1__VmState *m = godwit__v1__vm_state__unpack(NULL, len, p);
        if (m) godwit__v1__vm_state__free_unpacked(m, NULL);
        break;
    }
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(mem + NPAGES * 4096, 0xA5, GUARD);
    if (size < 1) return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode & 1) {
        struct gw_codec_stats st = {0};
        uint32_t n;
        gw_page_decode_batch(data, size, mem, NPAGES * 4096, &st, &n);
        check_guard();
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
