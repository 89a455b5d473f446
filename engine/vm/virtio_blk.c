/* virtio-blk device: a block backend behind a virtio-mmio transport (see virtio_blk.h).
 *
 * A request is a chain: 16 readable header bytes, then the data (readable for OUT, writable
 * for IN/GET_ID), then one writable status byte, the last byte of the chain. Like QEMU we
 * make no assumption about how the driver splits that over descriptors, but a chain without
 * a full header or a writable status byte cannot even be answered, so it sets
 * DEVICE_NEEDS_RESET. A well-formed request that asks for something impossible (a sector
 * beyond the disk, a length that is not whole sectors) gets IOERR and never reaches the
 * backend. */
#include "engine/vm/virtio_blk.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/blk_backend.h"
#include "engine/vm/virtio_mmio.h"
#include "guest/abi.h"

#define BLK_CONFIG_SIZE 36u  /* struct virtio_blk_config up to num_queues */

/* A read or write of the batch: sectors [sector, +len/512) and its data buffers. */
struct blk_req {
    bool write;
    uint64_t sector, len;
    uint64_t t0;               /* taken off the ring (latency histogram) */
    unsigned niov;
    struct iovec iov[GW_BLK_IOV_MAX];
};

struct gw_virtio_blk {
    struct gw_device dev;
    struct gw_virtio_mmio mmio;
    struct gw_blk *disk;      /* the backend (blk_backend.h) */
    char *image_path;
    uint64_t capacity;        /* sectors */
    uint64_t requests, read_bytes, write_bytes;
    /* The batch being gathered in one kick: chains[0..nreq) are reads and writes waiting
     * for the backend; chains[nreq] is scratch for the next pop. */
    struct gw_vq_chain chains[GW_BLK_BATCH_MAX];
    struct blk_req reqs[GW_BLK_BATCH_MAX];
    unsigned nreq;
    struct gw_blk_fill fill;  /* blocks still to come into the image (instant restore) */
    struct gw_blk_write_hook hook;  /* copy-before-write while a backup runs */
    struct gw_lat_hist lat;   /* IN/OUT request latency */
    struct gw_lat_windows win;/* its recent past, in 0.5 s windows (lat_windows.h) */
    struct gw_blk_dirty dirty;/* written since the last backup */
    struct gw_blk_dirty saved;/* dirty as the last save saw it: the saved state points here, not at
                               * dirty, which the guest's writes go on marking (a backup packs
                               * its manifest long after its pause) */
    /* Storage that save() hangs off the caller's message. */
    Godwit__V1__VirtioBlkState st;
    Godwit__V1__VirtioMmioState mmio_st;
};

static struct gw_virtio_blk *from_dev(struct gw_device *d)
{
    return (struct gw_virtio_blk *)((char *)d - offsetof(struct gw_virtio_blk, dev));
}

static struct gw_virtio_blk *from_mmio(struct gw_virtio_mmio *t)
{
    return (struct gw_virtio_blk *)((char *)t - offsetof(struct gw_virtio_blk, mmio));
}

static void blk_config_read(struct gw_virtio_mmio *t, uint32_t off, uint8_t *data, uint32_t len)
{
    struct gw_virtio_blk *b = from_mmio(t);
    uint8_t cfg[BLK_CONFIG_SIZE] = {0};
    uint64_t cap = htole64(b->capacity);
    /* A request's header and status take two descriptors out of a queue-long chain. */
    uint32_t seg_max = htole32(GW_VIRTIO_BLK_QUEUE_NUM_MAX - 2);
    memcpy(cfg + 0, &cap, sizeof cap);
    memcpy(cfg + 12, &seg_max, sizeof seg_max);
    memcpy(data, cfg + off, len);  /* the transport checked off + len <= BLK_CONFIG_SIZE */
}

/* Copies up to len bytes out of / into the buffers iov[0..n), starting skip bytes in;
 * writes into guest memory are reported to vq's write sink. Returns the bytes copied. */
static uint64_t iov_copy(const struct gw_vq *vq, const struct gw_vq_iov *iov, unsigned n,
                         uint64_t skip, void *buf, uint64_t len, bool to_iov)
{
    uint8_t *p = buf;
    uint64_t done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        if (skip >= iov[i].len) { skip -= iov[i].len; continue; }
        uint64_t l = iov[i].len - skip;
        if (l > len - done) l = len - done;
        if (to_iov) {
            memcpy(iov[i].base + skip, p + done, l);
            gw_vq_mark_written(vq, iov[i].gpa + skip, l);
        } else {
            memcpy(p + done, iov[i].base + skip, l);
        }
        done += l;
        skip = 0;
    }
    return done;
}

