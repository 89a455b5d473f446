/* userfaultfd page placer (see uffd_placer.h). */
#include "postcopy/uffd_placer.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/common/util.h"
#include "postcopy/pc_digest.h"

/* UFFDIO_POISON (Linux 6.6) may be missing from older headers. */
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON 0x08
struct uffdio_poison {
    struct uffdio_range range;
    __u64 mode;
    __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

static int open_uffd(void)
{
    /* Not UFFD_USER_MODE_ONLY: KVM's own accesses to guest memory (its instruction emulator,
     * get_user_pages for the vCPU's faults) must block on missing pages like the guest does. */
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) return fd;
    int e = errno;
    /* Without CAP_SYS_PTRACE the syscall may be refused; /dev/userfaultfd gives the same. */
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) return -e;
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    int e2 = errno;
    close(dev);
    return fd >= 0 ? fd : -e2;
}

int gw_uffd_placer_open(struct gw_uffd_placer *u, uint8_t *mem, uint64_t mem_size, struct gw_err *e)
{
    memset(u, 0, sizeof *u);
    u->uffd = -1;
    if (!mem || !mem_size || mem_size % 4096 || (uintptr_t)mem % 4096)
        return gw_err_set(e, -EINVAL, "post-copy memory must be page-aligned");
    u->mem = mem;
    u->mem_size = mem_size;
    u->npages = mem_size / 4096;
    u->received = calloc((u->npages + 63) / 64, 8);
    u->req_ns = calloc(u->npages, 8);
    if (!u->received || !u->req_ns) { gw_uffd_placer_close(u); return gw_err_set(e, -ENOMEM, "out of memory"); }
    int fd = open_uffd();
    if (fd < 0) { gw_uffd_placer_close(u); return gw_err_set(e, fd, "userfaultfd: %s", strerror(-fd)); }
    u->uffd = fd;
    /* POISON lets an abandoned post-copy mark missing pages so that nothing ever reads them
     * as zero (gw_uffd_placer_poison_missing); a kernel without it still does post-copy. The
     * API handshake may be done once per fd, so ask with a fresh fd when it refused. */
    /* THREAD_ID: which thread faulted, for the per-vCPU blocked time (ignored when absent). */
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID};
    if (ioctl(fd, UFFDIO_API, &api)) {
        close(fd);
        u->uffd = fd = open_uffd();
        if (fd < 0) { gw_uffd_placer_close(u); return gw_err_set(e, fd, "userfaultfd: %s", strerror(-fd)); }
        api = (struct uffdio_api){.api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_THREAD_ID};
    } else {
        u->can_poison = true;
    }
    if (!u->can_poison && ioctl(fd, UFFDIO_API, &api)) {
        int r = -errno;
        gw_uffd_placer_close(u);
        return gw_err_set(e, r, "userfaultfd on shared memory is not supported here: %s", strerror(-r));
    }
    struct uffdio_register reg = {.range = {.start = (uintptr_t)mem, .len = mem_size},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(fd, UFFDIO_REGISTER, &reg)) {
        int r = -errno;
        gw_uffd_placer_close(u);
        return gw_err_set(e, r, "cannot register guest memory with userfaultfd: %s", strerror(-r));
    }
    if (!(reg.ioctls & (1ull << _UFFDIO_COPY)) || !(reg.ioctls & (1ull << _UFFDIO_ZEROPAGE))) {
        gw_uffd_placer_close(u);
        return gw_err_set(e, -ENOTSUP, "userfaultfd cannot copy into guest memory here");
    }
    u->registered = true;
    return 0;
}

