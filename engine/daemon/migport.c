/* The host's migration port: one TCP port on which every incoming migration arrives.
 *
 * The source daemon first reserves the migration over the authenticated API
 * (GodwitPeer.PrepareIncoming: the VM is defined here as MIGRATING, nothing runs yet). Its
 * runner then opens the session's N streams here and says HELLO on each before it waits for
 * any answer. Without consuming a byte (MSG_PEEK), this thread reads each connection's first
 * wire record, the source's HELLO (session id, stream index, nstreams; stream 0 also names
 * the VM), and groups the connections by session. Once all N streams of a session whose VM
 * is reserved are here, one destination runner is started with them as its fds 3, 4, ... in
 * stream order (`godwit-vm incoming --fd 3 --fd 4 ...`); it runs the handshakes itself (HMAC
 * over the cluster secret), so it sees every stream from its first byte.
 *
 * Everything a stranger can reach is bounded: at most MAX_PENDING connections not yet
 * identified and MAX_SESSIONS sessions gathering streams, each for at most 5 s; at most
 * GW_MIGPORT_MAX_STREAMS streams per session. Garbage, a session for a VM not reserved here,
 * a stream that does not fit its session (a different count, a second copy), and whatever
 * is still incomplete after 5 s are closed: a stranger cannot make this host start a
 * process. */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/codec/wire.h"
#include "engine/common/log.h"
#include "engine/common/util.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/migport.h"

#define MAX_PENDING 32
#define MAX_SESSIONS 4
#define PENDING_TIMEOUT_NS (5000ull * 1000 * 1000)   /* to say HELLO */
#define SESSION_TIMEOUT_NS (5000ull * 1000 * 1000)   /* for all streams, from the first */

struct pending { int fd; uint64_t deadline_ns; };

/* A session whose streams are arriving. */
struct session {
    uint8_t id[GW_WIRE_SESSION_ID_SIZE];
    char name[sizeof ((struct gw_migport_hello *)0)->name];   /* "" until stream 0 came */
    unsigned nstreams, got;
    int fds[GW_MIGPORT_MAX_STREAMS];                           /* by stream index; -1 = not yet */
    uint64_t deadline_ns;
};

struct gw_migport {
    struct gw_daemon *d;
    int listen_fd, wake_fd;
    pthread_t th;
    struct pending p[MAX_PENDING];
    unsigned n;
    struct session s[MAX_SESSIONS];
    unsigned ns;
    uint8_t buf[GW_MIGPORT_HELLO_MAX];
};

/* Peeks at what fd has received so far (nothing is consumed: the runner reads it all). */
static int peek_hello(struct gw_migport *mp, int fd, struct gw_migport_hello *h)
{
    ssize_t n = recv(fd, mp->buf, sizeof mp->buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    return gw_migport_parse_hello(mp->buf, (size_t)n, h);
}

/* Whether a migration of VM name is reserved here and waits for its streams. */
static bool reserved(struct gw_daemon *d, const char *name)
{
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, name);
    bool ok = rec && rec->reserved_until_ns && !rec->proc.pid;
    pthread_mutex_unlock(&d->lock);
    return ok;
}

/* Closes every stream of session i and forgets it. */
static void drop_session(struct gw_migport *mp, unsigned i)
{
    struct session *s = &mp->s[i];
    for (unsigned k = 0; k < s->nstreams; k++) if (s->fds[k] >= 0) close(s->fds[k]);
    mp->s[i] = mp->s[--mp->ns];
}

/* All streams of session i are here: hands them to a new destination runner when its VM is
 * reserved, in stream order. Closes our copies and forgets the session either way. */
static void dispatch(struct gw_migport *mp, unsigned i)
{
    struct gw_daemon *d = mp->d;
    struct session *s = &mp->s[i];
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, s->name);
    if (!rec || !rec->reserved_until_ns || rec->proc.pid) {
        gw_warn("migration port: a session for VM '%s', which is not expected here: closed", s->name);
    } else {
        char err[256];
        if (gw_sup_spawn_incoming(d, rec, NULL, s->fds, s->nstreams, err, sizeof err)) {
            gw_error("vm=%s: cannot start the destination runner: %s", s->name, err);
            gw_sup_drop_incoming(d, rec);
        } else {
            gw_info("vm=%s: %u migration stream(s) arrived on the migration port; runner %d takes them", s->name,
                    s->nstreams, rec->proc.pid);
            gw_vm_persist(d, rec);
        }
    }
    pthread_mutex_unlock(&d->lock);
    drop_session(mp, i);   /* the runner has its own copies */
}

/* fd said HELLO h: files it under its session, and dispatches the session once complete.
 * Takes fd. */
