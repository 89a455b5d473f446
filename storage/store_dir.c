/* The directory backend of the chunk store (see store.h): the embedded default.
 *
 * Layout under PATH: chunks/XX/c.<hex> (fanned out by the first two hex digits so that no
 * directory holds millions of files), objects/<name> for everything else, index/<name> for
 * each index (lines "key<TAB>value"). Every file is written under a temporary name and renamed,
 * so a reader sees a whole object or none; wait() makes what was put durable with one syncfs
 * instead of an fsync per chunk. An index is rewritten whole under an flock of its lock file. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/common/checked_open.h"
#include "engine/common/util.h"
#include "storage/store.h"

#define DIR_INDEX_MAX (64u << 20)

struct dir_store {
    struct gw_store s;
    int dfd;              /* the store's root directory */
    unsigned seq;         /* temporary-name counter */
    int pending;          /* puts since the last wait */
};

/* Opens path under the store's root without following a symlink anywhere on the way: a store
 * others can write to must not make a reader running as root open a file outside it (a chunk
 * linked to /etc/shadow) or write through a planted link. -errno (-ELOOP for a link). */
static int open_beneath(int dfd, const char *path, int flags, mode_t mode)
{
    return gw_openat_resolve(dfd, path, flags, mode, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
}

/* open_beneath for reading a stored object: a regular file only (a FIFO would block the
 * reader, a device would be read). */
static int open_object(int dfd, const char *path)
{
    return gw_openat_regular(dfd, path, O_RDONLY, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
}

static int obj_path(const char *obj, char *buf, size_t cap)
{
    if (!gw_store_name_ok(obj)) return -EINVAL;
    int n;
    if (!strncmp(obj, "c.", 2) && strlen(obj) > 4) n = snprintf(buf, cap, "chunks/%.2s/%s", obj + 2, obj);
    else n = snprintf(buf, cap, "objects/%s", obj);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Writes path atomically (temporary name in the same directory, rename). */
static int write_file(struct dir_store *d, const char *path, const void *buf, size_t len)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d.%u", path, (int)getpid(), d->seq++);
    /* O_EXCL: never through something planted under the name; one left by a crashed writer
     * of the same pid goes first. */
    int fd = open_beneath(d->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd == -EEXIST && unlinkat(d->dfd, tmp, 0) == 0) fd = open_beneath(d->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd == -ENOENT) {
        /* The fan-out directory does not exist yet. */
        char dir[512];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) { *slash = 0; mkdirat(d->dfd, dir, 0755); }
        fd = open_beneath(d->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    }
    if (fd < 0) return fd;
    int r = gw_write_full(fd, buf, len);
    if (close(fd) < 0 && !r) r = -errno;
    if (!r && renameat(d->dfd, tmp, d->dfd, path) < 0) r = -errno;
    if (r) unlinkat(d->dfd, tmp, 0);
    return r;
}

static int dir_put(struct gw_store *s, const char *obj, const void *buf, size_t len)
{
    struct dir_store *d = (struct dir_store *)s;
    char path[256];
    int r = obj_path(obj, path, sizeof path);
    if (r) return gw_store_fail(s, r, "bad object name '%s'", obj);
    uint64_t t0 = gw_now_ns();
#ifdef GODWIT_TEST_HOOKS
    if (s->test_put_delay_ns && t0 < s->test_put_delay_until_ns) {
        struct timespec ts = {.tv_sec = (time_t)(s->test_put_delay_ns / 1000000000ull),
                              .tv_nsec = (long)(s->test_put_delay_ns % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
#endif
    r = write_file(d, path, buf, len);
    s->write_lat_ns += gw_now_ns() - t0;
    s->write_lat_n++;
    if (r) return gw_store_fail(s, r, "%s: writing %s: %s", s->desc, path, r == -ENOSPC ? "the file system is full" : strerror(-r));
    d->pending++;
    s->bytes_written += len;
    s->objects_written++;
    return 0;
}

static int dir_wait(struct gw_store *s)
{
    struct dir_store *d = (struct dir_store *)s;
    if (!d->pending) return 0;
    if (syncfs(d->dfd) < 0) return gw_store_fail(s, -errno, "%s: syncfs: %s", s->desc, strerror(errno));
    d->pending = 0;
    return 0;
}

static int dir_stat(struct gw_store *s, const char *obj, uint64_t *size)
{
    struct dir_store *d = (struct dir_store *)s;
    char path[256];
    struct stat sb;
    if (obj_path(obj, path, sizeof path)) return gw_store_fail(s, -EINVAL, "bad object name '%s'", obj);
    if (fstatat(d->dfd, path, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) return 0;
        return gw_store_fail(s, -errno, "%s: %s: %s", s->desc, path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) return 0;   /* not an object this store wrote: written anew over it */
    if (size) *size = (uint64_t)sb.st_size;
    return 1;
}

static int dir_exists_batch(struct gw_store *s, const char *const *names, size_t n, int *present)
{
    /* A lookup that failed is the batch's failure (dir_stat set the reason): counted as
     * present, the chunk would never be written and a manifest would name it. */
    for (size_t i = 0; i < n; i++)
        if ((present[i] = dir_stat(s, names[i], NULL)) < 0) return present[i];
    return 0;
}

static int read_file(struct dir_store *d, const char *path, size_t max, uint8_t **buf, size_t *len)
{
    int fd = open_object(d->dfd, path);
    if (fd < 0) return fd;
    struct stat sb;
    int r = fstat(fd, &sb) < 0 ? -errno : 0;
    if (!r && (uint64_t)sb.st_size > max) r = -EFBIG;
    uint8_t *b = NULL;
    if (!r && !(b = malloc(sb.st_size ? (size_t)sb.st_size : 1))) r = -ENOMEM;
    if (!r) r = gw_read_full(fd, b, (size_t)sb.st_size);
    close(fd);
    if (r) { free(b); return r; }
    *buf = b;
    *len = (size_t)sb.st_size;
    return 0;
}

static int dir_get(struct gw_store *s, const char *obj, size_t max, uint8_t **buf, size_t *len)
{
    struct dir_store *d = (struct dir_store *)s;
    char path[256];
    if (obj_path(obj, path, sizeof path)) return gw_store_fail(s, -EINVAL, "bad object name '%s'", obj);
    int r = read_file(d, path, max, buf, len);
    if (r == -EFBIG) return gw_store_fail(s, r, "%s: %s is larger than %zu bytes", s->desc, obj, max);
    if (r) return gw_store_fail(s, r, "%s: reading %s: %s", s->desc, obj, strerror(-r));
    s->bytes_read += *len;
    s->objects_read++;
    return 0;
}

static int dir_get_batch(struct gw_store *s, struct gw_store_read *rd, size_t n)
{
    struct dir_store *d = (struct dir_store *)s;
    for (size_t i = 0; i < n; i++) {
        char path[256];
        rd[i].len = 0;
        rd[i].rc = obj_path(rd[i].name, path, sizeof path);
        if (rd[i].rc) continue;
        int fd = open_object(d->dfd, path);
        if (fd < 0) { rd[i].rc = fd; continue; }
        ssize_t got = 0;
        while ((size_t)got < rd[i].cap) {
            ssize_t k = read(fd, rd[i].buf + got, rd[i].cap - (size_t)got);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) { rd[i].rc = -errno; break; }
            if (k == 0) break;
            got += k;
        }
        close(fd);
        rd[i].len = (size_t)got;
        /* Atomic: instant restore's workers read with one batch each at the same time. */
        __atomic_fetch_add(&s->bytes_read, (uint64_t)got, __ATOMIC_RELAXED);
        __atomic_fetch_add(&s->objects_read, 1, __ATOMIC_RELAXED);
    }
    return 0;
}

static int dir_remove(struct gw_store *s, const char *obj)
{
    struct dir_store *d = (struct dir_store *)s;
    char path[256];
    if (obj_path(obj, path, sizeof path)) return gw_store_fail(s, -EINVAL, "bad object name '%s'", obj);
    if (unlinkat(d->dfd, path, 0) < 0 && errno != ENOENT) return gw_store_fail(s, -errno, "%s: removing %s: %s", s->desc, obj, strerror(errno));
    d->pending++;
    return 0;
}

/* Index files: read whole, change, write whole, all under the index's lock. */
static int index_lock(struct dir_store *d, const char *index)
{
    char path[256];
    snprintf(path, sizeof path, "index/%s.lock", index);
    int fd = open_beneath(d->dfd, path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return fd;
    if (flock(fd, LOCK_EX) < 0) { int e = -errno; close(fd); return e; }
    return fd;
}

static int index_update(struct gw_store *s, const char *index, const char *key, const char *val)
{
    struct dir_store *d = (struct dir_store *)s;
    if (!gw_store_name_ok(index) || !gw_store_name_ok(key)) return gw_store_fail(s, -EINVAL, "bad index or key name");
    if (val && strpbrk(val, "\t\n")) return gw_store_fail(s, -EINVAL, "index values hold no tabs or newlines");
    int lk = index_lock(d, index);
    if (lk < 0) return gw_store_fail(s, lk, "%s: locking index %s: %s", s->desc, index, strerror(-lk));
    char path[256];
    snprintf(path, sizeof path, "index/%s", index);
    uint8_t *old = NULL;
    size_t oldlen = 0;
    int r = read_file(d, path, DIR_INDEX_MAX, &old, &oldlen);
    if (r == -ENOENT) r = 0;
    /* Room for the old lines, a newline the last may lack, and key TAB val NEWLINE NUL. */
    size_t klen = strlen(key), cap = oldlen + 1 + klen + (val ? strlen(val) : 0) + 3;
    char *out = r ? NULL : malloc(cap);
    if (!r && !out) r = -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; !r && i < oldlen;) {
        uint8_t *nl = memchr(old + i, '\n', oldlen - i);
        size_t end = nl ? (size_t)(nl - old) + 1 : oldlen;
        bool same = end - i > klen && !memcmp(old + i, key, klen) && old[i + klen] == '\t';
        /* A line holding a NUL (a damaged file) is dropped: the listing would stop at it and
         * hide every line after it. */
        bool damaged = memchr(old + i, 0, end - i) != NULL;
        if (!same && !damaged) { memcpy(out + o, old + i, end - i); o += end - i; if (!nl) out[o++] = '\n'; }
        i = end;
    }
    if (!r && val) o += (size_t)snprintf(out + o, cap - o, "%s\t%s\n", key, val);
    if (!r) r = write_file(d, path, out, o);
    if (!r && syncfs(d->dfd) < 0) r = -errno;
    free(old);
    free(out);
    close(lk);
    if (r) return gw_store_fail(s, r, "%s: updating index %s: %s", s->desc, index, strerror(-r));
    return 0;
}

static int dir_index_set(struct gw_store *s, const char *index, const char *key, const char *val)
{
    return index_update(s, index, key, val);
}

static int dir_index_del(struct gw_store *s, const char *index, const char *key)
{
    return index_update(s, index, key, NULL);
}

static int dir_index_list(struct gw_store *s, const char *index, int (*fn)(const char *, const char *, void *), void *ctx)
{
    struct dir_store *d = (struct dir_store *)s;
    if (!gw_store_name_ok(index)) return gw_store_fail(s, -EINVAL, "bad index name");
    char path[256];
    snprintf(path, sizeof path, "index/%s", index);
    uint8_t *buf = NULL;
    size_t len = 0;
    int r = read_file(d, path, DIR_INDEX_MAX, &buf, &len);
    if (r == -ENOENT) return 0;
    if (r) return gw_store_fail(s, r, "%s: reading index %s: %s", s->desc, index, strerror(-r));
    char *text = realloc(buf, len + 1);
    if (!text) { free(buf); return -ENOMEM; }
    text[len] = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && !r; line = strtok_r(NULL, "\n", &save)) {
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        if (!gw_store_name_ok(line)) continue; /* a damaged line is skipped, not trusted */
        r = fn(line, tab + 1, ctx);
    }
    free(text);
    return r;
}

static void dir_close(struct gw_store *s)
{
    struct dir_store *d = (struct dir_store *)s;
    close(d->dfd);
    free(d);
}

static const struct gw_store_ops dir_ops = {
    .put = dir_put, .wait = dir_wait, .stat = dir_stat, .exists_batch = dir_exists_batch, .get = dir_get, .get_batch = dir_get_batch,
    .remove = dir_remove, .index_set = dir_index_set, .index_del = dir_index_del,
    .index_list = dir_index_list, .close = dir_close,
};

int gw_store_dir_fd(const struct gw_store *s)
{
    return s->ops == &dir_ops ? ((const struct dir_store *)s)->dfd : -1;
}

int gw_store_dir_open(const char *path, const struct gw_store_params *p, struct gw_store **out, char *err, size_t errlen)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "store dir:%s: %s", path, strerror(e));
        return -e;
    }
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) { int e = errno; snprintf(err, errlen, "store dir:%s: %s", path, strerror(e)); return -e; }
    mkdirat(dfd, "chunks", 0755);
    mkdirat(dfd, "objects", 0755);
    mkdirat(dfd, "index", 0755);
    struct dir_store *d = calloc(1, sizeof *d);
    if (!d) { close(dfd); return -ENOMEM; }
    d->s.ops = &dir_ops;
    d->s.max_inflight = p->max_inflight ? p->max_inflight : GW_STORE_DEFAULT_INFLIGHT;
    snprintf(d->s.desc, sizeof d->s.desc, "dir:%s", path);
    d->dfd = dfd;
    *out = &d->s;
    return 0;
}
