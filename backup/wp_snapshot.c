/* Live snapshot of guest memory by userfaultfd write-protect (see wp_snapshot.h). */
#include "backup/wp_snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"

/* Newer than the build host's kernel headers (Linux 6.4); the running kernel reports it. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

#define WP_BLOCK_PAGES 4u             /* copied per fault: 16 KiB (random writers amplify larger blocks) */
#define SLAB_BYTES (2u << 20)         /* side buffer grows in 2 MiB slabs */
#define SLAB_PAGES (SLAB_BYTES / GW_PAGE_SIZE)

enum { PG_PROTECTED = 0, PG_COPIED = 1, PG_DONE = 2 };
#define NO_SLOT UINT32_MAX

struct gw_wp_snapshot {
    int uffd, stop_fd;
    uint8_t *base;
    uint64_t size, npages, max_side;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;             /* page states, slots, slabs, failure */
    uint8_t *state;                   /* per page: PG_* */
    uint32_t *slot;                   /* per copied page: its slot in the side buffer */
    uint8_t **slabs;
    size_t nslabs, slab_cap;
    uint64_t used_slots;              /* slots holding a copy not read yet */
    uint64_t top;                     /* slots ever made (indices below it exist in the slabs) */
    uint32_t free_head;               /* a slot given back (its first 4 bytes: the next), or NO_SLOT */
    bool failed;
    bool tracking;                    /* armed, before the point in time: note writes only */
    unsigned busy;                    /* faults being handled in tracking mode */
    pthread_cond_t idle;
    uint64_t *armed_dirty;            /* pages written while armed (bitmap) */
    char why[160];
    struct gw_wp_stats st;
};

static int wp_range(struct gw_wp_snapshot *s, uint64_t off, uint64_t len, bool protect)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = (uint64_t)(uintptr_t)(s->base + off), .len = len},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    for (int tries = 0; tries < 1000; tries++) {
        if (ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp) == 0) return 0;
        if (errno != EAGAIN && errno != EINTR) return -errno;
    }
    return -EAGAIN;
}

static uint8_t *slot_ptr(struct gw_wp_snapshot *s, uint32_t slot);

/* A slot for one page copy; NULL when the side buffer is full. Called with the lock held.
 * The bound is on copies not read yet: a slot whose page the backup has read (or skipped) is
 * given back (free_slot) and used again, so the buffer holds what is still to be read, not
 * every page the guest ever rewrote; a backup that keeps reading needs less speed to finish. */
static uint8_t *new_slot(struct gw_wp_snapshot *s, uint32_t *slot)
{
    if ((s->used_slots + 1) * GW_PAGE_SIZE > s->max_side) return NULL;
    if (s->free_head != NO_SLOT) {
        uint32_t n = s->free_head;
        uint8_t *p = slot_ptr(s, n);
        memcpy(&s->free_head, p, sizeof s->free_head);
        s->used_slots++;
        *slot = n;
        return p;
    }
    uint64_t n = s->top;
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
    s->used_slots++;
    s->top++;
    *slot = (uint32_t)n;
    return s->slabs[n / SLAB_PAGES] + (n % SLAB_PAGES) * GW_PAGE_SIZE;
}

/* Gives a read page's slot back (lock held). */
static void free_slot(struct gw_wp_snapshot *s, uint32_t slot)
{
    memcpy(slot_ptr(s, slot), &s->free_head, sizeof s->free_head);
    s->free_head = slot;
    s->used_slots--;
}

double gw_wp_pressure(struct gw_wp_snapshot *s)
{
    if (!s || !s->max_side) return 0;
    pthread_mutex_lock(&s->lock);
    double f = (double)(s->used_slots * GW_PAGE_SIZE) / (double)s->max_side;
    pthread_mutex_unlock(&s->lock);
    return f;
}

static uint8_t *slot_ptr(struct gw_wp_snapshot *s, uint32_t slot)
{
    return s->slabs[slot / SLAB_PAGES] + (slot % SLAB_PAGES) * GW_PAGE_SIZE;
}

static void fail_locked(struct gw_wp_snapshot *s, const char *why)
{
    if (!s->failed) snprintf(s->why, sizeof s->why, "%s", why);
    s->failed = true;
}

/* A fault while armed: the page is before the point in time; note it (the freeze protects it
 * again) and let the guest write. */
static bool track_fault(struct gw_wp_snapshot *s, uint64_t first, uint64_t last)
{
    pthread_mutex_lock(&s->lock);
    if (!s->tracking) { pthread_mutex_unlock(&s->lock); return false; }
    s->busy++;
    s->st.faults++;
    for (uint64_t p = first; p < last; p++) s->armed_dirty[p / 64] |= 1ull << (p % 64);
    pthread_mutex_unlock(&s->lock);
    int r = wp_range(s, first * GW_PAGE_SIZE, (last - first) * GW_PAGE_SIZE, false);
    pthread_mutex_lock(&s->lock);
    if (r) fail_locked(s, "cannot lift write protection");
    if (--s->busy == 0) pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    return true;
}

