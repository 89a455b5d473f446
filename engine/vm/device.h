/* Devices plug into a VM through an ops table (kvmtool's habit): the VM's exit loop routes
 * port I/O and MMIO to the device that claims the address, and snapshots call each device's
 * save/load. Accesses arrive on vCPU threads; the bus serialises calls into one device with
 * the device's own mutex, so a device's ops never run concurrently with each other. */
#ifndef GW_VM_DEVICE_H
#define GW_VM_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "godwit/v1/state.pb-c.h"

struct gw_guest_mem;
struct gw_device;

/* How a device raises an interrupt: level 1 asserts, 0 deasserts the line (GSI). The VM
 * routes it to KVM_IRQ_LINE; unit tests pass a recorder. */
struct gw_irq_sink {
    int (*set_level)(void *ctx, uint32_t gsi, int level);
    void *ctx;
};

enum gw_dev_space { GW_DEV_PIO, GW_DEV_MMIO };

struct gw_device_ops {
    /* Handles an access of len (1, 2, 4 or 8) bytes at offset off from the device's base.
     * For reads the device fills data[0..len). Returns 0, or a negative errno for a fault
     * the VM should treat as fatal (a device bug, never a guest mistake: a guest mistake is
     * reported by the device, e.g. virtio's DEVICE_NEEDS_RESET, and returns 0). */
    int (*access)(struct gw_device *d, uint64_t off, bool is_write, uint8_t *data, uint32_t len);
    /* Finishes or cancels in-flight work so that save sees a quiet device. May be NULL. */
    int (*quiesce)(struct gw_device *d);
    /* Fills out (already initialised with device_state__init) with the device's state.
     * Memory hung off *out is owned by the device until the next save or destroy. */
    int (*save)(struct gw_device *d, Godwit__V1__DeviceState *out);
    /* Restores state; the message was produced by save (possibly by an older runner).
     * Returns -EINVAL for state that does not fit this device (wrong kind, bad sizes). */
    int (*load)(struct gw_device *d, const Godwit__V1__DeviceState *in);
    /* Releases everything the device owns, including d itself. */
    void (*destroy)(struct gw_device *d);
};

struct gw_device {
    const struct gw_device_ops *ops;
    const char *name;          /* unique within the VM: "serial0", "ctl0", "vda" */
    enum gw_dev_space space;
    uint64_t base;
    uint64_t size;
    pthread_mutex_t lock;      /* taken by the bus around every op */
};

#endif
