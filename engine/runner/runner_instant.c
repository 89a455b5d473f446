/* The runner's side of an instant restore (backup/instant_restore.h): the run state follows
 * the fill. A stalled store holds the VM paused under its own owner ("store"), so an
 * operator's RESUME cannot run a guest whose vCPUs would only wait in faults, and the
 * store's return lifts exactly that hold; a failed restore (a hostile chunk, a digest that
 * differs) stops the VM for good: it never ran on a byte of the bad chunk, and it must not
 * run on with memory that is not the backup's. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backup/instant_restore.h"
#include "engine/common/json.h"
#include "engine/common/log.h"
#include "engine/runner/runner.h"
#include "guest/abi.h"

void gw_runner_poll_instant(struct gw_runner *r)
{
    if (!r->instant) return;
    struct gw_instant_progress p;
    gw_instant_restore_progress(r->instant, &p);
    switch (p.phase) {
    case GW_INSTANT_STALLED:
        if (!(r->pause_owners & GW_PAUSE_STORE) && (r->state == GW_RUN_RUNNING || r->state == GW_RUN_PAUSED)) {
            gw_warn("vm %s: paused: %s", r->vm->name, p.error);
            /* Not gw_runner_hold: a vCPU waiting for a page of the store cannot park until the
             * page comes, and the runner must go on answering meanwhile. */
            unsigned before = r->pause_owners;
            r->pause_owners |= GW_PAUSE_STORE;
            if (!before && gw_vm_pause_request(r->vm)) r->pause_owners = before;
            else r->state = GW_RUN_PAUSED;
        }
        break;
    case GW_INSTANT_FILLING:
    case GW_INSTANT_COMPLETE:
        if (r->pause_owners & GW_PAUSE_STORE) {
            gw_info("vm %s: the backup store answers again, resuming", r->vm->name);
            gw_runner_release(r, GW_PAUSE_STORE);
            if (!r->pause_owners && r->state == GW_RUN_PAUSED) r->state = GW_RUN_RUNNING;
        }
        break;
    case GW_INSTANT_FAILED:
        if (!gw_vm_fatal(r->vm, NULL, 0)) gw_vm_set_fatal(r->vm, -EBADMSG, "instant restore failed: %s", p.error);
        break;
    }
}

void gw_runner_instant_status(struct gw_runner *r, Godwit__V1__RunnerStatus *st)
{
    if (!r->instant) return;
    struct gw_instant_progress p;
    gw_instant_restore_progress(r->instant, &p);
    Godwit__V1__InstantRestoreProgress *ip = &r->status_instant;
    godwit__v1__instant_restore_progress__init(ip);
    snprintf(r->status_instant_phase, sizeof r->status_instant_phase, "%s", gw_instant_phase_name(p.phase));
    snprintf(r->status_instant_error, sizeof r->status_instant_error, "%s", p.error);
    snprintf(r->status_instant_digest, sizeof r->status_instant_digest, "%s", p.digest_hex);
    ip->phase = r->status_instant_phase;
    ip->chunks_total = p.chunks_total;
    ip->chunks_placed = p.chunks_placed;
    ip->chunks_faulted = p.chunks_faulted;
    ip->bytes_total = p.bytes_total;
    ip->bytes_placed = p.bytes_placed;
    ip->bytes_read = p.bytes_read;
    ip->read_errors = p.read_errors;
    ip->stalls = p.stalls;
    ip->fault_p50_us = p.fault_p50_us;
    ip->fault_p99_us = p.fault_p99_us;
    ip->fill_ms = p.fill_ns / 1000000;
    ip->digest_ok = p.digest_ok;
    ip->error = r->status_instant_error;
    ip->memory_digest = r->status_instant_digest;
    ip->disk_chunks_total = p.disk_chunks_total;
    ip->disk_chunks_done = p.disk_chunks_done;
    ip->disk_chunks_demand = p.disk_chunks_demand;
    ip->disk_chunks_overwritten = p.disk_chunks_overwritten;
    st->instant_restore = ip;
}

void gw_runner_instant_json(struct gw_runner *r)
{
    if (!r->instant) return;
    struct gw_instant_progress p;
    gw_instant_restore_progress(r->instant, &p);
    double ms = p.fill_ns / 1e6;
    printf(",\"instant_phase\":\"%s\",\"instant_chunks_total\":%llu,\"instant_chunks_placed\":%llu,"
           "\"instant_chunks_faulted\":%llu,\"instant_pages_faulted\":%llu,\"instant_zero_chunks_placed\":%llu,\"instant_bytes_placed\":%llu,"
           "\"instant_read_errors\":%llu,\"instant_stalls\":%llu,\"instant_fault_p50_us\":%llu,"
           "\"instant_fault_p99_us\":%llu,\"instant_fault_max_us\":%llu,\"instant_fill_ms\":%.1f,"
           "\"instant_fill_mib_s\":%.1f,\"instant_start_mono_ns\":%llu,\"instant_first_run_mono_ns\":%llu,"
           "\"instant_disk_chunks_total\":%llu,\"instant_disk_chunks_done\":%llu,\"instant_disk_chunks_demand\":%llu,"
           "\"instant_disk_chunks_overwritten\":%llu,"
           "\"instant_digest_ok\":%s,\"instant_memory_digest\":\"%s\",\"instant_error\":",
           gw_instant_phase_name(p.phase), (unsigned long long)p.chunks_total, (unsigned long long)p.chunks_placed,
           (unsigned long long)p.chunks_faulted, (unsigned long long)p.pages_faulted, (unsigned long long)p.zero_chunks_placed,
           (unsigned long long)p.bytes_placed, (unsigned long long)p.read_errors, (unsigned long long)p.stalls,
           (unsigned long long)p.fault_p50_us, (unsigned long long)p.fault_p99_us, (unsigned long long)p.fault_max_us,
           ms, ms > 0 ? (p.bytes_placed / 1048576.0) / (ms / 1000) : 0.0, (unsigned long long)p.start_ns,
           (unsigned long long)p.first_run_ns, (unsigned long long)p.disk_chunks_total,
           (unsigned long long)p.disk_chunks_done, (unsigned long long)p.disk_chunks_demand,
           (unsigned long long)p.disk_chunks_overwritten, p.digest_ok ? "true" : "false", p.digest_hex);
    gw_json_str(stdout, p.error);
}

bool gw_runner_guest_readable(struct gw_runner *r)
{
    if (!r->instant) return true;
    const uint8_t *p = gw_guest_mem_ptr(&r->vm->mem, GW_GPA_STATUS, sizeof(struct gw_guest_status));
    return p && gw_instant_restore_readable(r->instant, (uint64_t)(p - r->vm->mem.base), sizeof(struct gw_guest_status));
}
