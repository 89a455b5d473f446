/* Unit tests for the migration port's decoder of a connection's first bytes (the preamble,
 * engine/daemon/migport_hello.c): a valid preamble is accepted at exactly its full length and
 * not before, and every deviation (magic, version, reserved bytes, no token, too many
 * streams, an index out of range, garbage, a bare HELLO record of old) is refused. */
#include "engine/daemon/migport.h"
#include "tests/lib/gw_test.h"

#include <stdlib.h>
#include <string.h>

static size_t make(uint8_t *buf, uint32_t stream, uint32_t nstreams, bool tls, uint8_t tok)
{
    struct gw_preamble p = {.tls = tls, .stream_index = (uint16_t)stream, .nstreams = (uint16_t)nstreams};
    memset(p.token, tok, sizeof p.token);
    gw_preamble_pack(&p, buf);
    return GW_PREAMBLE_SIZE;
}

GW_TEST(valid_preamble)
{
    uint8_t buf[GW_PREAMBLE_SIZE + 100];
    struct gw_migport_hello h;
    size_t n = make(buf, 0, 1, true, 0x5a);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), 1);
    CHECK(h.stream_index == 0 && h.nstreams == 1 && h.tls && h.token[31] == 0x5a);
    CHECK_EQ(gw_migport_parse_hello(buf, n + 100, &h), 1);   /* more data after it */
    for (size_t k = 0; k < n; k++) CHECK_EQ(gw_migport_parse_hello(buf, k, &h), 0);   /* every prefix: wait */
    n = make(buf, 15, 16, false, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), 1);
    CHECK(h.stream_index == 15 && h.nstreams == 16 && !h.tls);
}

GW_TEST(refused)
{
    uint8_t buf[GW_PREAMBLE_SIZE + 200];
    struct gw_migport_hello h;
    CHECK_EQ(gw_migport_parse_hello(buf, make(buf, 2, 2, true, 1), &h), -1);    /* index out of range */
    CHECK_EQ(gw_migport_parse_hello(buf, make(buf, 0, 17, true, 1), &h), -1);   /* too many streams */
    CHECK_EQ(gw_migport_parse_hello(buf, make(buf, 0, 0, true, 1), &h), -1);    /* no streams */
    CHECK_EQ(gw_migport_parse_hello(buf, make(buf, 0, 1, true, 0), &h), -1);    /* no token */
    size_t n = make(buf, 0, 1, true, 1);
    for (size_t off = 0; off < 16; off++) {
        if (off == 5 || off == 8 || off == 10) continue;   /* tls flag, index, count: checked above */
        buf[off] ^= 0x80;
        CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);
        buf[off] ^= 0x80;
    }
    buf[5] = 2;
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);       /* TLS flag neither 0 nor 1 */
    /* A bare HELLO record ("GWM1" first) is refused at its first differing byte. */
    for (int k = 0; k < 4; k++) buf[k] = (uint8_t)(GW_WIRE_MAGIC >> (8 * k));
    CHECK_EQ(gw_migport_parse_hello(buf, 3, &h), -1);
    /* Random bytes never crash it and never pass with anything out of bounds. */
    srand(7);
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(rand() % (GW_PREAMBLE_SIZE + 20));
        for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)rand();
        if (i & 1) { make(buf, (uint32_t)(rand() % 20), (uint32_t)(rand() % 20), rand() & 1, (uint8_t)rand()); buf[rand() % 48] ^= (uint8_t)rand(); }
        int r = gw_migport_parse_hello(buf, len, &h);
        CHECK(r <= 0 || (len >= GW_PREAMBLE_SIZE && h.stream_index < h.nstreams && h.nstreams <= GW_MIGPORT_MAX_STREAMS));
    }
}
