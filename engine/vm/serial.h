/* COM1: a minimal 16550 UART, output only. The guest's console lines go to a file descriptor
 * (the VM's console log) one whole line at a time. */
#ifndef GW_VM_SERIAL_H
#define GW_VM_SERIAL_H

#include "engine/vm/device.h"

#define GW_SERIAL_LOG_MAX (16ull << 20)   /* a console log file starts over past this */

/* Creates the UART at port base; console_fd (not owned) receives the output, -1 drops it.
 * When console_fd is a regular file (opened O_APPEND) it is truncated, with a line saying so,
 * whenever the next line would take it past GW_SERIAL_LOG_MAX. */
int gw_serial_create(uint16_t base, int console_fd, struct gw_device **out);

#endif
