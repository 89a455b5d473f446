/* Shaped veth links between network namespaces (see bench_link.h), made with iproute2's own
 * commands so that what the benchmark does can be repeated by hand. */
#include "bench/bench_link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_proc.h"

/* The benchmark's children are started with execv: iproute2's tools by their full path. */
static char ip_path[64], tc_path[64];

static const char *tool(const char *name, char *buf, size_t len)
{
    if (buf[0]) return buf;
    static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(buf, len, "%s/%s", dirs[i], name);
        if (!access(buf, X_OK)) return buf;
    }
    snprintf(buf, len, "%s", name);
    return buf;
}

static int run(char *err, size_t errlen, char *argv[])
{
    if (!strcmp(argv[0], "ip")) argv[0] = (char *)tool("ip", ip_path, sizeof ip_path);
    else if (!strcmp(argv[0], "tc")) argv[0] = (char *)tool("tc", tc_path, sizeof tc_path);
    char out[512];
    int r = gw_bench_run(argv, out, sizeof out);
    if (r && err && !err[0]) {
        size_t n = 0;
        for (unsigned i = 0; argv[i] && n < errlen; i++) n += (size_t)snprintf(err + n, errlen - n, "%s ", argv[i]);
        if (n < errlen) snprintf(err + n, errlen - n, "failed (%d)", r);
    }
    return r ? -EIO : 0;
}

int gw_bench_parse_rate(const char *s, uint64_t *bps)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t mul = !*end ? 1 : !strcmp(end, "kbit") ? 1000ull : !strcmp(end, "mbit") ? 1000000ull
                   : !strcmp(end, "gbit") ? 1000000000ull : 0;
    if (end == s || !mul || !v || v > 100000000000ull / mul) return -EINVAL;
    *bps = v * mul;
    return *bps >= 1000 ? 0 : -EINVAL;
}

int gw_bench_link_open(struct gw_bench_link *l, uint64_t rate_bps, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    if (err && errlen) err[0] = 0;
    int pid = (int)getpid();
    for (unsigned i = 0; i < 2; i++) {
        snprintf(l->ns[i], sizeof l->ns[i], "gwbench%d%c", pid, i ? 'd' : 's');
        snprintf(l->dev[i], sizeof l->dev[i], "gwb%d%c", pid % 1000000, i ? 'd' : 's');
        /* One /30 per pid: two benchmarks at once never share an address. */
        snprintf(l->addr[i], sizeof l->addr[i], "10.%d.%d.%d", 200 + (pid >> 14) % 50, (pid >> 6) % 256,
                 (pid % 64) * 4 + 1 + (int)i);
    }
    char rate[32], burst[32], cidr[2][32];
    snprintf(rate, sizeof rate, "%llubit", (unsigned long long)rate_bps);
    /* A burst of at least one timer tick's worth (4 ms) and of a few full frames. */
    uint64_t b = rate_bps / 8 / 250;
    snprintf(burst, sizeof burst, "%llu", (unsigned long long)(b < 65536 ? 65536 : b));
    for (unsigned i = 0; i < 2; i++) snprintf(cidr[i], sizeof cidr[i], "%s/30", l->addr[i]);
    int r = 0;
    for (unsigned i = 0; i < 2 && !r; i++) {
        r = run(err, errlen, (char *[]){"ip", "netns", "add", l->ns[i], NULL});
        if (!r) l->made[i] = true;
    }
    if (!r) r = run(err, errlen, (char *[]){"ip", "link", "add", l->dev[0], "netns", l->ns[0], "type", "veth", "peer",
                                            "name", l->dev[1], "netns", l->ns[1], NULL});
    for (unsigned i = 0; i < 2 && !r; i++) {
        r = run(err, errlen, (char *[]){"ip", "-n", l->ns[i], "addr", "add", cidr[i], "dev", l->dev[i], NULL});
        if (!r) r = run(err, errlen, (char *[]){"ip", "-n", l->ns[i], "link", "set", "lo", "up", NULL});
        if (!r) r = run(err, errlen, (char *[]){"ip", "-n", l->ns[i], "link", "set", l->dev[i], "up", NULL});
        if (!r) r = run(err, errlen, (char *[]){"tc", "-n", l->ns[i], "qdisc", "add", "dev", l->dev[i], "root", "tbf",
                                                "rate", rate, "burst", burst, "latency", "20ms", NULL});
    }
    if (r) gw_bench_link_close(l);
    return r;
}

int gw_bench_link_set(struct gw_bench_link *l, bool up)
{
    int r = 0;
    for (unsigned i = 0; i < 2; i++)
        r |= run(NULL, 0, (char *[]){"ip", "-n", l->ns[i], "link", "set", l->dev[i], up ? "up" : "down", NULL});
    return r ? -EIO : 0;
}

void gw_bench_link_close(struct gw_bench_link *l)
{
    for (unsigned i = 0; i < 2; i++)
        if (l->made[i]) run(NULL, 0, (char *[]){"ip", "netns", "del", l->ns[i], NULL});
    l->made[0] = l->made[1] = false;
}

void gw_bench_link_exec(struct gw_bench_link *l, unsigned end, char *prefix[4])
{
    prefix[0] = (char *)tool("ip", ip_path, sizeof ip_path);
    prefix[1] = "netns";
    prefix[2] = "exec";
    prefix[3] = l->ns[end];
}
