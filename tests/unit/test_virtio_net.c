/* Unit tests for the virtio-net device, driven through its access() op as a guest driver
 * would, with a SOCK_SEQPACKET socket pair standing in for the tap (one frame per read or
 * write): frames both ways, the receive gate (nothing written while the VM is paused),
 * small receive buffers, hostile chains that must set DEVICE_NEEDS_RESET and send nothing,
 * and save/load through protobuf-c with the MAC announced (RARP) after a load. */
#include "engine/vm/guest_mem.h"
#include "engine/vm/virtio_mmio.h"
#include "engine/vm/virtio_net.h"
#include "engine/vm/virtqueue.h"
#include "guest/abi.h"
#include "tests/lib/gw_test.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE (1u << 20)
#define QNUM 64u
#define RX_DESC 0x1000u
#define RX_AVAIL 0x2000u
#define RX_USED 0x3000u
#define TX_DESC 0x4000u
#define TX_AVAIL 0x5000u
#define TX_USED 0x6000u
#define RXBUF 0x10000u
#define TXBUF 0x40000u
#define HDR 12u

#define F_LO ((uint32_t)(GW_VIRTIO_NET_F_MAC | GW_VIRTIO_NET_F_STATUS | GW_VIRTIO_F_INDIRECT_DESC))
#define S_ALL (GW_VIRTIO_S_ACKNOWLEDGE | GW_VIRTIO_S_DRIVER | GW_VIRTIO_S_FEATURES_OK | GW_VIRTIO_S_DRIVER_OK)

static const uint8_t MAC[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

struct env {
    uint8_t *ram;
    struct gw_guest_mem mem;
    struct gw_device *dev;
    int peer;
    bool running;
    unsigned irq_raises;
    uint16_t rx_avail, tx_avail;
};

static int irq_set(void *ctx, uint32_t gsi, int level)
{
    struct env *e = ctx;
    if (level) __atomic_add_fetch(&e->irq_raises, 1, __ATOMIC_SEQ_CST);
    (void)gsi;
    return 0;
}

static bool gate_running(void *ctx) { return __atomic_load_n(&((struct env *)ctx)->running, __ATOMIC_SEQ_CST); }

static struct env *env_new(bool running)
{
    struct env *e = calloc(1, sizeof *e);
    e->ram = aligned_alloc(4096, RAM_SIZE);
    memset(e->ram, 0, RAM_SIZE);
    gw_guest_mem_wrap(&e->mem, e->ram, RAM_SIZE);
    e->running = running;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) abort();
    e->peer = sv[1];
    struct gw_irq_sink irq = {irq_set, e};
    struct gw_net_gate gate = {gate_running, e};
    if (gw_virtio_net_create_fd(sv[0], MAC, &e->mem, irq, GW_VIRTIO_NET_MMIO_BASE, GW_VIRTIO_NET_GSI, gate, &e->dev))
        abort();
    return e;
}

static void env_free(struct env *e)
{
    e->dev->ops->destroy(e->dev);
    close(e->peer);
    free(e->ram);
    free(e);
}

static int access_dev(struct gw_device *d, uint64_t off, bool w, uint8_t *data, uint32_t len)
{
    pthread_mutex_lock(&d->lock);
    int r = d->ops->access(d, off, w, data, len);
    pthread_mutex_unlock(&d->lock);
    return r;
}

static uint32_t rd(struct env *e, uint64_t off)
{
    uint8_t d[4];
    CHECK_EQ(access_dev(e->dev, off, false, d, 4), 0);
    uint32_t v;
    memcpy(&v, d, 4);
    return v;
}

static void wr(struct env *e, uint64_t off, uint32_t v)
{
    uint8_t d[4];
    memcpy(d, &v, 4);
    CHECK_EQ(access_dev(e->dev, off, true, d, 4), 0);
}

static void setup_queue(struct env *e, uint32_t q, uint32_t desc, uint32_t avail, uint32_t used)
{
    wr(e, GW_VMMIO_QUEUE_SEL, q);
    wr(e, GW_VMMIO_QUEUE_NUM, QNUM);
    wr(e, GW_VMMIO_QUEUE_DESC_LOW, desc);
    wr(e, GW_VMMIO_QUEUE_DRIVER_LOW, avail);
    wr(e, GW_VMMIO_QUEUE_DEVICE_LOW, used);
    wr(e, GW_VMMIO_QUEUE_READY, 1);
}

