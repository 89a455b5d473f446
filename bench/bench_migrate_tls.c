/* `godwit-bench migrate --tls both`: the cost of an encrypted migration channel. Runs the
 * same migration benchmark twice in child processes of this binary, plaintext first (the
 * baseline of this run, on the same work), then over TLS, and prints both figures and the
 * ratio of their total times (the target: TLS at most 1.3x the plaintext time). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"

#define TLS_TARGET_RATIO 1.3

/* The last line of text that starts with '{'. */
static const char *last_json_line(const char *text)
{
    const char *best = "";
    for (const char *p = text; (p = strchr(p, '{')); p++)
        if (p == text || p[-1] == '\n') best = p;
    return best;
}

/* One child run with --tls mode; its JSON line into out. */
static int run_one(int argc, char **argv, const char *mode, char *out, size_t outlen)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = 0;
    char **av = calloc((size_t)argc + 6, sizeof *av);
    if (!av) return -1;
    int k = 0;
    av[k++] = self;
    av[k++] = "migrate";
    for (int i = 1; i < argc; i++) {   /* every option but --tls X and --json, which we set */
        if (!strcmp(argv[i], "--tls") && i + 1 < argc) { i++; continue; }
        if (!strncmp(argv[i], "--tls=", 6) || !strcmp(argv[i], "--json")) continue;
        av[k++] = argv[i];
    }
    av[k++] = "--tls";
    av[k++] = (char *)mode;
    av[k++] = "--json";
    av[k] = NULL;
    static char buf[65536];
    int rc = gw_bench_run(av, buf, sizeof buf);
    free(av);
    const char *line = last_json_line(buf);
    size_t len = strcspn(line, "\n");
    if (len >= outlen) len = outlen - 1;
    memcpy(out, line, len);
    out[len] = 0;
    return rc;
}

int gw_bench_migrate_tls_both(int argc, char **argv)
{
    bool json = false;
    for (int i = 1; i < argc; i++) json |= !strcmp(argv[i], "--json");
    char plain[8192], tls[8192];
    int rp = run_one(argc, argv, "off", plain, sizeof plain);
    int rt = run_one(argc, argv, "on", tls, sizeof tls);
    double tp = 0, tt = 0, mp = 0, mt = 0;
    bool kernel = false;
    gw_json_get_double(plain, "total_ms", &tp);
    gw_json_get_double(tls, "total_ms", &tt);
    gw_json_get_double(plain, "throughput_mib_s", &mp);
    gw_json_get_double(tls, "throughput_mib_s", &mt);
    gw_json_get_bool(tls, "tls_kernel", &kernel);
    int status = rp || rt || tp <= 0 || tt <= 0;
    double ratio = tp > 0 ? tt / tp : 0;
    if (json) {
        printf("{\"bench\":\"migrate-tls\",\"status\":\"%s\",\"tls\":\"both\",\"tls_kernel\":%s,"
               "\"plain_total_ms\":%.1f,\"tls_total_ms\":%.1f,\"plain_throughput_mib_s\":%.1f,"
               "\"tls_throughput_mib_s\":%.1f,\"baseline\":\"the same migration in plaintext, this run\","
               "\"ratio_tls_vs_plain\":%.3f,\"target_ratio\":%.1f,\"within_target\":%s,\"plain\":%s,\"tls_run\":%s}\n",
               status ? "error" : "ok", kernel ? "true" : "false", tp, tt, mp, mt, ratio, TLS_TARGET_RATIO,
               !status && ratio <= TLS_TARGET_RATIO ? "true" : "false", plain[0] ? plain : "null", tls[0] ? tls : "null");
    } else {
        printf("migrate bench, TLS vs plaintext: %.0f ms vs %.0f ms (%.0f vs %.0f MiB/s), ratio %.2f (target <= %.1f), "
               "%s TLS%s\n", tt, tp, mt, mp, ratio, TLS_TARGET_RATIO, kernel ? "kernel" : "user-space",
               status ? "; a run failed" : "");
    }
    return status;
}
