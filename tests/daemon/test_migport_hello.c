/* Unit tests for the migration port's HELLO decoder (engine/daemon/migport.c): valid HELLOs
 * (stream 0 with its VM, other streams of a session) are accepted at exactly their full
 * length and not before, and every deviation (magic, type, flags, oversized length, garbage,
 * too many streams, an index out of range, no session id, missing or hostile names) is
 * refused. */
#include "engine/daemon/migport.h"
#include "tests/lib/gw_test.h"

#include <stdlib.h>
#include <string.h>

static void put32(uint8_t *p, uint32_t v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }

/* A HELLO record into buf; returns its length. */
static size_t sid_len = GW_WIRE_SESSION_ID_SIZE;

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
    uint8_t sid[GW_WIRE_SESSION_ID_SIZE] = {7, 1, 2};
    h.session_id.data = sid;
    h.session_id.len = sid_len;
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
    struct gw_migport_hello h;
    size_t n = make_hello(buf, "web-1", 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), 1);
    CHECK(!strcmp(h.name, "web-1") && h.stream_index == 0 && h.nstreams == 1 && h.session_id[0] == 7);
    CHECK_EQ(gw_migport_parse_hello(buf, n + 100, &h), 1);   /* more data after it */
    for (size_t k = 0; k < n; k++)                           /* every prefix: wait */
        CHECK_EQ(gw_migport_parse_hello(buf, k, &h), 0);
    n = make_hello(buf, "web-1", 0, 16);                     /* stream 0 of 16 */
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), 1);
    CHECK(!strcmp(h.name, "web-1") && h.nstreams == 16);
    n = make_hello(buf, NULL, 3, 4);                         /* other streams carry no VM */
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), 1);
    CHECK(!strcmp(h.name, "") && h.stream_index == 3 && h.nstreams == 4);
}

GW_TEST(refused)
{
    static uint8_t buf[GW_MIGPORT_HELLO_MAX];
    struct gw_migport_hello h;
    size_t n = make_hello(buf, "web-1", 2, 2);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* index out of range */
    n = make_hello(buf, "web-1", 0, 17);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* too many streams */
    n = make_hello(buf, "web-1", 0, 0);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* no streams */
    sid_len = 4;
    n = make_hello(buf, "web-1", 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* short session id */
    sid_len = GW_WIRE_SESSION_ID_SIZE;
    n = make_hello(buf, NULL, 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* no config */
    n = make_hello(buf, "../../etc", 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* hostile name */
    n = make_hello(buf, "a-name-longer-than-sixty-three-characters-is-refused-by-the-port-always", 0, 1);
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);
    n = make_hello(buf, "ok", 0, 1);
    buf[0] ^= 1;
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* magic */
    buf[0] ^= 1;
    buf[4] = 2;
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* type */
    buf[4] = 1;
    buf[5] = 1;
    CHECK_EQ(gw_migport_parse_hello(buf, n, &h), -1);        /* flags */
    buf[5] = 0;
    put32(buf + 8, GW_WIRE_MAX_HANDSHAKE_PAYLOAD + 1);
    CHECK_EQ(gw_migport_parse_hello(buf, GW_WIRE_HEADER_SIZE, &h), -1);  /* at once */
    put32(buf + 8, 0xffffffffu);
    CHECK_EQ(gw_migport_parse_hello(buf, GW_WIRE_HEADER_SIZE, &h), -1);
    put32(buf + 8, 6);
    memset(buf + GW_WIRE_HEADER_SIZE, 0xff, 6);
    CHECK_EQ(gw_migport_parse_hello(buf, GW_WIRE_HEADER_SIZE + 6, &h), -1);  /* garbage */
    /* Random bytes never crash it and never pass with anything out of bounds. */
    srand(7);
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(rand() % 200);
        for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)rand();
        if (i & 1) { put32(buf, GW_WIRE_MAGIC); buf[4] = 1; buf[5] = buf[6] = buf[7] = 0; put32(buf + 8, (uint32_t)(rand() % 200)); }
        CHECK(gw_migport_parse_hello(buf, len, &h) <= 0 ||
              (strlen(h.name) < sizeof h.name && h.stream_index < h.nstreams && h.nstreams <= GW_MIGPORT_MAX_STREAMS));
    }
}