static struct env *env_ready(bool running)
{
    struct env *e = env_new(running);
    wr(e, GW_VMMIO_STATUS, GW_VIRTIO_S_ACKNOWLEDGE | GW_VIRTIO_S_DRIVER);
    wr(e, GW_VMMIO_DRIVER_FEATURES_SEL, 0);
    wr(e, GW_VMMIO_DRIVER_FEATURES, F_LO);
    wr(e, GW_VMMIO_DRIVER_FEATURES_SEL, 1);
    wr(e, GW_VMMIO_DRIVER_FEATURES, 1);
    wr(e, GW_VMMIO_STATUS, S_ALL & ~GW_VIRTIO_S_DRIVER_OK);
    setup_queue(e, GW_VIRTIO_NET_RXQ, RX_DESC, RX_AVAIL, RX_USED);
    setup_queue(e, GW_VIRTIO_NET_TXQ, TX_DESC, TX_AVAIL, TX_USED);
    wr(e, GW_VMMIO_STATUS, S_ALL);
    CHECK_EQ(rd(e, GW_VMMIO_STATUS), S_ALL);
    return e;
}

static void desc(struct env *e, uint32_t table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    struct gw_virtq_desc d = {.addr = addr, .len = len, .flags = flags, .next = next};
    memcpy(e->ram + table + 16u * i, &d, sizeof d);
}

static void offer(struct env *e, uint32_t avail, uint16_t *idx, uint16_t head)
{
    memcpy(e->ram + avail + 4 + 2u * (*idx % QNUM), &head, 2);
    (*idx)++;
    __atomic_store_n((uint16_t *)(e->ram + avail + 2), *idx, __ATOMIC_RELEASE);
}

static uint16_t used_idx(struct env *e, uint32_t used)
{
    return __atomic_load_n((uint16_t *)(e->ram + used + 2), __ATOMIC_ACQUIRE);
}

static uint32_t used_len(struct env *e, uint32_t used, uint16_t idx)
{
    uint32_t elem[2];
    memcpy(elem, e->ram + used + 4 + 8u * (idx % QNUM), 8);
    return elem[1];
}

static bool needs_reset(struct env *e) { return rd(e, GW_VMMIO_STATUS) & GW_VIRTIO_S_NEEDS_RESET; }

/* Posts one receive buffer of len bytes as descriptor i and kicks. */
static void post_rx(struct env *e, uint16_t i, uint32_t len)
{
    desc(e, RX_DESC, i, RXBUF + i * 0x2000u, len, GW_VIRTQ_DESC_F_WRITE, 0);
    offer(e, RX_AVAIL, &e->rx_avail, i);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, GW_VIRTIO_NET_RXQ);
}

static void fill_frame(uint8_t *f, size_t len, unsigned seq)
{
    for (size_t i = 0; i < len; i++) f[i] = (uint8_t)(seq * 13 + i);
}

/* Transmits one frame (header + frame in one descriptor i). */
static void send_tx(struct env *e, uint16_t i, const uint8_t *frame, uint32_t len)
{
    memset(e->ram + TXBUF + i * 0x2000u, 0, HDR);
    memcpy(e->ram + TXBUF + i * 0x2000u + HDR, frame, len);
    desc(e, TX_DESC, i, TXBUF + i * 0x2000u, HDR + len, 0, 0);
    offer(e, TX_AVAIL, &e->tx_avail, i);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, GW_VIRTIO_NET_TXQ);
}

