/* The userfaultfd write-protect backend (see dirty.h): guest RAM is registered with a
 * userfaultfd in write-protect mode and protected whole; a write to a protected page stops
 * the writer in a WP fault, our handler thread logs the page and lifts the protection, and
 * the writer continues. A consumer's clear protects its range again, so the next write is
 * logged again (the same contract as KVM's manual-protect mode).
 *
 * Every writer faults, not only vCPUs: measured here, a buffered or O_DIRECT preadv and a
 * pipe read into the mapping fault like a guest store, so the disk's reads into guest RAM
 * (virtio-blk, librbd threads) are logged and, for a snapshot, copied first. The tracker's
 * device-write observer reports them to every consumer as well, as it does for KVM.
 *
 * A snapshot (dirty_snapshot.c) installs a hook at its point in time (gw_dirty_wp_freeze):
 * the handler calls it with the faulting block before lifting the protection, so the page is
 * copied as it was. While KVM logs the same VM (t->kvm runs beside us), KVM sees every write
 * anyway: consumers' clears then leave our protection alone (a uffd fault costs ~70 us, a
 * KVM one ~3 us), and a snapshot may lift it for good on the ranges it has read.
 *
 * Locking: w->mu covers the bitmaps and the hook, and is held across a fault's hook and its
 * unprotect, so a clear (which re-protects under w->mu) can never be undone by a fault
 * handled before it. The hook runs under w->mu and must not take the tracker's locks or
 * write guest memory. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/dirty/dirty_backend.h"
#include "engine/vm/vm.h"

/* Newer than some build hosts' kernel headers (Linux 6.4); the running kernel reports it. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

struct gw_dirty_wp {
    int uffd, stop_fd;
    uint8_t *base;
    uint64_t size, npages, words;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    uint64_t *logged;                /* written since the last harvest */
    uint64_t *open;                  /* not protected: written (or released) since last protected */
    bool shadowed;                   /* KVM logs this VM too */
    bool hooked;
    struct gw_dirty_wp_hook hook;
    uint64_t last_block;             /* the block of the last fault (+1; 0: none yet) */
    int broken;                      /* -errno: protection could not be lifted; all is unprotected */
    struct gw_dirty_wp_stats st;
};

static int wp_range(struct gw_dirty_wp *w, uint64_t first, uint64_t n, bool protect)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = (uint64_t)(uintptr_t)(w->base + first * GW_PAGE_SIZE), .len = n * GW_PAGE_SIZE},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    for (int tries = 0; tries < 1000; tries++) {
        if (ioctl(w->uffd, UFFDIO_WRITEPROTECT, &wp) == 0) return 0;
        if (errno != EAGAIN && errno != EINTR) return -errno;
    }
    return -EAGAIN;
}

static void set_bits(uint64_t *map, uint64_t first, uint64_t n)
{
    for (uint64_t p = first; p < first + n; p++) map[p / 64] |= 1ull << (p % 64);
}

/* Re-protects the open pages in [first, first + n), run by run (mu held). */
static int protect_open_locked(struct gw_dirty_wp *w, uint64_t first, uint64_t n)
{
    uint64_t end = first + n, run = UINT64_MAX;
    for (uint64_t p = first; p <= end; p++) {
        bool open = p < end && (w->open[p / 64] >> (p % 64) & 1);
        if (open && run == UINT64_MAX) run = p;
        if (!open && run != UINT64_MAX) {
            int r = wp_range(w, run, p - run, true);
            if (r) return r;
            for (uint64_t q = run; q < p; q++) w->open[q / 64] &= ~(1ull << (q % 64));
            run = UINT64_MAX;
        }
        /* Skip whole closed words. */
        if (!open && p % 64 == 0 && p + 64 <= end && !w->open[p / 64]) p += 63;
    }
    return 0;
}

/* The guest must never stay blocked: give up protecting, and say so at the next harvest. */
static void break_locked(struct gw_dirty_wp *w, int r)
{
    if (!w->broken) gw_error("userfaultfd write-protect tracking stops: cannot lift protection: %s", strerror(-r));
    w->broken = r;
    wp_range(w, 0, w->npages, false);
}

