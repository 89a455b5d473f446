/* `godwit backup policy set|list|show|delete`: backup schedules of godwitd (BackupPolicy in
 * proto/godwit/v1/backup_api.proto, docs/backups.md "Schedules"). The daemon checks every
 * field; the CLI only turns flags into the request. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "engine/common/util.h"
#include "godwit/v1/backup_api.pb-c.h"

static const char policy_usage[] =
    "usage: godwit backup policy set --vm VM|--label KEY=VALUE --schedule CRON --target NAME [--tz ZONE]\n"
    "                                [--jitter DUR] [--method wp|dirty-log|pause] [--keep-last N] [--keep-hourly N]\n"
    "                                [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
    "                                [--rate SIZE] [--ops N] [--adaptive on|off]\n"
    "       godwit backup policy list\n"
    "       godwit backup policy show VM|KEY=VALUE\n"
    "       godwit backup policy delete VM|KEY=VALUE\n"
    "CRON: 5 fields (\"0 2 * * *\") or @hourly, @daily, @weekly, @monthly, @yearly; ZONE: an IANA name\n"
    "(default UTC); DUR: a start window, N[s|m|h] (default 0). Without keep-rules nothing is pruned.\n"
    "--label: every VM with that label (godwit vm create --label) that has no policy of its own.\n"
    "--rate SIZE/--ops N: each backup's store writes per second (adaptive: the ceiling), within the\n"
    "host's budget; --adaptive: default the daemon's backup_adaptive.\n";

/* "90", "90s", "10m", "2h" into seconds (at most a day; the daemon checks again). */
static int parse_dur(const char *s, uint32_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || s[0] == '-') return -1;
    unsigned long long mul = !*end || !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60 : !strcmp(end, "h") ? 3600 : 0;
    if (!mul || v > 86400ull / mul) return -1;
    *out = (uint32_t)(v * mul);
    return 0;
}

static int parse_count(const char *s, uint32_t *out)
{
    uint64_t v;
    if (gw_parse_u64(s, 0, 1000000, &v)) return -1;
    *out = (uint32_t)v;
    return 0;
}

static void print_policy(const Godwit__V1__BackupPolicy *p)
{
    char next[32] = "-", last[32] = "-";
    struct tm tm;
    time_t t = (time_t)p->next_unix_s;
    if (p->next_unix_s && gmtime_r(&t, &tm)) strftime(next, sizeof next, "%Y-%m-%d %H:%M:%SZ", &tm);
    t = (time_t)p->last_fire_unix_s;
    if (p->last_fire_unix_s && gmtime_r(&t, &tm)) strftime(last, sizeof last, "%Y-%m-%d %H:%M:%SZ", &tm);
    if (p->label[0]) printf("label:     %s\n", p->label);
    else printf("vm:        %s\n", p->vm);
    printf("schedule:  %s (%s)\ntarget:    %s\n", p->schedule, p->tz[0] ? p->tz : "UTC", p->target);
    if (p->rate || p->ops || p->adaptive[0]) {
        char rate[32] = "-";
        if (p->rate) gw_fmt_bytes(p->rate, rate, sizeof rate);
        printf("throttle:  rate %s/s, ops %llu/s, adaptive %s\n", rate, (unsigned long long)p->ops,
               p->adaptive[0] ? p->adaptive : "(daemon's)");
    }
    if (p->jitter_s) printf("jitter:    %us\n", p->jitter_s);
    printf("keep:      last %u, hourly %u, daily %u, weekly %u, monthly %u, yearly %u\n", p->keep_last, p->keep_hourly,
           p->keep_daily, p->keep_weekly, p->keep_monthly, p->keep_yearly);
    printf("next:      %s\nlast run:  %s%s%s\n", next, last, p->last_job[0] ? " job " : "", p->last_job);
    if (p->last_error[0]) printf("error:     %s\n", p->last_error);
    for (size_t i = 0; i < p->n_runs; i++) {
        const Godwit__V1__BackupPolicyRun *r = p->runs[i];
        printf("run:       %s fire %lld%s%s%s%s\n", r->vm, (long long)r->last_fire_unix_s, r->last_job[0] ? " job " : "",
               r->last_job, r->last_error[0] ? ": " : "", r->last_error);
    }
}

