/* virtio-mmio transport, register layout version 2 (see virtio_mmio.h). The device side of
 * the status handshake: ACKNOWLEDGE, DRIVER, features, FEATURES_OK (refused when the driver
 * asks for bits we did not offer or omits VERSION_1), queue set-up, DRIVER_OK. Queue
 * registers may only change while the queue is not ready, so a running queue's rings are
 * fixed and were checked once, in gw_vq_activate. */
#include "engine/vm/virtio_mmio.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/common/log.h"

#define KNOWN_STATUS (GW_VIRTIO_S_ACKNOWLEDGE | GW_VIRTIO_S_DRIVER | GW_VIRTIO_S_DRIVER_OK | \
                      GW_VIRTIO_S_FEATURES_OK | GW_VIRTIO_S_NEEDS_RESET | GW_VIRTIO_S_FAILED)

static int set_line(struct gw_virtio_mmio *t, int level)
{
    int r = t->cfg.irq.set_level(t->cfg.irq.ctx, t->cfg.gsi, level);
    if (r < 0) gw_error("%s: cannot set GSI %u to %d: %s", t->cfg.name, t->cfg.gsi, level,
                        strerror(-r));
    return r;
}

static int device_reset(struct gw_virtio_mmio *t)
{
    bool was_raised = t->interrupt_status != 0;
    t->device_features_sel = t->driver_features_sel = 0;
    t->driver_features = 0;
    t->queue_sel = 0;
    t->status = 0;
    t->interrupt_status = 0;
    for (unsigned i = 0; i < t->cfg.nqueues; i++) gw_vq_reset(&t->queues[i]);
    return was_raised ? set_line(t, 0) : 0;
}

int gw_virtio_mmio_init(struct gw_virtio_mmio *t, const struct gw_virtio_mmio_config *cfg)
{
    uint16_t n = cfg->queue_num_max;
    if (!cfg->ops || !cfg->mem || !cfg->irq.set_level || cfg->nqueues == 0 ||
        cfg->nqueues > GW_VIRTIO_MMIO_MAX_QUEUES || cfg->config_size > GW_VIRTIO_MMIO_CONFIG_MAX ||
        n == 0 || n > GW_VQ_NUM_MAX || (n & (n - 1)))
        return -EINVAL;
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->cfg.device_features |= GW_VIRTIO_F_VERSION_1;
    for (unsigned i = 0; i < cfg->nqueues; i++) gw_vq_init(&t->queues[i], cfg->mem, n);
    return 0;
}

bool gw_virtio_mmio_live(const struct gw_virtio_mmio *t)
{
    uint32_t need = GW_VIRTIO_S_FEATURES_OK | GW_VIRTIO_S_DRIVER_OK;
    return (t->status & need) == need && !(t->status & GW_VIRTIO_S_NEEDS_RESET);
}

int gw_virtio_mmio_interrupt(struct gw_virtio_mmio *t, uint32_t bits)
{
    bool was_raised = t->interrupt_status != 0;
    t->interrupt_status |= bits;
    return was_raised || !t->interrupt_status ? 0 : set_line(t, 1);
}

int gw_virtio_mmio_fail(struct gw_virtio_mmio *t, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    gw_error("%s: %s; device needs reset", t->cfg.name, what);
    t->errors++;
    t->status |= GW_VIRTIO_S_NEEDS_RESET;
    /* 2.1.2: after DRIVER_OK the device must tell the driver with a config interrupt. */
    if (t->status & GW_VIRTIO_S_DRIVER_OK) return gw_virtio_mmio_interrupt(t, GW_VIRTIO_INT_CONFIG);
    return 0;
}

static struct gw_vq *selected_queue(struct gw_virtio_mmio *t)
{
    return t->queue_sel < t->cfg.nqueues ? &t->queues[t->queue_sel] : NULL;
}

/* Accepts FEATURES_OK only for a subset of what we offer that includes VERSION_1. */
static bool features_acceptable(struct gw_virtio_mmio *t)
{
    uint64_t extra = t->driver_features & ~t->cfg.device_features;
    if (extra) {
        gw_warn("%s: driver asked for features %#llx that were not offered; refusing "
                "FEATURES_OK", t->cfg.name, (unsigned long long)extra);
        return false;
    }
    if (!(t->driver_features & GW_VIRTIO_F_VERSION_1)) {
        gw_warn("%s: driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not "
                "supported); refusing FEATURES_OK", t->cfg.name);
        return false;
    }
    return true;
}

