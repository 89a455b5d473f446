/* virtio-net device: a tap behind a virtio-mmio transport (see virtio_net.h).
 *
 * Every packet is a chain: transmit chains are device-readable only and start with the
 * 12-byte header; receive chains are device-writable only and must hold the header plus the
 * frame. A chain that breaks that shape cannot be served at all and sets DEVICE_NEEDS_RESET
 * (as virtio-blk does); a receive chain that is merely too small for the frame at hand is
 * left in the ring and the frame dropped and counted, since the driver chose its buffer
 * size and the frame came from outside. Frames are copied through a host buffer, never
 * handed to the tap as pointers into guest RAM, so the guest cannot change a frame between
 * its check and its use. */
#include "engine/vm/virtio_net.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/vm/virtio_mmio.h"
#include "guest/abi.h"

#define NET_CONFIG_SIZE 8u          /* mac[6], status */
#define WAIT_PAUSED_MS 1            /* how soon a resumed VM gets frames again (and its tap queue) */
#define WAIT_NO_BUFFER_MS 1         /* how soon re-posted buffers are noticed without a kick */
#define WAIT_NOT_LIVE_MS 10         /* how soon a driver that went live is noticed */

struct gw_virtio_net {
    struct gw_device dev;
    struct gw_virtio_mmio mmio;
    int fd;                    /* tap or test socket, non-blocking, owned; -1 until opened */
    char tap_name[IFNAMSIZ];   /* a tap opened when the VM first runs (see create_tap) */
    bool open_err_logged;
    int kick_fd;               /* eventfd: receive kick or stop, owned */
    bool multiqueue;           /* the tap queue is attached only while the VM runs */
    bool attached;
    bool announce_pending;     /* state was loaded: announce the MAC when first running */
    bool stopping;             /* under dev.lock */
    uint8_t mac[6];
    struct gw_net_gate gate;
    pthread_t rx_thread;
    bool rx_started;
    struct gw_virtio_net_stats stats;
    struct gw_vq_chain chain;  /* scratch, used under dev.lock */
    uint8_t frame[GW_VIRTIO_NET_HDR_BYTES + GW_VIRTIO_NET_MAX_FRAME];
    bool tx_err_logged;
    uint8_t saved_mac[6];
    Godwit__V1__VirtioNetState st;
    Godwit__V1__VirtioMmioState mmio_st;
};

static struct gw_virtio_net *from_dev(struct gw_device *d)
{
    return (struct gw_virtio_net *)((char *)d - offsetof(struct gw_virtio_net, dev));
}

static struct gw_virtio_net *from_mmio(struct gw_virtio_mmio *t)
{
    return (struct gw_virtio_net *)((char *)t - offsetof(struct gw_virtio_net, mmio));
}

void gw_net_rarp_frame(const uint8_t mac[6], uint8_t f[60])
{
    memset(f, 0, 60);
    memset(f, 0xff, 6);                    /* broadcast */
    memcpy(f + 6, mac, 6);
    f[12] = 0x80; f[13] = 0x35;            /* ETH_P_RARP */
    f[14] = 0; f[15] = 1;                  /* hardware: Ethernet */
    f[16] = 0x08; f[17] = 0x00;            /* protocol: IPv4 */
    f[18] = 6; f[19] = 4;
    f[20] = 0; f[21] = 3;                  /* reverse request */
    memcpy(f + 22, mac, 6);                /* sender MAC, sender IP 0 */
    memcpy(f + 32, mac, 6);                /* target MAC, target IP 0 */
}

static void net_config_read(struct gw_virtio_mmio *t, uint32_t off, uint8_t *data, uint32_t len)
{
    struct gw_virtio_net *n = from_mmio(t);
    uint8_t cfg[NET_CONFIG_SIZE];
    memcpy(cfg, n->mac, 6);
    uint16_t status = htole16(GW_VIRTIO_NET_S_LINK_UP);
    memcpy(cfg + 6, &status, 2);
    memcpy(data, cfg + off, len);  /* the transport checked off + len <= NET_CONFIG_SIZE */
}

/* ---- the tap queue ---- */

static int open_tap(const char *name, bool *multiqueue);

