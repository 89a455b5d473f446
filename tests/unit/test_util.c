/* Unit tests for engine/common: size parsing, range checks, zero detection. */
#include "engine/common/json.h"
#include "engine/common/util.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <string.h>

GW_TEST(parse_size_units)
{
    uint64_t v;
    CHECK(gw_parse_size("4096", &v) == 0 && v == 4096);
    CHECK(gw_parse_size("64K", &v) == 0 && v == 65536);
    CHECK(gw_parse_size("256M", &v) == 0 && v == 256ull << 20);
    CHECK(gw_parse_size("1G", &v) == 0 && v == 1ull << 30);
    CHECK(gw_parse_size("2GiB", &v) == 0 && v == 2ull << 30);
    CHECK_EQ(gw_parse_size("", &v), -EINVAL);
    CHECK_EQ(gw_parse_size("12Q", &v), -EINVAL);
    CHECK_EQ(gw_parse_size("-1", &v), -EINVAL);
    CHECK_EQ(gw_parse_size("99999999999T", &v), -ERANGE);
}

GW_TEST(range_checks)
{
    CHECK(gw_range_ok(0, 10, 10));
    CHECK(!gw_range_ok(1, 10, 10));
    CHECK(!gw_range_ok(UINT64_MAX, 2, 10));
    CHECK(!gw_range_ok(5, UINT64_MAX, 10));
}

GW_TEST(median_of_odd_even_and_no_values)
{
    double odd[] = {3, 1, 2}, even[] = {4, 1, 3, 2};
    CHECK(gw_median(odd, 3) == 2);
    CHECK(gw_median(even, 4) == 2.5);   /* the mean of the middle two */
    CHECK(gw_median(NULL, 0) == 0);
    CHECK(even[0] == 1 && even[3] == 4);   /* sorted in place, as it says */
}

GW_TEST(zero_detection)
{
    static uint8_t page[4096];
    memset(page, 0, sizeof page);
    CHECK(gw_is_zero(page, sizeof page));
    page[4095] = 1;
    CHECK(!gw_is_zero(page, sizeof page));
    page[4095] = 0; page[3] = 7;
    CHECK(!gw_is_zero(page, sizeof page));
    CHECK(gw_is_zero(page + 4, 61));
}

GW_TEST(json_fields_with_and_without_spaces)
{
    /* Our writers print "key":value; Python's json (the QEMU peer's figures) "key": value. */
    double d = 0;
    uint64_t u = 0;
    char str[16];
    CHECK_EQ(gw_json_get_double("{\"total_ms\":12.5}", "total_ms", &d), 0);
    CHECK(d == 12.5);
    CHECK_EQ(gw_json_get_double("{\"total_ms\": 2325, \"x\": 1}", "total_ms", &d), 0);
    CHECK(d == 2325);
    CHECK_EQ(gw_json_get_u64("{\"n\":\t7}", "n", &u), 0);
    CHECK_EQ(u, 7);
    CHECK_EQ(gw_json_get_str("{\"status\": \"completed\"}", "status", str, sizeof str), 0);
    CHECK(!strcmp(str, "completed"));
    CHECK_EQ(gw_json_get_double("{\"total_ms\": null}", "total_ms", &d), -ENOENT);
    CHECK_EQ(gw_json_get_double("{\"other\": 1}", "total_ms", &d), -ENOENT);
}

GW_TEST(hex_both_ways)
{
    uint8_t in[4] = {0x00, 0x9f, 0xa5, 0xff}, out[4] = {0};
    char hex[9];
    gw_hex_encode(in, 4, hex);
    CHECK(!strcmp(hex, "009fa5ff"));
    CHECK_EQ(gw_hex_decode(hex, out, 4), 0);
    CHECK(!memcmp(in, out, 4));
    CHECK_EQ(gw_hex_decode("009FA5FF", out, 4), 0);   /* either case */
    CHECK(!memcmp(in, out, 4));
    /* Not two digits a pair: a blank, a sign, a 0x, a short string. */
    static const char *const bad[] = {" 9", "+9", "0x", "g0", "9", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK_EQ(gw_hex_decode(bad[i], out, 1), -EINVAL);
    CHECK_EQ(gw_hex_digit('F'), 15);
    CHECK_EQ(gw_hex_digit('/'), -1);
}
