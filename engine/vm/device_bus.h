/* The VM's device bus: which device answers which port or MMIO range. Lookups happen on
 * every I/O exit, so the table is small and fixed after the VM is built. */
#ifndef GW_VM_DEVICE_BUS_H
#define GW_VM_DEVICE_BUS_H

#include "engine/vm/device.h"

#define GW_BUS_MAX_DEVICES 16

struct gw_device_bus {
    unsigned ndevices;
    struct gw_device *devices[GW_BUS_MAX_DEVICES]; /* owned: destroyed by gw_bus_destroy */
    uint64_t unclaimed_accesses;                   /* accesses no device claimed */
};

/* Adds d (taking ownership). -EEXIST when its range overlaps another device's or its name is
 * taken, -ENOSPC when the bus is full; on error d is destroyed. */
int gw_bus_add(struct gw_device_bus *bus, struct gw_device *d);

/* Routes one access. Unclaimed reads return all-ones and writes are dropped (as on a real
 * bus); only a device's own failure is returned as an error. */
int gw_bus_access(struct gw_device_bus *bus, enum gw_dev_space space, uint64_t addr,
                  bool is_write, uint8_t *data, uint32_t len);

struct gw_device *gw_bus_find(struct gw_device_bus *bus, const char *name);
void gw_bus_destroy(struct gw_device_bus *bus);

/* Initialises the common part of a device (the lock). */
void gw_device_init(struct gw_device *d, const struct gw_device_ops *ops, const char *name,
                    enum gw_dev_space space, uint64_t base, uint64_t size);

#endif
