/* `godwit migrate VM --to HOST [--wait]` and `godwit job list|show|watch|cancel`, with the
 * live progress display used by `migrate --wait` and `job watch`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "engine/common/util.h"

static const char job_usage[] =
    "usage: godwit job list [--state queued|running|succeeded|failed|cancelled] [--vm NAME]\n"
    "       godwit job show ID\n"
    "       godwit job watch ID      follow a job until it ends (progress bar on a terminal)\n"
    "       godwit job cancel ID\n"
    "       godwit job postcopy ID      (a hybrid migration goes on in post-copy now)\n"
    "       godwit job resume ID [--to HOST:PORT]   (a post-copy paused by a broken link reconnects now,\n"
    "                                        by another path to the destination's migration port)\n"
    "Exit status of watch: 0 succeeded, 1 failed, 8 cancelled.\n";

static const char migrate_usage[] =
    "usage: godwit migrate VM --to HOST:PORT [--wait] [--mode precopy|postcopy|hybrid]\n"
    "                      [--downtime-ms N] [--bandwidth SIZE/s] [--streams N] [--compression none|lz4]\n"
    "                      [--timeout-s N] [--auto-converge] [--max-rounds N]\n"
    "HOST:PORT is the destination godwitd's API address. Prints the job; with --wait follows it\n"
    "and exits 0 when the VM runs on the destination, 1 when the migration failed, 8 when cancelled.\n";

/* How far a job is, 0..1. Until the first estimate of what remains, the bytes sent so far
 * tell; a job that has not completed never shows 100 %. */
static double gw_job_fraction(const Godwit__V1__Job *j)
{
    const Godwit__V1__JobProgress *p = j->progress;
    if (j->state == GODWIT__V1__JOB__STATE__SUCCEEDED) return 1;
    if (!p || !p->total_bytes) return 0;
    double f = p->remaining_bytes ? (double)(p->total_bytes - (p->remaining_bytes < p->total_bytes ? p->remaining_bytes
                                                                                                : p->total_bytes)) /
                                        (double)p->total_bytes
                                  : (double)p->sent_bytes / (double)p->total_bytes;
    return f > 0.99 ? 0.99 : f;
}

const char *gw_job_kind_name(int kind)
{
    switch (kind) {
    case GODWIT__V1__JOB__KIND__MIGRATE: return "migrate";
    case GODWIT__V1__JOB__KIND__BACKUP: return "backup";
    case GODWIT__V1__JOB__KIND__RESTORE: return "restore";
    case GODWIT__V1__JOB__KIND__VERIFY: return "verify";
    case GODWIT__V1__JOB__KIND__EVACUATE: return "evacuate";
    default: return "other";
    }
}

/* Backup, verify and restore figures (zero for migrations). */
static void print_backup_part(const Godwit__V1__Job *j)
{
    const Godwit__V1__JobProgress *p = j->progress;
    const Godwit__V1__BackupJobInfo *b = j->backup;
    if (!b) return;
    char rd[32], wr[32], dd[32];
    printf("target:        %s\n", b->target);
    if (b->backup_id[0]) printf("backup:        %s\n", b->backup_id);
    if (b->new_vm[0]) printf("new vm:        %s%s\n", b->new_vm, b->instant ? " (instant restore)" : "");
    if (b->disk[0]) printf("disk:          %s\n", b->disk);
    if (p) {
        gw_fmt_bytes(p->backup_bytes_read, rd, sizeof rd);
        gw_fmt_bytes(p->backup_bytes_written, wr, sizeof wr);
        gw_fmt_bytes(p->backup_bytes_deduplicated, dd, sizeof dd);
        printf("data:          %s read, %s written, %s deduplicated, %llu of %llu chunks\n", rd, wr, dd,
               (unsigned long long)p->backup_chunks, (unsigned long long)p->backup_chunks_total);
    }
    if (j->kind == GODWIT__V1__JOB__KIND__VERIFY)
        printf("bad:           %llu chunks, %llu manifests\n", (unsigned long long)b->bad_chunks,
               (unsigned long long)b->bad_manifests);
    for (size_t i = 0; i < b->n_bad_chunk_names; i++) printf("bad chunk:     %s\n", b->bad_chunk_names[i]);
    if (b->memory_digest[0]) printf("memory digest: %s\n", b->memory_digest);
}