static bool wait_used(struct env *e, uint32_t used, uint16_t want, int ms)
{
    for (int i = 0; i < ms; i++) {
        if (used_idx(e, used) == want) return true;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return used_idx(e, used) == want;
}

static ssize_t peer_recv(struct env *e, uint8_t *buf, size_t cap, int ms)
{
    struct pollfd p = {.fd = e->peer, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0) return -1;
    return recv(e->peer, buf, cap, 0);
}

GW_TEST(config_space_holds_mac_and_link_up)
{
    struct env *e = env_new(true);
    CHECK_EQ(rd(e, GW_VMMIO_DEVICE_ID), GW_VIRTIO_ID_NET);
    uint8_t cfg[8];
    for (int i = 0; i < 8; i++) CHECK_EQ(access_dev(e->dev, GW_VIRTIO_MMIO_CONFIG + i, false, cfg + i, 1), 0);
    CHECK(!memcmp(cfg, MAC, 6));
    CHECK(cfg[6] == 1 && cfg[7] == 0);
    wr(e, GW_VMMIO_DEVICE_FEATURES_SEL, 0);
    CHECK_EQ(rd(e, GW_VMMIO_DEVICE_FEATURES) & F_LO, F_LO);
    env_free(e);
}

GW_TEST(tx_frame_reaches_the_backend_without_its_header)
{
    struct env *e = env_ready(true);
    uint8_t f[60], got[2000];
    fill_frame(f, sizeof f, 1);
    send_tx(e, 0, f, sizeof f);
    CHECK_EQ(used_idx(e, TX_USED), 1);
    CHECK_EQ(used_len(e, TX_USED, 0), 0);
    CHECK(__atomic_load_n(&e->irq_raises, __ATOMIC_SEQ_CST) >= 1);
    CHECK_EQ(peer_recv(e, got, sizeof got, 1000), (ssize_t)sizeof f);
    CHECK(!memcmp(got, f, sizeof f));
    /* Header and frame split over two descriptors. */
    memset(e->ram + TXBUF, 0, HDR);
    memcpy(e->ram + TXBUF + 0x1000, f, sizeof f);
    desc(e, TX_DESC, 1, TXBUF, HDR, GW_VIRTQ_DESC_F_NEXT, 2);
    desc(e, TX_DESC, 2, TXBUF + 0x1000, sizeof f, 0, 0);
    offer(e, TX_AVAIL, &e->tx_avail, 1);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, GW_VIRTIO_NET_TXQ);
    CHECK_EQ(peer_recv(e, got, sizeof got, 1000), (ssize_t)sizeof f);
    CHECK(!memcmp(got, f, sizeof f));
    struct gw_virtio_net_stats st;
    gw_virtio_net_stats(e->dev, &st);
    CHECK(st.tx_frames == 2 && st.tx_bytes == 120 && st.errors == 0);
    CHECK(!needs_reset(e));
    env_free(e);
}

GW_TEST(rx_frame_is_delivered_with_a_virtio_header)
{
    struct env *e = env_ready(true);
    post_rx(e, 0, 2048);
    uint8_t f[100];
    fill_frame(f, sizeof f, 2);
    CHECK_EQ(send(e->peer, f, sizeof f, 0), (ssize_t)sizeof f);
    REQUIRE(wait_used(e, RX_USED, 1, 2000));
    CHECK_EQ(used_len(e, RX_USED, 0), HDR + sizeof f);
    const uint8_t *b = e->ram + RXBUF;
    static const uint8_t hdr[HDR] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    CHECK(!memcmp(b, hdr, HDR));
    CHECK(!memcmp(b + HDR, f, sizeof f));
    CHECK(b[HDR + sizeof f] == 0);
    CHECK(__atomic_load_n(&e->irq_raises, __ATOMIC_SEQ_CST) >= 1);
    env_free(e);
}

GW_TEST(rx_writes_nothing_while_the_vm_is_paused)
{
    struct env *e = env_ready(false);
    post_rx(e, 0, 2048);
    uint8_t f[64];
    fill_frame(f, sizeof f, 3);
    CHECK_EQ(send(e->peer, f, sizeof f, 0), (ssize_t)sizeof f);
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
    CHECK_EQ(used_idx(e, RX_USED), 0);
    CHECK(e->ram[RXBUF + HDR] == 0);
    __atomic_store_n(&e->running, true, __ATOMIC_SEQ_CST);
    CHECK(wait_used(e, RX_USED, 1, 2000));
    CHECK(!memcmp(e->ram + RXBUF + HDR, f, sizeof f));
    env_free(e);
}

