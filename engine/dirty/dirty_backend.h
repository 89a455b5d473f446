/* Inside engine/dirty: the tracker's state and the backend ops table (one file per backend,
 * chosen in one place: dirty_tracker.c). */
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

struct gw_dirty_tracker {
    struct gw_vm *vm;
    enum gw_dirty_backend kind;
    const struct gw_dirty_backend_ops *ops;
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

/* Turns KVM's dirty logging on or off on every memory slot (both KVM backends). */
int gw_dirty_kvm_set_logging(struct gw_vm *vm, bool on);

#endif
