/* godwit-vm's backup commands (restore-backup lives in main.c with the other ways to start
 * a VM):
 *
 *   godwit-vm backup --control SOCK --store SPEC [STORE OPTIONS] [--parent ID|none]
 *                    [--method dirty-log|pause] [--json]
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
#include "engine/common/util.h"
#include "engine/runner/cmd_backup.h"
#include "engine/runner/runner_client.h"
#include "storage/manifest.h"
#include "storage/store.h"

enum { EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_BAD = 3 };

struct bopts {
    Godwit__V1__StoreSpec spec;
    const char *control, *vm, *backup, *parent, *method;
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
        {"json", 0, 0, 'j'}, {0},
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
    char a1[4096], a2[4096], a3[4096], a4[4096], a5[4096];
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
                   "\"rounds\":%u,\"memory_digest\":\"%s\",\"method\":\"%s\",\"disk_bytes_read\":%llu,\"disk_source\":\"%s\","
                   "\"chunks_unread\":%llu,\"bytes_read\":%llu",
                   b->id, (unsigned long long)b->memory_bytes, (unsigned long long)b->disk_bytes,
                   (unsigned long long)b->chunks, (unsigned long long)b->new_chunks, (unsigned long long)b->new_bytes,
                   (unsigned long long)b->reused_chunks, (unsigned long long)b->zero_chunks, b->pause_ns / 1e6,
                   b->elapsed_ns / 1e6, b->rounds, b->memory_digest, b->method,
                   (unsigned long long)b->disk_bytes_read, b->disk_source, (unsigned long long)b->chunks_unread,
                   (unsigned long long)b->bytes_read);
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
        int lr = gw_manifest_load(t->store, o->vm, ids[i], &m, err, sizeof err);
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
