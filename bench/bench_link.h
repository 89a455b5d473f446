/* A shaped network link for benchmarks: two network namespaces joined by a veth pair, each
 * end's egress shaped with tc tbf at the given rate (this kernel has tbf and htb, not netem),
 * made by the benchmark and removed by it. A process runs on one end with the argv prefix
 * gw_bench_link_exec(); the link can be taken down and brought back to cut it. Needs root
 * (CAP_NET_ADMIN) and iproute2. */
#ifndef GW_BENCH_BENCH_LINK_H
#define GW_BENCH_BENCH_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_bench_link {
    char ns[2][32];       /* namespace of end 0 (source) and end 1 (destination) */
    char dev[2][16];
    char addr[2][20];     /* IPv4 address of each end */
    bool made[2];
};

/* Makes the link; rate_bps (bits per second, 1 kbit/s .. 100 Gbit/s) shapes both directions.
 * 0 or -errno with err filled (what failed; everything made so far is removed). */
int gw_bench_link_open(struct gw_bench_link *l, uint64_t rate_bps, char *err, size_t errlen);
/* Takes both ends down (up = false: packets go nowhere, connections stay) or back up. */
int gw_bench_link_set(struct gw_bench_link *l, bool up);
/* Removes both namespaces (and the veth with them). Safe on a zeroed l. */
void gw_bench_link_close(struct gw_bench_link *l);
/* Fills prefix[0..4) with "ip" "netns" "exec" NS for end `end` (its strings point into l). */
void gw_bench_link_exec(struct gw_bench_link *l, unsigned end, char *prefix[4]);
/* Parses a rate such as 1gbit, 500mbit, 10000kbit or a plain number of bits/s. 0 or -EINVAL. */
int gw_bench_parse_rate(const char *s, uint64_t *bps);

#endif