/* Opens a deferred tap (attached, as TUNSETIFF leaves it). Returns 0 or -errno. */
static int ensure_open(struct gw_virtio_net *n)
{
    if (n->fd >= 0) return 0;
    bool mq = false;
    int fd = open_tap(n->tap_name, &mq);
    if (fd < 0) {
        if (!n->open_err_logged) gw_error("%s: the guest runs but tap %s cannot be opened", n->dev.name, n->tap_name);
        n->open_err_logged = true;
        return fd;
    }
    n->fd = fd;
    n->multiqueue = mq;
    n->attached = true;
    return 0;
}

static void set_attached(struct gw_virtio_net *n, bool on)
{
    if (n->fd < 0 || !n->multiqueue || n->attached == on) return;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = on ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
    if (ioctl(n->fd, TUNSETQUEUE, &ifr) < 0) {
        gw_warn("%s: cannot %s the tap queue: %s", n->dev.name, on ? "attach" : "detach", strerror(errno));
        return;
    }
    n->attached = on;
}

static bool guest_running(struct gw_virtio_net *n)
{
    return n->gate.running(n->gate.ctx);
}

/* ---- transmit (vCPU thread, device lock held) ---- */

/* Checks the shape of a transmit chain; returns the frame length or -1 with why[]. */
static int64_t tx_frame_len(const struct gw_vq_chain *c, char *why, size_t why_len)
{
    if (c->nin) {
        snprintf(why, why_len, "transmit chain at head %u has %u device-writable descriptors",
                 c->head, c->nin);
        return -1;
    }
    if (c->out_bytes < GW_VIRTIO_NET_HDR_BYTES || c->out_bytes - GW_VIRTIO_NET_HDR_BYTES > GW_VIRTIO_NET_MAX_FRAME) {
        snprintf(why, why_len, "transmit chain at head %u carries %llu bytes (header %u, frame at "
                 "most %u)", c->head, (unsigned long long)c->out_bytes, GW_VIRTIO_NET_HDR_BYTES,
                 GW_VIRTIO_NET_MAX_FRAME);
        return -1;
    }
    return (int64_t)(c->out_bytes - GW_VIRTIO_NET_HDR_BYTES);
}

/* Copies the chain's bytes (header included) into n->frame; the chain's total is checked. */
static void gather(struct gw_virtio_net *n, const struct gw_vq_chain *c)
{
    uint64_t off = 0;
    for (unsigned i = 0; i < c->nout; i++) {
        memcpy(n->frame + off, c->iov[i].base, c->iov[i].len);
        off += c->iov[i].len;
    }
}

static void tx_send(struct gw_virtio_net *n, size_t len)
{
    if (ensure_open(n) < 0) { n->stats.tx_dropped++; return; }
    ssize_t w = write(n->fd, n->frame + GW_VIRTIO_NET_HDR_BYTES, len);
    if (w == (ssize_t)len) {
        n->stats.tx_frames++;
        n->stats.tx_bytes += len;
        return;
    }
    n->stats.tx_dropped++;
    if (w < 0 && errno != EAGAIN && !n->tx_err_logged) {
        gw_warn("%s: the tap refused a frame: %s (dropping; logged once)", n->dev.name, strerror(errno));
        n->tx_err_logged = true;
    }
}

static int net_tx(struct gw_virtio_net *n)
{
    struct gw_virtio_mmio *t = &n->mmio;
    struct gw_vq *vq = &t->queues[GW_VIRTIO_NET_TXQ];
    set_attached(n, true);   /* a transmitting guest runs */
    unsigned done = 0;
    int rc = 0;
    /* At most one ring's worth per kick, as virtio-blk: the guest cannot pin this thread. */
    for (unsigned i = 0; i < vq->num; i++) {
        int r = gw_vq_pop(vq, &n->chain);
        if (r == 0) break;
        if (r < 0) { rc = gw_virtio_mmio_fail(t, "queue %u: %s", GW_VIRTIO_NET_TXQ, vq->err); break; }
        char why[160];
        int64_t len = tx_frame_len(&n->chain, why, sizeof why);
        if (len < 0) {
            gw_vq_unpop(vq);
            rc = gw_virtio_mmio_fail(t, "queue %u: %s", GW_VIRTIO_NET_TXQ, why);
            break;
        }
        gather(n, &n->chain);
        tx_send(n, (size_t)len);
        gw_vq_push(vq, n->chain.head, 0);
        done++;
    }
    if (done) {
        int r = gw_virtio_mmio_interrupt(t, GW_VIRTIO_INT_USED);
        if (rc == 0) rc = r;
    }
    return rc;
}

