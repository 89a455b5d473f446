/* A gRPC server for the API tests: the health service plus test.v1.Echo (tests/api/echo.proto).
 * ServerStream pushes its messages from a thread of its own, the way godwitd's jobs push
 * progress, so the tests cover sends from outside the server's threads.
 *
 * Usage: grpc_test_server [--listen ADDR] [--token T] [--port-file F] [--max-message N]
 *                         [--max-connections N] [--max-conn-buffer N] [--workers N]
 *                         [--max-send-queue N] [--max-send-total N] [--health-auth]
 * Prints "listening on PORT" once ready and runs until SIGINT or SIGTERM. */
#include "engine/api/grpc_health.h"
#include "engine/api/grpc_server.h"
#include "tests/api/echo.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct echo_state {
    atomic_ulong cancelled_streams;
    atomic_ulong sleeps_cancelled;
    atomic_ulong sends_refused;   /* ServerStream sends over the output budget */
    atomic_int producers;         /* ServerStream threads still running */
};

struct producer {
    struct echo_state *st;
    struct gw_grpc_call *call;    /* one reference */
    char text[128];
    uint32_t count, delay_ms;
};

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int unary(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    const Test__V1__EchoRequest *req = (const void *)msg;
    if (req->code != 0)
        return gw_grpc_call_error(call, req->code, "%s", req->message);
    Test__V1__EchoReply r = TEST__V1__ECHO_REPLY__INIT;
    r.text = req->text;
    r.payload = req->payload;
    return gw_grpc_call_send(call, &r.base) == 0 ? GW_GRPC_OK : GW_GRPC_CANCELLED;
}

static void *produce(void *arg)
{
    struct producer *p = arg;
    uint32_t i;
    for (i = 0; i < p->count; i++) {
        char text[160];
        snprintf(text, sizeof text, "%s %u", p->text, i);
        Test__V1__EchoReply r = TEST__V1__ECHO_REPLY__INIT;
        r.text = text;
        r.seq = i;
        int rc = gw_grpc_call_send(p->call, &r.base);
        if (rc == -ECANCELED) {
            atomic_fetch_add(&p->st->cancelled_streams, 1);
            break;
        }
        if (rc == -ENOBUFS) {
            /* The client reads too slowly: the call ends, as godwitd's job streams do. */
            atomic_fetch_add(&p->st->sends_refused, 1);
            gw_grpc_call_finish(p->call, GW_GRPC_RESOURCE_EXHAUSTED, "output budget exhausted");
            break;
        }
        if (rc < 0)
            break;
        if (p->delay_ms && i + 1 < p->count)
            sleep_ms(p->delay_ms);
    }
    if (i == p->count)
        gw_grpc_call_finish(p->call, GW_GRPC_OK, NULL);
    gw_grpc_call_unref(p->call);
    atomic_fetch_sub(&p->st->producers, 1);
    free(p);
    return NULL;
}

static int server_stream(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    const Test__V1__EchoRequest *req = (const void *)msg;
    struct producer *p = calloc(1, sizeof *p);
    if (!p)
        return GW_GRPC_RESOURCE_EXHAUSTED;
    p->st = arg;
    p->call = call;
    p->count = req->count;
    p->delay_ms = req->delay_ms;
    snprintf(p->text, sizeof p->text, "%s", req->text);
    gw_grpc_call_ref(call);
    atomic_fetch_add(&p->st->producers, 1);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, produce, p);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_fetch_sub(&p->st->producers, 1);
        gw_grpc_call_unref(call);
        free(p);
        return GW_GRPC_RESOURCE_EXHAUSTED;
    }
    return GW_GRPC_PENDING;
}

static int sleep_method(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    const Test__V1__EchoRequest *req = (const void *)msg;
    struct echo_state *st = arg;
    for (uint32_t t = 0; t < req->delay_ms; t += 5) {
        if (gw_grpc_call_cancelled(call)) {
            atomic_fetch_add(&st->sleeps_cancelled, 1);
            return GW_GRPC_CANCELLED;   /* ignored: the call already has its status */
        }
        sleep_ms(5);
    }
    Test__V1__EchoReply r = TEST__V1__ECHO_REPLY__INIT;
    r.text = "slept";
    return gw_grpc_call_send(call, &r.base) == 0 ? GW_GRPC_OK : GW_GRPC_CANCELLED;
}

