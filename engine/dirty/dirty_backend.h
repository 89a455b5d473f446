/* Inside engine/dirty: the tracker's state and the backend ops table (one file per backend,
 * chosen in one place: dirty_tracker.c). A tracker runs up to two backends at once: one KVM
 * backend (bitmap or ring) while any consumer asked for KVM tracking, and the userfaultfd
 * write-protect backend while any consumer asked for it; each harvest ORs both into every
 * consumer. */
#ifndef GW_DIRTY_DIRTY_BACKEND_H
#define GW_DIRTY_DIRTY_BACKEND_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/dirty/dirty.h"

struct gw_dirty_backend_ops {
    const char *name;
    /* Starts logging on every memory slot; why gets the reason of a failure. 0 or -errno. */
    int (*start)(struct gw_dirty_tracker *t, char *why, unsigned whylen);
    /* ORs the pages logged since the last call into out (t->words words). 0 or -errno. */
    int (*get)(struct gw_dirty_tracker *t, uint64_t *out);
    /* Re-protects the pages set in bits within [first, first + n) (checked by the caller).
     * NULL when the backend re-protects in get. 0 or -errno. */
    int (*clear)(struct gw_dirty_tracker *t, uint64_t first, uint64_t n, uint64_t *bits);
    void (*stop)(struct gw_dirty_tracker *t);
};

struct gw_dirty_wp;

struct gw_dirty_tracker {
    struct gw_vm *vm;
    enum gw_dirty_backend kind;      /* of the KVM backend (when ops is set) */
    const struct gw_dirty_backend_ops *ops;   /* the KVM backend, or NULL while none runs */
    struct gw_dirty_wp *wp;          /* the userfaultfd write-protect backend, or NULL */
    unsigned kvm_users, wp_users;    /* consumers that asked for each */
    bool manual;                     /* KVM manual-protect mode in use */
    uint64_t npages, words;
    pthread_mutex_t mu;              /* harvests, clears, the consumer list */
    struct gw_dirty_consumer *consumers;
    uint64_t *device;                /* device writes since the last harvest (atomic OR) */
    uint64_t *harvested;             /* harvested, not yet re-protected (what clear may clear) */
    uint64_t *scratch;               /* one harvest */
    uint64_t *slot_buf;              /* backend scratch: one slot's KVM bitmap */
    uint64_t harvests, clear_calls;
    struct gw_dirty_tracker *next;   /* the process's list of trackers */
};

extern const struct gw_dirty_backend_ops gw_dirty_kvm_bitmap_ops;
extern const struct gw_dirty_backend_ops gw_dirty_kvm_ring_ops;
/* Its state is t->wp (start sets it, stop frees it); clear ignores bits (it knows what it
 * lifted) and does nothing while KVM logs too (gw_dirty_wp_shadow). */
extern const struct gw_dirty_backend_ops gw_dirty_uffd_wp_ops;

/* Copy-before-write for a snapshot: before_write(ctx, first, n) runs in the fault handler,
 * with the backend's lock held, before the pages [first, first + n) become writable: the
 * faulting page, or the block_pages-aligned block around it (cut at the end of RAM) when the
 * previous fault was in that block or next to it. It must not write
 * guest memory or take the tracker's locks. */
struct gw_dirty_wp_hook {
    void (*before_write)(void *ctx, uint64_t first, uint64_t n);
    void *ctx;
    unsigned block_pages;            /* a power of two; 0 means 1 */
};

struct gw_dirty_wp_stats {
    uint64_t faults;                 /* WP faults handled */
    uint64_t protect_ns;             /* protecting everything at start, and the clears */
    uint64_t freeze_ns;              /* the last gw_dirty_wp_freeze */
};

/* The point in time of a snapshot (call it with the VM paused): every page protected again
 * and hook installed, atomically for the fault handler; hook NULL removes it. 0, -EBUSY
 * (another snapshot's hook is in place), or -errno from userfaultfd. */
int gw_dirty_wp_freeze(struct gw_dirty_tracker *t, const struct gw_dirty_wp_hook *hook);
/* Lifts the protection of [first, first + n) for good (a snapshot has read it), only while
 * KVM logs this VM too; otherwise leaves it (the next write must still be logged). */
void gw_dirty_wp_release(struct gw_dirty_tracker *t, uint64_t first, uint64_t n);
/* Tells the backend whether KVM logs the VM too; when KVM stops, what was left open is
 * protected again. 0 or -errno. */
int gw_dirty_wp_shadow(struct gw_dirty_tracker *t, bool kvm_logs);
void gw_dirty_wp_stats(struct gw_dirty_tracker *t, struct gw_dirty_wp_stats *st);

/* Turns KVM's dirty logging on or off on every memory slot (both KVM backends). */
int gw_dirty_kvm_set_logging(struct gw_vm *vm, bool on);

#endif
