/* `godwit-bench evacuate --hosts 3 --vms 6 --json`: an evacuation against the same VMs moved
 * one at a time, in the same run.
 *
 * Starts `hosts` godwitd sharing a directory registry, each in its own network namespace
 * (bench_netns.c: every pair of hosts joined by a veth pair shaped by tc tbf at --link-rate,
 * made and removed here), defines `vms` VMs of mixed sizes on host 0, one of them dirtying
 * faster than its link so that pre-copy cannot converge and its migration goes on in post-copy
 * (every child runs in hybrid mode: pre-copy rounds, then post-copy when not converging), then
 *   1. the baseline: moves them one at a time to host 1 (MigrateVm, each timed until the
 *      source let the VM go): sum_single_ms;
 *   2. the evacuation of host 1 (now holding all of them) to the other hosts with
 *      max_outbound = max_inbound = cap: total_ms, and from the job's steps the observed
 *      maximum of migrations at once and the largest |estimated - actual| / actual.
 * Prints status, vms_total, vms_moved, guest_verify_errors, max_concurrent, cap, total_ms,
 * sum_single_ms, ratio (= total_ms / sum_single_ms) and estimate_error_max.
 * Each destination takes one migration at a time (max_inbound 1): a link per host pair, so
 * that the evacuation's parallel children do not share a link. The hosts still share this
 * machine's CPUs and memory bus. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_netns.h"
#include "bench/bench_proc.h"
#include "engine/api/grpc_client.h"
#include "engine/common/util.h"
#include "godwit/v1/api.pb-c.h"

#define TOKEN "godwit-bench-evacuate-token"
#define MAX_HOSTS 8
#define MAX_VMS 32
#define MIB (1ull << 20)

struct host {
    char dir[256], addr[128], name[32];
    pid_t pid;
    struct gw_grpc_client *c;
};

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -errno;
    fputs(text, f);
    return fclose(f) ? -errno : 0;
}

static int spawn_and_connect(struct host *h, char **argv, const char *out);

static int start_host(struct host *h, const char *base, const char *registry, int i, const struct gw_netns_lab *lab)
{
    char bin[1024], runner[1024], path[700], conf[8192], secret[80];
    if (gw_bench_sibling("godwitd", bin, sizeof bin) || gw_bench_sibling("godwit-vm", runner, sizeof runner))
        return -ENOENT;
    snprintf(h->name, sizeof h->name, "bench-%d", i);
    snprintf(h->dir, sizeof h->dir, "%s/bench-%d", base, i);
    if (mkdir(h->dir, 0700)) return -errno;
    snprintf(path, sizeof path, "%s/token", h->dir);
    if (write_file(path, TOKEN "\n")) return -EIO;
    snprintf(secret, sizeof secret, "bench-cluster-secret-%016llx%016llx\n", (unsigned long long)gw_now_ns(),
             (unsigned long long)getpid());
    snprintf(path, sizeof path, "%s/secret", base);
    if (i == 0 && write_file(path, secret)) return -EIO;
    char addr[32];
    gw_netns_lab_addr((unsigned)i, addr, sizeof addr);
    /* In its own namespace the host's ports are its own: fixed ones cannot collide. The API
     * is plaintext h2c on a non-loopback address, which a benchmark may allow. */
    snprintf(conf, sizeof conf, "[daemon]\nlisten = %s:7400\napi_h2c = on\nstate_dir = %s/state\ntoken_file = %s/token\n"
             "secret_file = %s/secret\nrunner = %s\nhostname = %s\ncluster = dir:%s\ncapacity_memory = 16G\n"
             "capacity_vcpus = 64\nmax_migrations = 8\nmax_incoming = 8\nmigration_host = %s\nmigration_port = 7410\n",
             addr, h->dir, h->dir, base, runner, h->name, registry, addr);
    snprintf(path, sizeof path, "%s/godwitd.conf", h->dir);
    if (write_file(path, conf)) return -EIO;
    char out[700];
    snprintf(out, sizeof out, "%s/godwitd.out", h->dir);
    char *argv[] = {bin, "--config", path, NULL};
    int saved, r = gw_netns_lab_enter(lab, (unsigned)i, &saved);
    if (r) return r;
    r = spawn_and_connect(h, argv, out);
    int r2 = gw_netns_lab_leave(saved);
    return r ? r : r2;
}

