/* Crash-safe file replacement (see durable.h). */
#include "engine/common/durable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "engine/common/util.h"

int gw_durable_create_tmp(const char *path, char *tmp, size_t cap)
{
    /* A random part: a name anyone can predict ("PATH.tmp.PID") let a file left by a killed
     * process of the same pid, or one planted there, make every write of path fail. */
    for (int tries = 0; tries < 8; tries++) {
        uint32_t rnd;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) rnd = (uint32_t)gw_now_ns() * 2654435761u;
        if ((size_t)snprintf(tmp, cap, "%s.tmp.%d.%08x", path, (int)getpid(), rnd) >= cap) return -ENAMETOOLONG;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) return fd;
        if (errno != EEXIST) return -errno;
    }
    return -EEXIST;
}

int gw_fsync_dir_of(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir) return -ENAMETOOLONG;
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

int gw_durable_commit(int fd, const char *tmp, const char *path)
{
    int r = fsync(fd) < 0 ? -errno : 0;
    if (close(fd) < 0 && !r) r = -errno;
    if (!r && rename(tmp, path) < 0) r = -errno;
    if (r) { unlink(tmp); return r; }
    return gw_fsync_dir_of(path);
}

int gw_durable_write(const char *path, const void *buf, size_t len)
{
    char tmp[4096];
    int fd = gw_durable_create_tmp(path, tmp, sizeof tmp);
    if (fd < 0) return fd;
    int r = gw_write_full(fd, buf, len);
    if (r) { close(fd); unlink(tmp); return r; }
    return gw_durable_commit(fd, tmp, path);
}
