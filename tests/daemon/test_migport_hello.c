/* Unit tests for the migration port's HELLO decoder (engine/daemon/migport.c): a valid
 * one-stream HELLO is accepted at exactly its full length and not before, and every
 * deviation (magic, type, flags, oversized length, garbage, other streams, missing or
 * hostile names) is refused. */
#include "engine/daemon/migport.h"
#include "tests/lib/gw_test.h"

#include <stdlib.h>
#include <string.h>

static void put32(uint8_t *p, uint32_t v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }

/* A HELLO record into buf; returns its length. */
static size_t make_hello(uint8_t *buf, const char *name, uint32_t stream, uint32_t nstreams)
{
    Godwit__V1__MigHello h = GODWIT__V1__MIG_HELLO__INIT;
    Godwit__V1__VmConfig cfg = GODWIT__V1__VM_CONFIG__INIT;
    cfg.name = (char *)name;
    cfg.memory_bytes = 64 << 20;
    h.config = name ? &cfg : NULL;
    h.version = 1;
    h.stream_index = stream;
    h.nstreams = nstreams;
    size_t len = protobuf_c_message_pack(&h.base, buf + GW_WIRE_HEADER_SIZE);
    memset(buf, 0, GW_WIRE_HEADER_SIZE);
    put32(buf, GW_WIRE_MAGIC);
    buf[4] = GW_WIRE_HELLO;
    put32(buf + 8, (uint32_t)len);
    return GW_WIRE_HEADER_SIZE + len;
}

GW_TEST(valid_hello)
{
    static uint8_t buf[GW_MIGPORT_HELLO_MAX];
    char name[64];
    size_t n = make_hello(buf, "web-1", 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), 1);
    CHECK(!strcmp(name, "web-1"));
    CHECK_EQ(gw_migport_parse_hello(buf, n + 100, name, sizeof name), 1);   /* more data after it */
    for (size_t k = 0; k < n; k++)                                          /* every prefix: wait */
        CHECK_EQ(gw_migport_parse_hello(buf, k, name, sizeof name), 0);
}

GW_TEST(refused)
{
    static uint8_t buf[GW_MIGPORT_HELLO_MAX];
    char name[64];
    size_t n = make_hello(buf, "web-1", 1, 2);
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), -1);        /* not stream 0 */
    n = make_hello(buf, "web-1", 0, 2);
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), -1);        /* several streams */
    n = make_hello(buf, NULL, 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), -1);        /* no config */
    n = make_hello(buf, "../../etc", 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), -1);        /* hostile name */
    n = make_hello(buf, "a-name-longer-than-the-buffer", 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, 8), -1);
    n = make_hello(buf, "ok", 0, 1);
    buf[0] ^= 1;
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), -1);        /* magic */
    buf[0] ^= 1;
    buf[4] = 2;
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), -1);        /* type */
    buf[4] = 1;
    buf[5] = 1;
    CHECK_EQ(gw_migport_parse_hello(buf, n, name, sizeof name), -1);        /* flags */
    buf[5] = 0;
    put32(buf + 8, GW_WIRE_MAX_HANDSHAKE_PAYLOAD + 1);
    CHECK_EQ(gw_migport_parse_hello(buf, GW_WIRE_HEADER_SIZE, name, sizeof name), -1);  /* at once */
    put32(buf + 8, 0xffffffffu);
    CHECK_EQ(gw_migport_parse_hello(buf, GW_WIRE_HEADER_SIZE, name, sizeof name), -1);
    put32(buf + 8, 6);
    memset(buf + GW_WIRE_HEADER_SIZE, 0xff, 6);
    CHECK_EQ(gw_migport_parse_hello(buf, GW_WIRE_HEADER_SIZE + 6, name, sizeof name), -1);  /* garbage */
    /* Random bytes never crash it and never pass. */
    srand(7);
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(rand() % 200);
        for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)rand();
        if (i & 1) { put32(buf, GW_WIRE_MAGIC); buf[4] = 1; buf[5] = buf[6] = buf[7] = 0; put32(buf + 8, (uint32_t)(rand() % 200)); }
        CHECK(gw_migport_parse_hello(buf, len, name, sizeof name) <= 0 || strlen(name) < sizeof name);
    }
}
