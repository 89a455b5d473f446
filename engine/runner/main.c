/* godwit-vm: runs one VM (fresh or restored from a snapshot file) and talks to a running one
 * through its control socket.
 *
 *   godwit-vm run --memory 1G --vcpus 1 --guest dirtier:ws=256M,rate=64M,pattern=random
 *                 [--disk FILE] [--seconds N] [--json] [--control SOCK] [--console FILE]
 *   godwit-vm run --kernel bzImage|vmlinux [--initrd FILE] [--cmdline "..."] [--memory 512M]
 *                 [--vcpus N] [--disk FILE] [--net tap:NAME[,mac=MAC]] [--console FILE] ...
 *   godwit-vm restore --file SNAP [--disk FILE] [--seconds N] [--json] [--control SOCK]
 *   godwit-vm save --control SOCK --file SNAP [--stop]
 *   godwit-vm status|pause|resume|stop --control SOCK [--json]
 *   godwit-vm resolve --control SOCK --keep-source|--keep-destination [--json]
 *   godwit-vm resume-migration --control SOCK [--to tcp:HOST:PORT] [--json]   (post-copy, link broken)
 *   godwit-vm incoming --listen tcp:HOST:PORT | --fd N [--fd N ...]  --secret-file F [--control SOCK]
 *                      [--name NAME] [--disk FILE] [--seconds N] [--json] [TLS]
 *   godwit-vm migrate --control SOCK --to tcp:HOST:PORT [--mode precopy|postcopy|hybrid] [--streams N] [--compress lz4|none|auto]
 *                     [--downtime-ms N] [--bandwidth SIZE/s] [--timeout S] [--auto-converge]
 *                     [--max-rounds N] [--secret-file F] [--wait] [--json] [TLS]
 *   godwit-vm restore-backup --store SPEC [STORE OPTIONS] --vm NAME [--backup ID] [--name NEW]
 *                            [--disk FILE] [--seconds N] [--json] [--control SOCK]
 *                            [--instant [--stall-ms N] [--fill-rate SIZE]]   (memory on demand: backup/instant_restore.h)
 *                            [--progress-fd N]   (restore progress frames: restore_report below)
 *   godwit-vm backup|verify-backup|list-backups|delete-backup ...   (cmd_backup.c)
 *   TLS: [--tls on|off] [--tls-cert F --tls-key F --tls-ca F]: migration streams run over TLS 1.3
 *   with a PSK from the cluster secret, or with X.509 when all three files are given; plaintext
 *   only with an explicit --tls off (docs/security.md). migrate --tls-suite aes256: the PSK
 *   suite for a destination runner older than AES-128 (default aes128). incoming --name: refuse another VM.
 *
 * Exit codes: 0 success; 1 the VM failed; 2 usage; 3 the guest found verify errors;
 * 4 KVM is not available on this host. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/checked_open.h"
#include "engine/common/cpu_prio.h"
#include "engine/common/json.h"
#include "engine/common/limits.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/runner/frame.h"
#include "engine/runner/runner.h"
#include "engine/runner/runner_client.h"
#include "engine/runner/cmd_backup.h"
#include "backup/backup.h"
#include "backup/instant_restore.h"
#include "backup/backup_since.h"
#include "storage/manifest.h"
#include "storage/store.h"
#include "engine/transport/tls.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/blk_rbd.h"
#include "engine/vm/snapshot_file.h"
#include "engine/vm/virtio_attach.h"
#include "postcopy/postcopy_dest.h"
#include "postcopy/postcopy_source.h"
#include "precopy/precopy_dest.h"
#include "precopy/precopy_source.h"

enum { EXIT_VM_FAILED = 1, EXIT_USAGE = 2, EXIT_VERIFY = 3, EXIT_NO_KVM = 4 };

/* How long a client command waits for the runner's answer. */
#define CLIENT_TIMEOUT_MS 30000

struct opts {
    const char *name, *guest, *disk, *control, *console, *file, *secret_file, *listen, *to, *compress;
    const char *mode;         /* migrate --mode: precopy (default), postcopy, hybrid */
    const char *kernel, *initrd, *cmdline, *net;
    uint64_t dirty_ring;      /* --dirty-ring: KVM dirty ring entries per vCPU (0: the bitmap) */
    const char *tls_cert, *tls_key, *tls_ca;
    bool tls_off;
    bool tls_aes256;          /* migrate --tls-suite aes256: for a destination older than AES-128 */
    uint64_t memory, seconds, bandwidth, downtime_ms, timeout_s, max_rounds, streams;
    uint64_t recover_timeout_s, link_timeout_ms;   /* post-copy recovery (docs/postcopy.md) */
    unsigned vcpus;
    int fds[GW_INCOMING_MAX_FDS];   /* --fd, repeated: every stream of a handed-over session */
    bool no_priority;               /* migrate --no-priority-channel: the benchmark's baseline */
    uint64_t switch_dirty_pct, switch_ms_per_gib;   /* hybrid's other switches */
    int resume_fd;                  /* --resume-fd: a listening socket on which daemons hand a reconnecting post-copy source over */
    const char *token_file;         /* --token-file: the session token a listener's streams must carry (read, then removed) */
    unsigned nfds;
    bool name_set;
    bool memory_set, vcpus_set;   /* given on the command line (incoming: what to expect) */
    const char *from_vm, *backup_id;   /* restore-backup */
    bool instant;                      /* restore-backup --instant */
    uint64_t stall_ms;                 /* --stall-ms: store silent this long pauses the VM */
    uint64_t fill_rate;                /* --fill-rate: the instant restore's background fill, bytes/s */
    int progress_fd;                   /* --progress-fd: restore progress frames go there (-1: none) */
    struct gw_cpu_prio cpu;            /* --cpu-priority: an ordinary restore's threads (default normal) */
    bool cpu_set;
    Godwit__V1__StoreSpec store;
    int test_fault;                 /* enum gw_mig_fault, GODWIT_TEST_HOOKS builds only */
    bool json, stop_after, wait, auto_converge, keep_source, keep_destination, guest_given;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: godwit-vm run [--name NAME] [--memory SIZE] [--vcpus N] [--guest SPEC] [--disk FILE|rbd:POOL/IMAGE[:conf=F][:id=ID][:keyring=F]]\n"
            "                     [--seconds N] [--json] [--control SOCK] [--console FILE] [--dirty-ring ENTRIES]\n"
            "       godwit-vm run --kernel bzImage|vmlinux [--initrd FILE] [--cmdline \"...\"] [--net tap:NAME[,mac=MAC]]\n"
            "                     [--memory SIZE] [--vcpus N] [--disk FILE] [--console FILE] [--seconds N]\n"
            "       godwit-vm restore --file SNAPSHOT [--disk FILE] [--seconds N] [--json] [--control SOCK] [--dirty-ring ENTRIES]\n"
            "       godwit-vm save --control SOCK --file SNAPSHOT [--stop]\n"
            "       godwit-vm status|pause|resume|stop --control SOCK [--json]\n"
            "       godwit-vm resolve --control SOCK --keep-source|--keep-destination [--json]\n"
            "       godwit-vm resume-migration --control SOCK [--to tcp:HOST:PORT] [--json]\n"
            "       godwit-vm incoming --listen tcp:HOST:PORT | --fd N [--fd N ...] --secret-file F [--control SOCK]\n"
            "                          [--token-file F: only streams with this session token]\n"
            "                          [--name NAME] [--memory SIZE] [--vcpus N] [--disk FILE]\n"
            "                          [--seconds N] [--json] [TLS]\n"
            "       godwit-vm migrate --control SOCK --to tcp:HOST:PORT [--mode precopy|postcopy|hybrid] [--streams N]\n"
            "                         [--compress lz4|none|auto]\n"
            "                         [--downtime-ms N] [--bandwidth SIZE] [--timeout S] [--auto-converge]\n"
            "                         [--max-rounds N] [--recover-timeout S] [--link-timeout-ms N] [--no-priority-channel]\n"
            "                         [--switch-dirty-pct N] [--switch-ms-per-gib N]   (hybrid)\n"
            "                         [--secret-file F] [--wait] [--json] [TLS]\n"
            "       godwit-vm restore-backup --store dir:PATH|rados:POOL[/NS] [--ceph-conf F] [--ceph-id ID] [--keyring F]\n"
            "                                [--key-file F] --vm NAME [--backup ID] [--name NEW] [--disk FILE|rbd:POOL/IMAGE] [--seconds N]\n"
            "                                [--instant [--stall-ms N] [--fill-rate SIZE]] [--progress-fd N]\n"
            "                                [--cpu-priority idle|batch|batch:N|nice:N|normal]   (not with --instant)\n"
            "       godwit-vm backup --control SOCK --store SPEC [STORE OPTIONS] [--parent ID|none] [--method dirty-log|pause] [--json]\n"
            "       godwit-vm verify-backup|list-backups|delete-backup --store SPEC [STORE OPTIONS] --vm NAME [--backup ID] [--json]\n"
            "       godwit-vm prune --store SPEC [STORE OPTIONS] --vm NAME [--keep-last|hourly|daily|weekly|monthly|yearly N]\n"
            "                       [--tz ZONE] [--dry-run] [--json]\n"
            "       godwit-vm gc --store SPEC [STORE OPTIONS] [--dry-run] [--json]\n"
            "       godwit-vm schedule --cron \"EXPR\" [--tz ZONE] [--after UNIX] [--count N] [--jitter S --key NAME] [--json]\n"
            "       godwit-vm leases --store SPEC [STORE OPTIONS] --lease NAME [--json]\n"
            "TLS: [--tls on|off] [--tls-cert FILE --tls-key FILE --tls-ca FILE] (default: TLS 1.3, cluster PSK)\n"
            "     migrate [--tls-suite aes128|aes256]   (aes256: a destination runner older than AES-128)\n"
            "guest specs: dirtier:ws=256M,rate=64M,pattern=random|text|sparse  idle:ws=64M  disk:block=4K\n");
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"name", 1, 0, 'n'}, {"memory", 1, 0, 'm'}, {"vcpus", 1, 0, 'c'}, {"guest", 1, 0, 'g'},
        {"disk", 1, 0, 'd'}, {"seconds", 1, 0, 's'}, {"json", 0, 0, 'j'}, {"control", 1, 0, 'C'},
        {"console", 1, 0, 'o'}, {"file", 1, 0, 'f'}, {"stop", 0, 0, 'S'}, {"help", 0, 0, 'h'},
        {"secret-file", 1, 0, 'K'}, {"listen", 1, 0, 'L'}, {"fd", 1, 0, 'F'}, {"to", 1, 0, 'T'},
        {"streams", 1, 0, 'N'}, {"compress", 1, 0, 'Z'}, {"downtime-ms", 1, 0, 'D'}, {"bandwidth", 1, 0, 'B'},
        {"timeout", 1, 0, 'O'}, {"auto-converge", 0, 0, 'A'}, {"max-rounds", 1, 0, 'R'}, {"wait", 0, 0, 'W'},
        {"vm", 1, 0, 'V'}, {"backup", 1, 0, 'I'}, {"mode", 1, 0, 'M'},
        {"instant", 0, 0, 'J'}, {"stall-ms", 1, 0, 'P'}, {"fill-rate", 1, 0, 'K' + 265},
        {"recover-timeout", 1, 0, 'K' + 258}, {"link-timeout-ms", 1, 0, 'K' + 259}, {"resume-fd", 1, 0, 'K' + 260},
        {"token-file", 1, 0, 'K' + 268},
        {"no-priority-channel", 0, 0, 'K' + 261}, {"switch-dirty-pct", 1, 0, 'K' + 262},
        {"switch-ms-per-gib", 1, 0, 'K' + 263}, {"dirty-ring", 1, 0, 'K' + 300},
        {"store", 1, 0, 0}, {"ceph-conf", 1, 0, 0}, {"ceph-id", 1, 0, 0}, {"keyring", 1, 0, 0},
        {"key-file", 1, 0, 0}, {"osd-timeout", 1, 0, 0}, {"inflight", 1, 0, 0},
        {"kernel", 1, 0, 'k'}, {"initrd", 1, 0, 'i'}, {"cmdline", 1, 0, 'l'}, {"net", 1, 0, 'e'},
        {"tls", 1, 0, 't'}, {"tls-cert", 1, 0, '1'}, {"tls-key", 1, 0, '2'}, {"tls-ca", 1, 0, '3'},
        {"keep-source", 0, 0, 'K' + 257}, {"keep-destination", 0, 0, 'K' + 256},
        {"progress-fd", 1, 0, 'K' + 264}, {"cpu-priority", 1, 0, 'K' + 266}, {"tls-suite", 1, 0, 'K' + 267},
