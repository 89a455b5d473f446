/* Unit tests for engine/api/grpc_wire: grpc-timeout parsing, grpc-message escaping, the
 * constant-time token comparison and the message deframer fed hostile prefixes. */
#include "engine/api/grpc_wire.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int tp(const char *s, uint64_t *ns) { return gw_grpc_timeout_parse(s, strlen(s), ns); }

GW_TEST(timeout_units)
{
    uint64_t ns;
    CHECK(tp("100m", &ns) == 0 && ns == 100000000ull);
    CHECK(tp("5S", &ns) == 0 && ns == 5000000000ull);
    CHECK(tp("2M", &ns) == 0 && ns == 120000000000ull);
    CHECK(tp("1H", &ns) == 0 && ns == 3600000000000ull);
    CHECK(tp("7u", &ns) == 0 && ns == 7000ull);
    CHECK(tp("9n", &ns) == 0 && ns == 9ull);
    CHECK(tp("0m", &ns) == 0 && ns == 0);
    CHECK(tp("99999999H", &ns) == 0 && ns == UINT64_MAX);  /* saturates */
}

GW_TEST(timeout_garbage)
{
    uint64_t ns;
    CHECK_EQ(tp("", &ns), -EINVAL);
    CHECK_EQ(tp("m", &ns), -EINVAL);
    CHECK_EQ(tp("10", &ns), -EINVAL);
    CHECK_EQ(tp("10x", &ns), -EINVAL);
    CHECK_EQ(tp("-1S", &ns), -EINVAL);
    CHECK_EQ(tp("1 S", &ns), -EINVAL);
    CHECK_EQ(tp("123456789S", &ns), -EINVAL);  /* 9 digits: over the spec's 8 */
    CHECK_EQ(gw_grpc_timeout_parse("5S", 1, &ns), -EINVAL);
}

GW_TEST(timeout_format_roundtrip)
{
    char buf[10];
    uint64_t ns;
    CHECK(gw_grpc_timeout_format(1500000000ull, buf) > 0 && strcmp(buf, "1500000u") == 0);
    CHECK(gw_grpc_timeout_format(7, buf) > 0 && strcmp(buf, "7n") == 0);
    const uint64_t vals[] = { 1, 999, 1000000, 123456789012ull, 86400ull * 1000000000ull * 365 };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        size_t n = gw_grpc_timeout_format(vals[i], buf);
        CHECK(n >= 2 && n <= 9);
        CHECK(gw_grpc_timeout_parse(buf, n, &ns) == 0 && ns >= vals[i]);
    }
    gw_grpc_timeout_format(UINT64_MAX, buf);
    CHECK(tp(buf, &ns) == 0);
}

GW_TEST(percent_encoding)
{
    char enc[64], dec[64];
    gw_grpc_pct_encode("plain text", 10, enc, sizeof enc);
    CHECK(strcmp(enc, "plain text") == 0);
    gw_grpc_pct_encode("50% \n\xc3\xa9", 7, enc, sizeof enc);
    CHECK(strcmp(enc, "50%25 %0A%C3%A9") == 0);
    gw_grpc_pct_decode(enc, strlen(enc), dec, sizeof dec);
    CHECK(strcmp(dec, "50% \n\xc3\xa9") == 0);
    /* Invalid escapes pass through untouched; a truncated one at the end too. */
    gw_grpc_pct_decode("%zz%4", 5, dec, sizeof dec);
    CHECK(strcmp(dec, "%zz%4") == 0);
    /* Small buffers: never overflow, never split an escape. */
    size_t n = gw_grpc_pct_encode("a\nb", 3, enc, 3);
    CHECK(n == 1 && strcmp(enc, "a") == 0);
    n = gw_grpc_pct_encode("abc", 3, enc, 1);
    CHECK(n == 0 && enc[0] == '\0');
    n = gw_grpc_pct_decode("abcdef", 6, dec, 4);
    CHECK(n == 3 && strcmp(dec, "abc") == 0);
}

GW_TEST(secret_compare)
{
    CHECK(gw_grpc_secret_equal("token", 5, "token", 5));
    CHECK(!gw_grpc_secret_equal("token", 5, "tokem", 5));
    CHECK(!gw_grpc_secret_equal("token", 5, "token1", 6));
    CHECK(!gw_grpc_secret_equal("", 0, "x", 1));
    CHECK(!gw_grpc_secret_equal("abab", 4, "ab", 2));  /* wrap-around must not match */
    CHECK(gw_grpc_secret_equal("", 0, "", 0));
}

struct collected {
    int n;
    uint32_t lens[8];
    uint8_t first[8];
};

static int collect(void *arg, const uint8_t *msg, uint32_t len)
{
    struct collected *c = arg;
    if (c->n < 8) {
        c->lens[c->n] = len;
        c->first[c->n] = len ? msg[0] : 0;
    }
    c->n++;
    return 0;
}

