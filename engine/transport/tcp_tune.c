/* Per-connection TCP knobs for traffic that shares a bottleneck with something urgent (see
 * conn.h): read the kernel's view of a connection (RTT, bytes acknowledged, bytes not yet
 * sent), cap its pacing rate, bound what waits unsent in its socket, and mark a connection
 * whose packets a priority-aware queue (pfifo_fast, fq, an operator's DSCP classes) should
 * serve first and that should not be paced. Every call works on the socket under any back
 * end that has one (TCP, TLS over TCP) and returns -ENOTSUP otherwise (RDMA), so callers
 * treat them as best effort. */
#include "engine/transport/conn.h"

#include <errno.h>
#include <linux/pkt_sched.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <linux/tcp.h>   /* the full struct tcp_info (glibc's stops at 4.x fields) */
#include <string.h>
#include <sys/socket.h>

static int opt(struct gw_conn *c, int level, int name, const void *v, socklen_t len)
{
    if (!c || c->fd < 0) return -ENOTSUP;
    return setsockopt(c->fd, level, name, v, len) ? -errno : 0;
}

int gw_conn_tcp_stats(struct gw_conn *c, struct gw_conn_tcp_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!c || c->fd < 0) return -ENOTSUP;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len)) return -errno;
    /* Fields past the ones every kernel since 4.10 fills read as zero on older ones. */
    out->rtt_us = ti.tcpi_rtt;
    out->min_rtt_us = ti.tcpi_min_rtt;
    out->bytes_acked = ti.tcpi_bytes_acked;
    out->notsent_bytes = ti.tcpi_notsent_bytes;
    out->delivery_rate = ti.tcpi_delivery_rate;
    return 0;
}

int gw_conn_set_max_pacing(struct gw_conn *c, uint64_t bytes_per_s)
{
    /* 64 bits are read when given (since 4.20 on 64-bit hosts); all ones = no cap. */
    uint64_t v = bytes_per_s ? bytes_per_s : ~0ull;
    return opt(c, SOL_SOCKET, SO_MAX_PACING_RATE, &v, sizeof v);
}

int gw_conn_set_notsent_lowat(struct gw_conn *c, uint32_t bytes)
{
    int v = (int)bytes;
    return opt(c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof v);
}

int gw_conn_mark_urgent(struct gw_conn *c)
{
    /* DSCP EF for the network's classes; then the host's own queues: TC_PRIO_INTERACTIVE is
     * band 0 of pfifo_fast and of fq (6.7+), and the highest priority an unprivileged
     * socket may set. IP_TOS first: on some kernels it also rewrites the priority. */
    int tos = 0xb8, prio = TC_PRIO_INTERACTIVE;
    int r = opt(c, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
    if (r == -ENOPROTOOPT || r == -EOPNOTSUPP) r = opt(c, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos);
    int r2 = opt(c, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio);
    /* A congestion control that does not pace: BBR paces every flow at its own estimate,
     * and a connection that only ever carried small records estimates little, so an 8 KiB
     * record after a quiet spell left at ~16 Mbit/s (4 ms: the switchover's DIRTY, then the
     * answers). CUBIC or Reno send what the window allows at once (without fq). */
    static const char *const cc[] = {"cubic", "reno"};
    for (unsigned i = 0; i < sizeof cc / sizeof cc[0]; i++)
        if (!opt(c, IPPROTO_TCP, TCP_CONGESTION, cc[i], (socklen_t)strlen(cc[i]))) break;
    return r2 ? r2 : r;
}
