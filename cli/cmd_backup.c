/* `godwit backup create|list|show|verify|restore|delete|targets` on godwit.v1.GodwitBackup
 * (proto/godwit/v1/backup_api.proto). create, verify and restore start jobs; with --watch
 * they follow the job as `godwit job watch` does and exit with its outcome. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "engine/common/util.h"
#include "godwit/v1/backup_api.pb-c.h"

static const char backup_usage[] =
    "usage: godwit backup create VM --target NAME [--parent ID|none] [--method wp|dirty-log|pause]\n"
    "                            [--request-id ID] [--watch]\n"
    "       godwit backup list VM --target NAME\n"
    "       godwit backup show VM --target NAME [--id ID]         (the newest without --id)\n"
    "       godwit backup verify VM --target NAME [--id ID] [--watch]   (every backup without --id)\n"
    "       godwit backup restore VM --target NAME [--id ID] [--name NEW] [--restart never|on-crash|always]\n"
    "                             [--instant] [--disk-pool POOL] [--watch]\n"
    "                             (a new VM on this host; under a NEW name a clone. --instant: it runs at\n"
    "                             once while its memory and disk fill from the backup; the job ends when\n"
    "                             the fill does. A disk goes to NEW.img in the host's first image root,\n"
    "                             or to the RBD image POOL/NEW with --disk-pool)\n"
    "       godwit backup delete VM --target NAME --id ID\n"
    "       godwit backup targets                  the targets godwitd's config names\n"
    "       godwit backup policy set|list|show|delete ...   schedules (godwit backup policy help)\n"
    "Targets are names from godwitd's config ([backup_target NAME]). --watch exits 0 when the job\n"
    "succeeded, 1 when it failed (a verify that found bad chunks), 8 when cancelled.\n";

struct bargs {
    const char *vm, *target, *id, *parent, *method, *name, *request_id, *disk_pool;
    int restart;
    bool watch, instant;
};

static int parse(int argc, char **argv, struct bargs *a)
{
    static const struct option lo[] = {
        {"target", 1, 0, 't'}, {"id", 1, 0, 'i'}, {"parent", 1, 0, 'p'}, {"method", 1, 0, 'm'},
        {"name", 1, 0, 'n'}, {"request-id", 1, 0, 'r'}, {"restart", 1, 0, 'R'}, {"watch", 0, 0, 'w'},
        {"instant", 0, 0, 'I'}, {"disk-pool", 1, 0, 'P'}, {"help", 0, 0, 'h'}, {0}};
    *a = (struct bargs){.target = "", .id = "", .parent = "", .method = "", .name = "", .request_id = "", .disk_pool = ""};
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 't': a->target = optarg; break;
        case 'i': a->id = optarg; break;
        case 'p': a->parent = optarg; break;
        case 'm': a->method = optarg; break;
        case 'n': a->name = optarg; break;
        case 'r': a->request_id = optarg; break;
        case 'w': a->watch = true; break;
        case 'I': a->instant = true; break;
        case 'P': a->disk_pool = optarg; break;
        case 'R':
            if (!strcmp(optarg, "never")) a->restart = GODWIT__V1__RESTART_POLICY__KIND__NEVER;
            else if (!strcmp(optarg, "on-crash")) a->restart = GODWIT__V1__RESTART_POLICY__KIND__ON_CRASH;
            else if (!strcmp(optarg, "always")) a->restart = GODWIT__V1__RESTART_POLICY__KIND__ALWAYS;
            else { fprintf(stderr, "godwit backup: --restart is never, on-crash or always\n"); return -1; }
            break;
        case 'h': fputs(backup_usage, stdout); return 1;
        default: fputs(backup_usage, stderr); return -1;
        }
    }
    if (optind + 1 != argc) { fputs(backup_usage, stderr); return -1; }
    a->vm = argv[optind];
    if (!a->target[0]) { fprintf(stderr, "godwit backup: name a target with --target NAME\n"); return -1; }
    return 0;
}

static void print_backup(const Godwit__V1__Backup *b)
{
    char mem[32], disk[32], nw[32], created[32];
    gw_fmt_bytes(b->memory_bytes, mem, sizeof mem);
    gw_fmt_bytes(b->disk_bytes, disk, sizeof disk);
    gw_fmt_bytes(b->new_bytes, nw, sizeof nw);
    gw_fmt_ms_ago(b->created_unix_ms, created, sizeof created);
    printf("id:            %s\n", b->id);
    printf("vm:            %s\n", b->vm);
    printf("target:        %s\n", b->target);
    printf("created:       %s\n", created);
    printf("parent:        %s\n", b->parent[0] ? b->parent : "-");
    printf("memory:        %s, %u vCPUs, guest %s\n", mem, b->vcpus, b->guest);
    printf("disk:          %s\n", b->disk_bytes ? disk : "-");
    printf("chunks:        %llu (%llu reused), %s written\n", (unsigned long long)b->chunks,
           (unsigned long long)b->reused_chunks, nw);
    printf("method:        %s, pause %.2f ms%s\n", b->method, b->pause_us / 1000.0, b->encrypted ? ", encrypted" : "");
    printf("memory digest: %s\n", b->memory_digest);
}

/* Prints the job a create/verify/restore made, then follows it with --watch. */
static int job_made(struct gw_cli *cli, ProtobufCMessage *resp, const char *what, bool watch)
{
    const Godwit__V1__Job *j = ((const Godwit__V1__CreateBackupResponse *)resp)->job;
    char id[64];
    snprintf(id, sizeof id, "%s", j ? j->id : "");
    if (cli->json && !watch) gw_cli_print_json(resp);
    else if (!cli->json) printf("job %s: %s\n", id, what);
    protobuf_c_message_free_unpacked(resp, NULL);
    return watch ? gw_cli_watch_job(cli, id) : GW_EXIT_OK;
}

