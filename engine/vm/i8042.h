/* The i8042 keyboard controller reduced to the one thing a Linux guest uses it for here:
 * the reset line. Writing 0xfe to the command port (0x64) pulses it; the VM then ends
 * cleanly, as a reboot=k (Linux's default) or a panic=-1 asks. Status reads say "empty, no
 * data" so that the kernel's waits end at once; there is no keyboard behind it. */
#ifndef GW_VM_I8042_H
#define GW_VM_I8042_H

#include "engine/vm/device.h"

#define GW_PORT_I8042 0x60u
#define GW_I8042_CMD_RESET 0xfeu

/* Called on a vCPU thread, under the device lock, when the guest pulses the reset line. */
typedef void (*gw_i8042_reset_fn)(void *ctx);

int gw_i8042_create(gw_i8042_reset_fn fn, void *ctx, struct gw_device **out);

#endif