static int write_status(struct gw_virtio_mmio *t, uint32_t v)
{
    if (v == 0) return device_reset(t);
    /* NEEDS_RESET belongs to the device; the driver cannot set or clear it. */
    v = (v & ~GW_VIRTIO_S_NEEDS_RESET) | (t->status & GW_VIRTIO_S_NEEDS_RESET);
    if ((v & GW_VIRTIO_S_FEATURES_OK) && !(t->status & GW_VIRTIO_S_FEATURES_OK)) {
        if (!features_acceptable(t)) {
            v &= ~GW_VIRTIO_S_FEATURES_OK;
        } else {
            bool indirect = t->driver_features & GW_VIRTIO_F_INDIRECT_DESC;
            for (unsigned i = 0; i < t->cfg.nqueues; i++) t->queues[i].indirect_ok = indirect;
        }
    }
    t->status = v & KNOWN_STATUS;
    return 0;
}

static void set_half(uint64_t *v, bool high, uint32_t w)
{
    if (high) *v = (*v & 0xffffffffull) | ((uint64_t)w << 32);
    else *v = (*v & ~0xffffffffull) | w;
}

static int write_queue_reg(struct gw_virtio_mmio *t, uint64_t off, uint32_t v)
{
    struct gw_vq *q = selected_queue(t);
    if (!q) return 0;  /* writes to a queue that does not exist are ignored */
    if (off == GW_VMMIO_QUEUE_READY) {
        if (!v) { q->ready = false; return 0; }
        if (q->ready) return 0;
        if (gw_vq_activate(q) < 0)
            return gw_virtio_mmio_fail(t, "queue %u: %s", t->queue_sel, q->err);
        return 0;
    }
    if (q->ready) {
        gw_debug("%s: queue %u: register %#llx written while ready; ignored", t->cfg.name,
                 t->queue_sel, (unsigned long long)off);
        return 0;
    }
    switch (off) {
    case GW_VMMIO_QUEUE_NUM: q->num = v > UINT16_MAX ? 0 : (uint16_t)v; break;
    case GW_VMMIO_QUEUE_DESC_LOW: set_half(&q->desc_addr, false, v); break;
    case GW_VMMIO_QUEUE_DESC_HIGH: set_half(&q->desc_addr, true, v); break;
    case GW_VMMIO_QUEUE_DRIVER_LOW: set_half(&q->avail_addr, false, v); break;
    case GW_VMMIO_QUEUE_DRIVER_HIGH: set_half(&q->avail_addr, true, v); break;
    case GW_VMMIO_QUEUE_DEVICE_LOW: set_half(&q->used_addr, false, v); break;
    case GW_VMMIO_QUEUE_DEVICE_HIGH: set_half(&q->used_addr, true, v); break;
    }
    return 0;
}

static int write_reg(struct gw_virtio_mmio *t, uint64_t off, uint32_t v)
{
    switch (off) {
    case GW_VMMIO_DEVICE_FEATURES_SEL: t->device_features_sel = v; return 0;
    case GW_VMMIO_DRIVER_FEATURES_SEL: t->driver_features_sel = v; return 0;
    case GW_VMMIO_DRIVER_FEATURES:
        /* Features are fixed once FEATURES_OK is set (3.1.1). */
        if (t->driver_features_sel < 2 && !(t->status & GW_VIRTIO_S_FEATURES_OK))
            set_half(&t->driver_features, t->driver_features_sel == 1, v);
        return 0;
    case GW_VMMIO_QUEUE_SEL: t->queue_sel = v; return 0;
    case GW_VMMIO_QUEUE_NOTIFY:
        if (v >= t->cfg.nqueues || !t->queues[v].ready || !gw_virtio_mmio_live(t)) return 0;
        return t->cfg.ops->notify(t, v);
    case GW_VMMIO_INTERRUPT_ACK: {
        bool was_raised = t->interrupt_status != 0;
        t->interrupt_status &= ~v;
        return was_raised && !t->interrupt_status ? set_line(t, 0) : 0;
    }
    case GW_VMMIO_STATUS: return write_status(t, v);
    case GW_VMMIO_QUEUE_NUM: case GW_VMMIO_QUEUE_READY:
    case GW_VMMIO_QUEUE_DESC_LOW: case GW_VMMIO_QUEUE_DESC_HIGH:
    case GW_VMMIO_QUEUE_DRIVER_LOW: case GW_VMMIO_QUEUE_DRIVER_HIGH:
    case GW_VMMIO_QUEUE_DEVICE_LOW: case GW_VMMIO_QUEUE_DEVICE_HIGH:
        return write_queue_reg(t, off, v);
    default:
        gw_debug("%s: write %#x to read-only or unknown register %#llx ignored", t->cfg.name,
                 v, (unsigned long long)off);
        return 0;
    }
}