GW_TEST(deframer_split_feeds)
{
    /* Two messages (3 bytes, 0 bytes) fed one byte at a time. */
    uint8_t wire[5 + 3 + 5];
    gw_grpc_prefix_write(wire, 3);
    wire[5] = 'x'; wire[6] = 'y'; wire[7] = 'z';
    gw_grpc_prefix_write(wire + 8, 0);
    struct gw_grpc_deframer d;
    struct collected c = { 0 };
    gw_grpc_deframer_init(&d, 16);
    for (size_t i = 0; i < sizeof wire; i++) {
        CHECK_EQ(gw_grpc_deframer_feed(&d, wire + i, 1, collect, &c), 0);
        CHECK(gw_grpc_deframer_idle(&d) == (i == 7 || i == sizeof wire - 1));
    }
    CHECK_EQ(c.n, 2);
    CHECK(c.lens[0] == 3 && c.first[0] == 'x' && c.lens[1] == 0);
    gw_grpc_deframer_free(&d);
}

GW_TEST(deframer_hostile_lengths)
{
    struct gw_grpc_deframer d;
    struct collected c = { 0 };
    /* 0xffffffff announced: refused from the prefix alone, nothing allocated. */
    const uint8_t huge[] = { 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3 };
    gw_grpc_deframer_init(&d, 4u << 20);
    CHECK_EQ(gw_grpc_deframer_feed(&d, huge, sizeof huge, collect, &c), -EMSGSIZE);
    CHECK(d.buf == NULL && c.n == 0);
    CHECK_EQ(gw_grpc_deframer_feed(&d, huge, 1, collect, &c), -EMSGSIZE);  /* sticky */
    gw_grpc_deframer_free(&d);

    /* One byte over the limit. */
    uint8_t over[5];
    gw_grpc_prefix_write(over, 17);
    gw_grpc_deframer_init(&d, 16);
    CHECK_EQ(gw_grpc_deframer_feed(&d, over, 5, collect, &c), -EMSGSIZE);
    gw_grpc_deframer_free(&d);

    /* Compressed flag, and a flag byte that means nothing. */
    const uint8_t comp[] = { 1, 0, 0, 0, 1, 'a' };
    gw_grpc_deframer_init(&d, 16);
    CHECK_EQ(gw_grpc_deframer_feed(&d, comp, sizeof comp, collect, &c), -ENOTSUP);
    gw_grpc_deframer_free(&d);
    const uint8_t bad[] = { 0x80, 0, 0, 0, 1, 'a' };
    gw_grpc_deframer_init(&d, 16);
    CHECK_EQ(gw_grpc_deframer_feed(&d, bad, sizeof bad, collect, &c), -EPROTO);
    gw_grpc_deframer_free(&d);
    CHECK_EQ(c.n, 0);

    /* A partial message is not idle (the stream may not end there). */
    const uint8_t part[] = { 0, 0, 0, 0, 4, 'a', 'b' };
    gw_grpc_deframer_init(&d, 16);
    CHECK_EQ(gw_grpc_deframer_feed(&d, part, sizeof part, collect, &c), 0);
    CHECK(!gw_grpc_deframer_idle(&d) && c.n == 0);
    gw_grpc_deframer_free(&d);
}

static int take_it(void *arg, const uint8_t *msg, uint32_t len)
{
    struct gw_grpc_deframer *d = ((void **)arg)[0];
    uint8_t **out = ((void **)arg)[1];
    *out = gw_grpc_deframer_take(d);
    return *out == msg ? 0 : -EFAULT;
}

GW_TEST(deframer_take_buffer)
{
    uint8_t wire[2 * 8];
    gw_grpc_prefix_write(wire, 3);
    memcpy(wire + 5, "one", 3);
    gw_grpc_prefix_write(wire + 8, 3);
    memcpy(wire + 13, "two", 3);
    struct gw_grpc_deframer d;
    uint8_t *got = NULL;
    void *arg[2] = { &d, &got };
    gw_grpc_deframer_init(&d, 16);
    CHECK_EQ(gw_grpc_deframer_feed(&d, wire, 10, take_it, arg), 0);   /* one + part of two */
    REQUIRE(got != NULL);
    CHECK(memcmp(got, "one", 3) == 0);
    free(got);
    got = NULL;
    CHECK_EQ(gw_grpc_deframer_feed(&d, wire + 10, 6, take_it, arg), 0);
    REQUIRE(got != NULL);
    CHECK(memcmp(got, "two", 3) == 0);
    free(got);
    gw_grpc_deframer_free(&d);
}

static int stop_at_second(void *arg, const uint8_t *msg, uint32_t len)
{
    int *n = arg;
    return ++*n == 2 ? -ECANCELED : 0;
}

GW_TEST(deframer_callback_stops)
{
    uint8_t wire[15];
    for (int i = 0; i < 3; i++)
        gw_grpc_prefix_write(wire + 5 * i, 0);
    struct gw_grpc_deframer d;
    int n = 0;
    gw_grpc_deframer_init(&d, 16);
    CHECK_EQ(gw_grpc_deframer_feed(&d, wire, sizeof wire, stop_at_second, &n), -ECANCELED);
    CHECK_EQ(n, 2);
    gw_grpc_deframer_free(&d);
}
