/* The CLI's connection to godwitd and its mapping of gRPC statuses to exit codes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/pbjson.h"
#include "engine/common/util.h"

int gw_cli_exit_for(int code)
{
    switch (code) {
    case GW_GRPC_OK: return GW_EXIT_OK;
    case GW_GRPC_INVALID_ARGUMENT: case GW_GRPC_OUT_OF_RANGE: return GW_EXIT_USAGE;
    case GW_GRPC_NOT_FOUND: return GW_EXIT_NOT_FOUND;
    case GW_GRPC_ALREADY_EXISTS: case GW_GRPC_FAILED_PRECONDITION: case GW_GRPC_ABORTED: return GW_EXIT_CONFLICT;
    case GW_GRPC_UNAUTHENTICATED: case GW_GRPC_PERMISSION_DENIED: return GW_EXIT_AUTH;
    case GW_GRPC_UNAVAILABLE: return GW_EXIT_UNAVAILABLE;
    case GW_GRPC_DEADLINE_EXCEEDED: return GW_EXIT_TIMEOUT;
    case GW_GRPC_CANCELLED: return GW_EXIT_CANCELLED;
    default: return GW_EXIT_FAIL;
    }
}

int gw_cli_connect(struct gw_cli *cli)
{
    if (cli->client) return GW_EXIT_OK;
    int r;
    if (cli->tls_ca[0]) {
        char err[512];
        struct gw_grpc_client_tls t = {.ca = strcmp(cli->tls_ca, "system") ? cli->tls_ca : "",
                                       .cert = cli->tls_cert, .key = cli->tls_key};
        r = gw_grpc_client_connect_tls(cli->addr, 5000, &t, &cli->client, err, sizeof err);
        if (r) {
            fprintf(stderr, "godwit: cannot reach godwitd at %s: %s\n", cli->addr, err);
            return r == -EACCES ? GW_EXIT_AUTH : GW_EXIT_UNAVAILABLE;
        }
    } else if ((r = gw_grpc_client_connect(cli->addr, 3000, &cli->client))) {
        fprintf(stderr, "godwit: cannot reach godwitd at %s: %s\n", cli->addr, strerror(-r));
        return GW_EXIT_UNAVAILABLE;
    }
    if (cli->token[0]) gw_grpc_client_set_token(cli->client, cli->token);
    return GW_EXIT_OK;
}

int gw_cli_call(struct gw_cli *cli, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
    *resp = NULL;
    int e = gw_cli_connect(cli);
    if (e) return e;
    char path[128];
    /* "Service/Method" names a service of its own (GodwitBackup/CreateBackup). */
    snprintf(path, sizeof path, strchr(method, '/') ? "/godwit.v1.%s" : "/godwit.v1.Godwit/%s", method);
    struct gw_grpc_status st;
    gw_grpc_client_unary(cli->client, path, req, resp_desc, resp, cli->timeout_ms, &st);
    if (st.code != GW_GRPC_OK) {
        fprintf(stderr, "godwit: %s: %s%s%s\n", method, gw_grpc_code_name(st.code), st.message[0] ? ": " : "", st.message);
        if (st.code == GW_GRPC_UNAUTHENTICATED)
            fprintf(stderr, "godwit: set the token with --token-file, GODWIT_TOKEN_FILE or GODWIT_TOKEN\n");
        return gw_cli_exit_for(st.code);
    }
    return GW_EXIT_OK;
}

void gw_cli_print_json(const ProtobufCMessage *msg)
{
    gw_pbjson_write(stdout, msg);
    fputc('\n', stdout);
    fflush(stdout);
}

void gw_fmt_bytes(uint64_t b, char *out, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    unsigned u = 0;
    while (v >= 1024 && u + 1 < GW_ARRAY_SIZE(units)) { v /= 1024; u++; }
    if (u == 0) snprintf(out, len, "%llu B", (unsigned long long)b);
    else snprintf(out, len, "%.*f %s", v < 10 ? 1 : 0, v, units[u]);
}

void gw_fmt_ms_ago(uint64_t unix_ms, char *out, size_t len)
{
    if (!unix_ms) { snprintf(out, len, "-"); return; }
    uint64_t now = gw_wall_ns() / 1000000;
    uint64_t s = now > unix_ms ? (now - unix_ms) / 1000 : 0;
    if (s < 60) snprintf(out, len, "%llus ago", (unsigned long long)s);
    else if (s < 3600) snprintf(out, len, "%llum ago", (unsigned long long)(s / 60));
    else if (s < 86400) snprintf(out, len, "%lluh ago", (unsigned long long)(s / 3600));
    else snprintf(out, len, "%llud ago", (unsigned long long)(s / 86400));
}

static const char *const vm_states[] = {"unspecified", "defined", "running", "stopped", "migrating", "crashed",
                                        "in-doubt"};
static const char *const job_states[] = {"unspecified", "queued", "running", "succeeded", "failed", "cancelled"};

const char *gw_vm_state_name(int s)
{
    return s >= 0 && (size_t)s < GW_ARRAY_SIZE(vm_states) ? vm_states[s] : "?";
}

const char *gw_job_state_name(int s)
{
    return s >= 0 && (size_t)s < GW_ARRAY_SIZE(job_states) ? job_states[s] : "?";
}

int gw_parse_vm_state(const char *s)
{
    for (size_t i = 1; i < GW_ARRAY_SIZE(vm_states); i++)
        if (!strcasecmp(s, vm_states[i])) return (int)i;
    return -1;
}

int gw_parse_job_state(const char *s)
{
    for (size_t i = 1; i < GW_ARRAY_SIZE(job_states); i++)
        if (!strcasecmp(s, job_states[i])) return (int)i;
    return -1;
}