#ifdef GODWIT_TEST_HOOKS
        {"test-fault", 1, 0, 'X'},
#endif
        {0},
    };
    *o = (struct opts){.name = "vm", .guest = "dirtier", .memory = 256ull << 20, .vcpus = 1, .resume_fd = -1, .progress_fd = -1};
    godwit__v1__store_spec__init(&o->store);
    int c, idx;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "", lo, &idx)) != -1) {
        switch (c) {
        case 0: if (gw_backup_store_opt(lo[idx].name, optarg, &o->store)) return -1; break;
        case 'V': o->from_vm = optarg; break;
        case 'I': o->backup_id = optarg; break;
        case 'J': o->instant = true; break;
        case 'P':
            if (gw_parse_u64(optarg, 1, 3600000, &o->stall_ms)) { fprintf(stderr, "godwit-vm: --stall-ms is 1..3600000\n"); return -1; }
            break;
        case 'K' + 265:
            if (gw_parse_size(optarg, &o->fill_rate) || !o->fill_rate) {
                fprintf(stderr, "godwit-vm: --fill-rate is a size per second, e.g. 50M\n");
                return -1;
            }
            break;
        case 'K' + 266:
            if (gw_cpu_prio_parse(optarg, &o->cpu)) {
                fprintf(stderr, "godwit-vm: --cpu-priority is idle, batch, batch:N, nice:N (N 1..19) or normal\n");
                return -1;
            }
            o->cpu_set = true;
            break;
        case 'n': o->name = optarg; o->name_set = true; break;
        case 't':
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) { fprintf(stderr, "godwit-vm: --tls is on or off\n"); return -1; }
            o->tls_off = !strcmp(optarg, "off");
            break;
        case '1': o->tls_cert = optarg; break;
        case '2': o->tls_key = optarg; break;
        case '3': o->tls_ca = optarg; break;
        case 'm': if (gw_parse_size(optarg, &o->memory)) { fprintf(stderr, "godwit-vm: bad --memory '%s'\n", optarg); return -1; } o->memory_set = true; break;
        case 'c': if (gw_parse_u64(optarg, 1, GW_MAX_VCPUS, &v)) { fprintf(stderr, "godwit-vm: --vcpus must be 1..%u\n", GW_MAX_VCPUS); return -1; } o->vcpus = (unsigned)v; o->vcpus_set = true; break;
        case 'g': o->guest = optarg; o->guest_given = true; break;
        case 'd': o->disk = optarg; break;
        case 's': if (gw_parse_u64(optarg, 0, 1u << 30, &o->seconds)) { fprintf(stderr, "godwit-vm: bad --seconds '%s'\n", optarg); return -1; } break;
        case 'j': o->json = true; break;
        case 'C': o->control = optarg; break;
        case 'o': o->console = optarg; break;
        case 'f': o->file = optarg; break;
        case 'S': o->stop_after = true; break;
        case 'K': o->secret_file = optarg; break;
        case 'L': o->listen = optarg; break;
        case 'F':
            if (gw_parse_u64(optarg, 0, 1 << 20, &v)) { fprintf(stderr, "godwit-vm: bad --fd\n"); return -1; }
            if (o->nfds == GW_INCOMING_MAX_FDS) { fprintf(stderr, "godwit-vm: at most %u --fd\n", GW_INCOMING_MAX_FDS); return -1; }
            o->fds[o->nfds++] = (int)v;
            break;
        case 'T': o->to = optarg; break;
        case 'N': if (gw_parse_u64(optarg, 1, 16, &o->streams)) { fprintf(stderr, "godwit-vm: --streams must be 1..16\n"); return -1; } break;
        case 'Z': o->compress = optarg; break;
        case 'M':
            if (strcmp(optarg, "precopy") && strcmp(optarg, "postcopy") && strcmp(optarg, "hybrid")) {
                fprintf(stderr, "godwit-vm: --mode is precopy, postcopy or hybrid\n");
                return -1;
            }
            o->mode = optarg;
            break;
        case 'D': if (gw_parse_u64(optarg, 1, 3600000, &o->downtime_ms)) { fprintf(stderr, "godwit-vm: bad --downtime-ms\n"); return -1; } break;
        case 'B': if (gw_parse_size(optarg, &o->bandwidth)) { fprintf(stderr, "godwit-vm: bad --bandwidth\n"); return -1; } break;
        case 'O': if (gw_parse_u64(optarg, 1, 86400, &o->timeout_s)) { fprintf(stderr, "godwit-vm: bad --timeout\n"); return -1; } break;
        case 'A': o->auto_converge = true; break;
        case 'R': if (gw_parse_u64(optarg, 1, 100000, &o->max_rounds)) { fprintf(stderr, "godwit-vm: bad --max-rounds\n"); return -1; } break;
        case 'W': o->wait = true; break;
        case 'k': o->kernel = optarg; break;
        case 'i': o->initrd = optarg; break;
        case 'l': o->cmdline = optarg; break;
        case 'e': o->net = optarg; break;
        case 'K' + 257: o->keep_source = true; break;
        case 'K' + 261: o->no_priority = true; break;
        case 'K' + 267:
            if (strcmp(optarg, "aes128") && strcmp(optarg, "aes256")) { fprintf(stderr, "godwit-vm: --tls-suite is aes128 or aes256\n"); return -1; }
            o->tls_aes256 = !strcmp(optarg, "aes256");
            break;
        case 'K' + 262: if (gw_parse_u64(optarg, 1, 10000, &o->switch_dirty_pct)) { fprintf(stderr, "godwit-vm: --switch-dirty-pct must be 1..10000\n"); return -1; } break;
        case 'K' + 263: if (gw_parse_u64(optarg, 1, 86400000, &o->switch_ms_per_gib)) { fprintf(stderr, "godwit-vm: bad --switch-ms-per-gib\n"); return -1; } break;
        case 'K' + 268: o->token_file = optarg; break;
        case 'K' + 260:
            if (gw_parse_u64(optarg, 3, 1 << 20, &v)) { fprintf(stderr, "godwit-vm: bad --resume-fd\n"); return -1; }
            o->resume_fd = (int)v;
            break;
        case 'K' + 258: if (gw_parse_u64(optarg, 1, 86400, &o->recover_timeout_s)) { fprintf(stderr, "godwit-vm: bad --recover-timeout\n"); return -1; } break;
        case 'K' + 300:   /* the power of two is checked where the ring is made (gw_vm_create) */
            if (gw_parse_u64(optarg, GW_LIMIT_DIRTY_RING_MIN, GW_LIMIT_DIRTY_RING_MAX, &o->dirty_ring)) {
                fprintf(stderr, "godwit-vm: --dirty-ring takes %u to %u entries\n", GW_LIMIT_DIRTY_RING_MIN,
                        GW_LIMIT_DIRTY_RING_MAX);
                return -1;
            }
            break;
        case 'K' + 259: if (gw_parse_u64(optarg, 100, 600000, &o->link_timeout_ms)) { fprintf(stderr, "godwit-vm: --link-timeout-ms must be 100..600000\n"); return -1; } break;
        case 'K' + 256: o->keep_destination = true; break;
        case 'K' + 264:
            if (gw_parse_u64(optarg, 3, 1 << 20, &v)) { fprintf(stderr, "godwit-vm: bad --progress-fd\n"); return -1; }
            o->progress_fd = (int)v;
            break;
#ifdef GODWIT_TEST_HOOKS
        case 'X':
            /* Test builds only: a fault injected into this runner's outgoing migrations. */
            if (!strcmp(optarg, "close-before-commit")) o->test_fault = GW_FAULT_CLOSE_BEFORE_COMMIT;
            else if (!strcmp(optarg, "close-after-ready")) o->test_fault = GW_FAULT_CLOSE_AFTER_READY;
            else if (!strcmp(optarg, "corrupt-digest")) o->test_fault = GW_FAULT_CORRUPT_DIGEST;
            else if (!strcmp(optarg, "drop-go")) o->test_fault = GW_FAULT_DROP_GO;
            else if (!strcmp(optarg, "close-after-go")) o->test_fault = GW_FAULT_CLOSE_AFTER_GO;
            else if (!strcmp(optarg, "die-after-go")) o->test_fault = GW_FAULT_DIE_AFTER_GO;
            else if (!strcmp(optarg, "die-at-stale")) o->test_fault = GW_FAULT_DIE_AT_STALE;
            else if (!strcmp(optarg, "hang-at-stale")) o->test_fault = GW_FAULT_HANG_AT_STALE;
            else { fprintf(stderr, "godwit-vm: unknown --test-fault '%s'\n", optarg); return -1; }
            break;
#endif
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    return 0;
}

