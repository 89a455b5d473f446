/* Namespaces, veth links and tc shaping for benchmarks (see bench_netns.h). Made with
 * iproute2's commands, as an operator would: this is a benchmark's set-up, not a product path. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_netns.h"
#include "bench/bench_proc.h"

#define IP "/usr/sbin/ip"
#define TC "/usr/sbin/tc"

/* Runs a command given as one line of space-separated words. */
static int runf(char *err, size_t errlen, const char *fmt, ...)
{
    char line[512], *argv[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char copy[512];
    snprintf(copy, sizeof copy, "%s", line);
    unsigned n = 0;
    for (char *save = NULL, *t = strtok_r(copy, " ", &save); t && n < 31; t = strtok_r(NULL, " ", &save)) argv[n++] = t;
    argv[n] = NULL;
    char out[256];
    int r = gw_bench_run(argv, out, sizeof out);
    if (r) {
        snprintf(err, errlen, "%s: %s", line, r < 0 ? strerror(-r) : "failed");
        return r < 0 ? r : -EIO;
    }
    return 0;
}

void gw_netns_lab_addr(unsigned i, char *buf, size_t len)
{
    snprintf(buf, len, "10.201.0.%u", i + 1);
}

static int link_pair(struct gw_netns_lab *lab, unsigned i, unsigned j, char *err, size_t errlen)
{
    char ai[32], aj[32], vi[40], vj[40];
    gw_netns_lab_addr(i, ai, sizeof ai);
    gw_netns_lab_addr(j, aj, sizeof aj);
    snprintf(vi, sizeof vi, "%s.%u.%u", lab->prefix, i, j);
    snprintf(vj, sizeof vj, "%s.%u.%u", lab->prefix, j, i);
    /* A token bucket of 10 ms of traffic (at least 64 KiB), and a queue of 50 ms: TCP fills
     * the link without a standing queue that would hide the rate. */
    unsigned long long bits = (unsigned long long)lab->rate * 8, burst = lab->rate / 100;
    if (burst < 65536) burst = 65536;
    int r;
    if ((r = runf(err, errlen, IP " link add %s netns %s-%u type veth peer name %s netns %s-%u", vi, lab->prefix, i, vj,
                  lab->prefix, j)))
        return r;
    for (int side = 0; side < 2; side++) {
        unsigned a = side ? j : i;
        const char *dev = side ? vj : vi, *src = side ? aj : ai, *dst = side ? ai : aj;
        if ((r = runf(err, errlen, IP " -n %s-%u link set %s up", lab->prefix, a, dev)) ||
            (r = runf(err, errlen, IP " -n %s-%u route add %s/32 dev %s src %s", lab->prefix, a, dst, dev, src)) ||
            (r = runf(err, errlen, TC " -n %s-%u qdisc add dev %s root tbf rate %llubit burst %llu latency 50ms",
                      lab->prefix, a, dev, bits, burst)))
            return r;
    }
    return 0;
}

int gw_netns_lab_make(struct gw_netns_lab *lab, unsigned n, uint64_t rate, char *err, size_t errlen)
{
    if (n > GW_NETNS_MAX_HOSTS || !rate) { snprintf(err, errlen, "at most %d hosts, a rate above 0", GW_NETNS_MAX_HOSTS); return -EINVAL; }
    /* Short (interface names are at most 15 bytes) and unique to this process. */
    snprintf(lab->prefix, sizeof lab->prefix, "gwb%x", (unsigned)getpid() & 0xfffff);
    lab->n = 0;
    lab->rate = rate;
    int r = 0;
    for (unsigned i = 0; i < n && !r; i++) {
        char a[32];
        gw_netns_lab_addr(i, a, sizeof a);
        if ((r = runf(err, errlen, IP " netns add %s-%u", lab->prefix, i))) break;
        lab->n = i + 1;
        if (!(r = runf(err, errlen, IP " -n %s-%u link set lo up", lab->prefix, i)))
            r = runf(err, errlen, IP " -n %s-%u addr add %s/32 dev lo", lab->prefix, i, a);
    }
    for (unsigned i = 0; i < n && !r; i++)
        for (unsigned j = i + 1; j < n && !r; j++) r = link_pair(lab, i, j, err, errlen);
    if (r) gw_netns_lab_remove(lab);
    return r;
}

int gw_netns_lab_enter(const struct gw_netns_lab *lab, unsigned i, int *saved)
{
    char path[64];
    snprintf(path, sizeof path, "/run/netns/%s-%u", lab->prefix, i);
    int me = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (me < 0) return -errno;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { int e = errno; close(me); return -e; }
    int r = setns(fd, CLONE_NEWNET) ? -errno : 0;
    close(fd);
    if (r) { close(me); return r; }
    *saved = me;
    return 0;
}

int gw_netns_lab_leave(int saved)
{
    int r = setns(saved, CLONE_NEWNET) ? -errno : 0;
    close(saved);
    return r;
}

void gw_netns_lab_remove(struct gw_netns_lab *lab)
{
    char err[600];
    for (unsigned i = 0; i < lab->n; i++)
        if (runf(err, sizeof err, IP " netns del %s-%u", lab->prefix, i)) fprintf(stderr, "godwit-bench: %s\n", err);
    lab->n = 0;
}
