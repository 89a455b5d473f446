/* `godwit cluster hosts` (the registry: state, free capacity, VMs, heartbeat age) and
 * `godwit host maintenance enter|exit` (an evacuation: its plan on a dry run, else its parent
 * job, followed VM by VM with --wait). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/common/util.h"

static const char cluster_usage[] =
    "usage: godwit cluster hosts [--json]\n"
    "  every host of the cluster registry: state, free memory and vCPUs, VMs, heartbeat age\n";

static const char maint_usage[] =
    "usage: godwit host maintenance enter [--dry-run] [--wait] [--max-outbound N] [--max-inbound N]\n"
    "                                     [--bandwidth-budget SIZE/s] [--stall-s N] [--request-id ID]\n"
    "       godwit host maintenance exit [--return]\n"
    "  enter: evacuate this host (draining, then maintenance once empty); --dry-run prints the\n"
    "  plan and its blockers and moves nothing. exit: back to active.\n";

static const char *host_state_name(int s)
{
    switch (s) {
    case GODWIT__V1__CLUSTER_HOST__STATE__ACTIVE: return "active";
    case GODWIT__V1__CLUSTER_HOST__STATE__DRAINING: return "draining";
    case GODWIT__V1__CLUSTER_HOST__STATE__MAINTENANCE: return "maintenance";
    default: return "?";
    }
}

static const char *step_state_name(int s)
{
    switch (s) {
    case GODWIT__V1__EVACUATION_STEP__STATE__PENDING: return "pending";
    case GODWIT__V1__EVACUATION_STEP__STATE__RUNNING: return "running";
    case GODWIT__V1__EVACUATION_STEP__STATE__MOVED: return "moved";
    case GODWIT__V1__EVACUATION_STEP__STATE__FAILED: return "failed";
    case GODWIT__V1__EVACUATION_STEP__STATE__CANCELLED: return "cancelled";
    default: return "?";
    }
}

int gw_cmd_cluster(struct gw_cli *cli, int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "hosts")) {
        bool help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
        fputs(cluster_usage, help ? stdout : stderr);
        return help ? GW_EXIT_OK : GW_EXIT_USAGE;
    }
    Godwit__V1__ListHostsRequest req = GODWIT__V1__LIST_HOSTS_REQUEST__INIT;
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "ListHosts", &req.base, &godwit__v1__list_hosts_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__ListHostsResponse *r = (const void *)resp;
    if (cli->json) {
        gw_cli_print_json(resp);
    } else {
        printf("%-16s %-12s %-6s %-10s %-12s %-8s %-4s %s\n", "HOST", "STATE", "UP", "HEARTBEAT", "FREE MEM",
               "FREE CPU", "VMS", "API");
        for (size_t i = 0; i < r->n_hosts; i++) {
            const Godwit__V1__ClusterHost *h = r->hosts[i];
            char fr[32], hb[32];
            gw_fmt_bytes(h->memory_bytes > h->memory_allocated_bytes ? h->memory_bytes - h->memory_allocated_bytes : 0,
                         fr, sizeof fr);
            snprintf(hb, sizeof hb, "%.1f s", (double)h->heartbeat_age_ms / 1000.0);
            printf("%-16s %-12s %-6s %-10s %-12s %-8d %-4zu %s\n", h->name, host_state_name(h->state),
                   h->down ? "DOWN" : "yes", hb, fr, (int)h->vcpus - (int)h->vcpus_allocated, h->n_vms, h->api_address);
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

static void print_plan(const Godwit__V1__EvacuateHostResponse *r)
{
    printf("%-3s %-20s %-16s %-10s %-12s %-10s %s\n", "#", "VM", "TO", "MEMORY", "EST. BYTES", "EST. TIME", "PRIO");
    for (size_t i = 0; i < r->n_plan; i++) {
        const Godwit__V1__EvacuationStep *s = r->plan[i];
        char mem[32], est[32];
        gw_fmt_bytes(s->memory_bytes, mem, sizeof mem);
        gw_fmt_bytes(s->estimated_bytes, est, sizeof est);
        printf("%-3zu %-20s %-16s %-10s %-12s %-10.1f %u\n", i + 1, s->vm,
               s->destination_host[0] ? s->destination_host : "-", mem, est, (double)s->estimated_ms / 1000.0, s->priority);
    }
    for (size_t i = 0; i < r->n_blockers; i++)
        printf("blocked: %s: %s: %s\n", r->blockers[i]->vm, r->blockers[i]->reason, r->blockers[i]->message);
}

struct follow {
    int *last;                     /* each step's last printed state */
    char (*phase)[32];
    size_t n;
    Godwit__V1__Job *final;
};

