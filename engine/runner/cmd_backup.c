/* godwit-vm's backup commands (restore-backup lives in main.c with the other ways to start
 * a VM):
 *
 *   godwit-vm backup --control SOCK --store SPEC [STORE OPTIONS] [--parent ID|none]
 *                    [--method dirty-log|pause] [--fleece-limit SIZE] [--side-limit SIZE] [--json]
 *                    [--throttle adaptive|fixed|off] [--rate SIZE] [--ops N]
 *                    [--host-throttle FILE --host-rate SIZE --host-ops N] [--watch-vm SOCK]...
 *                    [--cpu-priority idle|batch|batch:N|nice:N|normal] [--vm-latency-target PCT]
 *                    [--test-store-delay US:MS]   (GODWIT_TEST_HOOKS builds)
 *   godwit-vm verify-backup --store SPEC [STORE OPTIONS] --vm NAME [--backup ID] [--json]
 *   godwit-vm list-backups --store SPEC [STORE OPTIONS] --vm NAME [--json]
 *   godwit-vm delete-backup --store SPEC [STORE OPTIONS] --vm NAME --backup ID
 *
 * STORE OPTIONS: --ceph-conf FILE --ceph-id ID --keyring FILE --key-file FILE
 *                --osd-timeout SECONDS --inflight N
 * SPEC: dir:PATH or rados:POOL[/NAMESPACE]. Exit codes as main.c: 0, 1 failed, 2 usage,
 * 3 verify found bad chunks. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "engine/common/json.h"
#include "engine/common/limits.h"
#include "engine/common/util.h"
#include "engine/runner/cmd_backup.h"
#include "engine/runner/runner_client.h"
#include "storage/manifest.h"
#include "storage/store.h"

enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_BAD = 3 };

struct bopts {
    Godwit__V1__StoreSpec spec;
    const char *control, *vm, *backup, *parent, *method;
    uint64_t fleece_limit, side_limit, rate, ops, host_rate, host_ops, delay_us, delay_ms, vm_lat_pct;
    const char *throttle, *host_throttle, *cpu_priority;
    char *watch[8];
    size_t nwatch;
    bool json;
};

int gw_backup_store_opt(const char *name, const char *val, Godwit__V1__StoreSpec *spec)
{
    uint64_t v;
    if (!strcmp(name, "store")) spec->target = (char *)val;
    else if (!strcmp(name, "ceph-conf")) spec->ceph_conf = (char *)val;
    else if (!strcmp(name, "ceph-id")) spec->ceph_id = (char *)val;
    else if (!strcmp(name, "keyring")) spec->keyring = (char *)val;
    else if (!strcmp(name, "key-file")) spec->key_file = (char *)val;
    else if (!strcmp(name, "osd-timeout")) {
        if (gw_parse_u64(val, 1, 3600, &v)) { fprintf(stderr, "godwit-vm: --osd-timeout is 1..3600 seconds\n"); return -1; }
        spec->osd_op_timeout_s = (uint32_t)v;
    } else if (!strcmp(name, "inflight")) {
        if (gw_parse_u64(val, 1, GW_STORE_MAX_INFLIGHT, &v)) { fprintf(stderr, "godwit-vm: --inflight is 1..%u\n", GW_STORE_MAX_INFLIGHT); return -1; }
        spec->max_inflight = (uint32_t)v;
    } else return 1;
    return 0;
}

static int parse(int argc, char **argv, struct bopts *o)
{
    static const struct option lo[] = {
        {"store", 1, 0, 0}, {"ceph-conf", 1, 0, 0}, {"ceph-id", 1, 0, 0}, {"keyring", 1, 0, 0},
        {"key-file", 1, 0, 0}, {"osd-timeout", 1, 0, 0}, {"inflight", 1, 0, 0}, {"control", 1, 0, 'C'},
        {"vm", 1, 0, 'v'}, {"backup", 1, 0, 'b'}, {"parent", 1, 0, 'p'}, {"method", 1, 0, 'M'},
        {"json", 0, 0, 'j'}, {"fleece-limit", 1, 0, 'F'}, {"side-limit", 1, 0, 'S'},
        {"throttle", 1, 0, 'T'}, {"rate", 1, 0, 'R'}, {"ops", 1, 0, 'O'}, {"host-throttle", 1, 0, 'H'},
        {"host-rate", 1, 0, 'r'}, {"host-ops", 1, 0, 'o'}, {"test-store-delay", 1, 0, 'D'},
        {"watch-vm", 1, 0, 'W'}, {"cpu-priority", 1, 0, 'P'},
        {"vm-latency-target", 1, 0, 'L'}, {0},
    };
    memset(o, 0, sizeof *o);
    godwit__v1__store_spec__init(&o->spec);
    int c, idx;
    while ((c = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        switch (c) {
        case 0: if (gw_backup_store_opt(lo[idx].name, optarg, &o->spec)) return -1; break;
        case 'C': o->control = optarg; break;
        case 'v': o->vm = optarg; break;
        case 'b': o->backup = optarg; break;
        case 'p': o->parent = optarg; break;
        case 'M': o->method = optarg; break;
        case 'j': o->json = true; break;
        case 'F':
            if (gw_parse_size(optarg, &o->fleece_limit) || o->fleece_limit < GW_LIMIT_FLEECE_MIN ||
                o->fleece_limit > GW_LIMIT_FLEECE_MAX) {
                fprintf(stderr, "godwit-vm: --fleece-limit is %llu K..%llu G\n", GW_LIMIT_FLEECE_MIN >> 10,
                        GW_LIMIT_FLEECE_MAX >> 30);
                return -1;
            }
            break;
        case 'S':
            if (gw_parse_size(optarg, &o->side_limit) || o->side_limit < GW_LIMIT_SIDE_MIN || o->side_limit > GW_LIMIT_SIDE_MAX) {
                fprintf(stderr, "godwit-vm: --side-limit is %llu M..%llu G\n", GW_LIMIT_SIDE_MIN >> 20, GW_LIMIT_SIDE_MAX >> 30);
                return -1;
            }
            break;
        case 'T': o->throttle = optarg; break;
        case 'P': o->cpu_priority = optarg; break;
        case 'L':
            if (gw_parse_u64(optarg, GW_LIMIT_VM_LAT_PCT_MIN, GW_LIMIT_VM_LAT_PCT_MAX, &o->vm_lat_pct)) {
                fprintf(stderr, "godwit-vm: --vm-latency-target is %u..%u (percent of the VM's p99 before the backup)\n",
                        GW_LIMIT_VM_LAT_PCT_MIN, GW_LIMIT_VM_LAT_PCT_MAX);
                return -1;
            }
            break;
        case 'H': o->host_throttle = optarg; break;
        case 'W':
            if (o->nwatch == 8) { fprintf(stderr, "godwit-vm: at most 8 --watch-vm\n"); return -1; }
            o->watch[o->nwatch++] = optarg;
            break;
        case 'R': case 'r':
            if (gw_parse_size(optarg, c == 'R' ? &o->rate : &o->host_rate)) {
                fprintf(stderr, "godwit-vm: --%s is a size per second (e.g. 100M)\n", c == 'R' ? "rate" : "host-rate");
                return -1;
            }
            break;
        case 'O': case 'o':
            if (gw_parse_u64(optarg, 1, 1000000, c == 'O' ? &o->ops : &o->host_ops)) {
                fprintf(stderr, "godwit-vm: --%s is 1..1000000 writes per second\n", c == 'O' ? "ops" : "host-ops");
                return -1;
            }
            break;
        case 'D':
            if (sscanf(optarg, "%llu:%llu", (unsigned long long *)&o->delay_us, (unsigned long long *)&o->delay_ms) != 2) {
                fprintf(stderr, "godwit-vm: --test-store-delay is US:MS\n");
                return -1;
            }
            break;
        default: return -1;
        }
    }
    if (optind < argc) { fprintf(stderr, "godwit-vm: unexpected '%s'\n", argv[optind]); return -1; }
    if (!o->spec.target || !*o->spec.target) { fprintf(stderr, "godwit-vm: name a store with --store dir:PATH|rados:POOL[/NS]\n"); return -1; }
    return 0;
}

/* Paths handed to a runner must not depend on our working directory. */
static char *absolute(const char *p, char *buf, size_t cap)
{
    if (!p || !*p || p[0] == '/') return (char *)p;
    char cwd[2048];
    if (!getcwd(cwd, sizeof cwd) || (size_t)snprintf(buf, cap, "%s/%s", cwd, p) >= cap) return (char *)p;
    return buf;
}