static int net_notify(struct gw_virtio_mmio *t, unsigned q)
{
    struct gw_virtio_net *n = from_mmio(t);
    if (q == GW_VIRTIO_NET_TXQ) return net_tx(n);
    uint64_t one = 1;  /* new receive buffers: wake the receive thread */
    if (write(n->kick_fd, &one, sizeof one) < 0 && errno != EAGAIN) return -errno;
    return 0;
}

static const struct gw_virtio_mmio_ops net_mmio_ops = {
    .config_read = net_config_read,
    .notify = net_notify,
};

/* ---- receive (receive thread, device lock held) ---- */

enum rx_result { RX_DELIVERED, RX_NO_FRAME, RX_NO_BUFFER, RX_BROKEN };

/* Scatters hdr+frame (len bytes in n->frame) into the writable chain. */
static void scatter(struct gw_virtio_net *n, const struct gw_vq *vq, size_t len)
{
    size_t off = 0;
    for (unsigned i = 0; i < n->chain.nin && off < len; i++) {
        const struct gw_vq_iov *v = &n->chain.iov[i];
        size_t l = v->len < len - off ? v->len : len - off;
        memcpy(v->base, n->frame + off, l);
        gw_vq_mark_written(vq, v->gpa, l);
        off += l;
    }
}

static enum rx_result rx_one(struct gw_virtio_net *n)
{
    struct gw_virtio_mmio *t = &n->mmio;
    struct gw_vq *vq = &t->queues[GW_VIRTIO_NET_RXQ];
    int r = gw_vq_pop(vq, &n->chain);
    if (r == 0) return RX_NO_BUFFER;
    if (r < 0) { gw_virtio_mmio_fail(t, "queue %u: %s", GW_VIRTIO_NET_RXQ, vq->err); return RX_BROKEN; }
    if (n->chain.nout) {
        gw_vq_unpop(vq);
        gw_virtio_mmio_fail(t, "queue %u: receive chain at head %u has %u device-readable "
                            "descriptors", GW_VIRTIO_NET_RXQ, n->chain.head, n->chain.nout);
        return RX_BROKEN;
    }
    ssize_t len = read(n->fd, n->frame + GW_VIRTIO_NET_HDR_BYTES, GW_VIRTIO_NET_MAX_FRAME);
    if (len <= 0) { gw_vq_unpop(vq); return RX_NO_FRAME; }
    size_t total = GW_VIRTIO_NET_HDR_BYTES + (size_t)len;
    if (n->chain.in_bytes < total) {
        /* The driver's buffer is too small for this frame: drop the frame, keep the buffer. */
        gw_vq_unpop(vq);
        n->stats.rx_dropped++;
        gw_debug("%s: %zd-byte frame dropped: receive buffer of %llu bytes", n->dev.name, len,
                 (unsigned long long)n->chain.in_bytes);
        return RX_DELIVERED;  /* a frame was consumed; try the next */
    }
    memset(n->frame, 0, GW_VIRTIO_NET_HDR_BYTES);
    uint16_t nbuf = htole16(1);
    memcpy(n->frame + 10, &nbuf, 2);   /* num_buffers */
    scatter(n, vq, total);
    gw_vq_push(vq, n->chain.head, (uint32_t)total);
    n->stats.rx_frames++;
    n->stats.rx_bytes += (uint64_t)len;
    return RX_DELIVERED;
}

static void announce(struct gw_virtio_net *n)
{
    uint8_t f[60];
    gw_net_rarp_frame(n->mac, f);
    if (write(n->fd, f, sizeof f) == (ssize_t)sizeof f) {
        n->stats.announces++;
        gw_info("%s: announced %02x:%02x:%02x:%02x:%02x:%02x on the tap (RARP)", n->dev.name,
                n->mac[0], n->mac[1], n->mac[2], n->mac[3], n->mac[4], n->mac[5]);
    } else {
        gw_warn("%s: could not announce the MAC on the tap: %s", n->dev.name, strerror(errno));
    }
    n->announce_pending = false;
}

