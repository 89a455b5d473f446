/* Opening files whose names others may have planted or checked: the one place that drives
 * openat2, and the one that refuses a FIFO without blocking on it.
 *
 * gw_openat_resolve: openat with O_CLOEXEC | O_NOFOLLOW (the last component is never
 * followed) and, through openat2, the RESOLVE_* rules given: RESOLVE_NO_SYMLINKS (no link
 * anywhere on the way), RESOLVE_BENEATH (never outside dfd). A kernel without openat2 (before
 * Linux 5.6) gets the last-component rule only.
 *
 * gw_openat_regular: the same, for a file that must be a regular one. It opens with O_NONBLOCK,
 * since the type is known only after the open and a FIFO named like the file would block an
 * open without it until a writer came, then clears O_NONBLOCK. Anything but a regular file is
 * -EINVAL.
 *
 * gw_checked_open: a path godwitd checked (a VM's disk, kernel or initrd: canonical, inside
 * image_roots; engine/daemon/config.c), opened again by a runner. In strict mode no link is
 * followed anywhere on the way, so a directory swapped for a link after the check is refused
 * (-ELOOP), not followed to a file the check never saw. godwitd sets strict mode for every
 * runner it starts (GODWIT_STRICT_PATHS=1 in the environment it passes down); a runner started
 * by hand keeps the last-component rule, so its own symlinked paths still work. */
#ifndef GW_COMMON_CHECKED_OPEN_H
#define GW_COMMON_CHECKED_OPEN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define GW_STRICT_PATHS_ENV "GODWIT_STRICT_PATHS"

/* The fd, or -errno (-ELOOP for a link the rules refuse). mode only with O_CREAT. */
int gw_openat_resolve(int dfd, const char *path, int flags, mode_t mode, uint64_t resolve);
int gw_openat_regular(int dfd, const char *path, int flags, mode_t mode, uint64_t resolve);

/* Whether this process opens checked paths strictly (the environment says "1"). */
bool gw_strict_paths(void);
/* gw_openat_resolve(AT_FDCWD, path, ...) with RESOLVE_NO_SYMLINKS when gw_strict_paths(). */
int gw_checked_open(const char *path, int flags, mode_t mode);

#endif