/* In the host's namespace: the daemon forked here and our client's socket live there. */
static int spawn_and_connect(struct host *h, char **argv, const char *out)
{
    h->pid = gw_bench_spawn(argv, out);
    if (h->pid < 0) return (int)h->pid;
    for (int k = 0; k < 1000; k++) {
        char line[256] = "";
        FILE *f = fopen(out, "r");
        if (f) {
            if (!fgets(line, sizeof line, f)) line[0] = 0;
            fclose(f);
        }
        if (!strncmp(line, "listening on ", 13) && strchr(line, '\n')) {
            *strchr(line, '\n') = 0;
            snprintf(h->addr, sizeof h->addr, "%.120s", line + 13);
            int r = gw_grpc_client_connect(h->addr, 3000, &h->c);
            if (!r) gw_grpc_client_set_token(h->c, TOKEN);
            return r;
        }
        if (waitpid(h->pid, NULL, WNOHANG) == h->pid) { h->pid = 0; return -ECHILD; }
        usleep(10000);
    }
    return -ETIMEDOUT;
}

static int call(struct host *h, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                ProtobufCMessage **resp)
{
    char path[128];
    snprintf(path, sizeof path, "/godwit.v1.Godwit/%s", method);
    struct gw_grpc_status st;
    *resp = NULL;
    gw_grpc_client_unary(h->c, path, req, rd, resp, 60000, &st);
    if (st.code != GW_GRPC_OK) {
        fprintf(stderr, "godwit-bench evacuate: %s on %s: %s\n", method, h->name, st.message);
        if (*resp) protobuf_c_message_free_unpacked(*resp, NULL);
        *resp = NULL;
        return -EIO;
    }
    return 0;
}

static bool vm_here(struct host *h, const char *name)
{
    Godwit__V1__GetVmRequest req = GODWIT__V1__GET_VM_REQUEST__INIT;
    req.name = (char *)name;
    struct gw_grpc_status st;
    ProtobufCMessage *resp = NULL;
    gw_grpc_client_unary(h->c, "/godwit.v1.Godwit/GetVm", &req.base, &godwit__v1__get_vm_response__descriptor, &resp,
                         10000, &st);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return st.code != GW_GRPC_NOT_FOUND;
}

/* Moves vm from a to b and waits until a let it go. Returns the time in ms, or -1. */
/* The children's policy, the same for the baseline and the evacuation: hybrid (pre-copy
 * rounds, then post-copy when not converging); a migration that cannot end fails rather
 * than hangs the run. */
static void child_policy(Godwit__V1__MigrationPolicy *pol)
{
    pol->mode = GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID;
    pol->timeout_s = 120;
}

static int64_t migrate_one(struct host *a, struct host *b, const char *vm)
{
    uint64_t t0 = gw_now_ns();
    Godwit__V1__MigrateVmRequest req = GODWIT__V1__MIGRATE_VM_REQUEST__INIT;
    Godwit__V1__MigrationPolicy pol = GODWIT__V1__MIGRATION_POLICY__INIT;
    child_policy(&pol);
    req.vm = (char *)vm;
    req.destination = b->addr;
    req.policy = &pol;
    ProtobufCMessage *resp;
    if (call(a, "MigrateVm", &req.base, &godwit__v1__migrate_vm_response__descriptor, &resp)) return -1;
    char id[64];
    snprintf(id, sizeof id, "%s", ((Godwit__V1__MigrateVmResponse *)resp)->job->id);
    protobuf_c_message_free_unpacked(resp, NULL);
    for (;;) {
        usleep(20000);
        Godwit__V1__GetJobRequest g = GODWIT__V1__GET_JOB_REQUEST__INIT;
        g.id = id;
        if (call(a, "GetJob", &g.base, &godwit__v1__get_job_response__descriptor, &resp)) return -1;
        int state = ((Godwit__V1__GetJobResponse *)resp)->job->state;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (state == GODWIT__V1__JOB__STATE__FAILED || state == GODWIT__V1__JOB__STATE__CANCELLED) return -1;
        if (state == GODWIT__V1__JOB__STATE__SUCCEEDED && !vm_here(a, vm)) break;
        if (gw_now_ns() - t0 > 300ull * 1000000000) return -1;
    }
    return (int64_t)((gw_now_ns() - t0) / 1000000);
}