static void print_job(const Godwit__V1__Job *j)
{
    const Godwit__V1__JobProgress *p = j->progress;
    char created[32], tot[32], sent[32], rate[32];
    gw_fmt_ms_ago(j->created_unix_ms, created, sizeof created);
    printf("id:            %s\n", j->id);
    printf("kind:          %s\n", gw_job_kind_name(j->kind));
    printf("state:         %s\n", gw_job_state_name(j->state));
    printf("vm:            %s\n", j->vm);
    if (j->destination[0]) printf("destination:   %s\n", j->destination);
    printf("created:       %s\n", created);
    if (p) {
        gw_fmt_bytes(p->total_bytes, tot, sizeof tot);
        gw_fmt_bytes(p->sent_bytes, sent, sizeof sent);
        gw_fmt_bytes(p->throughput_bytes_per_s, rate, sizeof rate);
        printf("phase:         %s\n", p->phase[0] ? p->phase : "-");
        printf("progress:      %s of %s sent, round %u, %s/s\n", sent, tot, p->round, rate);
        if (p->measured_downtime_ms || p->total_ms)
            printf("timing:        total %llu ms, setup %llu ms, downtime %llu ms\n", (unsigned long long)p->total_ms,
                   (unsigned long long)p->setup_ms, (unsigned long long)p->measured_downtime_ms);
    }
    print_backup_part(j);
    if (j->error[0]) printf("error:         %s\n", j->error);
    if (j->reason[0]) printf("reason:        %s\n", j->reason);
}

static void print_job_table(Godwit__V1__Job **jobs, size_t n)
{
    printf("%-21s %-8s %-10s %-16s %-22s %-11s %5s %s\n", "ID", "KIND", "STATE", "VM", "DESTINATION", "PHASE", "PCT",
           "ERROR");
    for (size_t i = 0; i < n; i++) {
        const Godwit__V1__Job *j = jobs[i];
        const Godwit__V1__JobProgress *p = j->progress;
        char pct[8] = "-";
        if (p && p->total_bytes) snprintf(pct, sizeof pct, "%.0f%%", 100.0 * gw_job_fraction(j));
        printf("%-21s %-8s %-10s %-16s %-22.22s %-11.11s %5s %.60s\n", j->id,
               gw_job_kind_name(j->kind), gw_job_state_name(j->state), j->vm,
               j->destination, p && p->phase[0] ? p->phase : "-", pct, j->error);
    }
}

static int exit_for_job(const Godwit__V1__Job *j)
{
    switch (j->state) {
    case GODWIT__V1__JOB__STATE__SUCCEEDED: return GW_EXIT_OK;
    case GODWIT__V1__JOB__STATE__CANCELLED: return GW_EXIT_CANCELLED;
    default: return GW_EXIT_FAIL;
    }
}

/* ---- watching --------------------------------------------------------------------------- */

struct watch {
    struct gw_cli *cli;
    bool tty;
    int final_state;
    int last_state;
    char last_phase[32];
    bool drew;            /* a progress line is on screen */
    Godwit__V1__Job *final_job;
};

/* One progress line: bar, percent, bytes, throughput, dirty rate, round, ETA, phase. */
static void draw(struct watch *w, const Godwit__V1__Job *j)
{
    const Godwit__V1__JobProgress *p = j->progress;
    if (!p) return;
    uint64_t total = p->total_bytes, rem = p->remaining_bytes < total ? p->remaining_bytes : total;
    double frac = gw_job_fraction(j);
    char bar[32];
    int fill = (int)(frac * 24 + 0.5);
    for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '-';
    bar[24] = 0;
    char sent[32], tot[32], thr[32], dirty[32], eta[32] = "-";
    if (j->kind != GODWIT__V1__JOB__KIND__MIGRATE && j->backup) {
        /* Backups: read / written / deduplicated, chunks, the runner's ETA. */
        char rd[32], dd[32];
        gw_fmt_bytes(p->backup_bytes_read, rd, sizeof rd);
        gw_fmt_bytes(p->backup_bytes_written, sent, sizeof sent);
        gw_fmt_bytes(p->backup_bytes_deduplicated, dd, sizeof dd);
        gw_fmt_bytes(total, tot, sizeof tot);
        gw_fmt_bytes(p->throughput_bytes_per_s, thr, sizeof thr);
        if (p->eta_ms) snprintf(eta, sizeof eta, "%.0fs", p->eta_ms / 1000.0);
        printf("%s[%s] %3.0f%%  read %s of %s  written %s  dedup %s  chunks %llu/%llu  %s/s  ETA %s  %-8s\033[K",
               w->tty ? "\r" : "", bar, frac * 100, rd, tot, sent, dd, (unsigned long long)p->backup_chunks,
               (unsigned long long)p->backup_chunks_total, thr, eta, p->phase[0] ? p->phase : gw_job_state_name(j->state));
        if (!w->tty) printf("\n");
        fflush(stdout);
        w->drew = w->tty;
        return;
    }
    gw_fmt_bytes(p->sent_bytes, sent, sizeof sent);
    gw_fmt_bytes(total, tot, sizeof tot);
    gw_fmt_bytes(p->throughput_bytes_per_s, thr, sizeof thr);
    gw_fmt_bytes(p->dirty_rate_bytes_per_s, dirty, sizeof dirty);
    if (p->throughput_bytes_per_s > p->dirty_rate_bytes_per_s && rem)
        snprintf(eta, sizeof eta, "%.0fs", (double)rem / (double)(p->throughput_bytes_per_s - p->dirty_rate_bytes_per_s));
    printf("%s[%s] %3.0f%%  %s/%s  %s/s  dirty %s/s  round %u  ETA %s  %-10s\033[K",
           w->tty ? "\r" : "", bar, frac * 100, sent, tot, thr, dirty, p->round, eta,
           p->phase[0] ? p->phase : gw_job_state_name(j->state));
    if (!w->tty) printf("\n");
    fflush(stdout);
    w->drew = w->tty;
}

