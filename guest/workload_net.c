/* The net-echo workload: a polled virtio-net driver (virtio 1.x over virtio-mmio) run at
 * CPL3 on vCPU 0 only, answering every echo request frame (format in guest/abi.h) with a
 * reply to its sender, so that a test or a benchmark on the host side of the tap can count
 * frames lost and reordered across a save/restore or a migration.
 *
 * Why it is shaped so (as the disk workload):
 *  - MMIO from CPL3 costs a KVM exit each, so in steady state the driver writes one register
 *    per batch of replies (the transmit QueueNotify) and none for receive buffers: the device
 *    finds re-posted buffers by itself. Completions are found by polling the used rings in
 *    guest RAM; interrupts stay masked.
 *  - Everything the driver knows lives in guest memory (rings and buffers at the fixed places
 *    of abi.h, the rest on the CPL3 stack), and the device completes transmissions inside the
 *    kick and receives only while the VM runs, so a snapshot taken at any instruction holds a
 *    consistent driver: a restored or migrated guest just carries on.
 *  - It polls for about a millisecond after a frame, and when that passes with nothing it
 *    sleeps until the next timer tick and then polls only briefly: busy, round trips never
 *    wait for a tick; idle, it answers within a tick without keeping a host CPU busy. */
#include "guest/rt.h"
#include "guest/virtio_regs.h"

_Static_assert(GW_NET_SLOTS * 16 <= 0x1000, "a descriptor table must fit in its 4 KiB");
_Static_assert(GW_GPA_NET_RING + 6 * 0x1000 <= GW_GPA_DATA, "net rings must fit below the data area");

#define VIRTIO_ID_NET 1u
#define F_MAC 0x20u                /* feature bit 5 */
#define HDR 12u                    /* struct virtio_net_hdr with num_buffers (VERSION_1) */
#define RXQ 0u
#define TXQ 1u
#define SPINS_BUSY 20000u         /* ~1 ms of polling after a frame: round trips stay fast */
#define SPINS_IDLE 1000u          /* ~50 us after a sleep: an idle guest costs little */


struct queue {
    struct virtq_desc *desc;
    uint16_t *avail;               /* flags, idx, ring[qsize] */
    uint8_t *used;                 /* flags, idx, elem[qsize] */
    uint16_t avail_idx, used_seen;
};

struct net {
    uintptr_t mmio;
    uint16_t qsize;
    struct queue q[2];
    uint8_t *rxbuf, *txbuf;
    uint8_t mac[6];
    struct gw_vcpu_counters *c;
};

static uint32_t rd(const struct net *n, uint32_t off) { return *(volatile uint32_t *)(n->mmio + off); }
static void wr(const struct net *n, uint32_t off, uint32_t v) { *(volatile uint32_t *)(n->mmio + off) = v; }

static uint16_t used_idx(const struct queue *q)
{
    return __atomic_load_n((const uint16_t *)(q->used + 2), __ATOMIC_ACQUIRE);
}

static void publish(struct queue *q) { __atomic_store_n(&q->avail[1], q->avail_idx, __ATOMIC_RELEASE); }

static int setup_queue(struct net *n, unsigned i)
{
    struct queue *q = &n->q[i];
    uint8_t *base = (uint8_t *)GW_GPA_NET_RING + i * 0x3000u;
    memset(base, 0, 0x3000);
    q->desc = (struct virtq_desc *)base;
    q->avail = (uint16_t *)(base + 0x1000);
    q->used = base + 0x2000;
    q->avail[0] = 1;               /* VIRTQ_AVAIL_F_NO_INTERRUPT: we poll */
    q->avail_idx = q->used_seen = 0;
    wr(n, R_QUEUE_SEL, i);
    if (rd(n, R_QUEUE_READY) != 0 || rd(n, R_QUEUE_NUM_MAX) < n->qsize) return -1;
    uint64_t d = (uintptr_t)q->desc, a = (uintptr_t)q->avail, u = (uintptr_t)q->used;
    wr(n, R_QUEUE_NUM, n->qsize);
    wr(n, R_QUEUE_DESC_LOW, (uint32_t)d);
    wr(n, R_QUEUE_DESC_HIGH, (uint32_t)(d >> 32));
    wr(n, R_QUEUE_DRIVER_LOW, (uint32_t)a);
    wr(n, R_QUEUE_DRIVER_HIGH, (uint32_t)(a >> 32));
    wr(n, R_QUEUE_DEVICE_LOW, (uint32_t)u);
    wr(n, R_QUEUE_DEVICE_HIGH, (uint32_t)(u >> 32));
    wr(n, R_QUEUE_READY, 1);
    return rd(n, R_QUEUE_READY) == 1 ? 0 : -1;
}

/* Slot s of each queue always uses descriptor s and buffer s. */
static void layout_buffers(struct net *n)
{
    for (uint16_t s = 0; s < n->qsize; s++) {
        n->q[RXQ].desc[s] = (struct virtq_desc){(uintptr_t)(n->rxbuf + s * GW_NET_BUF_BYTES),
                                                GW_NET_BUF_BYTES, DESC_F_WRITE, 0};
        n->q[RXQ].avail[2 + s] = s;
        n->q[TXQ].desc[s] = (struct virtq_desc){(uintptr_t)(n->txbuf + s * GW_NET_BUF_BYTES), 0, 0, 0};
    }
    n->q[RXQ].avail_idx = n->qsize;
    publish(&n->q[RXQ]);
}