static uint32_t read_reg(struct gw_virtio_mmio *t, uint64_t off)
{
    struct gw_vq *q = selected_queue(t);
    switch (off) {
    case GW_VMMIO_MAGIC: return GW_VIRTIO_MMIO_MAGIC;
    case GW_VMMIO_VERSION: return GW_VIRTIO_MMIO_VERSION;
    case GW_VMMIO_DEVICE_ID: return t->cfg.device_id;
    case GW_VMMIO_VENDOR_ID: return GW_VIRTIO_MMIO_VENDOR;
    case GW_VMMIO_DEVICE_FEATURES:
        if (t->device_features_sel >= 2) return 0;
        return (uint32_t)(t->cfg.device_features >> (32 * t->device_features_sel));
    case GW_VMMIO_QUEUE_NUM_MAX: return q ? q->num_max : 0;
    case GW_VMMIO_QUEUE_READY: return q ? q->ready : 0;
    case GW_VMMIO_INTERRUPT_STATUS: return t->interrupt_status;
    case GW_VMMIO_STATUS: return t->status;
    case GW_VMMIO_CONFIG_GENERATION: return t->config_generation;
    default: return 0;  /* write-only or unknown registers read as 0 */
    }
}

int gw_virtio_mmio_access(struct gw_virtio_mmio *t, uint64_t off, bool is_write,
                          uint8_t *data, uint32_t len)
{
    if (off >= GW_VIRTIO_MMIO_CONFIG) {
        uint64_t coff = off - GW_VIRTIO_MMIO_CONFIG;
        bool inside = coff <= t->cfg.config_size && len <= t->cfg.config_size - coff;
        if (is_write) {
            gw_debug("%s: config write at %#llx ignored (read-only)", t->cfg.name,
                     (unsigned long long)off);
        } else if (inside && len && len <= 8) {
            t->cfg.ops->config_read(t, (uint32_t)coff, data, len);
        } else {
            memset(data, 0, len);
        }
        return 0;
    }
    if (len != 4 || off % 4) {
        gw_debug("%s: %u-byte access at %#llx ignored (registers are aligned 32-bit)",
                 t->cfg.name, len, (unsigned long long)off);
        if (!is_write) memset(data, 0, len);
        return 0;
    }
    if (is_write) {
        uint32_t v;
        memcpy(&v, data, 4);
        return write_reg(t, off, le32toh(v));
    }
    uint32_t v = htole32(read_reg(t, off));
    memcpy(data, &v, 4);
    return 0;
}

void gw_virtio_mmio_set_write_sink(struct gw_virtio_mmio *t, struct gw_guest_write_sink sink)
{
    for (unsigned i = 0; i < t->cfg.nqueues; i++) t->queues[i].wsink = sink;
}

void gw_virtio_mmio_save(struct gw_virtio_mmio *t, Godwit__V1__VirtioMmioState *out)
{
    godwit__v1__virtio_mmio_state__init(out);
    out->device_features_sel = t->device_features_sel;
    out->driver_features_sel = t->driver_features_sel;
    out->driver_features = t->driver_features;
    out->queue_sel = t->queue_sel;
    out->status = t->status;
    out->interrupt_status = t->interrupt_status;
    out->config_generation = t->config_generation;
    for (unsigned i = 0; i < t->cfg.nqueues; i++) {
        const struct gw_vq *q = &t->queues[i];
        Godwit__V1__VirtqueueState *s = &t->qstate[i];
        godwit__v1__virtqueue_state__init(s);
        s->num = q->num;
        s->ready = q->ready;
        s->desc_addr = q->desc_addr;
        s->avail_addr = q->avail_addr;
        s->used_addr = q->used_addr;
        s->last_avail_idx = q->last_avail_idx;
        s->used_idx = q->used_idx;
        t->qstate_ptr[i] = s;
    }
    out->n_queues = t->cfg.nqueues;
    out->queues = t->qstate_ptr;
}