GW_TEST(rx_frame_larger_than_the_buffer_is_dropped_and_counted)
{
    struct env *e = env_ready(true);
    post_rx(e, 0, 64);
    uint8_t big[200], small[20];
    fill_frame(big, sizeof big, 4);
    fill_frame(small, sizeof small, 5);
    CHECK_EQ(send(e->peer, big, sizeof big, 0), (ssize_t)sizeof big);
    CHECK_EQ(send(e->peer, small, sizeof small, 0), (ssize_t)sizeof small);
    REQUIRE(wait_used(e, RX_USED, 1, 2000));
    CHECK_EQ(used_len(e, RX_USED, 0), HDR + sizeof small);
    CHECK(!memcmp(e->ram + RXBUF + HDR, small, sizeof small));
    CHECK(e->ram[RXBUF + HDR + sizeof small] == 0);  /* nothing of the big frame */
    struct gw_virtio_net_stats st;
    gw_virtio_net_stats(e->dev, &st);
    CHECK(st.rx_dropped == 1 && st.rx_frames == 1);
    CHECK(!needs_reset(e));
    env_free(e);
}

/* A hostile transmit chain: device needs reset, nothing reaches the backend, no used entry. */
static void hostile_tx(void (*build)(struct env *), const char *what)
{
    struct env *e = env_ready(true);
    build(e);
    offer(e, TX_AVAIL, &e->tx_avail, 0);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, GW_VIRTIO_NET_TXQ);
    uint8_t got[100];
    if (!needs_reset(e)) fprintf(stderr, "  %s: not refused\n", what);
    CHECK(needs_reset(e));
    CHECK_EQ(used_idx(e, TX_USED), 0);
    CHECK_EQ(peer_recv(e, got, sizeof got, 50), -1);
    /* Later kicks are ignored until the driver resets. */
    wr(e, GW_VMMIO_QUEUE_NOTIFY, GW_VIRTIO_NET_TXQ);
    CHECK_EQ(peer_recv(e, got, sizeof got, 20), -1);
    env_free(e);
}

static void tx_writable(struct env *e) { desc(e, TX_DESC, 0, TXBUF, 100, GW_VIRTQ_DESC_F_WRITE, 0); }
static void tx_short(struct env *e) { desc(e, TX_DESC, 0, TXBUF, HDR - 1, 0, 0); }
static void tx_outside(struct env *e) { desc(e, TX_DESC, 0, RAM_SIZE - 10, 100, 0, 0); }
static void tx_wrap(struct env *e) { desc(e, TX_DESC, 0, UINT64_MAX - 10, 100, 0, 0); }
static void tx_loop(struct env *e) { desc(e, TX_DESC, 0, TXBUF, 100, GW_VIRTQ_DESC_F_NEXT, 0); }
static void tx_bad_next(struct env *e) { desc(e, TX_DESC, 0, TXBUF, 100, GW_VIRTQ_DESC_F_NEXT, 500); }
static void tx_huge(struct env *e) { desc(e, TX_DESC, 0, TXBUF, HDR + GW_VIRTIO_NET_MAX_FRAME + 1, 0, 0); }
static void tx_mixed(struct env *e)
{
    desc(e, TX_DESC, 0, TXBUF, HDR, GW_VIRTQ_DESC_F_NEXT, 1);
    desc(e, TX_DESC, 1, TXBUF + 0x100, 60, GW_VIRTQ_DESC_F_WRITE, 0);
}

GW_TEST(hostile_transmit_chains_need_reset_and_send_nothing)
{
    hostile_tx(tx_writable, "writable descriptor");
    hostile_tx(tx_short, "shorter than the header");
    hostile_tx(tx_outside, "buffer outside RAM");
    hostile_tx(tx_wrap, "buffer address wraps");
    hostile_tx(tx_loop, "descriptor loop");
    hostile_tx(tx_bad_next, "next out of range");
    hostile_tx(tx_huge, "frame larger than the limit");
    hostile_tx(tx_mixed, "readable then writable");
}

