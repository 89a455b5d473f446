/* `godwit host`: the host's capacity, its VMs and running jobs. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int gw_cmd_host(struct gw_cli *cli, int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "maintenance")) return gw_cmd_host_maintenance(cli, argc - 1, argv + 1);
    if (argc > 1) {
        bool help = !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h");
        fprintf(help ? stdout : stderr, "usage: godwit host [--json]\n       godwit host maintenance enter|exit ... (godwit host maintenance --help)\n");
        return help ? GW_EXIT_OK : GW_EXIT_USAGE;
    }
    Godwit__V1__GetHostRequest req = GODWIT__V1__GET_HOST_REQUEST__INIT;
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "GetHost", &req.base, &godwit__v1__get_host_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__GetHostResponse *h = (const void *)resp;
    if (cli->json) {
        gw_cli_print_json(resp);
    } else {
        const Godwit__V1__HostCapacity *c = h->capacity;
        char mem[32] = "?", fr[32] = "?", al[32] = "?";
        if (c) {
            gw_fmt_bytes(c->memory_bytes, mem, sizeof mem);
            gw_fmt_bytes(c->memory_free_bytes, fr, sizeof fr);
            gw_fmt_bytes(c->memory_allocated_bytes, al, sizeof al);
        }
        size_t running = 0;
        for (size_t i = 0; i < h->n_vms; i++) running += h->vms[i]->state == GODWIT__V1__VM__STATE__RUNNING;
        printf("host:          %s (godwitd %s, up %llu s)\n", h->hostname, h->version,
               (unsigned long long)(h->uptime_ms / 1000));
        if (c) {
            printf("cpus:          %u\n", c->cpus);
            printf("memory:        %s total, %s free, %s allocated to VMs\n", mem, fr, al);
            printf("features:      kvm %s, dirty ring %s, userfaultfd %s, rdma %s\n", c->kvm ? "yes" : "no",
                   c->dirty_ring ? "yes" : "no", c->userfaultfd ? "yes" : "no", c->rdma ? "yes" : "no");
        }
        printf("vms:           %zu (%zu running)\n", h->n_vms, running);
        printf("running jobs:  %zu\n", h->n_running_jobs);
        for (size_t i = 0; i < h->n_running_jobs; i++)
            printf("  %s %s %s -> %s\n", h->running_jobs[i]->id, gw_job_state_name(h->running_jobs[i]->state),
                   h->running_jobs[i]->vm, h->running_jobs[i]->destination);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}