static int on_event(void *arg, const ProtobufCMessage *msg)
{
    struct watch *w = arg;
    const Godwit__V1__JobEvent *ev = (const void *)msg;
    const Godwit__V1__Job *j = ev->job;
    if (!j) return 0;
    if (w->cli->json) {
        gw_cli_print_json(msg);
    } else if (w->tty) {
        draw(w, j);
    } else if ((int)j->state != w->last_state || strcmp(w->last_phase, j->progress ? j->progress->phase : "")) {
        /* Not a terminal: one line per state or phase change keeps logs readable. */
        printf("%s %s%s%s\n", gw_job_state_name(j->state), j->progress ? j->progress->phase : "",
               ev->message[0] ? ": " : "", ev->message);
        fflush(stdout);
    }
    w->last_state = j->state;
    snprintf(w->last_phase, sizeof w->last_phase, "%s", j->progress ? j->progress->phase : "");
    if (j->state == GODWIT__V1__JOB__STATE__SUCCEEDED || j->state == GODWIT__V1__JOB__STATE__FAILED ||
        j->state == GODWIT__V1__JOB__STATE__CANCELLED) {
        w->final_state = j->state;
        if (!w->final_job) {
            /* Keep a copy for the summary: msg is freed after we return. */
            size_t len = protobuf_c_message_get_packed_size(&j->base);
            uint8_t *buf = malloc(len ? len : 1);
            if (buf) {
                protobuf_c_message_pack(&j->base, buf);
                w->final_job = godwit__v1__job__unpack(NULL, len, buf);
                free(buf);
            }
        }
    }
    return 0;
}

int gw_cli_watch_job(struct gw_cli *cli, const char *id)
{
    int e = gw_cli_connect(cli);
    if (e) return e;
    Godwit__V1__WatchJobRequest req = GODWIT__V1__WATCH_JOB_REQUEST__INIT;
    req.id = (char *)id;
    struct watch w = {.cli = cli, .tty = isatty(STDOUT_FILENO) && !cli->json, .last_state = -1};
    struct gw_grpc_status st;
    gw_grpc_client_stream(cli->client, "/godwit.v1.Godwit/WatchJob", &req.base, &godwit__v1__job_event__descriptor,
                          on_event, &w, 0, &st);
    if (w.drew) printf("\n");
    int code;
    if (st.code != GW_GRPC_OK) {
        fprintf(stderr, "godwit: WatchJob: %s%s%s\n", gw_grpc_code_name(st.code), st.message[0] ? ": " : "", st.message);
        code = gw_cli_exit_for(st.code);
    } else if (!w.final_job) {
        fprintf(stderr, "godwit: the job stream ended before the job did\n");
        code = GW_EXIT_FAIL;
    } else {
        const Godwit__V1__Job *j = w.final_job;
        if (!cli->json) {
            const Godwit__V1__JobProgress *p = j->progress;
            printf("job %s %s", j->id, gw_job_state_name(j->state));
            if (p && j->state == GODWIT__V1__JOB__STATE__SUCCEEDED && j->backup && j->backup->backup_id[0])
                printf(" in %llu ms (backup %s%s%s)", (unsigned long long)p->total_ms, j->backup->backup_id,
                       j->backup->new_vm[0] ? ", now VM " : "", j->backup->new_vm);
            else if (p && j->state == GODWIT__V1__JOB__STATE__SUCCEEDED)
                printf(" in %llu ms (downtime %llu ms, %u rounds)", (unsigned long long)p->total_ms,
                       (unsigned long long)p->measured_downtime_ms, p->round);
            if (j->error[0]) printf(": %s", j->error);
            printf("\n");
        }
        code = exit_for_job(j);
    }
    if (w.final_job) godwit__v1__job__free_unpacked(w.final_job, NULL);
    return code;
}