static void on_hello(struct gw_migport *mp, int fd, const struct gw_migport_hello *h, uint64_t now)
{
    unsigned i = 0;
    while (i < mp->ns && memcmp(mp->s[i].id, h->session_id, sizeof h->session_id)) i++;
    if (i == mp->ns) {
        if (mp->ns == MAX_SESSIONS) {
            gw_warn("migration port: %u sessions already wait for their streams: a new one closed", MAX_SESSIONS);
            close(fd);
            return;
        }
        struct session *s = &mp->s[mp->ns++];
        *s = (struct session){.nstreams = h->nstreams, .deadline_ns = now + SESSION_TIMEOUT_NS};
        memcpy(s->id, h->session_id, sizeof s->id);
        for (unsigned k = 0; k < GW_MIGPORT_MAX_STREAMS; k++) s->fds[k] = -1;
    }
    struct session *s = &mp->s[i];
    if (h->nstreams != s->nstreams || s->fds[h->stream_index] >= 0) {
        gw_warn("migration port: stream %u of %u does not fit its session (%u streams%s): session closed",
                h->stream_index, h->nstreams, s->nstreams, h->nstreams == s->nstreams ? ", a second copy" : "");
        close(fd);
        drop_session(mp, i);
        return;
    }
    s->fds[h->stream_index] = fd;
    s->got++;
    if (h->stream_index == 0) {
        snprintf(s->name, sizeof s->name, "%s", h->name);
        /* Refused at once rather than after its other streams came. */
        if (!reserved(mp->d, s->name)) {
            gw_warn("migration port: a session for VM '%s', which is not expected here: closed", s->name);
            drop_session(mp, i);
            return;
        }
    }
    if (s->got == s->nstreams) dispatch(mp, i);
}

static void drop(struct gw_migport *mp, unsigned i)
{
    close(mp->p[i].fd);
    mp->p[i] = mp->p[--mp->n];
}

static void *migport_main(void *arg)
{
    struct gw_migport *mp = arg;
    for (;;) {
        struct pollfd pf[MAX_PENDING + 2];
        pf[0] = (struct pollfd){.fd = mp->wake_fd, .events = POLLIN};
        pf[1] = (struct pollfd){.fd = mp->listen_fd, .events = mp->n < MAX_PENDING ? POLLIN : 0};
        for (unsigned i = 0; i < mp->n; i++) pf[2 + i] = (struct pollfd){.fd = mp->p[i].fd, .events = POLLIN};
        unsigned np = mp->n;
        if (poll(pf, 2 + np, 200) < 0 && errno != EINTR) break;
        if (pf[0].revents) break;
        uint64_t now = gw_now_ns();
        /* Backwards, so that drop() (which moves the last entry) skips nothing unseen. */
        for (unsigned i = np; i-- > 0;) {
            if (pf[2 + i].revents) {
                struct gw_migport_hello h;
                int r = peek_hello(mp, mp->p[i].fd, &h);
                if (r < 0) { gw_warn("migration port: a connection that is not a migration stream: closed"); drop(mp, i); continue; }
                if (r > 0) {
                    int fd = mp->p[i].fd;
                    mp->p[i] = mp->p[--mp->n];
                    on_hello(mp, fd, &h, now);
                    continue;
                }
            }
            if (now > mp->p[i].deadline_ns) { gw_warn("migration port: a silent connection: closed"); drop(mp, i); }
        }
        for (unsigned i = mp->ns; i-- > 0;) {
            struct session *s = &mp->s[i];
            if (now <= s->deadline_ns) continue;
            gw_warn("migration port: only %u of the %u streams of a session%s%s arrived within 5 s: closed", s->got,
                    s->nstreams, s->name[0] ? " for VM " : "", s->name);
            drop_session(mp, i);
        }
        if (pf[1].revents & POLLIN) {
            int fd = accept4(mp->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) mp->p[mp->n++] = (struct pending){.fd = fd, .deadline_ns = now + PENDING_TIMEOUT_NS};
        }
    }
    while (mp->n) drop(mp, 0);
    while (mp->ns) drop_session(mp, 0);
    return NULL;
}

int gw_migport_start(struct gw_daemon *d, char *err, size_t errlen)
{
    if (!d->cfg.migration_port) return 0;
    struct gw_migport *mp = calloc(1, sizeof *mp);
    if (!mp) return -ENOMEM;
    mp->d = d;
    mp->listen_fd = mp->wake_fd = -1;
    char port[16];
    snprintf(port, sizeof port, "%u", d->cfg.migration_port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *ai = NULL;
    int r = getaddrinfo(d->cfg.migration_host, port, &hints, &ai);
    if (r) { snprintf(err, errlen, "migration port %s:%s: %s", d->cfg.migration_host, port, gai_strerror(r)); free(mp); return -EINVAL; }
    mp->listen_fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (mp->listen_fd >= 0) setsockopt(mp->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (mp->listen_fd < 0 || bind(mp->listen_fd, ai->ai_addr, ai->ai_addrlen) || listen(mp->listen_fd, 64)) {
        r = -errno;
        snprintf(err, errlen, "migration port %s:%s: %s", d->cfg.migration_host, port, strerror(errno));
        freeaddrinfo(ai);
        if (mp->listen_fd >= 0) close(mp->listen_fd);
        free(mp);
        return r;
    }
    freeaddrinfo(ai);
    mp->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (mp->wake_fd < 0 || (r = -pthread_create(&mp->th, NULL, migport_main, mp))) {
        if (mp->wake_fd >= 0) close(mp->wake_fd);
        close(mp->listen_fd);
        free(mp);
        snprintf(err, errlen, "migration port: cannot start its thread");
        return r ? r : -EMFILE;
    }
    d->migport = mp;
    gw_info("migration port on %s:%u", d->cfg.migration_host, d->cfg.migration_port);
    return 0;
}

void gw_migport_stop(struct gw_daemon *d)
{
    struct gw_migport *mp = d->migport;
    if (!mp) return;
    uint64_t one = 1;
    if (write(mp->wake_fd, &one, sizeof one) < 0) { /* the thread would still stop at close */ }
    pthread_join(mp->th, NULL);
    close(mp->wake_fd);
    close(mp->listen_fd);
    free(mp);
    d->migport = NULL;
}