static int cmd_backup(struct bopts *o)
{
    if (!o->control) { fprintf(stderr, "godwit-vm: backup needs --control SOCK\n"); return EXIT_USAGE; }
    char a1[4096], a2[4096], a3[4096], a4[4096], a6[4096];
    char a5[4096 + 8];   /* "dir:" and an absolute path of up to 4095 bytes */
    if (!strncmp(o->spec.target, "dir:", 4) && o->spec.target[4] != '/') {
        snprintf(a5, sizeof a5, "dir:%s", absolute(o->spec.target + 4, a1, sizeof a1));
        o->spec.target = a5;
    }
    o->spec.ceph_conf = absolute(o->spec.ceph_conf, a2, sizeof a2);
    o->spec.keyring = absolute(o->spec.keyring, a3, sizeof a3);
    o->spec.key_file = absolute(o->spec.key_file, a4, sizeof a4);
    Godwit__V1__RunnerBackupRequest br = GODWIT__V1__RUNNER_BACKUP_REQUEST__INIT;
    br.store = &o->spec;
    br.parent = (char *)(o->parent ? o->parent : "");
    br.method = (char *)(o->method ? o->method : "");
    br.fleece_limit = o->fleece_limit;
    br.side_limit = o->side_limit;
    br.throttle = (char *)(o->throttle ? o->throttle : "");
    br.cpu_priority = (char *)(o->cpu_priority ? o->cpu_priority : "");
    br.vm_latency_target_pct = (uint32_t)o->vm_lat_pct;
    br.rate = o->rate;
    br.ops = o->ops;
    br.host_throttle_path = absolute(o->host_throttle, a6, sizeof a6);
    if (!br.host_throttle_path) br.host_throttle_path = "";
    br.host_rate = o->host_rate;
    br.host_ops = o->host_ops;
    br.test_store_delay_us = o->delay_us;
    br.test_store_delay_ms = o->delay_ms;
    char wabs[8][4096];
    for (size_t k = 0; k < o->nwatch; k++) o->watch[k] = absolute(o->watch[k], wabs[k], sizeof wabs[k]);
    br.watch_controls = o->watch;
    br.n_watch_controls = o->nwatch;
    Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
    req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_BACKUP;
    req.backup = &br;
    Godwit__V1__RunnerReply *rep = NULL;
    int r = gw_runner_call(o->control, &req, &rep, 3600 * 1000);
    if (r) { fprintf(stderr, "godwit-vm: runner at %s: %s\n", o->control, strerror(-r)); return EXIT_FAILED; }
    const Godwit__V1__RunnerBackupResult *b = rep->backup;
    if (o->json) {
        printf("{\"ok\":%s,\"error\":", rep->ok ? "true" : "false");
        gw_json_str(stdout, rep->error);
        if (b)
            printf(",\"id\":\"%s\",\"memory_bytes\":%llu,\"disk_bytes\":%llu,\"chunks\":%llu,\"new_chunks\":%llu,"
                   "\"new_bytes\":%llu,\"reused_chunks\":%llu,\"zero_chunks\":%llu,\"pause_ms\":%.3f,\"elapsed_ms\":%.1f,"
                   "\"rounds\":%u,\"memory_digest\":\"%s\",\"method\":\"%s\",\"fleece_bytes\":%llu,\"fleece_blocks\":%llu,"
                   "\"disk_read_bytes\":%llu,\"guest_write_wait_max_us\":%.1f,\"throttle\":\"%s\",\"throttle_bytes\":%llu,"
                   "\"throttle_elapsed_ms\":%.1f,\"throttle_wait_ms\":%.1f,\"throttle_backoffs\":%llu,\"throttle_min_mib_s\":%.2f,"
                   "\"throttle_end_mib_s\":%.2f,\"disk_source\":\"%s\",\"disk_snap_ms\":%.3f,\"chunks_unread\":%llu,\"bytes_read\":%llu,"
                   "\"patched_chunks\":%llu,\"patched_bytes\":%llu,\"layered_chunks\":%llu,\"wp_faults\":%llu,"
                   "\"wp_pages_copied\":%llu,\"cpu_priority\":\"%s\",\"throttle_vm_target_pct\":%u,\"throttle_vm_base_us\":%llu,"
                   "\"throttle_vm_base_windows\":%u,\"throttle_vm_base_from_history\":%s,\"wp_side_limit\":%llu,"
                   "\"wp_side_peak_bytes\":%llu,\"throttle_why\":",
                   b->id, (unsigned long long)b->memory_bytes, (unsigned long long)b->disk_bytes,
                   (unsigned long long)b->chunks, (unsigned long long)b->new_chunks, (unsigned long long)b->new_bytes,
                   (unsigned long long)b->reused_chunks, (unsigned long long)b->zero_chunks, b->pause_ns / 1e6,
                   b->elapsed_ns / 1e6, b->rounds, b->memory_digest, b->method, (unsigned long long)b->fleece_bytes,
                   (unsigned long long)b->fleece_blocks, (unsigned long long)b->disk_read_bytes,
                   b->guest_write_wait_max_ns / 1e3, b->throttle, (unsigned long long)b->throttle_bytes,
                   b->throttle_elapsed_ns / 1e6, b->throttle_wait_ns / 1e6, (unsigned long long)b->throttle_backoffs,
                   b->throttle_min_rate / 1048576.0, b->throttle_end_rate / 1048576.0, b->disk_source, b->disk_snap_ns / 1e6,
                   (unsigned long long)b->chunks_unread, (unsigned long long)b->bytes_read,
                   (unsigned long long)b->patched_chunks, (unsigned long long)b->patched_bytes,
                   (unsigned long long)b->layered_chunks, (unsigned long long)b->wp_faults,
                   (unsigned long long)b->wp_pages_copied, b->cpu_priority, b->throttle_vm_target_pct,
                   (unsigned long long)b->throttle_vm_base_us, b->throttle_vm_base_windows,
                   b->throttle_vm_base_from_history ? "true" : "false", (unsigned long long)b->wp_side_limit,
                   (unsigned long long)b->wp_side_peak_bytes);
        if (b) gw_json_str(stdout, b->throttle_why);
        printf("}\n");
    } else if (!rep->ok) {
        fprintf(stderr, "godwit-vm: backup failed: %s\n", rep->error);
    } else if (b) {
        printf("backup %s: %llu chunks, %llu new (%llu KiB written), %llu reused, pause %.2f ms, %.0f ms\n", b->id,
               (unsigned long long)b->chunks, (unsigned long long)b->new_chunks, (unsigned long long)(b->new_bytes >> 10),
               (unsigned long long)b->reused_chunks, b->pause_ns / 1e6, b->elapsed_ns / 1e6);
    }
    int code = rep->ok ? 0 : EXIT_FAILED;
    godwit__v1__runner_reply__free_unpacked(rep, NULL);
    return code;
}

