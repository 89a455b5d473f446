/* `godwit-bench backup`: back up a running dirtier VM into a chunk store, back it up again
 * unchanged (paused), verify, and restore it as a clone that must run on with an equal memory
 * digest, all through godwit-vm as an operator would.
 *
 * dedup_ratio = logical bytes of the three backups (full, the paused guest, unchanged again)
 * / bytes stored. The restore runs as a clone whose guest then writes 1% of its memory in
 * pages and is backed up into the same store (bench_backup_clone.c): clone_new_ratio = bytes
 * that backup stored / memory size.
 *
 * Baseline, measured in the same run on the same store: raw writes and reads of the same
 * volume as the full backup's data, in chunk-sized objects of random bytes, with the same
 * number of operations in flight (the store's own speed), each under the conditions of the
 * step it is compared with: the writes right before the full backup with the guest running
 * (its vCPU takes ~30 % of a core here, which a baseline on an idle box would not pay), the
 * reads after the guest stopped, as the restore runs. ratio_vs_store = full backup
 * throughput / raw write throughput; restore_ratio_vs_store likewise with the reads.
 * store_write_idle_mib_s: the writes on the idle box before the guest starts, for comparison.
 * The restore's floor on this host, same bytes: SHA-256 of every chunk (bench_cipher.h) and
 * placing the bytes in fresh memory (bench_fresh.h), spread over every core:
 * restore_floor_mib_s, and restore_ratio_ceiling = that / store_read_mib_s (at most 1), the
 * best restore_ratio_vs_store a restore doing nothing else could reach.
 * --target rados:auto starts a throw-away cluster (scripts/ceph-cluster) and stops it at the
 * end; dir:PATH uses a directory. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup.h"
#include "bench/bench.h"
#include "bench/bench_backup_clone.h"
#include "bench/bench_cipher.h"
#include "bench/bench_fresh.h"
#include "bench/bench_opts.h"
#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"
#include "storage/store.h"

/* The store's own speed: n raw objects of chunk bytes each, named PREFIX.i, written in one
 * step and read back (and removed) in a later one, each step timed alone. */
struct store_raw {
    const char *spec, *conf;
    uint64_t n;
    uint32_t chunk;
};

static int raw_open(const struct store_raw *b, struct gw_store **s, char *err, size_t errlen)
{
    struct gw_store_params p = {.spec = b->spec, .ceph_conf = b->conf};
    return gw_store_open(&p, s, err, errlen);
}

static void raw_name(char out[40], const char *prefix, uint64_t i)
{
    snprintf(out, 40, "%s.%llu", prefix, (unsigned long long)i);
}

static double raw_mib_s(const struct store_raw *b, uint64_t ns)
{
    return ns ? b->n * (double)b->chunk / 1048576.0 / (ns / 1e9) : 0;
}

static void raw_remove(struct gw_store *s, const struct store_raw *b, const char *prefix)
{
    char name[40];
    for (uint64_t i = 0; i < b->n; i++) {
        raw_name(name, prefix, i);
        s->ops->remove(s, name);
    }
    s->ops->wait(s);
}

void gw_bench_fill_random(uint8_t *buf, size_t len)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i + 8 <= len; i += 8) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; memcpy(buf + i, &x, 8); }
}

/* Writes the n objects (distinct random bytes) with the store's own ops in flight; keep:
 * leave them for raw_read, else remove them. */
static int raw_write(const struct store_raw *b, const char *prefix, bool keep, double *mib_s, char *err,
                     size_t errlen)
{
    struct gw_store *s;
    int r = raw_open(b, &s, err, errlen);
    if (r) return r;
    uint8_t *buf = malloc(b->chunk);
    if (!buf) { gw_store_close(s); return -ENOMEM; }
    gw_bench_fill_random(buf, b->chunk);
    char name[40];
    uint64_t t0 = gw_now_ns();
    for (uint64_t i = 0; i < b->n && !r; i++) {
        raw_name(name, prefix, i);
        memcpy(buf, &i, sizeof i);   /* distinct objects */
        r = s->ops->put(s, name, buf, b->chunk);
    }
    if (!r) r = s->ops->wait(s);
    *mib_s = raw_mib_s(b, gw_now_ns() - t0);
    if (r) snprintf(err, errlen, "store baseline: %s", gw_store_error(s));
    if (r || !keep) raw_remove(s, b, prefix);
    free(buf);
    gw_store_close(s);
    return r;
}

