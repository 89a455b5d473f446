/* `godwit vm create|list|show|start|stop|delete|resolve`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/common/limits.h"
#include "engine/common/util.h"

static const char vm_usage[] =
    "usage: godwit vm create NAME [--memory SIZE] [--vcpus N] [--guest SPEC] [--disk PATH]\n"
    "                        [--restart never|on-crash|always] [--max-restarts N] [--backoff-ms N] [--start]\n"
    "                        [--kernel PATH [--initrd PATH] [--cmdline \"...\"]] [--net tap:NAME[,mac=MAC]]\n"
    "                        [--label KEY=VALUE]...   (up to 16; backup policies select VMs by label)\n"
    "       godwit vm list [--state defined|running|stopped|migrating|crashed|in-doubt]\n"
    "       godwit vm show NAME\n"
    "       godwit vm console NAME [--bytes N]   (the end of its serial console)\n"
    "       godwit vm start NAME\n"
    "       godwit vm stop NAME [--force] [--timeout-ms N]\n"
    "       godwit vm delete NAME [--force]\n"
    "       godwit vm resolve NAME --keep-source|--keep-destination   (a VM whose hand-over is in doubt)\n"
    "Every command takes --json (machine-readable output) and the global options (godwit --help).\n";

static void print_vm_table(Godwit__V1__Vm **vms, size_t n)
{
    printf("%-20s %-10s %9s %5s %-28s %7s %8s %s\n", "NAME", "STATE", "MEMORY", "VCPUS", "GUEST", "PID",
           "RESTARTS", "ERROR");
    for (size_t i = 0; i < n; i++) {
        const Godwit__V1__Vm *v = vms[i];
        char mem[32], pid[16];
        gw_fmt_bytes(v->memory_bytes, mem, sizeof mem);
        snprintf(pid, sizeof pid, v->runner_pid ? "%d" : "-", v->runner_pid);
        printf("%-20s %-10s %9s %5u %-28.28s %7s %8llu %.60s\n", v->name, gw_vm_state_name(v->state), mem,
               v->vcpus, v->guest, pid, (unsigned long long)(v->counters ? v->counters->restarts : 0), v->error);
    }
}

static void print_vm(const Godwit__V1__Vm *v)
{
    char mem[32], created[32], started[32];
    gw_fmt_bytes(v->memory_bytes, mem, sizeof mem);
    gw_fmt_ms_ago(v->created_unix_ms, created, sizeof created);
    gw_fmt_ms_ago(v->started_unix_ms, started, sizeof started);
    static const char *const policies[] = {"never", "never", "on-crash", "always"};
    const Godwit__V1__RestartPolicy *rp = v->restart_policy;
    const Godwit__V1__VmCounters *c = v->counters;
    printf("name:          %s\n", v->name);
    printf("state:         %s\n", gw_vm_state_name(v->state));
    printf("host:          %s\n", v->host);
    printf("memory:        %s\n", mem);
    printf("vcpus:         %u\n", v->vcpus);
    printf("guest:         %s\n", v->guest);
    printf("disk:          %s\n", v->disk_path[0] ? v->disk_path : "-");
    if (v->kernel[0]) {
        printf("kernel:        %s\n", v->kernel);
        if (v->initrd[0]) printf("initrd:        %s\n", v->initrd);
        printf("cmdline:       %s\n", v->cmdline[0] ? v->cmdline : "(default: serial console)");
    }
    if (v->net[0]) printf("net:           %s, mac %s\n", v->net, v->mac);
    if (v->labels[0]) printf("labels:        %s\n", v->labels);
    printf("restart:       %s", rp && rp->kind >= 0 && rp->kind <= 3 ? policies[rp->kind] : "never");
    if (rp && rp->kind >= 2) printf(" (max %u, backoff %u ms)", rp->max_restarts, rp->backoff_ms);
    printf("\n");
    if (v->runner_pid) printf("runner pid:    %d\n", v->runner_pid);
    printf("created:       %s\n", created);
    printf("started:       %s\n", started);
    if (c)
        printf("counters:      %llu pages written, %llu verify errors, %llu restarts, %llu migrations\n",
               (unsigned long long)c->pages_written, (unsigned long long)c->verify_errors,
               (unsigned long long)c->restarts, (unsigned long long)c->migrations);
    if (v->error[0]) printf("error:         %s\n", v->error);
    if (v->in_doubt_peer[0] || v->in_doubt_job[0])
        printf("in doubt:      with %s (job %s): godwit vm resolve %s --keep-source|--keep-destination\n",
               v->in_doubt_peer[0] ? v->in_doubt_peer : "?", v->in_doubt_job[0] ? v->in_doubt_job : "?", v->name);
}

/* Prints the {Vm vm = 1} of a response. */
static void show_vm_response(struct gw_cli *cli, const ProtobufCMessage *resp)
{
    const Godwit__V1__Vm *vm = ((const Godwit__V1__GetVmResponse *)resp)->vm;
    if (cli->json) gw_cli_print_json(resp);
    else if (vm) print_vm(vm);
}