/* Builds queue i from its saved state into *q (a copy), activating it when it was ready. */
static int load_queue(struct gw_virtio_mmio *t, unsigned i, const Godwit__V1__VirtqueueState *s,
                      bool indirect, struct gw_vq *q)
{
    if (!s) {
        gw_error("%s: load: queue %u state missing", t->cfg.name, i);
        return -EINVAL;
    }
    if (s->num > q->num_max || s->last_avail_idx > UINT16_MAX || s->used_idx > UINT16_MAX) {
        gw_error("%s: load: queue %u: size %u above %u or an index beyond 16 bits "
                 "(last_avail_idx %u, used_idx %u)",
                 t->cfg.name, i, s->num, q->num_max, s->last_avail_idx, s->used_idx);
        return -EINVAL;
    }
    q->num = (uint16_t)s->num;
    q->desc_addr = s->desc_addr;
    q->avail_addr = s->avail_addr;
    q->used_addr = s->used_addr;
    q->last_avail_idx = (uint16_t)s->last_avail_idx;
    q->used_idx = (uint16_t)s->used_idx;
    q->indirect_ok = indirect;
    if (s->ready && gw_vq_activate(q) < 0) {
        gw_error("%s: load: queue %u: %s", t->cfg.name, i, q->err);
        return -EINVAL;
    }
    return 0;
}

int gw_virtio_mmio_load(struct gw_virtio_mmio *t, const Godwit__V1__VirtioMmioState *in)
{
    if (in->n_queues != t->cfg.nqueues) {
        gw_error("%s: load: state has %zu queues, device has %u", t->cfg.name, in->n_queues,
                 t->cfg.nqueues);
        return -EINVAL;
    }
    if (in->status & ~KNOWN_STATUS) {
        gw_error("%s: load: unknown device status bits %#x", t->cfg.name,
                 in->status & ~KNOWN_STATUS);
        return -EINVAL;
    }
    if (in->interrupt_status & ~(GW_VIRTIO_INT_USED | GW_VIRTIO_INT_CONFIG)) {
        gw_error("%s: load: unknown interrupt status bits %#x", t->cfg.name,
                 in->interrupt_status);
        return -EINVAL;
    }
    if (in->driver_features & ~t->cfg.device_features) {
        gw_error("%s: load: driver features %#llx include bits this device does not offer "
                 "(%#llx)", t->cfg.name, (unsigned long long)in->driver_features,
                 (unsigned long long)t->cfg.device_features);
        return -EINVAL;
    }
    /* Build every queue aside first so a bad queue leaves the device as it was. */
    struct gw_vq qs[GW_VIRTIO_MMIO_MAX_QUEUES];
    bool indirect = (in->status & GW_VIRTIO_S_FEATURES_OK) &&
                    (in->driver_features & GW_VIRTIO_F_INDIRECT_DESC);
    for (unsigned i = 0; i < t->cfg.nqueues; i++) {
        gw_vq_init(&qs[i], t->cfg.mem, t->queues[i].num_max);
        qs[i].wsink = t->queues[i].wsink;
        int r = load_queue(t, i, in->queues[i], indirect, &qs[i]);
        if (r < 0) return r;
    }
    memcpy(t->queues, qs, sizeof qs[0] * t->cfg.nqueues);
    t->device_features_sel = in->device_features_sel;
    t->driver_features_sel = in->driver_features_sel;
    t->driver_features = in->driver_features;
    t->queue_sel = in->queue_sel;
    t->status = in->status;
    t->interrupt_status = in->interrupt_status;
    t->config_generation = in->config_generation;
    /* The line's level is not part of the irqchip state KVM saves; re-drive it. */
    return set_line(t, t->interrupt_status ? 1 : 0);
}
