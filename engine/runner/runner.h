/* godwit-vm: one process per VM. It owns the VM, answers its control socket and reports
 * the guest's counters on exit. */
#ifndef GW_RUNNER_RUNNER_H
#define GW_RUNNER_RUNNER_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/vm/vm.h"
#include "godwit/v1/runner.pb-c.h"

struct gw_runner {
    struct gw_vm *vm;
    uint64_t started_ns;
    int listen_fd;            /* control socket, -1 when none */
    char control_path[108];
    bool stop;                /* leave the main loop */
    bool suspended;           /* saved with stop_after */
    bool finished;            /* the main loop ended; the VM is frozen for the summary */
    int exit_code;
    char status_err[256];     /* backing store for RunnerStatus.error */
};

/* Opens the control socket at path (replacing a stale one). */
int gw_runner_control_open(struct gw_runner *r, const char *path);
void gw_runner_control_close(struct gw_runner *r);
/* Serves one connection that is ready on listen_fd: one request, one reply. */
void gw_runner_control_serve(struct gw_runner *r);

/* Fills status (strings point into static or VM storage). */
void gw_runner_fill_status(struct gw_runner *r, Godwit__V1__RunnerStatus *st, Godwit__V1__GuestCounters *c);

/* Prints the exit summary: human-readable, or one JSON line. */
void gw_runner_print_summary(struct gw_runner *r, bool json, const char *extra_json);

/* Runs the main loop until the guest ends, a signal or a control request stops it, or
 * seconds (0 = no limit) pass. */
int gw_runner_loop(struct gw_runner *r, uint64_t seconds);

#endif