struct report_ctx {
    bool json;
    unsigned n;
};

static void report(void *ctx, const char *chunk, const char *reason, const char *const *backups, size_t nb)
{
    struct report_ctx *c = ctx;
    if (c->json) {
        printf("%s{\"chunk\":\"%s\",\"reason\":", c->n ? "," : "", chunk);
        gw_json_str(stdout, reason);
        printf(",\"backups\":[");
        for (size_t i = 0; i < nb; i++) printf("%s\"%s\"", i ? "," : "", backups[i]);
        printf("]}");
    } else {
        fprintf(stderr, "bad chunk %s: %s; used by", *chunk ? chunk : "(manifest)", reason);
        for (size_t i = 0; i < nb; i++) fprintf(stderr, " %s", backups[i]);
        fprintf(stderr, "\n");
    }
    c->n++;
}

static int cmd_verify(struct gw_backup_target *t, const struct bopts *o)
{
    struct report_ctx rc = {.json = o->json};
    struct gw_verify_stats st;
    char err[512] = "";
    if (o->json) printf("{\"bad\":[");
    int r = gw_backup_verify(t, o->vm, o->backup, report, &rc, &st, err, sizeof err);
    double s = st.elapsed_ns / 1e9;
    double mib_s = s > 0 ? (st.bytes_read / 1048576.0) / s : 0;
    if (o->json) {
        printf("],\"ok\":%s,\"error\":", r ? "false" : "true");
        gw_json_str(stdout, err);
        printf(",\"backups\":%llu,\"chunks\":%llu,\"unique_chunks\":%llu,\"bytes_read\":%llu,\"bad_chunks\":%llu,"
               "\"bad_manifests\":%llu,\"verify_ms\":%.1f,\"verify_mib_s\":%.1f}\n",
               (unsigned long long)st.backups, (unsigned long long)st.chunks, (unsigned long long)st.unique_chunks,
               (unsigned long long)st.bytes_read, (unsigned long long)st.bad_chunks, (unsigned long long)st.bad_manifests,
               s * 1000, mib_s);
    } else if (r) {
        fprintf(stderr, "godwit-vm: verify failed: %s\n", err);
    } else {
        printf("verified %llu backups: %llu chunks (%llu unique, %llu MiB) at %.0f MiB/s, %llu bad chunks, %llu bad manifests\n",
               (unsigned long long)st.backups, (unsigned long long)st.chunks, (unsigned long long)st.unique_chunks,
               (unsigned long long)(st.bytes_read >> 20), mib_s, (unsigned long long)st.bad_chunks,
               (unsigned long long)st.bad_manifests);
    }
    if (r) return EXIT_FAILED;
    return st.bad_chunks || st.bad_manifests ? EXIT_BAD : 0;
}