static int stats(struct gw_grpc_call *call, const ProtobufCMessage *msg, void *arg)
{
    struct echo_state *st = arg;
    Test__V1__StatsReply r = TEST__V1__STATS_REPLY__INIT;
    r.cancelled_streams = atomic_load(&st->cancelled_streams);
    r.sleeps_cancelled = atomic_load(&st->sleeps_cancelled);
    r.sends_refused = atomic_load(&st->sends_refused);
    r.producers = (uint64_t)atomic_load(&st->producers);
    return gw_grpc_call_send(call, &r.base) == 0 ? GW_GRPC_OK : GW_GRPC_CANCELLED;
}

int main(int argc, char **argv)
{
    struct gw_grpc_server_config cfg = { .listen = "127.0.0.1:0" };
    const char *port_file = NULL;
    bool health_auth = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--health-auth")) { health_auth = true; continue; }
        if (!v) { fprintf(stderr, "missing value for %s\n", a); return 2; }
        i++;
        if (!strcmp(a, "--listen")) cfg.listen = v;
        else if (!strcmp(a, "--token")) cfg.token = v;
        else if (!strcmp(a, "--port-file")) port_file = v;
        else if (!strcmp(a, "--max-message")) cfg.max_message_bytes = (uint32_t)strtoul(v, NULL, 0);
        else if (!strcmp(a, "--max-connections")) cfg.max_connections = (uint32_t)strtoul(v, NULL, 0);
        else if (!strcmp(a, "--max-conn-buffer")) cfg.max_conn_buffer_bytes = (uint32_t)strtoul(v, NULL, 0);
        else if (!strcmp(a, "--workers")) cfg.workers = (uint32_t)strtoul(v, NULL, 0);
        else if (!strcmp(a, "--max-send-queue")) cfg.max_send_queue_bytes = (uint32_t)strtoul(v, NULL, 0);
        else if (!strcmp(a, "--max-send-total")) cfg.max_send_total_bytes = strtoull(v, NULL, 0);
        else { fprintf(stderr, "unknown option %s\n", a); return 2; }
    }

    /* Block the stop signals before any thread starts, so only sigwait sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    struct echo_state st = { 0 };
    struct gw_grpc_server *srv = NULL;
    struct gw_grpc_health *health = NULL;
    int rc = gw_grpc_server_new(&cfg, &srv);
    if (rc == 0)
        rc = gw_grpc_health_new(srv, health_auth, &health);
    const struct gw_grpc_method methods[] = {
        { "/test.v1.Echo/Unary", GW_GRPC_UNARY, &test__v1__echo_request__descriptor, unary, &st, 0 },
        { "/test.v1.Echo/ServerStream", GW_GRPC_SERVER_STREAM, &test__v1__echo_request__descriptor,
          server_stream, &st, 0 },
        { "/test.v1.Echo/Sleep", GW_GRPC_UNARY, &test__v1__echo_request__descriptor, sleep_method, &st, 0 },
        { "/test.v1.Echo/Stats", GW_GRPC_UNARY, &test__v1__stats_request__descriptor, stats, &st, 0 },
    };
    for (size_t i = 0; rc == 0 && i < sizeof methods / sizeof methods[0]; i++)
        rc = gw_grpc_server_register(srv, &methods[i]);
    if (rc == 0)
        rc = gw_grpc_server_start(srv);
    if (rc < 0) {
        fprintf(stderr, "grpc_test_server: %s\n", strerror(-rc));
        gw_grpc_health_free(health);
        gw_grpc_server_free(srv);
        return 1;
    }
    int port = gw_grpc_server_port(srv);
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        if (f) {
            fprintf(f, "%d\n", port);
            fclose(f);
        }
    }
    printf("listening on %d\n", port);
    fflush(stdout);

    int sig;
    sigwait(&set, &sig);
    gw_grpc_server_stop(srv);
    while (atomic_load(&st.producers) > 0)   /* they see -ECANCELED and let go */
        sleep_ms(5);
    gw_grpc_health_free(health);
    gw_grpc_server_free(srv);
    return 0;
}