static int on_event(void *arg, const ProtobufCMessage *msg)
{
    struct follow *f = arg;
    const Godwit__V1__JobEvent *ev = (const void *)msg;
    const Godwit__V1__Job *j = ev->job;
    if (!j) return 0;
    if (!f->last && j->n_steps) {
        f->n = j->n_steps;
        f->last = calloc(f->n, sizeof *f->last);
        f->phase = calloc(f->n, sizeof *f->phase);
        if (!f->last || !f->phase) return -1;
    }
    for (size_t i = 0; i < f->n && i < j->n_steps; i++) {
        const Godwit__V1__EvacuationStep *s = j->steps[i];
        if ((int)s->state == f->last[i] && !strcmp(s->phase, f->phase[i])) continue;
        f->last[i] = (int)s->state;
        snprintf(f->phase[i], sizeof f->phase[i], "%s", s->phase);
        printf("%-20s -> %-16s %-10s %s%s%s\n", s->vm, s->destination_host, step_state_name(s->state), s->phase,
               s->error[0] ? ": " : "", s->error);
    }
    fflush(stdout);
    if (j->state == GODWIT__V1__JOB__STATE__SUCCEEDED || j->state == GODWIT__V1__JOB__STATE__FAILED ||
        j->state == GODWIT__V1__JOB__STATE__CANCELLED) {
        if (f->final) godwit__v1__job__free_unpacked(f->final, NULL);
        uint8_t *buf = malloc(protobuf_c_message_get_packed_size(&j->base) + 1);
        if (buf) {
            size_t len = protobuf_c_message_pack(&j->base, buf);
            f->final = godwit__v1__job__unpack(NULL, len, buf);
            free(buf);
        }
    }
    return 0;
}

static int follow_evacuation(struct gw_cli *cli, const char *id)
{
    Godwit__V1__WatchJobRequest req = GODWIT__V1__WATCH_JOB_REQUEST__INIT;
    req.id = (char *)id;
    struct follow f = {0};
    struct gw_grpc_status st;
    gw_grpc_client_stream(cli->client, "/godwit.v1.Godwit/WatchJob", &req.base, &godwit__v1__job_event__descriptor,
                          on_event, &f, 0, &st);
    int code;
    if (st.code != GW_GRPC_OK) {
        fprintf(stderr, "godwit: WatchJob: %s: %s\n", gw_grpc_code_name(st.code), st.message);
        code = gw_cli_exit_for(st.code);
    } else if (!f.final) {
        fprintf(stderr, "godwit: the job stream ended before the job did\n");
        code = GW_EXIT_FAIL;
    } else {
        printf("evacuation %s %s%s%s\n", f.final->id, gw_job_state_name(f.final->state), f.final->error[0] ? ": " : "",
               f.final->error);
        code = f.final->state == GODWIT__V1__JOB__STATE__SUCCEEDED ? GW_EXIT_OK
               : f.final->state == GODWIT__V1__JOB__STATE__CANCELLED ? GW_EXIT_CANCELLED : GW_EXIT_FAIL;
    }
    if (f.final) godwit__v1__job__free_unpacked(f.final, NULL);
    free(f.last);
    free(f.phase);
    return code;
}

