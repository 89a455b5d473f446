/* virtio-net (virtio 1.x, section 5.1) over virtio-mmio, backed by a tap device.
 *
 * Queue 0 receives, queue 1 transmits; no offloads, no mergeable buffers, so every packet
 * carries the 12-byte virtio_net_hdr (num_buffers included, as VERSION_1 requires) and
 * one frame fills one receive chain. Offered features: VERSION_1, INDIRECT_DESC, MAC,
 * STATUS (link always up).
 *
 * Transmit is served synchronously in the vCPU thread that writes QueueNotify. Receive is
 * served by the device's own thread, which reads a frame from the tap only when the guest
 * has posted a buffer, and only while the VM runs (gw_net_gate): a paused VM's memory and
 * rings are never written, so a save or the last round of a migration sees a quiet device.
 * Both paths hold the device lock, so saved state never has a chain in flight.
 *
 * Migration between two runners on one host: the tap is opened multi-queue when it allows
 * (ip tuntap add ... multi_queue), and a runner's queue is attached only while its VM runs,
 * so the kernel hands frames to the source until it pauses and to the destination once it
 * runs. A device whose state was loaded (restore, migration) announces the guest's MAC
 * with a RARP frame on the tap when it first runs, so switches learn the new port at once. */
#ifndef GW_VM_VIRTIO_NET_H
#define GW_VM_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/vm/device.h"
#include "engine/vm/net_spec.h"
#include "engine/vm/virtqueue.h"

#define GW_VIRTIO_ID_NET 1u
#define GW_VIRTIO_NET_QUEUE_NUM_MAX 256u
#define GW_VIRTIO_NET_HDR_BYTES 12u
#define GW_VIRTIO_NET_MAX_FRAME 65536u     /* largest frame taken from or given to the tap */
#define GW_VIRTIO_NET_RXQ 0u
#define GW_VIRTIO_NET_TXQ 1u

#define GW_VIRTIO_NET_F_MAC (1ull << 5)
#define GW_VIRTIO_NET_F_STATUS (1ull << 16)
#define GW_VIRTIO_NET_S_LINK_UP 1u

/* Tells the device whether the guest runs (frames may be delivered) or is paused, stopped
 * or not started (the device must not write guest memory). Called with the device lock
 * held; must not take it. */
struct gw_net_gate {
    bool (*running)(void *ctx);
    void *ctx;
};

/* Creates "net0" on backend: "tap:NAME" (the tap is opened, or created, by name; needs
 * CAP_NET_ADMIN to create). mac: 6 bytes, a unicast address. mem is borrowed. The device
 * answers at [mmio_base, +GW_VIRTIO_MMIO_SIZE), raises gsi through irq and starts its
 * receive thread. Returns 0 or -errno with one log line saying why. */
int gw_virtio_net_create(const char *backend, const uint8_t mac[6], const struct gw_guest_mem *mem,
                         struct gw_irq_sink irq, uint64_t mmio_base, uint32_t gsi,
                         struct gw_net_gate gate, struct gw_device **out);

/* The same on an already open frame descriptor (a tap, or a SOCK_SEQPACKET/SOCK_DGRAM
 * socket in tests: one read or write per frame). Takes ownership of fd. */
int gw_virtio_net_create_fd(int fd, const uint8_t mac[6], const struct gw_guest_mem *mem,
                            struct gw_irq_sink irq, uint64_t mmio_base, uint32_t gsi,
                            struct gw_net_gate gate, struct gw_device **out);

/* Makes the device report its writes into guest RAM to sink (see virtqueue.h). Call with
 * d->lock held. -EINVAL when d is not a virtio-net device. */
int gw_virtio_net_set_write_sink(struct gw_device *d, struct gw_guest_write_sink sink);

/* Counters, for tests and status. */
struct gw_virtio_net_stats {
    uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes, rx_dropped, tx_dropped, errors, announces;
};
int gw_virtio_net_stats(struct gw_device *d, struct gw_virtio_net_stats *out);

/* Writes the 60-byte RARP announcement of mac into frame (QEMU's announce_self format). */
void gw_net_rarp_frame(const uint8_t mac[6], uint8_t frame[60]);

#endif