/* Marks pfn placed (hash h) unless it already was; notes the request latency. */
static void note_placed(struct gw_uffd_placer *u, uint64_t pfn, uint64_t h)
{
    uint64_t bit = 1ull << (pfn % 64);
    uint64_t old = __atomic_fetch_or(&u->received[pfn / 64], bit, __ATOMIC_ACQ_REL);
    if (old & bit) return;   /* cannot happen: the kernel refused a second copy */
    __atomic_fetch_add(&u->placed, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&u->hash_sum, h, __ATOMIC_RELAXED);
    uint64_t t = __atomic_load_n(&u->req_ns[pfn], __ATOMIC_RELAXED);
    if (!t) return;
    uint64_t now = gw_now_ns();
    /* A vCPU waiting for this page runs again: its blocked time ends here. */
    for (unsigned i = 0; i < GW_PC_MAX_VCPUS; i++) {
        uint64_t want = pfn + 1;
        if (__atomic_load_n(&u->vcpu[i].pfn1, __ATOMIC_ACQUIRE) != want) continue;
        uint64_t since = __atomic_load_n(&u->vcpu[i].since_ns, __ATOMIC_ACQUIRE);
        if (__atomic_compare_exchange_n(&u->vcpu[i].pfn1, &want, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED) &&
            now > since)
            __atomic_fetch_add(&u->vcpu[i].blocked_ns, now - since, __ATOMIC_RELAXED);
    }
    uint64_t d = now - t;
    uint64_t us = d / 1000;
    unsigned b = us ? 63u - (unsigned)__builtin_clzll(us) : 0;
    if (b > 31) b = 31;
    __atomic_fetch_add(&u->lat_hist[b], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&u->lat_count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&u->lat_sum_ns, d, __ATOMIC_RELAXED);
    gw_lat_hist_add_shared(&u->lat_q, d);
    uint64_t m = __atomic_load_n(&u->lat_max_ns, __ATOMIC_RELAXED);
    while (d > m && !__atomic_compare_exchange_n(&u->lat_max_ns, &m, d, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
}

static int place_copy(void *ctx, uint64_t pfn, const uint8_t *src)
{
    struct gw_uffd_placer *u = ctx;
    struct uffdio_copy c = {.dst = (uintptr_t)u->mem + pfn * 4096, .src = (uintptr_t)src, .len = 4096};
    for (;;) {
        if (!ioctl(u->uffd, UFFDIO_COPY, &c)) break;
        if (errno == EEXIST) { __atomic_fetch_add(&u->dups, 1, __ATOMIC_RELAXED); return 0; }
        if (errno == EAGAIN) continue;   /* the mm changed under us: retry as the kernel asks */
        return -errno;
    }
    note_placed(u, pfn, gw_pc_page_hash(pfn, src));
    return 0;
}

static int place_zero(void *ctx, uint64_t pfn)
{
    struct gw_uffd_placer *u = ctx;
    struct uffdio_zeropage z = {.range = {.start = (uintptr_t)u->mem + pfn * 4096, .len = 4096}};
    for (;;) {
        if (!ioctl(u->uffd, UFFDIO_ZEROPAGE, &z)) break;
        if (errno == EEXIST) { __atomic_fetch_add(&u->dups, 1, __ATOMIC_RELAXED); return 0; }
        if (errno == EAGAIN) continue;
        return -errno;
    }
    note_placed(u, pfn, gw_pc_page_hash(pfn, NULL));
    return 0;
}

/* One ioctl over the missing run [pfn, pfn + n): a page found there after all (EEXIST) is
 * skipped and the copy goes on after it; a partial copy (EAGAIN) goes on where it stopped. */
static int place_missing(struct gw_uffd_placer *u, uint64_t pfn, uint64_t n, const uint8_t *src)
{
    uint64_t done = 0;
    while (done < n) {
        uint64_t at = (uintptr_t)u->mem + (pfn + done) * 4096, len = (n - done) * 4096;
        int rc;
        int64_t moved;
        if (src) {
            struct uffdio_copy c = {.dst = at, .src = (uintptr_t)(src + done * 4096), .len = len};
            rc = ioctl(u->uffd, UFFDIO_COPY, &c) ? errno : 0;
            moved = c.copy;
        } else {
            struct uffdio_zeropage z = {.range = {.start = at, .len = len}};
            rc = ioctl(u->uffd, UFFDIO_ZEROPAGE, &z) ? errno : 0;
            moved = z.zeropage;
        }
        uint64_t pages = moved > 0 ? (uint64_t)moved / 4096 : 0;
        for (uint64_t k = 0; k < pages; k++) {
            uint64_t p = pfn + done + k;
            note_placed(u, p, gw_pc_page_hash(p, src ? src + (done + k) * 4096 : NULL));
        }
        done += pages;
        if (!rc) break;
        if (rc == EEXIST) { __atomic_fetch_add(&u->dups, 1, __ATOMIC_RELAXED); done++; continue; }
        if (rc == EAGAIN) continue;
        return -rc;
    }
    return 0;
}

int gw_uffd_placer_place_run(struct gw_uffd_placer *u, uint64_t pfn, uint64_t n, const uint8_t *src)
{
    for (uint64_t p = 0; p < n;) {
        if (gw_uffd_placer_has(u, pfn + p)) { p++; continue; }
        uint64_t q = p + 1;
        while (q < n && !gw_uffd_placer_has(u, pfn + q)) q++;
        int r = place_missing(u, pfn + p, q - p, src ? src + p * 4096 : NULL);
        if (r) return r;
        p = q;
    }
    return 0;
}

static const struct gw_page_placer_ops uffd_ops = {.copy = place_copy, .zero = place_zero};

struct gw_page_placer gw_uffd_placer(struct gw_uffd_placer *u)
{
    return (struct gw_page_placer){.ops = &uffd_ops, .ctx = u, .mem_size = u->mem_size};
}

uint64_t gw_uffd_placer_count(const struct gw_uffd_placer *u)
{
    return __atomic_load_n(&u->placed, __ATOMIC_ACQUIRE);
}

void gw_uffd_placer_vcpu_waits(struct gw_uffd_placer *u, unsigned vcpu, uint64_t pfn)
{
    if (vcpu >= GW_PC_MAX_VCPUS || __atomic_load_n(&u->vcpu[vcpu].pfn1, __ATOMIC_ACQUIRE)) return;
    __atomic_store_n(&u->vcpu[vcpu].since_ns, gw_now_ns(), __ATOMIC_RELEASE);
    __atomic_store_n(&u->vcpu[vcpu].pfn1, pfn + 1, __ATOMIC_RELEASE);
    /* Placed meanwhile (the placer saw no waiter): it does not wait after all. */
    uint64_t want = pfn + 1;
    if (gw_uffd_placer_has(u, pfn)) __atomic_compare_exchange_n(&u->vcpu[vcpu].pfn1, &want, 0, false, __ATOMIC_ACQ_REL,
                                                                 __ATOMIC_RELAXED);
}

int gw_uffd_read_faults(struct gw_uffd_placer *u, uint64_t *pfns, uint32_t *tids, int cap)
{
    struct uffd_msg msgs[32];
    int n = 0;
    while (n < cap) {
        size_t want = (size_t)(cap - n) < 32 ? (size_t)(cap - n) : 32;
        ssize_t got = read(u->uffd, msgs, want * sizeof msgs[0]);
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            return -errno;
        }
        for (ssize_t i = 0; i < got / (ssize_t)sizeof msgs[0]; i++) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
            uint64_t a = msgs[i].arg.pagefault.address;
            if (a < (uintptr_t)u->mem || a >= (uintptr_t)u->mem + u->mem_size) continue;
            uint64_t pfn = (a - (uintptr_t)u->mem) / 4096;
            if (gw_uffd_placer_has(u, pfn)) {
                /* Placed between the fault and now: the copy woke it already, unless the
                 * waiter queued just after; waking again is harmless. */
                struct uffdio_range r = {.start = (uintptr_t)u->mem + pfn * 4096, .len = 4096};
                ioctl(u->uffd, UFFDIO_WAKE, &r);
                continue;
            }
            if (tids) tids[n] = msgs[i].arg.pagefault.feat.ptid;
            pfns[n++] = pfn;
        }
        if ((size_t)got < want * sizeof msgs[0]) break;
    }
    return n;
}

