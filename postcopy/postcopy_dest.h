/* The destination side of a post-copy migration. The pre-copy destination
 * (precopy/precopy_dest.c) accepts the session and creates the empty VM; when the source's
 * HELLO asks for post-copy it hands both here (gw_incoming_params.postcopy).
 *
 * gw_postcopy_in_start: registers guest memory with userfaultfd and starts the page traffic
 * (pc_client.h), loads the VM state (whatever it touches faults in like any access), says
 * READY, waits for GO and starts the VM. Until GO any failure returns an error and the VM is
 * discarded (the source resumes it). After GO the VM runs here with its pages arriving in the
 * background; a thread waits for the last page and the source's digest, proves memory equal,
 * unregisters and says DONE.
 *
 * If the source or the link fails after GO, the VM is paused here (phase postcopy-paused):
 * it never runs on part of its memory. When the runner lets go of it, the missing pages are
 * poisoned, so that nothing reads them as zero. */
#ifndef GW_POSTCOPY_POSTCOPY_DEST_H
#define GW_POSTCOPY_POSTCOPY_DEST_H

#include <stdbool.h>
#include <stddef.h>

#include "precopy/migration_progress.h"

struct gw_session;
struct gw_vm;
struct gw_postcopy_in;

/* ses (taken, even on error) is an accepted post-copy session; vm is created, not started,
 * with fresh memory. Returns 0 with *out (the VM runs) or -errno with err filled (nothing
 * runs; the caller destroys the VM). */
int gw_postcopy_in_start(struct gw_session *ses, struct gw_vm *vm, int timeout_ms, struct gw_postcopy_in **out,
                         char *err, size_t errlen);
void gw_postcopy_in_progress(struct gw_postcopy_in *p, struct gw_mig_progress *out);
/* True once every page is in (completed) or post-copy stopped (postcopy-paused). */
bool gw_postcopy_in_finished(struct gw_postcopy_in *p);
/* Stops the threads and frees p; the VM stays the caller's. Safe on NULL. */
void gw_postcopy_in_free(struct gw_postcopy_in *p);

#endif