static int open_console(const char *path)
{
    if (!path) return STDERR_FILENO;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) fprintf(stderr, "godwit-vm: console %s: %s (console dropped)\n", path, strerror(errno));
    return fd;
}

/* SIGTERM and SIGINT are taken through a signalfd in the main loop: block them before any
 * vCPU thread exists so that every thread inherits the mask. */
static void block_term_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int exit_code_for_create(int r, const char *err)
{
    fprintf(stderr, "godwit-vm: %s\n", err);
    if (r == -ENOENT || r == -EACCES || r == -EPERM || r == -ENOTSUP) {
        if (strstr(err, "KVM") || strstr(err, "kvm")) return EXIT_NO_KVM;
    }
    return r == -EINVAL ? EXIT_USAGE : EXIT_VM_FAILED;
}

/* Runs a created-and-prepared VM (started already when it arrived by migration) to the end
 * and prints its summary. With an instant restore, *instant_complete (may be NULL) says
 * whether its fill completed. */
static int run_vm(struct gw_vm *vm, const struct opts *o, const char *extra_json, const struct gw_mig_progress *arrived,
                  struct gw_postcopy_in *pc_in, struct gw_instant_restore *instant, bool *instant_complete)
{
    struct gw_runner r = {.vm = vm, .started_ns = gw_now_ns(), .listen_fd = -1, .postcopy_in = pc_in,
                          .instant = instant};
    if (o->secret_file) snprintf(r.secret_file, sizeof r.secret_file, "%s", o->secret_file);
    if (arrived) { r.last_mig = *arrived; r.incoming = true; }
    r.test_fault = o->test_fault;
    if (o->control) {
        int rc = gw_runner_control_open(&r, o->control);
        if (rc) {
            fprintf(stderr, "godwit-vm: control socket %s: %s\n", o->control, strerror(-rc));
            if (arrived) gw_runner_loop(&r, o->seconds); /* it runs here now: keep it running */
            gw_instant_restore_free(instant);
            return EXIT_USAGE;
        }
    }
    int rc = arrived ? 0 : gw_vm_start(vm);
    if (!rc) gw_runner_loop(&r, o->seconds);
    gw_runner_poll_instant(&r);
    if (r.migration) { gw_precopy_cancel(r.migration); while (r.migration) { usleep(10000); gw_runner_poll_migration(&r); } }
    if (r.postcopy) { gw_postcopy_cancel(r.postcopy); while (r.postcopy) { usleep(10000); gw_runner_poll_migration(&r); } }
    /* Freeze the counters we are about to print. A migrated or in-doubt VM stays paused. */
    if (r.state == GW_RUN_RUNNING || r.state == GW_RUN_PAUSED || r.state == GW_RUN_MIGRATING) {
        gw_runner_hold(&r, GW_PAUSE_OPERATOR);
        r.state = GW_RUN_STOPPED;
    }
    if (r.postcopy_in) {
        /* A post-copy that did not complete leaves the VM paused: the summary says so. */
        gw_runner_poll_migration(&r);
        if (!gw_postcopy_in_finished(r.postcopy_in) || r.last_mig.phase != GW_MIG_COMPLETED)
            gw_runner_hold(&r, GW_PAUSE_IN_DOUBT);
    }
    gw_runner_print_summary(&r, o->json, extra_json);
    gw_postcopy_in_free(r.postcopy_in);
    r.postcopy_in = NULL;
    /* Paused by now; a fill short of its end poisons what never arrived, so the counters
     * below are read only when their page is in. */
    bool readable = gw_runner_guest_readable(&r);
    if (instant_complete && r.instant) {
        struct gw_instant_progress ip;
        gw_instant_restore_progress(r.instant, &ip);
        *instant_complete = ip.phase == GW_INSTANT_COMPLETE;
    }
    gw_instant_restore_free(r.instant);
    r.instant = NULL;
    gw_runner_control_close(&r);
    char msg[256];
    if (gw_vm_fatal(vm, msg, sizeof msg)) return EXIT_VM_FAILED;
    struct gw_guest_totals t = {0};
    if (readable) gw_vm_guest_totals(vm, &t);
    if (t.verify_errors || t.disk_verify_errors) return EXIT_VERIFY;
    return 0;
}

