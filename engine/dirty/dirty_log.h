/* KVM dirty-page logging over all of a VM's memory slots, seen as one bitmap indexed by
 * guest-RAM page (memfd offset / 4096), the same numbering the migration stream uses.
 *
 * With KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (the default where available), fetching the log is
 * cheap and does not re-protect anything; the caller clears (re-protects) each chunk just
 * before it sends that chunk's pages, so a write that lands after the clear is caught by the
 * next round and a write before it is already in the page we are about to read. Without the
 * capability, fetch re-protects everything at once (the classic mode) and clear is a no-op.
 *
 * Pages written by our own devices (virtio DMA into guest RAM) are invisible to KVM; the
 * device reports them through gw_dirty_mark, which may be called from any thread. */
#ifndef GW_DIRTY_DIRTY_LOG_H
#define GW_DIRTY_DIRTY_LOG_H

#include <stdbool.h>
#include <stdint.h>

struct gw_vm;

struct gw_dirty_log {
    struct gw_vm *vm;
    bool manual;              /* manual-protect mode in use */
    uint64_t npages;          /* guest RAM pages */
    uint64_t words;           /* 64-bit words in each bitmap */
    uint64_t *bitmap;         /* result of the last fetch, owned */
    uint64_t *device;         /* pages written by devices and not yet taken by a clear, owned */
    uint64_t *slot_buf;       /* scratch for one slot's KVM bitmap, owned */
    uint64_t fetches;
    uint64_t clear_calls;
};

/* Starts logging on every slot. force_classic skips manual protect (for tests and for
 * comparison). Returns 0 or -errno. */
int gw_dirty_start(struct gw_vm *vm, bool force_classic, struct gw_dirty_log **out);

/* Fetches the log into d->bitmap (and folds in device writes); *count gets the number of
 * dirty pages. Returns 0 or -errno. */
int gw_dirty_fetch(struct gw_dirty_log *d, uint64_t *count);

/* Re-protects pages [first, first + n) that are set in d->bitmap, so later writes show up in
 * the next fetch. first must be a multiple of 64; n a multiple of 64 or reaching the end of
 * RAM. No-op in classic mode. Returns 0, -EINVAL for a bad range, or -errno from KVM. */
int gw_dirty_clear(struct gw_dirty_log *d, uint64_t first, uint64_t n);

/* Marks [off, off + len) of guest RAM (memfd offsets) dirty; thread-safe. */
void gw_dirty_mark(struct gw_dirty_log *d, uint64_t off, uint64_t len);

/* The same for a guest-physical range (how devices describe their writes). */
void gw_dirty_mark_gpa(struct gw_dirty_log *d, uint64_t gpa, uint64_t len);

/* Stops logging and frees d. Safe on NULL. */
void gw_dirty_stop(struct gw_dirty_log *d);

#endif
