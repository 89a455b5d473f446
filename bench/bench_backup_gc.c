/* godwit-bench backup --gc --target dir:PATH|rados:auto [--chunks N] [--json]
 *
 * Garbage collection of a store of N chunks (default 250,000; small objects, since the
 * collector never reads a chunk's bytes): 80% are named by 25 manifests, 20% are orphans.
 * Figures: gc_ms and gc_chunks_per_s for one collection (mark: every manifest and a listing of
 * every object; sweep: a guarded removal of every orphan), and against a baseline measured in
 * the same run on the same chunks: one batched lookup of every chunk, the least an
 * access-time collector (Proxmox's) does in its sweep (ratio_vs_stat_sweep). The collection
 * is checked for exactness: it removed every orphan and a second run finds nothing to do and
 * every referenced chunk still present. Target: 250,000 chunks in <= 60 s. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "bench/bench_proc.h"
#include "engine/common/util.h"
#include "storage/chunk.h"
#include "storage/gc.h"
#include "storage/manifest.h"
#include "storage/store.h"
#include "storage/store_scan.h"

#define NMANIFESTS 25u
#define CS 4096u

static void name_of(uint64_t i, uint8_t h[32])
{
    gw_chunk_hash(NULL, &i, sizeof i, h);
}

static int put_manifest(struct gw_store *s, unsigned m, uint64_t first, uint64_t n)
{
    ProtobufCBinaryData *list = calloc(n, sizeof *list);
    uint8_t (*names)[32] = calloc(n, 32);
    if (!list || !names) { free(list); free(names); return -ENOMEM; }
    for (uint64_t i = 0; i < n; i++) { name_of(first + i, names[i]); list[i].data = names[i]; list[i].len = 32; }
    Godwit__V1__VmConfig cfg = GODWIT__V1__VM_CONFIG__INIT;
    Godwit__V1__VmState st = GODWIT__V1__VM_STATE__INIT;
    Godwit__V1__BackupImage mi = GODWIT__V1__BACKUP_IMAGE__INIT, di = GODWIT__V1__BACKUP_IMAGE__INIT;
    Godwit__V1__BackupManifest man = GODWIT__V1__BACKUP_MANIFEST__INIT;
    uint8_t digest[16] = {0};
    char id[64], vm[32], obj[160], index[160];
    snprintf(vm, sizeof vm, "bench%u", m % 5);
    snprintf(id, sizeof id, "20260101-%06u-000000", m);
    cfg.memory_bytes = n * CS;
    st.config = &cfg;
    mi.size = n * CS;
    mi.chunk_size = CS;
    mi.n_chunks = n;
    mi.chunks = list;
    man.format_version = GW_MANIFEST_VERSION;
    man.id = id;
    man.vm_name = vm;
    man.parent = "";
    man.method = "pause";
    man.state = &st;
    man.memory = &mi;
    man.disk = &di;
    man.memory_digest.data = digest;
    man.memory_digest.len = 16;
    uint8_t *buf;
    size_t len;
    int r = gw_manifest_pack(&man, NULL, &buf, &len);
    free(list);
    free(names);
    if (r) return r;
    gw_manifest_object(vm, id, obj, sizeof obj);
    gw_backup_index_name(vm, index, sizeof index);
    r = s->ops->put(s, obj, buf, len);
    if (!r) r = s->ops->wait(s);
    if (!r) r = s->ops->index_set(s, index, id, "bench");
    free(buf);
    return r;
}

/* N chunk objects of 64 bytes, the first 80% named by the manifests. */
static int fill(struct gw_store *s, uint64_t n, uint64_t referenced)
{
    uint8_t blob[64];
    memset(blob, 0x5a, sizeof blob);
    for (uint64_t i = 0; i < n; i++) {
        uint8_t h[32];
        char obj[80];
        name_of(i, h);
        gw_chunk_object(h, obj);
        memcpy(blob, &i, sizeof i);
        int r = s->ops->put(s, obj, blob, sizeof blob);
        if (r) return r;
        if (i % 65536 == 65535 && (r = s->ops->wait(s))) return r;
    }
    int r = s->ops->wait(s);
    uint64_t per = referenced / NMANIFESTS;
    for (unsigned m = 0; !r && m < NMANIFESTS; m++) r = put_manifest(s, m, m * per, m == NMANIFESTS - 1 ? referenced - m * per : per);
    return r;
}

/* The baseline: one guarded lookup of every chunk (batched as the collector batches). */
static int stat_sweep(struct gw_store *s, uint64_t n, double *ms)
{
    enum { B = 4096 };
    static char nm[B][80];
    static const char *np[B];
    static int rc[B];
    static uint64_t sz[B];
    static struct gw_obj_guard g[B];
    uint64_t t0 = gw_now_ns();
    for (uint64_t base = 0; base < n; base += B) {
        size_t k = n - base < B ? (size_t)(n - base) : B;
        for (size_t j = 0; j < k; j++) {
            uint8_t h[32];
            name_of(base + j, h);
            gw_chunk_object(h, nm[j]);
            np[j] = nm[j];
        }
        int r = gw_store_stat_guarded(s, np, k, rc, sz, g);
        if (r) return r;
        for (size_t j = 0; j < k; j++) if (rc[j] != 1) return -EIO;
    }
    *ms = (gw_now_ns() - t0) / 1e6;
    return 0;
}

