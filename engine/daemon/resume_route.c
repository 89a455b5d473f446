/* The post-copy resume route from the migration port to a destination runner (see
 * resume_route.h): a listening unix socket the runner owns and a token file the daemon
 * owns, both in the VM's directory, so that a restarted daemon finds the route again. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "engine/common/log.h"
#include "engine/daemon/daemon.h"
#include "engine/daemon/migport.h"
#include "engine/daemon/resume_route.h"

#define SOCK_LEAF "/resume.sock"
#define TOKEN_LEAF "/resume.token"

int gw_resume_route_path(const struct gw_daemon *d, const char *name, char *out)
{
    char dir[1024];
    gw_vm_dir(d, name, dir, sizeof dir);
    return (size_t)snprintf(out, GW_RESUME_SOCK_MAX, "%s" SOCK_LEAF, dir) >= GW_RESUME_SOCK_MAX ? -ENAMETOOLONG : 0;
}

static void token_path(const struct gw_daemon *d, const char *name, char *out, size_t len)
{
    char dir[1024];
    gw_vm_dir(d, name, dir, sizeof dir);
    snprintf(out, len, "%s" TOKEN_LEAF, dir);
}

void gw_resume_route_forget(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    char sock[GW_RESUME_SOCK_MAX], tok[1100];
    rec->resume_route = false;
    if (!gw_resume_route_path(d, rec->name, sock) && unlink(sock) && errno != ENOENT)
        gw_warn("vm=%s: cannot remove %s: %s", rec->name, sock, strerror(errno));
    token_path(d, rec->name, tok, sizeof tok);
    if (unlink(tok) && errno != ENOENT) gw_warn("vm=%s: cannot remove %s: %s", rec->name, tok, strerror(errno));
}

int gw_resume_route_open(struct gw_daemon *d, struct gw_vm_rec *rec, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char dir[1024], tok[1100];
    gw_vm_dir(d, rec->name, dir, sizeof dir);
    if (gw_resume_route_path(d, rec->name, sa.sun_path)) {
        snprintf(err, errlen, "the resume socket's path is too long");
        return -ENAMETOOLONG;
    }
    token_path(d, rec->name, tok, sizeof tok);
    gw_resume_route_forget(d, rec);   /* a previous runner's, if any */
    if (mkdir(dir, 0700) && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", dir, strerror(e));
        return -e;
    }
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    int r = fd < 0 ? -errno : 0;
    if (!r && (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4))) r = -errno;
    if (r) {
        snprintf(err, errlen, "resume socket %s: %s", sa.sun_path, strerror(-r));
        goto fail;
    }
    /* Written whole or read back short (and then refused): no rename needed. */
    errno = 0;
    int tf = open(tok, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (tf < 0 || write(tf, rec->resume_token, sizeof rec->resume_token) != (ssize_t)sizeof rec->resume_token) {
        r = errno ? -errno : -EIO;
        snprintf(err, errlen, "%s: %s", tok, strerror(-r));
    }
    if (tf >= 0 && close(tf) && !r) {
        r = -errno;
        snprintf(err, errlen, "%s: %s", tok, strerror(-r));
    }
    if (!r) return fd;
fail:
    if (fd >= 0) close(fd);
    gw_resume_route_forget(d, rec);
    return r;
}

void gw_resume_route_taken(struct gw_vm_rec *rec)
{
    rec->resume_route = true;
}

void gw_resume_route_reattach(struct gw_daemon *d, struct gw_vm_rec *rec)
{
    char sock[GW_RESUME_SOCK_MAX], tok[1100];
    struct stat st;
    rec->resume_route = false;
    if (gw_resume_route_path(d, rec->name, sock) || lstat(sock, &st) || !S_ISSOCK(st.st_mode)) return;
    token_path(d, rec->name, tok, sizeof tok);
    int fd = open(tok, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return;
    uint8_t t[sizeof rec->resume_token + 1];
    ssize_t n = read(fd, t, sizeof t);
    close(fd);
    if (n != (ssize_t)sizeof rec->resume_token) {
        gw_warn("vm=%s: its resume token does not read back whole: a post-copy source cannot reconnect here", rec->name);
        return;
    }
    memcpy(rec->resume_token, t, sizeof rec->resume_token);
    memset(t, 0, sizeof t);
    rec->resume_route = true;
    gw_info("vm=%s: post-copy resume route re-attached", rec->name);
}

int gw_resume_route_hand(const char *path, const int *fds, unsigned n)
{
    if (!n || n > GW_MIGPORT_MAX_STREAMS) return -EINVAL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path) >= sizeof sa.sun_path) return -ENAMETOOLONG;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) return -errno;
    char ctl[CMSG_SPACE(sizeof(int) * GW_MIGPORT_MAX_STREAMS)];
    memset(ctl, 0, sizeof ctl);
    uint32_t count = n;
    struct iovec iov = {.iov_base = &count, .iov_len = sizeof count};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
    /* A connected unix socket queues the message even before the runner accepts it. */
    int r = connect(s, (struct sockaddr *)&sa, sizeof sa) ? -errno : 0;
    if (!r && sendmsg(s, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof count) r = -errno;
    close(s);
    return r;
}