static int cmd_targets(struct gw_cli *cli)
{
    Godwit__V1__ListBackupTargetsRequest req = GODWIT__V1__LIST_BACKUP_TARGETS_REQUEST__INIT;
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "GodwitBackup/ListBackupTargets", &req.base,
                        &godwit__v1__list_backup_targets_response__descriptor, &resp);
    if (e) return e;
    const Godwit__V1__ListBackupTargetsResponse *r = (const void *)resp;
    if (cli->json) gw_cli_print_json(resp);
    else {
        printf("%-20s %-6s %s\n", "NAME", "KIND", "ENCRYPTED");
        for (size_t i = 0; i < r->n_targets; i++)
            printf("%-20s %-6s %s\n", r->targets[i]->name, r->targets[i]->kind, r->targets[i]->encrypted ? "yes" : "no");
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

int gw_cmd_backup(struct gw_cli *cli, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(backup_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? GW_EXIT_USAGE : GW_EXIT_OK;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "targets")) return cmd_targets(cli);
    if (!strcmp(verb, "policy")) return gw_cmd_backup_policy(cli, argc - 1, argv + 1);
    argc--, argv++;
    optind = 0;
    struct bargs a;
    int p = parse(argc, argv, &a);
    if (p) return p > 0 ? GW_EXIT_OK : GW_EXIT_USAGE;
    ProtobufCMessage *resp;
    int e;
    char what[256];
    if (!strcmp(verb, "create")) {
        Godwit__V1__CreateBackupRequest req = GODWIT__V1__CREATE_BACKUP_REQUEST__INIT;
        req.vm = (char *)a.vm, req.target = (char *)a.target, req.parent = (char *)a.parent;
        req.method = (char *)a.method, req.request_id = (char *)a.request_id;
        e = gw_cli_call(cli, "GodwitBackup/CreateBackup", &req.base, &godwit__v1__create_backup_response__descriptor, &resp);
        snprintf(what, sizeof what, "backing up %s to %s", a.vm, a.target);
        return e ? e : job_made(cli, resp, what, a.watch);
    }
    if (!strcmp(verb, "verify")) {
        Godwit__V1__VerifyBackupRequest req = GODWIT__V1__VERIFY_BACKUP_REQUEST__INIT;
        req.vm = (char *)a.vm, req.target = (char *)a.target, req.id = (char *)a.id, req.request_id = (char *)a.request_id;
        e = gw_cli_call(cli, "GodwitBackup/VerifyBackup", &req.base, &godwit__v1__verify_backup_response__descriptor, &resp);
        snprintf(what, sizeof what, "verifying %s of %s in %s", a.id[0] ? a.id : "every backup", a.vm, a.target);
        return e ? e : job_made(cli, resp, what, a.watch);
    }
    if (!strcmp(verb, "restore")) {
        Godwit__V1__RestoreBackupRequest req = GODWIT__V1__RESTORE_BACKUP_REQUEST__INIT;
        Godwit__V1__RestartPolicy rp = GODWIT__V1__RESTART_POLICY__INIT;
        req.vm = (char *)a.vm, req.target = (char *)a.target, req.id = (char *)a.id, req.name = (char *)a.name;
        req.request_id = (char *)a.request_id;
        req.instant = a.instant;
        req.disk_pool = (char *)a.disk_pool;
        if (a.restart) { rp.kind = a.restart; req.restart_policy = &rp; }
        e = gw_cli_call(cli, "GodwitBackup/RestoreBackup", &req.base, &godwit__v1__restore_backup_response__descriptor, &resp);
        snprintf(what, sizeof what, "restoring %s of %s %sas VM %s", a.id[0] ? a.id : "the newest backup", a.vm,
                 a.instant ? "instantly " : "",
                 a.name[0] ? a.name : a.vm);
        return e ? e : job_made(cli, resp, what, a.watch);
    }
    if (!strcmp(verb, "list") || !strcmp(verb, "ls")) {
        Godwit__V1__ListBackupsRequest req = GODWIT__V1__LIST_BACKUPS_REQUEST__INIT;
        req.vm = (char *)a.vm, req.target = (char *)a.target;
        e = gw_cli_call(cli, "GodwitBackup/ListBackups", &req.base, &godwit__v1__list_backups_response__descriptor, &resp);
        if (e) return e;
        const Godwit__V1__ListBackupsResponse *r = (const void *)resp;
        if (cli->json) gw_cli_print_json(resp);
        else {
            printf("%-28s %-12s %9s %9s %-9s %s\n", "ID", "CREATED", "MEMORY", "WRITTEN", "METHOD", "PARENT");
            for (size_t i = 0; i < r->n_backups; i++) {
                const Godwit__V1__Backup *b = r->backups[i];
                char created[32], mem[32], nw[32];
                gw_fmt_ms_ago(b->created_unix_ms, created, sizeof created);
                gw_fmt_bytes(b->memory_bytes, mem, sizeof mem);
                gw_fmt_bytes(b->new_bytes, nw, sizeof nw);
                if (b->error[0]) printf("%-28s (unreadable: %s)\n", b->id, b->error);
                else printf("%-28s %-12s %9s %9s %-9s %s\n", b->id, created, mem, nw, b->method, b->parent[0] ? b->parent : "-");
            }
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return GW_EXIT_OK;
    }
    if (!strcmp(verb, "show")) {
        Godwit__V1__GetBackupRequest req = GODWIT__V1__GET_BACKUP_REQUEST__INIT;
        req.vm = (char *)a.vm, req.target = (char *)a.target, req.id = (char *)a.id;
        e = gw_cli_call(cli, "GodwitBackup/GetBackup", &req.base, &godwit__v1__get_backup_response__descriptor, &resp);
        if (e) return e;
        const Godwit__V1__GetBackupResponse *r = (const void *)resp;
        if (cli->json) gw_cli_print_json(resp);
        else if (r->backup) print_backup(r->backup);
        protobuf_c_message_free_unpacked(resp, NULL);
        return GW_EXIT_OK;
    }
    if (!strcmp(verb, "delete") || !strcmp(verb, "rm")) {
        if (!a.id[0]) { fprintf(stderr, "godwit backup delete: name the backup with --id ID\n"); return GW_EXIT_USAGE; }
        Godwit__V1__DeleteBackupRequest req = GODWIT__V1__DELETE_BACKUP_REQUEST__INIT;
        req.vm = (char *)a.vm, req.target = (char *)a.target, req.id = (char *)a.id;
        e = gw_cli_call(cli, "GodwitBackup/DeleteBackup", &req.base, &godwit__v1__delete_backup_response__descriptor, &resp);
        if (e) return e;
        if (cli->json) gw_cli_print_json(resp);
        else printf("backup %s of %s deleted from %s\n", a.id, a.vm, a.target);
        protobuf_c_message_free_unpacked(resp, NULL);
        return GW_EXIT_OK;
    }
    fprintf(stderr, "godwit backup: unknown command '%s'\n%s", verb, backup_usage);
    return GW_EXIT_USAGE;
}
