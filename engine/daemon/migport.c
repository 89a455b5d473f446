/* The host's migration port: one TCP port on which every incoming migration arrives.
 *
 * The source daemon first reserves the migration over the peers' API
 * (GodwitPeer.PrepareIncoming: the VM is defined here as MIGRATING, nothing runs yet) and gets
 * a one-time random session token. Its runner then opens the session's N streams here; each
 * starts with a plaintext preamble (engine/transport/tls.h: the token, stream index and count,
 * whether TLS follows) sent before anything waits for an answer. Without consuming a byte
 * (MSG_PEEK), this thread reads each connection's preamble, finds the VM reserved under its
 * token (the token is the only way to name a VM here: nothing on the wire is trusted for
 * that) and groups the connections by session. Once all N streams of a session are here, one
 * destination runner is started with them as its fds 3, 4, ... in stream order (`godwit-vm
 * incoming --fd 3 ... --name VM`); it runs TLS and the migration handshake itself, and checks
 * that the token inside the authenticated HELLO is the preamble's.
 *
 * Strangers cannot block a migration: the port never stops accepting. A connection has
 * PENDING_TIMEOUT_NS to send its preamble (a real source sends it at once); at most
 * MAX_PER_ADDR connections per peer address and MAX_PENDING in all wait for theirs, and a
 * new connection over either bound evicts the oldest waiting one (of that address first),
 * so 200 silent connections from one host cost a real source nothing but a few
 * microseconds. Sessions are created only for a token that names a reserved VM (at most
 * max_incoming of them exist), so a session slot is always there for a real migration.
 * Garbage, an unknown token, a stream that does not fit its session, and whatever is still
 * incomplete after SESSION_TIMEOUT_NS are closed: a stranger cannot make this host start a
 * process. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
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
#include "engine/daemon/resume_route.h"

#define MAX_PENDING 64
#define MAX_PER_ADDR 8
#define MAX_SESSIONS 8
#define PENDING_TIMEOUT_NS (2000ull * 1000 * 1000)   /* to send the preamble */
#define SESSION_TIMEOUT_NS (5000ull * 1000 * 1000)   /* for all streams, from the first */

struct pending {
    int fd;
    uint64_t since_ns;
    struct sockaddr_storage addr;   /* the peer's address, port zeroed */
};

/* A session whose streams are arriving. */
struct session {
    uint8_t token[GW_SEC_TOKEN_SIZE];
    char name[GW_VM_NAME_MAX + 1];
    unsigned nstreams, got;
    int fds[GW_MIGPORT_MAX_STREAMS];                           /* by stream index; -1 = not yet */
    uint64_t deadline_ns;
    bool resume;   /* a post-copy source reconnecting to the runner that holds its VM */
};

struct gw_migport {
    struct gw_daemon *d;
    int listen_fd, wake_fd;
    pthread_t th;
    struct pending p[MAX_PENDING];
    unsigned n;
    struct session s[MAX_SESSIONS];
    unsigned ns;
    uint64_t evicted;
    uint8_t buf[GW_MIGPORT_HELLO_MAX];
};

/* Peeks at what fd has received so far (nothing is consumed: the runner reads it all). When
 * that is not a whole preamble yet, fd reads as readable again only once more bytes came
 * (SO_RCVLOWAT, which TCP's poll honours): a peek consumes nothing, so a stranger's first
 * four bytes would otherwise wake this thread at once, every time, until its timeout. */
