/* Hosts in network namespaces on this box, for benchmarks that need a real network between
 * them: a namespace per host, each pair of hosts joined by its own veth pair, every direction
 * shaped by a tc token bucket (tbf) at the same rate, like a dedicated link per host pair.
 * Made and removed by the benchmark (root only; iproute2's ip and tc).
 *
 *   host i: namespace "<prefix>-i", address 10.201.0.(i+1)/32 on its loopback; the route to
 *   host j goes out of veth "<prefix>.i.j" (its peer "<prefix>.j.i" in j's namespace).
 *
 * A pair of hosts talking is limited by its own link only: two migrations from one host to
 * two others do not share a link (they share this machine's CPUs). */
#ifndef GW_BENCH_NETNS_H
#define GW_BENCH_NETNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_NETNS_MAX_HOSTS 6

struct gw_netns_lab {
    char prefix[16];
    unsigned n;              /* namespaces made so far (removed by gw_netns_lab_remove) */
    uint64_t rate;           /* bytes/s of each direction of each link */
};

/* Makes n namespaces and their links shaped at rate bytes/s. 0, or -errno with the failing
 * command in err (what was made is removed again). */
int gw_netns_lab_make(struct gw_netns_lab *lab, unsigned n, uint64_t rate, char *err, size_t errlen);
/* Host i's address ("10.201.0.(i+1)"). */
void gw_netns_lab_addr(unsigned i, char *buf, size_t len);
/* Moves the calling thread into host i's namespace: sockets it then creates and processes it
 * then forks live there. *saved receives a descriptor of the thread's namespace for
 * gw_netns_lab_leave. 0 or -errno. */
int gw_netns_lab_enter(const struct gw_netns_lab *lab, unsigned i, int *saved);
int gw_netns_lab_leave(int saved);
/* Removes the namespaces (and with them the veths and their qdiscs). */
void gw_netns_lab_remove(struct gw_netns_lab *lab);

#endif