/* Checks that [sector, sector + bytes/512) is whole sectors inside the disk. */
static bool range_ok(const struct gw_virtio_blk *b, uint64_t sector, uint64_t bytes)
{
    /* The used ring reports a request's length in 32 bits. */
    if (bytes % GW_VIRTIO_BLK_SECTOR || bytes >= UINT32_MAX) {
        gw_debug("%s: request of %llu bytes is not whole sectors or too long", b->dev.name,
                 (unsigned long long)bytes);
        return false;
    }
    if (!gw_range_ok(sector, bytes / GW_VIRTIO_BLK_SECTOR, b->capacity)) {
        gw_debug("%s: request for sectors [%llu, +%llu) beyond capacity %llu", b->dev.name,
                 (unsigned long long)sector, (unsigned long long)(bytes / GW_VIRTIO_BLK_SECTOR),
                 (unsigned long long)b->capacity);
        return false;
    }
    return true;
}

static uint8_t io_status(struct gw_virtio_blk *b, const char *what, uint64_t sector, int r)
{
    if (r == 0) return GW_VIRTIO_BLK_S_OK;
    gw_error("%s: %s at sector %llu failed: %s", b->dev.name, what,
             (unsigned long long)sector, strerror(-r));
    return GW_VIRTIO_BLK_S_IOERR;
}

/* Builds req's iovecs: len bytes of the buffers iov[0..n), starting skip bytes in. */
static void build_iov(struct blk_req *req, const struct gw_vq_iov *iov, unsigned n, uint64_t skip, uint64_t len)
{
    req->niov = 0;
    for (unsigned i = 0; i < n && len; i++) {
        if (skip >= iov[i].len) { skip -= iov[i].len; continue; }
        uint64_t l = iov[i].len - skip;
        if (l > len) l = len;
        req->iov[req->niov++] = (struct iovec){.iov_base = iov[i].base + skip, .iov_len = l};
        len -= l;
        skip = 0;
    }
}

/* Ends request k of the batch: its status byte and used entry. */
static void complete(struct gw_virtio_blk *b, unsigned k, uint8_t status, uint32_t data_written)
{
    const struct gw_vq_chain *c = &b->chains[k];
    const struct gw_vq_iov *last = &c->iov[c->nout + c->nin - 1];
    if (status != GW_VIRTIO_BLK_S_OK) b->mmio.errors++;
    b->requests++;
    last->base[last->len - 1] = status;
    gw_vq_mark_written(&b->mmio.queues[0], last->gpa + last->len - 1, 1);
    gw_vq_push(&b->mmio.queues[0], c->head, data_written + 1);
}

/* Runs the reads and writes gathered in b->reqs[0..b->nreq) (chains b->chains[0..]) as one
 * backend batch, then completes each. Returns the requests completed. */
/* One IN or OUT request done: its latency, from t0 (taken off the ring). */
static void note_latency(struct gw_virtio_blk *b, uint64_t t0)
{
    uint64_t now = gw_now_ns();
    gw_lat_hist_add(&b->lat, now - t0);
    gw_lat_windows_note(&b->win, &b->lat, now);
}

