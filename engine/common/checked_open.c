/* Opening checked paths (see checked_open.h). */
#include "engine/common/checked_open.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

bool gw_strict_paths(void)
{
    const char *v = getenv(GW_STRICT_PATHS_ENV);
    return v && !strcmp(v, "1");
}

int gw_checked_open(const char *path, int flags, mode_t mode)
{
    flags |= O_CLOEXEC | O_NOFOLLOW;
    if (gw_strict_paths()) {
        struct open_how how = {.flags = (uint64_t)flags, .mode = (flags & O_CREAT) ? mode : 0,
                               .resolve = RESOLVE_NO_SYMLINKS};
        long fd = syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
        if (fd >= 0) return (int)fd;
        if (errno != ENOSYS) return -errno;
    }
    int fd = open(path, flags, mode);
    return fd < 0 ? -errno : fd;
}