GW_TEST(hostile_receive_chain_needs_reset_and_consumes_no_frame)
{
    struct env *e = env_ready(true);
    desc(e, RX_DESC, 0, RXBUF, 2048, 0, 0);            /* device-readable: not a receive buffer */
    offer(e, RX_AVAIL, &e->rx_avail, 0);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, GW_VIRTIO_NET_RXQ);
    uint8_t f[64];
    fill_frame(f, sizeof f, 6);
    CHECK_EQ(send(e->peer, f, sizeof f, 0), (ssize_t)sizeof f);
    for (int i = 0; i < 200 && !needs_reset(e); i++) { struct timespec ts = {0, 1000000}; nanosleep(&ts, NULL); }
    CHECK(needs_reset(e));
    CHECK_EQ(used_idx(e, RX_USED), 0);
    CHECK(e->ram[RXBUF] == 0);
    /* An avail entry naming a descriptor beyond the table, after a driver reset. */
    env_free(e);
    e = env_ready(true);
    uint16_t head = 1000;
    memcpy(e->ram + RX_AVAIL + 4, &head, 2);
    e->rx_avail = 1;
    __atomic_store_n((uint16_t *)(e->ram + RX_AVAIL + 2), e->rx_avail, __ATOMIC_RELEASE);
    wr(e, GW_VMMIO_QUEUE_NOTIFY, GW_VIRTIO_NET_RXQ);
    CHECK_EQ(send(e->peer, f, sizeof f, 0), (ssize_t)sizeof f);
    for (int i = 0; i < 200 && !needs_reset(e); i++) { struct timespec ts = {0, 1000000}; nanosleep(&ts, NULL); }
    CHECK(needs_reset(e));
    CHECK_EQ(used_idx(e, RX_USED), 0);
    env_free(e);
}

static Godwit__V1__DeviceState *save_packed(struct gw_device *d)
{
    Godwit__V1__DeviceState ds;
    godwit__v1__device_state__init(&ds);
    pthread_mutex_lock(&d->lock);
    CHECK_EQ(d->ops->quiesce(d), 0);
    CHECK_EQ(d->ops->save(d, &ds), 0);
    size_t n = godwit__v1__device_state__get_packed_size(&ds);
    uint8_t *buf = malloc(n);
    CHECK_EQ(godwit__v1__device_state__pack(&ds, buf), n);
    pthread_mutex_unlock(&d->lock);
    Godwit__V1__DeviceState *u = godwit__v1__device_state__unpack(NULL, n, buf);
    free(buf);
    return u;
}

static int load(struct gw_device *d, const Godwit__V1__DeviceState *s)
{
    pthread_mutex_lock(&d->lock);
    int r = d->ops->load(d, s);
    pthread_mutex_unlock(&d->lock);
    return r;
}

GW_TEST(save_load_keeps_queues_and_counters_and_announces_the_mac)
{
    struct env *a = env_ready(true);
    uint8_t f[80], got[200];
    fill_frame(f, sizeof f, 7);
    send_tx(a, 0, f, sizeof f);
    CHECK_EQ(peer_recv(a, got, sizeof got, 1000), (ssize_t)sizeof f);
    post_rx(a, 0, 2048);
    post_rx(a, 1, 2048);
    CHECK_EQ(send(a->peer, f, sizeof f, 0), (ssize_t)sizeof f);
    REQUIRE(wait_used(a, RX_USED, 1, 2000));
    __atomic_store_n(&a->running, false, __ATOMIC_SEQ_CST);
    Godwit__V1__DeviceState *s = save_packed(a->dev);
    REQUIRE(s != NULL);
    CHECK(s->kind_case == GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_NET);
    CHECK(s->virtio_net->tx_frames == 1 && s->virtio_net->rx_frames == 1);

    /* "Destination": same RAM contents, a fresh device with another MAC and its own backend. */
    struct env *b = env_new(false);
    memcpy(b->ram, a->ram, RAM_SIZE);
    CHECK_EQ(load(b->dev, s), 0);
    CHECK_EQ(rd(b, GW_VMMIO_STATUS), S_ALL);
    struct gw_virtio_net_stats st;
    gw_virtio_net_stats(b->dev, &st);
    CHECK(st.tx_frames == 1 && st.rx_frames == 1 && st.announces == 0);
    /* Runs: first the RARP announcement of the saved MAC, then frames into the buffer posted
     * before the save (descriptor 1). */
    __atomic_store_n(&b->running, true, __ATOMIC_SEQ_CST);
    ssize_t n = peer_recv(b, got, sizeof got, 2000);
    CHECK_EQ(n, 60);
    uint8_t rarp[60];
    gw_net_rarp_frame(MAC, rarp);
    CHECK(!memcmp(got, rarp, 60));
    CHECK(got[12] == 0x80 && got[13] == 0x35 && !memcmp(got + 6, MAC, 6));
    fill_frame(f, sizeof f, 8);
    CHECK_EQ(send(b->peer, f, sizeof f, 0), (ssize_t)sizeof f);
    CHECK(wait_used(b, RX_USED, 2, 2000));
    CHECK(!memcmp(b->ram + RXBUF + 0x2000 + HDR, f, sizeof f));
    /* The source, paused, delivered nothing more. */
    CHECK_EQ(used_idx(a, RX_USED), 1);

    /* Refused states leave the device as it was. */
    Godwit__V1__DeviceState bad = *s;
    Godwit__V1__VirtioNetState bn = *s->virtio_net;
    bad.virtio_net = &bn;
    bn.mac.len = 5;
    CHECK_EQ(load(b->dev, &bad), -EINVAL);
    uint8_t mcast[6] = {0x01, 0, 0x5e, 0, 0, 1};
    bn.mac.len = 6;
    bn.mac.data = mcast;
    CHECK_EQ(load(b->dev, &bad), -EINVAL);
    bn = *s->virtio_net;
    Godwit__V1__VirtioMmioState bm = *s->virtio_net->mmio;
    bn.mmio = &bm;
    Godwit__V1__VirtqueueState q0 = *bm.queues[0], *qs[2] = {&q0, bm.queues[1]};
    bm.queues = qs;
    q0.last_avail_idx = q0.used_idx + 1;
    CHECK_EQ(load(b->dev, &bad), -EINVAL);
    bad.kind_case = GODWIT__V1__DEVICE_STATE__KIND_VIRTIO_BLK;
    CHECK_EQ(load(b->dev, &bad), -EINVAL);
    CHECK_EQ(rd(b, GW_VMMIO_STATUS), S_ALL);
    godwit__v1__device_state__free_unpacked(s, NULL);
    env_free(a);
    env_free(b);
}