static unsigned run_batch(struct gw_virtio_blk *b)
{
    unsigned n = b->nreq;
    if (!n) return 0;
    struct gw_blk_io ios[GW_BLK_BATCH_MAX];
    int pre[GW_BLK_BATCH_MAX];
    unsigned pos[GW_BLK_BATCH_MAX], m = 0;
    for (unsigned k = 0; k < n; k++) {
        struct blk_req *q = &b->reqs[k];
        uint64_t off = q->sector * GW_VIRTIO_BLK_SECTOR;
        /* An instant restore brings the blocks a request touches into the image first. */
        pre[k] = b->fill.ensure ? b->fill.ensure(b->fill.ctx, off, q->len, q->write) : 0;
        if (pre[k]) continue;
        if (q->write) {
            /* A running backup first copies what this write would overwrite (never waiting
             * on its target), and the write counts for the next incremental backup. */
            if (b->hook.before_write) b->hook.before_write(b->hook.ctx, off, q->len);
            gw_blk_dirty_mark(&b->dirty, off, q->len);
        }
        pos[k] = m;
        ios[m++] = (struct gw_blk_io){.write = q->write, .off = off, .len = q->len, .iov = q->iov, .niov = q->niov};
    }
    int r = m ? b->disk->ops->submit(b->disk, ios, m) : 0;
    for (unsigned k = 0; k < n; k++) {
        struct blk_req *q = &b->reqs[k];
        int rc = pre[k] ? pre[k] : r ? r : ios[pos[k]].rc;
        uint32_t written = 0;
        if (!rc && q->write) b->write_bytes += q->len;
        if (!rc && !q->write) {
            b->read_bytes += q->len;
            written = (uint32_t)q->len;
            /* The data landed in guest RAM behind KVM's back (maybe from a librbd thread). */
            const struct gw_vq_chain *c = &b->chains[k];
            uint64_t left = q->len;
            for (unsigned i = c->nout; i < c->nout + c->nin && left; i++) {
                uint64_t l = c->iov[i].len < left ? c->iov[i].len : left;
                gw_vq_mark_written(&b->mmio.queues[0], c->iov[i].gpa, l);
                left -= l;
            }
        }
        complete(b, k, io_status(b, q->write ? "write" : "read", q->sector, rc), written);
        note_latency(b, q->t0);
    }
    b->nreq = 0;
    return n;
}

/* Whether [sector, +len) overlaps a request already in the batch (then the batch runs first:
 * the backend may run its I/Os in any order). */
static bool overlaps_batch(const struct gw_virtio_blk *b, uint64_t sector, uint64_t len)
{
    uint64_t end = sector + len / GW_VIRTIO_BLK_SECTOR;
    for (unsigned k = 0; k < b->nreq; k++) {
        const struct blk_req *q = &b->reqs[k];
        if (sector < q->sector + q->len / GW_VIRTIO_BLK_SECTOR && q->sector < end) return true;
    }
    return false;
}

/* Serves a request that is not a well-formed read or write, at once; returns its status and
 * sets *written to the bytes put into the guest's writable buffers. */
static uint8_t serve_now(struct gw_virtio_blk *b, const struct gw_vq_chain *c,
                         const struct gw_virtio_blk_req_hdr *h, uint32_t *written)
{
    const struct gw_vq_iov *in = c->iov + c->nout;
    uint64_t in_data = c->in_bytes - 1;  /* the last writable byte is the status */
    switch (h->type) {
    case GW_VIRTIO_BLK_T_IN:
    case GW_VIRTIO_BLK_T_OUT:
        return GW_VIRTIO_BLK_S_IOERR;   /* range_ok said why */
    case GW_VIRTIO_BLK_T_FLUSH:
        return io_status(b, "flush", 0, b->disk->ops->flush(b->disk));
    case GW_VIRTIO_BLK_T_GET_ID: {
        char id[GW_VIRTIO_BLK_ID_BYTES] = {0};
        memcpy(id, GW_VIRTIO_BLK_ID, sizeof GW_VIRTIO_BLK_ID - 1);
        uint64_t n = in_data < sizeof id ? in_data : sizeof id;
        *written = (uint32_t)iov_copy(&b->mmio.queues[0], in, c->nin, 0, id, n, true);
        return GW_VIRTIO_BLK_S_OK;
    }
    default:
        gw_debug("%s: unsupported request type %u", b->dev.name, h->type);
        return GW_VIRTIO_BLK_S_UNSUPP;
    }
}

/* Takes the chain just popped into b->chains[b->nreq]: a well-formed read or write joins the
 * batch; anything else runs after the batch, at once. Returns the requests completed, or
 * -EINVAL with why[] set when the chain cannot carry a request at all (the batch has run). */
