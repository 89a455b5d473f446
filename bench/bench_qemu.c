/* The QEMU peer baseline (see bench_qemu.h). */
#include "bench/bench_qemu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_proc.h"
#include "engine/common/json.h"

int gw_bench_qemu_baseline(const char *script, uint64_t memory, uint64_t ws, uint64_t rate, const char *pattern,
                           struct gw_bench_qemu *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    /* The peer's dirtier fills with random bytes or text; sparse has no counterpart there. */
    const char *fill = !strcmp(pattern, "random") ? "1" : !strcmp(pattern, "text") ? "0" : NULL;
    if (!fill) { snprintf(err, errlen, "QEMU's guest has no '%s' pattern (random or text)", pattern); return -EINVAL; }
    if (access(script, R_OK)) { snprintf(err, errlen, "%s: %s", script, strerror(errno)); return -ENOENT; }
    char mem_s[24], ws_s[24], rate_s[24];
    snprintf(mem_s, sizeof mem_s, "%llu", (unsigned long long)(memory >> 20));
    snprintf(ws_s, sizeof ws_s, "%llu", (unsigned long long)(ws >> 20));
    snprintf(rate_s, sizeof rate_s, "%llu", (unsigned long long)(rate >> 20));
    char *argv[] = {"/bin/bash", (char *)script, mem_s, ws_s, rate_s, (char *)fill, "precopy", NULL};
    size_t cap = 64 << 10;
    char *buf = malloc(cap), line[4096];
    if (!buf) { snprintf(err, errlen, "no memory"); return -ENOMEM; }
    int rc = gw_bench_run(argv, buf, cap);
    gw_bench_last_json(buf, line, sizeof line);
    free(buf);
    if (rc || !line[0] || gw_json_get_double(line, "total_ms", &out->total_ms) || out->total_ms <= 0) {
        snprintf(err, errlen, "the QEMU baseline (%s) failed (exit %d)%s", script, rc, line[0] ? "" : ", no figures");
        return -EIO;
    }
    gw_json_get_str(line, "status", out->status, sizeof out->status);
    gw_json_get_double(line, "downtime_ms", &out->downtime_ms);
    gw_json_get_double(line, "transferred_mib", &out->transferred_mib);
    return 0;
}
