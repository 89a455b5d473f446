/* Unit tests for the data-range walk over guest RAM (engine/vm/mem_data.c): whole memory and
 * a window, on a real memfd with holes; a window never reports outside itself, and a window
 * over a hole of an earlier list finds only what was written there since (post-copy's
 * switchover relies on it). */
#include "engine/vm/guest_mem.h"
#include "engine/vm/mem_data.h"
#include "guest/abi.h"
#include "tests/lib/gw_test.h"

#include <string.h>

#define PG 4096ull

struct ranges { uint64_t off[16], len[16]; unsigned n; };

static int note(uint64_t off, uint64_t len, void *ctx)
{
    struct ranges *r = ctx;
    if (r->n < 16) { r->off[r->n] = off; r->len[r->n] = len; }
    r->n++;
    return 0;
}

GW_TEST(windows_report_only_their_data)
{
    struct gw_guest_mem m;
    REQUIRE(gw_guest_mem_create(&m, GW_MIN_MEMORY, "test-mem-data") == 0);
    memset(m.base + 10 * PG, 1, 4 * PG);      /* pages 10..13 */
    memset(m.base + 100 * PG, 2, PG);          /* page 100 */
    struct ranges all = {0};
    CHECK_EQ(gw_mem_for_each_data(&m, note, &all), 0);
    CHECK_EQ(all.n, 2);
    CHECK_EQ(all.off[0], 10 * PG);
    CHECK_EQ(all.len[0], 4 * PG);
    CHECK_EQ(all.off[1], 100 * PG);
    /* A window cutting the first range: clipped at both ends. */
    struct ranges w = {0};
    CHECK_EQ(gw_mem_for_each_data_in(&m, 11 * PG, 12 * PG, note, &w), 0);
    CHECK_EQ(w.n, 1);
    CHECK_EQ(w.off[0], 11 * PG);
    CHECK_EQ(w.len[0], PG);
    /* A hole of the first list, written since: only the new page. */
    memset(m.base + 50 * PG, 3, PG);
    struct ranges h = {0};
    CHECK_EQ(gw_mem_for_each_data_in(&m, 14 * PG, 100 * PG, note, &h), 0);
    CHECK_EQ(h.n, 1);
    CHECK_EQ(h.off[0], 50 * PG);
    CHECK_EQ(h.len[0], PG);
    /* Empty and out-of-range windows report nothing. */
    struct ranges e = {0};
    CHECK_EQ(gw_mem_for_each_data_in(&m, 200 * PG, 200 * PG, note, &e), 0);
    CHECK_EQ(gw_mem_for_each_data_in(&m, m.size, m.size + PG, note, &e), 0);
    CHECK_EQ(e.n, 0);
    gw_guest_mem_destroy(&m);
}