static int take(struct gw_virtio_blk *b, char *why, size_t why_len)
{
    uint64_t t0 = gw_now_ns();
    struct gw_vq_chain *c = &b->chains[b->nreq];
    if (c->nin == 0) {
        snprintf(why, why_len, "request at head %u has no device-writable status byte "
                 "(last descriptor read-only)", c->head);
        return -EINVAL;
    }
    const struct gw_vq_iov *last = &c->iov[c->nout + c->nin - 1];
    if (last->len == 0) {
        snprintf(why, why_len, "request at head %u: status descriptor has length 0", c->head);
        return -EINVAL;
    }
    struct gw_virtio_blk_req_hdr h;
    if (iov_copy(NULL, c->iov, c->nout, 0, &h, sizeof h, false) < sizeof h) {
        snprintf(why, why_len, "request at head %u: header shorter than %zu bytes", c->head, sizeof h);
        return -EINVAL;
    }
    h.type = le32toh(h.type);
    h.sector = le64toh(h.sector);
    bool is_in = h.type == GW_VIRTIO_BLK_T_IN, is_out = h.type == GW_VIRTIO_BLK_T_OUT;
    uint64_t len = is_in ? c->in_bytes - 1 : c->out_bytes - sizeof h;
    bool ok = (is_in || is_out) && range_ok(b, h.sector, len);
    if (ok && len) {
        unsigned done = 0;
        if (overlaps_batch(b, h.sector, len)) {
            /* Move this chain to slot 0 once the batch has run. */
            struct gw_vq_chain tmp = *c;
            done = run_batch(b);
            b->chains[0] = tmp;
            c = &b->chains[0];
        }
        struct blk_req *q = &b->reqs[b->nreq];
        q->write = is_out;
        q->t0 = t0;
        q->sector = h.sector;
        q->len = len;
        if (is_out) build_iov(q, c->iov, c->nout, sizeof h, len);
        else build_iov(q, c->iov + c->nout, c->nin, 0, len);
        b->nreq++;
        if (b->nreq == GW_BLK_BATCH_MAX) done += run_batch(b);
        return (int)done;
    }
    struct gw_vq_chain tmp = *c;
    unsigned done = run_batch(b);
    b->chains[0] = tmp;
    uint32_t written = 0;
    uint8_t status = ok ? GW_VIRTIO_BLK_S_OK   /* an empty read or write */
                        : serve_now(b, &b->chains[0], &h, &written);
    complete(b, 0, status, written);
    if (is_in || is_out) note_latency(b, t0);
    return (int)done + 1;
}

static int blk_notify(struct gw_virtio_mmio *t, unsigned q)
{
    struct gw_virtio_blk *b = from_mmio(t);
    struct gw_vq *vq = &t->queues[q];
    unsigned done = 0;
    int rc = 0;
    /* At most one ring's worth per kick: anything the driver adds meanwhile comes with a
     * kick of its own (we never set VIRTQ_USED_F_NO_NOTIFY), so a guest that keeps
     * refilling cannot pin this vCPU thread here. Reads and writes gather into a batch
     * that the backend runs together; it has always run in full when we return. */
    for (unsigned n = 0; n < vq->num; n++) {
        int r = gw_vq_pop(vq, &b->chains[b->nreq]);
        if (r == 0) break;
        if (r < 0) { rc = gw_virtio_mmio_fail(t, "queue %u: %s", q, vq->err); break; }
        char why[128];
        r = take(b, why, sizeof why);
        if (r < 0) {
            gw_vq_unpop(vq);
            done += run_batch(b);
            rc = gw_virtio_mmio_fail(t, "queue %u: %s", q, why);
            break;
        }
        done += (unsigned)r;
    }
    done += run_batch(b);
    if (done) {
        int r = gw_virtio_mmio_interrupt(t, GW_VIRTIO_INT_USED);
        if (rc == 0) rc = r;
    }
    return rc;
}

static const struct gw_virtio_mmio_ops blk_mmio_ops = {
    .config_read = blk_config_read,
    .notify = blk_notify,
};

static int blk_access(struct gw_device *d, uint64_t off, bool is_write, uint8_t *data,
                      uint32_t len)
{
    return gw_virtio_mmio_access(&from_dev(d)->mmio, off, is_write, data, len);
}

/* Requests finish inside notify, under the device lock, so nothing is in flight here.
 * Flushing makes every completed write durable before the VM moves on: a destination on
 * another host reading the same shared image must see it. */
static int blk_quiesce(struct gw_device *d)
{
    struct gw_virtio_blk *b = from_dev(d);
    int e = b->disk->ops->flush(b->disk);
    if (e) gw_error("%s: flushing image %s on quiesce failed: %s", d->name, b->image_path, strerror(-e));
    return e;
}

