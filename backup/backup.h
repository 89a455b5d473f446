/* Backups of a running VM into a chunk store (storage/), and what reads them back: restore,
 * verify, list, delete. docs/backups.md describes the format and the guarantees.
 *
 * A backup is a consistent point in time of memory, vCPU/device state and the virtio disk (the
 * disk by copy-before-write into a bounded local fleecing area, disk_snapshot.h, armed in the
 * pause and read after it, so the pause does not grow with the disk). Memory:
 *   write-protect (default): inside a short pause all of guest RAM is write-protected with
 *     userfaultfd (the dirty tracker's live snapshot, engine/dirty/dirty_snapshot.h), the state is
 *     taken, and the guest runs on;
 *     a page it writes is copied first, so the backup reads the point in time at leisure and
 *     writes every chunk once.
 *   dirty-log (fallback where userfaultfd write-protect is missing): memory is copied while the guest runs, in rounds over KVM's dirty
 *     log; then a short pause takes the last dirty pages (copied to a side buffer, not stored),
 *     the state and the memory digest, and the guest runs on. A chunk touched
 *     by those last pages is rebuilt afterwards from its stored previous version plus the saved
 *     pages, so the pause costs page copies, not chunk writes.
 *   pause: the VM is paused for the whole copy (the fallback; always consistent).
 * Incremental by content: a chunk the store already holds is never sent again (chunk_sink.h);
 * the parent backup's chunk list seeds the known names so unchanged chunks cost a hash only.
 * The manifest is written after every chunk is durable, the index entry after the manifest. */
#ifndef GW_BACKUP_BACKUP_H
#define GW_BACKUP_BACKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/common/cpu_prio.h"
#include "engine/common/limits.h"
#include "godwit/v1/backup.pb-c.h"
#include "storage/chunk.h"
#include "storage/throttle.h"

struct gw_vm;
struct gw_store;
struct gw_guest_mem;

#define GW_BACKUP_ID_BUF GW_LIMIT_BACKUP_ID_BUF
#define GW_BACKUP_CHUNK_SIZE (1u << 20)   /* memory and disk chunks (docs/storage.md: measured) */
#define GW_BACKUP_MAX_ROUNDS 8u

/* An open store with its keys: what every backup command needs. */
struct gw_backup_target {
    struct gw_store *store;
    struct gw_chunk_keys keys;
};

/* Opens spec's store and reads its key file. 0 or -errno with a reason in err. */
int gw_backup_target_open(const Godwit__V1__StoreSpec *spec, struct gw_backup_target *t, char *err, size_t errlen);
void gw_backup_target_close(struct gw_backup_target *t);

enum gw_backup_method {
    GW_BACKUP_WP = 0,         /* userfaultfd write-protect (default; falls back to dirty-log) */
    GW_BACKUP_DIRTY_LOG,      /* dirty-log rounds, last pages copied in the pause */
    GW_BACKUP_PAUSE,          /* everything copied inside the pause */
};

/* Progress of a backup, reported as chunks are stored. position is how far into guest memory
 * the copy is (holes count as done), bytes_read the data actually read and hashed,
 * bytes_deduplicated the chunks the store already held (whole chunks). */
struct gw_backup_progress {
    uint64_t total_bytes, position, bytes_read, bytes_written, bytes_deduplicated, chunks, chunks_total;
};
/* Returns 0 to go on, or -errno to stop the backup (it then fails with "backup cancelled";
 * the guest runs on as after any failure). Called on the backup's thread. */
typedef int (*gw_backup_progress_fn)(void *ctx, const struct gw_backup_progress *p);

struct gw_backup_since;
struct gw_backup_params {
    struct gw_backup_since *since;    /* the VM's bitmap since its last backup (backup_since.h), or NULL */
    gw_backup_progress_fn progress;   /* NULL = none */
    void *progress_ctx;
    const char *parent;       /* NULL/"" = latest backup of this VM, "none" = no parent */
    enum gw_backup_method method;
    uint32_t chunk_size;      /* 0 = GW_BACKUP_CHUNK_SIZE */
    unsigned max_rounds;      /* 0 = GW_BACKUP_MAX_ROUNDS */
    const char *fleece_dir;   /* the disk's copy-before-write area (disk_snapshot.h); NULL = /tmp */
    uint64_t fleece_limit;    /* bytes; 0 = GW_LIMIT_FLEECE_DEFAULT */
    uint64_t side_limit;      /* write-protect side buffer, bytes; 0 = RAM / GW_BACKUP_SIDE_DEFAULT_DIV;
                                 at most RAM (engine/common/limits.h) */
    struct gw_throttle_cfg throttle;  /* store writes (vm_latency NULL: this VM's disk) */
    /* CPU priority of the backup's reading, hashing and writing threads (zero: normal). They
     * run on threads of their own; the pause and the guest's fault handler keep the caller's
     * priority. With the write-protect side buffer at GW_BACKUP_CPU_RAISE_AT they are raised
     * back (when the process may), so the backup can still finish. */
    struct gw_cpu_prio cpu;
};

