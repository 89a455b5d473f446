/* Unit tests for engine/common: size parsing, range checks, zero detection. */
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
