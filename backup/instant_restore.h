/* Instant restore: a VM runs from a backup before its memory is back.
 *
 * Guest memory (all holes) is registered with userfaultfd MISSING through the post-copy
 * placer (postcopy/uffd_placer.h); the VM state is loaded and the guest may start at once.
 * A vCPU (or a device, or KVM) touching a page not yet there waits in the kernel while the
 * fault thread queues the chunk that holds it; fetch workers read chunks from the store
 * (one read each, so `workers` reads are in flight), check them fully (storage/chunk.h:
 * a chunk is hostile until its hash matches its name) and place the whole chunk with one
 * UFFDIO_COPY per run of pages not yet there. Queued faults are always taken before the
 * background fill, which walks the chunks in order; one worker serves faults only, so a
 * fault never waits behind a whole round of prefetch reads. A zero chunk is never read: a
 * fault in one places it with UFFDIO_ZEROPAGE, the fill skips it (it stays a hole, which
 * reads as zero once memory is unregistered).
 *
 * The memory digest of the backup (engine/vm/chunk_digest.h) is summed from the checked
 * chunk contents as they are placed (the guest changes memory meanwhile) and compared with
 * the manifest's at the end; then memory is unregistered and the VM is an ordinary one.
 *
 * Failures:
 *   - a chunk that fails its checks: the restore fails (phase failed, the chunk named); the
 *     runner stops the VM, which never saw a byte of it;
 *   - the store failing a read: the chunk is retried (backoff to 500 ms) while faulting vCPUs
 *     simply wait; after outage_pause_ms without a good read the phase is "stalled" and the
 *     runner pauses the VM with the store's reason; the first good read resumes the fill
 *     and the runner lifts its pause. A chunk missing from the store counts as unreachable
 *     (the store may come back with it), never as zeros.
 * Threads: the fault thread, `workers` fetch workers and the caller; progress is read under
 * a lock from any thread. */
#ifndef GW_BACKUP_INSTANT_RESTORE_H
#define GW_BACKUP_INSTANT_RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/backup.h"

struct gw_vm;
struct gw_instant_restore;

#define GW_INSTANT_DEFAULT_WORKERS 4u
#define GW_INSTANT_MAX_WORKERS 16u
#define GW_INSTANT_DEFAULT_OUTAGE_MS 2000u

enum gw_instant_phase {
    GW_INSTANT_FILLING = 0,
    GW_INSTANT_STALLED,      /* the store has not answered for outage_pause_ms: pause the VM */
    GW_INSTANT_COMPLETE,     /* every chunk placed, digest equal, memory unregistered */
    GW_INSTANT_FAILED,       /* a hostile chunk, a digest mismatch, a placing error: stop */
};

struct gw_instant_params {
    unsigned workers;          /* fetch workers = reads in flight (0: default) */
    unsigned outage_pause_ms;  /* store silent this long -> stalled (0: default) */
    bool disk;                 /* fill the VM's disk "vda" (its new image, a file or an RBD image of
                                * the backup's disk size, all holes) behind the device (instant_disk.h) */
    double fill_rate;          /* bytes/s the background fill may read, memory and disk each
                                * (0: unlimited). What the guest waits for is never held back:
                                * the fill only spares the store for the host's other guests. */
};

struct gw_instant_progress {
    enum gw_instant_phase phase;
    uint64_t chunks_total;     /* non-zero chunks of the memory image */
    uint64_t chunks_placed;    /* of them placed */
    uint64_t chunks_faulted;   /* chunks fetched because the guest touched them */
    uint64_t pages_faulted;    /* pages the guest (or a device) waited for */
    uint64_t zero_chunks_placed;
    uint64_t bytes_total, bytes_placed, bytes_read;
    uint64_t read_errors;      /* failed store reads (each retried) */
    uint64_t stalls;           /* times the phase went to stalled */
    uint64_t fault_p50_us, fault_p99_us, fault_max_us;   /* fault -> its page placed */
    uint64_t start_ns;         /* CLOCK_MONOTONIC: gw_instant_restore_start was called */
    uint64_t first_run_ns;     /* CLOCK_MONOTONIC: the guest was first seen to have run (its
                                * status page's heartbeat moved, or a vCPU exit), 0: not yet */
    uint64_t fill_ns;          /* start to complete (0 until then) */
    uint64_t disk_chunks_total, disk_chunks_done, disk_chunks_demand, disk_chunks_overwritten;
    bool digest_ok;
    char digest_hex[33];
    char error[600];           /* why failed, or the store's reason while stalled */
};

/* Takes t (its store and keys) and man (freed with the restore); on error they are freed too.
 * vm is created, not started, its memory untouched. Registers memory, starts the threads,
 * loads the VM state (its own faults served like any) and returns with the VM ready to
 * start (gw_vm_start is the caller's, so it measures what it wants around it). The memory
 * image must fit vm's memory; with p->disk the disk fills behind the device. 0 with *out or -errno
 * with the reason in err (nothing left running; the caller destroys the VM). */
int gw_instant_restore_start(struct gw_backup_target *t, Godwit__V1__BackupManifest *man, struct gw_vm *vm,
                             const struct gw_instant_params *p, struct gw_instant_restore **out, char *err,
                             size_t errlen);

void gw_instant_restore_progress(struct gw_instant_restore *ir, struct gw_instant_progress *out);
/* Completed (memory and disk) or failed: nothing more will change. */
bool gw_instant_restore_finished(struct gw_instant_restore *ir);
/* True when memory [off, off + len) can be read without waiting for the store: every page of
 * it is in, or the fill completed. The runner reads the guest's status page only then (it
 * would otherwise wait in a fault, for ever if the store is gone). */
bool gw_instant_restore_readable(struct gw_instant_restore *ir, uint64_t off, uint64_t len);

/* "filling", "stalled", "complete", "failed". */
const char *gw_instant_phase_name(enum gw_instant_phase ph);

/* Stops the threads and frees everything (store and manifest too). Short of completion, the
 * pages still missing are poisoned first, so nothing ever reads them as zero and a VM with
 * vCPUs waiting in faults can be destroyed. Pause or stop the VM first. Safe on NULL. */
void gw_instant_restore_free(struct gw_instant_restore *ir);

#endif