/* One WP fault: save the block's unsaved pages, then let the guest write. */
static void handle_fault(struct gw_wp_snapshot *s, uint64_t addr)
{
    uint64_t off = addr - (uint64_t)(uintptr_t)s->base;
    if (off >= s->size) return;
    uint64_t first = (off / GW_PAGE_SIZE) & ~(uint64_t)(WP_BLOCK_PAGES - 1);
    uint64_t last = first + WP_BLOCK_PAGES < s->npages ? first + WP_BLOCK_PAGES : s->npages;
    if (track_fault(s, first, last)) return;
    bool all_unprotect = false;
    pthread_mutex_lock(&s->lock);
    s->st.faults++;
    for (uint64_t p = first; p < last && !s->failed; p++) {
        if (s->state[p] != PG_PROTECTED) continue;
        uint32_t slot;
        uint8_t *dst = new_slot(s, &slot);
        if (!dst) {
            char why[160];
            snprintf(why, sizeof why, "the guest changed more than %llu MiB before the backup could read it",
                     (unsigned long long)(s->max_side >> 20));
            fail_locked(s, why);
            all_unprotect = true;
            break;
        }
        memcpy(dst, s->base + p * GW_PAGE_SIZE, GW_PAGE_SIZE);
        s->slot[p] = slot;
        s->state[p] = PG_COPIED;
        s->st.pages_copied++;
    }
    pthread_mutex_unlock(&s->lock);
    int r = all_unprotect ? wp_range(s, 0, s->size, false)
                          : wp_range(s, first * GW_PAGE_SIZE, (last - first) * GW_PAGE_SIZE, false);
    if (r) {
        /* The guest must never stay blocked: give up the snapshot, unprotect everything. */
        pthread_mutex_lock(&s->lock);
        fail_locked(s, "cannot lift write protection");
        pthread_mutex_unlock(&s->lock);
        wp_range(s, 0, s->size, false);
    }
}

static void *handler(void *arg)
{
    struct gw_wp_snapshot *s = arg;
    struct pollfd pf[2] = {{.fd = s->uffd, .events = POLLIN}, {.fd = s->stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(pf, 2, -1) < 0) { if (errno == EINTR) continue; break; }
        if (pf[1].revents) break;
        struct uffd_msg msg[16];
        ssize_t n = read(s->uffd, msg, sizeof msg);
        if (n < 0) { if (errno == EAGAIN || errno == EINTR) continue; break; }
        for (size_t i = 0; i < (size_t)n / sizeof msg[0]; i++)
            if (msg[i].event == UFFD_EVENT_PAGEFAULT) handle_fault(s, msg[i].arg.pagefault.address);
    }
    return NULL;
}

static int open_uffd(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) return fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) return -errno;
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    int e = errno;
    close(dev);
    return fd < 0 ? -e : fd;
}

int gw_wp_open(uint8_t *base, uint64_t size, uint64_t max_side, struct gw_wp_snapshot **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen) err[0] = 0;
    struct gw_wp_snapshot *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->uffd = s->stop_fd = -1;
    s->base = base;
    s->size = size;
    s->npages = size / GW_PAGE_SIZE;
    s->max_side = max_side;
    s->free_head = NO_SLOT;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->armed_dirty = calloc((s->npages + 63) / 64, 8);
    s->state = calloc(s->npages, 1);
    s->slot = calloc(s->npages, sizeof *s->slot);
    int r = s->state && s->slot && s->armed_dirty ? 0 : -ENOMEM;
    if (!r && (s->uffd = open_uffd()) < 0) { r = s->uffd; snprintf(err, errlen, "userfaultfd: %s", strerror(-r)); }
    if (!r) {
        struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED};
        if (ioctl(s->uffd, UFFDIO_API, &api) < 0) {
            r = errno == EINVAL ? -ENOTSUP : -errno;
            snprintf(err, errlen, "userfaultfd write-protect of shared memory is not supported here");
        }
    }
    if (!r) {
        struct uffdio_register reg = {.range = {.start = (uint64_t)(uintptr_t)base, .len = size}, .mode = UFFDIO_REGISTER_MODE_WP};
        if (ioctl(s->uffd, UFFDIO_REGISTER, &reg) < 0) { r = -errno; snprintf(err, errlen, "userfaultfd register: %s", strerror(errno)); }
    }
    if (!r && (s->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) r = -errno;
    if (!r && (r = -pthread_create(&s->thread, NULL, handler, s)) == 0) s->thread_started = true;
    if (r) { if (!err[0]) snprintf(err, errlen, "live snapshot: %s", strerror(-r)); gw_wp_close(s, NULL); return r; }
    *out = s;
    return 0;
}