static int cmd_run(const struct opts *o)
{
    if ((o->initrd || o->cmdline) && !o->kernel) {
        fprintf(stderr, "godwit-vm: --initrd and --cmdline need --kernel\n");
        return EXIT_USAGE;
    }
    if (o->kernel && o->guest_given && strcmp(o->guest, "linux")) {
        fprintf(stderr, "godwit-vm: --kernel boots Linux; --guest %s does not go with it\n", o->guest);
        return EXIT_USAGE;
    }
    char err[512] = "";
    int cfd = open_console(o->console);
    struct gw_vm_config cfg = {.name = o->name, .memory_bytes = o->memory, .vcpus = o->vcpus,
                               .guest_spec = o->kernel ? "linux" : o->guest, .disk_path = o->disk, .console_fd = cfd,
                               .kernel_path = o->kernel, .initrd_path = o->initrd, .cmdline = o->cmdline,
                               .net = o->net, .dirty_ring_entries = (uint32_t)o->dirty_ring};
    struct gw_vm *vm;
    int r = gw_vm_create(&cfg, &vm, err, sizeof err);
    if (r) return exit_code_for_create(r, err);
    gw_log_set_tag(o->name);
    r = gw_vm_boot(vm, err, sizeof err);
    int code = r ? (fprintf(stderr, "godwit-vm: %s\n", err), EXIT_VM_FAILED) : run_vm(vm, o, NULL, NULL, NULL, NULL, NULL);
    if (vm->guest_stopped) fprintf(stderr, "godwit-vm: the guest ended: %s\n", vm->stop_msg);
    gw_vm_destroy(vm);
    if (cfd > STDERR_FILENO) close(cfd);
    return code;
}

static int cmd_restore(const struct opts *o)
{
    char err[512] = "";
    if (!o->file) { fprintf(stderr, "godwit-vm: restore needs --file\n"); return EXIT_USAGE; }
    Godwit__V1__VmState *st;
    uint64_t t0 = gw_now_ns();
    int r = gw_snapshot_read_state(o->file, &st, err, sizeof err);
    if (r) { fprintf(stderr, "godwit-vm: %s\n", err); return EXIT_USAGE; }
    const Godwit__V1__VmConfig *sc = st->config;
    if (!sc) { fprintf(stderr, "godwit-vm: %s: no VM configuration in the state\n", o->file); godwit__v1__vm_state__free_unpacked(st, NULL); return EXIT_USAGE; }
    int cfd = open_console(o->console);
    struct gw_vm_config cfg = {
        .name = sc->name && *sc->name ? sc->name : o->name, .memory_bytes = sc->memory_bytes,
        .vcpus = sc->vcpus, .guest_spec = sc->guest_spec,
        .disk_path = o->disk ? o->disk : (sc->disk_path && *sc->disk_path ? sc->disk_path : NULL),
        .console_fd = cfd, .net = o->net, .dirty_ring_entries = (uint32_t)o->dirty_ring,
    };
    struct gw_vm *vm = NULL;
    int code = 0;
    struct gw_snapshot_stats stats;
    r = gw_vm_create(&cfg, &vm, err, sizeof err);
    if (r) { code = exit_code_for_create(r, err); goto out; }
    gw_log_set_tag(cfg.name);
    r = gw_snapshot_load_memory(o->file, &vm->mem, &stats, err, sizeof err);
    if (!r) r = gw_vm_load_state(vm, st, err, sizeof err);
    if (r) { fprintf(stderr, "godwit-vm: restore failed: %s\n", err); code = EXIT_VM_FAILED; goto out; }
    char extra[256], hex[33];
    gw_mem_digest_hex(&stats.digest, hex);
    double ms = (gw_now_ns() - t0) / 1e6;
    snprintf(extra, sizeof extra,
             "\"restore_ms\":%.1f,\"restore_data_bytes\":%llu,\"restore_mib_s\":%.1f,\"memory_digest\":\"%s\"",
             ms, (unsigned long long)stats.data_bytes, ms > 0 ? (stats.data_bytes / 1048576.0) / (ms / 1000) : 0.0, hex);
    gw_info("restored from %s: %llu MiB in %.1f ms, digest %s", o->file,
            (unsigned long long)(stats.data_bytes >> 20), ms, hex);
    code = run_vm(vm, o, extra, NULL, NULL, NULL, NULL);
out:
    gw_vm_destroy(vm);
    godwit__v1__vm_state__free_unpacked(st, NULL);
    if (cfd > STDERR_FILENO) close(cfd);
    return code;
}

/* restore-backup --progress-fd N: the restore's progress as framed JobProgress messages (frame.h)
 * on fd N, a pipe from whoever started us (godwitd's restore job), at most every REPORT_MS and
 * once at the end; the fd is closed when the restore is over, before the VM runs. The fd is
 * made non-blocking and each frame is one write of less than PIPE_BUF bytes: a reader that
 * falls behind loses frames (the next one carries the totals), it never stalls the restore
 * nor sees half a frame. */
#define REPORT_MS 250
struct restore_report {
    int fd;
    uint64_t t0, last_ns, total_bytes, data_total, chunks_total;
};

static void report_init(struct restore_report *rr, int fd, const Godwit__V1__BackupManifest *man, uint64_t t0)
{
    *rr = (struct restore_report){.fd = fd, .t0 = t0, .total_bytes = man->memory->size + man->disk->size};
    const Godwit__V1__BackupImage *ims[2] = {man->memory, man->disk};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < ims[k]->n_chunks; i++) {
            if (ims[k]->chunks[i].len != 32) continue;   /* a zero chunk: never read */
            uint64_t off = (uint64_t)i * ims[k]->chunk_size;
            rr->chunks_total++;
            rr->data_total += ims[k]->size - off < ims[k]->chunk_size ? ims[k]->size - off : ims[k]->chunk_size;
        }
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void report_send(struct restore_report *rr, const struct gw_restore_stats *st, const char *phase)
{
    Godwit__V1__JobProgress p = GODWIT__V1__JOB_PROGRESS__INIT;
    uint64_t ms = (gw_now_ns() - rr->t0) / 1000000;
    p.phase = (char *)phase;
    p.total_bytes = rr->total_bytes;
    p.sent_bytes = p.backup_bytes_written = st->data_bytes;
    p.remaining_bytes = rr->data_total > st->data_bytes ? rr->data_total - st->data_bytes : 0;
    p.backup_bytes_read = st->bytes_read;
    p.backup_chunks = st->chunks;
    p.backup_chunks_total = rr->chunks_total;
    p.total_ms = ms;
    if (ms) p.throughput_bytes_per_s = st->data_bytes * 1000 / ms;
    if (p.throughput_bytes_per_s) p.eta_ms = p.remaining_bytes * 1000 / p.throughput_bytes_per_s;
    if (gw_frame_send(rr->fd, &p.base) == -EPIPE) { close(rr->fd); rr->fd = -1; }   /* nobody reads: stop */
}

static int report_restore(void *ctx, const struct gw_restore_stats *st)
{
    struct restore_report *rr = ctx;
    uint64_t now = gw_now_ns();
    if (rr->fd < 0 || now - rr->last_ns < (uint64_t)REPORT_MS * 1000000) return 0;
    rr->last_ns = now;
    report_send(rr, st, "restore");
    return 0;
}

/* restore-backup --instant: memory is registered for faults, the disk fills behind its device,
 * and the VM starts at once while both fill. Takes t and man. *complete: the fill completed. */
static int restore_instant(const struct opts *o, struct gw_vm *vm, struct gw_backup_target *t,
                           Godwit__V1__BackupManifest *man, const char *id, uint64_t t0, bool *complete)
{
    char err[600] = "";
    struct gw_instant_params ip = {.workers = o->store.max_inflight, .outage_pause_ms = (unsigned)o->stall_ms,
                                   .disk = man->disk->size != 0, .fill_rate = (double)o->fill_rate};
    struct gw_instant_restore *ir = NULL;
    /* Tracked from the restored backup, as for an ordinary restore (before the guest runs). */
    char from_vm[128], desc[sizeof t->store->desc];
    snprintf(from_vm, sizeof from_vm, "%s", man->vm_name);
    snprintf(desc, sizeof desc, "%s", t->store->desc);
    int r = gw_instant_restore_start(t, man, vm, &ip, &ir, err, sizeof err);
    if (r) { fprintf(stderr, "godwit-vm: restore refused: %s\n", err); return EXIT_VM_FAILED; }
    int sr = gw_backup_since_restored(vm, from_vm, id, desc);
    if (sr) gw_warn("restore: no change tracking from the restored backup (%s): its first backup stores whole chunks", strerror(-sr));
    char extra[512];
    snprintf(extra, sizeof extra,
             "\"restore_ms\":%.1f,\"restore_instant\":true,\"restore_request_mono_ns\":%llu,\"backup\":\"%s\"",
             (gw_now_ns() - t0) / 1e6, (unsigned long long)t0, id);
    gw_info("restoring backup %s of %s as %s instantly: the guest starts now", id, man->vm_name, vm->name);
    return run_vm(vm, o, extra, NULL, NULL, ir, complete);
}

/* An ordinary restore's store and reading run on a thread at --cpu-priority (gw_cpu_prio_run):
 * the store client's threads and the decoding threads are made there and inherit it. */
struct low_open {
    const struct opts *o;
    struct gw_backup_target *t;
    char *err;
    size_t errlen;
};

