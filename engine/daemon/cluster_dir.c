/* The cluster registry in a directory: one file per host, NAME.host, holding its packed
 * ClusterHost record. The embedded default, for hosts on one machine (the demo, the tests)
 * or on a shared file system. A record is written to a hidden temporary file and renamed
 * over the old one, so a reader sees either record whole, never a torn one. Readers trust no
 * file: names are checked, files larger than GW_CLUSTER_RECORD_MAX, symbolic links and
 * anything but a regular file (a FIFO would block the open) are skipped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/common/checked_open.h"
#include "engine/common/util.h"
#include "engine/daemon/cluster.h"

struct dir_be {
    char path[512];
};

static int dir_open(const struct gw_cluster_open *o, void **be, char *err, size_t errlen)
{
    const char *where = o->where;
    struct dir_be *b = calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    if (where[0] != '/' || (size_t)snprintf(b->path, sizeof b->path, "%s", where) >= sizeof b->path) {
        snprintf(err, errlen, "cluster directory must be an absolute path under 512 bytes");
        free(b);
        return -EINVAL;
    }
    if (mkdir(b->path, 0755) && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "cluster directory %s: %s", b->path, strerror(e));
        free(b);
        return -e;
    }
    *be = b;
    return 0;
}

/* announce: nothing to do, readers read the directory when they need it. */
static int dir_publish(void *be, const char *name, const uint8_t *rec, size_t len, bool announce)
{
    (void)announce;
    struct dir_be *b = be;
    char tmp[640], dst[640];
    if (!gw_cluster_name_ok(name)) return -EINVAL;
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", b->path, name);
    snprintf(dst, sizeof dst, "%s/%s.host", b->path, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return -errno;
    int r = gw_write_full(fd, rec, len);
    if (close(fd) && !r) r = -errno;
    if (!r && rename(tmp, dst)) r = -errno;
    if (r) unlink(tmp);
    return r;
}

/* Reads the record in entry d_name of dfd into a malloc'ed *buf. Only a regular file is a
 * record: a FIFO named like one would block the open, and with it every listing (each one a
 * gRPC worker; checked_open.h). 0, or -errno (the entry is skipped). */
static int read_record(int dfd, const char *d_name, uint8_t **buf, size_t *len)
{
    int fd = gw_openat_regular(dfd, d_name, O_RDONLY, 0, 0);
    if (fd < 0) return fd;
    struct stat st;
    int r = fstat(fd, &st) ? -errno : 0;
    if (!r && (st.st_size <= 0 || st.st_size > GW_CLUSTER_RECORD_MAX)) r = -EINVAL;
    *buf = NULL;
    if (!r && !(*buf = malloc((size_t)st.st_size))) r = -ENOMEM;
    if (!r) r = gw_read_full(fd, *buf, (size_t)st.st_size);
    close(fd);
    if (r) { free(*buf); *buf = NULL; return r; }
    *len = (size_t)st.st_size;
    return 0;
}

/* The host name of entry d_name (NAME.host) into name, or false. */
static bool entry_name(const char *d_name, char name[GW_CLUSTER_NAME_MAX + 1])
{
    size_t l = strlen(d_name);
    if (l <= 5 || l - 5 > GW_CLUSTER_NAME_MAX || strcmp(d_name + l - 5, ".host")) return false;
    memcpy(name, d_name, l - 5);
    name[l - 5] = 0;
    return gw_cluster_name_ok(name);
}

static int dir_list(void *be, gw_cluster_record_fn fn, void *arg)
{
    struct dir_be *b = be;
    DIR *dir = opendir(b->path);
    if (!dir) return -errno;
    int dfd = dirfd(dir);
    struct dirent *e;
    unsigned n = 0;
    while ((e = readdir(dir)) && n < GW_CLUSTER_MAX_HOSTS) {
        char name[GW_CLUSTER_NAME_MAX + 1];
        uint8_t *buf = NULL;
        size_t len = 0;
        if (!entry_name(e->d_name, name) || read_record(dfd, e->d_name, &buf, &len)) continue;
        if (fn(arg, name, buf, len)) n++;
        free(buf);
    }
    closedir(dir);
    return 0;
}

static void dir_close(void *be)
{
    free(be);
}

const struct gw_cluster_ops gw_cluster_dir_ops = {
    .scheme = "dir", .open = dir_open, .publish = dir_publish, .list = dir_list, .close = dir_close,
};
