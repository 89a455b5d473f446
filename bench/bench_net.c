/* `godwit-bench net`: the net-echo guest (guest/workload_net.c) behind virtio-net on a tap made
 * for the run. Measures, from an AF_PACKET socket on the host side of the tap:
 *  - echo_rps and echo p50/p99: sequential round trips of numbered echo frames;
 *  - across a live migration to a second runner on the same (multi-queue) tap, with a frame
 *    every --interval-us: frames_lost, frames_lost_outside_pause (the pause ends when the
 *    destination's RARP announcement arrives and began the measured downtime before it, less
 *    a few frame intervals for frames still queued at the source), frames_reordered and
 *    downtime_ms.
 * Baseline, measured in the same run on the same tap and the same frames: a host thread
 * echoing on the tap itself (no guest, no VM exits): ratio_vs_baseline = echo_rps / its rps. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"
#include "guest/abi.h"

#define ECHO_FRAMES 2000
#define FRAME_LEN 60
#define STREAM_MAX 200000
#define ETH_P_RARP_ 0x8035

static const uint8_t HOST_MAC[6] = {0x02, 0x47, 0x57, 0x00, 0x00, 0x02};

struct net_bench {
    char tap[IFNAMSIZ];
    int sock;                       /* AF_PACKET on the tap */
    uint8_t guest_mac[6];
    /* stream */
    volatile bool stop;
    uint64_t interval_ns;
    uint64_t *sent_ns;              /* per sequence number */
    uint64_t *reply_ns;             /* 0 = no reply */
    uint64_t nsent, reordered, top;
    uint64_t rarp_ns;
};

/* ---- the tap ---- */

/* Opens (creating if needed) a queue of multi-queue tap name. Returns the fd or -errno. */
static int tap_queue(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = -errno; close(fd); return e; }
    return fd;
}

/* Makes the tap outlive our fds (persist) or go when the last closes. */
static int tap_persist(const char *name, bool persist)
{
    int fd = tap_queue(name);
    if (fd < 0) return fd;
    int r = ioctl(fd, TUNSETPERSIST, persist ? 1 : 0) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int tap_up(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/disable_ipv6", name);
    FILE *f = fopen(path, "w");       /* no router solicitations into the guest */
    if (f) { fputs("1", f); fclose(f); }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    int r = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (!r) { ifr.ifr_flags |= IFF_UP; r = ioctl(s, SIOCSIFFLAGS, &ifr); }
    r = r < 0 ? -errno : 0;
    close(s);
    return r;
}

static int packet_socket(const char *name)
{
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (s < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) { int e = -errno; close(s); return e; }
    struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                            .sll_ifindex = ifr.ifr_ifindex};
    int buf = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (!a.sll_ifindex || bind(s, (struct sockaddr *)&a, sizeof a) < 0) { int e = -errno; close(s); return e ? e : -ENODEV; }
    return s;
}

/* ---- frames ---- */

static void make_request(uint8_t *f, uint64_t seq)
{
    memset(f, 0x5a, FRAME_LEN);
    memset(f, 0xff, 6);
    memcpy(f + 6, HOST_MAC, 6);
    f[12] = GW_NET_ECHO_ETHERTYPE >> 8;
    f[13] = GW_NET_ECHO_ETHERTYPE & 0xff;
    uint32_t magic = GW_NET_ECHO_REQUEST;
    memcpy(f + 14, &magic, 4);
    memcpy(f + 18, &seq, 8);
}

/* What a received frame is: 1 an echo reply to us (*seq set), 2 a RARP, 0 anything else. */
static int classify(struct net_bench *b, const uint8_t *f, ssize_t n, uint64_t *seq)
{
    if (n < 26) return 0;
    uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
    if (type == ETH_P_RARP_) return 2;
    uint32_t magic;
    memcpy(&magic, f + 14, 4);
    if (type != GW_NET_ECHO_ETHERTYPE || memcmp(f, HOST_MAC, 6) || magic != GW_NET_ECHO_REPLY) return 0;
    memcpy(b->guest_mac, f + 6, 6);
    memcpy(seq, f + 18, 8);
    return 1;
}

/* Receives one incoming frame within timeout_ms: its class (see classify), -1 on timeout. */
static int recv_one(struct net_bench *b, int timeout_ms, uint64_t *seq)
{
    struct pollfd p = {.fd = b->sock, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0) return -1;
    uint8_t f[2048];
    struct sockaddr_ll from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(b->sock, f, sizeof f, 0, (struct sockaddr *)&from, &fl);
    if (n < 0 || from.sll_pkttype == PACKET_OUTGOING) return 0;
    return classify(b, f, n, seq);
}