/* One WP fault: log the block, let the snapshot copy it, then lift the protection. */
static void handle_fault(struct gw_dirty_wp *w, uint64_t addr)
{
    uint64_t off = addr - (uint64_t)(uintptr_t)w->base;
    if (off >= w->size) return;
    pthread_mutex_lock(&w->mu);
    /* A lone fault opens (and has the hook copy) its own page only: a random writer's
     * neighbours are rarely written before the backup reads them, and every page copied holds
     * a slot of the snapshot's bounded side buffer (a 512 MiB random dirtier filled it four
     * times as fast with whole 16 KiB blocks). A fault in the block of the previous fault or
     * next to it (a writer moving through memory) opens its whole block, sparing the faults
     * of the pages that follow. */
    unsigned hbp = w->hooked && w->hook.block_pages ? w->hook.block_pages : 1, bp = 1;
    uint64_t page = off / GW_PAGE_SIZE, block = page / hbp, prev = w->last_block - 1;
    if (hbp > 1 && w->last_block && block + 1 >= prev && block <= prev + 1) bp = hbp;   /* |block - prev| <= 1 */
    w->last_block = block + 1;
    uint64_t first = page / bp * bp;
    uint64_t n = first + bp <= w->npages ? bp : w->npages - first;
    w->st.faults++;
    if (w->hooked) w->hook.before_write(w->hook.ctx, first, n);
    set_bits(w->logged, first, n);
    set_bits(w->open, first, n);
    int r = wp_range(w, first, n, false);
    if (r) break_locked(w, r);
    pthread_mutex_unlock(&w->mu);
}

static void *handler(void *arg)
{
    struct gw_dirty_wp *w = arg;
    struct pollfd pf[2] = {{.fd = w->uffd, .events = POLLIN}, {.fd = w->stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(pf, 2, -1) < 0) { if (errno == EINTR) continue; break; }
        if (pf[1].revents) break;
        struct uffd_msg msg[16];
        ssize_t n = read(w->uffd, msg, sizeof msg);
        if (n < 0) { if (errno == EAGAIN || errno == EINTR) continue; break; }
        for (size_t i = 0; i < (size_t)n / sizeof msg[0]; i++)
            if (msg[i].event == UFFD_EVENT_PAGEFAULT) handle_fault(w, msg[i].arg.pagefault.address);
    }
    return NULL;
}

static int open_uffd(void)
{
    /* Not UFFD_USER_MODE_ONLY: KVM's accesses for the vCPU and our devices' reads into guest
     * RAM (kernel copies) must fault like the guest's stores. */
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) return fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) return -errno;
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    int e = errno;
    close(dev);
    return fd < 0 ? -e : fd;
}