int gw_bench_backup_gc(int argc, char **argv)
{
    const char *target = "rados:auto";
    uint64_t nchunks = 250000;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gc")) continue;
        if (!strcmp(argv[i], "--json")) { json = true; continue; }
        if (!strcmp(argv[i], "--target") && i + 1 < argc) { target = argv[++i]; continue; }
        if (!strcmp(argv[i], "--chunks") && i + 1 < argc && !gw_parse_u64(argv[i + 1], 1000, 10000000, &nchunks)) { i++; continue; }
        fprintf(stderr, "godwit-bench backup --gc: --target dir:PATH|rados:auto [--chunks 1000..10000000] [--json]\n");
        return 2;
    }
    char out[16384], conf[1024] = "", spec[1200], err[512] = "", script[1200];
    bool auto_cluster = !strcmp(target, "rados:auto");
    snprintf(script, sizeof script, "%s/scripts/ceph-cluster", GW_SOURCE_DIR);
    if (auto_cluster) {
        char *start_argv[] = {script, "start", "--size", "16G", NULL};
        if (gw_bench_run(start_argv, out, sizeof out) != 0) { fprintf(stderr, "godwit-bench: cannot start a Ceph cluster\n"); return 1; }
        char *nl = out + strlen(out);
        while (nl > out && nl[-1] == '\n') *--nl = 0;
        char *last = strrchr(out, '\n');
        snprintf(conf, sizeof conf, "%s", last ? last + 1 : out);
        snprintf(spec, sizeof spec, "rados:godwit/gcbench");
    } else if (!strncmp(target, "dir:", 4)) {
        snprintf(spec, sizeof spec, "%s", target);
    } else {
        fprintf(stderr, "godwit-bench backup --gc: --target dir:PATH or rados:auto\n");
        return 2;
    }
    struct gw_store_params p = {.spec = spec, .ceph_conf = conf[0] ? conf : NULL, .max_inflight = GW_STORE_MAX_INFLIGHT,
                                .osd_op_timeout_s = 60};
    struct gw_store *s = NULL;
    int status = 0;
    uint64_t referenced = nchunks * 4 / 5;
    double setup_s = 0, base_ms = 0;
    struct gw_gc_stats st = {0}, again = {0};
    if (gw_store_open(&p, &s, err, sizeof err)) status = 1;
    if (!status) {
        uint64_t t0 = gw_now_ns();
        int r = fill(s, nchunks, referenced);
        setup_s = (gw_now_ns() - t0) / 1e9;
        if (r) { snprintf(err, sizeof err, "filling the store: %s", gw_store_error(s)); status = 1; }
    }
    if (!status && stat_sweep(s, nchunks, &base_ms)) { snprintf(err, sizeof err, "baseline: %s", gw_store_error(s)); status = 1; }
    struct gw_gc_params gp = {0};
    if (!status && gw_gc_run(s, &gp, &st, err, sizeof err)) status = 1;
    if (!status && gw_gc_run(s, &gp, &again, err, sizeof err)) status = 1;
    bool exact = !status && st.removed == nchunks - referenced && again.removed == 0 && again.candidates == 0 &&
                 again.chunks_scanned == referenced;
    double gc_ms = st.elapsed_ns / 1e6;
    double gc_rate = gc_ms > 0 ? st.chunks_scanned / (gc_ms / 1000) : 0;
    double base_rate = base_ms > 0 ? nchunks / (base_ms / 1000) : 0;
    if (json) {
        printf("{\"bench\":\"backup_gc\",\"target\":\"%s\",\"ok\":%s,\"chunks\":%llu,\"referenced\":%llu,\"manifests\":%llu,"
               "\"setup_s\":%.1f,\"gc_ms\":%.0f,\"gc_chunks_per_s\":%.0f,\"removed\":%llu,\"bytes_freed\":%llu,"
               "\"baseline\":\"one lookup of every chunk\",\"baseline_ms\":%.0f,\"baseline_chunks_per_s\":%.0f,"
               "\"ratio_vs_stat_sweep\":%.2f,\"exact\":%s,\"target_s\":60,\"target_met\":%s",
               target, status ? "false" : "true", (unsigned long long)nchunks, (unsigned long long)st.referenced,
               (unsigned long long)st.manifests, setup_s, gc_ms, gc_rate, (unsigned long long)st.removed,
               (unsigned long long)st.bytes_freed, base_ms, base_rate, base_rate > 0 ? gc_rate / base_rate : 0,
               exact ? "true" : "false", !status && gc_ms <= 60000 ? "true" : "false");
        if (status) { printf(",\"error\":"); fputc('"', stdout); for (const char *c = err; *c; c++) if (*c != '"' && *c != '\\') fputc(*c, stdout); fputc('"', stdout); }
        printf("}\n");
    } else {
        printf("gc of %llu chunks (%llu referenced by %llu manifests): %.0f ms (%.0f chunks/s), removed %llu; baseline "
               "lookup of every chunk %.0f ms (%.0f chunks/s), ratio %.2f; exact: %s%s%s\n",
               (unsigned long long)nchunks, (unsigned long long)st.referenced, (unsigned long long)st.manifests, gc_ms,
               gc_rate, (unsigned long long)st.removed, base_ms, base_rate, base_rate > 0 ? gc_rate / base_rate : 0,
               exact ? "yes" : "no", status ? "; error: " : "", err);
    }
    gw_store_close(s);
    if (auto_cluster) {
        char *stop_argv[] = {script, "stop", conf, NULL};
        gw_bench_run(stop_argv, out, sizeof out);
    }
    return status || !exact ? 1 : 0;
}