/* One round trip: ns, or 0 when no reply came within timeout_ms. */
static uint64_t ping(struct net_bench *b, uint64_t seq, int timeout_ms)
{
    uint8_t f[FRAME_LEN];
    make_request(f, seq);
    uint64_t t0 = gw_now_ns();
    if (send(b->sock, f, sizeof f, 0) != (ssize_t)sizeof f) return 0;
    uint64_t end = t0 + (uint64_t)timeout_ms * 1000000;
    for (uint64_t now = t0; now < end; now = gw_now_ns()) {
        uint64_t got;
        int c = recv_one(b, (int)((end - now) / 1000000) + 1, &got);
        if (c == 1 && got == seq) return gw_now_ns() - t0;
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct echo_stats { double rps, p50_us, p99_us; unsigned answered; };

static struct echo_stats measure_echo(struct net_bench *b, uint64_t first_seq)
{
    static uint64_t rtt[ECHO_FRAMES];
    unsigned n = 0;
    uint64_t t0 = gw_now_ns();
    for (unsigned i = 0; i < ECHO_FRAMES; i++) {
        uint64_t r = ping(b, first_seq + i, 1000);
        if (r) rtt[n++] = r;
    }
    double secs = (gw_now_ns() - t0) / 1e9;
    struct echo_stats s = {.answered = n};
    if (!n) return s;
    qsort(rtt, n, sizeof rtt[0], cmp_u64);
    s.rps = n / secs;
    s.p50_us = rtt[n / 2] / 1e3;
    s.p99_us = rtt[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1e3;
    return s;
}

/* ---- baseline: a host thread echoing on the tap ---- */

struct host_echo { const char *tap; volatile bool stop; int fd; };

static void *host_echo_main(void *arg)
{
    struct host_echo *h = arg;
    uint8_t f[2048];
    while (!h->stop) {
        struct pollfd p = {.fd = h->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t n = read(h->fd, f, sizeof f);
        uint32_t magic;
        if (n < 26 || f[12] != (GW_NET_ECHO_ETHERTYPE >> 8) || f[13] != (GW_NET_ECHO_ETHERTYPE & 0xff)) continue;
        memcpy(&magic, f + 14, 4);
        if (magic != GW_NET_ECHO_REQUEST) continue;
        uint8_t src[6];
        memcpy(src, f + 6, 6);
        memcpy(f, src, 6);
        static const uint8_t me[6] = {0x02, 0x47, 0x57, 0x00, 0x00, 0x03};
        memcpy(f + 6, me, 6);
        magic = GW_NET_ECHO_REPLY;
        memcpy(f + 14, &magic, 4);
        if (write(h->fd, f, (size_t)n) < 0) { /* dropped, like a full tap */ }
    }
    return NULL;
}

/* ---- the stream across a migration ---- */

static void *stream_tx(void *arg)
{
    struct net_bench *b = arg;
    uint64_t next = gw_now_ns();
    uint8_t f[FRAME_LEN];
    while (!b->stop && b->nsent < STREAM_MAX) {
        make_request(f, b->nsent);
        b->sent_ns[b->nsent] = gw_now_ns();
        if (send(b->sock, f, sizeof f, 0) == (ssize_t)sizeof f) __atomic_add_fetch(&b->nsent, 1, __ATOMIC_RELEASE);
        next += b->interval_ns;
        uint64_t now = gw_now_ns();
        if (next > now) { struct timespec ts = {0, (long)(next - now)}; nanosleep(&ts, NULL); }
    }
    return NULL;
}

static void *stream_rx(void *arg)
{
    struct net_bench *b = arg;
    while (!b->stop) {
        uint64_t seq;
        int c = recv_one(b, 20, &seq);
        uint64_t now = gw_now_ns();
        if (c == 2 && !b->rarp_ns) b->rarp_ns = now;
        if (c != 1 || seq >= STREAM_MAX || b->reply_ns[seq]) continue;
        b->reply_ns[seq] = now;
        if (seq < b->top) b->reordered++;
        if (seq > b->top) b->top = seq;
    }
    return NULL;
}

struct mig_result { uint64_t lost, lost_outside, reordered, sent; double downtime_ms; bool announced; };

/* Migrates the runner at src_sock to a new incoming runner while a stream runs. */
static int migrate_mid_stream(struct net_bench *b, const char *vm_bin, const char *dir, const char *src_sock,
                              struct mig_result *res, char *err, size_t errlen)
{
    char secret[4200], dst_out[4200], net[64], buf[65536], url[128] = "";
    snprintf(secret, sizeof secret, "%s/secret", dir);
    snprintf(dst_out, sizeof dst_out, "%s/dst.json", dir);
    snprintf(net, sizeof net, "tap:%s", b->tap);
    FILE *sf = fopen(secret, "w");
    if (!sf) { snprintf(err, errlen, "secret: %s", strerror(errno)); return -1; }
    fprintf(sf, "bench-net-secret-%d\n", (int)getpid());
    fclose(sf);
    char *dst_argv[] = {(char *)vm_bin, "incoming", "--listen", "tcp:127.0.0.1:0", "--secret-file", secret,
                        "--net", net, "--seconds", "2", "--json", NULL};
    pid_t dst = gw_bench_spawn(dst_argv, dst_out);
    for (int i = 0; i < 300 && !url[0]; i++) {
        usleep(20000);
        if (gw_bench_read_file(dst_out, buf, sizeof buf) == 0) gw_json_get_str(buf, "listening", url, sizeof url);
    }
    if (!url[0]) { kill(dst, SIGTERM); gw_bench_wait(dst); snprintf(err, errlen, "incoming runner did not listen"); return -1; }
    b->sent_ns = calloc(STREAM_MAX, 8);
    b->reply_ns = calloc(STREAM_MAX, 8);
    if (!b->sent_ns || !b->reply_ns) { kill(dst, SIGTERM); gw_bench_wait(dst); snprintf(err, errlen, "out of memory"); return -1; }
    b->stop = false;
    pthread_t tx, rx;
    pthread_create(&rx, NULL, stream_rx, b);
    pthread_create(&tx, NULL, stream_tx, b);
    usleep(1000000);
    char *mig_argv[] = {(char *)vm_bin, "migrate", "--control", (char *)src_sock, "--to", url, "--secret-file",
                        secret, "--wait", "--json", NULL};
    int rc = gw_bench_run(mig_argv, buf, sizeof buf);
    char final[4096];
    gw_bench_last_json(buf, final, sizeof final);
    usleep(1000000);
    b->stop = true;
    pthread_join(tx, NULL);
    b->stop = false;                  /* let late replies in */
    usleep(300000);
    b->stop = true;
    pthread_join(rx, NULL);
    int dst_rc = gw_bench_wait(dst);
    char phase[32] = "";
    gw_json_get_str(final, "phase", phase, sizeof phase);
    gw_json_get_double(final, "measured_downtime_ms", &res->downtime_ms);
    if (rc || strcmp(phase, "completed")) {
        gw_json_get_str(final, "migration_error", err, errlen);
        if (!err[0]) snprintf(err, errlen, "migration ended '%s' (exit %d)", phase, rc);
        return -1;
    }
    if (dst_rc) { snprintf(err, errlen, "destination runner exited %d", dst_rc); return -1; }
    res->sent = b->nsent;
    res->reordered = b->reordered;
    res->announced = b->rarp_ns != 0;
    uint64_t slack = 3 * b->interval_ns > 5000000 ? 3 * b->interval_ns : 5000000;
    uint64_t pause_end = b->rarp_ns;
    uint64_t pause_start = pause_end - (uint64_t)(res->downtime_ms * 1e6) - 2000000 - slack;
    for (uint64_t q = 0; q < b->nsent; q++) {
        if (b->reply_ns[q]) continue;
        res->lost++;
        if (!b->rarp_ns || b->sent_ns[q] < pause_start || b->sent_ns[q] > pause_end) res->lost_outside++;
    }
    return 0;
}

int gw_bench_net(int argc, char **argv)
{
    struct gw_bench_opts o = {.memory = 64ull << 20, .seconds = 1};
    if (gw_bench_parse_opts("net", argc, argv, &o)) return 2;
    char vm_bin[4096];
    if (gw_bench_sibling("godwit-vm", vm_bin, sizeof vm_bin)) { fprintf(stderr, "godwit-bench: godwit-vm not found\n"); return 1; }
    struct net_bench b = {.sock = -1, .interval_ns = 1000000};
    snprintf(b.tap, sizeof b.tap, "gwb%d", (int)getpid() % 1000000);
    char dir[] = "/tmp/godwit-bench-net.XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    char err[512] = "", sock[4200], out[4200], net[64], mem_s[32];
    snprintf(sock, sizeof sock, "%s/src.sock", dir);
    snprintf(out, sizeof out, "%s/src.json", dir);
    snprintf(net, sizeof net, "tap:%s", b.tap);
    snprintf(mem_s, sizeof mem_s, "%llu", (unsigned long long)o.memory);
    struct echo_stats base = {0}, vm = {0};
    struct mig_result mig = {0};
    pid_t src = -1;
    int status = 1, r = tap_persist(b.tap, true);
    if (r) { snprintf(err, sizeof err, "cannot create tap %s: %s", b.tap, strerror(-r)); goto out; }
    if ((r = tap_up(b.tap)) || (b.sock = packet_socket(b.tap)) < 0) {
        snprintf(err, sizeof err, "cannot bring up tap %s: %s", b.tap, strerror(r ? -r : -b.sock));
        goto out;
    }
    /* Baseline: the same frames echoed by a host thread on the tap. */
    struct host_echo h = {.tap = b.tap};
    h.fd = tap_queue(b.tap);
    if (h.fd < 0) { snprintf(err, sizeof err, "baseline: cannot open tap: %s", strerror(-h.fd)); goto out; }
    pthread_t ht;
    pthread_create(&ht, NULL, host_echo_main, &h);
    base = measure_echo(&b, 1ull << 40);
    h.stop = true;
    pthread_join(ht, NULL);
    close(h.fd);

    char *src_argv[] = {vm_bin, "run", "--name", "bench-net", "--memory", mem_s, "--guest", "net-echo", "--net",
                        net, "--control", sock, "--json", NULL};
    src = gw_bench_spawn(src_argv, out);
    bool up = false;
    for (int i = 0; i < 150 && !up; i++) up = ping(&b, (1ull << 41) + i, 200) != 0;
    if (!up) { snprintf(err, sizeof err, "the guest never answered on %s", b.tap); goto out; }
    vm = measure_echo(&b, 1ull << 42);
    if (migrate_mid_stream(&b, vm_bin, dir, sock, &mig, err, sizeof err) == 0) status = 0;
out:
    if (src > 0) { kill(src, SIGTERM); gw_bench_wait(src); }
    if (b.sock >= 0) close(b.sock);
    tap_persist(b.tap, false);
    free(b.sent_ns);
    free(b.reply_ns);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* best effort */ }
    double ratio = base.rps > 0 ? vm.rps / base.rps : 0;
    if (o.json) {
        printf("{\"bench\":\"net\",\"status\":\"%s\",\"error\":", status ? "error" : "ok");
        gw_json_str(stdout, err);
        printf(",\"echo_frames\":%u,\"echo_answered\":%u,\"echo_rps\":%.0f,\"echo_p50_us\":%.1f,\"echo_p99_us\":%.1f,"
               "\"baseline\":\"a host thread echoing the same frames on the same tap\",\"baseline_rps\":%.0f,"
               "\"baseline_p99_us\":%.1f,\"ratio_vs_baseline\":%.3f,\"stream_interval_us\":%llu,"
               "\"frames_sent\":%llu,\"frames_lost\":%llu,\"frames_lost_outside_pause\":%llu,"
               "\"frames_reordered\":%llu,\"downtime_ms\":%.1f,\"mac_announced\":%s}\n",
               ECHO_FRAMES, vm.answered, vm.rps, vm.p50_us, vm.p99_us, base.rps, base.p99_us, ratio,
               (unsigned long long)(b.interval_ns / 1000), (unsigned long long)mig.sent, (unsigned long long)mig.lost,
               (unsigned long long)mig.lost_outside, (unsigned long long)mig.reordered, mig.downtime_ms,
               mig.announced ? "true" : "false");
    } else {
        printf("net bench: echo %.0f/s (p50 %.0f us, p99 %.0f us; host echo on the tap %.0f/s, ratio %.2f); "
               "migration: %llu of %llu frames lost (%llu outside the pause), downtime %.1f ms%s%s\n",
               vm.rps, vm.p50_us, vm.p99_us, base.rps, ratio, (unsigned long long)mig.lost,
               (unsigned long long)mig.sent, (unsigned long long)mig.lost_outside, mig.downtime_ms,
               status ? ", error: " : "", err);
    }
    return status;
}
