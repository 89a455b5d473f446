/* Option parsing shared by the VM benchmarks (see bench_opts.h). */
#include "bench/bench_opts.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "engine/common/limits.h"
#include "engine/common/util.h"
#include "guest/abi.h"

int gw_bench_parse_opts(const char *name, int argc, char **argv, struct gw_bench_opts *o)
{
    static const struct option lo[] = {
        {"memory", 1, 0, 'm'}, {"ws", 1, 0, 'w'}, {"rate", 1, 0, 'r'}, {"seconds", 1, 0, 's'},
        {"vcpus", 1, 0, 'c'}, {"pattern", 1, 0, 'p'}, {"streams", 1, 0, 'n'}, {"compress", 1, 0, 'z'},
        {"downtime-ms", 1, 0, 'd'}, {"dir", 1, 0, 'D'}, {"json", 0, 0, 'j'}, {"tls", 1, 0, 't'},
        {"target", 1, 0, 'T'}, {"mode", 1, 0, 'M'}, {"link", 1, 0, 'L'}, {"cut-link-at", 1, 0, 'A'},
        {"cut-link-for", 1, 0, 'F'}, {"no-priority-channel", 0, 0, 'P'}, {"qemu", 1, 0, 'Q'}, {"dirty-ring", 1, 0, 'R'},
        {"vs-precopy", 0, 0, 'V'}, {"pairs", 1, 0, 'N'},
        /* The same two as the issue spells them. */
        {"cut-link-at-ms", 1, 0, 'A'}, {"cut-for-ms", 1, 0, 'F'}, {0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': bad = gw_parse_size(optarg, &o->memory); break;
        case 'w': bad = gw_parse_size(optarg, &o->ws); break;
        case 'r': bad = gw_parse_size(optarg, &o->rate); break;
        case 's': bad = gw_parse_u64(optarg, 1, 3600, &o->seconds); break;
        case 'c': bad = gw_parse_u64(optarg, 1, GW_MAX_VCPUS, &o->vcpus); break;
        case 'p': o->pattern = optarg; break;
        case 'n': bad = gw_parse_u64(optarg, 1, 16, &o->streams); break;
        case 'z': o->compress = optarg; break;
        case 'd': bad = gw_parse_u64(optarg, 1, 100000, &o->downtime_ms); break;
        case 'D': o->dir = optarg; break;
        case 'T': o->target = optarg; break;
        case 'j': o->json = true; break;
        case 'L': o->link = optarg; break;
        case 'A': bad = gw_parse_u64(optarg, 0, 3600000, &o->cut_at_ms); break;
        case 'F': bad = gw_parse_u64(optarg, 1, 3600000, &o->cut_for_ms); break;
        case 'P': o->no_priority = true; break;
        case 'Q': o->qemu = optarg; break;
        case 'R': bad = gw_parse_u64(optarg, GW_LIMIT_DIRTY_RING_MIN, GW_LIMIT_DIRTY_RING_MAX, &o->dirty_ring); break;
        case 'V': o->vs_precopy = true; break;
        case 'N': bad = gw_parse_u64(optarg, 1, GW_BENCH_MAX_PAIRS, &o->pairs); break;
        case 'M':
            o->mode = optarg;
            bad = strcmp(optarg, "precopy") && strcmp(optarg, "postcopy") && strcmp(optarg, "hybrid");
            break;
        case 't':
            o->tls = optarg;
            bad = strcmp(optarg, "on") && strcmp(optarg, "off") && strcmp(optarg, "both");
            break;
        default: return 2;
        }
        if (bad) { fprintf(stderr, "godwit-bench %s: bad value '%s'\n", name, optarg); return 2; }
    }
    return 0;
}