/* One pass under the lock: delivers what it can; returns how long to wait and on what. */
static int rx_pass(struct gw_virtio_net *n, bool *want_frames)
{
    *want_frames = false;
    if (n->stopping) return -1;
    /* A paused guest keeps its tap queue: frames wait there through a short pause (detaching
     * would purge them); the queue leaves only when the state is saved (net_quiesce). */
    if (!guest_running(n)) return WAIT_PAUSED_MS;
    if (ensure_open(n) < 0) return 1000;
    set_attached(n, true);
    if (n->announce_pending) announce(n);
    /* A driver going live may post buffers without a kick: look again now and then. */
    if (!gw_virtio_mmio_live(&n->mmio) || !n->mmio.queues[GW_VIRTIO_NET_RXQ].ready) return WAIT_NOT_LIVE_MS;
    unsigned delivered = 0;
    enum rx_result r = RX_NO_FRAME;
    for (unsigned i = 0; i < GW_VIRTIO_NET_QUEUE_NUM_MAX; i++) {
        r = rx_one(n);
        if (r != RX_DELIVERED) break;
        delivered++;
    }
    if (delivered) gw_virtio_mmio_interrupt(&n->mmio, GW_VIRTIO_INT_USED);
    if (r == RX_NO_FRAME) { *want_frames = true; return -1; }
    if (r == RX_NO_BUFFER) return WAIT_NO_BUFFER_MS;
    if (r == RX_BROKEN) return -1;   /* wait for the driver to reset and kick */
    return 0;                        /* a full ring's worth: go again at once */
}

