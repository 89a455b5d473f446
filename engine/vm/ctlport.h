/* The control port: how our guest workloads tell the host about progress and failure
 * (booted, ready, verify error, fatal). Counters themselves live in the guest's status page;
 * the port only signals events, so a busy guest costs no exits. */
#ifndef GW_VM_CTLPORT_H
#define GW_VM_CTLPORT_H

#include "engine/vm/device.h"

/* Called (on a vCPU thread, under the device lock) for every event the guest writes. */
typedef void (*gw_ctlport_event_fn)(void *ctx, uint32_t event, uint32_t arg);

int gw_ctlport_create(uint16_t base, gw_ctlport_event_fn fn, void *ctx, struct gw_device **out);

#endif
