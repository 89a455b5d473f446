/* The route by which the migration port hands a reconnecting post-copy source to the
 * destination runner that holds its VM (docs/postcopy.md, "Recovery after a broken link").
 *
 * The route must outlive the daemon: runners survive a daemon restart, and a link may break
 * after one. So the daemon keeps nothing open per runner. At spawn it binds a listening unix
 * socket (SOCK_SEQPACKET) in the VM's directory, hands the listening fd to the runner
 * (`--resume-fd`) and closes its own copy: the runner owns the socket. Each hand-over is one
 * fresh connection carrying one message (the session's streams, SCM_RIGHTS), then closed.
 * The session token that routes to the runner is kept in the same directory (resume.token,
 * 0600), so a restarted daemon reads it back when it re-attaches the runner; the token only
 * routes (the runner checks the source's resume proof itself). The daemon owns both names in
 * its state directory: it makes them at spawn and removes them when the runner ends, or, at
 * re-attach, when it ended while the daemon was down. Nothing on the wire names them. */
#ifndef GW_DAEMON_RESUME_ROUTE_H
#define GW_DAEMON_RESUME_ROUTE_H

#include <stddef.h>

struct gw_daemon;
struct gw_vm_rec;

/* Unix socket paths are limited to 107 bytes (as the runner's control socket). */
#define GW_RESUME_SOCK_MAX 108

/* Makes rec's route before its runner starts: binds and listens on the socket, stores
 * rec->resume_token (set by the caller). Returns the listening fd (close-on-exec; the caller
 * passes it to the runner and closes it) or -errno with err filled; nothing is left behind
 * on error. Lock held (a few file system calls, no process spawn). */
int gw_resume_route_open(struct gw_daemon *d, struct gw_vm_rec *rec, char *err, size_t errlen);

/* The route is live: the runner took the socket. */
void gw_resume_route_taken(struct gw_vm_rec *rec);

/* After a daemon restart, rec's runner was adopted: takes its route back when the daemon
 * made one for it (the token file reads back whole and the socket is there). Lock held. */
void gw_resume_route_reattach(struct gw_daemon *d, struct gw_vm_rec *rec);

/* rec's runner is gone (or never started): the route's names are removed. Safe to repeat. */
void gw_resume_route_forget(struct gw_daemon *d, struct gw_vm_rec *rec);

/* The socket path of VM name's route into out[GW_RESUME_SOCK_MAX]; -ENAMETOOLONG. */
int gw_resume_route_path(const struct gw_daemon *d, const char *name, char *out);

/* Hands n stream fds (1..GW_MIGPORT_MAX_STREAMS) to the runner listening on path, in one
 * message on a fresh connection; never blocks. The fds stay the caller's. 0 or -errno
 * (-ECONNREFUSED: no runner listens there any more). */
int gw_resume_route_hand(const char *path, const int *fds, unsigned n);

#endif
