/* Guest spec parser (see guest_spec.h). */
#include "engine/vm/guest_spec.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/common/util.h"

static int parse_kv(struct gw_guest_spec *o, const char *key, const char *val, char *err, unsigned errlen)
{
    uint64_t v;
    int r = 0;
    if (!strcmp(key, "ws")) r = gw_parse_size(val, &o->ws_bytes);
    else if (!strcmp(key, "rate")) r = gw_parse_size(val, &o->rate_bytes_per_s);
    else if (!strcmp(key, "seed")) r = gw_parse_u64(val, 0, UINT64_MAX, &o->seed);
    else if (!strcmp(key, "hz")) { r = gw_parse_u64(val, 10, 10000, &v); o->tick_hz = (uint32_t)v; }
    else if (!strcmp(key, "verify")) { r = gw_parse_u64(val, 0, 65536, &v); o->verify_pages_per_tick = (uint32_t)v; }
    else if (!strcmp(key, "block")) r = gw_parse_size(val, &o->disk_block_bytes);
    else if (!strcmp(key, "pattern")) {
        if (!strcmp(val, "random")) o->pattern = GW_PAT_RANDOM;
        else if (!strcmp(val, "text")) o->pattern = GW_PAT_TEXT;
        else if (!strcmp(val, "sparse")) o->pattern = GW_PAT_SPARSE;
        else { snprintf(err, errlen, "unknown pattern '%s' (random, text, sparse)", val); return -EINVAL; }
    } else {
        snprintf(err, errlen, "unknown guest option '%s' (ws, rate, pattern, seed, hz, verify, block)", key);
        return -EINVAL;
    }
    if (r) { snprintf(err, errlen, "bad value '%s' for %s", val, key); return -EINVAL; }
    return 0;
}

int gw_guest_spec_parse(const char *spec, struct gw_guest_spec *out, char *err, unsigned errlen)
{
    char buf[256];
    if (!spec || strlen(spec) >= sizeof buf) { snprintf(err, errlen, "guest spec missing or too long"); return -EINVAL; }
    snprintf(buf, sizeof buf, "%s", spec);
    memset(out, 0, sizeof *out);
    char *opts = strchr(buf, ':');
    if (opts) *opts++ = 0;
    if (!strcmp(buf, "dirtier")) out->workload = GW_WL_DIRTIER;
    else if (!strcmp(buf, "idle")) out->workload = GW_WL_IDLE;
    else if (!strcmp(buf, "disk")) out->workload = GW_WL_DISK;
    else if (!strcmp(buf, "triple-fault")) out->workload = GW_WL_TRIPLE_FAULT;
    else if (!strcmp(buf, "linux")) out->workload = GW_WL_LINUX;
    else { snprintf(err, errlen, "unknown workload '%s' (dirtier, idle, disk, linux)", buf); return -EINVAL; }
    out->pattern = GW_PAT_RANDOM;
    out->ws_bytes = 16ull << 20;
    out->rate_bytes_per_s = out->workload == GW_WL_DIRTIER ? 32ull << 20 : 0;
    out->seed = 1;
    out->tick_hz = 1000;
    out->verify_pages_per_tick = 32;
    out->disk_block_bytes = 4096;
    char *save = NULL;
    for (char *kv = opts ? strtok_r(opts, ",", &save) : NULL; kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) { snprintf(err, errlen, "guest option '%s' needs a value (key=value)", kv); return -EINVAL; }
        *eq = 0;
        int r = parse_kv(out, kv, eq + 1, err, errlen);
        if (r) return r;
    }
    if (out->ws_bytes % 4096 || out->ws_bytes == 0) {
        snprintf(err, errlen, "ws must be a non-zero multiple of 4 KiB");
        return -EINVAL;
    }
    if (out->disk_block_bytes == 0 || out->disk_block_bytes % 512 || out->disk_block_bytes > (1u << 20)) {
        snprintf(err, errlen, "block must be a multiple of 512 bytes, at most 1 MiB");
        return -EINVAL;
    }
    return 0;
}

int gw_guest_spec_check(const struct gw_guest_spec *s, uint64_t ram_below_hole, unsigned nvcpus,
                        char *err, unsigned errlen)
{
    if (s->workload == GW_WL_DIRTIER || s->workload == GW_WL_IDLE) {
        uint64_t need = gw_abi_min_ram(s->ws_bytes);
        if (need > ram_below_hole) {
            snprintf(err, errlen, "working set %llu MiB needs %llu MiB of RAM below 3 GiB, the VM has %llu MiB",
                     (unsigned long long)(s->ws_bytes >> 20), (unsigned long long)(need >> 20),
                     (unsigned long long)(ram_below_hole >> 20));
            return -EINVAL;
        }
        if (s->ws_bytes / 4096 < nvcpus) {
            snprintf(err, errlen, "working set smaller than one page per vCPU");
            return -EINVAL;
        }
    }
    return 0;
}