int gw_uffd_placer_unregister(struct gw_uffd_placer *u)
{
    if (!u->registered) return 0;
    struct uffdio_range r = {.start = (uintptr_t)u->mem, .len = u->mem_size};
    if (ioctl(u->uffd, UFFDIO_UNREGISTER, &r)) return -errno;
    u->registered = false;
    return 0;
}

int gw_uffd_placer_poison_missing(struct gw_uffd_placer *u)
{
    if (!u->registered) return 0;
    if (!u->can_poison) return -ENOTSUP;
    for (uint64_t p = 0; p < u->npages;) {
        if (gw_uffd_placer_has(u, p)) { p++; continue; }
        uint64_t q = p + 1;
        while (q < u->npages && !gw_uffd_placer_has(u, q)) q++;
        struct uffdio_poison po = {.range = {.start = (uintptr_t)u->mem + p * 4096, .len = (q - p) * 4096}};
        /* A page placed meanwhile makes the call stop early (EEXIST): go on after it. */
        while (ioctl(u->uffd, UFFDIO_POISON, &po)) {
            if (errno == EAGAIN || errno == EEXIST) {
                uint64_t done = po.updated > 0 ? (uint64_t)po.updated : 0;
                if (errno == EEXIST) done += 4096;
                if (done >= po.range.len) break;
                po.range.start += done;
                po.range.len -= done;
                po.updated = 0;
                continue;
            }
            return -errno;
        }
        p = q;
    }
    return 0;
}

uint64_t gw_uffd_placer_latency_us(const struct gw_uffd_placer *u, unsigned pct)
{
    struct gw_lat_hist h;
    gw_lat_hist_load(&u->lat_q, &h);
    if (!h.count) return 0;
    uint64_t ns = gw_lat_hist_quantile_bound(&h, pct / 100.0);
    uint64_t max_us = __atomic_load_n(&u->lat_max_ns, __ATOMIC_RELAXED) / 1000 + 1;
    uint64_t us = (ns + 999) / 1000;
    return us < max_us ? us : max_us;
}

void gw_uffd_placer_close(struct gw_uffd_placer *u)
{
    if (u->uffd >= 0) close(u->uffd);
    u->uffd = -1;
    u->registered = false;
    free(u->received);
    free(u->req_ns);
    u->received = NULL;
    u->req_ns = NULL;
}
