/* A live point-in-time view of guest memory by userfaultfd write-protect (copy-before-write).
 *
 * Inside a short pause the whole of guest RAM is write-protected; the guest then runs on.
 * When it writes a protected page, its thread stops in a WP fault; our handler thread copies
 * the 16 KiB block around the page (the pages not yet copied) to a side buffer and lifts the
 * protection, and the guest continues. The backup reads memory at leisure through
 * gw_wp_read: a copy of the range, with every page the guest has changed since the point in
 * time taken from the side buffer instead; once read, the range is unprotected for good.
 *
 * Ordering: the handler copies a page, then marks it copied (under the lock), then unprotects;
 * a reader copies the range first and only then looks at the marks (under the same lock), so
 * a page the guest may already have changed is always replaced by its saved copy.
 *
 * The side buffer is bounded (max_side bytes of copies not read yet: reading a range frees its
 * copies for reuse): a guest that rewrites more than that before the backup has read it makes the snapshot fail (gw_wp_failed) and every page is unprotected, so
 * the guest never waits on a backup that cannot finish. Faults that arrive after a failure or
 * after the range was read only unprotect. */
#ifndef GW_BACKUP_WP_SNAPSHOT_H
#define GW_BACKUP_WP_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_wp_snapshot;

/* Registers [base, base + size) (page-aligned; a memfd MAP_SHARED mapping) with a new
 * userfaultfd for write-protect and starts the handler thread. Nothing is protected yet.
 * Returns 0, or -errno (-ENOTSUP when the kernel lacks shmem write-protect) with a reason. */
int gw_wp_open(uint8_t *base, uint64_t size, uint64_t max_side, struct gw_wp_snapshot **out, char *err, size_t errlen);

/* Two steps keep the pause short (protecting 1 GiB takes 15-25 ms here): arm while the guest
 * runs (everything protected; a write before the point in time is only noted and let through),
 * then freeze inside the pause (only the pages written since arming are protected again).
 * gw_wp_protect_all does both (with the VM paused). Each returns 0 or -errno. */
int gw_wp_arm(struct gw_wp_snapshot *s);
int gw_wp_freeze(struct gw_wp_snapshot *s);
int gw_wp_protect_all(struct gw_wp_snapshot *s);

/* Copies [off, off + len) as it was at the point in time into out, then unprotects it.
 * off and len page-aligned. Returns 0, or -ENOSPC when the snapshot failed (side buffer full). */
int gw_wp_read(struct gw_wp_snapshot *s, uint64_t off, uint64_t len, uint8_t *out);

/* Gives up [off, off + len) unread (the backup knows its content from an earlier one): the
 * range is unprotected, and what the guest wrote there since the point in time is dropped. */
void gw_wp_skip(struct gw_wp_snapshot *s, uint64_t off, uint64_t len);

/* True (with the reason) once the snapshot can no longer be trusted. */
bool gw_wp_failed(struct gw_wp_snapshot *s, char *why, size_t len);

/* Unprotects everything, stops the handler, unregisters, frees. Safe on NULL. Counters: */
/* How full the side buffer is: 0..1 (s may be NULL: 0). Any thread. It holds the copies not
 * read yet: a range read or skipped gives its pages' slots back for later faults. */
double gw_wp_pressure(struct gw_wp_snapshot *s);

struct gw_wp_stats {
    uint64_t faults, pages_copied, side_bytes, protect_ns;
};
void gw_wp_close(struct gw_wp_snapshot *s, struct gw_wp_stats *st);

#endif
