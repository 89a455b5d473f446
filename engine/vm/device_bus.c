/* Device bus: range lookup and per-device serialisation (see device_bus.h). */
#include "engine/vm/device_bus.h"

#include <errno.h>
#include <string.h>

#include "engine/common/log.h"

void gw_device_init(struct gw_device *d, const struct gw_device_ops *ops, const char *name,
                    enum gw_dev_space space, uint64_t base, uint64_t size)
{
    d->ops = ops;
    d->name = name;
    d->space = space;
    d->base = base;
    d->size = size;
    pthread_mutex_init(&d->lock, NULL);
}

int gw_bus_add(struct gw_device_bus *bus, struct gw_device *d)
{
    int err = 0;
    if (bus->ndevices == GW_BUS_MAX_DEVICES) err = -ENOSPC;
    for (unsigned i = 0; !err && i < bus->ndevices; i++) {
        struct gw_device *o = bus->devices[i];
        if (!strcmp(o->name, d->name)) err = -EEXIST;
        if (o->space == d->space && d->base < o->base + o->size && o->base < d->base + d->size)
            err = -EEXIST;
    }
    if (err) {
        gw_error("device %s: cannot add to bus: %s", d->name, strerror(-err));
        pthread_mutex_destroy(&d->lock);
        d->ops->destroy(d);
        return err;
    }
    bus->devices[bus->ndevices++] = d;
    return 0;
}

int gw_bus_access(struct gw_device_bus *bus, enum gw_dev_space space, uint64_t addr,
                  bool is_write, uint8_t *data, uint32_t len)
{
    for (unsigned i = 0; i < bus->ndevices; i++) {
        struct gw_device *d = bus->devices[i];
        if (d->space != space || addr < d->base || addr - d->base >= d->size) continue;
        pthread_mutex_lock(&d->lock);
        int r = d->ops->access(d, addr - d->base, is_write, data, len);
        pthread_mutex_unlock(&d->lock);
        return r;
    }
    if (bus->unclaimed_accesses++ < 8)
        gw_debug("unclaimed %s %s at 0x%llx len %u", space == GW_DEV_PIO ? "pio" : "mmio",
                 is_write ? "write" : "read", (unsigned long long)addr, len);
    if (!is_write) memset(data, 0xff, len);
    return 0;
}

struct gw_device *gw_bus_find(struct gw_device_bus *bus, const char *name)
{
    for (unsigned i = 0; i < bus->ndevices; i++)
        if (!strcmp(bus->devices[i]->name, name)) return bus->devices[i];
    return NULL;
}

void gw_bus_destroy(struct gw_device_bus *bus)
{
    for (unsigned i = 0; i < bus->ndevices; i++) {
        struct gw_device *d = bus->devices[i];
        pthread_mutex_destroy(&d->lock);
        d->ops->destroy(d);
    }
    memset(bus, 0, sizeof *bus);
}
