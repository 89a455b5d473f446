/* Leases on a directory store (see lease.h): flock(2) under PATH/leases/.
 *
 *   <name>.lock           flock shared or exclusive: the lease itself
 *   <name>.h.<cookie>     one per holder, flock exclusive while it lives: who holds it
 *
 * A holder file is created under a temporary name, locked, then renamed into place, so a
 * lister never finds an unlocked holder file of a live holder; one it can lock belongs to a
 * holder that died (the kernel dropped its lock), and the lister removes it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/checked_open.h"
#include "storage/lease_int.h"
#include "storage/store.h"

/* The store's leases directory, never through a symbolic link: one planted there would move
 * every lease (and the files a lister removes) out of the shared store, where each host would
 * hold its own. */
static int open_leases(int dfd)
{
    mkdirat(dfd, "leases", 0755);
    return openat(dfd, "leases", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static int dir_acquire(struct gw_lease *l, char *err, size_t errlen)
{
    int dfd = gw_store_dir_fd(l->store);
    int ld = open_leases(dfd);
    if (ld < 0) { int e = -errno; snprintf(err, errlen, "%s/leases: %s", l->store->desc, strerror(-e)); return e; }
    char path[256], tmp[300];
    snprintf(path, sizeof path, "%s.lock", l->name);
    int r = 0;
    l->lock_fd = gw_openat_regular(ld, path, O_RDWR | O_CREAT, 0644, 0);   /* never through a planted link or FIFO */
    if (l->lock_fd < 0) r = l->lock_fd;
    else if (flock(l->lock_fd, (l->exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) r = errno == EWOULDBLOCK ? -EBUSY : -errno;
    if (!r) {
        snprintf(path, sizeof path, "%s.h.%s", l->name, l->cookie);
        snprintf(tmp, sizeof tmp, ".tmp.%d.%s", (int)getpid(), path);
        l->holder_fd = openat(ld, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (l->holder_fd < 0 || flock(l->holder_fd, LOCK_EX | LOCK_NB) < 0 || renameat(ld, tmp, ld, path) < 0) {
            r = -errno;
            unlinkat(ld, tmp, 0);
        }
    }
    close(ld);
    if (r) {
        if (l->holder_fd >= 0) close(l->holder_fd);
        if (l->lock_fd >= 0) close(l->lock_fd);
        l->holder_fd = l->lock_fd = -1;
        if (r == -EBUSY) snprintf(err, errlen, "lease %s is held%s", l->name, l->exclusive ? "" : " exclusively");
        else snprintf(err, errlen, "%s: lease %s: %s", l->store->desc, l->name, strerror(-r));
    }
    return r;
}

static int dir_renew(struct gw_lease *l)
{
    (void)l;
    return 0;   /* a held flock does not expire */
}

static void dir_release(struct gw_lease *l)
{
    int ld = open_leases(gw_store_dir_fd(l->store));
    if (ld >= 0 && l->holder_fd >= 0) {
        char path[256];
        struct stat a, b;
        snprintf(path, sizeof path, "%s.h.%s", l->name, l->cookie);
        if (fstat(l->holder_fd, &a) == 0 && fstatat(ld, path, &b, 0) == 0 && a.st_ino == b.st_ino) unlinkat(ld, path, 0);
    }
    if (ld >= 0) close(ld);
    if (l->holder_fd >= 0) close(l->holder_fd);
    if (l->lock_fd >= 0) close(l->lock_fd);
}

static int dir_holders(struct gw_store *s, const char *name, int (*fn)(const char *, void *), void *ctx)
{
    int ld = open_leases(gw_store_dir_fd(s));
    if (ld < 0) return gw_store_fail(s, -errno, "%s/leases: %s", s->desc, strerror(errno));
    int dup_fd = dup(ld);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) { if (dup_fd >= 0) close(dup_fd); close(ld); return gw_store_fail(s, -errno, "%s/leases: %s", s->desc, strerror(errno)); }
    char prefix[128];
    size_t plen = (size_t)snprintf(prefix, sizeof prefix, "%s.h.", name);
    int r = 0;
    struct dirent *e;
    while (!r && (e = readdir(d))) {
        if (strncmp(e->d_name, prefix, plen) || !gw_store_name_ok(e->d_name + plen)) continue;
        int fd = gw_openat_regular(ld, e->d_name, O_RDONLY, 0, 0);
        if (fd < 0) continue;   /* released meanwhile, or no holder's file (a FIFO would block) */
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            /* Its holder died: remove the file (only if it is still the one we locked). */
            struct stat a, b;
            if (fstat(fd, &a) == 0 && fstatat(ld, e->d_name, &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_ino == b.st_ino)
                unlinkat(ld, e->d_name, 0);
        } else if (errno == EWOULDBLOCK) {
            r = fn(e->d_name + plen, ctx);
        }
        close(fd);
    }
    closedir(d);
    close(ld);
    return r;
}

const struct gw_lease_backend gw_lease_dir_backend = {
    .acquire = dir_acquire, .renew = dir_renew, .release = dir_release, .holders = dir_holders,
};
