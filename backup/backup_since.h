/* What changed in a VM's memory since its last backup: kept by the VM's runner between
 * backups so that an incremental backup reads only the chunks that changed instead of
 * reading and hashing all of memory (docs/backups.md, "Incremental by bitmap").
 *
 * A dirty consumer (engine/dirty) of the VM's tracker, attached at the first backup, and a
 * page bitmap `changed`: inside each backup's pause, what the consumer logged is folded into
 * `changed` and the log is re-armed, so `changed` holds every page written between the base
 * backup's point in time and this one. With it the per-16 KiB memory digest of the base's
 * point in time is kept, so the unchanged chunks need neither a read nor a hash.
 *
 * It is used only when the new backup's parent is the base (same store, same chunk size) and
 * the method is write-protect; otherwise the backup reads everything, as without it, and
 * becomes the new base when it succeeds. A failed backup keeps `changed` (it only grows) and
 * drops the digest (the next backup reads all, hashes only what changed). One owner: the
 * VM (its state extension); a backup, a save or a migration's switchover touches it, never two
 * at once (the runner's run state lets only one of them own the VM).
 *
 * Carried in VmState.backup_since by a suspend file and a migration (saved with the VM
 * paused: what was logged until then is folded in first), and taken up by the VM that loads
 * that state before it runs, with tracking attached at once: a restarted or migrated VM's next
 * backup is still incremental on the same base. A part that does not fit this VM (sizes, an
 * unsafe id) is dropped with a warning; the next backup then reads everything.
 *
 * A VM restored from a backup starts its record at once (gw_backup_since_restored) with the
 * restored backup as its base, even when that backup is another VM's (a clone): its first
 * backup then stores the chunks it changed a little as page patches over the base's chunks
 * (chunk_patch.h) instead of whole chunks. */
#ifndef GW_BACKUP_BACKUP_SINCE_H
#define GW_BACKUP_BACKUP_SINCE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/vm/chunk_digest.h"

struct gw_vm;
struct gw_dirty_consumer;

struct gw_backup_since {
    struct gw_vm *vm;
    struct gw_dirty_consumer *dirty;   /* NULL until the first backup, or when unavailable */
    bool disabled;                     /* dirty tracking could not be attached: never used */
    uint64_t words;
    uint64_t *changed;                 /* pages written since the base's point in time */
    char base_id[48];                  /* the base backup ("" = none yet) */
    char base_vm[64];                  /* whose backup it is ("" = this VM's) */
    char base_store[256];              /* the store it lives in (gw_store.desc) */
    struct gw_chunk_digest cd;         /* digest state of the base's point in time */
    bool cd_valid;
};

/* vm's record, made (empty, nothing tracked until gw_backup_since_arm) and handed to the VM
 * (gw_vm_set_state_ext: it goes wherever the VM's state goes and is freed with the VM) on
 * first use. NULL on ENOMEM. */
struct gw_backup_since *gw_backup_since_get(struct gw_vm *vm);
/* For gw_vm_set_state_ext_factory: makes vm's record for a loaded state that carries one. */
int gw_backup_since_make(struct gw_vm *vm);

/* Starts tracking if it is not yet (before a backup's pause). 0, or -errno with tracking
 * disabled for good (the backups then read everything). */
int gw_backup_since_arm(struct gw_backup_since *s);

/* Inside the pause: folds what was written since the last call into `changed` and re-arms
 * the log. On failure the record forgets its base (the next backup reads everything). */
void gw_backup_since_take(struct gw_backup_since *s);

/* Whether pages [pfn, pfn + n) are unchanged since the base. */
bool gw_backup_since_unchanged(const struct gw_backup_since *s, uint64_t pfn, uint64_t n);

/* vm was just restored from backup id of VM from_vm in store, before its guest runs: tracking
 * starts now, with that backup as the base (no digest state: the next backup reads all of
 * memory, and may patch what changed). 0, or -errno (the record is then left without a base). */
int gw_backup_since_restored(struct gw_vm *vm, const char *from_vm, const char *id, const char *store);

/* Whose backup the base is: base_vm, or the VM's own name. */
const char *gw_backup_since_base_vm(const struct gw_backup_since *s);

/* A backup succeeded: it is the new base; `changed` starts empty. */
void gw_backup_since_rebase(struct gw_backup_since *s, const char *id, const char *store);

#endif