static int cmd_list(struct gw_backup_target *t, const struct bopts *o)
{
    char (*ids)[GW_BACKUP_ID_BUF];
    size_t n;
    int r = gw_backup_list(t, o->vm, &ids, &n);
    if (r) { fprintf(stderr, "godwit-vm: %s\n", gw_store_error(t->store)); return EXIT_FAILED; }
    if (o->json) printf("{\"backups\":[");
    for (size_t i = 0; i < n; i++) {
        Godwit__V1__BackupManifest *m = NULL;
        char err[512];
        int lr = gw_manifest_load(t->store, &t->keys, o->vm, ids[i], &m, err, sizeof err);
        if (o->json) {
            printf("%s{\"id\":\"%s\"", i ? "," : "", ids[i]);
            if (lr) { printf(",\"error\":"); gw_json_str(stdout, err); }
            else printf(",\"parent\":\"%s\",\"memory_bytes\":%llu,\"disk_bytes\":%llu,\"new_bytes\":%llu,\"created_unix_ns\":%llu,"
                        "\"method\":\"%s\",\"encrypted\":%s", m->parent, (unsigned long long)m->memory->size,
                        (unsigned long long)m->disk->size, (unsigned long long)m->new_bytes,
                        (unsigned long long)m->created_unix_ns, m->method, m->encrypted ? "true" : "false");
            printf("}");
        } else if (lr) {
            printf("%s  (unreadable: %s)\n", ids[i], err);
        } else {
            printf("%s  memory %llu MiB  disk %llu MiB  new %llu KiB  parent %s\n", ids[i],
                   (unsigned long long)(m->memory->size >> 20), (unsigned long long)(m->disk->size >> 20),
                   (unsigned long long)(m->new_bytes >> 10), m->parent[0] ? m->parent : "-");
        }
        if (m) godwit__v1__backup_manifest__free_unpacked(m, NULL);
    }
    if (o->json) printf("]}\n");
    free(ids);
    return 0;
}