static int parse_restart(const char *s)
{
    if (!strcmp(s, "never")) return GODWIT__V1__RESTART_POLICY__KIND__NEVER;
    if (!strcmp(s, "on-crash")) return GODWIT__V1__RESTART_POLICY__KIND__ON_CRASH;
    if (!strcmp(s, "always")) return GODWIT__V1__RESTART_POLICY__KIND__ALWAYS;
    return -1;
}

static int vm_create(struct gw_cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"memory", 1, 0, 'm'}, {"vcpus", 1, 0, 'c'}, {"guest", 1, 0, 'g'},
                                       {"disk", 1, 0, 'd'}, {"restart", 1, 0, 'r'}, {"max-restarts", 1, 0, 'M'},
                                       {"backoff-ms", 1, 0, 'b'}, {"start", 0, 0, 's'}, {"help", 0, 0, 'h'},
                                       {"kernel", 1, 0, 'k'}, {"initrd", 1, 0, 'i'}, {"cmdline", 1, 0, 'l'},
                                       {"net", 1, 0, 'n'}, {"label", 1, 0, 'L'}, {0}};
    char *labels[GW_LIMIT_VM_LABELS + 1];   /* one more: the daemon says how many it takes */
    Godwit__V1__CreateVmRequest req = GODWIT__V1__CREATE_VM_REQUEST__INIT;
    Godwit__V1__RestartPolicy rp = GODWIT__V1__RESTART_POLICY__INIT;
    Godwit__V1__BootSpec boot = GODWIT__V1__BOOT_SPEC__INIT;
    uint64_t v;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'm': if (gw_parse_size(optarg, &req.memory_bytes)) goto bad; break;
        case 'c': if (gw_parse_u64(optarg, 1, 1024, &v)) goto bad; req.vcpus = (uint32_t)v; break;
        case 'g': req.guest = optarg; break;
        case 'd': req.disk_path = optarg; break;
        case 'r': if ((rp.kind = parse_restart(optarg)) < 0) goto bad; req.restart_policy = &rp; break;
        case 'M': if (gw_parse_u64(optarg, 0, UINT32_MAX, &v)) goto bad; rp.max_restarts = (uint32_t)v; req.restart_policy = &rp; break;
        case 'b': if (gw_parse_u64(optarg, 0, UINT32_MAX, &v)) goto bad; rp.backoff_ms = (uint32_t)v; req.restart_policy = &rp; break;
        case 's': req.start = true; break;
        /* Paths and the tap are checked by the daemon against its own image_roots and net_taps. */
        case 'k': boot.kernel = optarg; req.boot = &boot; break;
        case 'i': boot.initrd = optarg; req.boot = &boot; break;
        case 'l': boot.cmdline = optarg; req.boot = &boot; break;
        case 'n': req.net = optarg; break;
        case 'L':   /* the daemon checks each */
            if (req.n_labels > GW_LIMIT_VM_LABELS) goto bad;
            labels[req.n_labels++] = optarg;
            req.labels = labels;
            break;
        case 'h': fputs(vm_usage, stdout); return GW_EXIT_OK;
        default: fputs(vm_usage, stderr); return GW_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) { fputs(vm_usage, stderr); return GW_EXIT_USAGE; }
    req.name = argv[optind];
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "CreateVm", &req.base, &godwit__v1__create_vm_response__descriptor, &resp);
    if (e) return e;
    show_vm_response(cli, resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
bad:
    fprintf(stderr, "godwit vm create: bad value '%s'\n", optarg);
    return GW_EXIT_USAGE;
}

static int vm_list(struct gw_cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"state", 1, 0, 's'}, {"help", 0, 0, 'h'}, {0}};
    Godwit__V1__ListVmsRequest req = GODWIT__V1__LIST_VMS_REQUEST__INIT;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's': {
            int s = gw_parse_vm_state(optarg);
            if (s < 0) { fprintf(stderr, "godwit vm list: unknown state '%s'\n", optarg); return GW_EXIT_USAGE; }
            req.state = s;
            break;
        }
        case 'h': fputs(vm_usage, stdout); return GW_EXIT_OK;
        default: fputs(vm_usage, stderr); return GW_EXIT_USAGE;
        }
    }
    if (optind != argc) { fputs(vm_usage, stderr); return GW_EXIT_USAGE; }
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "ListVms", &req.base, &godwit__v1__list_vms_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__ListVmsResponse *r = (const void *)resp;
    if (cli->json) gw_cli_print_json(resp);
    else print_vm_table(r->vms, r->n_vms);
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