static int cmd_set(struct gw_cli *cli, int argc, char **argv)
{
    static const struct option lo[] = {
        {"vm", 1, 0, 'v'}, {"schedule", 1, 0, 's'}, {"tz", 1, 0, 'z'}, {"jitter", 1, 0, 'j'}, {"target", 1, 0, 't'},
        {"method", 1, 0, 'm'}, {"keep-last", 1, 0, 'L'}, {"keep-hourly", 1, 0, 'H'}, {"keep-daily", 1, 0, 'D'},
        {"keep-weekly", 1, 0, 'W'}, {"keep-monthly", 1, 0, 'M'}, {"keep-yearly", 1, 0, 'Y'}, {"help", 0, 0, 'h'},
        {"label", 1, 0, 'l'}, {"rate", 1, 0, 'r'}, {"ops", 1, 0, 'o'}, {"adaptive", 1, 0, 'a'}, {0}};
    Godwit__V1__BackupPolicy p = GODWIT__V1__BACKUP_POLICY__INIT;
    int c, bad = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'v': p.vm = optarg; break;
        case 's': p.schedule = optarg; break;
        case 'z': p.tz = optarg; break;
        case 't': p.target = optarg; break;
        case 'm': p.method = optarg; break;
        case 'j': bad |= parse_dur(optarg, &p.jitter_s); break;
        case 'L': bad |= parse_count(optarg, &p.keep_last); break;
        case 'H': bad |= parse_count(optarg, &p.keep_hourly); break;
        case 'D': bad |= parse_count(optarg, &p.keep_daily); break;
        case 'W': bad |= parse_count(optarg, &p.keep_weekly); break;
        case 'M': bad |= parse_count(optarg, &p.keep_monthly); break;
        case 'Y': bad |= parse_count(optarg, &p.keep_yearly); break;
        case 'l': p.label = optarg; break;
        case 'r': bad |= gw_parse_size(optarg, &p.rate) ? -1 : 0; break;
        case 'o': bad |= gw_parse_u64(optarg, 0, 1000000, &p.ops) ? -1 : 0; break;
        case 'a': p.adaptive = optarg; break;   /* the daemon says what it takes */
        case 'h': fputs(policy_usage, stdout); return GW_EXIT_OK;
        default: fputs(policy_usage, stderr); return GW_EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "godwit backup policy set: bad value '%s' (counts 0..1000000, --jitter N[s|m|h] "
                    "up to 24h, --rate SIZE)\n", optarg);
            return GW_EXIT_USAGE;
        }
    }
    if (optind != argc || (!p.vm[0] && !p.label[0]) || !p.schedule[0] || !p.target[0]) {
        fprintf(stderr, "godwit backup policy set: --vm (or --label), --schedule and --target are required\n%s",
                policy_usage);
        return GW_EXIT_USAGE;
    }
    Godwit__V1__SetBackupPolicyRequest req = GODWIT__V1__SET_BACKUP_POLICY_REQUEST__INIT;
    req.policy = &p;
    ProtobufCMessage *resp;
    int e = gw_cli_call(cli, "GodwitBackup/SetBackupPolicy", &req.base, &godwit__v1__set_backup_policy_response__descriptor,
                        &resp);
    if (e) return e;
    const Godwit__V1__SetBackupPolicyResponse *r = (const void *)resp;
    if (cli->json) gw_cli_print_json(resp);
    else if (r->policy) print_policy(r->policy);
    protobuf_c_message_free_unpacked(resp, NULL);
    return GW_EXIT_OK;
}

int gw_cmd_backup_policy(struct gw_cli *cli, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(policy_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? GW_EXIT_USAGE : GW_EXIT_OK;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "set")) return cmd_set(cli, argc - 1, argv + 1);
    ProtobufCMessage *resp;
    int e;
    if (!strcmp(verb, "list") || !strcmp(verb, "ls")) {
        Godwit__V1__ListBackupPoliciesRequest req = GODWIT__V1__LIST_BACKUP_POLICIES_REQUEST__INIT;
        e = gw_cli_call(cli, "GodwitBackup/ListBackupPolicies", &req.base,
                        &godwit__v1__list_backup_policies_response__descriptor, &resp);
        if (e) return e;
        const Godwit__V1__ListBackupPoliciesResponse *r = (const void *)resp;
        if (cli->json) gw_cli_print_json(resp);
        else {
            printf("%-20s %-20s %-16s %-12s %s\n", "VM", "SCHEDULE", "TZ", "TARGET", "NEXT");
            for (size_t i = 0; i < r->n_policies; i++) {
                const Godwit__V1__BackupPolicy *p = r->policies[i];
                char next[32] = "-";
                struct tm tm;
                time_t t = (time_t)p->next_unix_s;
                if (p->next_unix_s && gmtime_r(&t, &tm)) strftime(next, sizeof next, "%Y-%m-%d %H:%M:%SZ", &tm);
                char who[80];
                snprintf(who, sizeof who, p->label[0] ? "label:%s" : "%s", p->label[0] ? p->label : p->vm);
                printf("%-20s %-20s %-16s %-12s %s\n", who, p->schedule, p->tz[0] ? p->tz : "UTC", p->target, next);
            }
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return GW_EXIT_OK;
    }
    if (argc != 3) { fputs(policy_usage, stderr); return GW_EXIT_USAGE; }
    if (!strcmp(verb, "show")) {
        Godwit__V1__GetBackupPolicyRequest req = GODWIT__V1__GET_BACKUP_POLICY_REQUEST__INIT;
        if (strchr(argv[2], '=')) req.label = argv[2];   /* no VM name has '=' */
        else req.vm = argv[2];
        e = gw_cli_call(cli, "GodwitBackup/GetBackupPolicy", &req.base, &godwit__v1__get_backup_policy_response__descriptor,
                        &resp);
        if (e) return e;
        const Godwit__V1__GetBackupPolicyResponse *r = (const void *)resp;
        if (cli->json) gw_cli_print_json(resp);
        else if (r->policy) print_policy(r->policy);
        protobuf_c_message_free_unpacked(resp, NULL);
        return GW_EXIT_OK;
    }
    if (!strcmp(verb, "delete") || !strcmp(verb, "rm")) {
        Godwit__V1__DeleteBackupPolicyRequest req = GODWIT__V1__DELETE_BACKUP_POLICY_REQUEST__INIT;
        if (strchr(argv[2], '=')) req.label = argv[2];
        else req.vm = argv[2];
        e = gw_cli_call(cli, "GodwitBackup/DeleteBackupPolicy", &req.base,
                        &godwit__v1__delete_backup_policy_response__descriptor, &resp);
        if (e) return e;
        if (cli->json) gw_cli_print_json(resp);
        else printf("backup policy of %s deleted\n", argv[2]);
        protobuf_c_message_free_unpacked(resp, NULL);
        return GW_EXIT_OK;
    }
    fprintf(stderr, "godwit backup policy: unknown command '%s'\n%s", verb, policy_usage);
    return GW_EXIT_USAGE;
}
