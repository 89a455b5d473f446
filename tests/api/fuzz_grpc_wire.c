/* libFuzzer target for the gRPC wire decoders that see client bytes before anything else:
 * the message deframer (fed in random-sized pieces), grpc-timeout and grpc-message decoding.
 * Build: CC=clang cmake -DGODWIT_FUZZ=ON; run: build/fuzz/fuzz_grpc_wire -max_total_time=60 */
#include "engine/api/grpc_wire.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static int sink(void *arg, const uint8_t *msg, uint32_t len)
{
    size_t *total = arg;
    *total += len;
    if (len)   /* touch both ends of the message: ASan checks the bounds */
        *total += (size_t)msg[0] + msg[len - 1];
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    /* First byte: the size of the pieces; second: the message limit (in 64-byte units). */
    size_t piece = (size_t)data[0] + 1;
    uint32_t max_len = (uint32_t)data[1] * 64;
    data += 2;
    size -= 2;

    struct gw_grpc_deframer d;
    size_t total = 0;
    gw_grpc_deframer_init(&d, max_len);
    for (size_t off = 0; off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        if (gw_grpc_deframer_feed(&d, data + off, n, sink, &total) < 0)
            break;
    }
    gw_grpc_deframer_free(&d);

    uint64_t ns;
    gw_grpc_timeout_parse((const char *)data, size < 16 ? size : 16, &ns);
    char out[64];
    gw_grpc_pct_decode((const char *)data, size, out, sizeof out);
    char enc[96];
    gw_grpc_pct_encode((const char *)data, size, enc, sizeof enc);
    return 0;
}
