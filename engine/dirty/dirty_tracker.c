/* The per-VM tracker, its harvester and its consumers (see dirty.h). A process runs one VM
 * (godwit-vm) or a few (tests); its trackers are kept in one list so that every consumer of
 * a VM finds the same tracker: the one process-wide thing here, behind one lock. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common/log.h"
#include "engine/dirty/dirty_backend.h"
#include "engine/vm/virtio_attach.h"
#include "engine/vm/vm.h"

static pthread_mutex_t trackers_mu = PTHREAD_MUTEX_INITIALIZER;
static struct gw_dirty_tracker *trackers;

static struct gw_dirty_tracker *find_locked(struct gw_vm *vm)
{
    for (struct gw_dirty_tracker *t = trackers; t; t = t->next)
        if (t->vm == vm) return t;
    return NULL;
}

static void mark_off(struct gw_dirty_tracker *t, uint64_t off, uint64_t len)
{
    uint64_t size = t->npages * 4096;
    if (!len || off >= size) return;
    uint64_t end = off + len;
    if (end > size || end < off) end = size;
    for (uint64_t p = off / 4096; p <= (end - 1) / 4096; p++)
        __atomic_fetch_or(&t->device[p / 64], 1ull << (p % 64), __ATOMIC_RELEASE);
}

/* The VM's device-write observer: may run on any device thread, takes no lock. */
static void mark_gpa(void *ctx, uint64_t gpa, uint64_t len)
{
    struct gw_dirty_tracker *t = ctx;
    /* Split at page granularity: a range may cross from one region into the hole. */
    while (len) {
        uint64_t n = 4096 - (gpa & 4095);
        if (n > len) n = len;
        uint64_t off = gw_guest_mem_offset(&t->vm->mem, gpa);
        if (off != UINT64_MAX) mark_off(t, off, n);
        gpa += n;
        len -= n;
    }
}

void gw_dirty_mark_gpa(struct gw_vm *vm, uint64_t gpa, uint64_t len)
{
    pthread_mutex_lock(&trackers_mu);
    struct gw_dirty_tracker *t = find_locked(vm);
    if (t) mark_gpa(t, gpa, len);
    pthread_mutex_unlock(&trackers_mu);
}

