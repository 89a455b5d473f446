/* Unit tests for the guest workload spec parser. */
#include <errno.h>
#include <string.h>

#include "engine/vm/guest_spec.h"
#include "tests/lib/gw_test.h"

GW_TEST(spec_full)
{
    struct gw_guest_spec s;
    char err[256];
    REQUIRE(gw_guest_spec_parse("dirtier:ws=256M,rate=64M,pattern=text,seed=7,hz=500,verify=8", &s, err, sizeof err) == 0);
    CHECK_EQ(s.workload, GW_WL_DIRTIER);
    CHECK_EQ(s.ws_bytes, 256ull << 20);
    CHECK_EQ(s.rate_bytes_per_s, 64ull << 20);
    CHECK_EQ(s.pattern, GW_PAT_TEXT);
    CHECK_EQ(s.seed, 7);
    CHECK_EQ(s.tick_hz, 500);
    CHECK_EQ(s.verify_pages_per_tick, 8);
}

GW_TEST(spec_defaults)
{
    struct gw_guest_spec s;
    char err[256];
    REQUIRE(gw_guest_spec_parse("idle", &s, err, sizeof err) == 0);
    CHECK_EQ(s.workload, GW_WL_IDLE);
    CHECK_EQ(s.rate_bytes_per_s, 0);
    CHECK_EQ(s.pattern, GW_PAT_RANDOM);
    REQUIRE(gw_guest_spec_parse("dirtier", &s, err, sizeof err) == 0);
    CHECK(s.rate_bytes_per_s > 0);
}

GW_TEST(spec_errors)
{
    struct gw_guest_spec s;
    char err[256];
    CHECK_EQ(gw_guest_spec_parse("nothing", &s, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "unknown workload") != NULL);
    CHECK_EQ(gw_guest_spec_parse("dirtier:ws", &s, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_guest_spec_parse("dirtier:ws=12Q", &s, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_guest_spec_parse("dirtier:ws=1000", &s, err, sizeof err), -EINVAL); /* not a page multiple */
    CHECK_EQ(gw_guest_spec_parse("dirtier:pattern=plaid", &s, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_guest_spec_parse("dirtier:colour=red", &s, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_guest_spec_parse("disk:block=100", &s, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_guest_spec_parse("dirtier:hz=1", &s, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_guest_spec_parse(NULL, &s, err, sizeof err), -EINVAL);
    char big[400];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_EQ(gw_guest_spec_parse(big, &s, err, sizeof err), -EINVAL);
}

GW_TEST(spec_fits_memory)
{
    struct gw_guest_spec s;
    char err[256];
    REQUIRE(gw_guest_spec_parse("dirtier:ws=64M", &s, err, sizeof err) == 0);
    CHECK_EQ(gw_guest_spec_check(&s, 64ull << 20, 1, err, sizeof err), -EINVAL);
    CHECK_EQ(gw_guest_spec_check(&s, 128ull << 20, 1, err, sizeof err), 0);
}
