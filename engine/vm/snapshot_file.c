/* Snapshot file writer and reader (see snapshot_file.h). */
#include "engine/vm/snapshot_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/common/durable.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/guest_mem.h"
#include "engine/vm/mem_data.h"
#include "engine/vm/vm.h"

#define SNAP_MAGIC "GODWITSN"
#define SNAP_VERSION 1u
#define SNAP_HEADER_SIZE 4096u
#define SNAP_MAX_STATE (64u << 20)

struct snap_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t state_offset;
    uint64_t state_len;
    uint64_t mem_offset;
    uint64_t mem_size;
    uint64_t state_hash;     /* XXH64 of the state bytes */
    uint64_t digest_hi, digest_lo;
    uint64_t header_hash;    /* XXH64 of this struct with header_hash = 0 */
};

static uint64_t header_hash(struct snap_header h)
{
    h.header_hash = 0;
    return XXH64(&h, sizeof h, 0);
}

struct mem_writer {
    int fd;
    const struct gw_guest_mem *m;
    uint64_t mem_offset;
    uint64_t data_bytes, zero_pages;
};

/* Writes the non-zero pages of one data range, coalescing runs into one pwrite. */
static int write_range(uint64_t off, uint64_t len, void *ctx)
{
    struct mem_writer *w = ctx;
    uint64_t end = off + len, run = off;
    for (uint64_t p = off; p < end; p += GW_PAGE_SIZE) {
        if (!gw_is_zero(w->m->base + p, GW_PAGE_SIZE)) continue;
        w->zero_pages++;
        if (p > run) {
            int r = gw_pwrite_full(w->fd, w->m->base + run, p - run, (off_t)(w->mem_offset + run));
            if (r) return r;
            w->data_bytes += p - run;
        }
        run = p + GW_PAGE_SIZE;
    }
    if (end > run) {
        int r = gw_pwrite_full(w->fd, w->m->base + run, end - run, (off_t)(w->mem_offset + run));
        if (r) return r;
        w->data_bytes += end - run;
    }
    return 0;
}

int gw_snapshot_save(struct gw_vm *vm, const char *path, struct gw_snapshot_stats *stats,
                     char *err, unsigned errlen)
{
    uint64_t t0 = gw_now_ns();
    memset(stats, 0, sizeof *stats);
    Godwit__V1__VmState *st = NULL;
    uint8_t *packed = NULL;
    char tmp[4096] = "";
    int fd = -1;
    int r = 0;

    r = gw_vm_save_state(vm, &st);
    if (r) { snprintf(err, errlen, "cannot read VM state: %s", strerror(-r)); goto out; }
    size_t state_len = godwit__v1__vm_state__get_packed_size(st);
    packed = malloc(state_len ? state_len : 1);
    if (!packed) { r = -ENOMEM; goto out; }
    godwit__v1__vm_state__pack(st, packed);

    struct snap_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SNAP_MAGIC, 8);
    h.version = SNAP_VERSION;
    h.header_size = SNAP_HEADER_SIZE;
    h.state_offset = SNAP_HEADER_SIZE;
    h.state_len = state_len;
    h.mem_offset = gw_abi_align_up(SNAP_HEADER_SIZE + state_len, GW_PAGE_SIZE);
    h.mem_size = vm->mem.size;
    h.state_hash = XXH64(packed, state_len, 0);
    r = gw_mem_digest(&vm->mem, &stats->digest);
    if (r) { snprintf(err, errlen, "cannot digest guest memory: %s", strerror(-r)); goto out; }
    h.digest_hi = stats->digest.hi;
    h.digest_lo = stats->digest.lo;
    h.header_hash = header_hash(h);

    /* O_EXCL | O_NOFOLLOW: never through a planted link, never over another save's file. */
    fd = gw_durable_create_tmp(path, tmp, sizeof tmp);
    if (fd < 0) {
        r = fd;
        fd = -1;
        snprintf(err, errlen, "%s: %s", tmp[0] ? tmp : path, r == -ENAMETOOLONG ? "snapshot path too long" : strerror(-r));
        tmp[0] = 0;   /* not ours: leave it */
        goto out;
    }
    /* Size first: pages never written stay holes, so the file costs only the data. */
    if (ftruncate(fd, (off_t)(h.mem_offset + h.mem_size)) < 0) { r = -errno; goto io_fail; }
    uint8_t hdr[SNAP_HEADER_SIZE];
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, &h, sizeof h);
    if ((r = gw_pwrite_full(fd, hdr, sizeof hdr, 0))) goto io_fail;
    if ((r = gw_pwrite_full(fd, packed, state_len, (off_t)h.state_offset))) goto io_fail;
    struct mem_writer w = {.fd = fd, .m = &vm->mem, .mem_offset = h.mem_offset};
    if ((r = gw_mem_for_each_data(&vm->mem, write_range, &w))) goto io_fail;
    /* fsync, rename, and fsync the directory: the new name is durable when we report success. */
    r = gw_durable_commit(fd, tmp, path);
    fd = -1;
    if (r) { snprintf(err, errlen, "committing %s: %s", path, strerror(-r)); goto out; }

    stats->state_bytes = state_len;
    stats->memory_bytes = vm->mem.size;
    stats->data_bytes = w.data_bytes;
    stats->zero_pages = (vm->mem.size - w.data_bytes) / GW_PAGE_SIZE;
    stats->elapsed_ns = gw_now_ns() - t0;
    goto out;
