/* A live point-in-time view of guest memory (copy-before-write), as a consumer of the VM's
 * dirty tracker on its userfaultfd write-protect backend (dirty.h, dirty_uffd_wp.c).
 *
 * Opening attaches a GW_DIRTY_UFFD_WP consumer: the backend protects all of guest RAM while
 * the guest runs (1 GiB takes 15-25 ms here), and writes from then on are only logged. The
 * freeze, inside a short pause, is the point in time: the pages written since the open are
 * protected again and the snapshot's copy hook goes in. When the guest (or a device: their
 * reads into guest RAM fault the same way) then writes a protected page, the backend's
 * handler calls the hook, which copies the page, or the 16 KiB block around it for a writer
 * moving through memory (the pages not yet copied or read), to a side buffer; then the page becomes writable and the write is logged
 * for every consumer of the tracker. The backup reads memory at leisure through
 * gw_dirty_snapshot_read: a copy of the range with every page changed since the point in
 * time taken from the side buffer instead.
 *
 * Ordering: the hook copies a page and marks it copied under the snapshot's lock before the
 * backend lifts the protection; a reader copies the range first and only then looks at the
 * marks (under the same lock), so a page the guest may already have changed is always
 * replaced by its saved copy.
 *
 * Once read (or skipped), a range is unprotected for good when KVM logs the VM too (another
 * consumer keeps the KVM backend running, e.g. the incremental-backup bitmap); otherwise it
 * stays protected so its next write is still logged, and costs one more fault.
 *
 * The side buffer is bounded (max_side bytes of copies not read yet: reading a range frees
 * its copies for reuse): a guest that rewrites more than that before the backup has read it
 * makes the snapshot fail (gw_dirty_snapshot_failed); later faults copy nothing, so the
 * guest never waits on a backup that cannot finish. One snapshot per VM at a time. */
#ifndef GW_DIRTY_DIRTY_SNAPSHOT_H
#define GW_DIRTY_DIRTY_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_vm;
struct gw_dirty_snapshot;

/* Attaches to vm's tracker with the write-protect backend (everything protected, nothing
 * copied yet). Returns 0, or -errno (-ENOTSUP when the kernel lacks shmem write-protect,
 * -EBUSY when the memory is registered with another userfaultfd) with a reason in err. */
int gw_dirty_snapshot_open(struct gw_vm *vm, uint64_t max_side, struct gw_dirty_snapshot **out, char *err,
                           size_t errlen);

/* The point in time (the VM paused; its cost is re-protecting what was written since the
 * open). 0, -EBUSY (another snapshot of this VM is frozen), or -errno. */
int gw_dirty_snapshot_freeze(struct gw_dirty_snapshot *s);

/* Copies [off, off + len) (memfd offsets, page-aligned, inside RAM) as it was at the point
 * in time into out. Returns 0, -EINVAL for a bad range, -ENOSPC when the snapshot failed. */
int gw_dirty_snapshot_read(struct gw_dirty_snapshot *s, uint64_t off, uint64_t len, uint8_t *out);

/* Gives up [off, off + len) unread (the backup knows its content from an earlier one): what
 * the guest wrote there since the point in time is dropped. */
void gw_dirty_snapshot_skip(struct gw_dirty_snapshot *s, uint64_t off, uint64_t len);

/* True (with the reason) once the snapshot can no longer be trusted. */
bool gw_dirty_snapshot_failed(struct gw_dirty_snapshot *s, char *why, size_t len);

/* How full the side buffer is: 0..1 (s may be NULL: 0). Any thread. */
double gw_dirty_snapshot_pressure(struct gw_dirty_snapshot *s);

/* The side buffer in the unit of its size: what the forecast of its fill reads
 * (backup/side_fill.h). */
#define GW_DIRTY_SNAPSHOT_BINS 256
struct gw_dirty_snapshot_fill {
    double full;     /* copies held (not read yet), as gw_dirty_snapshot_pressure */
    double copied;   /* copies ever made: only grows (a read frees a slot, not the count) */
    double held[GW_DIRTY_SNAPSHOT_BINS];   /* the copies held by where their pages lie: bin i covers
                                            * [i, i + 1) / GW_DIRTY_SNAPSHOT_BINS of guest RAM */
};

/* Fills out (all zero when s is NULL). Any thread. */
void gw_dirty_snapshot_fill(struct gw_dirty_snapshot *s, struct gw_dirty_snapshot_fill *out);

struct gw_dirty_snapshot_stats {
    uint64_t faults;          /* WP faults handled by the backend while the snapshot was open */
    uint64_t pages_copied;    /* saved before the guest rewrote them */
    uint64_t side_bytes;      /* side buffer allocated */
    uint64_t side_peak_bytes; /* the most copies it held at once */
    uint64_t freeze_ns;       /* the freeze (inside the pause) */
};

/* Removes the hook, detaches (the last write-protect consumer unprotects everything), frees.
 * Safe on NULL. */
void gw_dirty_snapshot_close(struct gw_dirty_snapshot *s, struct gw_dirty_snapshot_stats *st);

#endif
