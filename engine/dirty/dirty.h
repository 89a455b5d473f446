/* Dirty-page tracking for one VM, with several consumers at once.
 *
 * A migration, a running backup and the incremental-backup bitmap kept between backups each
 * attach as a consumer with a bitmap of its own. One tracker per VM owns the backend and a
 * harvester: whenever any consumer fetches, the harvester reads what the backend logged since
 * its last harvest and ORs it into every consumer's accumulated bitmap, so each consumer sees
 * every write since its own previous fetch, whoever harvested it. Writes by our own devices
 * (virtio DMA into guest RAM, invisible to KVM) reach every consumer the same way: the
 * tracker registers itself as the VM's device-write observer while it runs.
 *
 * Pages are numbered by guest-RAM offset / 4096 (the memfd), the numbering migration uses.
 * One bit per page: bit pfn % 64 of word pfn / 64.
 *
 * Backends: a KVM one, chosen by the first consumer that asks for KVM tracking (later ones
 * join it), and userfaultfd write-protect while any consumer asks for it:
 *   KVM_BITMAP   KVM's dirty bitmap with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 where available
 *                (the default): a fetch does not re-protect anything; a consumer re-protects
 *                a range with gw_dirty_clear just before it reads those pages, so a write
 *                after the clear shows up in the next fetch and a write before it is already
 *                in the page being read. Without the capability: classic mode (each harvest
 *                re-protects everything; clear is a no-op).
 *   KVM_CLASSIC  the classic mode on purpose (tests, comparison).
 *   KVM_RING     the KVM dirty ring (engine/vm/dirty_ring.h): must be enabled before the VM's
 *                vCPUs exist, so it is chosen when the VM is created (gw_vm_config's
 *                dirty_ring_entries, `godwit-vm run --dirty-ring N`); a VM created with rings
 *                is tracked by them whatever backend a consumer asks for, and asking for
 *                the ring on a VM without rings fails with -ENOTSUP and says so. Each harvest
 *                collects and resets the rings (which re-protects the pages), so clear has
 *                nothing to do. (Measured here: exact for CPL3 guests, loses entries while
 *                PVM emulates CPL0 code; see the KVM notes.)
 *   UFFD_WP      userfaultfd write-protect (dirty_uffd_wp.c): guest RAM protected whole; the
 *                first write to a protected page (a vCPU's, or a device's read into guest
 *                RAM: host writes through the mapping fault too) is logged and the page
 *                unprotected; clear protects the range again. Costs a fault round trip
 *                (~70 us here) per first write, so it runs only while a consumer asks for
 *                it, and beside a KVM backend when another consumer asks for that: each
 *                harvest then ORs both. Its use is the live snapshot (dirty_snapshot.h), which
 *                copies a page before the write goes through. -ENOTSUP (why says so) where
 *                the kernel lacks write-protect of shared memory.
 *
 * Thread safety: consumers may fetch, clear and detach from any threads (the tracker has one
 * lock); device writes are marked lock-free from any thread. */
#ifndef GW_DIRTY_DIRTY_H
#define GW_DIRTY_DIRTY_H

#include <stdbool.h>
#include <stdint.h>

struct gw_vm;
struct gw_dirty_tracker;

enum gw_dirty_backend {
    GW_DIRTY_KVM_BITMAP = 0,
    GW_DIRTY_KVM_CLASSIC,
    GW_DIRTY_KVM_RING,
    GW_DIRTY_UFFD_WP,
};

struct gw_dirty_consumer {
    uint64_t npages;            /* guest RAM pages */
    uint64_t words;             /* 64-bit words in bitmap */
    uint64_t *bitmap;           /* what the last gw_dirty_fetch returned; owned, read-only */
    /* private to the tracker */
    struct gw_dirty_tracker *t;
    enum gw_dirty_backend asked;
    uint64_t *acc;              /* harvested since this consumer's last fetch */
    struct gw_dirty_consumer *next;
};

/* Attaches a consumer to vm's tracker, starting tracking (with backend b) when it is the
 * first. Its bitmaps start empty: it sees writes from now on. Returns 0, -ENOMEM, -ENOTSUP
 * (backend not available; why says so), or -errno from KVM. why (may be NULL) gets a
 * one-line reason on failure. */
int gw_dirty_attach(struct gw_vm *vm, enum gw_dirty_backend b, struct gw_dirty_consumer **out, char *why,
                    unsigned whylen);

/* Harvests, then adds everything this consumer has accumulated since its last fetch to
 * c->bitmap, which keeps every page until this consumer clears the page's range (a fetch
 * whose pages are not read loses none of them); *count (may be NULL) gets the number of
 * pages set. Returns 0 or -errno. */
int gw_dirty_fetch(struct gw_dirty_consumer *c, uint64_t *count);

/* Takes the pages in [first, first + n) out of c->bitmap (the caller reads them next) and
 * re-protects the harvested ones, so later writes show up in the next fetch of every
 * consumer (none loses a page: what was harvested is already in every consumer's bitmap).
 * first must be a multiple of 64; n a multiple of 64 or reaching the end of RAM. Nothing to
 * re-protect in classic mode. Returns 0, -EINVAL for a bad range, or -errno from KVM. */
int gw_dirty_clear(struct gw_dirty_consumer *c, uint64_t first, uint64_t n);

/* Whether the tracker runs in KVM's manual-protect mode (for tests and stats). */
bool gw_dirty_manual(const struct gw_dirty_consumer *c);
/* The backends that feed c ("kvm-bitmap", "kvm-ring", "uffd-wp", "kvm-bitmap+uffd-wp",
 * "kvm-ring+uffd-wp"), for logs, stats and tests. */
const char *gw_dirty_backend_name(const struct gw_dirty_consumer *c);

/* Detaches and frees c; the last consumer stops tracking. Safe on NULL. */
void gw_dirty_detach(struct gw_dirty_consumer *c);

/* Marks the guest-physical range [gpa, gpa + len) dirty for every consumer of vm's tracker,
 * as a device write does (no-op when nothing tracks vm). Thread-safe. */
void gw_dirty_mark_gpa(struct gw_vm *vm, uint64_t gpa, uint64_t len);

#endif