io_fail:
    snprintf(err, errlen, "writing %s: %s", tmp, strerror(-r));
out:
    if (fd >= 0) close(fd);
    if (r && tmp[0]) unlink(tmp);
    free(packed);
    gw_vm_state_free(st);
    return r;
}

/* Reads and checks the header; fills *h. */
static int read_header(int fd, const char *path, struct snap_header *h, char *err, unsigned errlen)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0) return -errno;
    int r = gw_pread_full(fd, h, sizeof *h, 0);
    if (r) { snprintf(err, errlen, "%s: too short to be a snapshot", path); return -EINVAL; }
    if (memcmp(h->magic, SNAP_MAGIC, 8)) { snprintf(err, errlen, "%s: not a Godwit snapshot", path); return -EINVAL; }
    if (h->header_hash != header_hash(*h)) { snprintf(err, errlen, "%s: header checksum mismatch (corrupt file)", path); return -EINVAL; }
    if (h->version != SNAP_VERSION) { snprintf(err, errlen, "%s: snapshot version %u not supported", path, h->version); return -EINVAL; }
    uint64_t fsize = (uint64_t)sb.st_size, mem_end;
    if (h->header_size != SNAP_HEADER_SIZE || h->state_len > SNAP_MAX_STATE ||
        !gw_range_ok(h->state_offset, h->state_len, fsize) || h->mem_offset % GW_PAGE_SIZE ||
        h->mem_offset < h->state_offset + h->state_len || !gw_add_ok(h->mem_offset, h->mem_size, &mem_end) ||
        mem_end > fsize || h->mem_size % GW_PAGE_SIZE) {
        snprintf(err, errlen, "%s: offsets or lengths outside the file (truncated or corrupt)", path);
        return -EINVAL;
    }
    return 0;
}

int gw_snapshot_read_state(const char *path, Godwit__V1__VmState **state, char *err, unsigned errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { int e = errno; snprintf(err, errlen, "%s: %s", path, strerror(e)); return -e; }
    struct snap_header h = {0};
    uint8_t *buf = NULL;
    int r = read_header(fd, path, &h, err, errlen);
    if (!r && !(buf = malloc(h.state_len ? h.state_len : 1))) r = -ENOMEM;
    if (!r && (r = gw_pread_full(fd, buf, h.state_len, (off_t)h.state_offset)))
        snprintf(err, errlen, "%s: reading state: %s", path, strerror(-r));
    if (!r && XXH64(buf, h.state_len, 0) != h.state_hash) {
        snprintf(err, errlen, "%s: state checksum mismatch (corrupt file)", path);
        r = -EBADMSG;
    }
    if (!r) {
        *state = godwit__v1__vm_state__unpack(NULL, h.state_len, buf);
        if (!*state) { snprintf(err, errlen, "%s: state does not decode", path); r = -EBADMSG; }
    }
    free(buf);
    close(fd);
    return r;
}

int gw_snapshot_load_memory(const char *path, struct gw_guest_mem *m, struct gw_snapshot_stats *stats,
                            char *err, unsigned errlen)
{
    uint64_t t0 = gw_now_ns();
    memset(stats, 0, sizeof *stats);
    if (errlen) err[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { int e = errno; snprintf(err, errlen, "%s: %s", path, strerror(e)); return -e; }
    struct snap_header h = {0};
    int r = read_header(fd, path, &h, err, errlen);
    if (!r && h.mem_size != m->size) {
        snprintf(err, errlen, "%s: memory image is %llu bytes, the VM has %llu", path,
                 (unsigned long long)h.mem_size, (unsigned long long)m->size);
        r = -EINVAL;
    }
    /* Only the file's data ranges are read; its holes stay holes in guest RAM too. */
    uint64_t pos = h.mem_offset, end = h.mem_offset + h.mem_size, data = 0;
    while (!r && pos < end) {
        off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
        if (d < 0) { if (errno != ENXIO) r = -errno; break; }
        if ((uint64_t)d >= end) break;
        off_t hole = lseek(fd, d, SEEK_HOLE);
        if (hole < 0) { r = -errno; break; }
        uint64_t stop = (uint64_t)hole < end ? (uint64_t)hole : end;
        /* Page-align: a data range may start mid-page on some file systems. */
        uint64_t a = ((uint64_t)d - h.mem_offset) & ~(uint64_t)(GW_PAGE_SIZE - 1);
        uint64_t b = gw_abi_align_up(stop - h.mem_offset, GW_PAGE_SIZE);
        if (b > h.mem_size) b = h.mem_size;
        r = gw_pread_full(fd, m->base + a, b - a, (off_t)(h.mem_offset + a));
        data += b - a;
        pos = h.mem_offset + b;
    }
    if (r && !err[0]) snprintf(err, errlen, "%s: reading memory: %s", path, strerror(-r));
    if (!r) {
        r = gw_mem_digest(m, &stats->digest);
        if (!r && (stats->digest.hi != h.digest_hi || stats->digest.lo != h.digest_lo)) {
            snprintf(err, errlen, "%s: memory digest differs from the saved one (corrupt file)", path);
            r = -EBADMSG;
        }
    }
    stats->memory_bytes = h.mem_size;
    stats->data_bytes = data;
    stats->state_bytes = h.state_len;
    stats->elapsed_ns = gw_now_ns() - t0;
    close(fd);
    return r;
}
