/* The virtio-mmio transport (virtio 1.x, section 4.2, register layout version 2): the
 * register file a guest driver sees, feature negotiation, the status state machine, queue
 * set-up and the interrupt line. A device (virtio_blk.c) embeds one gw_virtio_mmio, hands
 * it the device-specific parts through gw_virtio_mmio_ops and forwards its bus accesses to
 * gw_virtio_mmio_access. Legacy (version 1) register layouts are not offered.
 *
 * Not thread-safe by itself: the bus calls a device under the device's lock. */
#ifndef GW_VM_VIRTIO_MMIO_H
#define GW_VM_VIRTIO_MMIO_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/vm/device.h"
#include "engine/vm/virtqueue.h"

#define GW_VIRTIO_MMIO_MAGIC 0x74726976u     /* "virt" */
#define GW_VIRTIO_MMIO_VERSION 2u
#define GW_VIRTIO_MMIO_VENDOR 0x54495747u    /* "GWIT" */
#define GW_VIRTIO_MMIO_MAX_QUEUES 2u
#define GW_VIRTIO_MMIO_CONFIG 0x100u         /* device config space starts here */
#define GW_VIRTIO_MMIO_CONFIG_MAX 0xf00u     /* to the end of the 4 KiB window */

/* Register offsets. */
enum {
    GW_VMMIO_MAGIC = 0x000, GW_VMMIO_VERSION = 0x004, GW_VMMIO_DEVICE_ID = 0x008,
    GW_VMMIO_VENDOR_ID = 0x00c, GW_VMMIO_DEVICE_FEATURES = 0x010,
    GW_VMMIO_DEVICE_FEATURES_SEL = 0x014, GW_VMMIO_DRIVER_FEATURES = 0x020,
    GW_VMMIO_DRIVER_FEATURES_SEL = 0x024, GW_VMMIO_QUEUE_SEL = 0x030,
    GW_VMMIO_QUEUE_NUM_MAX = 0x034, GW_VMMIO_QUEUE_NUM = 0x038, GW_VMMIO_QUEUE_READY = 0x044,
    GW_VMMIO_QUEUE_NOTIFY = 0x050, GW_VMMIO_INTERRUPT_STATUS = 0x060,
    GW_VMMIO_INTERRUPT_ACK = 0x064, GW_VMMIO_STATUS = 0x070,
    GW_VMMIO_QUEUE_DESC_LOW = 0x080, GW_VMMIO_QUEUE_DESC_HIGH = 0x084,
    GW_VMMIO_QUEUE_DRIVER_LOW = 0x090, GW_VMMIO_QUEUE_DRIVER_HIGH = 0x094,
    GW_VMMIO_QUEUE_DEVICE_LOW = 0x0a0, GW_VMMIO_QUEUE_DEVICE_HIGH = 0x0a4,
    GW_VMMIO_CONFIG_GENERATION = 0x0fc,
};

/* Device status bits (2.1). */
#define GW_VIRTIO_S_ACKNOWLEDGE 1u
#define GW_VIRTIO_S_DRIVER 2u
#define GW_VIRTIO_S_DRIVER_OK 4u
#define GW_VIRTIO_S_FEATURES_OK 8u
#define GW_VIRTIO_S_NEEDS_RESET 64u
#define GW_VIRTIO_S_FAILED 128u

/* InterruptStatus bits. */
#define GW_VIRTIO_INT_USED 1u
#define GW_VIRTIO_INT_CONFIG 2u

/* Transport feature bits. */
#define GW_VIRTIO_F_INDIRECT_DESC (1ull << 28)
#define GW_VIRTIO_F_VERSION_1 (1ull << 32)

struct gw_virtio_mmio;

struct gw_virtio_mmio_ops {
    /* Reads data[0..len) from config space offset off; the transport has checked that
     * [off, off+len) lies inside config_size. Config space is read-only for the driver. */
    void (*config_read)(struct gw_virtio_mmio *t, uint32_t off, uint8_t *data, uint32_t len);
    /* The driver kicked queue q, which is ready, with the device live (DRIVER_OK, no
     * NEEDS_RESET). Returns 0 or a negative errno for a host fault (not a guest mistake). */
    int (*notify)(struct gw_virtio_mmio *t, unsigned q);
};

