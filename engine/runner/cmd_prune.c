/* godwit-vm's store maintenance commands:
 *
 *   godwit-vm prune --store SPEC [STORE OPTIONS] --vm NAME [--keep-last N] [--keep-hourly N]
 *                   [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]
 *                   [--tz ZONE] [--dry-run] [--json]
 *   godwit-vm gc --store SPEC [STORE OPTIONS] [--dry-run] [--json]
 *   godwit-vm schedule --cron "EXPR" [--tz ZONE] [--after UNIX_SECONDS] [--count N]
 *                      [--jitter SECONDS --key NAME] [--json]
 *   godwit-vm leases --store SPEC [STORE OPTIONS] --lease NAME [--json]
 *
 * prune deletes the backups no rule keeps (docs/backups.md, "Retention"); gc removes the chunks
 * no backup references (docs/storage.md, "Garbage collection"). Exit codes: 0, 1 failed,
 * 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup/cron.h"
#include "backup/prune.h"
#include "backup/tz.h"
#include "engine/common/json.h"
#include "engine/common/util.h"
#include "engine/runner/cmd_backup.h"
#include "storage/gc.h"
#include "storage/lease.h"
#include "storage/store.h"

enum { EXIT_FAILED = 1, EXIT_USAGE = 2 };

struct popts {
    Godwit__V1__StoreSpec spec;
    const char *vm, *tz, *cron, *key, *lease;
    uint64_t after, count, jitter;
    struct gw_keep keep;
    bool dry_run, json;
};

static int parse(const char *verb, int argc, char **argv, struct popts *o)
{
    static const struct option lo[] = {
        {"store", 1, 0, 0}, {"ceph-conf", 1, 0, 0}, {"ceph-id", 1, 0, 0}, {"keyring", 1, 0, 0},
        {"key-file", 1, 0, 0}, {"osd-timeout", 1, 0, 0}, {"inflight", 1, 0, 0},
        {"vm", 1, 0, 'v'}, {"tz", 1, 0, 'z'}, {"dry-run", 0, 0, 'n'}, {"json", 0, 0, 'j'},
        {"keep-last", 1, 0, 'L'}, {"keep-hourly", 1, 0, 'H'}, {"keep-daily", 1, 0, 'D'},
        {"keep-weekly", 1, 0, 'W'}, {"keep-monthly", 1, 0, 'M'}, {"keep-yearly", 1, 0, 'Y'},
        {"cron", 1, 0, 'c'}, {"after", 1, 0, 'a'}, {"count", 1, 0, 'N'}, {"jitter", 1, 0, 'J'}, {"key", 1, 0, 'K'},
        {"lease", 1, 0, 'l'}, {0},
    };
    memset(o, 0, sizeof *o);
    godwit__v1__store_spec__init(&o->spec);
    int c, idx;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        unsigned *dst = NULL;
        switch (c) {
        case 0: if (gw_backup_store_opt(lo[idx].name, optarg, &o->spec)) return -1; continue;
        case 'v': o->vm = optarg; continue;
        case 'z': o->tz = optarg; continue;
        case 'n': o->dry_run = true; continue;
        case 'j': o->json = true; continue;
        case 'c': o->cron = optarg; continue;
        case 'K': o->key = optarg; continue;
        case 'l': o->lease = optarg; continue;
        case 'a':
            if (gw_parse_u64(optarg, 0, 253402300799ull, &o->after)) { fprintf(stderr, "godwit-vm: --after is Unix seconds\n"); return -1; }
            continue;
        case 'N':
            if (gw_parse_u64(optarg, 1, 1000, &o->count)) { fprintf(stderr, "godwit-vm: --count is 1..1000\n"); return -1; }
            continue;
        case 'J':
            if (gw_parse_u64(optarg, 0, GW_CRON_MAX_JITTER_S, &o->jitter)) { fprintf(stderr, "godwit-vm: --jitter is 0..%u seconds\n", GW_CRON_MAX_JITTER_S); return -1; }
            continue;
        case 'L': dst = &o->keep.last; break;
        case 'H': dst = &o->keep.hourly; break;
        case 'D': dst = &o->keep.daily; break;
        case 'W': dst = &o->keep.weekly; break;
        case 'M': dst = &o->keep.monthly; break;
        case 'Y': dst = &o->keep.yearly; break;
        default: return -1;
        }
        if (gw_parse_u64(optarg, 0, GW_KEEP_MAX, &v)) { fprintf(stderr, "godwit-vm: --%s is 0..%u\n", lo[idx].name, GW_KEEP_MAX); return -1; }
        *dst = (unsigned)v;
    }
    if (optind < argc) { fprintf(stderr, "godwit-vm: unexpected '%s'\n", argv[optind]); return -1; }
    if (!strcmp(verb, "schedule")) {
        if (!o->cron) { fprintf(stderr, "godwit-vm: schedule needs --cron \"EXPR\"\n"); return -1; }
        return 0;
    }
    if (!strcmp(verb, "leases") && !o->lease) { fprintf(stderr, "godwit-vm: leases needs --lease NAME\n"); return -1; }
    if (!o->spec.target || !*o->spec.target) { fprintf(stderr, "godwit-vm: name a store with --store dir:PATH|rados:POOL[/NS]\n"); return -1; }
    if (!strcmp(verb, "prune")) {
        char err[256];
        if (!o->vm) { fprintf(stderr, "godwit-vm: prune needs --vm NAME\n"); return -1; }
        if (gw_keep_check(&o->keep, err, sizeof err)) { fprintf(stderr, "godwit-vm: %s\n", err); return -1; }
    }
    return 0;
}

struct prune_out {
    bool json;
    unsigned n;
};

static void prune_report(void *ctx, const char *id, int64_t when, const char *what, int rc)
{
    struct prune_out *p = ctx;
    char ts[32] = "-";
    if (when) {
        struct tm tm;
        time_t t = (time_t)when;
        gmtime_r(&t, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    if (p->json) {
        printf("%s{\"id\":\"%s\",\"time\":\"%s\",\"action\":", p->n ? "," : "", id, ts);
        gw_json_str(stdout, rc ? "failed" : !strcmp(what, "remove") ? "remove" : "keep");
        printf(",\"reason\":");
        gw_json_str(stdout, what);
        printf("}");
    } else {
        printf("%-40s %s  %s\n", id, ts, what);
    }
    p->n++;
}

static int cmd_prune(struct gw_backup_target *t, const struct popts *o)
{
    struct gw_tz *tz = NULL;
    char err[512] = "";
    if (gw_tz_load(o->tz, &tz, err, sizeof err)) { fprintf(stderr, "godwit-vm: %s\n", err); return EXIT_USAGE; }
    struct prune_out out = {.json = o->json};
    struct gw_prune_stats st;
    if (o->json) printf("{\"backups\":[");
    int r = gw_backup_prune(t, o->vm, &o->keep, tz, o->dry_run, prune_report, &out, &st, err, sizeof err);
    if (o->json) {
        printf("],\"ok\":%s,\"error\":", r ? "false" : "true");
        gw_json_str(stdout, err);
        printf(",\"dry_run\":%s,\"total\":%llu,\"kept\":%llu,\"removed\":%llu,\"failed\":%llu}\n", o->dry_run ? "true" : "false",
               (unsigned long long)st.backups, (unsigned long long)st.kept, (unsigned long long)st.removed,
               (unsigned long long)st.failed);
    } else {
        if (r) fprintf(stderr, "godwit-vm: prune: %s\n", err);
        printf("%s%llu backups: %llu kept, %llu removed%s\n", o->dry_run ? "dry run: " : "", (unsigned long long)st.backups,
               (unsigned long long)st.kept, (unsigned long long)st.removed, o->dry_run ? " (would be)" : "");
    }
    gw_tz_free(tz);
    return r ? EXIT_FAILED : 0;
}

static void gc_skip(void *ctx, const char *name, const char *reason)
{
    struct prune_out *p = ctx;
    if (p->json) {
        printf("%s{\"object\":", p->n ? "," : "");
        gw_json_str(stdout, name);
        printf(",\"reason\":");
        gw_json_str(stdout, reason);
        printf("}");
    } else {
        fprintf(stderr, "skipped %s: %s\n", name, reason);
    }
    p->n++;
}

static int cmd_gc(struct gw_backup_target *t, const struct popts *o)
{
    struct gw_gc_params gp = {.dry_run = o->dry_run, .keys = &t->keys, .skipped = gc_skip};
    struct prune_out out = {.json = o->json};
    gp.ctx = &out;
    struct gw_gc_stats st;
    char err[512] = "";
    if (o->json) printf("{\"skipped\":[");
    int r = gw_gc_run(t->store, &gp, &st, err, sizeof err);
    if (o->json) {
        printf("],\"ok\":%s,\"error\":", r ? "false" : "true");
        gw_json_str(stdout, err);
        printf(",\"dry_run\":%s,\"manifests\":%llu,\"chunks_scanned\":%llu,\"referenced\":%llu,\"candidates\":%llu,"
               "\"chunks_removed\":%llu,\"bytes_freed\":%llu,\"deferred\":%llu,\"kept_rewritten\":%llu,\"skipped_objects\":%llu,"
               "\"live_backups\":%llu,\"generation\":%llu,\"gc_ms\":%.1f}\n",
               o->dry_run ? "true" : "false", (unsigned long long)st.manifests, (unsigned long long)st.chunks_scanned,
               (unsigned long long)st.referenced, (unsigned long long)st.candidates, (unsigned long long)st.removed,
               (unsigned long long)st.bytes_freed, (unsigned long long)st.deferred, (unsigned long long)st.kept_changed,
               (unsigned long long)st.skipped, (unsigned long long)st.live_backups, (unsigned long long)st.generation,
               st.elapsed_ns / 1e6);
    } else if (r) {
        fprintf(stderr, "godwit-vm: gc: %s\n", err);
    } else {
        printf("%s%llu chunks scanned, %llu referenced by %llu manifests, %llu removed (%llu KiB freed), %llu deferred "
               "(backups in progress), %llu skipped, %.0f ms\n", o->dry_run ? "dry run: " : "",
               (unsigned long long)st.chunks_scanned, (unsigned long long)st.referenced, (unsigned long long)st.manifests,
               (unsigned long long)st.removed, (unsigned long long)(st.bytes_freed >> 10), (unsigned long long)st.deferred,
               (unsigned long long)st.skipped, st.elapsed_ns / 1e6);
    }
    return r ? EXIT_FAILED : 0;
}

/* The next fire times of a schedule: what an operator checks before setting a policy. */
static int cmd_schedule(const struct popts *o)
{
    struct gw_tz *tz = NULL;
    struct gw_cron c;
    char err[512];
    if (gw_cron_parse(o->cron, &c, err, sizeof err) || gw_tz_load(o->tz, &tz, err, sizeof err)) {
        fprintf(stderr, "godwit-vm: %s\n", err);
        return EXIT_USAGE;
    }
    int64_t t = o->after ? (int64_t)o->after : (int64_t)(gw_wall_ns() / 1000000000ull);
    if (o->json) printf("{\"cron\":"), gw_json_str(stdout, o->cron), printf(",\"tz\":\"%s\",\"next\":[", tz->name);
    int r = 0;
    for (uint64_t i = 0; i < (o->count ? o->count : 5); i++) {
        int64_t nx;
        if ((r = gw_cron_next(&c, tz, t, &nx))) break;
        int64_t start = gw_cron_jitter(nx, (unsigned)o->jitter, o->key ? o->key : "");
        struct tm lt;
        gw_tz_local(tz, start, &lt);
        char local[40];
        snprintf(local, sizeof local, "%04d-%02d-%02d %02d:%02d:%02d", lt.tm_year + 1900, lt.tm_mon + 1, lt.tm_mday,
                 lt.tm_hour, lt.tm_min, lt.tm_sec);
        if (o->json) printf("%s{\"fire\":%lld,\"start\":%lld,\"local\":\"%s\"}", i ? "," : "", (long long)nx, (long long)start, local);
        else printf("%s %s  (unix %lld)\n", local, tz->name, (long long)start);
        t = nx;
    }
    if (o->json) printf("],\"ok\":%s}\n", r ? "false" : "true");
    if (r) fprintf(stderr, "godwit-vm: this schedule never fires\n");
    gw_tz_free(tz);
    return r ? EXIT_FAILED : 0;
}