/* ---- commands ----------------------------------------------------------------------------- */

static int parse_mode(const char *s)
{
    if (!strcmp(s, "precopy")) return GODWIT__V1__MIGRATION_POLICY__MODE__PRECOPY;
    if (!strcmp(s, "postcopy")) return GODWIT__V1__MIGRATION_POLICY__MODE__POSTCOPY;
    if (!strcmp(s, "hybrid")) return GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID;
    return -1;
}

int gw_cmd_migrate(struct gw_cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"to", 1, 0, 't'}, {"wait", 0, 0, 'w'}, {"mode", 1, 0, 'm'}, {"downtime-ms", 1, 0, 'd'},
        {"bandwidth", 1, 0, 'b'}, {"streams", 1, 0, 's'}, {"compression", 1, 0, 'c'}, {"timeout-s", 1, 0, 'T'},
        {"auto-converge", 0, 0, 'a'}, {"max-rounds", 1, 0, 'r'}, {"help", 0, 0, 'h'}, {0}};
    Godwit__V1__MigrateVmRequest req = GODWIT__V1__MIGRATE_VM_REQUEST__INIT;
    Godwit__V1__MigrationPolicy pol = GODWIT__V1__MIGRATION_POLICY__INIT;
    bool wait = false;
    uint64_t v;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 't': req.destination = optarg; break;
        case 'w': wait = true; break;
        case 'm': { int m = parse_mode(optarg); if (m < 0) goto bad; pol.mode = m; break; }
        case 'd': if (gw_parse_u64(optarg, 1, 3600000, &v)) goto bad; pol.downtime_limit_ms = (uint32_t)v; break;
        case 'b': {
            char tmp[64];
            snprintf(tmp, sizeof tmp, "%s", optarg);
            char *slash = strstr(tmp, "/s");
            if (slash) *slash = 0;
            if (gw_parse_size(tmp, &pol.bandwidth_limit_bytes_per_s)) goto bad;
            break;
        }
        case 's': if (gw_parse_u64(optarg, 1, 64, &v)) goto bad; pol.streams = (uint32_t)v; break;
        case 'c':
            if (!strcmp(optarg, "none")) pol.compression = GODWIT__V1__MIGRATION_POLICY__COMPRESSION__NONE;
            else if (!strcmp(optarg, "lz4")) pol.compression = GODWIT__V1__MIGRATION_POLICY__COMPRESSION__LZ4;
            else goto bad;
            break;
        case 'T': if (gw_parse_u64(optarg, 1, 86400 * 7, &v)) goto bad; pol.timeout_s = (uint32_t)v; break;
        case 'a': pol.auto_converge = true; break;
        case 'r': if (gw_parse_u64(optarg, 1, 1000000, &v)) goto bad; pol.max_rounds = (uint32_t)v; break;
        case 'h': fputs(migrate_usage, stdout); return GW_EXIT_OK;
        default: fputs(migrate_usage, stderr); return GW_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc || !req.destination) { fputs(migrate_usage, stderr); return GW_EXIT_USAGE; }
    req.vm = argv[optind];
    req.policy = &pol;
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "MigrateVm", &req.base, &godwit__v1__migrate_vm_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__Job *j = ((const Godwit__V1__MigrateVmResponse *)resp)->job;
    char id[64];
    snprintf(id, sizeof id, "%s", j ? j->id : "");
    if (cli->json && !wait) gw_cli_print_json(resp);
    else if (!cli->json) printf("job %s: migrating %s to %s\n", id, req.vm, req.destination);
    protobuf_c_message_free_unpacked(resp, NULL);
    return wait ? gw_cli_watch_job(cli, id) : GW_EXIT_OK;
bad:
    fprintf(stderr, "godwit migrate: bad value '%s'\n", optarg);
    return GW_EXIT_USAGE;
}

