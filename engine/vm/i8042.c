/* i8042 reset line (see i8042.h). Ports 0x60 (data) and 0x64 (status/command); the device
 * claims 0x60-0x64 and answers 0x61-0x63 (the PC speaker gate lives at 0x61) with 0. */
#include "engine/vm/i8042.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/vm/device_bus.h"

struct i8042 {
    struct gw_device dev;
    gw_i8042_reset_fn fn;
    void *ctx;
};

static int i8042_access(struct gw_device *d, uint64_t off, bool is_write, uint8_t *data, uint32_t len)
{
    struct i8042 *k = (struct i8042 *)d;
    if (!is_write) { memset(data, 0, len); return 0; }
    if (off == 4 && len >= 1 && data[0] == GW_I8042_CMD_RESET && k->fn) k->fn(k->ctx);
    return 0;
}

/* Nothing to keep: the controller has no state a guest could observe. */
static int i8042_save(struct gw_device *d, Godwit__V1__DeviceState *out)
{
    (void)d;
    out->kind_case = GODWIT__V1__DEVICE_STATE__KIND__NOT_SET;
    return 0;
}

static int i8042_load(struct gw_device *d, const Godwit__V1__DeviceState *in)
{
    (void)d;
    return in->kind_case == GODWIT__V1__DEVICE_STATE__KIND__NOT_SET ? 0 : -EINVAL;
}

static void i8042_destroy(struct gw_device *d) { free(d); }

static const struct gw_device_ops i8042_ops = {
    .access = i8042_access, .save = i8042_save, .load = i8042_load, .destroy = i8042_destroy,
};

int gw_i8042_create(gw_i8042_reset_fn fn, void *ctx, struct gw_device **out)
{
    struct i8042 *k = calloc(1, sizeof *k);
    if (!k) return -ENOMEM;
    gw_device_init(&k->dev, &i8042_ops, "i8042", GW_DEV_PIO, GW_PORT_I8042, 5);
    k->fn = fn;
    k->ctx = ctx;
    *out = &k->dev;
    return 0;
}
