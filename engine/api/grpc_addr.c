/* Address parsing and socket setup shared by the gRPC server and client. Names are resolved
 * with getaddrinfo (numeric or /etc/hosts names; the API is not meant for DNS-heavy setups). */
#include "engine/api/grpc_addr.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Splits addr into host and port strings (host without brackets). */
static int split_host_port(const char *addr, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon;
    const char *h = addr;
    size_t hlen;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        h = addr + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -EINVAL;
        hlen = (size_t)(colon - addr);
    }
    size_t plen = strlen(colon + 1);
    if (hlen >= hcap || plen == 0 || plen >= pcap)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, plen + 1);
    for (size_t i = 0; i < plen; i++)
        if (port[i] < '0' || port[i] > '9')
            return -EINVAL;
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof sun->sun_path)
        return -EINVAL;
    memcpy(sun->sun_path, path, n + 1);
    return 0;
}

static int resolve(const char *addr, bool passive, struct addrinfo **res)
{
    char host[256], port[16];
    int rc = split_host_port(addr, host, sizeof host, port, sizeof port);
    if (rc < 0)
        return rc;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = passive ? AI_PASSIVE : 0 };
    int g = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
    if (g != 0)
        return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    return 0;
}

int gw_grpc_addr_listen(const char *addr, int backlog, int *port_out)
{
    int fd = -1, rc;
    struct addrinfo *res = NULL;
    *port_out = 0;
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sun;
        if ((rc = unix_addr(addr + 5, &sun)) < 0)
            return rc;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        unlink(sun.sun_path);  /* a socket file left by an earlier run */
        /* Owner only, set before listen(): until then nobody can connect, whatever the
         * umask made of the file. */
        if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || chmod(sun.sun_path, 0600) < 0 ||
            listen(fd, backlog) < 0)
            goto fail_errno;
        return fd;
    }
    if ((rc = resolve(addr, true, &res)) < 0)
        return rc;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail_errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0)
        goto fail_errno;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *port_out = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *port_out = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    freeaddrinfo(res);
    return fd;
fail_errno:
    rc = -errno;
    if (fd >= 0)
        close(fd);
    if (res)
        freeaddrinfo(res);
    return rc;
}

/* Non-blocking connect, waited for with poll so that a dead host costs timeout_ms only. */
static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return -errno;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int n;
    do {
        n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -ETIMEDOUT;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        return -errno;
    return err ? -err : 0;
}

int gw_grpc_addr_connect(const char *addr, int timeout_ms)
{
    int fd = -1, rc;
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un sun;
        if ((rc = unix_addr(addr + 5, &sun)) < 0)
            return rc;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        rc = connect_wait(fd, (struct sockaddr *)&sun, sizeof sun, timeout_ms);
        if (rc < 0) {
            close(fd);
            return rc;
        }
        return fd;
    }
    struct addrinfo *res = NULL;
    if ((rc = resolve(addr, false, &res)) < 0)
        return rc;
    rc = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        rc = connect_wait(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms);
        if (rc == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return rc;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}