static int low_open(void *arg)
{
    struct low_open *c = arg;
    return gw_backup_target_open(&c->o->store, c->t, c->err, c->errlen);
}

struct low_restore {
    struct gw_backup_target *t;
    const Godwit__V1__BackupManifest *man;
    struct gw_vm *vm;
    const char *disk;
    struct restore_report *rr;
    struct gw_restore_stats *rs;
    char *err;
    size_t errlen;
    char ran_at[32];   /* the priority the thread got, read back from the kernel */
};

static int low_restore(void *arg)
{
    struct low_restore *c = arg;
    struct gw_cpu_prio cur;
    gw_cpu_prio_current(&cur);
    gw_cpu_prio_name(&cur, c->ran_at, sizeof c->ran_at);
    return gw_backup_restore_ex(c->t, c->man, &c->vm->mem, c->disk, report_restore, c->rr, c->rs, c->err, c->errlen);
}

/* A new VM from a backup in a chunk store; under a new name it is a clone. */
static int cmd_restore_backup(const struct opts *o)
{
    if (!o->store.target || !o->from_vm) { fprintf(stderr, "godwit-vm: restore-backup needs --store SPEC and --vm NAME\n"); return EXIT_USAGE; }
    if (o->fill_rate && !o->instant) { fprintf(stderr, "godwit-vm: --fill-rate paces an --instant restore's fill\n"); return EXIT_USAGE; }
    if (o->cpu_set && o->instant) {
        fprintf(stderr, "godwit-vm: --cpu-priority lowers an ordinary restore; an --instant restore's fill is what its "
                        "guest waits for\n");
        return EXIT_USAGE;
    }
    char err[512] = "", id[GW_BACKUP_ID_BUF];
    uint64_t t0 = gw_now_ns();
    struct gw_backup_target t;
    struct low_open lo = {.o = o, .t = &t, .err = err, .errlen = sizeof err};
    if (o->instant ? low_open(&lo) : gw_cpu_prio_run(&o->cpu, low_open, &lo)) {
        fprintf(stderr, "godwit-vm: %s\n", err);
        return EXIT_VM_FAILED;
    }
    Godwit__V1__BackupManifest *man = NULL;
    struct gw_vm *vm = NULL;
    int code = 0, cfd = -1;
    bool made_rbd = false, made_file = false;
    if (o->backup_id) snprintf(id, sizeof id, "%s", o->backup_id);
    else if (gw_backup_latest(&t, o->from_vm, id)) {
        fprintf(stderr, "godwit-vm: no backup of VM %s in %s\n", o->from_vm, t.store->desc);
        code = EXIT_VM_FAILED;
        goto out;
    }
    if (gw_manifest_load(t.store, &t.keys, o->from_vm, id, &man, err, sizeof err)) {
        fprintf(stderr, "godwit-vm: restore refused: %s\n", err);
        code = EXIT_VM_FAILED;
        goto out;
    }
    const Godwit__V1__VmConfig *sc = man->state->config;
    if (man->disk->size && !o->disk) {
        fprintf(stderr, "godwit-vm: backup %s has a disk: name a new image with --disk FILE\n", id);
        code = EXIT_USAGE;
        goto out;
    }
    bool rbd_disk = man->disk->size && gw_blk_is_rbd(o->disk);
    if (rbd_disk) {
        /* A new image, never one that exists (it may be another VM's disk). */
        if (gw_blk_rbd_create(o->disk, man->disk->size, err, sizeof err)) {
            fprintf(stderr, "godwit-vm: %s\n", err);
            code = EXIT_VM_FAILED;
            goto out;
        }
        made_rbd = true;   /* ours until the VM runs on it: a failure before removes it */
    } else if (man->disk->size) {
        /* The image must exist for the device to attach; its content is written below (an
         * instant restore fills it behind the device: it must start as holes). A new file, or
         * an empty one made for us (godwitd makes it with O_EXCL and removes it on failure):
         * never a file with data, which may be another VM's disk. */
        int dfd = gw_checked_open(o->disk, O_WRONLY | O_CREAT | O_EXCL, 0644);
        made_file = dfd >= 0;   /* ours until the VM runs on it: a failure before removes it */
        struct stat sb;
        if (dfd == -EEXIST && (dfd = gw_checked_open(o->disk, O_WRONLY, 0)) >= 0 &&
            (fstat(dfd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > 0)) {
            fprintf(stderr, "godwit-vm: disk image %s exists and is not empty: restore into a new file\n", o->disk);
            close(dfd);
            code = EXIT_USAGE;
            goto out;
        }
        if (dfd < 0 || ftruncate(dfd, (off_t)man->disk->size) < 0) {
            fprintf(stderr, "godwit-vm: disk image %s: %s\n", o->disk, strerror(dfd < 0 ? -dfd : errno));
            if (dfd >= 0) close(dfd);
            code = EXIT_VM_FAILED;
            goto out;
        }
        close(dfd);
    }
    cfd = open_console(o->console);
    struct gw_vm_config cfg = {
        .name = o->name_set ? o->name : sc->name, .memory_bytes = sc->memory_bytes, .vcpus = sc->vcpus,
        .guest_spec = sc->guest_spec, .disk_path = man->disk->size ? o->disk : NULL, .console_fd = cfd,
        /* An ordinary restore writes the image first, through its own handle; an instant one
         * writes through the VM's, which holds the lock from the start. */
        .disk_lock_later = rbd_disk && !o->instant,
    };
    int r = gw_vm_create(&cfg, &vm, err, sizeof err);
    if (r) { code = exit_code_for_create(r, err); goto out; }
    gw_log_set_tag(cfg.name);
    if (o->instant) {
        bool complete = false;
        code = restore_instant(o, vm, &t, man, id, t0, &complete);
        man = NULL;   /* taken (and t emptied) by the instant restore */
        /* A filled image is the VM's disk from then on; one short of its fill is removed. */
        if (complete) made_rbd = made_file = false;
        goto out;
    }
    struct gw_restore_stats rs;
    struct restore_report rr;
    report_init(&rr, o->progress_fd, man, t0);
    /* The disk is written before the VM opens it: gw_vm_create attached the path only. */
    struct low_restore lr = {.t = &t, .man = man, .vm = vm, .disk = man->disk->size ? o->disk : NULL, .rr = &rr,
                             .rs = &rs, .err = err, .errlen = sizeof err};
    r = gw_cpu_prio_run(&o->cpu, low_restore, &lr);
    if (rr.fd >= 0) {
        report_send(&rr, &rs, r ? "restore-failed" : "restored");
        close(rr.fd);
    }
    /* Changes are tracked from here, relative to the restored backup: a clone's backups store
     * what it changed as page patches (backup_since.h). Before the state is loaded, so
     * nothing written from now on is missed; without tracking backups just store more. */
    int sr = r ? 0 : gw_backup_since_restored(vm, man->vm_name, id, t.store->desc);
    if (sr)
        gw_warn("restore: no change tracking from the restored backup (%s): its first backup stores whole chunks",
                strerror(-sr));
    if (!r) r = gw_vm_load_state(vm, man->state, err, sizeof err);
    if (!r && rbd_disk && (r = gw_vm_disk_lock(vm, true, 5000)))
        snprintf(err, sizeof err, "disk %s: %s", o->disk, r == -EAGAIN ? "in use: another VM or host holds its lock" : strerror(-r));
    if (r) {
        fprintf(stderr, "godwit-vm: restore refused: %s\n", err);
        code = EXIT_VM_FAILED;
        goto out;
    }
    double ms = (gw_now_ns() - t0) / 1e6, data_ms = rs.elapsed_ns / 1e6;
    char extra[512];
    snprintf(extra, sizeof extra,
             "\"restore_ms\":%.1f,\"restore_data_bytes\":%llu,\"restore_mib_s\":%.1f,\"memory_digest\":\"%s\",\"backup\":\"%s\","
             "\"restore_start_mono_ns\":%llu,\"restore_cpu_priority\":\"%s\"",
             ms, (unsigned long long)rs.data_bytes, data_ms > 0 ? (rs.data_bytes / 1048576.0) / (data_ms / 1000) : 0.0,
             rs.digest_hex, id, (unsigned long long)gw_now_ns(), lr.ran_at);
    gw_info("restored backup %s of %s as %s: %llu chunks in %.1f ms, digest %s", id, o->from_vm, cfg.name,
            (unsigned long long)rs.chunks, ms, rs.digest_hex);
    gw_backup_target_close(&t);
    made_rbd = made_file = false;
    code = run_vm(vm, o, extra, NULL, NULL, NULL, NULL);
out:
    if (t.store) gw_backup_target_close(&t);
    gw_vm_destroy(vm);
    /* Never leave the image made a moment ago half filled (after the VM closed it). */
    if (made_rbd && gw_blk_rbd_remove(o->disk, err, sizeof err)) fprintf(stderr, "godwit-vm: %s\n", err);
    if (made_file && unlink(o->disk) < 0) fprintf(stderr, "godwit-vm: removing %s: %s\n", o->disk, strerror(errno));
    if (man) godwit__v1__backup_manifest__free_unpacked(man, NULL);
    if (cfd > STDERR_FILENO) close(cfd);
    return code;
}

static void print_listening(void *ctx, const char *url)
{
    (void)ctx;
    /* One line for whoever started us (tests, the daemon): where to point the source. */
    printf("{\"listening\":\"%s\"}\n", url);
    fflush(stdout);
}

/* The incoming side's post-copy hand-over (gw_incoming_params.postcopy). */
struct incoming_pc {
    struct gw_postcopy_in *in;
    int timeout_ms;
    const struct opts *o;
    const uint8_t *secret;
    size_t secret_len;
    bool took_resume_fd;
};

static int incoming_postcopy(void *ctx, struct gw_session *ses, struct gw_listener *l, struct gw_vm *vm, char *err,
                             size_t errlen)
{
    struct incoming_pc *pc = ctx;
    /* A source whose link breaks reconnects on the same listener; it gets its own TLS
     * context (the one of this call is freed when the incoming run ends). */
    const struct opts *o = pc->o;
    struct gw_postcopy_in_resume rs = {.l = l, .fd_src = l ? -1 : o->resume_fd, .secret = pc->secret,
                                       .secret_len = pc->secret_len, .test_fault = o->test_fault};
    pc->took_resume_fd = rs.fd_src >= 0;
    if ((l || rs.fd_src >= 0) && !o->tls_off) {
        struct gw_sec_cfg sec = {.tls = true, .secret = pc->secret, .secret_len = pc->secret_len,
                                 .cert = o->tls_cert, .key = o->tls_key, .ca = o->tls_ca};
        struct gw_err te = {0};
        if (gw_tls_ctx_new(&sec, true, &rs.tls, &te)) {
            gw_warn("incoming: no TLS context for a reconnecting source (%s): post-copy cannot recover here", te.msg);
            if (l) gw_listener_close(l);
            rs.l = NULL;
        }
    }
    return gw_postcopy_in_start(ses, vm, pc->timeout_ms, &rs, &pc->in, err, errlen);
}

/* The session token the daemon wrote for a listener of ours (64 hex digits), into
 * token[GW_SEC_TOKEN_SIZE]; the file is removed once read (the token is good for one
 * migration). 0 or -errno. */
static int read_session_token(const char *path, uint8_t *token)
{
    char hex[2 * GW_SEC_TOKEN_SIZE + 2];
    int n = gw_read_small_file(path, hex, sizeof hex);
    unlink(path);
    if (n < 0) return n;
    if (n < 2 * (int)GW_SEC_TOKEN_SIZE) return -EINVAL;
    return gw_hex_decode(hex, token, GW_SEC_TOKEN_SIZE);
}

static int cmd_incoming(const struct opts *o)
{
    struct incoming_pc pc = {.timeout_ms = 60000, .o = o};
    if (!o->listen == !o->nfds) { fprintf(stderr, "godwit-vm: incoming needs --listen URL or --fd N (repeated per stream)\n"); return EXIT_USAGE; }
    if (!o->secret_file) { fprintf(stderr, "godwit-vm: incoming needs --secret-file\n"); return EXIT_USAGE; }
    uint8_t secret[1024];
    int n = gw_runner_read_secret(o->secret_file, secret, sizeof secret);
    if (n < 0) {
        fprintf(stderr, "godwit-vm: cluster secret %s: %s\n", o->secret_file, n == -EINVAL ? "shorter than 32 bytes" : strerror(-n));
        return EXIT_USAGE;
    }
    uint8_t token[GW_SEC_TOKEN_SIZE];
    int tr = o->token_file ? read_session_token(o->token_file, token) : 0;
    if (tr < 0) {
        fprintf(stderr, "godwit-vm: session token %s: %s\n", o->token_file, tr == -EINVAL ? "not 64 hex digits" : strerror(-tr));
        return EXIT_USAGE;
    }
    /* TCP streams (ours, or handed over by a daemon) start with a preamble; RDMA has none. */
    bool tcp = o->nfds || !strncmp(o->listen, "tcp:", 4);
    if (!tcp && !o->tls_off) { fprintf(stderr, "godwit-vm: migration TLS runs over TCP only; use --tls off for %s\n", o->listen); return EXIT_USAGE; }
    struct gw_sec_cfg sec = {.tls = !o->tls_off, .secret = secret, .secret_len = (size_t)n,
                             .cert = o->tls_cert, .key = o->tls_key, .ca = o->tls_ca};
    struct gw_tls_ctx *tls = NULL;
    struct gw_err te = {0};
    pc.secret = secret;
    pc.secret_len = (size_t)n;
    if (gw_tls_ctx_new(&sec, true, &tls, &te)) { fprintf(stderr, "godwit-vm: %s\n", te.msg); return EXIT_USAGE; }
    if (o->tls_off) gw_warn("incoming migration in plaintext (TLS turned off)");
    int cfd = open_console(o->console);
    struct gw_incoming_params p = {
        .listen_url = o->nfds ? NULL : o->listen, .nfds = o->nfds, .secret = secret, .secret_len = (size_t)n,
        .disk_path = o->disk, .net = o->net, .console_fd = cfd, .on_listening = print_listening,
        .preamble = tcp, .tls = tls,
        .expect_name = o->name_set ? o->name : NULL,
        .expect_memory = o->memory_set ? o->memory : 0, .expect_vcpus = o->vcpus_set ? o->vcpus : 0,
        .session_token = o->token_file ? token : NULL,
        .postcopy = incoming_postcopy, .postcopy_ctx = &pc,
    };
    memcpy(p.fds, o->fds, sizeof p.fds);
    struct gw_vm *vm = NULL;
    struct gw_mig_progress prog;
    char err[512] = "";
    int r = gw_incoming_run(&p, &vm, &prog, err, sizeof err);
    if (!pc.took_resume_fd && o->resume_fd >= 0) close(o->resume_fd);   /* not a post-copy: nothing comes back */
    memset(secret, 0, sizeof secret);
    gw_tls_ctx_free(tls);
    int code;
    if (r) {
        fprintf(stderr, "godwit-vm: incoming migration failed: %s\n", err);
        if (o->json) {
            printf("{\"status\":\"error\",\"state\":\"discarded\",\"error\":");
            gw_json_str(stdout, err);
            printf("}\n");
        }
        code = EXIT_VM_FAILED;
    } else {
        gw_info("vm %s: arrived by migration (%llu MiB on the wire) and runs here", vm->name,
                (unsigned long long)(prog.sent_bytes >> 20));
        code = run_vm(vm, o, NULL, &prog, pc.in, NULL, NULL);
        gw_vm_destroy(vm);
    }
    if (cfd > STDERR_FILENO) close(cfd);
    return code;
}

static void print_progress_json(const Godwit__V1__RunnerReply *rep)
{
    const Godwit__V1__RunnerStatus *st = rep->status;
    const Godwit__V1__JobProgress *m = st ? st->migration : NULL;
    printf("{\"ok\":%s,\"error\":", rep->ok ? "true" : "false");
    gw_json_str(stdout, rep->error);
    printf(",\"state\":\"%s\"", st && st->state ? st->state : "");
    if (m) {
        printf(",\"phase\":\"%s\",\"round\":%u,\"total_bytes\":%llu,\"sent_bytes\":%llu,\"remaining_bytes\":%llu,"
               "\"dirty_rate_bytes_per_s\":%llu,\"throughput_bytes_per_s\":%llu,\"expected_downtime_ms\":%llu,"
               "\"measured_downtime_ms\":%llu,\"setup_ms\":%llu,\"total_ms\":%llu,\"migration_error\":",
               m->phase, m->round, (unsigned long long)m->total_bytes, (unsigned long long)m->sent_bytes,
               (unsigned long long)m->remaining_bytes, (unsigned long long)m->dirty_rate_bytes_per_s,
               (unsigned long long)m->throughput_bytes_per_s, (unsigned long long)m->expected_downtime_ms,
               (unsigned long long)m->measured_downtime_ms, (unsigned long long)m->setup_ms,
               (unsigned long long)m->total_ms);
        gw_json_str(stdout, st->migration_error);
    }
    printf("}\n");
    fflush(stdout);
}

static int cmd_migrate(const struct opts *o)
{
    if (!o->control || !o->to) { fprintf(stderr, "godwit-vm: migrate needs --control SOCK and --to URL\n"); return EXIT_USAGE; }
    Godwit__V1__MigrationPolicy pol = GODWIT__V1__MIGRATION_POLICY__INIT;
    pol.mode = o->mode && !strcmp(o->mode, "postcopy") ? GODWIT__V1__MIGRATION_POLICY__MODE__POSTCOPY
               : o->mode && !strcmp(o->mode, "hybrid") ? GODWIT__V1__MIGRATION_POLICY__MODE__HYBRID
               : GODWIT__V1__MIGRATION_POLICY__MODE__PRECOPY;
    pol.streams = (uint32_t)o->streams;
    pol.downtime_limit_ms = (uint32_t)o->downtime_ms;
    pol.bandwidth_limit_bytes_per_s = o->bandwidth;
    pol.timeout_s = (uint32_t)o->timeout_s;
    pol.auto_converge = o->auto_converge;
    pol.max_rounds = (uint32_t)o->max_rounds;
    pol.recover_timeout_s = (uint32_t)o->recover_timeout_s;
    pol.link_timeout_ms = (uint32_t)o->link_timeout_ms;
    pol.postcopy_no_priority_channel = o->no_priority;
    pol.hybrid_dirty_rate_pct = (uint32_t)o->switch_dirty_pct;
    pol.hybrid_ms_per_gib = (uint32_t)o->switch_ms_per_gib;
    if (o->compress) {
        if (!strcmp(o->compress, "lz4")) pol.compression = GODWIT__V1__MIGRATION_POLICY__COMPRESSION__LZ4;
        else if (!strcmp(o->compress, "none")) pol.compression = GODWIT__V1__MIGRATION_POLICY__COMPRESSION__NONE;
        else if (strcmp(o->compress, "auto")) { fprintf(stderr, "godwit-vm: --compress is lz4, none or auto\n"); return EXIT_USAGE; }
    }
    Godwit__V1__RunnerMigrateRequest mr = GODWIT__V1__RUNNER_MIGRATE_REQUEST__INIT;
    mr.destination = (char *)o->to;
    mr.policy = &pol;
    mr.tls_off = o->tls_off;
    mr.tls_aes128 = !o->tls_aes256;
    /* The runner may run elsewhere: absolute paths. */
    char cert[4096], key[4096], ca[4096];
    mr.tls_cert = (char *)(!o->tls_cert ? "" : realpath(o->tls_cert, cert) ? cert : o->tls_cert);
    mr.tls_key = (char *)(!o->tls_key ? "" : realpath(o->tls_key, key) ? key : o->tls_key);
    mr.tls_ca = (char *)(!o->tls_ca ? "" : realpath(o->tls_ca, ca) ? ca : o->tls_ca);
    char abs[4096];
    if (o->secret_file) mr.secret_file = realpath(o->secret_file, abs) ? abs : (char *)o->secret_file;
    Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
    req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_MIGRATE;
    req.migrate = &mr;
    Godwit__V1__RunnerReply *rep = NULL;
    int r = gw_runner_call(o->control, &req, &rep, CLIENT_TIMEOUT_MS);
    if (r) { fprintf(stderr, "godwit-vm: runner at %s: %s\n", o->control, strerror(-r)); return EXIT_VM_FAILED; }
    if (!rep->ok) {
        fprintf(stderr, "godwit-vm: migrate: %s\n", rep->error);
        if (o->json) print_progress_json(rep);
        godwit__v1__runner_reply__free_unpacked(rep, NULL);
        return EXIT_VM_FAILED;
    }
    godwit__v1__runner_reply__free_unpacked(rep, NULL);
    if (!o->wait) return 0;
    /* Poll until the runner reports an end: it exits when the VM has left, so a vanished
     * socket right after "switchover" means success; the final status says so first. */
    Godwit__V1__RunnerStatusRequest sr = GODWIT__V1__RUNNER_STATUS_REQUEST__INIT;
    req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_STATUS;
    req.status = &sr;
    char last[4096] = "";
    for (;;) {
        usleep(50000);
        rep = NULL;
        r = gw_runner_call(o->control, &req, &rep, CLIENT_TIMEOUT_MS);
        if (r) break;
        const Godwit__V1__JobProgress *m = rep->status ? rep->status->migration : NULL;
        const char *ph = m && m->phase ? m->phase : "";
        /* A post-copy whose link broke reconnects by itself: paused is an end only once it
         * gave up (then it waits for resume-migration or resolve). */
        bool gave_up = !strcmp(ph, "postcopy-paused") && rep->status->migration_error &&
                       strstr(rep->status->migration_error, "gave up");
        bool done = !strcmp(ph, "completed") || !strcmp(ph, "failed") || !strcmp(ph, "cancelled") ||
                    !strcmp(ph, "in-doubt") || gave_up;
        if (done || !o->json) {
            if (o->json) print_progress_json(rep);
            else if (m) fprintf(stderr, "\r%-10s round %u  sent %llu MiB  remaining %llu MiB  %.0f MiB/s   ", ph,
                                m->round, (unsigned long long)(m->sent_bytes >> 20),
                                (unsigned long long)(m->remaining_bytes >> 20), m->throughput_bytes_per_s / 1048576.0);
        }
        snprintf(last, sizeof last, "%s", ph);
        int code = !strcmp(ph, "completed") ? 0 : EXIT_VM_FAILED;
        if (done && !o->json) fprintf(stderr, "\nmigration %s%s%s\n", ph, code ? ": " : "", code ? rep->status->migration_error : "");
        godwit__v1__runner_reply__free_unpacked(rep, NULL);
        if (done) return code;
    }
    fprintf(stderr, "godwit-vm: lost the runner during the migration (last phase '%s')\n", last);
    return EXIT_VM_FAILED;
}

/* Sends one request to a running runner and prints the reply. */
static int cmd_client(const char *verb, const struct opts *o)
{
    if (!o->control) { fprintf(stderr, "godwit-vm: %s needs --control SOCK\n", verb); return EXIT_USAGE; }
    Godwit__V1__RunnerRequest req = GODWIT__V1__RUNNER_REQUEST__INIT;
    Godwit__V1__RunnerStatusRequest s = GODWIT__V1__RUNNER_STATUS_REQUEST__INIT;
    Godwit__V1__RunnerPauseRequest p = GODWIT__V1__RUNNER_PAUSE_REQUEST__INIT;
    Godwit__V1__RunnerResumeRequest rs = GODWIT__V1__RUNNER_RESUME_REQUEST__INIT;
    Godwit__V1__RunnerStopRequest sp = GODWIT__V1__RUNNER_STOP_REQUEST__INIT;
    Godwit__V1__RunnerSaveRequest sv = GODWIT__V1__RUNNER_SAVE_REQUEST__INIT;
    Godwit__V1__RunnerResolveRequest rv = GODWIT__V1__RUNNER_RESOLVE_REQUEST__INIT;
    Godwit__V1__RunnerSwitchToPostcopyRequest sw = GODWIT__V1__RUNNER_SWITCH_TO_POSTCOPY_REQUEST__INIT;
    Godwit__V1__RunnerResumeMigrationRequest rm = GODWIT__V1__RUNNER_RESUME_MIGRATION_REQUEST__INIT;
    char cwd[2048], abs[4096]; /* outlives the request that points into it */
    if (!strcmp(verb, "status")) { req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_STATUS; req.status = &s; }
    else if (!strcmp(verb, "pause")) { req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_PAUSE; req.pause = &p; }
    else if (!strcmp(verb, "resume")) { req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_RESUME; req.resume = &rs; }
    else if (!strcmp(verb, "stop")) { req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_STOP; req.stop = &sp; }
    else if (!strcmp(verb, "resolve")) {
        if (o->keep_source == o->keep_destination) {
            fprintf(stderr, "godwit-vm: resolve needs exactly one of --keep-source and --keep-destination\n");
            return EXIT_USAGE;
        }
        rv.keep_source = o->keep_source;
        req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_RESOLVE;
        req.resolve = &rv;
    } else if (!strcmp(verb, "resume-migration")) {
        rm.destination = (char *)(o->to ? o->to : "");
        req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_RESUME_MIGRATION;
        req.resume_migration = &rm;
    } else if (!strcmp(verb, "postcopy")) {
        req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_SWITCH_TO_POSTCOPY;
        req.switch_to_postcopy = &sw;
    } else {
        if (!o->file) { fprintf(stderr, "godwit-vm: save needs --file\n"); return EXIT_USAGE; }
        /* The runner may run elsewhere: hand it an absolute path. */
        if (o->file[0] != '/' && !getcwd(cwd, sizeof cwd)) { perror("godwit-vm: getcwd"); return EXIT_USAGE; }
        if (o->file[0] != '/' && (size_t)snprintf(abs, sizeof abs, "%.2047s/%.2040s", cwd, o->file) >= sizeof abs) return EXIT_USAGE;
        sv.path = o->file[0] == '/' ? (char *)o->file : abs;
        sv.stop_after = o->stop_after;
        req.op_case = GODWIT__V1__RUNNER_REQUEST__OP_SAVE;
        req.save = &sv;
    }
    Godwit__V1__RunnerReply *rep = NULL;
    /* A save writes all of guest memory: give it time. */
    int r = gw_runner_call(o->control, &req, &rep, req.op_case == GODWIT__V1__RUNNER_REQUEST__OP_SAVE ? 600000 : CLIENT_TIMEOUT_MS);
    if (r == -ENOENT || r == -ECONNREFUSED) {
        fprintf(stderr, "godwit-vm: cannot reach runner at %s: %s\n", o->control, strerror(-r));
        return EXIT_VM_FAILED;
    }
    if (r) { fprintf(stderr, "godwit-vm: runner at %s: %s\n", o->control, strerror(-r)); return EXIT_VM_FAILED; }
    const Godwit__V1__RunnerStatus *st = rep->status;
    const Godwit__V1__GuestCounters *c = st ? st->counters : NULL;
    if (o->json) {
        printf("{\"ok\":%s,\"error\":", rep->ok ? "true" : "false");
        gw_json_str(stdout, rep->error);
        printf(",\"state\":\"%s\",\"paused_by\":\"%s\",\"guest_ready\":%s", st && st->state ? st->state : "",
               st && st->paused_by ? st->paused_by : "", st && st->guest_ready ? "true" : "false");
        if (c) printf(",\"guest_pages_written\":%llu,\"guest_verify_errors\":%llu,\"guest_pages_verified\":%llu",
                      (unsigned long long)c->pages_written, (unsigned long long)c->verify_errors,
                      (unsigned long long)c->pages_verified);
        if (c) printf(",\"guest_ticks\":%llu", (unsigned long long)c->ticks);
        if (st && st->n_disk_latency_buckets) {
            /* The histogram as "bucket:count" pairs of the non-empty buckets. */
            printf(",\"disk_requests\":%llu,\"disk_p50_us\":%llu,\"disk_p99_us\":%llu,\"disk_latency_buckets\":\"",
                   (unsigned long long)st->disk_requests, (unsigned long long)st->disk_p50_us,
                   (unsigned long long)st->disk_p99_us);
            for (size_t i = 0, n = 0; i < st->n_disk_latency_buckets; i++)
                if (st->disk_latency_buckets[i]) printf("%s%zu:%llu", n++ ? "," : "", i, (unsigned long long)st->disk_latency_buckets[i]);
            printf("\",\"disk_window_ms\":%u,\"disk_p99_windows_us\":[", st->disk_window_ms);
            for (size_t i = 0; i < st->n_disk_p99_windows_us; i++) printf("%s%u", i ? "," : "", st->disk_p99_windows_us[i]);
            printf("],\"disk_window_ages_ms\":[");
            for (size_t i = 0; i < st->n_disk_window_ages_ms; i++) printf("%s%u", i ? "," : "", st->disk_window_ages_ms[i]);
            printf("]");
        }
        const Godwit__V1__JobProgress *m = st ? st->migration : NULL;
        if (m) {
            printf(",\"phase\":\"%s\",\"migration_error\":", m->phase ? m->phase : "");
            gw_json_str(stdout, st->migration_error);
            if (m->postcopy_pages_requested || m->postcopy_ms || !strncmp(m->phase ? m->phase : "", "postcopy", 8))
                printf(",\"postcopy_pages_requested\":%llu,\"postcopy_pages_remaining\":%llu,"
                       "\"postcopy_request_p50_us\":%llu,\"postcopy_request_p99_us\":%llu,\"postcopy_blocked_ms\":%llu,"
                       "\"postcopy_recoveries\":%llu,\"postcopy_recovery_ms\":%llu",
                       (unsigned long long)m->postcopy_pages_requested, (unsigned long long)m->postcopy_pages_remaining,
                       (unsigned long long)m->postcopy_request_p50_us, (unsigned long long)m->postcopy_request_p99_us,
                       (unsigned long long)m->postcopy_blocked_ms, (unsigned long long)m->postcopy_recoveries,
                       (unsigned long long)m->postcopy_recovery_ms);
            if (m->n_postcopy_vcpu_blocked_ms) {
                printf(",\"postcopy_vcpu_blocked_ms\":[");
                for (size_t i = 0; i < m->n_postcopy_vcpu_blocked_ms; i++)
                    printf("%s%llu", i ? "," : "", (unsigned long long)m->postcopy_vcpu_blocked_ms[i]);
                printf("]");
            }
        }
        const Godwit__V1__InstantRestoreProgress *ip = st ? st->instant_restore : NULL;
        if (ip) {
            printf(",\"instant_phase\":\"%s\",\"instant_chunks_total\":%llu,\"instant_chunks_placed\":%llu,"
                   "\"instant_chunks_faulted\":%llu,\"instant_bytes_placed\":%llu,\"instant_bytes_total\":%llu,"
                   "\"instant_read_errors\":%llu,\"instant_stalls\":%llu,\"instant_fault_p99_us\":%llu,"
                   "\"instant_digest_ok\":%s,\"instant_error\":",
                   ip->phase ? ip->phase : "", (unsigned long long)ip->chunks_total,
                   (unsigned long long)ip->chunks_placed, (unsigned long long)ip->chunks_faulted,
                   (unsigned long long)ip->bytes_placed, (unsigned long long)ip->bytes_total,
                   (unsigned long long)ip->read_errors, (unsigned long long)ip->stalls,
                   (unsigned long long)ip->fault_p99_us, ip->digest_ok ? "true" : "false");
            gw_json_str(stdout, ip->error);
        }
        if (rep->save) printf(",\"save_ns\":%llu,\"save_data_bytes\":%llu,\"memory_digest\":\"%s\"",
                              (unsigned long long)rep->save->elapsed_ns, (unsigned long long)rep->save->data_bytes,
                              rep->save->memory_digest);
        printf("}\n");
    } else if (!rep->ok) {
        fprintf(stderr, "godwit-vm: %s\n", rep->error);
    } else {
        printf("%s: %s", st && st->name ? st->name : "vm", st && st->state ? st->state : "?");
        if (c) printf(", pages written %llu, verify errors %llu", (unsigned long long)c->pages_written,
                      (unsigned long long)c->verify_errors);
        if (st && st->instant_restore)
            printf(", restore %s %llu/%llu MiB%s%s", st->instant_restore->phase,
                   (unsigned long long)(st->instant_restore->bytes_placed >> 20),
                   (unsigned long long)(st->instant_restore->bytes_total >> 20),
                   st->instant_restore->error && *st->instant_restore->error ? ": " : "",
                   st->instant_restore->error ? st->instant_restore->error : "");
        if (rep->save) printf(", saved %llu MiB in %.1f ms (digest %s)", (unsigned long long)(rep->save->data_bytes >> 20),
                              rep->save->elapsed_ns / 1e6, rep->save->memory_digest);
        printf("\n");
    }
    int code = rep->ok ? 0 : EXIT_VM_FAILED;
    godwit__v1__runner_reply__free_unpacked(rep, NULL);
    return code;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *verb = argv[1];
    /* A state that carries the backup bitmap (a suspend file, a migration) gives it back. */
    gw_vm_set_state_ext_factory(gw_backup_since_make);
    if (gw_runner_is_backup_verb(verb)) { signal(SIGPIPE, SIG_IGN); return gw_runner_cmd_backup(verb, argc - 1, argv + 1); }
    if (gw_runner_is_store_verb(verb)) { signal(SIGPIPE, SIG_IGN); return gw_runner_cmd_store(verb, argc - 1, argv + 1); }
    struct opts o;
    if (parse_opts(argc - 1, argv + 1, &o)) { usage(stderr); return EXIT_USAGE; }
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(verb, "run")) { block_term_signals(); return cmd_run(&o); }
    if (!strcmp(verb, "restore")) { block_term_signals(); return cmd_restore(&o); }
    if (!strcmp(verb, "incoming")) { block_term_signals(); return cmd_incoming(&o); }
    if (!strcmp(verb, "restore-backup")) { block_term_signals(); return cmd_restore_backup(&o); }
    if (!strcmp(verb, "migrate")) return cmd_migrate(&o);
    if (!strcmp(verb, "save") || !strcmp(verb, "status") || !strcmp(verb, "pause") ||
        !strcmp(verb, "resume") || !strcmp(verb, "stop") || !strcmp(verb, "resolve") || !strcmp(verb, "postcopy") ||
        !strcmp(verb, "resume-migration"))
        return cmd_client(verb, &o);
    fprintf(stderr, "godwit-vm: unknown command '%s'\n", verb);
    usage(stderr);
    return EXIT_USAGE;
}