struct holders_out {
    bool json;
    unsigned n;
};

static int print_holder(const char *cookie, void *ctx)
{
    struct holders_out *h = ctx;
    if (h->json) printf("%s\"%s\"", h->n ? "," : "", cookie);
    else printf("%s\n", cookie);
    h->n++;
    return 0;
}

static int cmd_leases(struct gw_backup_target *t, const struct popts *o)
{
    struct holders_out h = {.json = o->json};
    if (o->json) printf("{\"lease\":\"%s\",\"holders\":[", o->lease);
    int r = gw_lease_holders(t->store, o->lease, print_holder, &h);
    if (o->json) printf("],\"ok\":%s}\n", r ? "false" : "true");
    if (r) fprintf(stderr, "godwit-vm: %s\n", gw_store_error(t->store));
    return r ? EXIT_FAILED : 0;
}

bool gw_runner_is_store_verb(const char *verb)
{
    return !strcmp(verb, "prune") || !strcmp(verb, "gc") || !strcmp(verb, "schedule") || !strcmp(verb, "leases");
}

int gw_runner_cmd_store(const char *verb, int argc, char **argv)
{
    struct popts o;
    if (parse(verb, argc, argv, &o)) return EXIT_USAGE;
    if (!strcmp(verb, "schedule")) return cmd_schedule(&o);
    struct gw_backup_target t;
    char err[512];
    if (gw_backup_target_open(&o.spec, &t, err, sizeof err)) { fprintf(stderr, "godwit-vm: %s\n", err); return EXIT_FAILED; }
    int code = !strcmp(verb, "prune") ? cmd_prune(&t, &o) : !strcmp(verb, "gc") ? cmd_gc(&t, &o) : cmd_leases(&t, &o);
    gw_backup_target_close(&t);
    return code;
}