struct gw_virtio_mmio_config {
    const char *name;                 /* for logs; must outlive the transport */
    const struct gw_virtio_mmio_ops *ops;
    uint32_t device_id;
    uint64_t device_features;         /* VERSION_1 is required and added if missing */
    uint32_t config_size;             /* <= GW_VIRTIO_MMIO_CONFIG_MAX */
    unsigned nqueues;                 /* 1..GW_VIRTIO_MMIO_MAX_QUEUES */
    uint16_t queue_num_max;           /* 1..GW_VQ_NUM_MAX, a power of two */
    const struct gw_guest_mem *mem;   /* borrowed; must outlive the transport */
    struct gw_irq_sink irq;
    uint32_t gsi;
};

struct gw_virtio_mmio {
    struct gw_virtio_mmio_config cfg;
    struct gw_vq queues[GW_VIRTIO_MMIO_MAX_QUEUES];
    /* Driver-visible registers. */
    uint32_t device_features_sel, driver_features_sel;
    uint64_t driver_features;
    uint32_t queue_sel;
    uint32_t status;
    uint32_t interrupt_status;        /* the interrupt line is asserted iff this is != 0 */
    uint32_t config_generation;
    /* Guest mistakes and failed requests, for the device's counters. */
    uint64_t errors;
    /* Storage that save() hangs off the caller's message. */
    Godwit__V1__VirtqueueState qstate[GW_VIRTIO_MMIO_MAX_QUEUES];
    Godwit__V1__VirtqueueState *qstate_ptr[GW_VIRTIO_MMIO_MAX_QUEUES];
};

/* Initialises t in the reset state. Returns 0 or -EINVAL for a bad configuration. */
int gw_virtio_mmio_init(struct gw_virtio_mmio *t, const struct gw_virtio_mmio_config *cfg);

/* Handles a guest access at offset off (0 .. 0xfff) of the window. Registers take aligned
 * 32-bit accesses; other widths are ignored (reads return 0). Config space takes 1, 2, 4
 * or 8 bytes. Returns 0, or the negative errno of a host fault from notify or the irq sink.
 * Guest mistakes never fail the access: they set DEVICE_NEEDS_RESET instead. */
int gw_virtio_mmio_access(struct gw_virtio_mmio *t, uint64_t off, bool is_write,
                          uint8_t *data, uint32_t len);

/* True when the driver finished set-up (FEATURES_OK and DRIVER_OK) and no reset is needed. */
bool gw_virtio_mmio_live(const struct gw_virtio_mmio *t);

/* Sets bits in InterruptStatus and asserts the line. Returns 0 or the sink's -errno. */
int gw_virtio_mmio_interrupt(struct gw_virtio_mmio *t, uint32_t bits);

/* Reports a guest mistake: logs one line "<name>: <what>; device needs reset", counts it,
 * sets DEVICE_NEEDS_RESET and, once the driver is running, raises a config interrupt so
 * it notices. Returns 0 or the sink's -errno. */
int gw_virtio_mmio_fail(struct gw_virtio_mmio *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Sets where every queue reports the guest memory the device writes (see virtqueue.h);
 * a sink with mark NULL stops reporting. Call under the device lock. */
void gw_virtio_mmio_set_write_sink(struct gw_virtio_mmio *t, struct gw_guest_write_sink sink);

/* Fills out (initialised here) with the transport state; the queue messages hung off it
 * live in t until the next save. */
void gw_virtio_mmio_save(struct gw_virtio_mmio *t, Godwit__V1__VirtioMmioState *out);

/* Checks in against this transport (queue count and sizes, known status and feature bits,
 * rings inside guest RAM) and applies it all or nothing, then sets the interrupt line to
 * match InterruptStatus. Does not read guest memory. Returns 0, -EINVAL with a log line for
 * state that does not fit, or the sink's -errno. */
int gw_virtio_mmio_load(struct gw_virtio_mmio *t, const Godwit__V1__VirtioMmioState *in);

#endif
