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
 * If the source or the link fails after GO (a transport error, or no word for the link
 * timeout), post-copy pauses here (phase postcopy-paused; the runner holds the VM paused, and
 * a vCPU that touches a missing page blocks in any case): it never runs on part of its
 * memory, and nothing is dropped. Given a listener, a thread waits there for the source to
 * resume the migration (pc_resume.h), for as long as this runner lives: a verified resume
 * replaces the session, the source learns which pages are here, and requests that went
 * unanswered are asked again (phase postcopy-recover, then postcopy-active). When the runner
 * lets go of an incomplete VM, the missing pages are poisoned, so nothing reads them as zero. */
#ifndef GW_POSTCOPY_POSTCOPY_DEST_H
#define GW_POSTCOPY_POSTCOPY_DEST_H

#include <stdbool.h>
#include <stddef.h>

#include "precopy/migration_progress.h"

struct gw_session;
struct gw_vm;
struct gw_postcopy_in;

struct gw_listener;
struct gw_tls_ctx;

/* Where and how a reconnecting source is taken. */
struct gw_postcopy_in_resume {
    struct gw_listener *l;         /* taken (even on error); NULL: see fd_src */
    /* Or (a daemon's runner): a listening unix socket (SOCK_SEQPACKET), taken. The daemon's
     * migration port hands over the streams of a reconnecting source on a fresh connection
     * each time (SCM_RIGHTS, one message, from a process of our own uid), so a daemon
     * restarted since we started reaches us the same way. -1 with no listener: no recovery
     * here. */
    int fd_src;
    struct gw_tls_ctx *tls;        /* server context, taken (even on error); NULL = plaintext */
    const uint8_t *secret;         /* the cluster secret, copied */
    size_t secret_len;
    int link_timeout_ms;           /* no word from the source this long = a broken link; 0 = 2000 */
    int test_fault;                /* enum gw_mig_fault: set only by --test-fault (GODWIT_TEST_HOOKS) */
};

/* ses (taken, even on error) is an accepted post-copy session; vm is created, not started,
 * with fresh memory; rs may be NULL. Returns 0 with *out (the VM runs) or -errno with err
 * filled (nothing runs; the caller destroys the VM). */
int gw_postcopy_in_start(struct gw_session *ses, struct gw_vm *vm, int timeout_ms, const struct gw_postcopy_in_resume *rs,
                         struct gw_postcopy_in **out, char *err, size_t errlen);
void gw_postcopy_in_progress(struct gw_postcopy_in *p, struct gw_mig_progress *out);
/* True once every page is in (completed) or post-copy stopped (postcopy-paused). */
bool gw_postcopy_in_finished(struct gw_postcopy_in *p);
/* Stops the threads and frees p; the VM stays the caller's. Safe on NULL. */
void gw_postcopy_in_free(struct gw_postcopy_in *p);

#endif