static int blk_save(struct gw_device *d, Godwit__V1__DeviceState *out)
{
    struct gw_virtio_blk *b = from_dev(d);
    godwit__v1__virtio_blk_state__init(&b->st);
    gw_virtio_mmio_save(&b->mmio, &b->mmio_st);
    b->st.mmio = &b->mmio_st;
    b->st.capacity_sectors = b->capacity;
    b->st.image_path = b->image_path;
    b->st.requests = b->requests;
    b->st.read_bytes = b->read_bytes;
    b->st.write_bytes = b->write_bytes;
    b->st.errors = b->mmio.errors;
    memcpy(b->saved.bits, b->dirty.bits, b->dirty.words * 8);
    memcpy(b->saved.base, b->dirty.base, sizeof b->saved.base);
    b->st.dirty_bitmap.data = (uint8_t *)b->saved.bits;
    b->st.dirty_bitmap.len = b->saved.words * 8;
    b->st.dirty_block_bytes = GW_BLK_DIRTY_BLOCK;
    b->st.dirty_base = b->saved.base;
    out->name = (char *)d->name;
    out->kind_case = GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_BLK;
    out->virtio_blk = &b->st;
    return 0;
}

static int blk_load(struct gw_device *d, const Godwit__V1__DeviceState *in)
{
    struct gw_virtio_blk *b = from_dev(d);
    const Godwit__V1__VirtioBlkState *s = in->virtio_blk;
    if (in->kind_case != GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_BLK || !s || !s->mmio) {
        gw_error("%s: load: state (kind %d) is not a virtio-blk state", d->name,
                 (int)in->kind_case);
        return -EINVAL;
    }
    if (in->name && in->name[0] && strcmp(in->name, d->name)) {
        gw_error("%s: load: state belongs to device %s", d->name, in->name);
        return -EINVAL;
    }
    if (s->capacity_sectors != b->capacity) {
        gw_error("%s: load: state is for a disk of %llu sectors but image %s has %llu",
                 d->name, (unsigned long long)s->capacity_sectors, b->image_path,
                 (unsigned long long)b->capacity);
        return -EINVAL;
    }
    /* Served synchronously: every chain taken was also returned. */
    for (size_t i = 0; i < s->mmio->n_queues; i++) {
        const Godwit__V1__VirtqueueState *q = s->mmio->queues[i];
        /* Out-of-range indexes are the transport's to report. */
        if (q && q->last_avail_idx <= UINT16_MAX && q->used_idx <= UINT16_MAX &&
            q->last_avail_idx != q->used_idx) {
            gw_error("%s: load: queue %zu has %u requests in flight (last_avail_idx %u, "
                     "used_idx %u); this device completes requests synchronously", d->name,
                     i, (q->last_avail_idx - q->used_idx) & 0xffffu, q->last_avail_idx,
                     q->used_idx);
            return -EINVAL;
        }
    }
    int r = gw_virtio_mmio_load(&b->mmio, s->mmio);
    if (r < 0) return r;
    b->requests = s->requests;
    b->read_bytes = s->read_bytes;
    b->write_bytes = s->write_bytes;
    b->mmio.errors = s->errors;
    gw_blk_dirty_load(&b->dirty, s->dirty_bitmap.data, s->dirty_bitmap.len, s->dirty_block_bytes, s->dirty_base);
    return 0;
}

static void blk_destroy(struct gw_device *d)
{
    if (!d) return;
    struct gw_virtio_blk *b = from_dev(d);
    gw_blk_close(b->disk);
    free(b->image_path);
    gw_blk_dirty_free(&b->dirty);
    gw_blk_dirty_free(&b->saved);
    /* d->lock is not destroyed here: the bus destroys it before calling us (device_bus.c),
     * and a glibc mutex holds no resources on the paths that bypass the bus. */
    free(b);
}

static const struct gw_device_ops blk_ops = {
    .access = blk_access,
    .quiesce = blk_quiesce,
    .save = blk_save,
    .load = blk_load,
    .destroy = blk_destroy,
};

int gw_virtio_blk_set_write_sink(struct gw_device *d, struct gw_guest_write_sink sink)
{
    if (!d || d->ops != &blk_ops) return -EINVAL;
    gw_virtio_mmio_set_write_sink(&from_dev(d)->mmio, sink);
    return 0;
}

int gw_virtio_blk_set_fill(struct gw_device *d, struct gw_blk_fill fill)
{
    if (!d || d->ops != &blk_ops) return -EINVAL;
    from_dev(d)->fill = fill;
    return 0;
}

int gw_virtio_blk_set_write_hook(struct gw_device *d, struct gw_blk_write_hook hook)
{
    if (!d || d->ops != &blk_ops) return -EINVAL;
    from_dev(d)->hook = hook;
    return 0;
}

