/* The host's migration port: one TCP port on which every incoming migration arrives.
 *
 * The source daemon first reserves the migration over the authenticated API
 * (GodwitPeer.PrepareIncoming: the VM is defined here as MIGRATING, nothing runs yet). Its
 * runner then connects here. Without consuming a byte (MSG_PEEK), this thread reads the
 * connection's first wire record, the source's HELLO, and finds the VM it announces; only
 * a connection for a reserved VM gets a destination runner, which inherits the socket as
 * its fd 3 (`godwit-vm incoming --fd 3`) and runs the handshake itself (HMAC over the cluster
 * secret), so the runner sees the stream from its first byte. Anything else (garbage, an
 * unknown or unreserved VM, a second stream, a peer silent for 5 s) is closed: a stranger
 * cannot make this host start a process.
 *
 * Sessions of several streams need a runner that takes several handed-over sockets; until
 * then they use a per-migration listener (migrate_in.c). */
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
#define PENDING_TIMEOUT_NS (5000ull * 1000 * 1000)

struct pending { int fd; uint64_t deadline_ns; };

struct gw_migport {
    struct gw_daemon *d;
    int listen_fd, wake_fd;
    pthread_t th;
    struct pending p[MAX_PENDING];
    unsigned n;
    uint8_t buf[GW_MIGPORT_HELLO_MAX];
};

/* Peeks at what fd has received so far (nothing is consumed: the runner reads it all). */
static int peek_hello(struct gw_migport *mp, int fd, char *name, size_t namelen)
{
    ssize_t n = recv(fd, mp->buf, sizeof mp->buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    return gw_migport_parse_hello(mp->buf, (size_t)n, name, namelen);
}

/* Hands fd to a new destination runner when name is reserved. Takes fd either way. */
static void dispatch(struct gw_migport *mp, int fd, const char *name)
{
    struct gw_daemon *d = mp->d;
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find(d, name);
    if (!rec || !rec->reserved_until_ns || rec->proc.pid) {
        gw_warn("migration port: a stream for VM '%s', which is not expected here: closed", name);
    } else {
        char err[256];
        if (gw_sup_spawn_incoming(d, rec, NULL, fd, err, sizeof err)) {
            gw_error("vm=%s: cannot start the destination runner: %s", name, err);
            gw_sup_drop_incoming(d, rec);
        } else {
            gw_info("vm=%s: migration stream arrived on the migration port; runner %d takes it", name, rec->proc.pid);
            gw_vm_persist(d, rec);
        }
    }
    pthread_mutex_unlock(&d->lock);
    close(fd);   /* the runner has its own copy */
}

static void drop(struct gw_migport *mp, unsigned i)
{
    close(mp->p[i].fd);
    mp->p[i] = mp->p[--mp->n];
}

static void *migport_main(void *arg)
{
    struct gw_migport *mp = arg;
    gw_log_set_tag("godwitd");
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
                char name[GW_VM_NAME_MAX + 1];
                int r = peek_hello(mp, mp->p[i].fd, name, sizeof name);
                if (r < 0) { gw_warn("migration port: a connection that is not a one-stream migration: closed"); drop(mp, i); continue; }
                if (r > 0) {
                    int fd = mp->p[i].fd;
                    mp->p[i] = mp->p[--mp->n];
                    dispatch(mp, fd, name);
                    continue;
                }
            }
            if (now > mp->p[i].deadline_ns) { gw_warn("migration port: a silent connection: closed"); drop(mp, i); }
        }
        if (pf[1].revents & POLLIN) {
            int fd = accept4(mp->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) mp->p[mp->n++] = (struct pending){.fd = fd, .deadline_ns = now + PENDING_TIMEOUT_NS};
        }
    }
    while (mp->n) drop(mp, 0);
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