GW_TEST(mac_parsing_refuses_multicast_and_junk)
{
    uint8_t m[6];
    CHECK_EQ(gw_net_parse_mac("52:54:00:ab:cd:ef", m), 0);
    CHECK(m[0] == 0x52 && m[5] == 0xef);
    CHECK_EQ(gw_net_parse_mac("01:00:5e:00:00:01", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("52:54:00:ab:cd", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("52:54:00:ab:cd:ef:00", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("00:00:00:00:00:00", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("52:54:00:ab:cd:e", m), -EINVAL);
    /* What sscanf's %x took: blanks, a sign, other separators. Upper case is a MAC still. */
    CHECK_EQ(gw_net_parse_mac(" 2:54:00:ab:cd:ef", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("+2:54:00:ab:cd:ef", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("52-54-00-ab-cd-ef", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("52:54:00:ab:cd:eg", m), -EINVAL);
    CHECK_EQ(gw_net_parse_mac("52:54:00:AB:CD:EF", m), 0);
    CHECK(m[3] == 0xab && m[5] == 0xef);
}

GW_TEST(net_spec_parsing)
{
    struct gw_net_spec ns;
    char err[160], mac[18];
    CHECK_EQ(gw_net_spec_parse("tap:gw0", "vm1", &ns, err, sizeof err), 0);
    CHECK(!strcmp(ns.tap, "gw0") && !ns.mac_given);
    uint8_t def[6];
    gw_net_default_mac("vm1", def);
    CHECK(!memcmp(ns.mac, def, 6) && def[0] == 0x52 && def[1] == 0x54 && def[2] == 0x00);
    gw_net_default_mac("vm2", def);
    CHECK(memcmp(ns.mac, def, 6) != 0);          /* the name decides the default */
    CHECK_EQ(gw_net_spec_parse("tap:gw0,mac=52:54:00:12:34:56", "vm1", &ns, err, sizeof err), 0);
    gw_net_format_mac(ns.mac, mac);
    CHECK(ns.mac_given && !strcmp(mac, "52:54:00:12:34:56"));
    CHECK_EQ(gw_net_spec_parse("tap:gw0,mac=03:54:00:12:34:56", "vm1", &ns, err, sizeof err), -EADDRNOTAVAIL);
    CHECK(strstr(err, "unicast") != NULL);
    const char *bad[] = {"bridge:br0", "tap:", "tap:0123456789abcdef", "tap:a/b", "tap:..", "tap:a b",
                         "tap:gw0,mtu=9000", "tap:gw0,", "tap:gw0;rm"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(gw_net_spec_parse(bad[i], "vm1", &ns, err, sizeof err), -EINVAL);
}
