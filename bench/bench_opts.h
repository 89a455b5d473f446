/* The options the VM benchmarks share: VM shape, guest workload, migration settings, output.
 * Every benchmark accepts all of them and uses the ones that concern it. */
#ifndef GW_BENCH_OPTS_H
#define GW_BENCH_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#define GW_BENCH_MAX_PAIRS 20u   /* --pairs: plaintext/TLS pairs of migrate --tls both */

struct gw_bench_opts {
    uint64_t memory, ws, rate, seconds, vcpus;   /* --memory --ws --rate --seconds --vcpus */
    const char *pattern;                         /* --pattern random|text|sparse */
    uint64_t streams, downtime_ms;               /* --streams --downtime-ms (migrate) */
    const char *compress;                        /* --compress auto|lz4|none (migrate) */
    const char *dir;                             /* --dir (snapshot); NULL = /tmp */
    const char *target;                          /* --target dir:PATH|rados:auto (backup) */
    const char *tls;                             /* --tls on|off|both (migrate); NULL = on */
    const char *mode;                            /* --mode precopy|postcopy|hybrid (migrate) */
    const char *link;                            /* --link RATE: a shaped veth (bench_link.h) */
    uint64_t cut_at_ms, cut_for_ms;              /* --cut-link-at MS --cut-link-for MS */
    bool no_priority;                            /* --no-priority-channel: its baseline too */
    const char *qemu;                            /* --qemu SCRIPT: QEMU's run on the same work */
    uint64_t dirty_ring;                         /* --dirty-ring N: the source tracks by ring */
    bool vs_precopy;                             /* --vs-precopy: hybrid against pre-copy alone */
    uint64_t pairs;                              /* --pairs N (1..GW_BENCH_MAX_PAIRS): --tls both */
    bool json;                                   /* --json */
};

/* Parses argv over the defaults already in *o. Returns 0, or 2 (the usage exit code) after
 * printing which value of benchmark `name` was bad. */
int gw_bench_parse_opts(const char *name, int argc, char **argv, struct gw_bench_opts *o);

#endif
