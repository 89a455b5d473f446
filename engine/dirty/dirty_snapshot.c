/* Live snapshot of guest memory on the dirty tracker's write-protect backend (see
 * dirty_snapshot.h). The snapshot owns the page states and the side buffer; the backend owns
 * the userfaultfd, the protection and the fault handler, which calls copy_before_write. */
#include "engine/dirty/dirty_snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/util.h"
#include "engine/dirty/dirty_backend.h"
#include "engine/vm/vm.h"

#define SNAP_BLOCK_PAGES 4u           /* copied per fault by a writer moving through memory: 16 KiB */
#define SLAB_BYTES (2u << 20)         /* side buffer grows in 2 MiB slabs */
#define SLAB_PAGES (SLAB_BYTES / GW_PAGE_SIZE)

enum { PG_PROTECTED = 0, PG_COPIED = 1, PG_DONE = 2 };
#define NO_SLOT UINT32_MAX

struct gw_dirty_snapshot {
    struct gw_dirty_consumer *c;
    uint8_t *base;
    uint64_t size, npages, max_side;
    bool frozen;
    uint64_t faults0;                 /* the backend's fault count at the open */
    pthread_mutex_t lock;             /* page states, slots, slabs, failure */
    uint8_t *state;                   /* per page: PG_* */
    uint32_t *slot;                   /* per copied page: its slot in the side buffer */
    uint8_t **slabs;
    size_t nslabs, slab_cap;
    uint64_t used_slots;              /* slots holding a copy not read yet */
    uint64_t peak_slots;              /* the most used_slots has been */
    uint64_t top;                     /* slots ever made (indices below it exist in the slabs) */
    uint32_t free_head;               /* a slot given back (its first 4 bytes: the next), or NO_SLOT */
    uint64_t held_bin[GW_DIRTY_SNAPSHOT_BINS];   /* slots in use, by where their pages lie */
    bool failed;
    char why[160];
    struct gw_dirty_snapshot_stats st;
};

static uint8_t *slot_ptr(struct gw_dirty_snapshot *s, uint32_t slot)
{
    return s->slabs[slot / SLAB_PAGES] + (slot % SLAB_PAGES) * GW_PAGE_SIZE;
}

/* A slot for one page copy; NULL when the side buffer is full. Called with the lock held.
 * The bound is on copies not read yet: a slot whose page the backup has read (or skipped) is
 * given back (free_slot) and used again, so the buffer holds what is still to be read. */
static uint8_t *new_slot(struct gw_dirty_snapshot *s, uint32_t *slot)
{
    if ((s->used_slots + 1) * GW_PAGE_SIZE > s->max_side) return NULL;
    if (s->free_head != NO_SLOT) {
        uint32_t n = s->free_head;
        uint8_t *p = slot_ptr(s, n);
        memcpy(&s->free_head, p, sizeof s->free_head);
        if (++s->used_slots > s->peak_slots) s->peak_slots = s->used_slots;
        *slot = n;
        return p;
    }
    uint64_t n = s->top;
    if (n >= NO_SLOT) return NULL;
    if (n / SLAB_PAGES >= s->nslabs) {
        if (s->nslabs == s->slab_cap) {
            size_t cap = s->slab_cap ? s->slab_cap * 2 : 16;
            uint8_t **ns = realloc(s->slabs, cap * sizeof *ns);
            if (!ns) return NULL;
            s->slabs = ns;
            s->slab_cap = cap;
        }
        if (!(s->slabs[s->nslabs] = malloc(SLAB_BYTES))) return NULL;
        s->nslabs++;
    }
    if (++s->used_slots > s->peak_slots) s->peak_slots = s->used_slots;
    s->top++;
    *slot = (uint32_t)n;
    return slot_ptr(s, (uint32_t)n);
}

static unsigned bin_of(const struct gw_dirty_snapshot *s, uint64_t page)
{
    return (unsigned)(page * GW_DIRTY_SNAPSHOT_BINS / s->npages);
}

/* Gives a read page's slot back (lock held). */
static void free_slot(struct gw_dirty_snapshot *s, uint64_t page)
{
    uint32_t slot = s->slot[page];
    memcpy(slot_ptr(s, slot), &s->free_head, sizeof s->free_head);
    s->free_head = slot;
    s->used_slots--;
    s->held_bin[bin_of(s, page)]--;
}

/* The backend's hook: [first, first + n) is about to become writable. Runs in the fault
 * handler under the backend's lock; reads guest memory only. */
static void copy_before_write(void *ctx, uint64_t first, uint64_t n)
{
    struct gw_dirty_snapshot *s = ctx;
    pthread_mutex_lock(&s->lock);
    for (uint64_t p = first; p < first + n && !s->failed; p++) {
        if (s->state[p] != PG_PROTECTED) continue;
        uint32_t slot;
        uint8_t *dst = new_slot(s, &slot);
        if (!dst) {
            snprintf(s->why, sizeof s->why, "the guest changed more than %llu MiB before the backup could read it",
                     (unsigned long long)(s->max_side >> 20));
            s->failed = true;
            break;
        }
        memcpy(dst, s->base + p * GW_PAGE_SIZE, GW_PAGE_SIZE);
        s->slot[p] = slot;
        s->state[p] = PG_COPIED;
        s->st.pages_copied++;
        s->held_bin[bin_of(s, p)]++;
    }
    pthread_mutex_unlock(&s->lock);
}