/* Reads back what raw_write kept, 16 objects in flight, then removes it (also on failure). */
static int raw_read(const struct store_raw *b, const char *prefix, double *mib_s, char *err, size_t errlen)
{
    struct gw_store *s;
    int r = raw_open(b, &s, err, errlen);
    if (r) return r;
    enum { BATCH = 16 };
    uint8_t *rbuf = malloc(BATCH * (size_t)b->chunk);
    char names[BATCH][40];
    struct gw_store_read rd[BATCH];
    if (!rbuf) r = -ENOMEM;
    uint64_t t0 = gw_now_ns();
    for (uint64_t i = 0; i < b->n && !r; i += BATCH) {
        size_t k = b->n - i < BATCH ? (size_t)(b->n - i) : BATCH;
        for (size_t j = 0; j < k; j++) {
            raw_name(names[j], prefix, i + j);
            rd[j] = (struct gw_store_read){.name = names[j], .buf = rbuf + j * b->chunk, .cap = b->chunk};
        }
        r = s->ops->get_batch(s, rd, k);
        for (size_t j = 0; j < k && !r; j++) if (rd[j].rc || rd[j].len != b->chunk) r = rd[j].rc ? rd[j].rc : -EIO;
    }
    *mib_s = raw_mib_s(b, gw_now_ns() - t0);
    if (r) snprintf(err, errlen, "store baseline: %s", r == -ENOMEM ? "out of memory" : gw_store_error(s));
    raw_remove(s, b, prefix);
    free(rbuf);
    gw_store_close(s);
    return r;
}

static int vm_cmd(char *const argv[], char *out, size_t outlen)
{
    return gw_bench_run(argv, out, outlen);
}

