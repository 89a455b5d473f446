/* `godwit-bench api`: latency of godwitd's API under a fixed load. Starts a godwitd (the
 * sibling binary, temporary state directory, a bearer token, one defined VM: no KVM needed)
 * unless --addr names a running one, then drives unary GetVm calls at --rate calls/s in
 * total, spread over --connections client connections, for --seconds.
 *
 * Open loop: each connection sends on a fixed schedule and a call's latency runs from its
 * scheduled time, so a slow answer also counts the wait it causes for the next calls
 * (no coordinated omission). Prints p50/p99/max latency and the achieved rate; the
 * baseline is the 2 ms p99 target (ratio < 1 = within it). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_proc.h"
#include "engine/api/grpc_client.h"
#include "engine/common/util.h"
#include "godwit/v1/api.pb-c.h"

#define TARGET_P99_US 2000.0
#define BENCH_TOKEN "godwit-bench-token"

struct worker {
    pthread_t th;
    const char *addr, *token;
    uint64_t start_ns, interval_ns, end_ns;
    uint64_t *lat_ns;        /* one per completed call */
    size_t n, cap, errors;
    char err[256];
};

static void sleep_until(uint64_t t)
{
    for (;;) {
        uint64_t now = gw_now_ns();
        if (now >= t) return;
        uint64_t d = t - now;
        struct timespec ts = {.tv_sec = (time_t)(d / 1000000000ull), .tv_nsec = (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct gw_grpc_client *c;
    int r = gw_grpc_client_connect(w->addr, 3000, &c);
    if (r) { snprintf(w->err, sizeof w->err, "connect %s: %s", w->addr, strerror(-r)); return NULL; }
    gw_grpc_client_set_token(c, w->token);
    Godwit__V1__GetVmRequest req = GODWIT__V1__GET_VM_REQUEST__INIT;
    req.name = "bench";
    for (uint64_t t = w->start_ns; t < w->end_ns; t += w->interval_ns) {
        sleep_until(t);
        struct gw_grpc_status st;
        ProtobufCMessage *resp = NULL;
        r = gw_grpc_client_unary(c, "/godwit.v1.Godwit/GetVm", &req.base, &godwit__v1__get_vm_response__descriptor,
                                 &resp, 5000, &st);
        uint64_t done = gw_now_ns();
        if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        if (r || st.code != GW_GRPC_OK) {
            if (!w->errors++) snprintf(w->err, sizeof w->err, "GetVm: %s: %.200s", gw_grpc_code_name(st.code), st.message);
            if (r) break;   /* the connection is gone */
            continue;
        }
        if (w->n == w->cap) {
            size_t nc = w->cap ? w->cap * 2 : 4096;
            uint64_t *l = realloc(w->lat_ns, nc * sizeof *l);
            if (!l) break;
            w->lat_ns = l;
            w->cap = nc;
        }
        w->lat_ns[w->n++] = done - t;
    }
    gw_grpc_client_close(c);
    return NULL;
}

/* The machine's own noise: how late a thread sleeping 1 ms wakes up, sampled every 5 ms
 * alongside the calls (sparsely, so as not to add much load of its own). On shared or
 * loaded hosts this, not godwitd, often sets the tail. */
struct jitter {
    pthread_t th;
    uint64_t end_ns;
    uint64_t *late_ns;
    size_t n, cap;
};

static void *jitter_main(void *arg)
{
    struct jitter *j = arg;
    while (gw_now_ns() < j->end_ns) {
        uint64_t t = gw_now_ns();
        struct timespec ts = {.tv_nsec = 1000000};
        nanosleep(&ts, NULL);
        uint64_t d = gw_now_ns() - t;
        if (j->n == j->cap) {
            size_t nc = j->cap ? j->cap * 2 : 4096;
            uint64_t *l = realloc(j->late_ns, nc * sizeof *l);
            if (!l) break;
            j->late_ns = l;
            j->cap = nc;
        }
        j->late_ns[j->n++] = d > 1000000 ? d - 1000000 : 0;
        struct timespec gap = {.tv_nsec = 4000000};
        nanosleep(&gap, NULL);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Starts a private godwitd; *addr gets "127.0.0.1:PORT". Returns its pid or -errno. */
static pid_t start_daemon(char *dir, char *addr, size_t addrlen)
{
    char bin[4096], runner[4096], path[512];
    if (gw_bench_sibling("godwitd", bin, sizeof bin) || gw_bench_sibling("godwit-vm", runner, sizeof runner)) {
        fprintf(stderr, "godwit-bench api: godwitd or godwit-vm is not next to godwit-bench\n");
        return -ENOENT;
    }
    snprintf(path, sizeof path, "%s/token", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -errno;
    fputs(BENCH_TOKEN "\n", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/godwitd.conf", dir);
    f = fopen(path, "w");
    if (!f) return -errno;
    fprintf(f, "[daemon]\nlisten = 127.0.0.1:0\nstate_dir = %s/state\ntoken_file = %s/token\nrunner = %s\n"
               "hostname = bench\n", dir, dir, runner);
    fclose(f);
    char out[512];
    snprintf(out, sizeof out, "%s/godwitd.out", dir);
    char *argv[] = {bin, "--config", path, NULL};
    setenv("GODWIT_LOG", "warn", 0);   /* its info lines would only clutter the report */
    pid_t pid = gw_bench_spawn(argv, out);
    if (pid < 0) return pid;
    /* Its first line says where it listens. */
    for (int i = 0; i < 500; i++) {
        char line[256] = "";
        f = fopen(out, "r");
        if (f) {
            if (!fgets(line, sizeof line, f)) line[0] = 0;
            fclose(f);
        }
        if (!strncmp(line, "listening on ", 13) && strchr(line, '\n')) {
            *strchr(line, '\n') = 0;
            snprintf(addr, addrlen, "%s", line + 13);
            return pid;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) return -ECHILD;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -ETIMEDOUT;
}

static int define_vm(const char *addr, const char *token)
{
    struct gw_grpc_client *c;
    int r = gw_grpc_client_connect(addr, 3000, &c);
    if (r) return r;
    gw_grpc_client_set_token(c, token);
    Godwit__V1__CreateVmRequest req = GODWIT__V1__CREATE_VM_REQUEST__INIT;
    req.name = "bench";
    req.memory_bytes = 64ull << 20;
    req.guest = "idle:ws=4M";
    struct gw_grpc_status st;
    ProtobufCMessage *resp = NULL;
    gw_grpc_client_unary(c, "/godwit.v1.Godwit/CreateVm", &req.base, &godwit__v1__create_vm_response__descriptor,
                         &resp, 5000, &st);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    gw_grpc_client_close(c);
    return st.code == GW_GRPC_OK || st.code == GW_GRPC_ALREADY_EXISTS ? 0 : -EPROTO;
}

int gw_bench_api(int argc, char **argv)
{
    uint64_t seconds = 5, rate = 1000, conns = 4;
    const char *addr_opt = NULL, *token = BENCH_TOKEN;
    bool json = false;
    static const struct option lo[] = {{"seconds", 1, 0, 's'}, {"rate", 1, 0, 'r'}, {"connections", 1, 0, 'c'},
                                       {"addr", 1, 0, 'a'}, {"token", 1, 0, 't'}, {"json", 0, 0, 'j'},
                                       {"help", 0, 0, 'h'}, {0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 's': bad = gw_parse_u64(optarg, 1, 3600, &seconds); break;
        case 'r': bad = gw_parse_u64(optarg, 1, 1000000, &rate); break;
        case 'c': bad = gw_parse_u64(optarg, 1, 256, &conns); break;
        case 'a': addr_opt = optarg; break;
        case 't': token = optarg; break;
        case 'j': json = true; break;
        case 'h':
            printf("usage: godwit-bench api [--seconds 5] [--rate 1000] [--connections 4] [--addr HOST:PORT --token T] [--json]\n");
            return 0;
        default: return 2;
        }
        if (bad) { fprintf(stderr, "godwit-bench api: bad value '%s'\n", optarg); return 2; }
    }
    char dir[] = "/tmp/godwit-bench-api.XXXXXX", addr[256];
    pid_t daemon = 0;
    if (addr_opt) {
        snprintf(addr, sizeof addr, "%s", addr_opt);
    } else {
        if (!mkdtemp(dir)) { perror("godwit-bench api: mkdtemp"); return 1; }
        daemon = start_daemon(dir, addr, sizeof addr);
        if (daemon < 0) { fprintf(stderr, "godwit-bench api: cannot start godwitd: %s\n", strerror((int)-daemon)); return 1; }
    }
    int code = 1;
    struct worker *w = calloc(conns, sizeof *w);
    if (!w || define_vm(addr, token)) { fprintf(stderr, "godwit-bench api: cannot define the VM on %s\n", addr); goto out; }
    uint64_t interval = 1000000000ull * conns / rate;
    uint64_t t0 = gw_now_ns() + 50000000ull;   /* every worker connected by then */
    for (uint64_t i = 0; i < conns; i++) {
        /* Staggered: the calls of all connections interleave evenly. */
        w[i] = (struct worker){.addr = addr, .token = token, .interval_ns = interval,
                               .start_ns = t0 + i * interval / conns, .end_ns = t0 + seconds * 1000000000ull};
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    }
    struct jitter jit = {.end_ns = t0 + seconds * 1000000000ull};
    pthread_create(&jit.th, NULL, jitter_main, &jit);
    size_t total = 0, errors = 0;
    const char *first_err = NULL;
    for (uint64_t i = 0; i < conns; i++) {
        pthread_join(w[i].th, NULL);
        total += w[i].n;
        errors += w[i].errors;
        if (!first_err && w[i].err[0]) first_err = w[i].err;
    }
    pthread_join(jit.th, NULL);
    qsort(jit.late_ns, jit.n, sizeof *jit.late_ns, cmp_u64);
    double jit_p99 = jit.n ? jit.late_ns[(jit.n * 99) / 100] / 1e3 : 0;
    free(jit.late_ns);
    double secs = (double)(gw_now_ns() - t0) / 1e9;
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) goto out;
    size_t k = 0;
    for (uint64_t i = 0; i < conns; i++) {
        memcpy(all + k, w[i].lat_ns, w[i].n * sizeof *all);
        k += w[i].n;
    }
    qsort(all, total, sizeof *all, cmp_u64);
    double p50 = total ? all[total / 2] / 1e3 : 0, p99 = total ? all[(total * 99) / 100] / 1e3 : 0;
    double mx = total ? all[total - 1] / 1e3 : 0, rps = total / secs;
    bool ok = total && !errors;
    if (json) {
        printf("{\"bench\":\"api\",\"status\":\"%s\",\"error\":\"%s\",\"method\":\"GetVm\",\"connections\":%llu,"
               "\"rate_target\":%llu,\"seconds\":%.2f,\"calls\":%zu,\"errors\":%zu,\"rps\":%.1f,\"p50_us\":%.1f,"
               "\"p99_us\":%.1f,\"max_us\":%.1f,\"sleep_jitter_p99_us\":%.1f,\"baseline\":\"p99 target %.0f us\","
               "\"ratio_vs_baseline\":%.3f}\n",
               ok ? "ok" : "error", first_err ? first_err : "", (unsigned long long)conns, (unsigned long long)rate,
               secs, total, errors, rps, p50, p99, mx, jit_p99, TARGET_P99_US, p99 / TARGET_P99_US);
    } else {
        printf("api bench: %zu GetVm calls in %.1f s (%.0f/s of %llu/s) over %llu connections: p50 %.0f us, "
               "p99 %.0f us (target %.0f), max %.0f us, %zu errors; a 1 ms sleep woke %.0f us late at p99\n", total,
               secs, rps, (unsigned long long)rate, (unsigned long long)conns, p50, p99, TARGET_P99_US, mx, errors, jit_p99);
    }
    free(all);
    code = ok ? 0 : 1;
out:
    for (uint64_t i = 0; w && i < conns; i++) free(w[i].lat_ns);
    free(w);
    if (daemon > 0) {
        kill(daemon, SIGTERM);
        gw_bench_wait(daemon);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd)) { /* a temp dir left behind */ }
    }
    return code;
}
