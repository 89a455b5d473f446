/* Iterating the parts of guest RAM that hold data: SEEK_DATA/SEEK_HOLE on the memfd tell
 * which ranges were ever written; everything else is a hole that reads as zero and costs
 * nothing to skip. */
#ifndef GW_VM_MEM_DATA_H
#define GW_VM_MEM_DATA_H

#include <stdint.h>

struct gw_guest_mem;

/* Calls fn(off, len, ctx) for each data range in [0, m->size), in order; stops and returns
 * fn's value when it is non-zero. A wrapped buffer is one data range. Returns 0 or -errno. */
int gw_mem_for_each_data(const struct gw_guest_mem *m,
                         int (*fn)(uint64_t off, uint64_t len, void *ctx), void *ctx);

/* The same within [from, to) (clipped to m->size): what costs time is the data pages the
 * kernel steps over, so a caller that knows where data was can look only at the rest. */
int gw_mem_for_each_data_in(const struct gw_guest_mem *m, uint64_t from, uint64_t to,
                            int (*fn)(uint64_t off, uint64_t len, void *ctx), void *ctx);

#endif