static void wp_free(struct gw_dirty_wp *w)
{
    if (!w) return;
    if (w->thread_started) {
        uint64_t one = 1;
        if (write(w->stop_fd, &one, sizeof one) < 0) gw_warn("dirty tracking: cannot stop the write-protect handler");
        pthread_join(w->thread, NULL);
    }
    if (w->uffd >= 0) {
        /* Unregistering lifts every protection and wakes any writer still waiting. */
        struct uffdio_range rg = {.start = (uint64_t)(uintptr_t)w->base, .len = w->size};
        ioctl(w->uffd, UFFDIO_UNREGISTER, &rg);
        close(w->uffd);
    }
    if (w->stop_fd >= 0) close(w->stop_fd);
    free(w->logged);
    free(w->open);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static int wp_start(struct gw_dirty_tracker *t, char *why, unsigned whylen)
{
    struct gw_vm *vm = t->vm;
    struct gw_dirty_wp *w = calloc(1, sizeof *w);
    if (!w) return -ENOMEM;
    w->uffd = w->stop_fd = -1;
    w->base = vm->mem.base;
    w->size = vm->mem.size;
    w->npages = t->npages;
    w->words = t->words;
    pthread_mutex_init(&w->mu, NULL);
    w->logged = calloc(w->words, 8);
    w->open = calloc(w->words, 8);
    int r = w->logged && w->open ? 0 : -ENOMEM;
    const char *step = "out of memory";
    if (!r && (w->uffd = open_uffd()) < 0) { r = w->uffd; step = "userfaultfd"; }
    if (!r) {
        /* Anonymous memory needs WP_UNPOPULATED (never-touched pages are protected too);
         * a memfd needs WP_HUGETLBFS_SHMEM. */
        struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED};
        if (ioctl(w->uffd, UFFDIO_API, &api) < 0) {
            r = errno == EINVAL ? -ENOTSUP : -errno;
            step = "userfaultfd write-protect of shared memory";
        }
    }
    if (!r) {
        struct uffdio_register reg = {.range = {.start = (uint64_t)(uintptr_t)w->base, .len = w->size},
                                      .mode = UFFDIO_REGISTER_MODE_WP};
        if (ioctl(w->uffd, UFFDIO_REGISTER, &reg) < 0) { r = -errno; step = "userfaultfd register (is another tracker or a post-copy placer on this memory?)"; }
    }
    if (!r && (w->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) { r = -errno; step = "eventfd"; }
    if (!r && (r = -pthread_create(&w->thread, NULL, handler, w)) == 0) {
        w->thread_started = true;
        pthread_setname_np(w->thread, "wp-faults");   /* what top and a CPU-priority tool find */
    } else if (r) step = "handler thread";
    if (!r) {
        /* Everything protected while the guest runs (1 GiB takes 15-25 ms here). */
        uint64_t t0 = gw_now_ns();
        pthread_mutex_lock(&w->mu);
        r = wp_range(w, 0, w->npages, true);
        pthread_mutex_unlock(&w->mu);
        w->st.protect_ns = gw_now_ns() - t0;
        if (r) step = "userfaultfd write-protect";
    }
    if (r) {
        if (why) snprintf(why, whylen, "cannot start userfaultfd write-protect tracking: %s: %s", step, strerror(-r));
        wp_free(w);
        return r;
    }
    t->wp = w;
    return 0;
}

static int wp_get(struct gw_dirty_tracker *t, uint64_t *out)
{
    struct gw_dirty_wp *w = t->wp;
    pthread_mutex_lock(&w->mu);
    int r = w->broken;
    for (uint64_t i = 0; i < w->words; i++) {
        out[i] |= w->logged[i];
        w->logged[i] = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return r;
}

static int wp_clear(struct gw_dirty_tracker *t, uint64_t first, uint64_t n, uint64_t *bits)
{
    (void)bits;   /* our own open map knows what was lifted, harvested or not */
    struct gw_dirty_wp *w = t->wp;
    pthread_mutex_lock(&w->mu);
    int r = w->broken;
    if (!r && !w->shadowed) {
        uint64_t t0 = gw_now_ns();
        r = protect_open_locked(w, first, n);
        w->st.protect_ns += gw_now_ns() - t0;
    }
    pthread_mutex_unlock(&w->mu);
    return r;
}

static void wp_stop(struct gw_dirty_tracker *t)
{
    wp_free(t->wp);
    t->wp = NULL;
}

const struct gw_dirty_backend_ops gw_dirty_uffd_wp_ops = {
    .name = "uffd-wp", .start = wp_start, .get = wp_get, .clear = wp_clear, .stop = wp_stop,
};

int gw_dirty_wp_shadow(struct gw_dirty_tracker *t, bool kvm_logs)
{
    struct gw_dirty_wp *w = t->wp;
    pthread_mutex_lock(&w->mu);
    int r = 0;
    /* KVM stops: the pages we left open for it are ours to log again. */
    if (w->shadowed && !kvm_logs && !w->broken) r = protect_open_locked(w, 0, w->npages);
    w->shadowed = kvm_logs;
    pthread_mutex_unlock(&w->mu);
    return r;
}

int gw_dirty_wp_freeze(struct gw_dirty_tracker *t, const struct gw_dirty_wp_hook *hook)
{
    struct gw_dirty_wp *w = t->wp;
    uint64_t t0 = gw_now_ns();
    pthread_mutex_lock(&w->mu);
    int r = 0;
    if (!hook) {
        w->hooked = false;
    } else {
        r = w->broken ? w->broken : w->hooked ? -EBUSY : 0;
        /* Every page protected again, and the hook in place, before any fault is handled:
         * no write after this point reaches a page uncopied. */
        if (!r) r = protect_open_locked(w, 0, w->npages);
        if (!r) {
            w->hooked = true;
            w->hook = *hook;
        }
    }
    pthread_mutex_unlock(&w->mu);
    w->st.freeze_ns = gw_now_ns() - t0;
    return r;
}

void gw_dirty_wp_release(struct gw_dirty_tracker *t, uint64_t first, uint64_t n)
{
    struct gw_dirty_wp *w = t->wp;
    pthread_mutex_lock(&w->mu);
    /* Only while KVM logs every write: otherwise this range's next write would go unseen. */
    if (w->shadowed && !w->broken && wp_range(w, first, n, false) == 0) set_bits(w->open, first, n);
    pthread_mutex_unlock(&w->mu);
}

void gw_dirty_wp_stats(struct gw_dirty_tracker *t, struct gw_dirty_wp_stats *st)
{
    struct gw_dirty_wp *w = t->wp;
    pthread_mutex_lock(&w->mu);
    *st = w->st;
    pthread_mutex_unlock(&w->mu);
}