static void tracker_free(struct gw_dirty_tracker *t)
{
    free(t->device);
    free(t->harvested);
    free(t->scratch);
    free(t->slot_buf);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* A new tracker for vm with no backend running yet; NULL when out of memory. */
static struct gw_dirty_tracker *tracker_new(struct gw_vm *vm)
{
    struct gw_dirty_tracker *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->vm = vm;
    t->npages = vm->mem.size / 4096;
    t->words = (t->npages + 63) / 64;
    pthread_mutex_init(&t->mu, NULL);
    t->device = calloc(t->words, 8);
    t->harvested = calloc(t->words, 8);
    t->scratch = calloc(t->words, 8);
    t->slot_buf = calloc(t->words, 8);
    if (!t->device || !t->harvested || !t->scratch || !t->slot_buf) {
        tracker_free(t);
        return NULL;
    }
    return t;
}

/* Starts the KVM backend b on t (t->mu held). */
static int start_kvm(struct gw_dirty_tracker *t, enum gw_dirty_backend b, char *why, unsigned whylen)
{
    struct gw_vm *vm = t->vm;
    if (b == GW_DIRTY_KVM_RING && !vm->dirty_ring_entries) {
        if (why) snprintf(why, whylen, "the KVM dirty ring must be enabled before the VM's vCPUs exist; "
                                       "this VM was created without it");
        return -ENOTSUP;
    }
    t->kind = b;
    const struct gw_dirty_backend_ops *ops = &gw_dirty_kvm_bitmap_ops;
    if (vm->dirty_ring_entries) {
        /* A VM with rings logs into them only (KVM then refuses the bitmap calls): every
         * consumer of it is fed from the rings, whichever backend it asked for. */
        t->kind = GW_DIRTY_KVM_RING;
        ops = &gw_dirty_kvm_ring_ops;
        gw_info("vm %s: dirty tracking by the KVM dirty ring (%u entries per vCPU)", vm->name, vm->dirty_ring_entries);
    }
    t->manual = false;
    int r = ops->start(t, why, whylen);
    if (r) return r;
    memset(t->harvested, 0, t->words * 8);
    t->ops = ops;
    /* From now on KVM sees every write: the write-protect backend may leave pages open. */
    if (t->wp) gw_dirty_wp_shadow(t, true);
    return 0;
}

/* Starts the userfaultfd write-protect backend on t (t->mu held). */
static int start_wp(struct gw_dirty_tracker *t, char *why, unsigned whylen)
{
    int r = gw_dirty_uffd_wp_ops.start(t, why, whylen);
    if (!r && t->ops) gw_dirty_wp_shadow(t, true);
    if (!r) gw_info("vm %s: dirty tracking by userfaultfd write-protect%s", t->vm->name, t->ops ? " beside KVM" : "");
    return r;
}

int gw_dirty_attach(struct gw_vm *vm, enum gw_dirty_backend b, struct gw_dirty_consumer **out, char *why,
                    unsigned whylen)
{
    struct gw_dirty_consumer *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->npages = vm->mem.size / 4096;
    c->words = (c->npages + 63) / 64;
    c->asked = b;
    c->bitmap = calloc(c->words, 8);
    c->acc = calloc(c->words, 8);
    if (!c->bitmap || !c->acc) {
        free(c->bitmap);
        free(c->acc);
        free(c);
        return -ENOMEM;
    }
    int r = 0;
    pthread_mutex_lock(&trackers_mu);
    struct gw_dirty_tracker *t = find_locked(vm);
    bool fresh = !t;
    if (fresh && !(t = tracker_new(vm))) {
        r = -ENOMEM;
        if (why) snprintf(why, whylen, "out of memory for dirty bitmaps");
    }
    if (t) {
        pthread_mutex_lock(&t->mu);
        /* Each kind of backend runs while a consumer asked for it; a consumer joins whatever
         * runs besides (later KVM consumers join the KVM backend the first one chose). */
        if (b == GW_DIRTY_UFFD_WP && !t->wp) r = start_wp(t, why, whylen);
        else if (b != GW_DIRTY_UFFD_WP && !t->ops) r = start_kvm(t, b, why, whylen);
        if (!r) {
            if (b == GW_DIRTY_UFFD_WP) t->wp_users++;
            else t->kvm_users++;
            c->t = t;
            c->next = t->consumers;
            t->consumers = c;
        }
        pthread_mutex_unlock(&t->mu);
        if (fresh && !r) {
            gw_vm_track_device_writes(vm, mark_gpa, t);
            t->next = trackers;
            trackers = t;
        } else if (fresh) {
            tracker_free(t);
        }
    }
    pthread_mutex_unlock(&trackers_mu);
    if (r) {
        free(c->bitmap);
        free(c->acc);
        free(c);
        return r;
    }
    *out = c;
    return 0;
}

/* One harvest: what the backend logged and the devices wrote since the last one, into every
 * consumer. Called with t->mu held. */
static int harvest_locked(struct gw_dirty_tracker *t)
{
    memset(t->scratch, 0, t->words * 8);
    int r = t->ops ? t->ops->get(t, t->scratch) : 0;
    if (r) return r;
    /* Only KVM's bits need re-protecting by KVM; the write-protect backend knows its own. */
    if (t->ops)
        for (uint64_t w = 0; w < t->words; w++) t->harvested[w] |= t->scratch[w];
    if (t->wp && (r = gw_dirty_uffd_wp_ops.get(t, t->scratch))) return r;
    /* Device bits are noted as they are. */
    for (uint64_t w = 0; w < t->words; w++)
        t->scratch[w] |= __atomic_exchange_n(&t->device[w], 0, __ATOMIC_ACQ_REL);
    for (struct gw_dirty_consumer *c = t->consumers; c; c = c->next)
        for (uint64_t w = 0; w < t->words; w++) c->acc[w] |= t->scratch[w];
    t->harvests++;
    return 0;
}

int gw_dirty_fetch(struct gw_dirty_consumer *c, uint64_t *count)
{
    struct gw_dirty_tracker *t = c->t;
    pthread_mutex_lock(&t->mu);
    int r = harvest_locked(t);
    uint64_t n = 0;
    if (!r) {
        /* Accumulate: a page stays in this consumer's bitmap until it clears the page's
         * range. A fetch whose pages are never queued (the one that decides on the
         * switchover) then loses nothing: device writes are harvested only once, and in
         * classic mode KVM's bits too. */
        for (uint64_t w = 0; w < c->words; w++) {
            c->bitmap[w] |= c->acc[w];
            c->acc[w] = 0;
            n += (uint64_t)__builtin_popcountll(c->bitmap[w]);
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (count) *count = n;
    return r;
}

int gw_dirty_clear(struct gw_dirty_consumer *c, uint64_t first, uint64_t n)
{
    struct gw_dirty_tracker *t = c->t;
    if (first % 64 || first > t->npages || n > t->npages - first) return -EINVAL;
    if (n % 64 && first + n != t->npages) return -EINVAL;
    if (!n) return 0;
    uint64_t w0 = first / 64, w1 = (first + n + 63) / 64;
    pthread_mutex_lock(&t->mu);
    bool kvm_clears = t->ops && t->ops->clear;
    int r = kvm_clears ? t->ops->clear(t, first, n, t->harvested) : 0;
    if (!r && t->wp) r = gw_dirty_uffd_wp_ops.clear(t, first, n, NULL);
    if (!r) {
        if (kvm_clears) memset(&t->harvested[w0], 0, (w1 - w0) * 8);
        /* The caller reads these pages next: what it fetched of them is taken. */
        memset(&c->bitmap[w0], 0, (w1 - w0) * 8);
    }
    pthread_mutex_unlock(&t->mu);
    return r;
}

bool gw_dirty_manual(const struct gw_dirty_consumer *c)
{
    return c->t->manual;
}

const char *gw_dirty_backend_name(const struct gw_dirty_consumer *c)
{
    const struct gw_dirty_tracker *t = c->t;
    if (!t->ops) return gw_dirty_uffd_wp_ops.name;
    if (!t->wp) return t->ops->name;
    return t->ops == &gw_dirty_kvm_ring_ops ? "kvm-ring+uffd-wp" : "kvm-bitmap+uffd-wp";
}

/* Stops the backends no consumer asks for any more (t->mu held). What a stopping backend
 * logged is harvested first: the consumers that stay must not lose it. */
static void stop_unused_locked(struct gw_dirty_tracker *t)
{
    bool stop_kvm = t->ops && !t->kvm_users, stop_wp = t->wp && !t->wp_users;
    if (!stop_kvm && !stop_wp) return;
    if (t->consumers && harvest_locked(t)) gw_warn("vm %s: a last dirty harvest failed while stopping a backend", t->vm->name);
    if (stop_kvm) {
        /* Protect again what was left open for KVM before KVM stops looking. */
        if (t->wp && gw_dirty_wp_shadow(t, false)) gw_warn("vm %s: cannot write-protect guest memory again", t->vm->name);
        t->ops->stop(t);
        t->ops = NULL;
        t->manual = false;
    }
    if (stop_wp) gw_dirty_uffd_wp_ops.stop(t);
}

void gw_dirty_detach(struct gw_dirty_consumer *c)
{
    if (!c) return;
    struct gw_dirty_tracker *t = c->t;
    pthread_mutex_lock(&trackers_mu);
    pthread_mutex_lock(&t->mu);
    for (struct gw_dirty_consumer **p = &t->consumers; *p; p = &(*p)->next)
        if (*p == c) { *p = c->next; break; }
    if (c->asked == GW_DIRTY_UFFD_WP) t->wp_users--;
    else t->kvm_users--;
    bool last = t->consumers == NULL;
    if (last) {
        /* No device thread may still hold t once the observer is gone. */
        pthread_mutex_unlock(&t->mu);
        gw_vm_track_device_writes(t->vm, NULL, NULL);
        pthread_mutex_lock(&t->mu);
    }
    stop_unused_locked(t);
    pthread_mutex_unlock(&t->mu);
    if (last) {
        for (struct gw_dirty_tracker **p = &trackers; *p; p = &(*p)->next)
            if (*p == t) { *p = t->next; break; }
        tracker_free(t);
    }
    pthread_mutex_unlock(&trackers_mu);
    free(c->bitmap);
    free(c->acc);
    free(c);
}
