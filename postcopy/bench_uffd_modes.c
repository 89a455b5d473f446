/* Measures the two ways post-copy can place a page (docs/postcopy.md): MISSING faults on a
 * memfd resolved with UFFDIO_COPY, and MINOR faults on a memfd whose pages already exist,
 * written through a second mapping and mapped in with UFFDIO_CONTINUE. A toucher thread reads
 * one byte of each page in turn (one fault each); a handler thread resolves the faults with
 * the page's bytes from a source buffer, as the receiving side would. Prints one JSON line:
 * the mean fault round trip of each mode and their ratio (same run, same pages).
 *     bench_uffd_modes [MiB]      (default 64) */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

struct run {
    uint8_t *guest, *alias, *src;
    size_t size;
    int uffd;
    int minor;
    volatile int done;
    uint64_t sum;
};

static void *toucher(void *arg)
{
    struct run *r = arg;
    uint64_t s = 0;
    for (size_t off = 0; off < r->size; off += 4096) s += r->guest[off];
    r->sum = s;
    r->done = 1;
    return NULL;
}

static int handle(struct run *r)
{
    struct uffd_msg m;
    while (!r->done) {
        struct pollfd pf = {.fd = r->uffd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        if (read(r->uffd, &m, sizeof m) != sizeof m || m.event != UFFD_EVENT_PAGEFAULT) continue;
        uint64_t off = (m.arg.pagefault.address - (uintptr_t)r->guest) & ~4095ull;
        if (r->minor) {
            memcpy(r->alias + off, r->src + off, 4096);
            struct uffdio_continue c = {.range = {.start = (uintptr_t)r->guest + off, .len = 4096}};
            if (ioctl(r->uffd, UFFDIO_CONTINUE, &c) && errno != EEXIST) return -errno;
        } else {
            struct uffdio_copy c = {.dst = (uintptr_t)r->guest + off, .src = (uintptr_t)r->src + off, .len = 4096};
            if (ioctl(r->uffd, UFFDIO_COPY, &c) && errno != EEXIST) return -errno;
        }
    }
    return 0;
}

/* Mean nanoseconds per fault, or -errno. */
static double measure(int minor, size_t size, uint8_t *src)
{
    int fd = memfd_create("gw-bench-uffd", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size)) return -errno;
    struct run r = {.size = size, .src = src, .minor = minor};
    r.guest = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    r.alias = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (r.guest == MAP_FAILED || r.alias == MAP_FAILED) return -errno;
    /* MINOR needs every page in the page cache first (the pre-allocation it costs). */
    if (minor && fallocate(fd, 0, 0, (off_t)size)) return -errno;
    r.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (r.uffd < 0) return -errno;
    struct uffdio_api api = {.api = UFFD_API, .features = minor ? UFFD_FEATURE_MINOR_SHMEM : UFFD_FEATURE_MISSING_SHMEM};
    if (ioctl(r.uffd, UFFDIO_API, &api)) return -errno;
    struct uffdio_register reg = {.range = {.start = (uintptr_t)r.guest, .len = size},
                                  .mode = minor ? UFFDIO_REGISTER_MODE_MINOR : UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(r.uffd, UFFDIO_REGISTER, &reg)) return -errno;
    pthread_t t;
    uint64_t t0 = now_ns();
    pthread_create(&t, NULL, toucher, &r);
    int e = handle(&r);
    pthread_join(t, NULL);
    uint64_t dt = now_ns() - t0;
    close(r.uffd);
    munmap(r.guest, size);
    munmap(r.alias, size);
    close(fd);
    return e ? e : (double)dt / (double)(size / 4096);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
    if (!mib || mib > 4096) { fprintf(stderr, "usage: bench_uffd_modes [MiB 1..4096]\n"); return 2; }
    size_t size = mib << 20;
    uint8_t *src = malloc(size);
    if (!src) return 1;
    for (size_t i = 0; i < size; i += 8) { uint64_t v = i * 0x9E3779B97F4A7C15ull; memcpy(src + i, &v, 8); }
    double copy = measure(0, size, src), cont = measure(1, size, src);
    if (copy < 0 || cont < 0) { fprintf(stderr, "bench_uffd_modes: %s\n", strerror((int)-(copy < 0 ? copy : cont))); return 1; }
    printf("{\"pages\":%zu,\"missing_copy_us_per_fault\":%.2f,\"minor_continue_us_per_fault\":%.2f,"
           "\"minor_over_missing\":%.3f}\n", size / 4096, copy / 1000, cont / 1000, cont / copy);
    free(src);
    return 0;
}
