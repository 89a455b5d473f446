/* The clone part of `godwit-bench backup`: the backup restored as a clone that runs, its guest
 * left to change a given share of its memory (counted by the guest itself: pages written),
 * then paused and backed up into the same store. Content-addressed chunks mean the clone's
 * unchanged chunks are already there: clone_new_bytes is what the store had to take. */
#include "bench/bench_backup_clone.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_proc.h"
#include "engine/common/json.h"
#include "engine/common/util.h"

#define CLONE_WAIT_NS (180ull * 1000000000ull)

static int guest_pages_written(const char *vm_bin, const char *sock, uint64_t *pages)
{
    char out[16384];
    char *argv[] = {(char *)vm_bin, "status", "--control", (char *)sock, "--json", NULL};
    if (gw_bench_run(argv, out, sizeof out) != 0) return -1;
    return gw_json_get_u64(out, "guest_pages_written", pages) ? -1 : 0;
}

int gw_bench_backup_clone(const struct gw_bench_clone_params *p, struct gw_bench_clone *c, char *err, size_t errlen)
{
    char sock[4200], run_out[4200], out[16384];
    snprintf(sock, sizeof sock, "%s/clone.sock", p->dir);
    snprintf(run_out, sizeof run_out, "%s/clone.json", p->dir);
    char *sa[4];
    for (int i = 0; i < 4; i++) sa[i] = (char *)p->store_args[i];
    char *restore_argv[] = {(char *)p->vm_bin, "restore-backup", "--vm", (char *)p->from_vm, "--name", "bench-clone",
                            "--control", sock, "--json", sa[0], sa[1], sa[2], sa[3], NULL};
    pid_t pid = gw_bench_spawn(restore_argv, run_out);
    if (pid < 0) { snprintf(err, errlen, "cannot start the clone"); return -1; }
    /* The control socket answers once the restore is done and the clone runs. */
    uint64_t start = 0, now = 0, deadline = gw_now_ns() + CLONE_WAIT_NS;
    int r = -1;
    while (r && gw_now_ns() < deadline) {
        usleep(20000);
        if (access(sock, F_OK) == 0) r = guest_pages_written(p->vm_bin, sock, &start);
    }
    if (r) snprintf(err, errlen, "the clone never answered on its control socket");
    /* Let the guest write change_bytes worth of pages, then hold it still for its backup. */
    uint64_t want = p->change_bytes / 4096;
    while (!r && gw_now_ns() < deadline) {
        if ((r = guest_pages_written(p->vm_bin, sock, &now))) { snprintf(err, errlen, "clone status failed"); break; }
        if (now - start >= want) break;
        usleep(5000);
    }
    char *pause_argv[] = {(char *)p->vm_bin, "pause", "--control", sock, NULL};
    if (!r && gw_bench_run(pause_argv, out, sizeof out) != 0) { snprintf(err, errlen, "cannot pause the clone"); r = -1; }
    if (!r && !guest_pages_written(p->vm_bin, sock, &now)) c->changed_bytes = (now - start) * 4096;
    if (!r) {
        char *backup_argv[] = {(char *)p->vm_bin, "backup", "--control", sock, "--json", sa[0], sa[1], sa[2], sa[3], NULL};
        bool ok = false;
        gw_bench_run(backup_argv, out, sizeof out);
        gw_json_get_bool(out, "ok", &ok);
        if (!ok || gw_json_get_u64(out, "new_bytes", &c->new_bytes)) {
            snprintf(err, errlen, "clone backup failed: %.300s", out);
            r = -1;
        }
        gw_json_get_u64(out, "new_chunks", &c->new_chunks);
        gw_json_get_u64(out, "chunks", &c->chunks);
        gw_json_get_u64(out, "patched_chunks", &c->patched_chunks);
    }
    char *stop_argv[] = {(char *)p->vm_bin, "stop", "--control", sock, NULL};
    gw_bench_run(stop_argv, out, sizeof out);
    int rc = gw_bench_wait(pid);
    char text[65536], last[16384];
    if (gw_bench_read_file(run_out, text, sizeof text)) text[0] = 0;
    gw_bench_last_json(text, last, sizeof last);
    if (gw_json_get_double(last, "restore_mib_s", &c->restore_mib_s) ||
        gw_json_get_str(last, "memory_digest", c->restore_digest, sizeof c->restore_digest) ||
        gw_json_get_u64(last, "guest_verify_errors", &c->verify_errors) || rc) {
        if (!r) snprintf(err, errlen, "restore failed (exit %d)", rc);
        r = -1;
    }
    unlink(run_out);
    unlink(sock);
    return r;
}