int gw_runner_cmd_backup(const char *verb, int argc, char **argv)
{
    struct bopts o;
    if (parse(argc, argv, &o)) return EXIT_USAGE;
    if (!strcmp(verb, "backup")) return cmd_backup(&o);
    if (!o.vm) { fprintf(stderr, "godwit-vm: %s needs --vm NAME\n", verb); return EXIT_USAGE; }
    if (!strcmp(verb, "delete-backup") && !o.backup) { fprintf(stderr, "godwit-vm: delete-backup needs --backup ID\n"); return EXIT_USAGE; }
    struct gw_backup_target t;
    char err[512];
    if (gw_backup_target_open(&o.spec, &t, err, sizeof err)) { fprintf(stderr, "godwit-vm: %s\n", err); return EXIT_FAILED; }
    int code;
    if (!strcmp(verb, "verify-backup")) code = cmd_verify(&t, &o);
    else if (!strcmp(verb, "list-backups")) code = cmd_list(&t, &o);
    else {
        code = gw_backup_delete(&t, o.vm, o.backup, err, sizeof err) ? EXIT_FAILED : 0;
        if (code) fprintf(stderr, "godwit-vm: %s\n", err);
    }
    gw_backup_target_close(&t);
    return code;
}

bool gw_runner_is_backup_verb(const char *verb)
{
    return !strcmp(verb, "backup") || !strcmp(verb, "verify-backup") || !strcmp(verb, "list-backups") ||
           !strcmp(verb, "delete-backup");
}