static int net_init(struct net *n)
{
    if (rd(n, R_MAGIC) != MMIO_MAGIC || rd(n, R_DEVICE_ID) != VIRTIO_ID_NET) return -1;
    wr(n, R_STATUS, 0);
    uint32_t s = S_ACKNOWLEDGE;
    wr(n, R_STATUS, s);
    wr(n, R_STATUS, s |= S_DRIVER);
    wr(n, R_DEVICE_FEATURES_SEL, 0);
    uint32_t lo = rd(n, R_DEVICE_FEATURES) & F_MAC;
    wr(n, R_DRIVER_FEATURES_SEL, 0);
    wr(n, R_DRIVER_FEATURES, lo);
    wr(n, R_DRIVER_FEATURES_SEL, 1);
    wr(n, R_DRIVER_FEATURES, F_VERSION_1_HIGH);
    wr(n, R_STATUS, s |= S_FEATURES_OK);
    if (!(rd(n, R_STATUS) & S_FEATURES_OK) || !lo) goto fail;
    for (unsigned i = 0; i < 6; i++) n->mac[i] = *(volatile uint8_t *)(n->mmio + R_CONFIG + i);
    if (setup_queue(n, RXQ) < 0 || setup_queue(n, TXQ) < 0) goto fail;
    layout_buffers(n);
    wr(n, R_STATUS, s |= S_DRIVER_OK);
    if (rd(n, R_STATUS) & (S_NEEDS_RESET | S_FAILED)) goto fail;
    return 0;
fail:
    wr(n, R_STATUS, s | S_FAILED);
    return -1;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* Builds the reply to the request frame f (len bytes) in transmit slot s; 0 if f is not an
 * echo request. Returns the reply's length without the virtio header. */
static uint32_t build_reply(struct net *n, const uint8_t *f, uint32_t len, uint16_t s)
{
    uint32_t magic;
    if (len < 26 || be16(f + 12) != GW_NET_ECHO_ETHERTYPE) return 0;
    memcpy(&magic, f + 14, 4);
    if (magic != GW_NET_ECHO_REQUEST) return 0;
    uint8_t *r = n->txbuf + s * GW_NET_BUF_BYTES;
    memset(r, 0, HDR);
    memcpy(r + HDR, f + 6, 6);            /* to the sender */
    memcpy(r + HDR + 6, n->mac, 6);       /* from us */
    memcpy(r + HDR + 12, f + 12, len - 12);
    magic = GW_NET_ECHO_REPLY;
    memcpy(r + HDR + 14, &magic, 4);
    return len;
}

/* Answers every frame received since the last call; returns how many frames it saw. */
static unsigned echo_batch(struct net *n)
{
    struct queue *rx = &n->q[RXQ], *tx = &n->q[TXQ];
    uint16_t end = used_idx(rx);
    unsigned seen = 0, replies = 0;
    for (; rx->used_seen != end; rx->used_seen++, seen++) {
        const struct virtq_used_elem *e = (const struct virtq_used_elem *)(rx->used + 4) + rx->used_seen % n->qsize;
        uint32_t id = e->id, len = e->len;
        if (id >= n->qsize || len < HDR || len > GW_NET_BUF_BYTES) { n->c->net_frames_other++; continue; }
        /* The transmit queue is drained inside every kick, so slot avail_idx is free. */
        uint16_t ts = tx->avail_idx % n->qsize;
        uint32_t rl = build_reply(n, n->rxbuf + id * GW_NET_BUF_BYTES + HDR, len - HDR, ts);
        if (rl) {
            tx->desc[ts].len = HDR + rl;
            tx->avail[2 + ts] = ts;
            tx->avail_idx++;
            replies++;
        } else {
            n->c->net_frames_other++;
        }
        /* Give the buffer back. */
        rx->avail[2 + rx->avail_idx % n->qsize] = (uint16_t)id;
        rx->avail_idx++;
    }
    if (replies) {
        publish(tx);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        wr(n, R_QUEUE_NOTIFY, TXQ);
        tx->used_seen = used_idx(tx);
        n->c->net_frames_echoed += replies;
    }
    if (seen) publish(rx);
    return seen;
}

void gw_workload_net(uint32_t cpu, struct gw_boot_info *bi)
{
    struct gw_vcpu_counters *c = &gw_status()->vcpu[cpu];
    if (cpu != 0) {
        gw_report(GW_EV_READY, cpu);
        for (;;) { c->heartbeat++; gw_wait_tick(); }
    }
    struct gw_guest_status *st = gw_status();
    st->abi_version = GW_ABI_VERSION;
    st->magic = GW_STATUS_MAGIC;
    /* Mask the 8259: the device's GSI would otherwise arrive as a low vector (see disk). */
    gw_syscall2(GW_SYS_OUTB, 0x21, 0xff);
    gw_syscall2(GW_SYS_OUTB, 0xa1, 0xff);
    struct net n = {
        .mmio = (uintptr_t)bi->net_mmio_base, .qsize = GW_NET_SLOTS,
        .rxbuf = (uint8_t *)GW_GPA_NET_BUF, .txbuf = (uint8_t *)GW_GPA_NET_BUF + GW_NET_SLOTS * GW_NET_BUF_BYTES,
        .c = c,
    };
    if (!bi->net_present || bi->ram_below_hole < GW_GPA_NET_BUF + 2 * GW_NET_SLOTS * GW_NET_BUF_BYTES ||
        net_init(&n) < 0) {
        st->fatal_error = GW_ERR_NET;
        gw_report(GW_EV_FATAL, GW_ERR_NET);
        return;
    }
    gw_puts("net: echo ready\n");
    gw_report(GW_EV_READY, cpu);
    unsigned budget = SPINS_IDLE;
    for (;;) {
        unsigned idle = 0;
        while (echo_batch(&n) == 0 && ++idle < budget) __asm__ volatile("pause");
        c->heartbeat++;
        if (idle >= budget) {
            gw_wait_tick();
            budget = SPINS_IDLE;
        } else {
            budget = SPINS_BUSY;
        }
    }
}