static int peek_hello(struct gw_migport *mp, int fd, struct gw_migport_hello *h)
{
    ssize_t n = recv(fd, mp->buf, sizeof mp->buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    int r = gw_migport_parse_hello(mp->buf, (size_t)n, h);
    if (r == 0) {
        int lowat = (int)n + 1;
        setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
    }
    return r;
}

/* The VM reserved under token, copied into name (""), under the lock. */
static bool reserved(struct gw_daemon *d, const uint8_t *token, char *name, size_t len)
{
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find_reserved(d, token);
    if (rec) snprintf(name, len, "%s", rec->name);
    pthread_mutex_unlock(&d->lock);
    return rec != NULL;
}

/* The running VM whose post-copy source may reconnect with token, copied into name. */
static bool resumable(struct gw_daemon *d, const uint8_t *token, char *name, size_t len)
{
    pthread_mutex_lock(&d->lock);
    struct gw_vm_rec *rec = gw_vm_find_resumable(d, token);
    if (rec) snprintf(name, len, "%s", rec->name);
    pthread_mutex_unlock(&d->lock);
    return rec != NULL;
}

/* Closes every stream of session i and forgets it. */
static void drop_session(struct gw_migport *mp, unsigned i)
{
    struct session *s = &mp->s[i];
    for (unsigned k = 0; k < s->nstreams; k++) if (s->fds[k] >= 0) close(s->fds[k]);
    mp->s[i] = mp->s[--mp->ns];
}

/* All streams of session i are here: hands them to a new destination runner when its VM is
 * still reserved under the session's token, in stream order. Closes our copies and forgets
 * the session either way. */
static void dispatch(struct gw_migport *mp, unsigned i)
{
    struct gw_daemon *d = mp->d;
    struct session *s = &mp->s[i];
    pthread_mutex_lock(&d->lock);
    if (s->resume) {
        /* The runner checks the source's resume proof itself: the token only routes. */
        struct gw_vm_rec *rr = gw_vm_find_resumable(d, s->token);
        char path[GW_RESUME_SOCK_MAX];
        int r = rr && !strcmp(rr->name, s->name) ? gw_resume_route_path(d, rr->name, path) : -ESRCH;
        pthread_mutex_unlock(&d->lock);
        if (!r) r = gw_resume_route_hand(path, s->fds, s->nstreams);
        if (r) gw_warn("migration port: a reconnecting post-copy source for VM '%s' could not be handed over: %s",
                       s->name, strerror(-r));
        else gw_info("vm=%s: a post-copy source reconnects (%u streams handed to its runner)", s->name, s->nstreams);
        drop_session(mp, i);
        return;
    }
    struct gw_vm_rec *rec = gw_vm_find_reserved(d, s->token);
    if (!rec || strcmp(rec->name, s->name)) {
        gw_warn("migration port: a session for VM '%s', which is no longer expected here: closed", s->name);
    } else {
        char err[256];
        /* One-time: whatever comes with this token from now on is a stranger, except a
         * post-copy source reconnecting to this runner (resume_token), which must then prove
         * it holds this migration's key to the runner (postcopy/pc_resume.h). */
        memcpy(rec->resume_token, rec->session_token, sizeof rec->resume_token);
        memset(rec->session_token, 0, sizeof rec->session_token);
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

/* fd sent preamble h: files it under its session, and dispatches the session once complete.
 * Takes fd. */
static void on_hello(struct gw_migport *mp, int fd, const struct gw_migport_hello *h, uint64_t now)
{
    unsigned i = 0;
    while (i < mp->ns && memcmp(mp->s[i].token, h->token, sizeof h->token)) i++;
    if (i == mp->ns) {
        char name[GW_VM_NAME_MAX + 1];
        bool resume = false;
        if (!reserved(mp->d, h->token, name, sizeof name) && !(resume = resumable(mp->d, h->token, name, sizeof name))) {
            gw_warn("migration port: a stream without a valid session token: closed");
            close(fd);
            return;
        }
        if (h->tls != (mp->d->cfg.migration_tls != 0)) {
            gw_warn("migration port: a stream for VM '%s' %s TLS, but migration_tls is %s here: closed", name,
                    h->tls ? "with" : "without", mp->d->cfg.migration_tls ? "on" : "off");
            close(fd);
            return;
        }
        if (mp->ns == MAX_SESSIONS) {   /* more than max_incoming reserved: cannot happen */
            gw_warn("migration port: %u sessions already wait for their streams: a new one closed", MAX_SESSIONS);
            close(fd);
            return;
        }
        struct session *s = &mp->s[mp->ns++];
        *s = (struct session){.nstreams = h->nstreams, .deadline_ns = now + SESSION_TIMEOUT_NS, .resume = resume};
        memcpy(s->token, h->token, sizeof s->token);
        snprintf(s->name, sizeof s->name, "%s", name);
        for (unsigned k = 0; k < GW_MIGPORT_MAX_STREAMS; k++) s->fds[k] = -1;
    }
    struct session *s = &mp->s[i];
    if (h->nstreams != s->nstreams || s->fds[h->stream_index] >= 0 || h->tls != (mp->d->cfg.migration_tls != 0)) {
        gw_warn("migration port: stream %u of %u does not fit its session for VM '%s' (%u streams): session closed",
                h->stream_index, h->nstreams, s->name, s->nstreams);
        close(fd);
        drop_session(mp, i);
        return;
    }
    s->fds[h->stream_index] = fd;
    s->got++;
    if (s->got == s->nstreams) dispatch(mp, i);
}

static void drop(struct gw_migport *mp, unsigned i)
{
    close(mp->p[i].fd);
    mp->p[i] = mp->p[--mp->n];
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return a->ss_family == b->ss_family && !memcmp(a, b, sizeof *a);
}

/* Accepts every connection waiting in the backlog, making room by evicting the oldest
 * waiting connection of the same address (over MAX_PER_ADDR), or the oldest of all. */
static void accept_all(struct gw_migport *mp, uint64_t now)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        memset(&ss, 0, sizeof ss);
        int fd = accept4(mp->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) return;
        if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = 0;
        else if (ss.ss_family == AF_INET6) ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
        unsigned same = 0, oldest_same = 0, oldest = 0;
        for (unsigned i = 0; i < mp->n; i++) {
            if (mp->p[i].since_ns < mp->p[oldest].since_ns) oldest = i;
            if (same_addr(&mp->p[i].addr, &ss) && (!same++ || mp->p[i].since_ns < mp->p[oldest_same].since_ns))
                oldest_same = i;
        }
        if (same >= MAX_PER_ADDR || mp->n == MAX_PENDING) {
            if (!mp->evicted++ || mp->evicted % 1000 == 0)
                gw_warn("migration port: too many connections wait for their preamble: the oldest closed (%llu so far)",
                        (unsigned long long)mp->evicted);
            drop(mp, same >= MAX_PER_ADDR ? oldest_same : oldest);
        }
        mp->p[mp->n++] = (struct pending){.fd = fd, .since_ns = now, .addr = ss};
    }
}

static void *migport_main(void *arg)
{
    struct gw_migport *mp = arg;
    for (;;) {
        struct pollfd pf[MAX_PENDING + 2];
        pf[0] = (struct pollfd){.fd = mp->wake_fd, .events = POLLIN};
        pf[1] = (struct pollfd){.fd = mp->listen_fd, .events = POLLIN};
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
                    /* Blocking again, and readable from one byte on, for the runner that
                     * inherits it. */
                    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                    int one = 1;
                    setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
                    on_hello(mp, fd, &h, now);
                    continue;
                }
            }
            if (now - mp->p[i].since_ns > PENDING_TIMEOUT_NS) { gw_debug("migration port: a silent connection: closed"); drop(mp, i); }
        }
        for (unsigned i = mp->ns; i-- > 0;) {
            struct session *s = &mp->s[i];
            if (now <= s->deadline_ns) continue;
            gw_warn("migration port: only %u of the %u streams of a session for VM %s arrived within 5 s: closed",
                    s->got, s->nstreams, s->name);
            drop_session(mp, i);
        }
        if (pf[1].revents & POLLIN) accept_all(mp, now);
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
    /* Non-blocking: accept_all drains the backlog until it is empty. */
    if (mp->listen_fd >= 0) fcntl(mp->listen_fd, F_SETFL, fcntl(mp->listen_fd, F_GETFL) | O_NONBLOCK);
    if (mp->listen_fd < 0 || bind(mp->listen_fd, ai->ai_addr, ai->ai_addrlen) || listen(mp->listen_fd, 512)) {
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