int gw_bench_evacuate(int argc, char **argv)
{
    uint64_t nhosts = 3, nvms = 6, cap = 2, link_mib = 32;
    bool json = false;
    static const struct option lo[] = {{"hosts", 1, 0, 'H'}, {"vms", 1, 0, 'v'}, {"cap", 1, 0, 'c'},
                                       {"link-rate", 1, 0, 'l'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0}};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'H': bad = gw_parse_u64(optarg, 3, GW_NETNS_MAX_HOSTS, &nhosts); break;
        case 'l': bad = gw_parse_u64(optarg, 1, 10000, &link_mib); break;
        case 'v': bad = gw_parse_u64(optarg, 1, MAX_VMS, &nvms); break;
        case 'c': bad = gw_parse_u64(optarg, 1, 16, &cap); break;
        case 'j': json = true; break;
        case 'h': printf("usage: godwit-bench evacuate [--hosts 3] [--vms 6] [--cap 2] [--link-rate MiB/s (32)] [--json]\n"
                         "  (root: the hosts run in network namespaces joined by tc-shaped veth links)\n"); return 0;
        default: return 2;
        }
        if (bad) { fprintf(stderr, "godwit-bench evacuate: bad value '%s'\n", optarg); return 2; }
    }
    if (geteuid() != 0) {
        fprintf(stderr, "godwit-bench evacuate: needs root (it makes network namespaces and veth links)\n");
        return 1;
    }
    struct gw_netns_lab lab = {0};
    char lerr[600];
    int lab_r = gw_netns_lab_make(&lab, (unsigned)nhosts, link_mib * MIB, lerr, sizeof lerr);
    if (lab_r) { fprintf(stderr, "godwit-bench evacuate: cannot make the network: %s\n", lerr); return 1; }
    char base[] = "/tmp/godwit-bench-evac.XXXXXX", registry[64];
    if (!mkdtemp(base)) { perror("mkdtemp"); gw_netns_lab_remove(&lab); return 1; }
    snprintf(registry, sizeof registry, "%s/registry", base);
    setenv("GODWIT_LOG", "warn", 0);
    struct host hosts[MAX_HOSTS] = {0};
    char names[MAX_VMS][32];
    const char *status = "fail";
    int64_t sum_single = 0, total_ms = -1;
    unsigned moved = 0, max_conc = 0;
    uint64_t verify = 0;
    double est_err = 0;
    char steps_json[4096] = "", model[256] = "{}";
    size_t sj = 0;
    int rc = 1;
    ProtobufCMessage *resp;
    for (unsigned i = 0; i < nhosts; i++) {
        int r = start_host(&hosts[i], base, registry, (int)i, &lab);
        if (r) { fprintf(stderr, "godwit-bench evacuate: cannot start host %u: %s\n", i, strerror(-r)); goto out; }
    }
    usleep(1500 * 1000);   /* every host has published its record */
    /* Mixed sizes; the last VM dirties 1.5 times faster than its link carries. */
    static const unsigned sizes[] = {64, 96, 128, 160, 192, 256};
    for (unsigned i = 0; i < nvms; i++) {
        Godwit__V1__CreateVmRequest req = GODWIT__V1__CREATE_VM_REQUEST__INIT;
        char guest[96];
        unsigned mib = sizes[i % 6];
        snprintf(names[i], sizeof names[i], "evac-%u", i);
        if (i == nvms - 1)
            snprintf(guest, sizeof guest, "dirtier:ws=%uM,rate=%lluM,pattern=random", mib / 4,
                     (unsigned long long)(link_mib * 3 / 2));
        else snprintf(guest, sizeof guest, "dirtier:ws=%uM,rate=8M", mib / 4);
        req.name = names[i];
        req.memory_bytes = (uint64_t)mib * MIB;
        req.vcpus = 1;
        req.guest = guest;
        req.start = true;
        if (call(&hosts[0], "CreateVm", &req.base, &godwit__v1__create_vm_response__descriptor, &resp)) goto out;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    sleep(1);
    /* 1. One at a time, host 0 -> host 1. */
    for (unsigned i = 0; i < nvms; i++) {
        int64_t ms = migrate_one(&hosts[0], &hosts[1], names[i]);
        if (ms < 0) { fprintf(stderr, "godwit-bench evacuate: single migration of %s failed\n", names[i]); goto out; }
        sum_single += ms;
    }
    usleep(1500 * 1000);   /* host 1's record shows them all */
    /* 2. Evacuate host 1. */
    Godwit__V1__EvacuateHostRequest er = GODWIT__V1__EVACUATE_HOST_REQUEST__INIT;
    Godwit__V1__EvacuationPolicy pol = GODWIT__V1__EVACUATION_POLICY__INIT;
    pol.max_outbound = (uint32_t)cap;
    pol.max_inbound = 1;   /* one migration per link at a time */
    Godwit__V1__MigrationPolicy mig = GODWIT__V1__MIGRATION_POLICY__INIT;
    child_policy(&mig);
    pol.migration = &mig;
    er.policy = &pol;
    uint64_t t0 = gw_now_ns();
    if (call(&hosts[1], "EvacuateHost", &er.base, &godwit__v1__evacuate_host_response__descriptor, &resp)) goto out;
    char id[64];
    snprintf(id, sizeof id, "%s", ((Godwit__V1__EvacuateHostResponse *)resp)->job->id);
    protobuf_c_message_free_unpacked(resp, NULL);
    Godwit__V1__Job *job = NULL;
    for (;;) {
        usleep(20000);
        Godwit__V1__GetJobRequest g = GODWIT__V1__GET_JOB_REQUEST__INIT;
        g.id = id;
        if (call(&hosts[1], "GetJob", &g.base, &godwit__v1__get_job_response__descriptor, &resp)) goto out;
        Godwit__V1__GetJobResponse *gr = (void *)resp;
        if (gr->job->state >= GODWIT__V1__JOB__STATE__SUCCEEDED) {
            total_ms = (int64_t)((gw_now_ns() - t0) / 1000000);
            job = gr->job;
            break;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        if (gw_now_ns() - t0 > 600ull * 1000000000) { fprintf(stderr, "godwit-bench evacuate: timed out\n"); goto out; }
    }
    for (size_t i = 0; i < job->n_steps; i++) {
        const Godwit__V1__EvacuationStep *s = job->steps[i];
        if (s->state != GODWIT__V1__EVACUATION_STEP__STATE__MOVED) {
            fprintf(stderr, "godwit-bench evacuate: %s: %s\n", s->vm, s->error);
            continue;
        }
        moved++;
        unsigned at_once = 0;
        for (size_t k = 0; k < job->n_steps; k++)
            at_once += job->steps[k]->started_unix_ms <= s->started_unix_ms &&
                       s->started_unix_ms < job->steps[k]->finished_unix_ms;
        if (at_once > max_conc) max_conc = at_once;
        if (s->actual_ms) {
            double e = fabs((double)s->estimated_ms - (double)s->actual_ms) / (double)s->actual_ms;
            if (e > est_err) est_err = e;
        }
        /* The child's own figures: how long its post-copy phase ran (hybrid always ends in
         * one; a VM that converged has little left for it). */
        uint64_t pc_ms = 0, rounds = 0;
        Godwit__V1__GetJobRequest g = GODWIT__V1__GET_JOB_REQUEST__INIT;
        g.id = s->job_id;
        ProtobufCMessage *cr;
        if (!call(&hosts[1], "GetJob", &g.base, &godwit__v1__get_job_response__descriptor, &cr)) {
            const Godwit__V1__Job *cj = ((Godwit__V1__GetJobResponse *)cr)->job;
            if (cj->progress) { pc_ms = cj->progress->postcopy_ms; rounds = cj->progress->round; }
            protobuf_c_message_free_unpacked(cr, NULL);
        }
        int w = snprintf(steps_json + sj, sizeof steps_json - sj,
                         "%s{\"vm\":\"%s\",\"memory_mib\":%llu,\"dest\":\"%s\",\"estimated_ms\":%llu,"
                         "\"actual_ms\":%llu,\"rounds\":%llu,\"postcopy_ms\":%llu,\"dirty_bytes_per_s\":%llu}",
                         sj ? "," : "", s->vm, (unsigned long long)(s->memory_bytes >> 20), s->destination_host,
                         (unsigned long long)s->estimated_ms, (unsigned long long)s->actual_ms,
                         (unsigned long long)rounds, (unsigned long long)pc_ms,
                         (unsigned long long)s->dirty_rate_bytes_per_s);
        if (w > 0 && (size_t)w < sizeof steps_json - sj) sj += (size_t)w;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    /* The time model the plan used: host 1 had measured nothing, so it took host 0's fit
     * (the one-at-a-time migrations) from the registry. */
    Godwit__V1__ListHostsRequest hr = GODWIT__V1__LIST_HOSTS_REQUEST__INIT;
    if (!call(&hosts[1], "ListHosts", &hr.base, &godwit__v1__list_hosts_response__descriptor, &resp)) {
        Godwit__V1__ListHostsResponse *l = (void *)resp;
        for (size_t k = 0; k < l->n_hosts; k++)
            if (!strcmp(l->hosts[k]->name, hosts[0].name))
                snprintf(model, sizeof model,
                         "{\"bw_bytes_per_s\":%llu,\"overhead_ms\":%llu,\"link_bytes_per_s\":%llu,\"nonconverging_pct\":%u}",
                         (unsigned long long)l->hosts[k]->migration_bandwidth_bytes_per_s,
                         (unsigned long long)l->hosts[k]->migration_overhead_ms,
                         (unsigned long long)l->hosts[k]->migration_link_bytes_per_s,
                         l->hosts[k]->migration_nonconverging_pct);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    /* Every guest checks its own memory; sum what they found wrong wherever they run now. */
    for (unsigned i = 0; i < nhosts; i++) {
        Godwit__V1__ListVmsRequest lr = GODWIT__V1__LIST_VMS_REQUEST__INIT;
        if (call(&hosts[i], "ListVms", &lr.base, &godwit__v1__list_vms_response__descriptor, &resp)) goto out;
        Godwit__V1__ListVmsResponse *l = (void *)resp;
        for (size_t k = 0; k < l->n_vms; k++)
            if (l->vms[k]->counters) verify += l->vms[k]->counters->verify_errors;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    status = moved == nvms && !verify && max_conc <= cap ? "ok" : "fail";
    rc = !strcmp(status, "ok") ? 0 : 1;
out:
    if (json || rc == 0)
        printf("{\"bench\":\"evacuate\",\"status\":\"%s\",\"hosts\":%llu,\"vms_total\":%llu,\"vms_moved\":%u,"
               "\"guest_verify_errors\":%llu,\"max_concurrent\":%u,\"cap\":%llu,\"total_ms\":%lld,"
               "\"sum_single_ms\":%lld,\"ratio\":%.3f,\"baseline\":\"the same VMs migrated one at a time\","
               "\"estimate_error_max\":%.3f,\"link_rate_bytes_per_s\":%llu,\"network\":\"netns+veth, tc tbf per link\","
               "\"model\":%s,\"steps\":[%s]}\n",
               status, (unsigned long long)nhosts, (unsigned long long)nvms, moved, (unsigned long long)verify, max_conc,
               (unsigned long long)cap, (long long)total_ms, (long long)sum_single,
               sum_single > 0 && total_ms >= 0 ? (double)total_ms / (double)sum_single : 0.0, est_err,
               (unsigned long long)(link_mib * MIB), model, steps_json);
    /* The runners outlive their daemons by design: delete every VM of this run first. */
    for (unsigned i = 0; i < nhosts; i++) {
        if (!hosts[i].c) continue;
        Godwit__V1__ListVmsRequest lr = GODWIT__V1__LIST_VMS_REQUEST__INIT;
        if (call(&hosts[i], "ListVms", &lr.base, &godwit__v1__list_vms_response__descriptor, &resp)) continue;
        Godwit__V1__ListVmsResponse *l = (void *)resp;
        for (size_t k = 0; k < l->n_vms; k++) {
            Godwit__V1__DeleteVmRequest dr = GODWIT__V1__DELETE_VM_REQUEST__INIT;
            ProtobufCMessage *dresp;
            dr.name = l->vms[k]->name;
            dr.force = true;
            if (!call(&hosts[i], "DeleteVm", &dr.base, &godwit__v1__delete_vm_response__descriptor, &dresp))
                protobuf_c_message_free_unpacked(dresp, NULL);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    for (unsigned i = 0; i < nhosts; i++) {
        if (hosts[i].c) gw_grpc_client_close(hosts[i].c);
        if (hosts[i].pid > 0) { kill(hosts[i].pid, SIGTERM); gw_bench_wait(hosts[i].pid); }
    }
    gw_netns_lab_remove(&lab);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0) fprintf(stderr, "godwit-bench evacuate: cannot remove %s\n", base);
    return rc;
}