static int maint_enter(struct gw_cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"dry-run", 0, 0, 'n'}, {"wait", 0, 0, 'w'}, {"max-outbound", 1, 0, 'o'}, {"max-inbound", 1, 0, 'i'},
        {"bandwidth-budget", 1, 0, 'b'}, {"stall-s", 1, 0, 's'}, {"request-id", 1, 0, 'r'}, {"help", 0, 0, 'h'}, {0}};
    Godwit__V1__EvacuateHostRequest req = GODWIT__V1__EVACUATE_HOST_REQUEST__INIT;
    Godwit__V1__EvacuationPolicy pol = GODWIT__V1__EVACUATION_POLICY__INIT;
    req.policy = &pol;
    bool wait = false;
    uint64_t v;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'n': req.dry_run = true; break;
        case 'w': wait = true; break;
        case 'o': if (gw_parse_u64(optarg, 1, 64, &v)) goto bad; pol.max_outbound = (uint32_t)v; break;
        case 'i': if (gw_parse_u64(optarg, 1, 64, &v)) goto bad; pol.max_inbound = (uint32_t)v; break;
        case 'b': if (gw_parse_size(optarg, &v)) goto bad; pol.bandwidth_budget_bytes_per_s = v; break;
        case 's': if (gw_parse_u64(optarg, 1, 86400, &v)) goto bad; pol.stall_timeout_s = (uint32_t)v; break;
        case 'r': req.request_id = optarg; break;
        case 'h': fputs(maint_usage, stdout); return GW_EXIT_OK;
        default: fputs(maint_usage, stderr); return GW_EXIT_USAGE;
        }
    }
    if (optind != argc) { fputs(maint_usage, stderr); return GW_EXIT_USAGE; }
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "EvacuateHost", &req.base, &godwit__v1__evacuate_host_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__EvacuateHostResponse *r = (const void *)resp;
    int code = GW_EXIT_OK;
    char id[64] = "";
    if (r->job) snprintf(id, sizeof id, "%s", r->job->id);
    if (cli->json) gw_cli_print_json(resp);
    else if (req.dry_run) print_plan(r);
    else printf("evacuation %s started: %zu VMs; the host is draining\n", id, r->job ? r->job->n_steps : 0);
    if (req.dry_run && r->n_blockers) code = GW_EXIT_CONFLICT;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (!req.dry_run && wait && id[0]) code = follow_evacuation(cli, id);
    return code;
bad:
    fprintf(stderr, "godwit host maintenance enter: bad value '%s'\n", optarg);
    return GW_EXIT_USAGE;
}

static int maint_exit(struct gw_cli *cli, int argc, char **argv)
{
    Godwit__V1__ExitMaintenanceRequest req = GODWIT__V1__EXIT_MAINTENANCE_REQUEST__INIT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--return")) req.return_home = true;
        else { fputs(maint_usage, !strcmp(argv[i], "--help") ? stdout : stderr); return !strcmp(argv[i], "--help") ? GW_EXIT_OK : GW_EXIT_USAGE; }
    }
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "ExitMaintenance", &req.base, &godwit__v1__exit_maintenance_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__ExitMaintenanceResponse *r = (const void *)resp;
    if (cli->json) gw_cli_print_json(resp);
    else {
        printf("host is %s\n", host_state_name(r->state));
        for (size_t i = 0; i < r->n_returning; i++) printf("returning: %s\n", r->returning[i]);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

/* argv[0] is "maintenance". */
int gw_cmd_host_maintenance(struct gw_cli *cli, int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "enter")) return maint_enter(cli, argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "exit")) return maint_exit(cli, argc - 1, argv + 1);
    bool help = argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    fputs(maint_usage, help ? stdout : stderr);
    return help ? GW_EXIT_OK : GW_EXIT_USAGE;
}
