/* Opening planted or checked paths (see checked_open.h). */
#include "engine/common/checked_open.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int gw_openat_resolve(int dfd, const char *path, int flags, mode_t mode, uint64_t resolve)
{
    flags |= O_CLOEXEC | O_NOFOLLOW;
    if (resolve) {
        struct open_how how = {.flags = (uint64_t)flags, .mode = (flags & O_CREAT) ? mode : 0, .resolve = resolve};
        long fd = syscall(SYS_openat2, dfd, path, &how, sizeof how);
        if (fd >= 0) return (int)fd;
        if (errno != ENOSYS) return -errno;
    }
    int fd = openat(dfd, path, flags, mode);
    return fd < 0 ? -errno : fd;
}

int gw_openat_regular(int dfd, const char *path, int flags, mode_t mode, uint64_t resolve)
{
    int fd = gw_openat_resolve(dfd, path, flags | O_NONBLOCK, mode, resolve);
    if (fd < 0) return fd;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    if (!(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

bool gw_strict_paths(void)
{
    const char *v = getenv(GW_STRICT_PATHS_ENV);
    return v && !strcmp(v, "1");
}

int gw_checked_open(const char *path, int flags, mode_t mode)
{
    return gw_openat_resolve(AT_FDCWD, path, flags, mode, gw_strict_paths() ? RESOLVE_NO_SYMLINKS : 0);
}
