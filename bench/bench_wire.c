/* `godwit-bench wire`: the loopback limit, measured here and now. N plain TCP connections on
 * 127.0.0.1, one sending and one receiving thread each, carry a given number of bytes split
 * evenly between them; nothing is encoded, checked or placed. The time from the first byte
 * sent to the last byte received is the best any migration over the same streams can do on
 * this box at this moment, so `migrate` runs it on its own wire bytes and stream count right
 * after the migration and prints limit_ratio = wire_mib_s / limit_mib_s. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_opts.h"
#include "engine/common/util.h"
#include "precopy/precopy_source.h"

#define BLAST_BUF (1u << 20)   /* bytes per send/recv call: a migration batch is 4 MiB */
#define BLAST_MAX_STREAMS 16u

/* Holds every thread until all are up, so the clock starts with all of them ready. */
struct blast_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;                  /* 0 = closed, 1 = go, -1 = give up */
};

struct blast_end {
    int fd;
    uint64_t bytes;
    struct blast_gate *gate;
    int err;                   /* -errno of the first failure */
};

/* Returns true when the run goes ahead. */
static bool gate_wait(struct blast_gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    bool go = g->open > 0;
    pthread_mutex_unlock(&g->mu);
    return go;
}

static void gate_open(struct blast_gate *g, int how)
{
    pthread_mutex_lock(&g->mu);
    g->open = how;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void *blast_send(void *arg)
{
    struct blast_end *e = arg;
    uint8_t *buf = malloc(BLAST_BUF);
    if (!gate_wait(e->gate)) { free(buf); return NULL; }
    if (!buf) { e->err = -ENOMEM; return NULL; }
    for (size_t i = 0; i < BLAST_BUF; i++) buf[i] = (uint8_t)(i * 2654435761u >> 24);
    for (uint64_t left = e->bytes; left && !e->err;) {
        ssize_t n = send(e->fd, buf, left < BLAST_BUF ? left : BLAST_BUF, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR) e->err = -errno;
        if (n > 0) left -= (uint64_t)n;
    }
    free(buf);
    shutdown(e->fd, SHUT_WR);
    return NULL;
}

static void *blast_recv(void *arg)
{
    struct blast_end *e = arg;
    uint8_t *buf = malloc(BLAST_BUF);
    if (!gate_wait(e->gate)) { free(buf); return NULL; }
    if (!buf) { e->err = -ENOMEM; return NULL; }
    for (uint64_t left = e->bytes; left && !e->err;) {
        ssize_t n = recv(e->fd, buf, left < BLAST_BUF ? left : BLAST_BUF, 0);
        if (n == 0) e->err = -EPIPE;
        else if (n < 0 && errno != EINTR) e->err = -errno;
        else if (n > 0) left -= (uint64_t)n;
    }
    free(buf);
    return NULL;
}

/* Connects n loopback pairs: tx[i] to rx[i]. */
static int blast_connect(unsigned n, int *tx, int *rx)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0) return -errno;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    int r = 0;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, (int)n) || getsockname(l, (struct sockaddr *)&a, &al))
        r = -errno;
    for (unsigned i = 0; i < n && !r; i++) {
        tx[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (tx[i] < 0 || connect(tx[i], (struct sockaddr *)&a, sizeof a) < 0) { r = -errno; break; }
        if ((rx[i] = accept4(l, NULL, NULL, SOCK_CLOEXEC)) < 0) r = -errno;
    }
    close(l);
    return r;
}

int gw_bench_wire_limit(uint64_t bytes, unsigned streams, double *mib_s, double *ms)
{
    if (!streams || streams > BLAST_MAX_STREAMS || !bytes) return -EINVAL;
    int tx[BLAST_MAX_STREAMS], rx[BLAST_MAX_STREAMS];
    for (unsigned i = 0; i < streams; i++) tx[i] = rx[i] = -1;
    struct blast_end ends[2 * BLAST_MAX_STREAMS];
    pthread_t th[2 * BLAST_MAX_STREAMS];
    struct blast_gate gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
    unsigned started = 0;
    int r = blast_connect(streams, tx, rx);
    for (unsigned i = 0; i < 2 * streams && !r; i++) {
        unsigned s = i / 2;
        uint64_t share = bytes / streams + (s < bytes % streams ? 1 : 0);
        ends[i] = (struct blast_end){ .fd = i % 2 ? rx[s] : tx[s], .bytes = share, .gate = &gate };
        if ((r = -pthread_create(&th[i], NULL, i % 2 ? blast_recv : blast_send, &ends[i]))) break;
        started++;
    }
    uint64_t t0 = gw_now_ns();
    gate_open(&gate, r ? -1 : 1);
    for (unsigned i = 0; i < started; i++) pthread_join(th[i], NULL);
    uint64_t dt = gw_now_ns() - t0;
    for (unsigned i = 0; i < started && !r; i++) r = ends[i].err;
    for (unsigned i = 0; i < streams; i++) {
        if (tx[i] >= 0) close(tx[i]);
        if (rx[i] >= 0) close(rx[i]);
    }
    if (r) return r;
    *ms = dt / 1e6;
    *mib_s = (double)bytes / (1 << 20) / (dt / 1e9);
    return 0;
}

int gw_bench_wire(int argc, char **argv)
{
    struct gw_bench_opts o = {.ws = 512ull << 20, .streams = 0};
    if (gw_bench_parse_opts("wire", argc, argv, &o)) return 2;
    unsigned streams = o.streams ? (unsigned)o.streams : gw_precopy_default_streams();
    double mib_s = 0, ms = 0;
    int r = gw_bench_wire_limit(o.ws, streams, &mib_s, &ms);
    if (o.json) {
        printf("{\"bench\":\"wire\",\"status\":\"%s\",\"error\":\"%s\",\"bytes\":%llu,\"streams\":%u,"
               "\"total_ms\":%.1f,\"limit_mib_s\":%.1f}\n", r ? "error" : "ok", r ? strerror(-r) : "",
               (unsigned long long)o.ws, streams, ms, mib_s);
    } else if (r) {
        printf("wire bench: error: %s\n", strerror(-r));
    } else {
        printf("wire bench: %.0f MiB over %u loopback TCP streams in %.1f ms: %.0f MiB/s\n",
               o.ws / 1048576.0, streams, ms, mib_s);
    }
    return r ? 1 : 0;
}
