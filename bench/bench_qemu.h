/* The QEMU peer baseline for `godwit-bench migrate --qemu SCRIPT`: the same work (guest size,
 * working set, dirty rate, fill) migrated by QEMU on loopback in the same run, through the
 * peer script the project keeps beside it (../shared/peers/qemu/run.sh: a TCG Linux guest
 * running a dirtier, QEMU's own statistics as JSON). */
#ifndef GW_BENCH_QEMU_H
#define GW_BENCH_QEMU_H

#include <stddef.h>
#include <stdint.h>

struct gw_bench_qemu {
    char status[32];            /* QEMU's migration status: "completed" when it finished */
    double total_ms;            /* QEMU's total-time */
    double downtime_ms;
    double transferred_mib;     /* RAM bytes QEMU sent */
};

/* Runs script for memory/ws/rate bytes with pattern (random or text: the fills QEMU's dirtier
 * has). Returns 0, or -errno with err filled (a script that fails, or prints no figures). */
int gw_bench_qemu_baseline(const char *script, uint64_t memory, uint64_t ws, uint64_t rate, const char *pattern,
                           struct gw_bench_qemu *out, char *err, size_t errlen);

#endif
