/* `godwit-bench migrate --tls both [--pairs N]`: the cost of an encrypted migration channel.
 * Runs the same migration benchmark in child processes of this binary, N times each (default
 * 3), plaintext and TLS interleaved (the baseline of this run, on the same work), and prints
 * the best time of each, every sample, the ratio of the best times (the target: TLS at most
 * 1.3x) and the median of the pairs' own ratios (each TLS run over the plaintext run just
 * before it: the figure a noisy shared box moves least), and with every sample the cost of a
 * fresh page sampled just before it (bench_fresh.h), which moves both kinds of run alike.
 * Then the cipher's own floor on the same data bytes (bench_cipher.h): cipher_floor_ms, the
 * seal and open passes spread over every core, and ratio_at_cipher_floor, the ratio TLS would
 * have if it added nothing but that: the best this host allows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_cipher.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"

#define TLS_TARGET_RATIO 1.3
#define PAIRS 3              /* default --pairs */

/* One child run with --tls mode; its JSON line into out. */
static int run_one(int argc, char **argv, const char *mode, char *out, size_t outlen)
{
    char self[4096];
    ssize_t sn = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sn <= 0) return -1;
    self[sn] = 0;
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
    gw_bench_last_json(buf, out, outlen);
    return rc;
}

int gw_bench_migrate_tls_both(int argc, char **argv, unsigned pairs)
{
    bool json = false;
    for (int i = 1; i < argc; i++) json |= !strcmp(argv[i], "--json");
    if (!pairs) pairs = PAIRS;
    if (pairs > GW_BENCH_MAX_PAIRS) pairs = GW_BENCH_MAX_PAIRS;
    /* Interleaved pairs, best of each: a shared box slows single runs at random, and the
     * fastest run of each kind is the one least disturbed. */
    char plain[8192] = "", tls[8192] = "", one[8192];
    double tp = 0, tt = 0, mp = 0, mt = 0, t;
    double pair_ratio[GW_BENCH_MAX_PAIRS];
    unsigned nratio = 0;
    int status = 0;
    char samples_p[512] = "", samples_t[512] = "", fresh_p[512] = "", fresh_t[512] = "";
    for (unsigned i = 0; i < pairs; i++) {
        double last_plain = 0;
        for (int k = 0; k < 2; k++) {
            const char *mode = k ? "on" : "off";
            if (run_one(argc, argv, mode, one, sizeof one) || gw_json_get_double(one, "total_ms", &t) || t <= 0) {
                status = 1;
                continue;
            }
            char *smp = k ? samples_t : samples_p;
            snprintf(smp + strlen(smp), 512 - strlen(smp), "%s%.1f", smp[0] ? "," : "", t);
            double fu = 0;
            gw_json_get_double(one, "fresh_page_us", &fu);
            char *fr = k ? fresh_t : fresh_p;
            snprintf(fr + strlen(fr), 512 - strlen(fr), "%s%.2f", fr[0] ? "," : "", fu);
            double *best = k ? &tt : &tp;
            if (*best == 0 || t < *best) {
                *best = t;
                memcpy(k ? tls : plain, one, sizeof one);
            }
            if (!k) last_plain = t;
            else if (last_plain > 0) pair_ratio[nratio++] = t / last_plain;
        }
    }
    double median = gw_median(pair_ratio, nratio);
    bool kernel = false;
    gw_json_get_double(plain, "wire_mib_s", &mp);
    gw_json_get_double(tls, "wire_mib_s", &mt);
    gw_json_get_bool(tls, "tls_kernel", &kernel);
    status |= tp <= 0 || tt <= 0;
    double ratio = tp > 0 ? tt / tp : 0;
    /* The cipher's floor on the same bytes: sealed once and opened once, spread over every
     * core (the bench's source and destination share them). */
    uint64_t data = 0;
    double seal_ms = 0, open_ms = 0, floor_ms = 0, floor_ratio = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (!status && !gw_json_get_u64(plain, "data_bytes", &data) && data && ncpu > 0 &&
        !gw_bench_cipher_ms(data, &seal_ms, &open_ms)) {
        floor_ms = (seal_ms + open_ms) / (double)ncpu;
        floor_ratio = (tp + floor_ms) / tp;
    }
    if (json) {
        printf("{\"bench\":\"migrate-tls\",\"status\":\"%s\",\"tls\":\"both\",\"tls_kernel\":%s,\"pairs\":%u,"
               "\"plain_total_ms\":%.1f,\"tls_total_ms\":%.1f,\"plain_samples_ms\":[%s],\"tls_samples_ms\":[%s],"
               "\"plain_fresh_page_us\":[%s],\"tls_fresh_page_us\":[%s],"
               "\"plain_wire_mib_s\":%.1f,\"tls_wire_mib_s\":%.1f,"
               "\"baseline\":\"the same migration in plaintext, this run (best of each)\","
               "\"ratio_tls_vs_plain\":%.3f,\"median_pair_ratio\":%.3f,\"target_ratio\":%.1f,\"within_target\":%s,"
               "\"cipher\":\"AES-128-GCM, 16 KiB records\",\"cipher_seal_ms\":%.1f,\"cipher_open_ms\":%.1f,"
               "\"cpus\":%ld,\"cipher_floor_ms\":%.1f,\"ratio_at_cipher_floor\":%.3f,"
               "\"plain\":%s,\"tls_run\":%s}\n",
               status ? "error" : "ok", kernel ? "true" : "false", pairs, tp, tt, samples_p, samples_t, fresh_p, fresh_t, mp, mt, ratio,
               median, TLS_TARGET_RATIO, !status && ratio <= TLS_TARGET_RATIO ? "true" : "false",
               seal_ms, open_ms, ncpu, floor_ms, floor_ratio, plain[0] ? plain : "null", tls[0] ? tls : "null");
    } else {
        printf("migrate bench, TLS vs plaintext (best of %u each): %.0f ms vs %.0f ms (%.0f vs %.0f MiB/s), ratio %.2f "
               "(median of the pairs %.2f; target <= %.1f), %s TLS; the cipher alone on the same bytes adds at "
               "least %.0f ms on %ld cores (ratio %.2f)%s\n", pairs, tt, tp, mt, mp, ratio, median,
               TLS_TARGET_RATIO, kernel ? "kernel" : "user-space", floor_ms, ncpu, floor_ratio,
               status ? "; a run failed" : "");
    }
    return status;
}