/* What the runner uses when the request names no CPU priority (engine/common/cpu_prio.h).
 * "batch" (a tenth of a normal thread's share under contention) rather than "idle": on a host
 * whose CPUs the guests keep busy, SCHED_IDLE leaves a backup almost nothing, and a backup of
 * a method without a side buffer to raise it again would crawl for hours. */
#define GW_BACKUP_CPU_DEFAULT "batch"
#define GW_BACKUP_CPU_RAISE_AT 0.8

/* Backs up a running (or paused) VM. The VM is left running as it was found (also on failure).
 * res is filled (strings point into res's own storage until the next call). 0 or -errno with
 * the reason in err; on failure nothing is listed. */
struct gw_backup_result {
    char id[GW_BACKUP_ID_BUF];
    char digest_hex[33];
    char throttle_why[96];
    char cpu_priority[32];      /* pb.cpu_priority's storage (set by the runner, engine/runner/runner_backup.c) */
    Godwit__V1__RunnerBackupResult pb;
};
int gw_backup_create(struct gw_vm *vm, struct gw_backup_target *t, const struct gw_backup_params *p,
                     struct gw_backup_result *res, char *err, size_t errlen);

/* The newest backup id of vm in the store into id (size GW_BACKUP_ID_BUF); -ENOENT if none. */
int gw_backup_latest(struct gw_backup_target *t, const char *vm, char *id);

/* Every backup id of vm, sorted oldest first (*ids is one allocation: free(*ids)). */
int gw_backup_list(struct gw_backup_target *t, const char *vm, char (**ids)[GW_BACKUP_ID_BUF], size_t *n);

/* Removes a backup from the index, then its manifest (chunks stay for a later collection). */
int gw_backup_delete(struct gw_backup_target *t, const char *vm, const char *id, char *err, size_t errlen);

struct gw_restore_stats {
    uint64_t memory_bytes, disk_bytes, chunks, bytes_read, elapsed_ns;
    uint64_t data_bytes;        /* raw bytes of the non-zero chunks placed */
    char digest_hex[33];
};

/* Loads a backup's memory into m (same size; untouched memory stays zero) and, when disk_path
 * is set and the backup has a disk, writes the disk image there. Every chunk is checked (hash,
 * lengths) before a byte of it reaches guest memory or the disk; the memory digest is checked
 * at the end. 0, or -EBADMSG / -errno with the reason (naming the bad chunk) in err. */
int gw_backup_restore(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, struct gw_guest_mem *m,
                      const char *disk_path, struct gw_restore_stats *st, char *err, size_t errlen);

/* The same, calling progress (may be NULL) after each batch of chunks placed with the figures
 * so far (st's counters; memory first, then the disk); its non-zero return stops the restore
 * (-ECANCELED, "restore cancelled"). The callback runs on the caller's thread. */
typedef int (*gw_restore_progress_fn)(void *ctx, const struct gw_restore_stats *st);
int gw_backup_restore_ex(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, struct gw_guest_mem *m,
                         const char *disk_path, gw_restore_progress_fn progress, void *ctx, struct gw_restore_stats *st,
                         char *err, size_t errlen);

/* Only the disk part of gw_backup_restore (nothing when the backup has no disk): what an
 * instant restore (instant_restore.h) writes before the VM opens the image. */
int gw_backup_restore_disk(struct gw_backup_target *t, const Godwit__V1__BackupManifest *man, const char *disk_path,
                           struct gw_restore_stats *st, char *err, size_t errlen);

/* Verify: re-reads every chunk of the named backups (id NULL = all backups of vm), checks it,
 * and reports each bad chunk once with the backups that use it through report(). */
struct gw_verify_stats {
    uint64_t backups, chunks, unique_chunks, bytes_read, bad_chunks, bad_manifests, elapsed_ns;
    uint64_t total_unique, total_raw_bytes, raw_bytes_checked;   /* what there is to check, and done */
};
typedef void (*gw_verify_report_fn)(void *ctx, const char *chunk_hex, const char *reason,
                                    const char *const *backups, size_t nbackups);
int gw_backup_verify(struct gw_backup_target *t, const char *vm, const char *id, gw_verify_report_fn report,
                     void *ctx, struct gw_verify_stats *st, char *err, size_t errlen);
/* The same, calling progress (may be NULL) after each batch of reads with the figures so far;
 * its non-zero return stops the verify (-ECANCELED, "verify cancelled"). */
typedef int (*gw_verify_progress_fn)(void *ctx, const struct gw_verify_stats *st);
int gw_backup_verify_ex(struct gw_backup_target *t, const char *vm, const char *id, gw_verify_report_fn report,
                        gw_verify_progress_fn progress, void *ctx, struct gw_verify_stats *st, char *err, size_t errlen);

#endif
