/* Control port device (see ctlport.h): base+4 latches an argument, base+0 fires an event. */
#include "engine/vm/ctlport.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/vm/device_bus.h"

struct ctlport {
    struct gw_device dev;
    gw_ctlport_event_fn fn;
    void *ctx;
    uint32_t arg;
    uint64_t last_event;
    uint64_t events;
    Godwit__V1__CtlPortState saved;
};

static int ctl_access(struct gw_device *d, uint64_t off, bool is_write, uint8_t *data, uint32_t len)
{
    struct ctlport *c = (struct ctlport *)d;
    if (!is_write) { memset(data, 0, len); return 0; }
    uint32_t v = 0;
    memcpy(&v, data, len < 4 ? len : 4);
    if (off == 4) { c->arg = v; return 0; }
    if (off != 0) return 0;
    c->last_event = v;
    c->events++;
    if (c->fn) c->fn(c->ctx, v, c->arg);
    c->arg = 0;
    return 0;
}

static int ctl_save(struct gw_device *d, Godwit__V1__DeviceState *out)
{
    struct ctlport *c = (struct ctlport *)d;
    godwit__v1__ctl_port_state__init(&c->saved);
    c->saved.last_event = c->last_event;
    c->saved.events = c->events;
    out->kind_case = GODWIT__V1__DEVICE_STATE__KIND_CTLPORT;
    out->ctlport = &c->saved;
    return 0;
}

static int ctl_load(struct gw_device *d, const Godwit__V1__DeviceState *in)
{
    struct ctlport *c = (struct ctlport *)d;
    if (in->kind_case != GODWIT__V1__DEVICE_STATE__KIND_CTLPORT || !in->ctlport) return -EINVAL;
    c->last_event = in->ctlport->last_event;
    c->events = in->ctlport->events;
    return 0;
}

static void ctl_destroy(struct gw_device *d) { free(d); }

static const struct gw_device_ops ctl_ops = {
    .access = ctl_access, .save = ctl_save, .load = ctl_load, .destroy = ctl_destroy,
};

int gw_ctlport_create(uint16_t base, gw_ctlport_event_fn fn, void *ctx, struct gw_device **out)
{
    struct ctlport *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    gw_device_init(&c->dev, &ctl_ops, "ctl0", GW_DEV_PIO, base, 8);
    c->fn = fn;
    c->ctx = ctx;
    *out = &c->dev;
    return 0;
}
