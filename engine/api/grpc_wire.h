/* The gRPC-over-HTTP/2 wire rules that both the server and the client need, kept free of any
 * socket or nghttp2 state so that each rule can be tested (and fuzzed) on its own:
 *   - status codes and their names,
 *   - grpc-timeout header values ("100m", "5S") to nanoseconds,
 *   - grpc-message percent-encoding,
 *   - the 5-byte length-prefixed message framing, as an incremental decoder that enforces a
 *     maximum message size from the prefix alone (it never buffers an oversized message).
 * Spec: grpc/grpc doc/PROTOCOL-HTTP2.md. */
#ifndef GW_API_GRPC_WIRE_H
#define GW_API_GRPC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_grpc_code {
    GW_GRPC_OK = 0,
    GW_GRPC_CANCELLED = 1,
    GW_GRPC_UNKNOWN = 2,
    GW_GRPC_INVALID_ARGUMENT = 3,
    GW_GRPC_DEADLINE_EXCEEDED = 4,
    GW_GRPC_NOT_FOUND = 5,
    GW_GRPC_ALREADY_EXISTS = 6,
    GW_GRPC_PERMISSION_DENIED = 7,
    GW_GRPC_RESOURCE_EXHAUSTED = 8,
    GW_GRPC_FAILED_PRECONDITION = 9,
    GW_GRPC_ABORTED = 10,
    GW_GRPC_OUT_OF_RANGE = 11,
    GW_GRPC_UNIMPLEMENTED = 12,
    GW_GRPC_INTERNAL = 13,
    GW_GRPC_UNAVAILABLE = 14,
    GW_GRPC_DATA_LOSS = 15,
    GW_GRPC_UNAUTHENTICATED = 16,
};
#define GW_GRPC_CODE_MAX 16

/* Upper-case name ("DEADLINE_EXCEEDED"); "UNKNOWN_CODE" for values outside 0..16. */
const char *gw_grpc_code_name(int code);

/* Parses a grpc-timeout value: 1..8 ASCII digits then one unit of H M S m u n.
 * Returns 0 and sets *ns (saturated at UINT64_MAX), or -EINVAL for anything else. */
int gw_grpc_timeout_parse(const char *s, size_t len, uint64_t *ns);
/* Formats ns as a grpc-timeout value (at most 8 digits, the finest unit that fits) into out,
 * which must hold 10 bytes. Returns the length written (without the NUL). */
size_t gw_grpc_timeout_format(uint64_t ns, char out[10]);

/* Percent-encodes src (len bytes) for grpc-message: bytes outside 0x20..0x7e and '%' become
 * "%XX". Writes at most cap-1 bytes plus a NUL into dst, never splitting an escape; returns
 * the length written. cap must be >= 1. */
size_t gw_grpc_pct_encode(const char *src, size_t len, char *dst, size_t cap);
/* Decodes "%XX" escapes (invalid escapes are kept as they are, as the spec asks) into dst,
 * at most cap-1 bytes plus a NUL; returns the length written. cap must be >= 1. */
size_t gw_grpc_pct_decode(const char *src, size_t len, char *dst, size_t cap);

/* True when a and b hold the same bytes; the time taken depends only on the lengths, so a
 * bearer token cannot be guessed byte by byte. */
bool gw_grpc_secret_equal(const void *a, size_t alen, const void *b, size_t blen);

/* ---- message framing ------------------------------------------------------------------- */

#define GW_GRPC_PREFIX_LEN 5

/* Writes the 5-byte prefix (flag 0, big-endian length) of a len-byte message. */
void gw_grpc_prefix_write(uint8_t out[GW_GRPC_PREFIX_LEN], uint32_t len);

/* Incremental decoder of length-prefixed messages. Feed it the DATA bytes as they arrive;
 * it calls on_msg once per complete message. The message buffer belongs to the decoder and
 * is valid only during the callback. */
struct gw_grpc_deframer {
    uint32_t max_len;          /* largest message accepted */
    uint8_t prefix[GW_GRPC_PREFIX_LEN];
    uint32_t prefix_have;
    uint32_t msg_len;          /* length of the message being assembled */
    uint32_t msg_have;
    uint8_t *buf;              /* owned, grown to the largest message seen (<= max_len) */
    uint32_t buf_cap;
    int error;                 /* sticky: once set, further input is ignored */
};

/* on_msg returns 0 to go on or a negative errno to stop (kept as the decoder's error). */
typedef int (*gw_grpc_msg_fn)(void *arg, const uint8_t *msg, uint32_t len);

void gw_grpc_deframer_init(struct gw_grpc_deframer *d, uint32_t max_len);
void gw_grpc_deframer_free(struct gw_grpc_deframer *d);
/* Consumes len bytes. Returns 0, or the sticky error:
 *   -EMSGSIZE  a prefix announced more than max_len (detected from the prefix alone),
 *   -ENOTSUP   the compressed flag was set (we negotiate no compression),
 *   -EPROTO    a flag byte other than 0 or 1,
 *   -ENOMEM, or what on_msg returned. */
int gw_grpc_deframer_feed(struct gw_grpc_deframer *d, const uint8_t *data, size_t len,
                          gw_grpc_msg_fn on_msg, void *arg);
/* Only from inside on_msg: takes the buffer holding the current message (the caller free()s
 * it), saving a copy; the decoder allocates a new one for the next message. */
uint8_t *gw_grpc_deframer_take(struct gw_grpc_deframer *d);
/* True when no partial message is buffered (a stream may only end here). */
bool gw_grpc_deframer_idle(const struct gw_grpc_deframer *d);

#endif
