/* Files that must survive a crash whole: written to a temporary file created with O_EXCL and
 * O_NOFOLLOW (never through a link an attacker planted, never over another writer's file),
 * fsynced, renamed over the target, and the directory fsynced so that the rename itself is
 * durable. A crash at any point leaves the old file or the new one, never a mix. */
#ifndef GW_COMMON_DURABLE_H
#define GW_COMMON_DURABLE_H

#include <stddef.h>

/* Creates a temporary file for path ("PATH.tmp.PID.RANDOM", a fresh name when one is taken)
 * and returns its fd (0600), or -errno. The name is written to tmp (cap bytes). */
int gw_durable_create_tmp(const char *path, char *tmp, size_t cap);
/* fsyncs and closes fd, renames tmp over path and fsyncs the directory. On failure tmp is
 * removed and -errno returned; fd is closed either way. */
int gw_durable_commit(int fd, const char *tmp, const char *path);
/* fsyncs the directory that holds path. */
int gw_fsync_dir_of(const char *path);
/* Writes buf (len bytes) to path as above. 0 or -errno. */
int gw_durable_write(const char *path, const void *buf, size_t len);

#endif