static int job_list(struct gw_cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {{"state", 1, 0, 's'}, {"vm", 1, 0, 'v'}, {"help", 0, 0, 'h'}, {0}};
    Godwit__V1__ListJobsRequest req = GODWIT__V1__LIST_JOBS_REQUEST__INIT;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's': {
            int s = gw_parse_job_state(optarg);
            if (s < 0) { fprintf(stderr, "godwit job list: unknown state '%s'\n", optarg); return GW_EXIT_USAGE; }
            req.state = s;
            break;
        }
        case 'v': req.vm = optarg; break;
        case 'h': fputs(job_usage, stdout); return GW_EXIT_OK;
        default: fputs(job_usage, stderr); return GW_EXIT_USAGE;
        }
    }
    if (optind != argc) { fputs(job_usage, stderr); return GW_EXIT_USAGE; }
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "ListJobs", &req.base, &godwit__v1__list_jobs_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__ListJobsResponse *r = (const void *)resp;
    if (cli->json) gw_cli_print_json(resp);
    else print_job_table(r->jobs, r->n_jobs);
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

static int job_named(struct gw_cli *cli, const char *verb, int argc, char **argv)
{
    static const struct option lo[] = {{"help", 0, 0, 'h'}, {"to", 1, 0, 't'}, {0}};
    const char *to = "";
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c == 'h') { fputs(job_usage, stdout); return GW_EXIT_OK; }
        if (c == 't' && !strcmp(verb, "resume")) { to = optarg; continue; }
        fputs(job_usage, stderr);
        return GW_EXIT_USAGE;
    }
    if (optind + 1 != argc) { fputs(job_usage, stderr); return GW_EXIT_USAGE; }
    char *id = argv[optind];
    if (!strcmp(verb, "watch")) return gw_cli_watch_job(cli, id);
    ProtobufCMessage *resp;
    int e;
    if (!strcmp(verb, "show")) {
        Godwit__V1__GetJobRequest req = GODWIT__V1__GET_JOB_REQUEST__INIT;
        req.id = id;
        e = gw_cli_call(cli, "GetJob", &req.base, &godwit__v1__get_job_response__descriptor, &resp);
    } else if (!strcmp(verb, "resume")) {
        Godwit__V1__ResumeMigrationRequest req = GODWIT__V1__RESUME_MIGRATION_REQUEST__INIT;
        req.id = id;
        req.destination = (char *)to;
        e = gw_cli_call(cli, "ResumeMigration", &req.base, &godwit__v1__resume_migration_response__descriptor, &resp);
    } else if (!strcmp(verb, "postcopy")) {
        Godwit__V1__SwitchToPostcopyRequest req = GODWIT__V1__SWITCH_TO_POSTCOPY_REQUEST__INIT;
        req.id = id;
        e = gw_cli_call(cli, "SwitchToPostcopy", &req.base, &godwit__v1__switch_to_postcopy_response__descriptor, &resp);
    } else {
        Godwit__V1__CancelJobRequest req = GODWIT__V1__CANCEL_JOB_REQUEST__INIT;
        req.id = id;
        e = gw_cli_call(cli, "CancelJob", &req.base, &godwit__v1__cancel_job_response__descriptor, &resp);
    }
    if (e) return e;
    const Godwit__V1__Job *j = ((const Godwit__V1__GetJobResponse *)resp)->job;
    if (cli->json) gw_cli_print_json(resp);
    else if (j && !strcmp(verb, "show")) print_job(j);
    else if (j) printf("job %s: %s (%s requested)\n", j->id, gw_job_state_name(j->state),
                       !strcmp(verb, "postcopy") ? "switch to post-copy" : !strcmp(verb, "resume") ? "resume" : "cancel");
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

int gw_cmd_job(struct gw_cli *cli, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(job_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? GW_EXIT_USAGE : GW_EXIT_OK;
    }
    const char *verb = argv[1];
    argc--, argv++;
    optind = 0;
    if (!strcmp(verb, "list") || !strcmp(verb, "ls")) return job_list(cli, argc, argv);
    if (!strcmp(verb, "show") || !strcmp(verb, "watch") || !strcmp(verb, "cancel") || !strcmp(verb, "postcopy") ||
        !strcmp(verb, "resume"))
        return job_named(cli, verb, argc, argv);
    fprintf(stderr, "godwit job: unknown command '%s'\n%s", verb, job_usage);
    return GW_EXIT_USAGE;
}
