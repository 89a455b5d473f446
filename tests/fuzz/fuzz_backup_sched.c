/* libFuzzer target for the decoders of outside input that schedules and the collector read:
 * TZif files (backup/tz.c), cron expressions (backup/cron.c, from the API and policies) and
 * the collector's pending list (storage/gc_pending.c, from the store). The first byte picks
 * the mode. A decoded zone and expression are then used, so lookups run on what was accepted. */
#include "backup/cron.h"
#include "backup/tz.h"
#include "storage/gc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned mode = data[0] % 3;
    data++;
    size--;
    char err[256];
    if (mode == 0) {
        struct gw_tz *tz = NULL;
        if (gw_tz_parse("fuzz", data, size, &tz, err, sizeof err) == 0) {
            int64_t out[2];
            struct tm tm;
            for (int64_t t = -4000000000ll; t < 8000000000ll; t += 997000000ll) {
                gw_tz_local(tz, t, &tm);
                if (gw_tz_from_local(tz, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, 0, out) > 2) abort();
            }
            gw_tz_free(tz);
        }
    } else if (mode == 1) {
        char expr[GW_CRON_MAX_LEN + 2];
        size_t n = size < sizeof expr - 1 ? size : sizeof expr - 1;
        memcpy(expr, data, n);
        expr[n] = 0;
        struct gw_cron c;
        if (gw_cron_parse(expr, &c, err, sizeof err) == 0) {
            int64_t next;
            if (gw_cron_next(&c, NULL, 1780000000, &next) == 0 && next <= 1780000000) abort();
        }
    } else {
        uint64_t gen;
        struct gw_gc_entry *e = NULL;
        size_t n = 0;
        if (gw_gc_pending_unpack(data, size, &gen, &e, &n, err, sizeof err) == 0 && n > GW_GC_MAX_PENDING) abort();
        free(e);
    }
    return 0;
}
