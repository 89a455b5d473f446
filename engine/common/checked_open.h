/* Opening a file whose path someone else checked: godwitd holds VM disks, kernels and initrds
 * to canonical paths inside image_roots (engine/daemon/config.c), then a runner opens the path.
 *
 * The last component is never followed (O_NOFOLLOW). In strict mode no component is: openat2
 * with RESOLVE_NO_SYMLINKS, so a directory on the way that was swapped for a link after the
 * check is refused as well (-ELOOP), not followed to a file the check never saw. godwitd sets
 * strict mode for every runner it starts (GODWIT_STRICT_PATHS=1 in the environment it passes
 * down); a runner started by hand keeps the last-component rule, so its own symlinked paths
 * still work. A kernel without openat2 (before Linux 5.6) gets the last-component rule. */
#ifndef GW_COMMON_CHECKED_OPEN_H
#define GW_COMMON_CHECKED_OPEN_H

#include <stdbool.h>
#include <sys/types.h>

#define GW_STRICT_PATHS_ENV "GODWIT_STRICT_PATHS"

/* Whether this process opens checked paths strictly (the environment says "1"). */
bool gw_strict_paths(void);
/* open(path, flags | O_CLOEXEC | O_NOFOLLOW, mode), strictly when gw_strict_paths(). Returns
 * the fd or -errno (-ELOOP for a link on the way). */
int gw_checked_open(const char *path, int flags, mode_t mode);

#endif