int gw_virtio_blk_latency(struct gw_device *d, struct gw_lat_hist *out)
{
    if (!d || d->ops != &blk_ops) return -EINVAL;
    *out = from_dev(d)->lat;
    return 0;
}

int gw_virtio_blk_latency_windows(struct gw_device *d, uint32_t *p99_us, uint64_t *end_ns, unsigned max)
{
    if (!d || d->ops != &blk_ops) return -EINVAL;
    return (int)gw_lat_windows_recent(&from_dev(d)->win, p99_us, end_ns, max);
}

struct gw_blk_dirty *gw_virtio_blk_dirty(struct gw_device *d)
{
    return d && d->ops == &blk_ops ? &from_dev(d)->dirty : NULL;
}

int gw_virtio_blk_image(struct gw_device *d, const char **path, uint64_t *bytes)
{
    if (!d || d->ops != &blk_ops) return -EINVAL;
    *path = from_dev(d)->image_path;
    *bytes = from_dev(d)->capacity * GW_VIRTIO_BLK_SECTOR;
    return 0;
}

int gw_virtio_blk_lock(struct gw_device *d, bool on)
{
    if (!d || d->ops != &blk_ops) return -EINVAL;
    struct gw_virtio_blk *b = from_dev(d);
    return b->disk->ops->lock(b->disk, on);
}

struct gw_blk *gw_virtio_blk_backend(struct gw_device *d)
{
    return d && d->ops == &blk_ops ? from_dev(d)->disk : NULL;
}

int gw_virtio_blk_create_on(struct gw_blk *disk, const char *image_path, const struct gw_guest_mem *mem,
                            struct gw_irq_sink irq, uint64_t mmio_base, struct gw_device **out)
{
    *out = NULL;
    struct gw_virtio_blk *b = calloc(1, sizeof *b);
    if (!b) { gw_blk_close(disk); return -ENOMEM; }
    b->disk = disk;
    b->dev.ops = &blk_ops;
    b->dev.name = "vda";
    b->dev.space = GW_DEV_MMIO;
    b->dev.base = mmio_base;
    b->dev.size = GW_VIRTIO_MMIO_SIZE;
    int r = pthread_mutex_init(&b->dev.lock, NULL);
    if (r) { gw_blk_close(disk); free(b); return -r; }
    b->image_path = strdup(image_path);
    if (!b->image_path) { r = -ENOMEM; goto fail; }
    b->capacity = b->disk->size / GW_VIRTIO_BLK_SECTOR;
    r = gw_blk_dirty_init(&b->dirty, b->capacity * GW_VIRTIO_BLK_SECTOR);
    if (!r) r = gw_blk_dirty_init(&b->saved, b->capacity * GW_VIRTIO_BLK_SECTOR);
    if (r < 0) goto fail;
    struct gw_virtio_mmio_config cfg = {
        .name = b->dev.name, .ops = &blk_mmio_ops, .device_id = GW_VIRTIO_ID_BLOCK,
        .device_features = GW_VIRTIO_F_VERSION_1 | GW_VIRTIO_F_INDIRECT_DESC |
                           GW_VIRTIO_BLK_F_SEG_MAX | GW_VIRTIO_BLK_F_FLUSH,
        .config_size = BLK_CONFIG_SIZE, .nqueues = 1,
        .queue_num_max = GW_VIRTIO_BLK_QUEUE_NUM_MAX, .mem = mem, .irq = irq,
        .gsi = GW_VIRTIO_BLK_GSI,
    };
    r = gw_virtio_mmio_init(&b->mmio, &cfg);
    if (r < 0) {
        gw_error("vda: bad transport configuration (guest memory or irq sink missing)");
        goto fail;
    }
    *out = &b->dev;
    return 0;
fail:
    blk_destroy(&b->dev);
    return r;
}

int gw_virtio_blk_create(const char *image_path, const struct gw_guest_mem *mem,
                         struct gw_irq_sink irq, uint64_t mmio_base, struct gw_device **out)
{
    *out = NULL;
    char why[512];
    struct gw_blk *disk;
    int r = gw_blk_open(image_path, false, &disk, why, sizeof why);
    if (r < 0) {
        gw_error("vda: %s", why);
        return r;
    }
    return gw_virtio_blk_create_on(disk, image_path, mem, irq, mmio_base, out);
}