int gw_dirty_snapshot_open(struct gw_vm *vm, uint64_t max_side, struct gw_dirty_snapshot **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    if (errlen) err[0] = 0;
    struct gw_dirty_snapshot *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->base = vm->mem.base;
    s->size = vm->mem.size;
    s->npages = vm->mem.size / GW_PAGE_SIZE;
    s->max_side = max_side;
    s->free_head = NO_SLOT;
    pthread_mutex_init(&s->lock, NULL);
    s->state = calloc(s->npages, 1);
    s->slot = calloc(s->npages, sizeof *s->slot);
    int r = s->state && s->slot ? 0 : -ENOMEM;
    if (r) snprintf(err, errlen, "live snapshot: out of memory");
    if (!r) r = gw_dirty_attach(vm, GW_DIRTY_UFFD_WP, &s->c, err, (unsigned)errlen);
    if (r) {
        gw_dirty_snapshot_close(s, NULL);
        return r;
    }
    struct gw_dirty_wp_stats ws;
    gw_dirty_wp_stats(s->c->t, &ws);
    s->faults0 = ws.faults;
    *out = s;
    return 0;
}

int gw_dirty_snapshot_freeze(struct gw_dirty_snapshot *s)
{
    struct gw_dirty_wp_hook hook = {.before_write = copy_before_write, .ctx = s, .block_pages = SNAP_BLOCK_PAGES};
    int r = gw_dirty_wp_freeze(s->c->t, &hook);
    if (!r) s->frozen = true;
    struct gw_dirty_wp_stats ws;
    gw_dirty_wp_stats(s->c->t, &ws);
    s->st.freeze_ns = ws.freeze_ns;
    return r;
}

static bool range_ok(const struct gw_dirty_snapshot *s, uint64_t off, uint64_t len)
{
    return off % GW_PAGE_SIZE == 0 && len % GW_PAGE_SIZE == 0 && gw_range_ok(off, len, s->size);
}

int gw_dirty_snapshot_read(struct gw_dirty_snapshot *s, uint64_t off, uint64_t len, uint8_t *out)
{
    if (!range_ok(s, off, len)) return -EINVAL;
    memcpy(out, s->base + off, len);
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t p0 = off / GW_PAGE_SIZE, n = len / GW_PAGE_SIZE;
    pthread_mutex_lock(&s->lock);
    int r = s->failed ? -ENOSPC : 0;
    for (uint64_t k = 0; k < n && !r; k++) {
        if (s->state[p0 + k] == PG_COPIED) {
            memcpy(out + k * GW_PAGE_SIZE, slot_ptr(s, s->slot[p0 + k]), GW_PAGE_SIZE);
            free_slot(s, p0 + k);
        }
        s->state[p0 + k] = PG_DONE;
    }
    pthread_mutex_unlock(&s->lock);
    /* Read: the guest may write this range freely from now on (when KVM logs it). */
    if (!r) gw_dirty_wp_release(s->c->t, p0, n);
    return r;
}

void gw_dirty_snapshot_skip(struct gw_dirty_snapshot *s, uint64_t off, uint64_t len)
{
    if (!range_ok(s, off, len)) return;
    uint64_t p0 = off / GW_PAGE_SIZE, n = len / GW_PAGE_SIZE;
    pthread_mutex_lock(&s->lock);
    for (uint64_t k = 0; k < n; k++) {
        if (s->state[p0 + k] == PG_COPIED) free_slot(s, p0 + k);
        s->state[p0 + k] = PG_DONE;
    }
    pthread_mutex_unlock(&s->lock);
    gw_dirty_wp_release(s->c->t, p0, n);
}

bool gw_dirty_snapshot_failed(struct gw_dirty_snapshot *s, char *why, size_t len)
{
    pthread_mutex_lock(&s->lock);
    bool f = s->failed;
    if (f) snprintf(why, len, "%s", s->why);
    pthread_mutex_unlock(&s->lock);
    return f;
}

double gw_dirty_snapshot_pressure(struct gw_dirty_snapshot *s)
{
    if (!s || !s->max_side) return 0;
    pthread_mutex_lock(&s->lock);
    double f = (double)(s->used_slots * GW_PAGE_SIZE) / (double)s->max_side;
    pthread_mutex_unlock(&s->lock);
    return f;
}

void gw_dirty_snapshot_fill(struct gw_dirty_snapshot *s, struct gw_dirty_snapshot_fill *out)
{
    memset(out, 0, sizeof *out);
    if (!s || !s->max_side) return;
    double unit = (double)GW_PAGE_SIZE / (double)s->max_side;
    pthread_mutex_lock(&s->lock);
    out->full = (double)s->used_slots * unit;
    out->copied = (double)s->st.pages_copied * unit;
    for (unsigned i = 0; i < GW_DIRTY_SNAPSHOT_BINS; i++) out->held[i] = (double)s->held_bin[i] * unit;
    pthread_mutex_unlock(&s->lock);
}

void gw_dirty_snapshot_close(struct gw_dirty_snapshot *s, struct gw_dirty_snapshot_stats *st)
{
    if (!s) return;
    if (s->c) {
        /* The hook goes before the side buffer does: no fault may copy into freed slabs. */
        if (s->frozen) gw_dirty_wp_freeze(s->c->t, NULL);
        struct gw_dirty_wp_stats ws;
        gw_dirty_wp_stats(s->c->t, &ws);
        s->st.faults = ws.faults - s->faults0;
        gw_dirty_detach(s->c);
    }
    s->st.side_bytes = s->nslabs * (uint64_t)SLAB_BYTES;
    s->st.side_peak_bytes = s->peak_slots * GW_PAGE_SIZE;
    if (st) *st = s->st;
    for (size_t i = 0; i < s->nslabs; i++) free(s->slabs[i]);
    free(s->slabs);
    free(s->state);
    free(s->slot);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