int gw_bench_backup(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)   /* the one that runs no VM */
        if (!strcmp(argv[i], "--gc")) return gw_bench_backup_gc(argc, argv);
    int nokvm = gw_bench_need_kvm("backup");
    if (nokvm) return nokvm;
    for (int i = 1; i < argc; i++) if (!strcmp(argv[i], "--contention")) return gw_bench_backup_contention(argc, argv);
    for (int i = 1; i < argc; i++)   /* its own benchmark: bench_instant_restore.c */
        if (!strcmp(argv[i], "--instant-restore")) {
            for (int k = i; k < argc - 1; k++) argv[k] = argv[k + 1];
            return gw_bench_instant_restore(argc - 1, argv);
        }
    struct gw_bench_opts o = {.memory = 1ull << 30, .ws = 512ull << 20, .rate = 32ull << 20, .seconds = 2,
                              .vcpus = 1, .pattern = "random", .target = "rados:auto"};
    if (gw_bench_parse_opts("backup", argc, argv, &o)) return 2;
    char vm_bin[4096];
    if (gw_bench_sibling("godwit-vm", vm_bin, sizeof vm_bin)) { fprintf(stderr, "godwit-bench: godwit-vm not found\n"); return 1; }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/godwit-bench-backup.XXXXXX", o.dir ? o.dir : "/tmp");
    if (!mkdtemp(dir)) { perror("godwit-bench: mkdtemp"); return 1; }
    char err[512] = "", out[16384], conf[1024] = "", spec[1200];
    int status = 0;
    bool auto_cluster = !strcmp(o.target, "rados:auto");
    if (auto_cluster) {
        char script[1200];
        snprintf(script, sizeof script, "%s/scripts/ceph-cluster", GW_SOURCE_DIR);
        char *start_argv[] = {script, "start", "--size", "16G", NULL};
        if (gw_bench_run(start_argv, out, sizeof out) != 0) { snprintf(err, sizeof err, "cannot start a Ceph cluster"); status = 1; }
        else {
            char *nl = out + strlen(out);
            while (nl > out && (nl[-1] == '\n')) *--nl = 0;
            char *last = strrchr(out, '\n');
            snprintf(conf, sizeof conf, "%s", last ? last + 1 : out);
        }
        snprintf(spec, sizeof spec, "rados:godwit/bench");
    } else if (!strncmp(o.target, "dir:", 4) || !strncmp(o.target, "rados:", 6)) {
        snprintf(spec, sizeof spec, "%s", o.target);
    } else {
        fprintf(stderr, "godwit-bench backup: --target dir:PATH or rados:auto\n");
        return 2;
    }
    struct store_raw raw = {.spec = spec, .conf = conf[0] ? conf : NULL, .chunk = GW_BACKUP_CHUNK_SIZE,
                            .n = o.ws / GW_BACKUP_CHUNK_SIZE ? o.ws / GW_BACKUP_CHUNK_SIZE : 1};
    double write_idle = 0, write_mib_s = 0, read_mib_s = 0;
    if (!status && raw_write(&raw, "baseline-idle", false, &write_idle, err, sizeof err)) status = 1;

    char sock[4200], run_out[4200], gspec[200], mem_s[32];
    snprintf(sock, sizeof sock, "%s/vm.sock", dir);
    snprintf(run_out, sizeof run_out, "%s/run.json", dir);
    snprintf(gspec, sizeof gspec, "dirtier:ws=%llu,rate=%llu,pattern=%s", (unsigned long long)o.ws,
             (unsigned long long)o.rate, o.pattern);
    snprintf(mem_s, sizeof mem_s, "%llu", (unsigned long long)o.memory);
    char *store_args[4] = {"--store", spec, conf[0] ? "--ceph-conf" : NULL, conf};
    pid_t pid = -1;
    if (!status) {
        char *run_argv[] = {vm_bin, "run", "--name", "bench", "--memory", mem_s, "--guest", gspec, "--control", sock, "--json", NULL};
        pid = gw_bench_spawn(run_argv, run_out);
        bool ready = false;
        uint64_t deadline = gw_now_ns() + 180ull * 1000000000ull;
        char *status_argv[] = {vm_bin, "status", "--control", sock, "--json", NULL};
        while (!ready && gw_now_ns() < deadline) {
            usleep(100000);
            if (vm_cmd(status_argv, out, sizeof out) == 0) gw_json_get_bool(out, "guest_ready", &ready);
        }
        if (!ready) { snprintf(err, sizeof err, "guest never became ready"); status = 1; }
        else sleep(1);
    }
    /* Removed at once: objects left in the store would change what the backup meets (on the
     * memstore cluster they made it 2x slower). */
    if (!status && raw_write(&raw, "baseline", false, &write_mib_s, err, sizeof err)) status = 1;
    uint64_t full_new = 0, full_chunks = 0, full_zero = 0, inc_new = 0, inc_chunks = 0, inc_zero = 0;
    double full_ms = 0, pause_ms = 0, inc_ms = 0;
    char digest[40] = "";
    /* The backup engine's own speed, on the baseline's terms (raw writes, unthrottled, at
     * normal priority): no throttle and normal CPU priority. A backup's defaults (adaptive
     * throttle, SCHED_BATCH nice 10) give way to the guests on purpose; beside this dirtier's
     * busy vCPU they made it 2.4x slower here. What they cost and spare is measured by
     * `--contention`. */
    char *backup_argv[] = {vm_bin, "backup", "--control", sock, "--json", "--throttle", "off", "--cpu-priority", "normal",
                           store_args[0], store_args[1], store_args[2], store_args[3], NULL};
    if (!status) {
        bool ok = false;
        vm_cmd(backup_argv, out, sizeof out);
        gw_json_get_bool(out, "ok", &ok);
        if (!ok || gw_json_get_double(out, "elapsed_ms", &full_ms) || gw_json_get_u64(out, "new_bytes", &full_new)) {
            snprintf(err, sizeof err, "full backup failed: %.300s", out);
            status = 1;
        }
        gw_json_get_double(out, "pause_ms", &pause_ms);
        gw_json_get_u64(out, "chunks", &full_chunks);
        gw_json_get_u64(out, "zero_chunks", &full_zero);
    }
    if (!status) {
        /* Unchanged: the guest paused, backed up once (what changed since the full backup),
         * then again: that second backup is of an unchanged guest. */
        char *pause_argv[] = {vm_bin, "pause", "--control", sock, NULL};
        char *resume_argv[] = {vm_bin, "resume", "--control", sock, NULL};
        vm_cmd(pause_argv, out, sizeof out);
        bool ok = false;
        vm_cmd(backup_argv, out, sizeof out);
        uint64_t mid_new = 0;
        gw_json_get_u64(out, "new_bytes", &mid_new);
        full_new += mid_new;
        vm_cmd(backup_argv, out, sizeof out);
        gw_json_get_bool(out, "ok", &ok);
        if (!ok || gw_json_get_double(out, "elapsed_ms", &inc_ms) || gw_json_get_u64(out, "new_bytes", &inc_new) ||
            gw_json_get_str(out, "memory_digest", digest, sizeof digest)) {
            snprintf(err, sizeof err, "incremental backup failed: %.300s", out);
            status = 1;
        }
        gw_json_get_u64(out, "chunks", &inc_chunks);
        gw_json_get_u64(out, "zero_chunks", &inc_zero);
        vm_cmd(resume_argv, out, sizeof out);
    }
    if (pid > 0) {
        char *stop_argv[] = {vm_bin, "stop", "--control", sock, NULL};
        vm_cmd(stop_argv, out, sizeof out);
        gw_bench_wait(pid);
    }
    double unused;   /* the reads need objects: written again, that write not timed */
    if (!status && (raw_write(&raw, "baseline", true, &unused, err, sizeof err) ||
                    raw_read(&raw, "baseline", &read_mib_s, err, sizeof err)))
        status = 1;
    double verify_mib_s = 0, restore_mib_s = 0, fresh_us = 0;
    uint64_t verify_bad = 1, verify_errors = 0;
    char restore_digest[40] = "";
    struct gw_bench_clone clone = {0};
    if (!status) {
        char *verify_argv[] = {vm_bin, "verify-backup", "--vm", "bench", "--json", store_args[0], store_args[1], store_args[2], store_args[3], NULL};
        vm_cmd(verify_argv, out, sizeof out);
        gw_json_get_double(out, "verify_mib_s", &verify_mib_s);
        if (gw_json_get_u64(out, "bad_chunks", &verify_bad)) { snprintf(err, sizeof err, "verify failed"); status = 1; }
        /* Restore as a clone, let it change clone_change of its memory, back it up. */
        struct gw_bench_clone_params cp = {.vm_bin = vm_bin, .dir = dir, .from_vm = "bench",
                                           .store_args = {store_args[0], store_args[1], store_args[2], store_args[3]},
                                           .change_bytes = o.memory / 100};
        /* The restore writes the clone's memory into new pages: what one costs right now. */
        if (gw_bench_fresh_page_us(GW_BENCH_FRESH_SAMPLE, &fresh_us)) fresh_us = 0;
        if (gw_bench_backup_clone(&cp, &clone, err, sizeof err)) status = 1;
        restore_mib_s = clone.restore_mib_s;
        verify_errors = clone.verify_errors;
        snprintf(restore_digest, sizeof restore_digest, "%s", clone.restore_digest);
    }
    uint64_t data_bytes = (full_chunks - full_zero) * (uint64_t)GW_BACKUP_CHUNK_SIZE;
    uint64_t logical = data_bytes + 2 * (inc_chunks - inc_zero) * (uint64_t)GW_BACKUP_CHUNK_SIZE;
    uint64_t stored = full_new + inc_new;
    double full_mib_s = full_ms > 0 ? data_bytes / 1048576.0 / (full_ms / 1000) : 0;
    bool equal = digest[0] && !strcmp(digest, restore_digest);
    /* What a restore cannot avoid on this host, same bytes, same run: checking every chunk
     * against its name (SHA-256) and placing it in fresh memory, spread over every core (the
     * store's reads need the same cores here). restore_ratio_ceiling is the best
     * restore_ratio_vs_store a restore doing only that could reach. */
    double sha_ms = 0, place_ms = 0, check_mib_s = 0, restore_ceiling = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (!status && data_bytes && ncpu > 0 && !gw_bench_sha256_ms(data_bytes, GW_BACKUP_CHUNK_SIZE, &sha_ms) &&
        !gw_bench_place_floor_ms(data_bytes, &place_ms) && sha_ms + place_ms > 0) {
        check_mib_s = data_bytes / 1048576.0 / ((sha_ms + place_ms) / (double)ncpu / 1000);
        restore_ceiling = read_mib_s > 0 ? (check_mib_s < read_mib_s ? check_mib_s / read_mib_s : 1.0) : 0;
    }
    if (o.json) {
        printf("{\"bench\":\"backup\",\"status\":\"%s\",\"error\":", status ? "error" : "ok");
        gw_json_str(stdout, err);
        printf(",\"target\":\"%s\",\"memory_bytes\":%llu,\"ws_bytes\":%llu,\"chunk_bytes\":%u,\"full_data_bytes\":%llu,"
               "\"full_ms\":%.1f,\"full_mib_s\":%.1f,\"store_write_mib_s\":%.1f,\"ratio_vs_store\":%.3f,\"pause_ms\":%.3f,"
               "\"incremental_ms\":%.1f,\"incremental_bytes_written\":%llu,\"stored_bytes\":%llu,\"dedup_ratio\":%.2f,"
               "\"restore_mib_s\":%.1f,\"store_read_mib_s\":%.1f,\"restore_ratio_vs_store\":%.3f,\"verify_mib_s\":%.1f,"
               "\"verify_bad_chunks\":%llu,\"memory_digest_equal\":%s,\"guest_verify_errors\":%llu,"
               "\"clone_changed_bytes\":%llu,\"clone_new_bytes\":%llu,\"clone_new_chunks\":%llu,\"clone_patched_chunks\":%llu,"
               "\"clone_new_ratio\":%.4f,\"backup_throttle\":\"off\",\"backup_cpu_priority\":\"normal\","
               "\"store_write_idle_mib_s\":%.1f,\"restore_fresh_page_us\":%.2f,\"restore_sha256_ms\":%.1f,"
               "\"restore_place_floor_ms\":%.1f,\"restore_floor_mib_s\":%.1f,\"restore_ratio_ceiling\":%.3f,"
               "\"baseline\":\"raw %u-byte object writes and reads of the same volume, same ops in flight\"}\n",
               o.target, (unsigned long long)o.memory, (unsigned long long)o.ws, GW_BACKUP_CHUNK_SIZE,
               (unsigned long long)data_bytes, full_ms, full_mib_s, write_mib_s,
               write_mib_s > 0 ? full_mib_s / write_mib_s : 0, pause_ms, inc_ms, (unsigned long long)inc_new,
               (unsigned long long)stored, stored ? (double)logical / stored : 0, restore_mib_s, read_mib_s,
               read_mib_s > 0 ? restore_mib_s / read_mib_s : 0, verify_mib_s, (unsigned long long)verify_bad,
               equal ? "true" : "false", (unsigned long long)verify_errors, (unsigned long long)clone.changed_bytes,
               (unsigned long long)clone.new_bytes, (unsigned long long)clone.new_chunks,
               (unsigned long long)clone.patched_chunks, o.memory ? (double)clone.new_bytes / (double)o.memory : 0,
               write_idle, fresh_us, sha_ms, place_ms, check_mib_s, restore_ceiling, GW_BACKUP_CHUNK_SIZE);
    } else {
        printf("backup bench (%s): full %.0f MiB/s (store %.0f MiB/s, ratio %.2f), pause %.2f ms, unchanged again in %.0f ms "
               "writing %llu bytes, restore %.0f MiB/s (store %.0f; checking and placing alone allow %.0f), verify %.0f MiB/s, digest %s, %llu verify errors, "
               "clone with %llu bytes changed stored %llu new bytes (%.2f%% of memory)%s%s\n",
               o.target, full_mib_s, write_mib_s, write_mib_s > 0 ? full_mib_s / write_mib_s : 0, pause_ms, inc_ms,
               (unsigned long long)inc_new, restore_mib_s, read_mib_s, check_mib_s, verify_mib_s, equal ? "equal" : "DIFFERENT",
               (unsigned long long)verify_errors, (unsigned long long)clone.changed_bytes, (unsigned long long)clone.new_bytes,
               o.memory ? 100.0 * (double)clone.new_bytes / (double)o.memory : 0, status ? ", error: " : "", err);
    }
    if (auto_cluster && conf[0]) {
        char script[1200];
        snprintf(script, sizeof script, "%s/scripts/ceph-cluster", GW_SOURCE_DIR);
        char *stop_argv[] = {script, "stop", conf, NULL};
        gw_bench_run(stop_argv, out, sizeof out);
    }
    unlink(run_out);
    unlink(sock);
    rmdir(dir);
    return status || !equal || verify_errors || verify_bad ? 1 : 0;
}