/* show, start, stop, delete: NAME plus a few flags. */
static int vm_named(struct gw_cli *cli, const char *verb, int argc, char **argv)
{
    static const struct option lo[] = {{"force", 0, 0, 'f'}, {"timeout-ms", 1, 0, 't'}, {"help", 0, 0, 'h'},
                                       {"keep-source", 0, 0, 'S'}, {"keep-destination", 0, 0, 'D'}, {0}};
    bool force = false, keep_source = false, keep_destination = false;
    uint64_t timeout = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'f': force = true; break;
        case 't':
            if (gw_parse_u64(optarg, 1, 3600000, &timeout)) { fprintf(stderr, "godwit vm %s: bad --timeout-ms\n", verb); return GW_EXIT_USAGE; }
            break;
        case 'S': keep_source = true; break;
        case 'D': keep_destination = true; break;
        case 'h': fputs(vm_usage, stdout); return GW_EXIT_OK;
        default: fputs(vm_usage, stderr); return GW_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) { fputs(vm_usage, stderr); return GW_EXIT_USAGE; }
    if (!strcmp(verb, "resolve") && keep_source == keep_destination) {
        fprintf(stderr, "godwit vm resolve: give exactly one of --keep-source and --keep-destination\n");
        return GW_EXIT_USAGE;
    }
    char *name = argv[optind];
    ProtobufCMessage *resp = NULL;
    int e;
    if (!strcmp(verb, "show")) {
        Godwit__V1__GetVmRequest req = GODWIT__V1__GET_VM_REQUEST__INIT;
        req.name = name;
        e = gw_cli_call(cli, "GetVm", &req.base, &godwit__v1__get_vm_response__descriptor, &resp);
    } else if (!strcmp(verb, "start")) {
        Godwit__V1__StartVmRequest req = GODWIT__V1__START_VM_REQUEST__INIT;
        req.name = name;
        e = gw_cli_call(cli, "StartVm", &req.base, &godwit__v1__start_vm_response__descriptor, &resp);
    } else if (!strcmp(verb, "resolve")) {
        Godwit__V1__ResolveVmRequest req = GODWIT__V1__RESOLVE_VM_REQUEST__INIT;
        req.name = name;
        req.keep_source = keep_source;
        req.keep_destination = keep_destination;
        e = gw_cli_call(cli, "ResolveVm", &req.base, &godwit__v1__resolve_vm_response__descriptor, &resp);
        if (!e && !cli->json) {
            if (keep_destination) printf("%s: left to the destination; forgotten here\n", name);
            else printf("%s: runs here again\n", name);
            protobuf_c_message_free_unpacked(resp, NULL);
            return GW_EXIT_OK;
        }
    } else if (!strcmp(verb, "stop")) {
        Godwit__V1__StopVmRequest req = GODWIT__V1__STOP_VM_REQUEST__INIT;
        req.name = name;
        req.force = force;
        req.timeout_ms = (uint32_t)timeout;
        e = gw_cli_call(cli, "StopVm", &req.base, &godwit__v1__stop_vm_response__descriptor, &resp);
    } else {
        Godwit__V1__DeleteVmRequest req = GODWIT__V1__DELETE_VM_REQUEST__INIT;
        req.name = name;
        req.force = force;
        e = gw_cli_call(cli, "DeleteVm", &req.base, &godwit__v1__delete_vm_response__descriptor, &resp);
        if (!e) {
            if (cli->json) printf("{\"deleted\":\"%s\"}\n", name);
            else printf("deleted %s\n", name);
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        return e;
    }
    if (e) return e;
    if (!strcmp(verb, "show") || cli->json) show_vm_response(cli, resp);
    else {
        const Godwit__V1__Vm *vm = ((const Godwit__V1__GetVmResponse *)resp)->vm;
        printf("%s: %s\n", name, vm ? gw_vm_state_name(vm->state) : "?");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

static int vm_console(struct gw_cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"bytes", 1, 0, 'b'}, {"help", 0, 0, 'h'}, {0}};
    Godwit__V1__GetVmConsoleRequest req = GODWIT__V1__GET_VM_CONSOLE_REQUEST__INIT;
    uint64_t v;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (gw_parse_size(optarg, &v) || v > UINT32_MAX) { fprintf(stderr, "godwit vm console: bad --bytes\n"); return GW_EXIT_USAGE; }
            req.max_bytes = (uint32_t)v;
            break;
        case 'h': fputs(vm_usage, stdout); return GW_EXIT_OK;
        default: fputs(vm_usage, stderr); return GW_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) { fputs(vm_usage, stderr); return GW_EXIT_USAGE; }
    req.name = argv[optind];
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "GetVmConsole", &req.base, &godwit__v1__get_vm_console_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__GetVmConsoleResponse *r = (const void *)resp;
    if (cli->json) gw_cli_print_json(resp);
    else fwrite(r->data.data, 1, r->data.len, stdout);
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

int gw_cmd_vm(struct gw_cli *cli, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(vm_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? GW_EXIT_USAGE : GW_EXIT_OK;
    }
    const char *verb = argv[1];
    argc--, argv++;
    optind = 0;   /* a fresh getopt scan of the subcommand's arguments */
    if (!strcmp(verb, "create")) return vm_create(cli, argc, argv);
    if (!strcmp(verb, "list") || !strcmp(verb, "ls")) return vm_list(cli, argc, argv);
    if (!strcmp(verb, "console")) return vm_console(cli, argc, argv);
    if (!strcmp(verb, "show") || !strcmp(verb, "start") || !strcmp(verb, "stop") || !strcmp(verb, "delete") ||
        !strcmp(verb, "resolve"))
        return vm_named(cli, verb, argc, argv);
    fprintf(stderr, "godwit vm: unknown command '%s'\n%s", verb, vm_usage);
    return GW_EXIT_USAGE;
}