static void *rx_main(void *arg)
{
    struct gw_virtio_net *n = arg;
    for (;;) {
        bool want_frames;
        pthread_mutex_lock(&n->dev.lock);
        int timeout = rx_pass(n, &want_frames);
        bool stop = n->stopping;
        int fd = n->fd;   /* set once, under the lock, and closed only after this thread ends */
        pthread_mutex_unlock(&n->dev.lock);
        if (stop) break;
        if (timeout == 0) continue;
        if (fd < 0) want_frames = false;
        struct pollfd p[2] = {{.fd = n->kick_fd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
        /* Without a frame to wait for, a kick or the timeout (buffers, resume) wakes us. */
        int r = poll(p, want_frames ? 2 : 1, timeout);
        if (r > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;
            if (read(n->kick_fd, &v, sizeof v) < 0 && errno != EAGAIN) break;
        }
    }
    return NULL;
}

/* ---- device ops ---- */

static int net_access(struct gw_device *d, uint64_t off, bool is_write, uint8_t *data, uint32_t len)
{
    return gw_virtio_mmio_access(&from_dev(d)->mmio, off, is_write, data, len);
}

/* Both paths complete under the lock, so nothing is in flight. A paused VM whose state is
 * being taken (a snapshot, a migration's switchover) leaves the tap now, so frames from here
 * on go to whichever runner runs the guest next; it comes back if this VM runs again. */
static int net_quiesce(struct gw_device *d)
{
    struct gw_virtio_net *n = from_dev(d);
    if (!guest_running(n)) set_attached(n, false);
    return 0;
}

static int net_save(struct gw_device *d, Godwit__V1__DeviceState *out)
{
    struct gw_virtio_net *n = from_dev(d);
    godwit__v1__virtio_net_state__init(&n->st);
    gw_virtio_mmio_save(&n->mmio, &n->mmio_st);
    memcpy(n->saved_mac, n->mac, 6);
    n->st.mmio = &n->mmio_st;
    n->st.mac.data = n->saved_mac;
    n->st.mac.len = 6;
    n->st.rx_frames = n->stats.rx_frames;
    n->st.rx_bytes = n->stats.rx_bytes;
    n->st.tx_frames = n->stats.tx_frames;
    n->st.tx_bytes = n->stats.tx_bytes;
    n->st.rx_dropped = n->stats.rx_dropped;
    n->st.tx_dropped = n->stats.tx_dropped;
    n->st.errors = n->mmio.errors;
    out->name = (char *)d->name;
    out->kind_case = GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_NET;
    out->virtio_net = &n->st;
    return 0;
}

static int net_load(struct gw_device *d, const Godwit__V1__DeviceState *in)
{
    struct gw_virtio_net *n = from_dev(d);
    const Godwit__V1__VirtioNetState *s = in->virtio_net;
    if (in->kind_case != GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_NET || !s || !s->mmio) {
        gw_error("%s: load: state (kind %d) is not a virtio-net state", d->name, (int)in->kind_case);
        return -EINVAL;
    }
    if (in->name && in->name[0] && strcmp(in->name, d->name)) {
        gw_error("%s: load: state belongs to device %s", d->name, in->name);
        return -EINVAL;
    }
    if (s->mac.len != 6 || (s->mac.data[0] & 1)) {
        gw_error("%s: load: MAC of %zu bytes is not a unicast Ethernet address", d->name, s->mac.len);
        return -EINVAL;
    }
    for (size_t i = 0; i < s->mmio->n_queues; i++) {
        const Godwit__V1__VirtqueueState *q = s->mmio->queues[i];
        if (q && q->last_avail_idx <= UINT16_MAX && q->used_idx <= UINT16_MAX &&
            q->last_avail_idx != q->used_idx) {
            gw_error("%s: load: queue %zu has %u chains in flight; this device completes them "
                     "under its lock", d->name, i, (q->last_avail_idx - q->used_idx) & 0xffffu);
            return -EINVAL;
        }
    }
    int r = gw_virtio_mmio_load(&n->mmio, s->mmio);
    if (r < 0) return r;
    memcpy(n->mac, s->mac.data, 6);
    n->stats.rx_frames = s->rx_frames;
    n->stats.rx_bytes = s->rx_bytes;
    n->stats.tx_frames = s->tx_frames;
    n->stats.tx_bytes = s->tx_bytes;
    n->stats.rx_dropped = s->rx_dropped;
    n->stats.tx_dropped = s->tx_dropped;
    n->mmio.errors = s->errors;
    n->announce_pending = true;
    return 0;
}

static void net_destroy(struct gw_device *d)
{
    if (!d) return;
    struct gw_virtio_net *n = from_dev(d);
    if (n->rx_started) {
        pthread_mutex_lock(&d->lock);
        n->stopping = true;
        pthread_mutex_unlock(&d->lock);
        uint64_t one = 1;
        if (write(n->kick_fd, &one, sizeof one) < 0) gw_warn("%s: cannot wake the receive thread", d->name);
        pthread_join(n->rx_thread, NULL);
    }
    if (n->fd >= 0) close(n->fd);
    if (n->kick_fd >= 0) close(n->kick_fd);
    free(n);
}

static const struct gw_device_ops net_ops = {
    .access = net_access,
    .quiesce = net_quiesce,
    .save = net_save,
    .load = net_load,
    .destroy = net_destroy,
};

int gw_virtio_net_set_write_sink(struct gw_device *d, struct gw_guest_write_sink sink)
{
    if (!d || d->ops != &net_ops) return -EINVAL;
    gw_virtio_mmio_set_write_sink(&from_dev(d)->mmio, sink);
    return 0;
}

int gw_virtio_net_stats(struct gw_device *d, struct gw_virtio_net_stats *out)
{
    if (!d || d->ops != &net_ops) return -EINVAL;
    struct gw_virtio_net *n = from_dev(d);
    pthread_mutex_lock(&d->lock);
    *out = n->stats;
    out->errors = n->mmio.errors;
    pthread_mutex_unlock(&d->lock);
    return 0;
}

static int create(int fd, const char *tap_name, bool multiqueue, const uint8_t mac[6],
                  const struct gw_guest_mem *mem, struct gw_irq_sink irq, uint64_t mmio_base,
                  uint32_t gsi, struct gw_net_gate gate, struct gw_device **out)
{
    *out = NULL;
    if ((mac[0] & 1) || !gate.running) { if (fd >= 0) close(fd); return -EINVAL; }
    struct gw_virtio_net *n = calloc(1, sizeof *n);
    if (!n) { if (fd >= 0) close(fd); return -ENOMEM; }
    n->fd = fd;
    if (tap_name) snprintf(n->tap_name, sizeof n->tap_name, "%s", tap_name);
    n->kick_fd = -1;
    n->multiqueue = multiqueue;
    n->attached = fd >= 0;       /* TUNSETIFF attaches */
    n->gate = gate;
    memcpy(n->mac, mac, 6);
    n->dev.ops = &net_ops;
    n->dev.name = "net0";
    n->dev.space = GW_DEV_MMIO;
    n->dev.base = mmio_base;
    n->dev.size = GW_VIRTIO_MMIO_SIZE;
    int r = pthread_mutex_init(&n->dev.lock, NULL);
    if (r) { if (fd >= 0) close(fd); free(n); return -r; }
    n->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (n->kick_fd < 0) { r = -errno; goto fail; }
    if (fd >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) { r = -errno; goto fail; }
    struct gw_virtio_mmio_config cfg = {
        .name = n->dev.name, .ops = &net_mmio_ops, .device_id = GW_VIRTIO_ID_NET,
        .device_features = GW_VIRTIO_F_VERSION_1 | GW_VIRTIO_F_INDIRECT_DESC |
                           GW_VIRTIO_NET_F_MAC | GW_VIRTIO_NET_F_STATUS,
        .config_size = NET_CONFIG_SIZE, .nqueues = 2,
        .queue_num_max = GW_VIRTIO_NET_QUEUE_NUM_MAX, .mem = mem, .irq = irq, .gsi = gsi,
    };
    r = gw_virtio_mmio_init(&n->mmio, &cfg);
    if (r < 0) { gw_error("net0: bad transport configuration"); goto fail; }
    r = -pthread_create(&n->rx_thread, NULL, rx_main, n);
    if (r) goto fail;
    n->rx_started = true;
    pthread_setname_np(n->rx_thread, "net0-rx");
    *out = &n->dev;
    return 0;
fail:
    gw_error("net0: cannot set up the device: %s", strerror(-r));
    net_destroy(&n->dev);
    return r;
}

int gw_virtio_net_create_fd(int fd, const uint8_t mac[6], const struct gw_guest_mem *mem,
                            struct gw_irq_sink irq, uint64_t mmio_base, uint32_t gsi,
                            struct gw_net_gate gate, struct gw_device **out)
{
    if (fd < 0) return -EBADF;
    return create(fd, NULL, false, mac, mem, irq, mmio_base, gsi, gate, out);
}

/* Opens tap NAME (checked by the caller), multi-queue when the tap allows it. */
static int open_tap(const char *name, bool *multiqueue)
{
    for (int mq = 1; mq >= 0; mq--) {
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) { int e = -errno; gw_error("net0: /dev/net/tun: %s", strerror(-e)); return e; }
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (mq ? IFF_MULTI_QUEUE : 0);
        memcpy(ifr.ifr_name, name, strlen(name));
        if (ioctl(fd, TUNSETIFF, &ifr) == 0) { *multiqueue = mq; return fd; }
        int e = -errno;
        close(fd);
        if (mq && e == -EINVAL) continue;   /* a single-queue tap: take it as it is */
        gw_error("net0: cannot attach tap %s: %s%s", name, strerror(-e),
                 e == -EBUSY ? " (in use by another process; create it with multi_queue to "
                               "migrate on one host)" : "");
        return e;
    }
    return -EINVAL;
}

/* True when tap name exists and was made multi-queue (ip tuntap add ... multi_queue). */
static bool tap_is_multiqueue(const char *name)
{
    char path[96], buf[32];
    snprintf(path, sizeof path, "/sys/class/net/%s/tun_flags", name);
    if (gw_read_small_file(path, buf, sizeof buf) < 0) return false;
    return (strtoul(buf, NULL, 16) & IFF_MULTI_QUEUE) != 0;
}

int gw_virtio_net_create(const char *backend, const uint8_t mac[6], const struct gw_guest_mem *mem,
                         struct gw_irq_sink irq, uint64_t mmio_base, uint32_t gsi,
                         struct gw_net_gate gate, struct gw_device **out)
{
    *out = NULL;
    if (strncmp(backend, "tap:", 4)) {
        gw_error("net0: backend '%s' is not supported (tap:NAME is)", backend);
        return -EINVAL;
    }
    const char *name = backend + 4;
    if (!name[0] || strlen(name) >= IFNAMSIZ) {
        gw_error("net0: tap name '%s' is empty or longer than %d characters", name, IFNAMSIZ - 1);
        return -EINVAL;
    }
    /* An existing multi-queue tap is opened when the guest first runs: attaching a queue and
     * detaching it again makes the kernel drop frames in flight to the tap's other queue
     * (the source's, when this runner is a migration's destination). Anything else is
     * opened now, so that a wrong name fails at once. */
    if (tap_is_multiqueue(name)) return create(-1, name, true, mac, mem, irq, mmio_base, gsi, gate, out);
    bool mq = false;
    int fd = open_tap(name, &mq);
    if (fd < 0) return fd;
    return create(fd, name, mq, mac, mem, irq, mmio_base, gsi, gate, out);
}