int gw_wp_arm(struct gw_wp_snapshot *s)
{
    uint64_t t0 = gw_now_ns();
    pthread_mutex_lock(&s->lock);
    s->tracking = true;
    pthread_mutex_unlock(&s->lock);
    int r = wp_range(s, 0, s->size, true);
    s->st.protect_ns = gw_now_ns() - t0;
    return r;
}

int gw_wp_freeze(struct gw_wp_snapshot *s)
{
    uint64_t t0 = gw_now_ns();
    pthread_mutex_lock(&s->lock);
    s->tracking = false;
    /* A fault handled while armed must finish its unprotect before we protect its pages
     * again, or it would undo our protection after the point in time. */
    while (s->busy) pthread_cond_wait(&s->idle, &s->lock);
    int r = s->failed ? -EIO : 0;
    uint64_t words = (s->npages + 63) / 64, run = UINT64_MAX;
    for (uint64_t p = 0; !r && p <= s->npages; p++) {
        bool dirty = p < s->npages && (s->armed_dirty[p / 64] >> (p % 64) & 1);
        if (dirty && run == UINT64_MAX) run = p;
        if (!dirty && run != UINT64_MAX) {
            r = wp_range(s, run * GW_PAGE_SIZE, (p - run) * GW_PAGE_SIZE, true);
            run = UINT64_MAX;
        }
        if (!dirty && p % 64 == 0 && p / 64 + 1 < words && !s->armed_dirty[p / 64]) p += 63;
    }
    memset(s->armed_dirty, 0, words * 8);
    pthread_mutex_unlock(&s->lock);
    s->st.protect_ns += gw_now_ns() - t0;
    return r;
}

int gw_wp_protect_all(struct gw_wp_snapshot *s)
{
    int r = gw_wp_arm(s);
    return r ? r : gw_wp_freeze(s);
}

int gw_wp_read(struct gw_wp_snapshot *s, uint64_t off, uint64_t len, uint8_t *out)
{
    memcpy(out, s->base + off, len);
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t p0 = off / GW_PAGE_SIZE, n = len / GW_PAGE_SIZE;
    pthread_mutex_lock(&s->lock);
    int r = s->failed ? -ENOSPC : 0;
    for (uint64_t k = 0; k < n && !r; k++) {
        if (s->state[p0 + k] == PG_COPIED) {
            memcpy(out + k * GW_PAGE_SIZE, slot_ptr(s, s->slot[p0 + k]), GW_PAGE_SIZE);
            free_slot(s, s->slot[p0 + k]);
        }
        s->state[p0 + k] = PG_DONE;
    }
    pthread_mutex_unlock(&s->lock);
    /* Read: the guest may write this range freely from now on. */
    if (!r) wp_range(s, off, len, false);
    return r;
}

void gw_wp_skip(struct gw_wp_snapshot *s, uint64_t off, uint64_t len)
{
    uint64_t p0 = off / GW_PAGE_SIZE, n = len / GW_PAGE_SIZE;
    pthread_mutex_lock(&s->lock);
    bool failed = s->failed;
    for (uint64_t k = 0; k < n; k++) {
        if (s->state[p0 + k] == PG_COPIED) free_slot(s, s->slot[p0 + k]);
        s->state[p0 + k] = PG_DONE;
    }
    pthread_mutex_unlock(&s->lock);
    if (!failed) wp_range(s, off, len, false);
}

bool gw_wp_failed(struct gw_wp_snapshot *s, char *why, size_t len)
{
    pthread_mutex_lock(&s->lock);
    bool f = s->failed;
    if (f) snprintf(why, len, "%s", s->why);
    pthread_mutex_unlock(&s->lock);
    return f;
}

void gw_wp_close(struct gw_wp_snapshot *s, struct gw_wp_stats *st)
{
    if (!s) return;
    if (s->uffd >= 0) {
        pthread_mutex_lock(&s->lock);
        fail_locked(s, "closed");   /* late faults only unprotect */
        pthread_mutex_unlock(&s->lock);
        wp_range(s, 0, s->size, false);
    }
    if (s->thread_started) {
        uint64_t one = 1;
        if (write(s->stop_fd, &one, sizeof one) < 0) gw_warn("live snapshot: cannot stop the handler");
        pthread_join(s->thread, NULL);
    }
    if (s->uffd >= 0) {
        struct uffdio_range rg = {.start = (uint64_t)(uintptr_t)s->base, .len = s->size};
        ioctl(s->uffd, UFFDIO_UNREGISTER, &rg);
        close(s->uffd);
    }
    if (s->stop_fd >= 0) close(s->stop_fd);
    s->st.side_bytes = s->nslabs * (uint64_t)SLAB_BYTES;
    if (st) *st = s->st;
    for (size_t i = 0; i < s->nslabs; i++) free(s->slabs[i]);
    free(s->slabs);
    free(s->state);
    free(s->slot);
    free(s->armed_dirty);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
